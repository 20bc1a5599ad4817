"""PatchCore (Roth et al. 2022): distance to the nearest healthy patch feature.

No ImageNet weights can be downloaded here, so the feature network is the encoder of a U-Net
trained in this project on synthetic brains (the bundle's ``feature_model``: the synthetic-anomaly
segmenter or the denoising autoencoder). A pixel's patch feature is the encoder's output at its
first two resolutions (2 and 4 model voxels), each averaged over its 3 x 3 neighbourhood, the
coarser brought up to the finer and the two concatenated. A memory bank per contrast holds a
greedy coreset of the features of healthy brains (``training/tasks/patchcore.py``); a pixel's score
is the Euclidean distance of its feature to the nearest one in the bank, brought back to the
slice's resolution. The bank does not know where in the brain a feature was seen: a feature that
is healthy anywhere counts as healthy everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import AnomalyModel, ModelOutput
from .features import FeatureBackbone
from .networks import CLIP, predict_volume, prepare

ARCHITECTURE = "uadbrain.PatchCore"
FEATURE_LEVELS = 2
NEIGHBOURHOOD = 3  # PatchCore's local aggregation: average over this many feature positions per side
QUERY_CHUNK = 8192


def patch_features(backbone: FeatureBackbone, inputs: torch.Tensor) -> torch.Tensor:
    """Patch features ``[n, C, h, w]`` at the encoder's first resolution."""
    pooled = [F.avg_pool2d(level, NEIGHBOURHOOD, stride=1, padding=NEIGHBOURHOOD // 2)
              for level in backbone.features(inputs, FEATURE_LEVELS)]
    size = pooled[0].shape[2:]
    return torch.cat([pooled[0]] + [F.interpolate(p, size=size, mode="bilinear", align_corners=False)
                                    for p in pooled[1:]], dim=1)


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each query ``[N, C]`` to its nearest bank vector ``[K, C]``."""
    return torch.cat([torch.cdist(chunk, bank).amin(dim=1) for chunk in queries.split(QUERY_CHUNK)])


def brain_feature_mask(inputs: torch.Tensor, size) -> torch.Tensor:
    """Which feature positions lie mostly in the brain (the inputs' last channel is the mask)."""
    return F.adaptive_avg_pool2d(inputs[:, -1:], size)[:, 0] >= 0.5


def network_spec(feature_model_settings: dict, context: int) -> dict:
    return {"architecture": ARCHITECTURE, **feature_model_settings, "context": context,
            "feature_levels": FEATURE_LEVELS, "neighbourhood": NEIGHBOURHOOD}


class PatchScorer:
    """``forward(slice inputs)``: each pixel's distance to a contrast's memory bank."""

    def __init__(self, backbone: FeatureBackbone, bank: torch.Tensor):
        self.backbone, self.bank = backbone, bank

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        features = patch_features(self.backbone, inputs)
        n, channels, height, width = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, channels)
        distances = nearest_distance(queries, self.bank).reshape(n, 1, height, width)
        return F.interpolate(distances, size=inputs.shape[2:], mode="bilinear", align_corners=False)


def patchcore_scores(images: dict[str, np.ndarray], mask: np.ndarray, backbone: FeatureBackbone,
                     banks: dict[str, torch.Tensor], device: str = "cpu", progress=None,
                     is_cancelled=None) -> dict[str, np.ndarray]:
    maps = {}
    for index, (contrast, image) in enumerate(images.items()):
        report = (lambda f, i=index, c=contrast: progress((i + f) / len(images), f"patch distances {c}")) \
            if progress else None
        distances = predict_volume(PatchScorer(backbone, banks[contrast]), prepare(image, mask, CLIP), mask,
                                   backbone.context, device, progress=report, is_cancelled=is_cancelled)
        maps[contrast] = np.where(mask, distances, 0.0).astype(np.float32)
    return maps


class PatchCoreModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self.backbone = FeatureBackbone(bundle.metadata["network"], device, purpose=f"model '{bundle.name}'",
                                        remedy="refit it (uadbrain train --model patchcore)")
        state = torch.load(bundle.verified_weights_path(), map_location="cpu", weights_only=True)
        self.banks = {key.removesuffix(".bank"): value.float().to(device) for key, value in state.items()}

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        with torch.inference_mode():
            maps = patchcore_scores(images, brain_mask, self.backbone, self.banks, self.device, progress,
                                    is_cancelled)
        return ModelOutput(contrast_maps=maps)
