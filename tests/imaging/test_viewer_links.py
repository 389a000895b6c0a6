"""The imaging assets' metadata link each study to the viewer, through one setting each."""

import datetime as dt
import shutil

import dagster as dg
import polars as pl
import pydicom.data

from hdh_assets.imaging.assets import dicom_previews, dicom_studies
from hdh_assets.imaging.viewer import (
    DEFAULT_DICOMWEB_URL,
    DEFAULT_VIEWER_URL,
    STUDIES_LINKED,
    dicomweb_url,
    study_link,
    viewer_url,
)
from resources.home import HdhHome
from resources.platform import HomeResource


def _series(studies: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_instance_uid": [f"2.25.{1000 + i}" for i in range(studies)],
            "subject_pseudonym": [f"p{i % 3}" for i in range(studies)],
            "study_date": [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(studies)],
            "modality": ["CT" if i % 2 else "MR" for i in range(studies)],
            "instances": [3] * studies,
            "frames": [3] * studies,
            "bytes": [100] * studies,
            "geometry_consistent": [True] * studies,
        }
    )


def test_settings_have_one_default_each(monkeypatch):
    monkeypatch.delenv("HDH_VIEWER_URL", raising=False)
    monkeypatch.delenv("HDH_DICOMWEB_URL", raising=False)
    assert viewer_url() == DEFAULT_VIEWER_URL == "http://127.0.0.1:3003"
    assert dicomweb_url() == DEFAULT_DICOMWEB_URL == "http://127.0.0.1:3002/dicom-web"
    monkeypatch.setenv("HDH_VIEWER_URL", "https://viewer.example.org/")
    monkeypatch.setenv("HDH_DICOMWEB_URL", "https://pacs.example.org/dicom-web/")
    assert study_link("1.2.3") == "https://viewer.example.org/viewer?StudyInstanceUIDs=1.2.3"
    assert dicomweb_url() == "https://pacs.example.org/dicom-web"


def test_studies_metadata_links_the_first_studies_to_the_viewer(monkeypatch):
    monkeypatch.setenv("HDH_VIEWER_URL", "https://viewer.example.org")
    monkeypatch.delenv("HDH_DICOMWEB_URL", raising=False)
    output = dicom_studies(series=_series(STUDIES_LINKED + 5))
    metadata = output.metadata
    table = metadata["viewer"].value
    links = [line for line in table.splitlines() if "](https://" in line]
    assert len(links) == STUDIES_LINKED
    assert "[2.25.1000](https://viewer.example.org/viewer?StudyInstanceUIDs=2.25.1000)" in links[0]
    assert "2.25.1024" not in table  # beyond the first ones
    assert f"The first {STUDIES_LINKED} of {STUDIES_LINKED + 5} studies" in table
    assert "p0" not in table  # no subject pseudonym: the study's own UID is enough
    assert metadata["dicomweb_root"] == dg.MetadataValue.url("http://127.0.0.1:3002/dicom-web")
    assert metadata["viewer_url"] == dg.MetadataValue.url("https://viewer.example.org")


def test_previews_link_each_series_to_its_study_in_the_viewer(monkeypatch, tmp_path):
    monkeypatch.delenv("HDH_VIEWER_URL", raising=False)
    monkeypatch.delenv("HDH_DICOMWEB_URL", raising=False)
    home = HdhHome(tmp_path / "hdh").ensure()
    stored = home.store / "dicom" / "a.dcm"
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pydicom.data.get_testdata_file("CT_small.dcm"), stored)
    instances = pl.DataFrame(
        {
            "series_instance_uid": ["2.25.7"],
            "study_instance_uid": ["2.25.6"],
            "sop_instance_uid": ["2.25.8"],
            "instance_number": [1],
            "store_path": ["a.dcm"],
            "modality": ["CT"],
        }
    )
    output = dicom_previews(
        context=dg.build_asset_context(partition_key="b1"),
        instances=instances,
        hdh_home=HomeResource(root=str(home.root)),
    )
    previews = output.metadata["previews"].value
    assert "(http://127.0.0.1:3003/viewer?StudyInstanceUIDs=2.25.6)" in previews
    assert output.metadata["dicomweb_root"] == dg.MetadataValue.url(DEFAULT_DICOMWEB_URL)
