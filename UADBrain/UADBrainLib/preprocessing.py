"""Preprocessing steps, each a small function: brain masks, bias correction, normalisation.

All functions take and return SimpleITK images or numpy arrays on one grid; the pipeline decides
which grid (see ``inference/preparation.py``) and which steps a model expects (its ``metadata.json``).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError

# A skull-stripped scan has a constant background; plausible adult brain volumes in mL.
BRAIN_VOLUME_RANGE_ML = (100.0, 2500.0)
NORMALISATIONS = ("robust_z", "histeq", "none")


# --------------------------------------------------------------------------- brain masks

def background_value(array: np.ndarray) -> float:
    """The most common value on the volume's outer faces (0 for most skull-stripped scans)."""
    faces = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(),
                            array[:, -1].ravel(), array[:, :, 0].ravel(), array[:, :, -1].ravel()])
    values, counts = np.unique(faces, return_counts=True)
    return float(values[counts.argmax()])


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in 3D, then slice by slice (closes ventricles touching a cut edge)."""
    filled = ndimage.binary_fill_holes(mask)
    for k in range(filled.shape[0]):
        filled[k] = ndimage.binary_fill_holes(filled[k])
    return filled


def nonzero_brain_mask(image: sitk.Image) -> sitk.Image:
    """Brain mask of a skull-stripped scan: everything that differs from the constant background."""
    array = sitk.GetArrayViewFromImage(image)
    foreground = array != background_value(array)
    mask = fill_holes(largest_component(foreground))
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(image)
    return result


def looks_skull_stripped(image: sitk.Image) -> bool:
    """Heuristic: a constant background covering most of the border and a brain-sized foreground.

    Raw heads have noisy (non-constant) air around the head and a foreground far larger than a
    brain, so they fail one of the two tests.
    """
    array = sitk.GetArrayViewFromImage(image)
    background = background_value(array)
    faces = [array[0], array[-1], array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1]]
    border_constant = np.mean([np.mean(f == background) for f in faces])
    if border_constant < 0.9:
        return False
    volume_ml = np.count_nonzero(array != background) * np.prod(image.GetSpacing()) / 1000.0
    return BRAIN_VOLUME_RANGE_ML[0] <= volume_ml <= BRAIN_VOLUME_RANGE_ML[1]


def atlas_brain_mask(image: sitk.Image) -> sitk.Image:
    """Brain mask of a raw head by affine registration of the ICBM152 2009a template.

    A coarse fallback: it registers a skull-stripped template (``Resources/Atlas``, 2 mm) to the
    head with mutual information, so its boundary is only as good as an affine fit allows.
    """
    from .template import register_template, template_image

    transform = register_template(image)
    template = template_image()
    template_mask = sitk.Cast(template > 0, sitk.sitkUInt8)
    mask = sitk.Resample(template_mask, image, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    array = fill_holes(largest_component(sitk.GetArrayViewFromImage(mask) > 0))
    result = sitk.GetImageFromArray(array.astype(np.uint8))
    result.CopyInformation(image)
    return result


MIN_BRAIN_ML = 50.0
MAX_BRAIN_ML = 3000.0  # intracranial volumes stay below about 2 L


def check_mask_volume(mask: sitk.Image, name: str = "brain mask",
                      advice: str = "check the image and mask") -> float:
    """Brain volume in mL; raises when the mask cannot be a brain (e.g. a non-brain image, or a
    brain extraction that failed)."""
    volume_ml = np.count_nonzero(sitk.GetArrayViewFromImage(mask)) * np.prod(mask.GetSpacing()) / 1000.0
    if volume_ml < MIN_BRAIN_ML:
        raise InputError(f"{name}: covers only {volume_ml:.1f} mL — this does not look like a brain "
                         f"MRI (or the mask is wrong); {advice}.")
    if volume_ml > MAX_BRAIN_ML:
        raise InputError(f"{name}: covers {volume_ml / 1000:.1f} L, more than any brain (at most about 2 L) — "
                         f"this is not a brain MRI, or the brain mask is wrong; {advice}.")
    return float(volume_ml)


# --------------------------------------------------------------------------- bias correction

def n4_bias_correction(image: sitk.Image, mask: sitk.Image, shrink: int = 4) -> sitk.Image:
    """N4 bias field correction estimated inside the mask on a shrunken grid, applied at full res."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    # N4 models multiplicative bias of positive intensities: shift z-scored data above zero first
    array = sitk.GetArrayViewFromImage(image)
    offset = 0.0
    brain = sitk.GetArrayViewFromImage(mask) > 0
    minimum = float(array[brain].min())
    if minimum <= 0:
        offset = 1.0 - minimum
        image = image + offset
    small_image = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(sitk.Cast(mask, sitk.sitkUInt8), [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(small_image, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    corrected = image / sitk.Exp(log_bias)
    return corrected - offset if offset else corrected


# --------------------------------------------------------------------------- normalisation

def robust_statistics(values: np.ndarray) -> tuple[float, float]:
    """Median and a robust standard deviation (IQR / 1.349) of brain intensities.

    Both move little when a lesion occupies a few percent of the brain, unlike the mean, the
    maximum or a high percentile (a bright tumour shifts the 99th percentile).
    """
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    scale = (q75 - q25) / 1.349
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("the brain region has no intensity contrast (all voxels nearly equal) — "
                         "check the image and the brain mask.")
    return float(median), float(scale)


def robust_z(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(intensity − brain median) / robust SD; invariant to scanner scaling and offsets."""
    median, scale = robust_statistics(array[mask])
    return ((array - median) / scale).astype(np.float32)


def histogram_equalise(array: np.ndarray, mask: np.ndarray, bins: int = 4096) -> np.ndarray:
    """Histogram equalisation over the brain (Meissen et al. 2022): each voxel → its brain rank in [0, 1]."""
    values = array[mask]
    histogram, edges = np.histogram(values, bins=bins)
    cdf = np.cumsum(histogram).astype(np.float64)
    cdf /= cdf[-1]
    equalised = np.interp(array, edges[1:], cdf).astype(np.float32)
    equalised[~mask] = 0.0
    return equalised


def normalise(array: np.ndarray, mask: np.ndarray, method: str) -> np.ndarray:
    """Apply the normalisation a model was trained with (its metadata names the method)."""
    if method == "robust_z":
        return robust_z(array, mask)
    if method == "histeq":
        return histogram_equalise(array, mask)
    if method == "none":
        return array.astype(np.float32)
    raise ValueError(f"unknown normalisation '{method}' (known: {', '.join(NORMALISATIONS)})")
