"""The automatic-threshold policy: a manual number, the healthy calibration, or Otsu."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import calibration as calib
from .postprocessing import PostProcessor

MAX_CALIBRATED_FLAGGED_FRACTION = 0.3  # of the brain; beyond it the automatic threshold is Otsu's


def resolve_threshold(spec, postprocessor: PostProcessor, calibration: dict | None, channels,
                      median: int, erosion_mm: float, fpr: float) -> tuple[float, str]:
    """A threshold value and how it was chosen: ``manual``, ``calibrated`` or ``otsu``.

    ``spec`` None is automatic: the calibrated threshold when the model has one for these
    channels and it flags a plausible part of the brain, else Otsu.
    """
    if spec is None:
        if is_calibrated_for(calibration, channels):
            value = calib.calibrated_threshold(calibration, channels, median, fpr)
            if calibration_fits(postprocessor, value, median, erosion_mm):
                return value, "calibrated"
        spec = "otsu"
    if isinstance(spec, str):
        method = spec.lower()
        if method in ("calibrated", "auto"):
            return calib.calibrated_threshold(calibration, channels, median, fpr), "calibrated"
        if method == "otsu":
            return postprocessor.otsu(median, erosion_mm), "otsu"
        try:
            spec = float(spec)
        except ValueError:
            raise InputError(f"threshold '{spec}' is not understood — give a number, 'calibrated' "
                             "or 'otsu'.") from None
    value = float(spec)
    if not np.isfinite(value):
        raise InputError("the threshold must be a finite number.")
    return value, "manual"


def is_calibrated_for(calibration: dict | None, channels) -> bool:
    return calib.channel_set_key(channels) in (calibration or {}).get("fused", {})


def calibration_fits(postprocessor: PostProcessor, threshold: float, median: int, erosion_mm: float) -> bool:
    """Whether a calibrated threshold flags at most :data:`MAX_CALIBRATED_FLAGGED_FRACTION` of the
    brain. A healthy calibration (made on synthetic brains) can miss a real scanner's appearance
    so widely that its threshold flags nearly the whole brain; no lesion load looks like that."""
    scores = postprocessor.brain_scores(median, erosion_mm)
    return scores.size == 0 or float(np.mean(scores > threshold)) <= MAX_CALIBRATED_FLAGGED_FRACTION


def otsu_fallback_warning(options_threshold, threshold_method: str, calibration: dict | None, channels) -> list[str]:
    """The run's warning when the automatic threshold had to fall back from the calibration to Otsu."""
    if options_threshold is None and threshold_method == "otsu" and is_calibrated_for(calibration, channels):
        return [f"the model's healthy calibration would flag more than {MAX_CALIBRATED_FLAGGED_FRACTION:.0%} of "
                "the brain on this scan (it does not fit this scanner's images); Otsu's threshold is used "
                "instead — tune it with the slider."]
    return []
