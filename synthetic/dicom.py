"""Synthetic DICOM studies (CT and MR) with realistic identifying headers, and broken files.

Files are small (64x64 pixels) but complete: File Meta, patient and study modules, equipment,
private tags that repeat identifiers, burned-in annotation on some studies.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from hdh_assets.pseudonymisation.identifiers import INS_NIR_OID
from synthetic.people import Person

IMAGE_SIZE = 64
PRIVATE_CREATOR = "HDH SYNTHETIC 1.0"
INSTITUTIONS = (
    ("Hôpital Européen Georges-Pompidou", "20 rue Leblanc, 75015 Paris"),
    ("CHU de Bordeaux - Hôpital Pellegrin", "Place Amélie Raba Léon, 33000 Bordeaux"),
    ("Hospices Civils de Lyon - Hôpital Édouard Herriot", "5 place d'Arsonval, 69003 Lyon"),
)
PHYSICIANS = ("GIRAUD^Claire^^Dr", "BENOIT^Marc^^Dr", "NGUYEN^Thi Lan^^Dr", "ROCHE^Paul^^Pr")
PROTOCOLS = {
    "CT": (
        ("CT THORAX SANS INJECTION", "CHEST", ("Thorax 1.25mm",)),
        ("CT ABDOMEN PELVIS", "ABDOMEN", ("Abdomen portal", "Abdomen arterial")),
    ),
    "MR": (
        ("IRM CEREBRALE", "BRAIN", ("T1 SE", "T2 FLAIR")),
        ("IRM GENOU DROIT", "KNEE", ("PD FS sag", "T1 cor")),
    ),
}


@dataclass
class StudyRecord:
    """What the generator made, for the summary and for linking other sources to the same day."""

    person_index: int
    modality: str
    study_date: dt.date
    study_uid: str
    accession_number: str
    instances: int
    burned_in: bool
    files: list[str] = field(default_factory=list)


def uid(rng: random.Random) -> str:
    """A UUID-derived UID (PS3.5 B.2), reproducible from the generator."""
    return f"2.25.{rng.getrandbits(126)}"


def _phantom(rng: random.Random, slice_index: int, burned_in: bool, signed: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    cy, cx = IMAGE_SIZE / 2 + rng.uniform(-3, 3), IMAGE_SIZE / 2 + rng.uniform(-3, 3)
    body = ((yy - cy) / 26) ** 2 + ((xx - cx) / 20) ** 2 <= 1
    organ = ((yy - cy - 4) / 8) ** 2 + ((xx - cx + 6 - slice_index) / 6) ** 2 <= 1
    image = np.where(body, 1000 + 40 * np.sin(xx / 5.0), 0) + np.where(organ, 300, 0)
    if burned_in:  # a white text band in the corner, as scanners print names on screenshots
        image[2:8, 2:40] = 4000
    # CT stores raw values: with RescaleIntercept -1024, air reads -1024 HU and tissue about 0 HU.
    return image.astype(np.int16 if signed else np.uint16)


def _base_dataset(person: Person, rng: random.Random, modality: str, study: dict) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = person.dicom_name
    ds.PatientID = person.nir
    ds.IssuerOfPatientID = "INS-NIR"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = INS_NIR_OID
    qualifiers.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    other = Dataset()
    other.PatientID = person.hospital_patient_id
    other.IssuerOfPatientID = study["institution"][0]
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = person.birth_date.strftime("%Y%m%d")
    ds.PatientSex = person.sex
    ds.PatientAge = f"{(study['date'] - person.birth_date).days // 365:03d}Y"
    ds.PatientAddress = f"{person.address_line}, {person.postal_code} {person.city}"
    ds.PatientTelephoneNumbers = person.phone.replace(" ", "")  # SH: 16 characters at most
    ds.PatientWeight = f"{rng.randint(48, 110)}"
    ds.StudyInstanceUID = study["uid"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"].strftime(
        "%Y%m%d"
    )
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.StudyID = study["study_id"]
    ds.StudyDescription = study["description"]
    ds.BodyPartExamined = study["body_part"]
    ds.ReferringPhysicianName = study["referring"]
    ds.PerformingPhysicianName = study["performing"]
    ds.OperatorsName = "TECH^Julie"
    ds.InstitutionName, ds.InstitutionAddress = study["institution"]
    ds.StationName = f"{modality}-SALLE-{rng.randint(1, 4)}"
    ds.Manufacturer = "HDH Synthetic Imaging"
    ds.ManufacturerModelName = "Phantom 3000" if modality == "CT" else "Aimant 1.5T"
    ds.DeviceSerialNumber = f"SN{rng.randint(100000, 999999)}"
    ds.SoftwareVersions = "1.0"
    ds.Modality = modality
    ds.FrameOfReferenceUID = study["frame_uid"]
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    return ds


def write_study(
    person: Person,
    rng: random.Random,
    modality: str,
    study_date: dt.date,
    folder: Path,
    burned_in: bool,
    file_counter: list[int],
) -> StudyRecord:
    description, body_part, series_names = rng.choice(PROTOCOLS[modality])
    study = {
        "uid": uid(rng),
        "frame_uid": uid(rng),
        "date": study_date,
        "time": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
        "accession": f"ACC{rng.randint(10**8, 10**9 - 1)}",
        "study_id": f"{rng.randint(1, 99999)}",
        "description": description,
        "body_part": body_part,
        "referring": rng.choice(PHYSICIANS),
        "performing": rng.choice(PHYSICIANS),
        "institution": rng.choice(INSTITUTIONS),
    }
    record = StudyRecord(
        person.index, modality, study_date, study["uid"], study["accession"], 0, burned_in
    )
    signed = modality == "CT"
    for series_number, series_name in enumerate(series_names, start=1):
        series_uid = uid(rng)
        for slice_index in range(3 if modality == "CT" else 2):
            ds = _base_dataset(person, rng, modality, study)
            ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
            ds.SOPInstanceUID = uid(rng)
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = series_name
            ds.InstanceNumber = slice_index + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImageComments = f"Examen de {person.given_names[0]} {person.family_name}"
            ds.BurnedInAnnotation = "YES" if burned_in else "NO"
            ds.ImagePositionPatient = [-120.0, -120.0, float(slice_index * 5)]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [3.75, 3.75]
            ds.SliceThickness = 5.0
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ds.Columns = IMAGE_SIZE
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
            ds.PixelRepresentation = 1 if signed else 0
            if signed:
                ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
                ds.KVP = 120
            else:
                ds.MagneticFieldStrength = 1.5
                ds.EchoTime, ds.RepetitionTime = 12.0, 500.0
            ds.WindowCenter, ds.WindowWidth = (40, 400) if signed else (600, 1200)
            ds.PixelData = _phantom(rng, slice_index, burned_in, signed).tobytes()
            block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
            block.add_new(0x01, "LO", person.hospital_patient_id)
            block.add_new(0x02, "LO", f"{person.family_name} {person.given_names[0]}")
            block.add_new(0x03, "DA", person.birth_date.strftime("%Y%m%d"))

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta

            file_counter[0] += 1
            # Any depth, any names: deliveries mix named and extension-less files.
            name = f"IM{file_counter[0]:06d}" + (".dcm" if file_counter[0] % 3 else "")
            path = folder / f"S{series_number:02d}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            record.files.append(str(path))
            record.instances += 1
    return record


def write_malformed(folder: Path, valid_example: Path) -> list[str]:
    """Files a real delivery contains by mistake; ingestion must quarantine each with a reason."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    text = folder / "README-scanner.dcm"
    text.write_text("Export du PACS - ne pas diffuser\nPatient list attached separately.\n")
    written.append(text)
    data = valid_example.read_bytes()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 3])
    written.append(truncated)
    garbage = folder / "garbage_after_preamble.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    written.append(garbage)
    empty = folder / "empty.dcm"
    empty.write_bytes(b"")
    written.append(empty)
    return [str(p) for p in written]


def write_missing_uid(person: Person, rng: random.Random, folder: Path) -> str:
    """A readable dataset without SOP Instance UID: valid DICOM syntax, unusable content."""
    study = {
        "uid": uid(rng),
        "frame_uid": uid(rng),
        "date": dt.date(2024, 3, 1),
        "time": "101010",
        "accession": "ACC000000001",
        "study_id": "1",
        "description": "CT SANS UID",
        "body_part": "CHEST",
        "referring": PHYSICIANS[0],
        "performing": PHYSICIANS[1],
        "institution": INSTITUTIONS[0],
    }
    ds = _base_dataset(person, rng, "CT", study)
    ds.SOPClassUID = CTImageStorage
    ds.SeriesInstanceUID = uid(rng)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid(rng)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = folder / "no_sop_instance_uid.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(path)
