"""`hdh demo` end to end: every asset materialised, a summary, no identifier outside the landing zone.

One demo runs for the module (Spark, a few minutes); tests that only read share it, tests that
change the platform (rerun, materialise, erase) work on their own copy of it, so no test depends
on which ran before it.
"""

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pydicom
import pytest
from click.testing import CliRunner

from hdh_cli.main import cli
from tests.conftest import identity_needles
from tests.dicomweb.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.spark]

SMALL = ["--people", "12", "--claims-rows", "3000", "--seed", "11"]


def _run(args: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout (the JSON), and everything printed (stdout and stderr)."""
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.stdout, result.output


def _lake_files_naming(home: Path, pseudonym: str) -> list[tuple[str, str]]:
    """(file, column) of every string cell equal to ``pseudonym``, gdpr/exclusions aside (it
    must keep the pseudonym to refuse re-ingestion)."""
    found = []
    for file in [*(home / "lake").rglob("*.parquet"), *(home / "workspaces").rglob("*.parquet")]:
        if "exclusions" in file.parts or any(p.startswith(".") for p in file.parts):
            continue
        frame = pl.read_parquet(file)
        found += [
            (str(file), column)
            for column, dtype in frame.schema.items()
            if dtype == pl.String and (frame[column] == pseudonym).any()
        ]
    return found


def _lake_text(lake: Path) -> str:
    """Every value stored in the lake, as text (Parquet is compressed: read it, don't grep it)."""
    chunks = []
    for path in lake.rglob("*.parquet"):
        frame = pl.read_parquet(path)
        chunks.append(str(frame.to_dicts()))
        chunks.append(str(path))
    return "\n".join(chunks)


def _raw_texts(home: Path) -> list[tuple[Path, bytes]]:
    """Landed and quarantined files as text (Parquet read, gzip opened)."""
    texts = []
    for root in (home / "landing", home / "quarantine"):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix == ".parquet":
                data = pl.read_parquet(path).write_csv().encode()
            elif path.suffix == ".gz":
                data = gzip.decompress(path.read_bytes())
            else:
                data = path.read_bytes()
            texts.append((path, data))
    return texts


def _store_text(store: Path) -> str:
    """Pseudonymised files and previews, read as text the way a grep would see them."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in store.rglob("*") if p.is_file())


def _dicom_needles(landing: Path) -> set[str]:
    """What the original DICOM headers identify: UIDs, institutions, physicians, accessions."""
    needles = set()
    for path in landing.rglob("*"):
        if not path.is_file() or path.parent.name == "misc" or path.name == "_READY":
            continue
        ds = pydicom.dcmread(path)
        needles |= {str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)}
        needles |= {
            str(ds.InstitutionName),
            str(ds.ReferringPhysicianName),
            str(ds.AccessionNumber),
        }
        needles |= {str(ds.DeviceSerialNumber), str(ds.StationName)}
    return needles


def _instance_text(dagster_home: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", errors="ignore")
        for p in dagster_home.rglob("*")
        if p.is_file()
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """One demo run shared by the assertions below (it takes a few seconds)."""
    root = tmp_path_factory.mktemp("demo")
    mp = pytest.MonkeyPatch()
    mp.setenv("HDH_HOME", str(root / "hdh"))
    mp.setenv("DAGSTER_HOME", str(root / "hdh" / "dagster"))
    mp.delenv("HDH_PSEUDONYM_KEY", raising=False)  # the demo runs on its generated demo key
    # the package indexes the demo publishes to, on ports free in this run
    mp.setenv("HDH_DEVPI_URL", f"http://127.0.0.1:{free_port()}")
    mp.setenv("HDH_R_REPOS_URL", f"http://127.0.0.1:{free_port()}")
    code, stdout, everything = _run(["demo", "--json", *SMALL])
    yield root / "hdh", code, stdout, everything
    mp.undo()


@pytest.fixture
def demo_copy(demo_home, tmp_path, monkeypatch):
    """The demo's platform as the demo left it, copied for a test that changes it. Only the
    Dagster event logs name the home's path (in metadata); the code never reads paths back."""
    home, code, stdout, everything = demo_home
    assert code == 0, everything
    copy = tmp_path / "hdh"
    shutil.copytree(home, copy, symlinks=True)
    monkeypatch.setenv("HDH_HOME", str(copy))
    monkeypatch.setenv("DAGSTER_HOME", str(copy / "dagster"))
    return copy, code, stdout, everything


def test_demo_materialises_every_asset_and_reports(demo_home):
    home, code, stdout, everything = demo_home
    assert code == 0, everything
    report = json.loads(stdout)
    assert report["success"] is True
    workspaces = report["workspaces"]
    assert workspaces["provisioned"] == ["cardio-imaging", "diabetes-outcomes"]
    assert workspaces["delivery"] == "2 projects added" and workspaces["commit"]
    assert (home / "gitops" / "diabetes-outcomes" / "kustomization.yaml").exists()
    assets = {a["asset"]: a for a in report["status"]["assets"]}
    assert {
        "imaging/landed_files",
        "imaging/dicom_instances",
        "imaging/dicom_quarantine",
        "imaging/dicom_series",
        "imaging/dicom_studies",
        "imaging/dicom_previews",
        "clinical/landed_files",
        "claims/landed_files",
        "claims/events",
    } <= set(assets)
    empty_by_nature = {"clinical/json_quarantine", "clinical/declared_records"}
    # No project delivers model outputs in the demo: they follow the DICOM batches as no-ops.
    empty_by_nature |= {
        f"imaging/model_{n}" for n in ("segmentations", "output_quarantine", "agreement")
    }
    for name, asset in assets.items():
        assert asset["last_materialization"], name
        assert asset["rows"] > 0 or name in empty_by_nature, name
        assert asset["checks_failed"] == [], name
    assert {
        "clinical/patients",
        "clinical/observations",
        "products/imaging_clinical_linkage",
    } <= set(assets)
    # what followed the batches is exactly what the automation conditions requested
    requested = {key for evaluation in report["automation"] for key in evaluation}
    assert {"imaging/dicom_series", "gdpr/subject_index", "products/hba1c_trajectory"} <= requested
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        built = {
            entry.dagster_event.asset_key.to_user_string()
            for run in instance.get_runs(dg.RunsFilter(tags={"hdh/automation": "hdh-cli"}))
            for entry in instance.all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
        }
    assert built == requested
    # the referent sees how much of a FHIR batch the column-wise reader did
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.fetch_materializations(dg.AssetKey(["clinical", "patients"]), limit=10)
        read = [r.asset_materialization.metadata["lines_read"].value for r in records.records]
    assert read and any(r["lines_columnwise"] > 0 for r in read), read
    # Malformed DICOM files are noticed already at landing (a warning, not a failure).
    assert assets["imaging/landed_files"]["checks_warned"] == ["recognised_formats"]
    landed_claims = pl.read_parquet(home / "landing" / "claims" / "sample-seed11" / "*.parquet")
    # by raw month (rejected-YYYY-MM.parquet) and the undated rows (rejected-undated-*.parquet)
    quarantined = pl.read_parquet(home / "quarantine" / "claims" / "sample-seed11" / "*.parquet")
    # the demo's erasure removed one person's events from the landed extract as well
    erased_nir = json.loads((home / "sample" / "identities.json").read_text())["people"][1]["nir"]
    removed = sum(
        f["records_removed"]
        for f in report["erasure"]["raw_copies_removed"]
        if f["area"] == "landing/claims/sample-seed11"
    )
    assert removed > 0
    assert landed_claims.filter(pl.col("nir").str.slice(0, 13) == erased_nir[:13]).is_empty()
    assert assets["claims/events"]["rows"] + quarantined.height == landed_claims.height
    imaging = assets["imaging/dicom_instances"]
    assert set(imaging["checks_passed"]) == {
        "no_excluded_subject",
        "conforms_to_annex_e",
        "landed_equals_ingested_duplicates_quarantined",
        "matches_published_schema",
        "no_identifier_in_outputs",
        "one_row_per_sop_instance_uid",
    }
    dicom_quarantined = len(list((home / "quarantine" / "dicom").rglob("*.bin")))
    assert dicom_quarantined == assets["imaging/dicom_quarantine"]["rows"] > 0
    assert report["status"]["quarantined_files"] == 1 + dicom_quarantined
    assert len(list((home / "store" / "dicom").rglob("*.dcm"))) == imaging["rows"]
    assert (
        len(list((home / "store" / "previews").rglob("*.png")))
        == assets["imaging/dicom_previews"]["rows"]
    )


def test_the_demo_vets_decides_and_serves_one_project_s_packages(demo_home):
    home, code, stdout, everything = demo_home
    assert code == 0, everything
    packages = json.loads(stdout)["packages"]
    assert packages["failed"] == [] and packages["refused_files"] == []
    statuses = {rid.split("--")[2]: status for rid, status in packages["requests"].items()}
    assert statuses == {
        "hdh-tabular": "approved",  # every check passed
        "hdh-unknown-licence": "approved",  # by the demo referent's decision
        "reqests": "needs_review",  # one letter from requests
        "hdh-vulnerable": "refused",  # a critical advisory in the bundled database
        "hdhsurv": "approved",
    }
    project = packages["projects"]["diabetes-outcomes"]
    assert sorted(project["approved"]["pypi"]) == [
        "hdh-core",
        "hdh-numbers",
        "hdh-tabular",
        "hdh-unknown-licence",
    ]
    assert sorted(project["approved"]["cran"]) == ["hdhcore", "hdhstats", "hdhsurv"]
    assert project["python_index"].endswith("/projects/diabetes-outcomes/+simple/")
    assert project["r_repository"].endswith("/diabetes-outcomes")
    # the decision is in the audit trail, and the R repository holds exactly the approved files
    (decision,) = [
        json.loads(line)
        for line in (home / "packages" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decision["decided_by"] == "referent:demo" and decision["decision"] == "approve"
    contrib = home / "packages" / "r-repos" / "diabetes-outcomes" / "src" / "contrib"
    assert sorted(p.name.split("_")[0] for p in contrib.glob("*.tar.gz")) == [
        "hdhcore",
        "hdhstats",
        "hdhsurv",
    ]


def test_no_identifier_reaches_the_lake_the_instance_or_the_output(demo_home):
    home, _, _, output = demo_home
    people = json.loads((home / "sample" / "identities.json").read_text())["people"]
    needles = identity_needles(people) | _dicom_needles(home / "landing" / "dicom")
    haystacks = {
        "lake": _lake_text(home / "lake"),
        "DICOM store": _store_text(home / "store"),
        "dagster instance": _instance_text(home / "dagster"),
        "command output": output,
    }
    for where, text in haystacks.items():
        leaked = sorted(n for n in needles if n in text)
        assert not leaked, f"{len(leaked)} identifiers found in the {where}"
    # The scan is not vacuous: the same needles are found where raw data is allowed to be.
    assert any(
        n in (home / "landing/json/sample-seed11/Patient.ndjson").read_text() for n in needles
    )


PER_REQUEST = {"gdpr/request_plans", "gdpr/request_outcomes"}  # a rerun files a new erasure


def _rows(assets: list[dict]) -> dict[str, int]:
    return {a["asset"]: a["rows"] for a in assets if a["asset"] not in PER_REQUEST}


def test_rerun_replaces_rather_than_duplicates(demo_copy):
    _, _, first_output, _ = demo_copy
    first_report = json.loads(first_output)
    first = _rows(first_report["status"]["assets"])
    code, output, _ = _run(["demo", "--json", *SMALL])
    assert code == 0
    second_report = json.loads(output)
    assert _rows(second_report["status"]["assets"]) == first
    # the rerun's erasure is one more request: one more plan and one more outcome
    outcomes = {a["asset"]: a["rows"] for a in second_report["status"]["assets"]}
    assert outcomes["gdpr/request_outcomes"] == 2
    code, status_output, _ = _run(["status", "--json"])
    assert code == 0
    status = json.loads(status_output)
    assert _rows(status["assets"]) == first


def test_materialize_command_runs_a_selection(demo_copy):
    code, output, _ = _run(
        ["materialize", "key:claims/events", "--from", "2024-01-01", "--to", "2024-03-01", "--json"]
    )
    assert code == 0, output
    outcome = json.loads(output)
    assert outcome["success"] and outcome["materializations"] == 3
    code, output, _ = _run(
        [
            "materialize",
            "key:claims/events",
            "--partition",
            "2024-01-01",
            "--from",
            "2024-01-01",
            "--to",
            "2024-02-01",
        ]
    )
    assert code != 0


@pytest.mark.slow
def test_console_script_sample_respects_hdh_home(tmp_path):
    hdh = Path(sys.executable).with_name("hdh")
    env = {"HDH_HOME": str(tmp_path / "elsewhere"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(hdh), "sample", "--json", "--people", "3", "--claims-rows", "100"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["people"] == 3 and summary["claims_rows"] == 100
    assert (tmp_path / "elsewhere" / "landing" / "dicom" / "sample-seed42" / "_READY").exists()
    assert (tmp_path / "elsewhere" / "sample" / "identities.json").exists()


def test_one_person_has_one_pseudonym_in_imaging_and_claims(demo_home):
    """Linkage: the DICOM PatientID and the claims NIR of a person give the same pseudonym."""
    from hdh_assets.pseudonymisation import Pseudonymiser
    from resources.home import HdhHome
    from resources.pseudonymisation import load_demo_key

    home = demo_home[0]
    people = json.loads((home / "sample" / "identities.json").read_text())["people"]
    expected = {
        Pseudonymiser(load_demo_key(HdhHome(home))).subject_pseudonym(p["nir"]) for p in people
    }
    index = pl.read_parquet(home / "lake" / "gdpr" / "subject_index")
    by_asset = {
        asset: set(index.filter(pl.col("asset") == asset)["subject_pseudonym"])
        for asset in ("imaging/dicom_instances", "claims/events", "clinical/patients")
    }
    assert by_asset["imaging/dicom_instances"] and by_asset["imaging/dicom_instances"] <= expected
    assert by_asset["claims/events"] <= expected
    assert by_asset["imaging/dicom_instances"] & by_asset["claims/events"]
    erased = Pseudonymiser(load_demo_key(HdhHome(home))).subject_pseudonym(people[1]["nir"])
    assert erased not in set().union(*by_asset.values())  # the demo's erasure
    expected.discard(erased)
    assert expected <= by_asset["clinical/patients"]  # every other person of the sample
    assert len(by_asset["clinical/patients"] - expected) == 5  # and the Synthea-style US batch
    linkage = pl.read_parquet(home / "lake" / "products" / "imaging_clinical_linkage")
    assert linkage.height > 0 and (linkage["days_apart"].abs() <= 1).all()


def test_previews_are_published_as_images_on_the_asset_page(demo_home):
    import dagster as dg
    from PIL import Image

    home = demo_home[0]
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    event = instance.get_latest_materialization_event(dg.AssetKey(["imaging", "dicom_previews"]))
    markdown = event.asset_materialization.metadata["previews"].value
    assert markdown.count("data:image/png;base64,") >= 4
    pngs = list((home / "store" / "previews" / "dicom").glob("*.png"))
    sizes = {Image.open(p).size for p in pngs}
    assert pngs and all(max(size) <= 128 for size in sizes)
    # a windowed preview is not blank: grey levels span a real range
    extrema = [Image.open(p).getextrema() for p in pngs]
    assert all(high - low > 50 for low, high in extrema)


def test_the_demo_erasure_leaves_no_trace_of_the_person_and_proves_it(demo_home):
    home, code, stdout, _ = demo_home
    report = json.loads(stdout)
    erasure = report["erasure"]
    assert erasure["status"] == "completed" and erasure["assets"], erasure
    people = json.loads((home / "sample" / "identities.json").read_text())["people"]
    from hdh_assets.pseudonymisation import Pseudonymiser
    from resources.home import HdhHome
    from resources.pseudonymisation import load_demo_key

    pseudonym = Pseudonymiser(load_demo_key(HdhHome(home))).subject_pseudonym(people[1]["nir"])
    # the projects' grants were rebuilt without the person and are still there
    assert (home / "workspaces" / "diabetes-outcomes" / "grants" / "manifest.json").exists()
    assert "workspaces/workspace_data_grants" in erasure["assets"]
    excluded = pl.read_parquet(home / "lake" / "gdpr" / "exclusions")
    assert excluded["subject_pseudonym"].to_list() == [pseudonym]  # kept to refuse re-ingestion
    assert _lake_files_naming(home, pseudonym) == []
    needle = pseudonym.encode()
    assert not [f for f in (home / "store").rglob("*") if f.is_file() and needle in f.read_bytes()]
    # nor do the raw copies: landed files and quarantined originals lost the person's records
    nir_body = people[1]["nir"][:13].encode()
    assert not [f for f in _raw_texts(home) if nir_body in f[1]]
    assert people[2]["nir"][:13].encode() in b"".join(t for _, t in _raw_texts(home))
    assert erasure["raw_copies_clean"] is True and erasure["raw_copies_removed"]
    assets = {a["asset"]: a for a in report["status"]["assets"]}
    from hdh_assets.definitions import DOMAIN_ASSETS
    from hdh_assets.gdpr.assets import indexed_assets

    holding_people = {i.asset for _, i, _ in indexed_assets(DOMAIN_ASSETS)}
    touched = [name for name in erasure["assets"] if name in holding_people]
    assert "workspaces/workspace_data_grants" in touched and "claims/events" in touched
    for name in touched:
        assert "no_excluded_subject" in assets[name]["checks_passed"], name
    # the landing batches that lost the person's records were ingested again
    assert {"imaging/landed_files", "claims/landed_files"} <= set(erasure["assets"])
    code, out, _ = _run(["rights", "show", erasure["id"], "--json"])
    assert code == 0, out
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["subject_pseudonym"] == pseudonym
    assert set(shown["report"]["assets"]) == set(erasure["assets"])
    assert all(shown["report"]["checks"].values())
    # the release that held the person was re-issued as a patch and its snapshot purged
    reissued = erasure["releases_reissued"]
    assert {"product": "chronic_medication_cohort", "purged": "1.0.0", "released": "1.0.1"} in (
        reissued
    )
    assert all((r["purged"], r["released"]) == ("1.0.0", "1.0.1") for r in reissued)
    releases = home / "store" / "releases" / "chronic_medication_cohort"
    old = json.loads((releases / "1.0.0" / "manifest.json").read_text())
    new = json.loads((releases / "1.0.1" / "manifest.json").read_text())
    assert old["purged"]["request"] == erasure["id"] and not (releases / "1.0.0" / "data").exists()
    assert new["supersedes"] == "1.0.0" and new["reissued_for_request"] == erasure["id"]
    cohort = pl.read_parquet(releases / "1.0.1" / "data")
    assert pseudonym not in cohort["subject_pseudonym"].to_list() and cohort.height == new["rows"]


def _qido(home: Path, path: str, project: str | None = None) -> list[dict]:
    """A DICOMweb search on the demo's platform, as a viewer of ``project`` makes it."""
    from starlette.testclient import TestClient

    from dicomweb.app import create_app
    from dicomweb.tokens import Tokens
    from resources.home import HdhHome

    platform = HdhHome(home)
    tokens = Tokens.for_home(platform)
    with TestClient(create_app(platform, tokens)) as client:
        answer = client.get(
            "/dicom-web" + path,
            headers={"Authorization": f"Bearer {tokens.issue(project, 600)}"},
        )
    assert answer.status_code in (200, 204), answer.text
    return answer.json() if answer.status_code == 200 else []


def test_the_erased_person_s_studies_are_no_longer_served_and_a_project_viewer_is_named(
    demo_home,
):
    home, _, stdout, _ = demo_home
    report = json.loads(stdout)
    from hdh_assets.pseudonymisation import Pseudonymiser
    from resources.home import HdhHome
    from resources.pseudonymisation import load_demo_key

    people = json.loads((home / "sample" / "identities.json").read_text())["people"]
    pseudonym = Pseudonymiser(load_demo_key(HdhHome(home))).subject_pseudonym(people[1]["nir"])
    # the person had studies that the service served before the erasure, and serves no more
    assert report["erasure"]["studies_no_longer_served"] >= 1
    assert report["erasure"]["files_removed"] >= 1
    assert _qido(home, f"/studies?PatientID={pseudonym}") == []
    others = _qido(home, "/studies")
    assert others and pseudonym not in {s["00100020"]["Value"][0] for s in others}
    # make demo names a project's viewer and one of its studies, which the project does see
    viewer = report["viewer"]
    assert viewer["url"] == "http://127.0.0.1:3003" and viewer["studies"] >= 1
    assert viewer["project"] == "cardio-imaging" and viewer["sign_in_as"] == "claire.martin"
    study = viewer["study"].split("StudyInstanceUIDs=")[1]
    seen = {s["0020000D"]["Value"][0] for s in _qido(home, "/studies", viewer["project"])}
    assert study in seen and len(seen) == viewer["studies"]


def test_a_processing_run_killed_with_sigkill_resumes_and_completes(demo_copy):
    """On a copy of the demo: it erases a second person."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from resources.home import HdhHome
    from resources.rights_registry import RightsRegistry

    home = demo_copy[0]
    person = json.loads((home / "sample" / "identities.json").read_text())["people"][2]
    code, out, _ = _run(
        [
            "rights", "submit", "--type", "erasure", "--nir", person["nir"],
            "--family-name", person["family_name"], "--given-names", " ".join(person["given_names"]),
            "--birth-date", person["birth_date"], "--email", person["email"], "--json",
        ]
    )  # fmt: skip
    assert code == 0, out
    request_id = json.loads(out)["id"]
    assert _run(["rights", "verify", request_id])[0] == 0
    registry = RightsRegistry.from_env(HdhHome(home))
    hdh = str(Path(sys.executable).with_name("hdh"))
    process = subprocess.Popen(
        [hdh, "rights", "process", "--wait"],
        env={**os.environ, "HDH_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while registry.get(request_id).status.value != "processing":
        assert process.poll() is None and time.monotonic() < deadline, "never started processing"
        time.sleep(0.2)
    time.sleep(3)  # inside its runs
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert registry.get(request_id).status.value == "processing"  # interrupted, not completed
    code, out, _ = _run(["rights", "process", "--wait", "--json"])
    assert code == 0, out
    shown = json.loads(_run(["rights", "show", request_id, "--json"])[1])
    assert shown["status"] == "completed" and all(shown["report"]["checks"].values())
    pseudonym = shown["subject_pseudonym"]
    assert _lake_files_naming(home, pseudonym) == []


@pytest.mark.browser
def test_an_erasure_filed_in_chromium_is_processed_and_shown_completed(demo_copy):
    """The end-to-end path: the form in headless Chromium, the DPO's CLI, processing, proofs, and
    the status page, on a copy of the demo (it erases a third person)."""
    from portal.app import app_from_env
    from resources.home import HdhHome
    from tests.browser import chromium_browser
    from tests.dicomweb.servers import start_service

    home = demo_copy[0]
    person = json.loads((home / "sample" / "identities.json").read_text())["people"][3]
    portal = start_service(app_from_env(HdhHome(home), demo=True), lifespan="auto")
    base = f"http://127.0.0.1:{portal.port}"
    try:
        with chromium_browser() as browser:
            page = browser.new_page()
            page.goto(f"{base}/en/request")
            page.select_option("#type", "erasure")
            page.fill("#family_name", person["family_name"])
            page.fill("#given_names", " ".join(person["given_names"]))
            page.fill("#birth_date", person["birth_date"])
            page.fill("#nir", person["nir"])
            page.fill("#email", person["email"])
            page.click("button[type=submit]")
            request_id = page.inner_text("#tracking")
            token = page.inner_text("#token")
            assert request_id.startswith("HDH-") and token

            assert _run(["rights", "verify", request_id, "--by", "dpo"])[0] == 0
            code, out, _ = _run(["rights", "process", "--wait", "--json"])
            assert code == 0, out

            page.goto(f"{base}/en/status")
            page.fill("#id", request_id)
            page.fill("#token", token)
            page.click("button[type=submit]")
            assert page.get_attribute("#status", "data-status") == "completed"
            assert "completed" in page.inner_text("#status")
    finally:
        portal.stop()
    shown = json.loads(_run(["rights", "show", request_id, "--json"])[1])
    assert all(shown["report"]["checks"].values())
    pseudonym = shown["subject_pseudonym"]
    assert _lake_files_naming(home, pseudonym) == []
    needle = pseudonym.encode()
    assert not [f for f in (home / "store").rglob("*") if f.is_file() and needle in f.read_bytes()]


def test_after_the_demo_the_package_sensors_have_nothing_to_do(demo_copy):
    """The daemon started after the demo (make ui) finds every request vetted against the
    database the demo recorded, every decision applied and every index published."""
    from hdh_cli.instance import platform_instance
    from resources.home import HdhHome
    from sensors.packages import package_requests_sensor, vulnerability_database_sensor

    home, code, _, everything = demo_copy
    assert code == 0, everything
    instance = platform_instance(HdhHome(home))
    for sensor in (package_requests_sensor, vulnerability_database_sensor):
        result = sensor(dg.build_sensor_context(instance=instance))
        requests = getattr(result, "run_requests", None) or []
        assert not requests, (sensor.name, [r.partition_key for r in requests])
