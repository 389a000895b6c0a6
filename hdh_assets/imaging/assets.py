"""Imaging assets: landed files, pseudonymised instances and their quarantine, series, studies,
previews."""

import base64
import time
from pathlib import Path

import dagster as dg
import polars as pl

from hdh_assets import owners
from hdh_assets.automation import follows_upstream
from hdh_assets.gdpr.exclusions import excluded_pseudonyms
from hdh_assets.imaging.aggregates import series_table, studies_table
from hdh_assets.imaging.index import INDEX
from hdh_assets.imaging.ingest import IngestSettings, committing
from hdh_assets.imaging.model_outputs.assets import assets as model_output_assets
from hdh_assets.imaging.previews import render_preview
from hdh_assets.imaging.viewer import (
    STUDIES_LINKED,
    dicomweb_url,
    studies_markdown,
    study_link,
    viewer_url,
)
from hdh_assets.landing.assets import landed_batch, landing_inventory_asset
from hdh_assets.landing.partitions import BATCH_PARTITIONS
from hdh_assets.validation import column_schema, documented_columns, pandera_check
from resources.imaging import DicomIngestionResource
from resources.lake.tables import Lake
from resources.platform import HomeResource
from resources.pseudonymisation import PseudonymisationKeyResource

BATCHES = BATCH_PARTITIONS["dicom"]
INSTANCES = dg.AssetKey(["imaging", "dicom_instances"])
QUARANTINE = dg.AssetKey(["imaging", "dicom_quarantine"])
INDEX_CHECK = "matches_published_schema"
RECONCILE_CHECK = "landed_equals_ingested_duplicates_quarantined"
LEAK_CHECK = "no_identifier_in_outputs"
CONFORMANCE_CHECK = "conforms_to_annex_e"
UNIQUE_CHECK = "one_row_per_sop_instance_uid"
REPEATED_EXAMPLES = 5  # pseudonymised UIDs shown by a failing UNIQUE_CHECK
PREVIEWS_PER_PAGE = 8

QUARANTINE_COLUMNS = documented_columns(
    {
        "file_sha256": (
            "string",
            "SHA-256 of the landed file (its name in quarantine/dicom/<batch>/)",
        ),
        "reason": (
            "string",
            "reason code: not_dicom, empty, truncated, unreadable, missing_required_uids, burned_in_annotation, dicomdir, bad_archive, uid_conflict, pseudonymisation_failed",
        ),
        "message": ("string", "what was wrong, without any value read from the file"),
    }
)
SERIES_COLUMNS = documented_columns(
    {
        "series_instance_uid": ("string", "pseudonymised Series Instance UID"),
        "study_instance_uid": ("string", "pseudonymised Study Instance UID"),
        "subject_pseudonym": ("string", "keyed pseudonym of the patient"),
        "modality": ("string", "modality of the series"),
        "sop_class_uid": ("string", "SOP Class UID of its instances"),
        "series_number": ("int", "series number"),
        "study_date": ("date", "shifted study date"),
        "series_date": ("date", "shifted series date"),
        "instances": ("int", "instances ingested"),
        "frames": ("int", "frames over all instances"),
        "rows": ("int", "image rows"),
        "columns": ("int", "image columns"),
        "consistent_rows": ("bool", "every instance has the same rows"),
        "consistent_columns": ("bool", "every instance has the same columns"),
        "consistent_pixel_spacing": ("bool", "every instance has the same pixel spacing"),
        "consistent_image_orientation_patient": ("bool", "every instance has the same orientation"),
        "first_slice_z": ("float", "lowest z of Image Position (Patient), mm"),
        "last_slice_z": ("float", "highest z of Image Position (Patient), mm"),
        "bytes": ("int", "stored size"),
        "batches": ("list[string]", "landed batches the series came from"),
        "geometry_consistent": ("bool", "rows, columns, spacing and orientation all agree"),
    }
)
STUDIES_COLUMNS = documented_columns(
    {
        "study_instance_uid": ("string", "pseudonymised Study Instance UID"),
        "subject_pseudonym": ("string", "keyed pseudonym of the patient"),
        "study_date": ("date", "shifted study date"),
        "modalities": ("list[string]", "modalities of its series"),
        "series": ("int", "series in the study"),
        "instances": ("int", "instances in the study"),
        "frames": ("int", "frames in the study"),
        "bytes": ("int", "stored size"),
        "geometry_consistent": ("bool", "every series has a consistent geometry"),
    }
)
PREVIEW_COLUMNS = documented_columns(
    {
        "series_instance_uid": ("string", "pseudonymised Series Instance UID"),
        "modality": ("string", "modality of the series"),
        "preview_path": ("string", "PNG under HDH_HOME/store (null when not rendered)"),
        "status": ("string", "ok, or why the pixel data could not be rendered"),
    }
)

landed_dicom_files = landing_inventory_asset(
    source="dicom",
    group="imaging",
    owners=[owners.IMAGING, owners.PLATFORM],
    kinds={"dicom"},
    expected_formats={"dicom", "dicomdir", "zip", "tar.gz", "gzip"},
    description=(
        "Inventory of one landed DICOM batch (landing/dicom/<batch>/): one row per file with its "
        "content hash, sniffed format (DICM preamble, archive, other) and size. Paths are not kept: "
        "deliveries name files after patients. The 'landed' side of imaging reconciliation."
    ),
)


OTHER_ROWS_SCHEMA = {"batch": pl.String, "sop_instance_uid": pl.String, "sha256": pl.String}


def other_batches_rows(lake_root: Path, batch: str) -> pl.DataFrame:
    """Batch, SOP Instance UID and stored sha256 of every index row of the other batches
    (derived partitions included), repeats kept."""
    table = Lake(lake_root).table(INSTANCES.path)
    frames = [
        pl.scan_parquet([str(f) for f in files])
        .select("sop_instance_uid", "sha256")
        .with_columns(batch=pl.lit(key, pl.String))
        .select(list(OTHER_ROWS_SCHEMA))
        for key, files in table.files_by_partition("batch").items()
        if key != batch and files
    ]
    if not frames:
        return pl.DataFrame(schema=OTHER_ROWS_SCHEMA)
    return pl.concat(frames).collect()


def repeated_instances(others: pl.DataFrame, batch: str, index: pl.DataFrame) -> pl.DataFrame:
    """The SOP Instance UIDs that more than one index row holds, once ``batch``'s ``index``
    replaces the batch's partition: UID, rows, batches (sorted by UID)."""
    rows = pl.concat(
        [
            others.filter(pl.col("batch") != batch).select("batch", "sop_instance_uid"),
            index.select(pl.lit(batch, pl.String).alias("batch"), "sop_instance_uid"),
        ]
    )
    return (
        rows.group_by("sop_instance_uid")
        .agg(pl.len().alias("rows"), pl.col("batch").unique().sort().alias("batches"))
        .filter(pl.col("rows") > 1)
        .sort("sop_instance_uid")
    )


def unique_instances_check(
    others: pl.DataFrame, batch: str, index: pl.DataFrame
) -> dg.AssetCheckResult:
    """UNIQUE_CHECK over the whole index (every batch): fails on any repeated SOP Instance UID.
    Its metadata shows pseudonymised UIDs only, and a few of them."""
    repeated = repeated_instances(others, batch, index)
    batches = sorted({b for found in repeated["batches"] for b in found})
    return dg.AssetCheckResult(
        check_name=UNIQUE_CHECK,
        asset_key=INSTANCES,
        passed=repeated.is_empty(),
        metadata={
            "repeated_sop_instance_uids": repeated.height,
            "extra_rows": int(repeated["rows"].sum()) - repeated.height,
            "rows_checked": others.filter(pl.col("batch") != batch).height + index.height,
            "batches_with_repeats": dg.MetadataValue.json(batches),
            "examples": dg.MetadataValue.json(
                repeated["sop_instance_uid"].head(REPEATED_EXAMPLES).to_list()
            ),
        },
    )


@dg.multi_asset(
    outs={
        INSTANCES.to_python_identifier(): dg.AssetOut(
            key=INSTANCES,
            group_name="imaging",
            owners=[owners.IMAGING, owners.DATA_REFERENTS],
            kinds={"dicom", "polars", "parquet"},
            description=(
                "Pseudonymised DICOM instances of one batch: PS3.15 Annex E basic profile with "
                "the configured options, keyed UID remapping (references inside sequences too), "
                "private attributes removed, subject pseudonym shared with clinical and claims "
                "data. Files go to HDH_HOME/store/dicom/<study>/<series>/<sop>.dcm; this table is "
                "their index, one row per instance, enough for QIDO-RS and WADO-RS."
            ),
            metadata={
                "partition_column": "batch",
                "subject_column": "subject_pseudonym",
                "dagster/column_schema": column_schema(INDEX),
            },
        ),
        QUARANTINE.to_python_identifier(): dg.AssetOut(
            key=QUARANTINE,
            group_name="imaging",
            owners=[owners.IMAGING, owners.PLATFORM],
            kinds={"dicom", "polars", "parquet"},
            description=(
                "Files of one batch that were not ingested, by reason code (not_dicom, empty, "
                "truncated, unreadable, missing_required_uids, burned_in_annotation, dicomdir, "
                "bad_archive, uid_conflict, ...). Named by content hash only; the originals and a "
                "note with their landed name are kept under HDH_HOME/quarantine/dicom/<batch>/ "
                "for operators."
            ),
            metadata={"partition_column": "batch", "dagster/column_schema": QUARANTINE_COLUMNS},
        ),
    },
    deps=[landed_dicom_files.key],
    partitions_def=BATCHES,
    check_specs=[
        dg.AssetCheckSpec(
            INDEX_CHECK,
            asset=INSTANCES,
            blocking=True,
            description="strict pandera schema of the index (pseudonymised UIDs, pseudonym format, no extra column)",
        ),
        dg.AssetCheckSpec(
            LEAK_CHECK,
            asset=INSTANCES,
            blocking=True,
            description="no identifying value of an original (names, ids, birth date, UIDs, "
            "institution, physicians, accession) occurs in its pseudonymised file; a file that "
            "would leak is quarantined (identifier_leak) and fails this check",
        ),
        dg.AssetCheckSpec(
            CONFORMANCE_CHECK,
            asset=INSTANCES,
            blocking=True,
            description="no Table E.1-1 attribute left with a value the profile does not allow "
            "(removed attributes present, UIDs not remapped, private attributes, identity flag)",
        ),
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset=INSTANCES,
            description="every landed file (archive members included) is ingested, a duplicate, "
            "quarantined, or excluded because its person objected or asked for erasure",
        ),
        dg.AssetCheckSpec(
            UNIQUE_CHECK,
            asset=INSTANCES,
            blocking=True,
            description="no SOP Instance UID has more than one row in the whole index (every "
            "batch, derived objects included), or every series and study downstream would count "
            "it twice; batches ingested at the same time commit one after the other under the "
            "store lock, so the first ingests an instance and the others count it a duplicate. "
            "Fails with the number of repeated (pseudonymised) UIDs and their batches: "
            "re-running all but one of those batches removes the repeats",
        ),
    ],
)
def dicom_ingestion(
    context: dg.AssetExecutionContext,
    hdh_home: HomeResource,
    pseudonymisation: PseudonymisationKeyResource,
    dicom_ingestion: DicomIngestionResource,
):
    home = hdh_home.home
    batch, folder = landed_batch(context, hdh_home, "dicom", pseudonymisation)
    settings = IngestSettings(
        key=pseudonymisation.key_bytes(),
        store_root=home.store / "dicom",
        quarantine_root=home.quarantine / "dicom",
        profile=dicom_ingestion.profile(),
        max_date_shift_days=pseudonymisation.max_date_shift_days,
        workers=dicom_ingestion.workers,
        excluded=excluded_pseudonyms(home.lake),
    )
    done = {"files": 0, "logged": time.monotonic()}

    def progress(count: int) -> None:
        done["files"] += count
        if time.monotonic() - done["logged"] > 10:
            context.log.info(f"batch {batch}: {done['files']} files processed")
            done["logged"] = time.monotonic()

    others = {"rows": pl.DataFrame(schema=OTHER_ROWS_SCHEMA)}

    def taken_elsewhere() -> dict[str, str]:
        """Read under the store lock: what the batches that committed before this one hold."""
        others["rows"] = other_batches_rows(home.lake, batch)
        return dict(others["rows"].select("sop_instance_uid", "sha256").iter_rows())

    started = time.monotonic()
    # Prepared without the lock; committed, and its index written by the IO manager when the
    # output is yielded, under the store lock: a batch running at the same time commits before
    # or after all of this one (ingest.py, "Concurrent batches").
    with committing(batch, folder, settings, taken_elsewhere, progress) as result:
        seconds = time.monotonic() - started
        summary = result.summary()
        index = result.index()
        context.log.info(
            f"batch {batch}: {summary['landed']} landed, {summary['ingested']} ingested, "
            f"{summary['duplicates']} duplicates, {summary['quarantined']} quarantined "
            f"({summary['landed'] / max(seconds, 1e-9):.0f} files/s)"
        )
        yield _instances_output(index, summary, settings, seconds)  # the IO manager writes it now
    quarantine = result.quarantine()
    yield dg.Output(
        quarantine,
        output_name=QUARANTINE.to_python_identifier(),
        metadata={"by_reason": dg.MetadataValue.json(summary["quarantined_by_reason"])},
    )
    yield pandera_check(INDEX, index, INDEX_CHECK, INSTANCES)
    yield unique_instances_check(others["rows"], batch, index)
    yield from _outcome_checks(summary)


def _instances_output(
    index: pl.DataFrame, summary: dict, settings: IngestSettings, seconds: float
) -> dg.Output:
    return dg.Output(
        index,
        output_name=INSTANCES.to_python_identifier(),
        metadata={
            "landed": summary["landed"],
            "ingested": summary["ingested"],
            "duplicates": summary["duplicates"],
            "same_instance_other_encoding": summary["same_instance_other_encoding"],
            "quarantined": summary["quarantined"],
            "excluded_by_request": summary["excluded"],
            "read_by_pydicom": dg.MetadataValue.int(summary["read_by_pydicom"]),
            "quarantined_by_reason": dg.MetadataValue.json(summary["quarantined_by_reason"]),
            "studies": index["study_instance_uid"].n_unique(),
            "series": index["series_instance_uid"].n_unique(),
            "subjects": index["subject_pseudonym"].n_unique(),
            "modalities": dg.MetadataValue.json(
                dict(index.group_by("modality").len().sort("modality").iter_rows())
            ),
            "profile_options": dg.MetadataValue.json([o.meaning for o in settings.profile.options]),
            "files_per_second": round(summary["landed"] / max(seconds, 1e-9), 1),
        },
    )


def _outcome_checks(summary: dict):
    by_reason = summary["quarantined_by_reason"]
    for check, reason in (
        (LEAK_CHECK, "identifier_leak"),
        (CONFORMANCE_CHECK, "nonconforming_output"),
    ):
        yield dg.AssetCheckResult(
            check_name=check,
            asset_key=INSTANCES,
            passed=by_reason.get(reason, 0) == 0,
            metadata={
                "files_stopped": by_reason.get(reason, 0),
                "files_verified": summary["ingested"],
            },
        )
    reconciled = (
        summary["landed"]
        == summary["ingested"]
        + summary["duplicates"]
        + summary["quarantined"]
        + summary["excluded"]
    )
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=INSTANCES,
        passed=reconciled,
        metadata={
            k: summary[k] for k in ("landed", "ingested", "duplicates", "quarantined", "excluded")
        },
    )


@dg.asset(
    key=["imaging", "dicom_series"],
    group_name="imaging",
    automation_condition=follows_upstream(),
    owners=[owners.IMAGING, owners.DATA_REFERENTS],
    kinds={"polars", "parquet"},
    ins={"instances": dg.AssetIn(INSTANCES)},
    description=(
        "One row per pseudonymised series across every batch: study, subject, modality, "
        "instances and frames, size, slice extent, and whether rows, columns, pixel spacing and "
        "orientation agree across its instances (geometry_consistent)."
    ),
    metadata={"subject_column": "subject_pseudonym", "dagster/column_schema": SERIES_COLUMNS},
)
def dicom_series(instances: pl.DataFrame) -> dg.Output:
    table = series_table(instances)
    return dg.Output(
        table,
        metadata={
            "series": table.height,
            "inconsistent_geometry": int((~table["geometry_consistent"]).sum())
            if table.height
            else 0,
        },
    )


@dg.asset(
    key=["imaging", "dicom_studies"],
    group_name="imaging",
    automation_condition=dg.AutomationCondition.eager(),
    owners=[owners.IMAGING, owners.DATA_REFERENTS],
    kinds={"polars", "parquet"},
    ins={"series": dg.AssetIn(["imaging", "dicom_series"])},
    description="One row per pseudonymised study: subject, shifted study date, modalities, series, instances, size.",
    metadata={"subject_column": "subject_pseudonym", "dagster/column_schema": STUDIES_COLUMNS},
)
def dicom_studies(series: pl.DataFrame) -> dg.Output:
    table = studies_table(series)
    return dg.Output(
        table,
        metadata={
            "studies": table.height,
            "subjects": table["subject_pseudonym"].n_unique() if table.height else 0,
            # Pseudonymised UIDs only: the viewer reads them from the DICOMweb service.
            "viewer": dg.MetadataValue.md(
                studies_markdown(table.head(STUDIES_LINKED).to_dicts(), table.height)
            ),
            "viewer_url": dg.MetadataValue.url(viewer_url()),
            "dicomweb_root": dg.MetadataValue.url(dicomweb_url()),
        },
    )


@dg.asset(
    key=["imaging", "dicom_previews"],
    group_name="imaging",
    owners=[owners.IMAGING],
    kinds={"png", "polars", "parquet"},
    partitions_def=BATCHES,
    ins={"instances": dg.AssetIn(INSTANCES)},
    metadata={"partition_column": "batch", "dagster/column_schema": PREVIEW_COLUMNS},
    description=(
        "One PNG thumbnail per series of the batch (middle instance, middle frame, windowed with "
        "the series' window or its 1st-99th percentiles), under HDH_HOME/store/previews/dicom/. "
        "The asset page shows the first ones; series whose pixel data cannot be decoded are listed."
    ),
)
def dicom_previews(
    context: dg.AssetExecutionContext, instances: pl.DataFrame, hdh_home: HomeResource
) -> dg.Output:
    home = hdh_home.home
    folder = home.store / "previews" / "dicom"
    folder.mkdir(parents=True, exist_ok=True)
    middle = (
        instances.sort(
            "series_instance_uid", "instance_number", "sop_instance_uid", nulls_last=True
        )
        .group_by("series_instance_uid", maintain_order=True)
        .agg(
            pl.col("store_path").get(pl.len() // 2),
            pl.col("modality").first(),
            pl.col("study_instance_uid").first(),
        )
    )
    rows, shown = [], []
    viewer = viewer_url()
    for series_uid, store_path, modality, study_uid in middle.iter_rows():
        target = folder / f"{series_uid}.png"
        try:
            png = render_preview(home.store / "dicom" / store_path)
        except Exception as error:  # compressed syntaxes without a decoder, odd pixel formats
            rows.append((series_uid, modality, None, f"not rendered ({type(error).__name__})"))
            continue
        partial = target.with_suffix(".png.partial")
        partial.write_bytes(png)
        partial.replace(target)
        rows.append((series_uid, modality, str(target.relative_to(home.store)), "ok"))
        if len(shown) < PREVIEWS_PER_PAGE:
            encoded = base64.b64encode(png).decode()
            shown.append(
                f"**{modality or '?'}** `{series_uid[:24]}…` "
                f"([open the study in the viewer]({study_link(study_uid, viewer)}))"
                f"\n\n![preview](data:image/png;base64,{encoded})"
            )
    table = pl.DataFrame(
        rows,
        schema={
            "series_instance_uid": pl.String,
            "modality": pl.String,
            "preview_path": pl.String,
            "status": pl.String,
        },
        orient="row",
    )
    context.log.info(f"{int((table['status'] == 'ok').sum())} of {table.height} series rendered")
    return dg.Output(
        table,
        metadata={
            "rendered": int((table["status"] == "ok").sum()),
            "not_rendered": int((table["status"] != "ok").sum()),
            "previews": dg.MetadataValue.md("\n\n".join(shown) or "(no preview)"),
            "viewer_url": dg.MetadataValue.url(viewer),
            "dicomweb_root": dg.MetadataValue.url(dicomweb_url()),
        },
    )


assets = [landed_dicom_files, dicom_ingestion, dicom_series, dicom_studies, dicom_previews]
assets += model_output_assets  # SEGs of the masks research projects deliver, and their agreement
