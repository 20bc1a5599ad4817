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
BACKBONE_FAMILIES = ("segmenter", "dae")  # bundles whose network is a MONAI U-Net on slice inputs


def backbone_settings(feature_model: str, purpose: str = "the perceptual score") -> dict:
    """The bundle entries that pin a feature network: its name and the SHA-256 of its weights."""
    from ...bundle import find_bundle

    bundle = find_bundle(feature_model)
    if bundle.family not in BACKBONE_FAMILIES:
        raise ModelError(f"{purpose} reads the encoder of a {' or '.join(BACKBONE_FAMILIES)} model; "
                         f"'{feature_model}' is a {bundle.family} model — give one of those bundles.")
    return {"feature_model": feature_model, "feature_model_sha256": bundle.metadata["weights"]["sha256"]}


def perceptual_settings(feature_model: str = DEFAULT_FEATURE_MODEL) -> dict:
    """The scoring-block entries of the perceptual score: the feature model, pinned to its weights."""
    return {**backbone_settings(feature_model), "feature_levels": DEFAULT_LEVELS}


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


def feature_discrepancy(first: list[torch.Tensor], second: list[torch.Tensor], size) -> torch.Tensor:
    """Per pixel, ``|a/|a| − b/|b||²`` of two networks' (or two images') features at each level,
    brought to ``size`` and averaged over the levels: ``[n, 1, *size]``."""
    total = 0.0
    for a, b in zip(first, second):
        distance = ((unit_length(a) - unit_length(b)) ** 2).sum(dim=1, keepdim=True)
        total = total + nn.functional.interpolate(distance, size=size, mode="bilinear", align_corners=False)
    return total / len(first)


class FeatureBackbone:
    """The encoder of the bundled U-Net a bundle's ``feature_model`` names, refused when its
    weights are not those the bundle was made with (``feature_model_sha256``)."""

    def __init__(self, settings: dict, device: str = "cpu", purpose: str = "the perceptual score",
                 remedy: str = "rescore the model (uadbrain rescore)"):
        from ...bundle import find_bundle

        name = settings.get("feature_model", DEFAULT_FEATURE_MODEL)
        bundle = find_bundle(name)
        expected = settings.get("feature_model_sha256")
        actual = (bundle.metadata.get("weights") or {}).get("sha256")
        if expected and actual != expected:
            raise ModelError(f"{purpose} was made with other weights of '{name}' than the installed ones — "
                             f"{remedy}.")
        self.unet = next(iter(load_networks(bundle, device).values())).unet
        self.context = bundle.metadata["network"]["context"]
        self.device = device

    def features(self, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
        return encoder_features(self.unet, x, levels)


class FeatureDistance(FeatureBackbone):
    """``distance(image, reconstruction, mask)``: the perceptual distance map of two prepared volumes."""

    def __init__(self, scoring: dict, device: str = "cpu"):
        super().__init__(scoring, device)
        self.levels = int(scoring.get("feature_levels", DEFAULT_LEVELS))

    def _batch_distance(self, paired: torch.Tensor) -> torch.Tensor:
        half = paired.shape[1] // 2
        return feature_discrepancy(self.features(paired[:, :half], self.levels),
                                   self.features(paired[:, half:], self.levels), paired.shape[2:])

    def distance(self, image: np.ndarray, reconstruction: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return predict_volume(self._batch_distance, image, mask, self.context, self.device, paired=reconstruction)
