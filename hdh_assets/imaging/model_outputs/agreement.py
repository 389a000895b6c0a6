"""Agreement of a predicted mask with a reference mask: Dice, HD95 and volumes.

Definitions (per series and segment; voxel size from the series' geometry, in mm):

- **Dice** ``2 |P ∩ R| / (|P| + |R|)``. Both empty: 1 (the model agrees there is nothing). One
  empty: 0.
- **HD95** (mm): the surfaces of P and R are their voxels with a face neighbour outside the mask
  (the volume's edge counts as outside). For each surface voxel of one mask, the Euclidean
  distance (in mm, anisotropic spacing) to the nearest surface voxel of the other; HD95 is the
  larger of the two directed 95th percentiles (``numpy.percentile``, linear interpolation), the
  convention of MONAI's ``compute_hausdorff_distance(percentile=95)``. Both empty: 0. One
  empty: undefined (NaN in :class:`Agreement`, null in the table): there is no distance to
  nothing, and no finite value would be fair.
- **Volumes** (ml): voxels times the voxel volume. ``volume_difference_ml`` is prediction
  minus reference; ``relative_volume_difference`` divides it by the reference volume and is
  undefined (null) when the reference is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    dice: float
    hd95_mm: float  # NaN when exactly one mask is empty
    predicted_ml: float
    reference_ml: float

    @property
    def volume_difference_ml(self) -> float:
        return self.predicted_ml - self.reference_ml

    @property
    def relative_volume_difference(self) -> float | None:
        return self.volume_difference_ml / self.reference_ml if self.reference_ml else None


def dice(predicted: np.ndarray, reference: np.ndarray) -> float:
    total = int(predicted.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted, reference).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (outside the volume included)."""
    from scipy import ndimage  # here: loading the code location does not need it

    faces = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=faces, border_value=0)


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each voxel of ``from_surface`` to the nearest of ``to_surface``."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return distance[from_surface]


def hd95(predicted: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 in mm (module docstring), NaN when exactly one mask is empty."""
    has_p, has_r = bool(predicted.any()), bool(reference.any())
    if not has_p and not has_r:
        return 0.0
    if has_p != has_r:
        return math.nan
    p, r = surface(predicted), surface(reference)
    return float(
        max(
            np.percentile(_directed(p, r, spacing), 95),
            np.percentile(_directed(r, p, spacing), 95),
        )
    )


def agreement(
    predicted: np.ndarray, reference: np.ndarray, spacing: tuple[float, float, float]
) -> Agreement:
    """Dice, HD95 and volumes of two binary masks of one shape; ``spacing`` is (frames, rows,
    columns) in mm."""
    if predicted.shape != reference.shape:
        raise ValueError("the masks differ in shape")
    predicted, reference = predicted.astype(bool), reference.astype(bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return Agreement(
        dice=dice(predicted, reference),
        hd95_mm=hd95(predicted, reference, spacing),
        predicted_ml=int(predicted.sum()) * voxel_ml,
        reference_ml=int(reference.sum()) * voxel_ml,
    )
