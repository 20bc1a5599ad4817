"""Choosing and computing the brain mask the models score inside.

``auto``: the given mask; else the nonzero region when the scan is already skull-stripped; else the
learned brain extractor (``brainmask_net``), which handles raw heads of any contrast (or, when its
bundle is not installed, the atlas). ``learned``, ``nonzero`` and ``atlas`` (affine ICBM152
registration, coarse) force one path.
"""

from __future__ import annotations

import SimpleITK as sitk

from ..errors import InputError
from ..geometry import resample_like
from ..preprocessing import atlas_brain_mask, looks_skull_stripped, nonzero_brain_mask

BRAIN_MASK_METHODS = ("auto", "learned", "nonzero", "atlas")
NONZERO_PATH = "nonzero (skull-stripped input)"
ATLAS_PATH = "atlas registration (ICBM152)"
ATLAS_FALLBACK_PATH = "atlas registration (ICBM152; the learned brain extractor is not installed)"


def learned_path_name(version: str | None) -> str:
    return f"learned (brainmask model {version or '?'})"


def brain_mask_for(reference: sitk.Image, given_mask: sitk.Image | None, method: str = "auto",
                   device: str = "cpu") -> tuple[sitk.Image, str]:
    """The brain mask on ``reference``'s native grid and the name of the path that produced it."""
    if given_mask is not None:
        return resample_like(given_mask, reference, is_label=True), "given"
    if method not in BRAIN_MASK_METHODS:
        raise InputError(f"unknown brain-mask method '{method}' — use one of {', '.join(BRAIN_MASK_METHODS)}.")
    if method == "nonzero" or (method == "auto" and looks_skull_stripped(reference)):
        return nonzero_brain_mask(reference), NONZERO_PATH
    if method == "atlas":
        return atlas_brain_mask(reference), ATLAS_PATH
    from .brainmask_net import learned_extractor_installed, load_brainmask_model

    if method == "auto" and not learned_extractor_installed():
        return atlas_brain_mask(reference), ATLAS_FALLBACK_PATH
    model = load_brainmask_model(device=device)
    return model.mask(reference), learned_path_name(model.bundle.metadata.get("version"))
