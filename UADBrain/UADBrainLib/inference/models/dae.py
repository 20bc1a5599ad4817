"""Denoising autoencoder (Kascenas et al. 2022): a U-Net trained to remove coarse noise.

Trained on healthy brains only, the network restores healthy tissue; what it cannot restore —
a lesion it never saw — remains in the residual ``image − reconstruction``. The score is that
residual in the direction lesions take on the contrast (bright on FLAIR/T2, dark on T1, either
on T1c), or a structural or perceptual distance (``scores.py``), as the bundle's ``scoring``
says. One U-Net per contrast, or one shared by all contrasts (the head :data:`SHARED_HEAD`);
each contrast is a channel that the pipeline calibrates and fuses. The other reconstruction
families (autoencoders, diffusion) are scored by this class too.
"""

from __future__ import annotations

import numpy as np

from ...errors import ModelError
from .base import AnomalyModel, ModelOutput
from .networks import SliceNetworkModel
from .scores import score_outputs, score_refusal
from .thresholding import DEFAULT_DIRECTIONS

SHARED_HEAD = "dae"  # the network's name when one network restores every contrast


class DenoisingAutoencoder(SliceNetworkModel, AnomalyModel):
    shared_head = SHARED_HEAD

    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self._load()
        self.scoring = bundle.metadata.get("scoring", {})
        self.score = self.scoring.get("score", "residual")
        refusal = score_refusal(self.score, bundle.family)
        reconstructions = len(self._forwards_for(next(iter(self.networks))))
        if refusal is None and self.score == "mahalanobis" and reconstructions < 2:
            refusal = "the mahalanobis score needs an ensemble of reconstructions in the scoring block"
        if refusal:
            raise ModelError(f"model '{bundle.name}': {refusal} — rescore or retrain it.")
        self.feature_distance = None
        if self.score == "perceptual":
            from .features import FeatureDistance

            self.feature_distance = FeatureDistance(self.scoring, device)

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        directions = {**DEFAULT_DIRECTIONS, **self.scoring.get("direction", {})}
        head_for = lambda contrast: contrast if contrast in self.networks else self.shared_head  # noqa: E731
        results = self._run_per_contrast(head_for, images, brain_mask, "reconstructing",
                                         progress, is_cancelled)
        distance = (lambda image, reconstruction: self.feature_distance.distance(image, reconstruction, brain_mask)) \
            if self.feature_distance else None
        maps, reconstructions = {}, {}
        for contrast, (prepared, outputs) in results.items():
            outputs = [np.where(brain_mask, output, 0.0).astype(np.float32) for output in outputs]
            # the model grid is isotropic: one spacing converts the scores' millimetres
            score, reconstruction = score_outputs(self.score, prepared, outputs, directions[contrast],
                                                  float(np.mean(spacing)), distance)
            maps[contrast] = np.where(brain_mask, score, 0.0).astype(np.float32)
            reconstructions[contrast] = reconstruction
        return ModelOutput(contrast_maps=maps, reconstructions=reconstructions)
