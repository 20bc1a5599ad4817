"""The options of a detect run: every run parameter and its default, in one place.

The CLI builds a :class:`DetectOptions` from its arguments, the Slicer panel's parameter pack and
the web app's state are made from its fields and defaults, and the background worker receives it
as :meth:`DetectOptions.to_dict`. Post-processing options left at None take the model's own
defaults (its ``metadata.json`` ``postprocessing``), applied by :meth:`DetectOptions.postprocessing`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import InputError
from .calibration import DEFAULT_FPR

# what a model without its own post-processing defaults gets
MODEL_DEFAULT_POSTPROCESSING = {"median": 5, "min_size_mm3": 0.0, "erosion_mm": 0.0}


@dataclass
class DetectOptions:
    threshold: float | str | None = None  # number, "calibrated", "otsu"; None: calibrated if possible
    fpr: float = DEFAULT_FPR  # healthy voxel false-positive rate of the calibrated threshold
    median: int | None = None  # voxels, 0/3/5/7; None: the model's default
    min_size_mm3: float | None = None  # None: the model's default
    erosion_mm: float | None = None  # erode the brain mask before thresholding; None: model default
    brain_mask_method: str = "auto"  # brain_extraction.BRAIN_MASK_METHODS
    bias_correction: bool | None = None  # None: as the model expects
    device: str = "auto"  # device.DEVICE_CHOICES
    check_contrast: bool = True  # refuse an input that looks like another contrast (input_check.py)
    keep_preprocessed: bool = False  # keep the normalised model-grid images in the result

    def postprocessing(self, model_defaults: dict) -> tuple[int, float, float]:
        """``(median, min_size_mm3, erosion_mm)``: these options over the model's defaults."""
        defaults = {**MODEL_DEFAULT_POSTPROCESSING, **(model_defaults or {})}
        median = defaults["median"] if self.median is None else self.median
        min_size = defaults["min_size_mm3"] if self.min_size_mm3 is None else self.min_size_mm3
        erosion = defaults["erosion_mm"] if self.erosion_mm is None else self.erosion_mm
        return int(median), float(min_size), float(erosion)

    def to_dict(self) -> dict:
        """JSON-ready values (the background worker's request, the web app's state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DetectOptions":
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise InputError(f"unknown detect option '{unknown[0]}'.")
        return cls(**values)


DEFAULTS = DetectOptions()
