"""Synthetic-anomaly segmenter (the self-supervised family of Baugh et al. 2023).

A U-Net learns to outline anomalies inserted into synthetic healthy brains — brighter, darker,
textured or transplanted patches with real lesion shapes — so it learns what healthy tissue looks
like without ever seeing a real lesion. One network, trained on every contrast, scores each given
contrast on its own. The raw score of a contrast's channel is ``softplus(logit)``: it ranks voxels
as the logit does but is about 0 in healthy tissue, like the background, so that resampling and
median filtering across the brain's edge do not make the edge look anomalous. The pipeline
calibrates it on healthy brains and fuses the contrasts.
"""

from __future__ import annotations

import numpy as np

from .base import AnomalyModel, ModelOutput
from .networks import SliceNetworkModel

HEAD = "segmenter"


def anomaly_score(logits: np.ndarray) -> np.ndarray:
    """``softplus(logit)``, computed stably."""
    return (np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits)))).astype(np.float32)


class SyntheticAnomalySegmenter(SliceNetworkModel, AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self._load()

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        results = self._run_per_contrast(lambda contrast: HEAD, images, brain_mask, "segmenting",
                                         progress, is_cancelled)
        maps = {contrast: np.where(brain_mask, anomaly_score(logits), 0.0).astype(np.float32)
                for contrast, (_, (logits,)) in results.items()}
        return ModelOutput(contrast_maps=maps)
