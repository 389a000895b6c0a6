"""The review of model outputs without Dagster: deliveries to stored SEGs, and their agreement.

:func:`process_deliveries` reads every delivery, checks it against its series and the project's
grants, stores its SEG (made from a mask, or as delivered) and returns the table of stored SEGs
and the quarantine. :func:`agreement_table` pairs each model's masks with the project's reference
masks of the same series and measures them segment by segment (``agreement.py``); a prediction
without a reference gets one row with status ``no_reference`` and no metric.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hdh_assets.imaging.model_outputs.agreement import agreement
from hdh_assets.imaging.model_outputs.deliveries import (
    NOT_GRANTED,
    PROCESSING_FAILED,
    QUARANTINE_SCHEMA,
    REFERENCE,
    SOURCE,
    Delivery,
    Masks,
    SeriesGeometry,
    Unusable,
    check_names,
    find_deliveries,
    masks_from_array,
    quarantine_delivery,
    read_nifti,
    read_npy,
    series_geometry,
)
from hdh_assets.imaging.model_outputs.segmentation import (
    SegStore,
    StoredSeg,
    build_seg,
    read_dicom,
    seed_of,
    seg_instance_uid,
    seg_masks,
)
from resources.home import HdhHome

DUPLICATE = "duplicate_delivery"
COMPARED, NO_REFERENCE = "compared", "no_reference"

SEGMENTATIONS_SCHEMA = {
    "project": pl.String,
    "model": pl.String,
    "is_reference": pl.Boolean,
    "subject_pseudonym": pl.String,
    "study_instance_uid": pl.String,
    "series_instance_uid": pl.String,
    "seg_series_instance_uid": pl.String,
    "seg_sop_instance_uid": pl.String,
    "segments": pl.Int32,
    "segment_labels": pl.List(pl.String),
    "frames": pl.Int32,
    "source_frames": pl.Int32,
    "delivery_format": pl.String,
    "delivery_path": pl.String,
    "delivery_sha256": pl.String,
    "status": pl.String,
}
AGREEMENT_SCHEMA = {
    "project": pl.String,
    "model": pl.String,
    "subject_pseudonym": pl.String,
    "study_instance_uid": pl.String,
    "series_instance_uid": pl.String,
    "segment_number": pl.Int32,
    "status": pl.String,
    "dice": pl.Float64,
    "hd95_mm": pl.Float64,
    "predicted_ml": pl.Float64,
    "reference_ml": pl.Float64,
    "volume_difference_ml": pl.Float64,
    "relative_volume_difference": pl.Float64,
    "predicted_empty": pl.Boolean,
    "reference_empty": pl.Boolean,
    "seg_sop_instance_uid": pl.String,
    "reference_seg_sop_instance_uid": pl.String,
}


@dataclass
class Loaded:
    """A delivery that fits its series: its masks, and the SEG dataset when delivered as one."""

    delivery: Delivery
    geometry: SeriesGeometry
    masks: Masks
    delivered_seg: object | None = None  # the dataset of a .dcm delivery
    delivered_bytes: bytes | None = None


@dataclass
class Accepted:
    loaded: Loaded
    seg: StoredSeg

    def row(self) -> dict:
        d, g, m = self.loaded.delivery, self.loaded.geometry, self.loaded.masks
        return {
            "project": d.project,
            "model": d.model,
            "is_reference": d.is_reference,
            "subject_pseudonym": g.subject,
            "study_instance_uid": g.study_uid,
            "series_instance_uid": g.series_uid,
            "seg_series_instance_uid": self.seg.series_instance_uid,
            "seg_sop_instance_uid": self.seg.sop_instance_uid,
            "segments": len(m.numbers),
            "segment_labels": [m.labels.get(n) or f"{d.model} {n}" for n in m.numbers],
            "frames": self.seg.frames,
            "source_frames": g.frames,
            "delivery_format": d.format,
            "delivery_path": d.relative,
            "delivery_sha256": d.sha256,
            "status": self.seg.status,
        }


@dataclass
class Processed:
    found: int = 0
    accepted: list[Accepted] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)

    def segmentations(self) -> pl.DataFrame:
        rows = [a.row() for a in self.accepted]
        return pl.DataFrame(rows, schema=SEGMENTATIONS_SCHEMA, orient="row")

    def quarantine(self) -> pl.DataFrame:
        return pl.DataFrame(self.quarantined, schema=QUARANTINE_SCHEMA, orient="row")

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.quarantined:
            counts[row["reason"]] = counts.get(row["reason"], 0) + 1
        return dict(sorted(counts.items()))


def load_delivery(delivery: Delivery, store: SegStore) -> Loaded:
    """Check a delivery against its series and its project's grants, and read its masks."""
    check_names(delivery)
    view = store.view()
    geometry = series_geometry(view.instances, delivery.series_uid)
    if geometry.study_uid not in store.visible(delivery.project, view):
        raise Unusable(NOT_GRANTED, "the series is not in a study the project's grants cover")
    data = delivery.path.read_bytes()
    if delivery.format == "npy":
        return Loaded(delivery, geometry, masks_from_array(read_npy(data), geometry.shape))
    if delivery.format == "nifti":
        array = read_nifti(data, geometry)
        return Loaded(delivery, geometry, masks_from_array(array, geometry.shape))
    dataset = read_dicom(data)
    return Loaded(delivery, geometry, seg_masks(dataset, geometry), dataset, data)


def store_seg(loaded: Loaded, store: SegStore) -> StoredSeg:
    """Store the delivery's SEG unless the index holds it already (same delivery, same UIDs)."""
    d = loaded.delivery
    if loaded.delivered_seg is not None:
        return store.store(loaded.delivered_seg, d.project, loaded.delivered_bytes)
    seed = seed_of(d.project, d.model, loaded.geometry.series_uid, d.sha256)
    earlier = store.stored(seg_instance_uid(seed), len(loaded.masks.numbers))
    if earlier is not None:
        return earlier
    seg = build_seg(
        store.sources(loaded.geometry),
        loaded.masks,
        project=d.project,
        model=d.model,
        delivery_sha256=d.sha256,
    )
    return store.store(seg, d.project)


def process_deliveries(
    home: HdhHome, profile, base_url: str, log: Callable[[str], None] = lambda m: None
) -> Processed:
    """Every delivery stored as a SEG or quarantined (module docstring)."""
    deliveries = find_deliveries(home)
    processed = Processed(found=len(deliveries))
    if not deliveries:
        return processed
    store = SegStore(home, profile, base_url)
    seen: set[tuple[str, str, str]] = set()
    for delivery in deliveries:
        try:
            key = (delivery.project, delivery.model, delivery.series_uid)
            if key in seen:
                raise Unusable(DUPLICATE, "another file of this model covers the same series")
            loaded = load_delivery(delivery, store)
            processed.accepted.append(Accepted(loaded, store_seg(loaded, store)))
            seen.add(key)
        except Unusable as error:
            processed.quarantined.append(quarantine_delivery(home, delivery, error))
        except Exception as error:  # one odd delivery must not stop the others
            failed = Unusable(PROCESSING_FAILED, f"processing failed ({type(error).__name__})")
            processed.quarantined.append(quarantine_delivery(home, delivery, failed))
    log(
        f"model outputs: {processed.found} delivered, {len(processed.accepted)} stored or "
        f"already stored, {len(processed.quarantined)} quarantined"
    )
    return processed


def reload(home: HdhHome, segmentations: pl.DataFrame, store: SegStore) -> list[Loaded]:
    """The masks of the stored SEGs' deliveries, read again from the landing area; a delivery
    changed or removed since is left out (the next run of the segmentations sees it)."""
    loaded = []
    root = home.landing_for(SOURCE)
    for row in segmentations.iter_rows(named=True):
        path = root / row["delivery_path"]
        if not path.is_file():
            continue
        delivery = Delivery(
            project=row["project"],
            model=row["model"],
            series_uid=row["series_instance_uid"],
            path=path,
            relative=row["delivery_path"],
            sha256=row["delivery_sha256"],
        )
        try:
            found = load_delivery(delivery, store)
        except Unusable:
            continue
        if _sha256(path) == row["delivery_sha256"]:
            loaded.append(found)
    return loaded


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def agreement_rows(
    predicted: Loaded, reference: Loaded | None, seg_uid: str, reference_uid: str | None
) -> Iterable[dict]:
    g = predicted.geometry
    base = {
        "project": predicted.delivery.project,
        "model": predicted.delivery.model,
        "subject_pseudonym": g.subject,
        "study_instance_uid": g.study_uid,
        "series_instance_uid": g.series_uid,
        "seg_sop_instance_uid": seg_uid,
        "reference_seg_sop_instance_uid": reference_uid,
    }
    if reference is None:
        yield {**base, "segment_number": None, "status": NO_REFERENCE}
        return
    numbers = sorted(set(predicted.masks.numbers) | set(reference.masks.numbers))
    for number in numbers:
        p = predicted.masks.segment(number, g.shape)
        r = reference.masks.segment(number, g.shape)
        found = agreement(p, r, g.spacing_mm)
        yield {
            **base,
            "segment_number": number,
            "status": COMPARED,
            "dice": found.dice,
            "hd95_mm": None if np.isnan(found.hd95_mm) else found.hd95_mm,
            "predicted_ml": found.predicted_ml,
            "reference_ml": found.reference_ml,
            "volume_difference_ml": found.volume_difference_ml,
            "relative_volume_difference": found.relative_volume_difference,
            "predicted_empty": not p.any(),
            "reference_empty": not r.any(),
        }


def agreement_table(loaded: list[Loaded], segmentations: pl.DataFrame) -> pl.DataFrame:
    """One row per (project, model, series, segment) against the project's reference."""
    seg_of = {
        (r["project"], r["model"], r["series_instance_uid"]): r["seg_sop_instance_uid"]
        for r in segmentations.iter_rows(named=True)
    }
    references = {
        (x.delivery.project, x.delivery.series_uid): x for x in loaded if x.delivery.is_reference
    }
    rows = []
    for item in loaded:
        d = item.delivery
        if d.is_reference:
            continue
        reference = references.get((d.project, d.series_uid))
        reference_uid = seg_of.get((d.project, REFERENCE, d.series_uid))
        rows.extend(
            agreement_rows(
                item,
                reference,
                seg_of[(d.project, d.model, d.series_uid)],
                reference_uid if reference is not None else None,
            )
        )
    columns = list(AGREEMENT_SCHEMA)
    return pl.DataFrame(
        [{c: row.get(c) for c in columns} for row in rows], schema=AGREEMENT_SCHEMA, orient="row"
    ).sort("project", "model", "series_instance_uid", "segment_number", nulls_last=True)
