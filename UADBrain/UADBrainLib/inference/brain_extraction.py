"""Choosing and computing the brain mask the models score inside.

Methods: ``deepbet`` and ``hd-bet`` / ``hd-bet-fast`` (the field's extractors, from their PyPI wheels:
:mod:`packaged_extractors`), ``learned`` (the bundled model trained here on synthetic heads:
:mod:`brainmask_net`), ``nonzero`` (a skull-stripped scan's nonzero region) and ``atlas`` (affine
ICBM152 registration, coarse). ``auto`` takes a given mask; else the nonzero region when the scan is
already skull-stripped; else the first installed extractor in :data:`AUTO_PREFERENCE` for the
scan's contrast, chosen by measurement (docs/RESULTS.md, "Brain extraction"), and says so when a
better one is not installed.
"""

from __future__ import annotations

import SimpleITK as sitk

from ..errors import InputError
from ..geometry import resample_like
from ..preprocessing import atlas_brain_mask, looks_skull_stripped, nonzero_brain_mask

PACKAGED_METHODS = ("deepbet", "hd-bet-fast", "hd-bet", "deepbet+hd-bet")
BRAIN_MASK_METHODS = ("auto", *PACKAGED_METHODS, "learned", "nonzero", "atlas")
# auto on a raw head: the best installed extractor for its contrast, best first. Measured on held-out
# synthetic heads (routine, atrophied, 5 mm slices; docs/RESULTS.md "Brain extraction"): HD-BET fast
# is best on every set and contrast but atrophied T1 (there deepbet: 0.950 vs 0.937 Dice); deepbet
# is 3x faster, weaker on T2 (0.906); the bundled learned model is the fallback (0.929 overall)
AUTO_PREFERENCE = {contrast: ("hd-bet-fast", "deepbet", "learned") for contrast in ("flair", "t1", "t2", "t1c")}
AUTO_PREFERENCE_UNKNOWN_CONTRAST = ("hd-bet-fast", "deepbet", "learned")
NONZERO_PATH = "nonzero (skull-stripped input)"
ATLAS_PATH = "atlas registration (ICBM152)"
METHOD_NAMES = {"deepbet": "deepbet", "hd-bet-fast": "HD-BET fast (fold 0)",
                "hd-bet": "HD-BET accurate (5 folds, mirrored)",
                "deepbet+hd-bet": "deepbet + HD-BET fast (probabilities averaged)"}


def learned_path_name(version: str | None) -> str:
    return f"learned (brainmask model {version or '?'})"


def installed(method: str) -> bool:
    """Whether ``method`` can run here (its package or bundle is present)."""
    if method in PACKAGED_METHODS:
        from .packaged_extractors import KINDS

        return KINDS[method].installed()
    if method == "learned":
        from .brainmask_net import learned_extractor_installed

        return learned_extractor_installed()
    return method in BRAIN_MASK_METHODS


def auto_method(contrast: str | None) -> tuple[str, list[str]]:
    """The extractor ``auto`` uses on a raw head of ``contrast`` and the better ones not installed."""
    preference = AUTO_PREFERENCE.get(contrast or "", AUTO_PREFERENCE_UNKNOWN_CONTRAST)
    missing = []
    for method in preference:
        if installed(method):
            return method, missing
        missing.append(method)
    return "atlas", missing


def brain_mask_for(reference: sitk.Image, given_mask: sitk.Image | None, method: str = "auto",
                   device: str = "cpu", contrast: str | None = None) -> tuple[sitk.Image, str]:
    """The brain mask on ``reference``'s native grid and the name of the path that produced it.

    ``contrast`` (flair, t1, t2, t1c or None) is the reference's; ``auto`` picks by it.
    """
    if given_mask is not None:
        return resample_like(given_mask, reference, is_label=True), "given"
    if method not in BRAIN_MASK_METHODS:
        raise InputError(f"unknown brain-mask method '{method}' — use one of {', '.join(BRAIN_MASK_METHODS)}.")
    if method == "nonzero" or (method == "auto" and looks_skull_stripped(reference)):
        return nonzero_brain_mask(reference), NONZERO_PATH
    note = ""
    if method == "auto":
        method, missing = auto_method(contrast)
        if missing:
            note = (f"; {' and '.join(missing)} not installed: pip install \"uadbrain[brainmask]\" for a "
                    "better brain mask")
    mask, name = extract(reference, method, device)
    return mask, name + note


def extract(image: sitk.Image, method: str, device: str = "cpu") -> tuple[sitk.Image, str]:
    """The brain mask of a raw head by one extractor, and the extractor's name."""
    if method == "atlas":
        return atlas_brain_mask(image), ATLAS_PATH
    if method in PACKAGED_METHODS:
        from .packaged_extractors import packaged_extractor

        return packaged_extractor(method, device).mask(image), METHOD_NAMES[method]
    from .brainmask_net import load_brainmask_model

    model = load_brainmask_model(device=device)
    return model.mask(image), learned_path_name(model.bundle.metadata.get("version"))
