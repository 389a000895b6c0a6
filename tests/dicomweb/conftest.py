"""A small platform store for the DICOMweb tests, built the cheapest way: the synthetic sample's
DICOM batch and pydicom's test files go through the ingestion core (no Dagster, no Spark), and
each batch's index is written where the lake keeps it (``imaging/dicom_instances/batch=<b>``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from dicomweb.app import create_app
from dicomweb.tokens import Tokens
from hdh_assets.gdpr.exclusions import EXCLUSIONS_PATH, SCHEMA
from hdh_assets.imaging.ingest import IngestSettings, ingest_batch
from resources.home import HdhHome
from resources.imaging import DicomIngestionResource
from tests.conftest import TEST_KEY
from tests.dicomweb.servers import Service, start_service

SAMPLE, CORPUS = "sample", "pydicom"
TOKEN_KEY = b"dicomweb-test-token-key-of-32-bytes!"


def ingest(home: HdhHome, batches: dict[str, Path]) -> dict[str, pl.DataFrame]:
    """Ingest each folder as a batch and write its index partition; the indexes by batch."""
    settings = IngestSettings(
        key=bytes.fromhex(TEST_KEY),
        store_root=home.store / "dicom",
        quarantine_root=home.quarantine / "dicom",
        profile=DicomIngestionResource().profile(),
        workers=1,
    )
    taken: dict[str, str] = {}
    indexes = {}
    for batch, folder in batches.items():
        index = ingest_batch(batch, folder, settings, taken).index()
        taken.update(dict(index.select("sop_instance_uid", "sha256").iter_rows()))
        target = home.lake / "imaging" / "dicom_instances" / f"batch={batch}"
        target.mkdir(parents=True, exist_ok=True)
        index.write_parquet(target / "part-00000.parquet")
        indexes[batch] = index
    return indexes


def exclude(home: HdhHome, pseudonyms: list[str]) -> None:
    """Write the gdpr/exclusions snapshot as the rights processing does."""
    folder = home.lake.joinpath(*EXCLUSIONS_PATH)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(p, f"HDH-TEST{i:06d}", "erasure") for i, p in enumerate(pseudonyms)]
    pl.DataFrame(rows, schema=SCHEMA, orient="row").write_parquet(folder / "part-00000.parquet")


def write_native_multiframes(folder: Path) -> None:
    """pydicom's only multi-frame files share their SOP Instance UIDs with other variants, so
    ingestion keeps one (compressed) of each: these are decompressed copies with UIDs of
    their own, for native multi-frame pixel data (8, 16 and 32 bits, colour)."""
    for name in (
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
    ):
        dataset = pydicom.dcmread(pydicom.data.get_testdata_file(name))
        dataset.decompress()
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(dataset, keyword, generate_uid(entropy_srcs=[name, keyword]))
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(folder / f"native-{name}", enforce_file_format=True)


@dataclass
class Store:
    home: HdhHome
    indexes: dict[str, pl.DataFrame]

    @property
    def instances(self) -> pl.DataFrame:
        return pl.concat(
            [i.with_columns(batch=pl.lit(b)) for b, i in self.indexes.items()], how="vertical"
        )

    def files(self) -> list[Path]:
        return sorted((self.home.store / "dicom").rglob("*.dcm"))


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory, sample_root: Path) -> Store:
    """The synthetic sample's DICOM batch and pydicom's corpus, ingested (read only)."""
    root = tmp_path_factory.mktemp("dicomweb")
    corpus = root / "corpus"
    corpus.mkdir()
    for number, path in enumerate(Path(p) for p in pydicom.data.get_testdata_files()):
        if path.is_file():
            shutil.copyfile(path, corpus / f"{number:03d}-{path.name}")
    write_native_multiframes(corpus)
    home = HdhHome(root / "hdh").ensure()
    (sample_batch,) = (sample_root / "landing" / "dicom").iterdir()
    return Store(home, ingest(home, {SAMPLE: sample_batch, CORPUS: corpus}))


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens(TOKEN_KEY)


@pytest.fixture(scope="session")
def service(store: Store, tokens: Tokens) -> Service:
    running = start_service(create_app(store.home, tokens))
    yield running
    running.stop()


def client(url: str, token: str | None) -> DICOMwebClient:
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(url, session=session)


@pytest.fixture(scope="session")
def operator(service: Service, tokens: Tokens) -> DICOMwebClient:
    """dicomweb-client with an all-studies token."""
    return client(service.dicomweb, tokens.issue(None, 3600))


@pytest.fixture(scope="session")
def auth(tokens: Tokens) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.issue(None, 3600)}"}
