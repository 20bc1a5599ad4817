"""The perceptual distance: feature maps of a network trained here, compared LPIPS-style.

LPIPS (Zhang et al. 2018) compares two images through the activations of a pretrained network.
No weights are downloaded here, so the feature network is a bundled model trained on synthetic
brains: the encoder of the synthetic-anomaly segmenter (``segmenter``), whose features were
learned to tell lesion-like structure from healthy tissue. At each of its first ``levels``
resolutions (2, 4, 8 model voxels), the feature vector of every pixel is scaled to unit length, the
squared difference between image and reconstruction summed over channels (LPIPS without its
learned channel weights), brought back to the slice's resolution and averaged over levels.

The feature model is named in the scoring block with the SHA-256 of its weights: a scoring
calibrated with one feature network refuses to run with another.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import ModelError
from .networks import load_networks, predict_volume

DEFAULT_FEATURE_MODEL = "segmenter"
DEFAULT_LEVELS = 3


def perceptual_settings(feature_model: str = DEFAULT_FEATURE_MODEL) -> dict:
    """The scoring-block entries of the perceptual score: the feature model, pinned to its weights."""
    from ...bundle import find_bundle

    bundle = find_bundle(feature_model)
    if bundle.family != "segmenter":
        raise ModelError(f"the perceptual score reads a segmenter's encoder; '{feature_model}' is a "
                         f"{bundle.family} model — give a segmenter bundle.")
    return {"feature_model": feature_model, "feature_model_sha256": bundle.metadata["weights"]["sha256"],
            "feature_levels": DEFAULT_LEVELS}


def encoder_features(unet: nn.Module, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The outputs of the first ``levels`` down-sampling blocks of a MONAI U-Net."""
    features, block = [], unet.model
    while len(features) < levels and isinstance(block, nn.Sequential) and len(block) == 3:
        x = block[0](x)  # a MONAI U-Net level: (down, SkipConnection(deeper levels), up)
        features.append(x)
        block = block[1].submodule
    return features


def unit_length(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-6)


class FeatureDistance:
    """``distance(image, reconstruction, mask)``: the perceptual distance map of two prepared volumes."""

    def __init__(self, scoring: dict, device: str = "cpu"):
        from ...bundle import find_bundle

        name = scoring.get("feature_model", DEFAULT_FEATURE_MODEL)
        bundle = find_bundle(name)
        expected = scoring.get("feature_model_sha256")
        actual = (bundle.metadata.get("weights") or {}).get("sha256")
        if expected and actual != expected:
            raise ModelError(f"the perceptual score was calibrated with other weights of '{name}' than "
                             f"the installed ones — rescore the model (uadbrain rescore).")
        networks = load_networks(bundle, device)
        self.unet = next(iter(networks.values())).unet
        self.context = bundle.metadata["network"]["context"]
        self.levels = int(scoring.get("feature_levels", DEFAULT_LEVELS))
        self.device = device

    def _batch_distance(self, paired: torch.Tensor) -> torch.Tensor:
        half = paired.shape[1] // 2
        image, reconstruction = encoder_features(self.unet, paired[:, :half], self.levels), \
            encoder_features(self.unet, paired[:, half:], self.levels)
        total = torch.zeros((paired.shape[0], 1, *paired.shape[2:]), device=paired.device)
        for a, b in zip(image, reconstruction):
            distance = ((unit_length(a) - unit_length(b)) ** 2).sum(dim=1, keepdim=True)
            total += nn.functional.interpolate(distance, size=paired.shape[2:], mode="bilinear", align_corners=False)
        return total / len(image)

    def distance(self, image: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return predict_volume(self._batch_distance, image, mask, self.context, self.device, paired=reconstruction)
