"""Delivered masks: where they are, which series they cover, and whether they fit it.

Layout. ``HDH_HOME/landing/model_outputs/<project>/<model>/<series_instance_uid>.<ext>``, the
series UID being the pseudonymised one the project sees; the reference segmentations of a
project are the model named ``reference``. Formats:

- ``.npy``: a NumPy ``bool`` or ``uint8`` array, ``(frames, rows, cols)`` or
  ``(labels, frames, rows, cols)``, frames in the series' order (:func:`series_geometry`). A 3-D
  array whose values are 0 and 1 is one segment; a 3-D ``uint8`` array with larger values is a
  label map (value ``k`` is segment ``k``); a 4-D array holds one binary mask per segment
  (non-zero is inside). Read without pickles.
- ``.nii`` / ``.nii.gz``: a NIfTI-1 mask (3-D, or 4-D with one volume per segment), placed on
  the series by its affine (:func:`read_nifti`), values as for ``.npy``.
- ``.dcm``: a DICOM SEG made over the pseudonymised series (a viewer's or model's own); it is
  stored as delivered when the STOW checks accept it, and its frames give the masks.

Anything else is quarantined as ``unsupported_format``.

A delivery that cannot be used is copied to ``HDH_HOME/quarantine/model_outputs/<project>/`` under
its content hash, with a note (landed path, reason, message) for operators; the lake's quarantine
table keeps the project, model, hash, reason and a message that names sizes and counts only,
never a UID or a value read from the file (a wrong series UID may be an original one).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from resources.home import HdhHome

SOURCE = "model_outputs"
REFERENCE = "reference"
FORMATS = {".npy": "npy", ".nii.gz": "nifti", ".nii": "nifti", ".dcm": "dicom_seg"}
UNSUPPORTED = (".mha", ".nrrd")  # kept under their suffix in quarantine
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # project and model folders
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Reason codes of the quarantine (the message says what was wrong, without any identifier).
BAD_NAME = "bad_name"  # a project or model folder, or a file name, that is not allowed
UNSUPPORTED_FORMAT = "unsupported_format"
UNREADABLE = "unreadable"
UNKNOWN_SERIES = "unknown_series"
NOT_GRANTED = "series_not_granted"
UNSUPPORTED_SERIES = "unsupported_series"  # no single-frame image with geometry
BAD_DTYPE = "bad_dtype"
SHAPE_MISMATCH = "shape_mismatch"
GEOMETRY_MISMATCH = "geometry_mismatch"  # a NIfTI whose affine does not lie on the series
SERIES_MISMATCH = "series_mismatch"  # a delivered SEG over another series than its file name
SEG_REFUSED = "seg_refused"  # the STOW checks refused the SEG (the stow code is in the message)
PROCESSING_FAILED = "processing_failed"  # an unexpected error (its type only in the message)
REASONS = (
    BAD_NAME,
    UNSUPPORTED_FORMAT,
    UNREADABLE,
    UNKNOWN_SERIES,
    NOT_GRANTED,
    UNSUPPORTED_SERIES,
    BAD_DTYPE,
    SHAPE_MISMATCH,
    GEOMETRY_MISMATCH,
    SERIES_MISMATCH,
    SEG_REFUSED,
    PROCESSING_FAILED,
)
QUARANTINE_SCHEMA = {
    "project": pl.String,
    "model": pl.String,
    "file_sha256": pl.String,
    "reason": pl.String,
    "message": pl.String,
}


class Unusable(Exception):
    """A delivery that is quarantined: ``reason`` is a code of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Delivery:
    """One delivered file."""

    project: str
    model: str
    series_uid: str  # from the file name; an accepted delivery's is a pseudonymised UID
    path: Path
    relative: str  # under landing/model_outputs
    sha256: str

    @property
    def format(self) -> str | None:
        return next((f for s, f in FORMATS.items() if self.path.name.endswith(s)), None)

    @property
    def is_reference(self) -> bool:
        return self.model == REFERENCE


def _stem(name: str) -> str:
    for suffix in (*FORMATS, *UNSUPPORTED):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0]


def has_deliveries(home: HdhHome) -> bool:
    """Whether anything at all was delivered (without reading it)."""
    root = home.landing_for(SOURCE)
    return root.is_dir() and any(
        p.is_file() and not p.name.startswith(".") for p in root.rglob("*")
    )


def find_deliveries(home: HdhHome) -> list[Delivery]:
    """Every file under ``landing/model_outputs/<project>/<model>/``, sorted by path; hidden
    files and partial uploads (``.partial``) are left for a later run."""
    root = home.landing_for(SOURCE)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(p.startswith(".") for p in relative.parts):
            continue
        if path.name.endswith(".partial"):
            continue
        parts = relative.parts
        project, model = parts[:2] if len(parts) == 3 else ("", "")
        found.append(
            Delivery(
                project=project,
                model=model,
                series_uid=_stem(path.name),
                path=path,
                relative=relative.as_posix(),
                sha256=hashlib.sha256(
                    b"link:" + str(relative).encode() if path.is_symlink() else path.read_bytes()
                ).hexdigest(),
            )
        )
    return found


def check_names(delivery: Delivery) -> None:
    """Project and model folder names and the file name's form (not yet whether it exists)."""
    if delivery.path.is_symlink():  # never followed: it could point anywhere on the platform
        raise Unusable(UNREADABLE, "a link, not a file")
    if not (_NAME.match(delivery.project) and _NAME.match(delivery.model)):
        raise Unusable(
            BAD_NAME,
            "deliveries go to <project>/<model>/<series UID>.<ext>, names in lower case letters, "
            "digits, '.', '_' and '-'",
        )
    if delivery.format is None:
        raise Unusable(
            UNSUPPORTED_FORMAT, "only .npy and .nii(.gz) masks and .dcm DICOM SEG objects are read"
        )
    if not _UID.match(delivery.series_uid) or len(delivery.series_uid) > 64:
        raise Unusable(BAD_NAME, "the file name is not a series UID")


# -- the series ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesGeometry:
    """The frames of a series in mask order, and the voxel size."""

    study_uid: str
    series_uid: str
    subject: str | None  # the person's pseudonym: erasure finds their rows by it
    instances: pl.DataFrame  # index rows, one per frame, in mask order
    rows: int
    columns: int
    spacing_mm: tuple[float, float, float]  # between frames, rows, columns
    # Directions (patient LPS) in which frame, row and column indexes grow, and the position
    # of the first voxel; None when the images carry no position or orientation.
    axes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    origin: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return self.instances.height

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.rows, self.columns)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def sop_uids(self) -> list[str]:
        return list(self.instances["sop_instance_uid"])

    @property
    def store_paths(self) -> list[str]:
        return list(self.instances["store_path"])


def _position_along_normal(row: dict) -> float | None:
    position, orientation = row["image_position_patient"], row["image_orientation_patient"]
    if not position or not orientation or len(position) != 3 or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    return float(np.dot(normal, np.asarray(position)))


def series_geometry(instances: pl.DataFrame, series_uid: str) -> SeriesGeometry:
    """The geometry of one series from its index rows (``imaging/dicom_instances``).

    Frame order: ascending position along the slice normal (the cross product of the row and
    column direction cosines), then Instance Number, then SOP Instance UID. Only single-frame
    images with rows, columns and pixel spacing are supported; derived objects of the series
    (none are expected) are left out. Frame spacing is the median distance between consecutive
    positions, else the slice thickness, else 1 mm."""
    rows = instances.filter(
        (pl.col("series_instance_uid") == series_uid) & pl.col("rows").is_not_null()
    )
    if rows.is_empty():
        raise Unusable(UNKNOWN_SERIES, "the file name is not a series the platform holds")
    if (rows["number_of_frames"].fill_null(1) != 1).any():
        raise Unusable(UNSUPPORTED_SERIES, "multi-frame source images are not supported")
    if rows["rows"].n_unique() != 1 or rows["columns"].n_unique() != 1:
        raise Unusable(UNSUPPORTED_SERIES, "the series' images differ in size")
    ordered = rows.with_columns(
        pl.Series("_z", [_position_along_normal(r) for r in rows.iter_rows(named=True)], pl.Float64)
    ).sort("_z", "instance_number", "sop_instance_uid", nulls_last=True)
    positions = ordered["_z"].drop_nulls().to_numpy()
    if len(positions) == ordered.height and ordered.height > 1:
        frame_spacing = float(np.median(np.abs(np.diff(positions))))
    else:
        frame_spacing = 0.0
    if not frame_spacing > 0:
        frame_spacing = float(ordered["slice_thickness"].drop_nulls().first() or 1.0)
    pixel = ordered["pixel_spacing"].drop_nulls().first()
    if pixel is None or len(pixel) != 2:
        raise Unusable(UNSUPPORTED_SERIES, "the series' images have no pixel spacing")
    first = ordered.row(0, named=True)
    orientation, position = first["image_orientation_patient"], first["image_position_patient"]
    axes = origin = None
    if ordered["_z"].null_count() == 0:
        along_rows, along_columns = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        axes = (np.cross(along_rows, along_columns), along_columns, along_rows)
        origin = np.asarray(position, dtype=float)
    return SeriesGeometry(
        study_uid=first["study_instance_uid"],
        series_uid=series_uid,
        subject=first.get("subject_pseudonym"),
        instances=ordered.drop("_z"),
        rows=int(first["rows"]),
        columns=int(first["columns"]),
        spacing_mm=(frame_spacing, float(pixel[0]), float(pixel[1])),
        axes=axes,
        origin=origin,
    )


# -- masks ---------------------------------------------------------------------------------------
@dataclass
class Masks:
    """Binary masks of one delivery: ``arrays[i]`` is segment ``numbers[i]``, (frames, rows,
    cols) each; ``labels`` are segment labels when the delivery names them (a SEG)."""

    numbers: list[int]
    arrays: np.ndarray  # bool, (segments, frames, rows, cols)
    labels: dict[int, str] = field(default_factory=dict)

    def segment(self, number: int, shape: tuple[int, int, int]) -> np.ndarray:
        """The mask of one segment; all false when the delivery has no such segment."""
        if number in self.numbers:
            return self.arrays[self.numbers.index(number)]
        return np.zeros(shape, dtype=bool)


def masks_from_array(array: np.ndarray, shape: tuple[int, int, int]) -> Masks:
    """Check a delivered array against the series' shape and split it into binary segments."""
    if array.dtype not in (np.dtype(bool), np.dtype(np.uint8)):
        raise Unusable(BAD_DTYPE, f"the mask is {array.dtype.name}; bool or uint8 is expected")
    if array.ndim not in (3, 4) or tuple(array.shape[-3:]) != tuple(shape):
        raise Unusable(
            SHAPE_MISMATCH,
            f"the mask's shape is {tuple(array.shape)} where the series needs "
            f"{tuple(shape)} (frames, rows, columns), or (labels, ...) before them",
        )
    if array.ndim == 4:
        if array.shape[0] == 0:
            raise Unusable(SHAPE_MISMATCH, "the mask holds no label")
        return Masks(list(range(1, array.shape[0] + 1)), array != 0)
    highest = int(array.max()) if array.size else 0
    if array.dtype == np.uint8 and highest > 1:  # a label map
        numbers = list(range(1, highest + 1))
        return Masks(numbers, np.stack([array == n for n in numbers]))
    return Masks([1], (array != 0)[np.newaxis])


def read_nifti(data: bytes, geometry: SeriesGeometry) -> np.ndarray:
    """A NIfTI-1 mask (``.nii`` or ``.nii.gz``) as an array in the series' order: frames, rows,
    columns (after a label axis, for 4-D images).

    Its affine decides: each voxel axis must run along one of the series' axes (either way), with
    the series' spacing, and the voxel that becomes the first one must sit on the first image's
    position (within half the smallest spacing). So a mask written by any tool that keeps the
    affine (dcm2niix's flipped rows, a RAS reorientation) lands on the right voxels, and one
    that does not is quarantined as ``geometry_mismatch`` rather than compared misplaced. Whole
    numbers 0-255 of any numeric type are accepted."""
    import gzip

    import nibabel as nib  # here: loading the code location does not need it

    try:
        image = nib.Nifti1Image.from_bytes(
            gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        )
        array = np.asanyarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=float)
    except Exception:
        raise Unusable(UNREADABLE, "not a NIfTI-1 image") from None
    if array.ndim not in (3, 4):
        raise Unusable(SHAPE_MISMATCH, f"the NIfTI image has {array.ndim} axes; 3 or 4 expected")
    if not np.issubdtype(array.dtype, np.number) or not (
        np.all(array >= 0) and np.all(array <= 255) and np.all(np.mod(array, 1) == 0)
    ):
        raise Unusable(BAD_DTYPE, "the NIfTI mask holds values other than whole numbers 0-255")
    if geometry.axes is None or geometry.origin is None:
        raise Unusable(GEOMETRY_MISMATCH, "the series' images carry no position to place it")
    lps = np.diag([-1.0, -1.0, 1.0])
    steps = lps @ affine[:3, :3]  # column a: the step of voxel axis a, in mm (LPS)
    offset = lps @ affine[:3, 3]
    order, flips = [None, None, None], [False, False, False]
    for axis in range(3):
        step = steps[:, axis]
        length = float(np.linalg.norm(step))
        cosines = [float(np.dot(step / length, d)) if length else 0.0 for d in geometry.axes]
        target = int(np.argmax(np.abs(cosines)))
        spacing = geometry.spacing_mm[target]
        if abs(cosines[target]) < 0.99 or abs(length - spacing) > 0.01 * spacing:
            raise Unusable(GEOMETRY_MISMATCH, "the NIfTI's axes or spacing differ from the series'")
        if order[target] is not None:
            raise Unusable(GEOMETRY_MISMATCH, "two NIfTI axes run along one axis of the series")
        order[target], flips[target] = axis, cosines[target] < 0
    # The NIfTI voxel that becomes the first one: index 0 along a kept axis, the last if flipped.
    index = np.zeros(3)
    for d in range(3):
        index[order[d]] = array.shape[order[d]] - 1 if flips[d] else 0
    if np.linalg.norm(offset + steps @ index - geometry.origin) > 0.5 * min(geometry.spacing_mm):
        raise Unusable(GEOMETRY_MISMATCH, "the NIfTI's origin is not on the series' first image")
    arranged = np.transpose(array, (*([3] if array.ndim == 4 else []), *order))
    for d in range(3):
        if flips[d]:
            arranged = np.flip(arranged, axis=d + arranged.ndim - 3)
    return np.ascontiguousarray(arranged).astype(np.uint8)


def read_npy(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:
        raise Unusable(UNREADABLE, "not a NumPy .npy array (pickled objects are refused)") from None


# -- quarantine ----------------------------------------------------------------------------------
def quarantine_delivery(home: HdhHome, delivery: Delivery, error: Unusable) -> dict:
    """Keep the original and a note for operators; the row of the lake's quarantine table."""
    project = delivery.project if _NAME.match(delivery.project) else "_unsorted"
    folder = home.quarantine / SOURCE / project
    folder.mkdir(parents=True, exist_ok=True)
    suffix = next((s for s in (*FORMATS, *UNSUPPORTED) if delivery.path.name.endswith(s)), ".bin")
    target = folder / f"{delivery.sha256}{suffix}"
    if not target.exists() and not delivery.path.is_symlink():
        partial = folder / f".{delivery.sha256}.partial"
        partial.write_bytes(delivery.path.read_bytes())
        partial.replace(target)
    note = {
        "landed_name": delivery.relative,
        "project": delivery.project,
        "model": delivery.model,
        "reason": error.reason,
        "message": error.message,
    }
    (folder / f"{delivery.sha256}.json").write_text(json.dumps(note, indent=1))
    return {
        "project": delivery.project if _NAME.match(delivery.project) else None,
        "model": delivery.model if _NAME.match(delivery.model) else None,
        "file_sha256": delivery.sha256,
        "reason": error.reason,
        "message": error.message,
    }
