"""Dagster assets of model outputs: stored SEGs, their quarantine, their agreement.

Thin wrappers over ``review.py``. Not partitioned and not part of the landing jobs: a
materialisation reads the whole ``landing/model_outputs/`` folder, and a delivery already stored
is recognised by its SEG's UIDs. They follow every DICOM batch (a delivery waiting for its series
is taken then) and are materialised by hand after a delivery. With nothing delivered every asset
is an empty table whose metadata says ``no delivery``.
"""

import dagster as dg
import polars as pl

from hdh_assets import owners
from hdh_assets.automation import follows_upstream
from hdh_assets.imaging.model_outputs.deliveries import REASONS, SOURCE, has_deliveries
from hdh_assets.imaging.model_outputs.review import (
    COMPARED,
    DUPLICATE,
    NO_REFERENCE,
    agreement_table,
    process_deliveries,
    reload,
)
from hdh_assets.imaging.model_outputs.segmentation import SegStore
from hdh_assets.imaging.viewer import dicomweb_url, markdown_table, study_link, viewer_url
from hdh_assets.validation import documented_columns
from resources.imaging import DicomIngestionResource
from resources.platform import HomeResource

INSTANCES = dg.AssetKey(["imaging", "dicom_instances"])
SEGMENTATIONS = dg.AssetKey(["imaging", "model_segmentations"])
QUARANTINE = dg.AssetKey(["imaging", "model_output_quarantine"])
AGREEMENT = dg.AssetKey(["imaging", "model_agreement"])
RECONCILE_CHECK = "every_delivery_stored_or_quarantined"
REPORTED_CHECK = "no_quarantined_delivery_unreported"
DICE_CHECK = "dice_within_unit_interval"
REFERENCE_CHECK = "every_prediction_has_a_reference"
NO_DELIVERY = "no delivery"
PREVIEW_ROWS = 20

SEGMENTATIONS_COLUMNS = documented_columns(
    {
        "project": ("string", "project that delivered the mask"),
        "model": ("string", "model folder of the delivery ('reference' for reference masks)"),
        "is_reference": ("bool", "the delivery is a reference segmentation"),
        "subject_pseudonym": ("string", "the person's pseudonym (what erasure finds rows by)"),
        "study_instance_uid": ("string", "pseudonymised Study Instance UID of the source series"),
        "series_instance_uid": ("string", "pseudonymised source Series Instance UID"),
        "seg_series_instance_uid": ("string", "Series Instance UID of the stored SEG"),
        "seg_sop_instance_uid": ("string", "SOP Instance UID of the stored SEG"),
        "segments": ("int", "segments in the SEG"),
        "segment_labels": ("list[string]", "segment labels, in segment number order"),
        "frames": ("int", "frames of the SEG"),
        "source_frames": ("int", "frames (images) of the source series"),
        "delivery_format": ("string", "npy (a mask) or dicom_seg (a SEG stored as delivered)"),
        "delivery_path": ("string", "<project>/<model>/<series>.<ext> under landing/model_outputs"),
        "delivery_sha256": ("string", "SHA-256 of the delivered file"),
        "status": ("string", "stored (this run) or already_stored (an earlier run)"),
    }
)
QUARANTINE_COLUMNS = documented_columns(
    {
        "project": ("string", "project folder (null when not a valid name)"),
        "model": ("string", "model folder (null when not a valid name)"),
        "file_sha256": (
            "string",
            "SHA-256 of the delivery (its name in quarantine/model_outputs/<project>/)",
        ),
        "reason": ("string", "reason code: " + ", ".join((*REASONS, DUPLICATE))),
        "message": ("string", "what was wrong, with sizes and counts only (no UID, no value)"),
    }
)
AGREEMENT_COLUMNS = documented_columns(
    {
        "project": ("string", "project"),
        "model": ("string", "model compared with the project's reference"),
        "subject_pseudonym": ("string", "the person's pseudonym (what erasure finds rows by)"),
        "study_instance_uid": ("string", "pseudonymised Study Instance UID"),
        "series_instance_uid": ("string", "pseudonymised source Series Instance UID"),
        "segment_number": ("int", "segment number (null for a prediction without reference)"),
        "status": ("string", f"{COMPARED}, or {NO_REFERENCE} (no reference mask of the series)"),
        "dice": ("float", "Dice coefficient; 1 when both masks are empty, 0 when one is"),
        "hd95_mm": (
            "float",
            "95th percentile Hausdorff distance between the surfaces, mm (max of both "
            "directions); 0 when both are empty, null when one is",
        ),
        "predicted_ml": ("float", "predicted volume, ml"),
        "reference_ml": ("float", "reference volume, ml"),
        "volume_difference_ml": ("float", "predicted minus reference volume, ml"),
        "relative_volume_difference": (
            "float",
            "volume difference over the reference volume (null when the reference is empty)",
        ),
        "predicted_empty": ("bool", "the predicted mask of the segment is empty"),
        "reference_empty": ("bool", "the reference mask of the segment is empty"),
        "seg_sop_instance_uid": ("string", "the model's stored SEG"),
        "reference_seg_sop_instance_uid": ("string", "the reference's stored SEG"),
    }
)


def _short(uid: str | None) -> str:
    return f"`{uid[:20]}…`" if uid else ""


def segmentations_markdown(table: pl.DataFrame, viewer: str) -> str:
    if table.is_empty():
        return "(no SEG)"
    rows = [
        [
            r["project"],
            r["model"],
            f"[{_short(r['study_instance_uid'])}]({study_link(r['study_instance_uid'], viewer)})",
            _short(r["series_instance_uid"]),
            str(r["segments"]),
            str(r["frames"]),
            r["status"],
        ]
        for r in table.head(PREVIEW_ROWS).iter_rows(named=True)
    ]
    header = ["project", "model", "study (opens the viewer)", "series", "segments", "frames"]
    return markdown_table([*header, "status"], rows)


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def agreement_markdown(table: pl.DataFrame, viewer: str) -> str:
    if table.is_empty():
        return "(no comparison)"
    rows = [
        [
            r["project"],
            r["model"],
            f"[{_short(r['series_instance_uid'])}]({study_link(r['study_instance_uid'], viewer)})",
            str(r["segment_number"] or ""),
            r["status"],
            _number(r["dice"]),
            _number(r["hd95_mm"], 1),
            _number(r["volume_difference_ml"], 2),
        ]
        for r in table.head(PREVIEW_ROWS).iter_rows(named=True)
    ]
    header = ["project", "model", "series (opens the study: both SEGs)", "segment", "status"]
    table_md = markdown_table([*header, "Dice", "HD95 mm", "ΔV ml"], rows)
    if table.height > PREVIEW_ROWS:
        table_md += f"\n\nThe first {PREVIEW_ROWS} of {table.height} rows."
    return table_md


def mean_dice_per_model(table: pl.DataFrame) -> dict[str, float]:
    compared = table.filter(pl.col("status") == COMPARED)
    if compared.is_empty():
        return {}
    means = (
        compared.group_by("project", "model").agg(pl.col("dice").mean()).sort("project", "model")
    )
    return {f"{p}/{m}": round(d, 4) for p, m, d in means.iter_rows()}


@dg.multi_asset(
    outs={
        SEGMENTATIONS.to_python_identifier(): dg.AssetOut(
            key=SEGMENTATIONS,
            group_name="imaging",
            owners=[owners.IMAGING, owners.DATA_REFERENTS],
            kinds={"dicom", "polars", "parquet"},
            automation_condition=follows_upstream(),
            description=(
                "DICOM SEG objects made from the masks research projects deliver under "
                "landing/model_outputs/<project>/<model>/<series>.npy or .nii.gz (or .dcm SEGs "
                "as delivered), over the pseudonymised source series, stored through the DICOMweb "
                "service's STOW checks (Annex E verification, references, project grants) and "
                "indexed in imaging/dicom_instances. One row per SEG; reference masks are the "
                "model 'reference'."
            ),
            metadata={
                "subject_column": "subject_pseudonym",
                "dagster/column_schema": SEGMENTATIONS_COLUMNS,
            },
        ),
        QUARANTINE.to_python_identifier(): dg.AssetOut(
            key=QUARANTINE,
            group_name="imaging",
            owners=[owners.IMAGING, owners.PLATFORM],
            kinds={"polars", "parquet"},
            automation_condition=follows_upstream(),
            description=(
                "Model output deliveries that were not stored, by reason code (shape_mismatch, "
                "geometry_mismatch, unknown_series, series_not_granted, bad_dtype, "
                "unsupported_format, seg_refused, ...). Named by content hash; the originals and a note with the "
                "landed path are kept under HDH_HOME/quarantine/model_outputs/<project>/."
            ),
            metadata={"dagster/column_schema": QUARANTINE_COLUMNS},
        ),
    },
    deps=[INSTANCES],
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset=SEGMENTATIONS,
            description="every delivered file is stored as a SEG (now or earlier) or quarantined",
        ),
        dg.AssetCheckSpec(
            REPORTED_CHECK,
            asset=QUARANTINE,
            description="every quarantined delivery is in the table, with its original and note "
            "kept for operators",
        ),
    ],
)
def model_segmentations(
    context: dg.AssetExecutionContext,
    hdh_home: HomeResource,
    dicom_ingestion: DicomIngestionResource,
):
    home = hdh_home.home
    processed = process_deliveries(
        home, dicom_ingestion.profile(), dicomweb_url(), log=context.log.info
    )
    table, quarantine = processed.segmentations(), processed.quarantine()
    viewer = viewer_url()
    status = {"status": NO_DELIVERY} if processed.found == 0 else {}
    yield dg.Output(
        table,
        output_name=SEGMENTATIONS.to_python_identifier(),
        metadata={
            **status,
            "delivered": processed.found,
            "segs": table.height,
            "stored": int((table["status"] == "stored").sum()),
            "already_stored": int((table["status"] == "already_stored").sum()),
            "quarantined": quarantine.height,
            "projects": table["project"].n_unique(),
            "viewer": dg.MetadataValue.md(segmentations_markdown(table, viewer)),
            "viewer_url": dg.MetadataValue.url(viewer),
            "dicomweb_root": dg.MetadataValue.url(dicomweb_url()),
        },
    )
    yield dg.Output(
        quarantine,
        output_name=QUARANTINE.to_python_identifier(),
        metadata={
            **status,
            "quarantined": quarantine.height,
            "by_reason": dg.MetadataValue.json(processed.by_reason()),
        },
    )
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=SEGMENTATIONS,
        passed=processed.found == table.height + quarantine.height,
        metadata={
            "delivered": processed.found,
            "segs": table.height,
            "quarantined": quarantine.height,
        },
    )
    folder = home.quarantine / SOURCE
    kept = {p.stem for p in folder.rglob("*.json")} if folder.is_dir() else set()
    missing = [sha for sha in quarantine["file_sha256"] if sha not in kept]
    yield dg.AssetCheckResult(
        check_name=REPORTED_CHECK,
        asset_key=QUARANTINE,
        passed=not missing and quarantine.height == processed.found - table.height,
        metadata={"quarantined": quarantine.height, "without_note": len(missing)},
    )


@dg.asset(
    key=AGREEMENT,
    group_name="imaging",
    owners=[owners.IMAGING, owners.DATA_REFERENTS],
    kinds={"polars", "parquet"},
    ins={"segmentations": dg.AssetIn(SEGMENTATIONS)},
    automation_condition=follows_upstream(),
    description=(
        "Agreement of each model's masks with the project's reference masks, per series and "
        "segment: Dice, HD95 (mm, from pixel and slice spacing), predicted and reference volumes "
        "and their difference (ml and relative). Both masks empty: Dice 1, HD95 0; one empty: "
        "Dice 0, HD95 null. A prediction without reference has one row, status no_reference. "
        "Each row links to the study in the viewer, which shows both SEGs over the images."
    ),
    metadata={"subject_column": "subject_pseudonym", "dagster/column_schema": AGREEMENT_COLUMNS},
    check_specs=[
        dg.AssetCheckSpec(
            DICE_CHECK, asset=AGREEMENT, description="every Dice coefficient lies in [0, 1]"
        ),
        dg.AssetCheckSpec(
            REFERENCE_CHECK,
            asset=AGREEMENT,
            description="every prediction has a reference of its series (warns, and reports "
            "those without, when not)",
        ),
    ],
)
def model_agreement(
    context: dg.AssetExecutionContext, segmentations: pl.DataFrame, hdh_home: HomeResource
):
    home = hdh_home.home
    store = SegStore(home, None, dicomweb_url())  # reads only: the STOW profile is never loaded
    loaded = reload(home, segmentations, store)
    table = agreement_table(loaded, segmentations)
    compared = table.filter(pl.col("status") == COMPARED)
    without = table.filter(pl.col("status") == NO_REFERENCE)
    viewer = viewer_url()
    context.log.info(f"{compared.height} segment comparisons, {without.height} without reference")
    yield dg.Output(
        table,
        metadata={
            **({} if has_deliveries(home) else {"status": NO_DELIVERY}),
            "rows": table.height,
            "compared": compared.height,
            "predictions_without_reference": without.height,
            # deliveries changed or no longer readable since the segmentations were made
            "deliveries_not_reread": segmentations.height - len(loaded),
            "mean_dice_per_model": dg.MetadataValue.json(mean_dice_per_model(table)),
            "review": dg.MetadataValue.md(agreement_markdown(table, viewer)),
            "viewer_url": dg.MetadataValue.url(viewer),
        },
    )
    dice = compared["dice"]
    outside = int(((dice < 0) | (dice > 1) | dice.is_null() | dice.is_nan()).sum())
    yield dg.AssetCheckResult(
        check_name=DICE_CHECK,
        asset_key=AGREEMENT,
        passed=outside == 0,
        metadata={"compared": compared.height, "outside_unit_interval": outside},
    )
    yield dg.AssetCheckResult(
        check_name=REFERENCE_CHECK,
        asset_key=AGREEMENT,
        passed=without.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "predictions_without_reference": without.height,
            "models": dg.MetadataValue.json(
                sorted({f"{p}/{m}" for p, m in without.select("project", "model").iter_rows()})
            ),
        },
    )


assets = [model_segmentations, model_agreement]
