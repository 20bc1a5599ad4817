"""A scan prepared as ``detect`` prepares it: validated inputs, brain mask, canonical model grid.

:func:`load_scan` reads and validates the inputs and the optional mask; :func:`prepare_scan`
computes the brain mask on the reference input's native grid and resamples everything onto the
canonical model grid (optionally N4 bias-corrected). ``detect``, training on real healthy scans
(``training.data.preprocess_case``) and the contrast check's measurements
(``input_check.check_scan``) all call these two, so "preprocessed exactly as detect does" holds by
construction. Intensity normalisation is left to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import SimpleITK as sitk

from ..bundle import CONTRASTS
from ..errors import InputError
from ..geometry import overlap_fraction, resample_like, to_canonical
from ..io import read_image, read_mask, validate_image, validate_mask
from ..preprocessing import check_mask_volume, n4_bias_correction
from .brain_extraction import brain_mask_for

MIN_OVERLAP = 0.5
MAX_MASK_FRACTION = 0.99  # a given brain mask covering more of its image is not a brain mask


@dataclass
class PreparedScan:
    """Inputs on the canonical model grid (``[S, P, L]`` arrays at the model spacing)."""

    reference: sitk.Image  # the first input: every output goes back onto its native grid
    native_mask: sitk.Image  # brain mask on the reference's native grid
    mask_method: str  # the brain-mask path taken (brain_extraction.brain_mask_for)
    brain_volume_ml: float
    grid: sitk.Image  # the canonical model grid
    images: dict[str, sitk.Image]  # contrast -> raw intensities on the grid (bias-corrected if asked)
    mask: np.ndarray  # bool brain mask on the grid


def load_inputs(images: Mapping[str, object]) -> dict[str, sitk.Image]:
    """Validated float32 images keyed by contrast, in the canonical contrast order."""
    if not images:
        raise InputError(f"no input image — give at least one of: {', '.join(CONTRASTS)}.")
    unknown = [c for c in images if c not in CONTRASTS]
    if unknown:
        raise InputError(f"unknown contrast '{unknown[0]}' — use {', '.join(CONTRASTS)}.")
    loaded = {}
    for contrast in CONTRASTS:
        if contrast not in images:
            continue
        value = images[contrast]
        if isinstance(value, sitk.Image):
            loaded[contrast] = validate_image(value, contrast)
        elif isinstance(value, (str, Path)):
            loaded[contrast] = read_image(value, contrast)
        else:
            raise InputError(f"{contrast}: expected a file path or a SimpleITK image, got "
                             f"{type(value).__name__}.")
    return loaded


def load_mask(mask) -> sitk.Image | None:
    """A given brain mask (path or image) as a 0/1 uint8 image, or None."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return read_mask(mask)
    return validate_mask(mask)


def check_overlap(images: dict[str, sitk.Image], mask: sitk.Image | None = None) -> None:
    reference_name, reference = next(iter(images.items()))
    others = [(name, image) for name, image in images.items() if name != reference_name]
    if mask is not None:
        others.append(("mask", mask))
    for name, image in others:
        fraction = overlap_fraction(reference, image)
        if fraction < MIN_OVERLAP:
            raise InputError(f"{name} and {reference_name} do not overlap in space ({fraction:.0%} of "
                             "the smaller volume) — the inputs must be co-registered scans of the same "
                             "subject; register them first.")


def load_scan(images: Mapping[str, object], mask=None) -> tuple[dict[str, sitk.Image], sitk.Image | None]:
    """The validated inputs (canonical contrast order) and brain mask of one subject, checked to
    overlap in space."""
    inputs, given_mask = load_inputs(images), load_mask(mask)
    if given_mask is not None and float(np.mean(sitk.GetArrayViewFromImage(given_mask))) > MAX_MASK_FRACTION:
        raise InputError("the brain mask covers the whole image — give a mask of the brain, or none to "
                         "have the brain found.")
    check_overlap(inputs, given_mask)
    return inputs, given_mask


def prepare_scan(inputs: dict[str, sitk.Image], given_mask: sitk.Image | None = None, spacing_mm=None,
                 brain_mask_method: str = "auto", bias_correction: bool = False, device: str = "cpu",
                 stage: Callable[[str], None] | None = None) -> PreparedScan:
    """Brain mask and canonical model grid for ``inputs`` (from :func:`load_scan`; the first is the
    reference). ``spacing_mm`` None keeps the reference's own spacing. ``stage(name)`` is called
    as each step starts (progress and cancellation in ``detect``)."""
    stage = stage or (lambda name: None)
    reference_contrast, reference = next(iter(inputs.items()))
    stage("brain mask")
    native_mask, mask_method = brain_mask_for(reference, given_mask, brain_mask_method, device, reference_contrast)
    if given_mask is None:
        brain_volume_ml = check_mask_volume(native_mask, f"brain mask ({mask_method})",
                                            "check the image, or give a brain mask (--mask) or another "
                                            "--brain-mask-method")
    else:
        brain_volume_ml = check_mask_volume(native_mask)

    stage("resample")
    grid = to_canonical(reference, spacing_mm)
    # straight onto the model grid: reorienting a 0.5 mm volume first would copy all of it
    images = {name: resample_like(image, grid) for name, image in inputs.items()}
    mask_image = resample_like(native_mask, grid, is_label=True)
    if bias_correction:
        stage("bias correction")
        images = {name: n4_bias_correction(image, mask_image) for name, image in images.items()}
    return PreparedScan(reference=reference, native_mask=native_mask, mask_method=mask_method,
                        brain_volume_ml=brain_volume_ml, grid=grid, images=images,
                        mask=sitk.GetArrayFromImage(mask_image) > 0)
