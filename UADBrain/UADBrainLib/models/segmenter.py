"""Synthetic-anomaly segmenter (the self-supervised family of Baugh et al. 2023).

A U-Net learns to outline anomalies inserted into synthetic healthy brains — brighter, darker,
textured or transplanted patches with real lesion shapes — so it learns what healthy tissue looks
like without ever seeing a real lesion. One network, trained on every contrast, scores each given
contrast on its own; its logit is the raw score of that contrast's channel, which the pipeline
calibrates on healthy brains and fuses.
"""

from __future__ import annotations

import numpy as np

from .base import AnomalyModel, ModelOutput
from .networks import SliceNetworkModel

HEAD = "segmenter"


class SyntheticAnomalySegmenter(SliceNetworkModel, AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self._load()

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        results = self._run_per_contrast(lambda contrast: HEAD, images, brain_mask, "segmenting",
                                         progress, is_cancelled)
        maps = {contrast: np.where(brain_mask, logits, 0.0).astype(np.float32)
                for contrast, (_, logits) in results.items()}
        return ModelOutput(contrast_maps=maps)
