"""The options of a detect run: every run parameter and its default, in one place.

The CLI builds a :class:`DetectOptions` from its arguments, the Slicer panel's parameter pack and
the web app's state are made from its fields and defaults, and the background worker receives it
as :meth:`DetectOptions.to_dict`. Post-processing options left at None take the model's own
defaults (its ``metadata.json`` ``postprocessing``), applied by :meth:`DetectOptions.postprocessing`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..device import check_device_name
from ..errors import InputError
from .brain_extraction import BRAIN_MASK_METHODS
from .calibration import DEFAULT_FPR
from .postprocessing import check_median

# what a model without its own post-processing defaults gets
MODEL_DEFAULT_POSTPROCESSING = {"median": 5, "min_size_mm3": 0.0, "erosion_mm": 0.0, "fpr": DEFAULT_FPR}
# the ranges every front end accepts (beyond them a value is a typo, not a choice)
MAX_FPR = 0.5
MAX_MIN_SIZE_MM3 = 100_000.0  # 100 mL
MAX_EROSION_MM = 30.0
MAX_AGE_YEARS = 125.0
THRESHOLD_METHODS = ("calibrated", "auto", "otsu")


def _number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InputError(f"{name} must be a number in {interval}, got {value!r}.")
    return number


def check_fpr(value) -> float:
    return _number("the false-positive rate (fpr)", value, 0.0, MAX_FPR, low_open=True)


def check_min_size(value) -> float:
    return _number("the minimum lesion size (mm³)", value, 0.0, MAX_MIN_SIZE_MM3)


def check_erosion(value) -> float:
    return _number("the brain-mask erosion (mm)", value, 0.0, MAX_EROSION_MM)


def check_age(value) -> float:
    return _number("the age (years)", value, 0.0, MAX_AGE_YEARS)


def check_threshold(value):
    """None, a method name or a finite number (a numeric string becomes a number)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in THRESHOLD_METHODS:
        return value.strip().lower()
    if isinstance(value, bool):
        raise InputError(f"the threshold must be a number, 'calibrated' or 'otsu', got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"threshold '{value}' is not understood — give a number, 'calibrated' or 'otsu'.") from None
    if not math.isfinite(number):
        raise InputError(f"the threshold must be a finite number, got {value!r}.")
    return number


@dataclass
class DetectOptions:
    threshold: float | str | None = None  # number, "calibrated", "otsu"; None: calibrated if possible
    fpr: float | None = None  # healthy voxel false-positive rate of the calibrated threshold; None: the model's
    median: int | None = None  # cubic kernel in mm, 0/3/5/7; None: the model's default
    min_size_mm3: float | None = None  # None: the model's default
    erosion_mm: float | None = None  # erode the brain mask before thresholding; None: model default
    brain_mask_method: str = "auto"  # brain_extraction.BRAIN_MASK_METHODS
    bias_correction: bool | None = None  # None: as the model expects
    device: str = "auto"  # device.DEVICE_HELP
    check_contrast: bool = True  # refuse an input that looks like another contrast (input_check.py)
    keep_preprocessed: bool = False  # keep the normalised model-grid images in the result
    age: float | None = None  # the subject's age in years, for models conditioned on age (others say they ignore it)

    def __post_init__(self):
        """Every value checked here, once, for the CLI, the API, the Slicer panel and the web app."""
        self.threshold = check_threshold(self.threshold)
        self.fpr = None if self.fpr is None else check_fpr(self.fpr)
        self.median = None if self.median is None else check_median(self.median)
        self.min_size_mm3 = None if self.min_size_mm3 is None else check_min_size(self.min_size_mm3)
        self.erosion_mm = None if self.erosion_mm is None else check_erosion(self.erosion_mm)
        self.age = None if self.age is None else check_age(self.age)
        if self.brain_mask_method not in BRAIN_MASK_METHODS:
            raise InputError(f"unknown brain-mask method {self.brain_mask_method!r} — use one of "
                             f"{', '.join(BRAIN_MASK_METHODS)}.")
        self.device = check_device_name(self.device)
        for name in ("check_contrast", "keep_preprocessed"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.bias_correction is not None and not isinstance(self.bias_correction, bool):
            raise InputError(f"bias_correction must be True, False or None, got {self.bias_correction!r}.")

    def postprocessing(self, model_defaults: dict) -> tuple[int, float, float, float]:
        """``(median, min_size_mm3, erosion_mm, fpr)``: these options over the model's defaults."""
        defaults = {**MODEL_DEFAULT_POSTPROCESSING, **(model_defaults or {})}
        median = defaults["median"] if self.median is None else self.median
        min_size = defaults["min_size_mm3"] if self.min_size_mm3 is None else self.min_size_mm3
        erosion = defaults["erosion_mm"] if self.erosion_mm is None else self.erosion_mm
        fpr = defaults["fpr"] if self.fpr is None else self.fpr
        return int(median), float(min_size), float(erosion), float(fpr)

    def to_dict(self) -> dict:
        """JSON-ready values (the background worker's request, the web app's state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DetectOptions":
        if not isinstance(values, dict):
            raise InputError(f"detect options must be a DetectOptions or a dict, got {type(values).__name__}.")
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise InputError(f"unknown detect option '{unknown[0]}'.")
        return cls(**values)


DEFAULTS = DetectOptions()
