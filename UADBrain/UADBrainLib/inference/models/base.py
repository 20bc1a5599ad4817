"""The one interface every anomaly model implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...bundle import Bundle

# progress(fraction within the model's own stage in [0, 1], message)
ProgressCallback = Callable[[float, str], None]


@dataclass
class ModelOutput:
    """What a model returns, on the canonical model grid it was given.

    ``contrast_maps`` holds raw scores (float32, higher = more anomalous) per channel: one per
    contrast for models that score contrasts separately, or a single entry (e.g. ``"anomaly"``)
    for models that score all inputs jointly. The pipeline turns each into healthy-calibrated
    units and fuses them (``calibration.fuse``).
    """

    contrast_maps: dict[str, np.ndarray]
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)  # pseudo-healthy, normalised


class AnomalyModel(ABC):
    """A normative model: scores how far each voxel departs from healthy brains.

    ``predict`` receives the preprocessed images named in ``bundle.contrasts`` that the user gave
    (canonical grid at the bundle's spacing, normalised as the bundle says) and the brain mask.
    """

    conditioning: tuple[str, ...] = ()  # subject covariates ``predict`` takes as keywords (e.g. "age")

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        self.bundle = bundle
        self.device = device

    def subject_warnings(self, age: float | None) -> list[str]:
        """What the report says about the subject's covariates, e.g. an age this model does not use."""
        if age is not None and "age" not in self.conditioning:
            return [f"age not used: model '{self.bundle.name}' is not conditioned on age (normative-age is)."]
        return []

    def for_contrasts(self, contrasts) -> "AnomalyModel":
        """The model that scores these contrasts: this one (an ensemble may hand them to a member)."""
        return self

    @abstractmethod
    def predict(self, images: dict[str, np.ndarray], brain_mask: np.ndarray,
                spacing: tuple[float, float, float], progress: ProgressCallback | None = None,
                is_cancelled: Callable[[], bool] | None = None) -> ModelOutput:
        """Anomaly map for one case."""
