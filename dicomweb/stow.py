"""STOW-RS (PS3.18 10.5) for derived objects only: segmentations, structured reports, RT structure
sets, parametric maps, key object selections made on studies the platform already holds.

What is accepted. Each part of a ``multipart/related; type="application/dicom"`` body is one
DICOM file (File Meta Information included) and is stored only when all of these hold:

1. its SOP class is a derived one (:data:`DERIVED_SOP_CLASSES`); an image (CT, MR, ...) is not;
2. it passes the Annex E verification ingestion applies to its own outputs
   (:func:`hdh_assets.pseudonymisation.dicom.conformance_violations`, with the ingestion profile
   of ``HDH_DICOM_OPTIONS``): no attribute the profile removes, no UID that is not remapped, no
   private attribute, ``PatientIdentityRemoved`` YES; and its study, series and instance UIDs
   are remapped UIDs (``2.25.<n>``, also its file names);
3. its study (and the study of the path, which it must equal when the path names one) and every
   UID it references at any depth (``ReferencedSOPInstanceUID`` anywhere, ``SeriesInstanceUID``
   and ``StudyInstanceUID`` inside sequences) resolve to an instance the token may see; unknown
   and not visible are refused alike, so a token learns nothing of what it may not see (an
   object referencing another of the same request is refused: send the referenced one first);
4. its patient-level attributes equal the study's pseudonymised ones: ``PatientID`` must be the
   study's pseudonym, and any other patient attribute carried with a value must equal the one of
   the study's stored files (a viewer copies them from the source images, which are
   pseudonymised already; anything else means identifying values or the wrong person);
5. its SOP Instance UID is new, or names the very same bytes (a retry: stored again, harmless).

Failure reasons (FailedSOPSequence > FailureReason, PS3.18 Table 10.5.3-1 / PS3.4 B.2.3), each
item with an Error Comment (0000,0902) giving the reason code and what was wrong, naming
attributes and counts, never a value read from the object:

========================  ========  ============================================================
reason code               Failure   meaning
========================  ========  ============================================================
sop_class_not_supported   0x0122    not a derived SOP class (images are ingested, not stored)
unreadable                0xC000    the part is not a DICOM file with File Meta Information
missing_uids              0xC000    no SOP class, SOP instance, study or series UID
study_mismatch            0xC000    the object's study is not the one the path names
invalid_uid               0xC000    a study, series or instance UID is not a remapped UID
identifying_attributes    0xC000    Annex E verification failed (attributes named by keyword)
unresolved_reference      0xC000    the study or a referenced UID is unknown or not visible
patient_mismatch          0xC000    patient attributes differ from the study's (keywords named)
uid_conflict              0xC000    the SOP Instance UID exists with other content
processing_failure        0x0110    the service failed to store it (disk, index); retry later
out_of_resources          0xA700    no space left on the store
========================  ========  ============================================================

0xC000 ("cannot understand") is used for every content refusal, PS3.4's status for a data set
the SCP will not accept as it is; the code in the Error Comment tells them apart. The SOP Instance
UID of a refused object is echoed only when it is a remapped UID (``2.25.<n>``); otherwise it
could be an original UID, and the item names the part's position instead.

Every refused part is kept under ``HDH_HOME/quarantine/dicomweb/<YYYYMMDD>/<sha256>.dcm`` with a
``<sha256>.json`` sidecar (reason, failure reason, message, caller, time; never a value read from
the object), for operators only, as ingestion keeps its refused originals.

Where stored objects go. As ingestion stores them: ``store/dicom/<study>/<series>/<sop>.dcm``, the
received bytes unchanged (WADO returns exactly what was stored), and one index row per object
(:func:`hdh_assets.imaging.index.index_row`, validated against the published schema) in the same
lake table, ``imaging/dicom_instances``, partition ``batch=derived-<YYYYMMDD>``: a study listing
stays one scan of one table, and the index view reloads on the new file as on a new batch.

Concurrency. All writes of one request happen under an exclusive ``flock`` on
``store/dicom/.stow.lock`` (one request stores at a time, across processes too), after the SOP
Instance UIDs are checked again against the index read under the lock, so two requests cannot
store one UID twice. Each request writes its own index file (``part-stow-<time>-<uuid>.parquet``)
to a hidden temporary name first and renames it into place (atomic on POSIX), after its objects
are in the store: a reader sees either no row or a row whose file exists; a crash leaves at most
an unindexed file that a retry overwrites. Readers never take the lock.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field

import polars as pl
import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset

from dicomweb.errors import DicomWebError
from dicomweb.headers import StoredFiles
from dicomweb.index import INSTANCES_PATH, IndexSource, IndexView
from dicomweb.tokens import Claims
from hdh_assets.imaging.derived import DERIVED_BATCH, store_lock
from resources.home import HdhHome

log = logging.getLogger("hdh.dicomweb.stow")

PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

DERIVED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.67": "Real World Value Mapping",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR",
}
PATIENT_KEYWORDS = (  # Patient module attributes a derived object copies from its sources
    "PatientName",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "EthnicGroup",
    "PatientComments",
)
REFERENCE_SEQUENCE_UIDS = ("SeriesInstanceUID", "StudyInstanceUID")  # checked inside sequences
_REMAPPED = re.compile(r"^2\.25\.[0-9]{1,40}$")
MAX_BODY_BYTES = 2 * 1024**3
DICOM_JSON = "application/dicom+json"


@dataclass
class Refusal(Exception):
    code: str
    failure: int
    message: str


@dataclass
class Part:
    number: int  # 1-based position in the request
    data: bytes
    dataset: Dataset | None = None
    sha256: str = ""
    row: dict | None = None
    refusal: Refusal | None = None
    url: str = ""

    @property
    def sop_class(self) -> str | None:
        return str(self.dataset.get("SOPClassUID", "")) or None if self.dataset else None

    @property
    def sop_instance(self) -> str | None:
        return str(self.dataset.get("SOPInstanceUID", "")) or None if self.dataset else None


@dataclass
class Outcome:
    status: int
    body: dict
    stored: list[Part] = field(default_factory=list)
    refused: list[Part] = field(default_factory=list)


# -- request body --------------------------------------------------------------------------------
def _params(header: str) -> tuple[str, dict[str, str]]:
    media, *raw = [p.strip() for p in header.split(";")]
    params = {}
    for item in raw:
        key, _, value = item.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return media.lower(), params


def boundary_of(content_type: str | None) -> str:
    """The boundary of a STOW body; 415 for anything but multipart/related of application/dicom
    (PS3.18 10.5.1.2: this service takes DICOM instances, not metadata with bulk data)."""
    media, params = _params(content_type or "")
    if media != "multipart/related" or params.get("type", "").lower() != "application/dicom":
        raise DicomWebError(
            415, 'STOW-RS takes multipart/related; type="application/dicom" bodies only'
        )
    if not params.get("boundary"):
        raise DicomWebError(400, "the multipart body has no boundary")
    return params["boundary"]


def split_parts(body: bytes, boundary: str) -> list[bytes]:
    """The payload of each part of a multipart/related body (RFC 2046)."""
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, payload = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise DicomWebError(400, "a part of the multipart body has no header end")
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                media, _ = _params(value)
                if media != "application/dicom":
                    raise DicomWebError(415, "every part must be application/dicom")
        parts.append(payload.removesuffix(b"\r\n"))
    if not parts:
        raise DicomWebError(400, "the multipart body holds no part")
    return parts


# -- checks --------------------------------------------------------------------------------------
def _references(ds: Dataset) -> tuple[set[str], set[str], set[str]]:
    """(instances, series, studies) referenced anywhere inside the object's sequences."""
    instances: set[str] = set()
    series: set[str] = set()
    studies: set[str] = set()

    def walk(dataset: Dataset, nested: bool) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value or []:
                    walk(item, True)
                continue
            if not element.value:
                continue
            if element.keyword == "ReferencedSOPInstanceUID":
                values = element.value if element.VM > 1 else [element.value]
                instances.update(str(v) for v in values)
            elif nested and element.keyword == "SeriesInstanceUID":
                series.add(str(element.value))
            elif nested and element.keyword == "StudyInstanceUID":
                studies.add(str(element.value))

    walk(ds, False)
    return instances, series, studies


def _text(value) -> str:
    if value is None:
        return ""
    if type(value).__name__ == "MultiValue" or isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


class Stower:
    """Checks and stores the parts of STOW requests for one platform home."""

    def __init__(self, home: HdhHome, index: IndexSource, files: StoredFiles, profile=None):
        self.home = home
        self.index = index
        self.files = files
        self.store_root = home.store / "dicom"
        self.quarantine_root = home.quarantine / "dicomweb"
        self._profile = profile

    @property
    def profile(self):
        if self._profile is None:  # loads Dagster: only when the first object is checked
            from resources.imaging import DicomIngestionResource

            self._profile = DicomIngestionResource.from_env().profile()
        return self._profile

    # one part ---------------------------------------------------------------------------------
    def check(self, part: Part, view: IndexView, visible, path_study: str | None) -> None:
        """Raise :class:`Refusal` unless the part may be stored; fills its index row."""
        from hdh_assets.imaging.index import index_row
        from hdh_assets.pseudonymisation.dicom import conformance_violations

        try:
            ds = pydicom.dcmread(io.BytesIO(part.data))
            ds.file_meta.TransferSyntaxUID  # noqa: B018  (File Meta Information is required)
            part.dataset = ds
        except Exception:
            raise Refusal(
                "unreadable", CANNOT_UNDERSTAND, "not a DICOM file with File Meta Information"
            ) from None
        uids = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        missing = [k for k in uids if not _text(ds.get(k))]
        if missing:
            raise Refusal("missing_uids", CANNOT_UNDERSTAND, f"missing {', '.join(missing)}")
        if str(ds.SOPClassUID) not in DERIVED_SOP_CLASSES:
            raise Refusal(
                "sop_class_not_supported",
                SOP_CLASS_NOT_SUPPORTED,
                "only derived objects (segmentations, structured reports, RT structure sets, "
                "parametric maps, key object selections) are accepted",
            )
        study = str(ds.StudyInstanceUID)
        if path_study is not None and study != path_study:
            raise Refusal(
                "study_mismatch", CANNOT_UNDERSTAND, "StudyInstanceUID differs from the path's"
            )
        violations = conformance_violations(ds, self.profile)
        if violations:
            shown = "; ".join(sorted(set(violations))[:5])
            raise Refusal("identifying_attributes", CANNOT_UNDERSTAND, f"Annex E: {shown}")
        bad = [k for k in uids[1:] if not _REMAPPED.match(str(ds.get(k)))]
        if bad:
            raise Refusal("invalid_uid", CANNOT_UNDERSTAND, f"{', '.join(bad)} not a remapped UID")
        seen = (
            view.instances
            if visible is None
            else (view.instances.filter(pl.col("StudyInstanceUID").is_in(sorted(visible))))
        )
        instances, series, studies = _references(ds)
        studies.add(study)

        def unknown(keyword: str, uids: set[str]) -> int:
            found = seen.filter(pl.col(keyword).is_in(sorted(uids)))[keyword] if uids else []
            return len(uids - set(found))

        unresolved = (
            unknown("SOPInstanceUID", instances)
            + unknown("SeriesInstanceUID", series)
            + unknown("StudyInstanceUID", studies)
        )
        if unresolved:
            raise Refusal(
                "unresolved_reference",
                CANNOT_UNDERSTAND,
                f"{unresolved} referenced UID(s) do not resolve to an instance this token may see",
            )
        study_rows = seen.filter(pl.col("StudyInstanceUID") == study)
        first = study_rows.row(0, named=True)
        differing = []
        if _text(ds.get("PatientID")) != first["subject_pseudonym"]:
            differing.append("PatientID")
        header = self.files.header(first["store_path"], first["sha256"])
        for keyword in PATIENT_KEYWORDS:
            value = _text(ds.get(keyword))
            if value and (header is None or value != _text(header.get(keyword))):
                differing.append(keyword)
        if differing:
            raise Refusal(
                "patient_mismatch",
                CANNOT_UNDERSTAND,
                f"{', '.join(differing)} differ(s) from the referenced study's pseudonymised values",
            )
        part.sha256 = hashlib.sha256(part.data).hexdigest()
        store_path = f"{study}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        part.row = index_row(ds, first["subject_kind"], len(part.data), part.sha256, store_path)

    # a request --------------------------------------------------------------------------------
    def store(
        self,
        body: bytes,
        content_type: str | None,
        claims: Claims,
        view: IndexView,
        visible,
        base_url: str,
        path_study: str | None = None,
    ) -> Outcome:
        boundary = boundary_of(content_type)
        parts = [Part(n, data) for n, data in enumerate(split_parts(body, boundary), start=1)]
        for part in parts:
            try:
                self.check(part, view, visible, path_study)
            except Refusal as refusal:
                part.refusal = refusal
            except Exception as error:  # a value read from the object may be in the message
                log.error("stow: checking part %d failed (%s)", part.number, type(error).__name__)
                part.refusal = Refusal(
                    "processing_failure",
                    PROCESSING_FAILURE,
                    f"checking failed ({type(error).__name__})",
                )
        accepted = [p for p in parts if p.refusal is None]
        if accepted:
            self._write(accepted)
        for part in parts:
            if part.refusal is not None:
                self._quarantine(part, claims)
            else:
                row = part.row
                part.url = (
                    f"{base_url}/studies/{row['study_instance_uid']}/series/"
                    f"{row['series_instance_uid']}/instances/{row['sop_instance_uid']}"
                )
        stored = [p for p in parts if p.refusal is None]
        refused = [p for p in parts if p.refusal is not None]
        log.info(
            "stow: %d stored, %d refused %s",
            len(stored),
            len(refused),
            sorted({p.refusal.code for p in refused}),
        )
        status = 200 if not refused else 202 if stored else 409
        return Outcome(
            status, self._response(stored, refused, base_url, path_study), stored, refused
        )

    def _response(
        self, stored: list[Part], refused: list[Part], base_url: str, path_study: str | None
    ) -> dict:
        body: dict = {}
        studies = {p.row["study_instance_uid"] for p in stored}
        study = path_study or (studies.pop() if len(studies) == 1 else None)
        if study and (stored or path_study):
            body["00081190"] = {"vr": "UR", "Value": [f"{base_url}/studies/{study}"]}
        if stored:
            body["00081199"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": {"vr": "UI", "Value": [p.sop_class]},
                        "00081155": {"vr": "UI", "Value": [p.sop_instance]},
                        "00081190": {"vr": "UR", "Value": [p.url]},
                    }
                    for p in stored
                ],
            }
        if refused:
            items = []
            for p in refused:
                item: dict = {}
                if p.sop_class:
                    item["00081150"] = {"vr": "UI", "Value": [p.sop_class]}
                if p.sop_instance and _REMAPPED.match(p.sop_instance):
                    item["00081155"] = {"vr": "UI", "Value": [p.sop_instance]}
                item["00081197"] = {"vr": "US", "Value": [p.refusal.failure]}
                comment = f"part {p.number}: {p.refusal.code}: {p.refusal.message}"
                item["00000902"] = {"vr": "LO", "Value": [comment[:64]]}
                items.append(item)
            body["00081198"] = {"vr": "SQ", "Value": items}
        return body

    # writing ----------------------------------------------------------------------------------
    def _write(self, parts: list[Part]) -> None:
        """Store the parts and index them (module docstring: lock, then files, then index)."""
        from hdh_assets.imaging.index import INDEX, INDEX_SCHEMA

        try:
            with store_lock(self.store_root):
                current = self.index.current().instances
                taken = dict(current.select("sop_instance_uid", "sha256").iter_rows())
                present = set(current["study_instance_uid"])  # an erasure may have come since
                rows = []
                for part in parts:
                    if part.row["study_instance_uid"] not in present:
                        part.refusal = Refusal(
                            "unresolved_reference",
                            CANNOT_UNDERSTAND,
                            "the study is no longer held",
                        )
                        continue
                    sop = part.row["sop_instance_uid"]
                    earlier = taken.get(sop)
                    if earlier is not None and earlier != part.sha256:
                        part.refusal = Refusal(
                            "uid_conflict",
                            CANNOT_UNDERSTAND,
                            "the SOP Instance UID is stored already with other content",
                        )
                        continue
                    self._write_file(part)
                    if earlier is None:
                        rows.append(part.row)
                    taken[sop] = part.sha256
                if rows:
                    frame = pl.DataFrame(rows, schema=INDEX_SCHEMA, orient="row")
                    INDEX.validate(frame)
                    self._write_index(frame)
        except Exception as error:
            out_of_space = isinstance(error, OSError) and error.errno == errno.ENOSPC
            log.error("stow: storing failed (%s)", type(error).__name__)
            for part in parts:
                if part.refusal is None:
                    part.refusal = (
                        Refusal("out_of_resources", OUT_OF_RESOURCES, "no space left on the store")
                        if out_of_space
                        else Refusal(
                            "processing_failure", PROCESSING_FAILURE, "storing failed; retry later"
                        )
                    )

    def _write_file(self, part: Part) -> None:
        target = self.store_root / part.row["store_path"]
        if not target.resolve().is_relative_to(self.store_root.resolve()):
            raise RuntimeError("store path outside the store")  # unreachable: UIDs are checked
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
        partial.write_bytes(part.data)
        os.replace(partial, target)

    def _write_index(self, frame: pl.DataFrame) -> None:
        now = dt.datetime.now(dt.UTC)
        batch = DERIVED_BATCH.format(date=now.strftime("%Y%m%d"))
        folder = self.home.lake.joinpath(*INSTANCES_PATH) / f"batch={batch}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-stow-{now.strftime('%H%M%S%f')}-{uuid.uuid4().hex[:12]}.parquet"
        partial = folder / f".{name}.partial"
        frame.write_parquet(partial)
        os.replace(partial, folder / name)

    def _quarantine(self, part: Part, claims: Claims) -> None:
        """Keep a refused part and a sidecar naming the reason (no value read from it)."""
        now = dt.datetime.now(dt.UTC)
        folder = self.quarantine_root / now.strftime("%Y%m%d")
        folder.mkdir(parents=True, exist_ok=True)
        stem = part.sha256 or hashlib.sha256(part.data).hexdigest()
        target = folder / f"{stem}.dcm"
        if not target.exists():
            partial = folder / f".{stem}.{uuid.uuid4().hex}.partial"
            partial.write_bytes(part.data)
            os.replace(partial, target)
        note = {
            "reason": part.refusal.code,
            "failure_reason": f"0x{part.refusal.failure:04X}",
            "message": part.refusal.message,
            "sop_class_uid": part.sop_class if part.sop_class in UID_dictionary else None,
            "caller": claims.describe(),
            "received_at": now.isoformat(timespec="seconds"),
            "part": part.number,
        }
        sidecar = folder / f"{stem}.json"
        partial = folder / f".{stem}.{uuid.uuid4().hex}.json.partial"
        partial.write_text(json.dumps(note, indent=1))
        os.replace(partial, sidecar)


def quarantine_note(home: HdhHome, data: bytes) -> dict | None:
    """The sidecar of a quarantined part, found by its bytes (tests and operators)."""
    stem = hashlib.sha256(data).hexdigest()
    for sidecar in sorted((home.quarantine / "dicomweb").glob(f"*/{stem}.json")):
        return json.loads(sidecar.read_text())
    return None
