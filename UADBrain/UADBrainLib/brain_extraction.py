"""Choosing and computing the brain mask the models score inside."""

from __future__ import annotations

import SimpleITK as sitk

from .errors import InputError
from .geometry import resample_like
from .preprocessing import atlas_brain_mask, looks_skull_stripped, nonzero_brain_mask

# auto: the given mask, else the nonzero region of a skull-stripped scan, else brain extraction
BRAIN_MASK_METHODS = ("auto", "nonzero", "atlas")


def brain_mask_for(reference: sitk.Image, given_mask: sitk.Image | None, method: str = "auto",
                   device: str = "cpu") -> tuple[sitk.Image, str]:
    """The brain mask on ``reference``'s native grid and the name of the path that produced it."""
    if given_mask is not None:
        return resample_like(given_mask, reference, is_label=True), "given"
    if method not in BRAIN_MASK_METHODS:
        raise InputError(f"unknown brain-mask method '{method}' — use one of {', '.join(BRAIN_MASK_METHODS)}.")
    if method == "nonzero" or (method == "auto" and looks_skull_stripped(reference)):
        return nonzero_brain_mask(reference), "nonzero (skull-stripped input)"
    return atlas_brain_mask(reference), "atlas registration (ICBM152)"
