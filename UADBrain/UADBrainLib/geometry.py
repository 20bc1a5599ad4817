"""Image geometry: canonical orientation, resampling between grids, spatial overlap.

Conventions used across the engine:

* Images are SimpleITK images; their origin/spacing/direction are in ITK's LPS physical space.
  Slicer's RAS coordinates are LPS with the first two axes negated.
* Numpy arrays are in SimpleITK order ``[k, j, i]`` (slice, row, column).
* The *canonical* grid has the identity direction (axes along L, P, S), so a canonical array is
  indexed ``[S, P, L]``: ``array[k]`` is an axial slice with anterior at row 0.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

CANONICAL_ORIENTATION = "LPS"  # identity direction matrix in ITK's physical space


def is_axis_aligned(image: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when the direction matrix is a signed permutation (no obliquity)."""
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    return bool(np.all((direction < tolerance) | (np.abs(direction - 1.0) < tolerance)))


def physical_corners(image: sitk.Image) -> np.ndarray:
    """The 8 corners of the image's voxel-edge bounding box in physical (LPS) mm, shape (8, 3)."""
    size = np.array(image.GetSize())
    corners = []
    for corner in itertools.product(*[(-0.5, s - 0.5) for s in size]):
        corners.append(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner]))
    return np.array(corners)


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (LPS) bounding box of the image extent: (min corner, max corner) in mm."""
    corners = physical_corners(image)
    return corners.min(axis=0), corners.max(axis=0)


def overlap_fraction(a: sitk.Image, b: sitk.Image) -> float:
    """Volume of the intersection of two images' bounding boxes over the smaller box's volume."""
    a_lo, a_hi = physical_bounds(a)
    b_lo, b_hi = physical_bounds(b)
    intersection = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None).prod()
    smaller = min((a_hi - a_lo).prod(), (b_hi - b_lo).prod())
    return float(intersection / smaller) if smaller > 0 else 0.0


def canonical_spacing(image: sitk.Image) -> tuple[float, float, float]:
    """The image's spacing expressed along the canonical L, P, S axes."""
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    # column c of the direction matrix is the physical direction of image axis c
    axis_for_physical = direction.argmax(axis=1)
    spacing = np.array(image.GetSpacing())
    return tuple(float(s) for s in spacing[axis_for_physical])


def canonical_reference(image: sitk.Image, spacing=None) -> sitk.Image:
    """An empty identity-direction grid covering ``image`` at ``spacing`` (default: its own)."""
    spacing = np.array(canonical_spacing(image) if spacing is None else spacing, dtype=float)
    lo, hi = physical_bounds(image)
    size = np.maximum(np.ceil((hi - lo) / spacing - 1e-6).astype(int), 1)
    # centre the new grid on the old extent so that rounding is split on both sides
    extent = size * spacing
    origin = (lo + hi) / 2 - extent / 2 + spacing / 2
    reference = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(o) for o in origin])
    return reference


def to_canonical(image: sitk.Image, spacing=None, is_label: bool = False) -> sitk.Image:
    """Reorient (and if needed resample) ``image`` onto a canonical identity-direction grid.

    Axis-aligned images at their own spacing are permuted/flipped exactly, without
    interpolation. Oblique images, or a requested spacing, are resampled (linear for
    intensities, nearest neighbour for labels) onto a grid covering the whole image.
    """
    if spacing is None and is_axis_aligned(image):
        return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    reference = canonical_reference(image, spacing)
    return resample_like(image, reference, is_label=is_label)


def resample_like(image: sitk.Image, reference: sitk.Image, is_label: bool = False,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (same physical space, identity transform)."""
    if same_grid(image, reference):
        return image
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value,
                         image.GetPixelID())


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-5) -> bool:
    """True when two images share size, origin, spacing and direction."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * 100)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a numpy array (``[k, j, i]`` order) in ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def lps_to_ras(point) -> tuple[float, float, float]:
    x, y, z = point
    return (-float(x), -float(y), float(z))
