"""Intensity-outlier thresholding (Meissen et al. 2022), the baseline that needs no training.

Each contrast is normalised inside the brain (robust z-score by default, or Meissen's histogram
equalisation) and scored by how far a voxel lies in the direction lesions take on that contrast:
bright on FLAIR and T2, dark on T1, either on post-contrast T1. The pipeline fuses the
per-contrast maps against each contrast's own healthy calibration (``calibration.py``).
"""

from __future__ import annotations

import numpy as np

from .base import AnomalyModel, ModelOutput

DEFAULT_DIRECTIONS = {"flair": "bright", "t2": "bright", "t1": "dark", "t1c": "both"}


def directional_score(normalised: np.ndarray, direction: str) -> np.ndarray:
    if direction == "bright":
        return normalised
    if direction == "dark":
        return -normalised
    if direction == "both":
        return np.abs(normalised)
    raise ValueError(f"unknown lesion direction '{direction}'")


class ThresholdingModel(AnomalyModel):
    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        directions = {**DEFAULT_DIRECTIONS, **self.bundle.metadata.get("scoring", {}).get("direction", {})}
        contrast_maps = {}
        for contrast, image in images.items():
            score = directional_score(image, directions[contrast]).astype(np.float32)
            score[~brain_mask] = 0.0
            contrast_maps[contrast] = score
        if progress:
            progress(1.0, "thresholding")
        return ModelOutput(contrast_maps=contrast_maps)
