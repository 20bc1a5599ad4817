"""The grid a brain extractor's network sees, and the way its answer comes back to the input.

Every brain extractor (the bundled ``learned`` model, deepbet, HD-BET) works the same way around its
network: the head is resampled onto a canonical grid at the network's spacing (smoothed first so
that a fine scan is averaged, not aliased), the network gives a brain probability there, the brain's
largest component and its holes are decided on that grid (cheap whatever the scan's size), and the
probability is carried back onto the input's exact native grid and thresholded there, so the mask's
edge keeps its sub-voxel position.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..geometry import canonical_reference, canonical_spacing, resample_like
from ..preprocessing import fill_holes, largest_component


def head_on_grid(image: sitk.Image, spacing_mm: float) -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """The head on a canonical (L, P, S) grid at ``spacing_mm``: (grid image, ``[S, P, L]`` array
    with 0 outside the field of view, bool array of the voxels inside it)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    # a fine grid is first box-averaged by whole factors (cheap, and far less memory than a
    # Gaussian on every native voxel); the Gaussian adds what is left to reach the model spacing
    shrink = [max(1, int(spacing_mm / s + 1e-3)) for s in image.GetSpacing()]
    if max(shrink) > 1:
        image = sitk.BinShrink(image, shrink)
    native = np.array(canonical_spacing(image))
    # Gaussian FWHM that brings each axis' resolution to the model spacing
    sigma = np.sqrt(np.clip(spacing_mm ** 2 - native ** 2, 0.0, None)) / 2.355
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    sigma_image_axes = sigma[direction.argmax(axis=0)]  # canonical L, P, S → the image's own axes
    if sigma_image_axes.max() > 0.05:
        image = sitk.DiscreteGaussian(image, [float(s) ** 2 for s in sigma_image_axes], 32, 0.01, True)
    grid = canonical_reference(image, (spacing_mm,) * 3)
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, np.nan, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(resampled)
    valid = np.isfinite(array)
    array[~valid] = 0.0
    return resampled, array, valid


def mask_on_native(probability: np.ndarray, grid: sitk.Image, image: sitk.Image,
                   threshold: float = 0.5) -> sitk.Image:
    """Binary brain mask (uint8) on ``image``'s native grid from a probability on ``grid``.

    The probability is kept within one grid voxel of the brain's largest component and set to 1 in
    its holes, then resampled onto the native grid and thresholded there.
    """
    mask = probability >= threshold
    if mask.any():
        kept = fill_holes(largest_component(mask))
        near = ndimage.binary_dilation(kept, np.ones((3, 3, 3), bool))
        probability = np.where(kept & ~mask, 1.0, np.where(near, probability, 0.0))
    return sitk.Cast(sitk.BinaryThreshold(probability_on_native(probability, grid, image), threshold, 1e9, 1, 0),
                     sitk.sitkUInt8)


def probability_on_native(probability: np.ndarray, grid: sitk.Image, image: sitk.Image) -> sitk.Image:
    """A probability array on ``grid`` resampled (linear) onto ``image``'s native grid."""
    probability_image = sitk.GetImageFromArray(probability.astype(np.float32))
    probability_image.CopyInformation(grid)
    return resample_like(probability_image, image)
