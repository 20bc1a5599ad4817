"""Gaussian feature density in the manner of PaDiM (Defard et al. 2021), in the template's frame.

PaDiM keeps one multivariate Gaussian of a pretrained network's features per image position and
scores a pixel by the Mahalanobis distance of its feature. Brains are not aligned like the
industrial images PaDiM was made for, so "position" is a cell of ``cell_mm`` in the ICBM152
template that the brain is registered to (``template.py``, the voxel-wise normative model's frame):
every voxel's patch feature (PatchCore's, ``patchcore.patch_features``, on the encoder of a U-Net
trained here) is compared with the Gaussian of healthy features seen in its cell. PaDiM's random
dimension reduction keeps ``FEATURE_DIMS`` of the feature channels. The Gaussians are fitted on a
healthy cohort (``training/tasks/padim.py``) and stored as the Cholesky factor of each cell's
precision matrix, so that the distance is ``|L^T (x - mean)|``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...template import template_indices
from .base import AnomalyModel, ModelOutput
from .features import FeatureBackbone
from .networks import CLIP, predict_volume, prepare
from .patchcore import patch_features

ARCHITECTURE = "uadbrain.PaDiM"
FEATURE_DIMS = 32
CELL_MM = 12.0
VOXEL_CHUNK = 16384


def feature_channels(total: int, seed: int = 0) -> list[int]:
    """PaDiM's random choice of ``FEATURE_DIMS`` of ``total`` feature channels (sorted, fixed seed)."""
    return sorted(np.random.default_rng(seed).choice(total, size=min(FEATURE_DIMS, total), replace=False).tolist())


def network_spec(feature_model_settings: dict, context: int, total_channels: int) -> dict:
    from ...template import template_image
    from .normative import network_spec as template_spec

    frame = template_spec()  # the template and the box the cells tile
    cells = [int(np.ceil(n * template_image().GetSpacing()[0] / CELL_MM)) for n in frame["box_size"]]
    return {**frame, "architecture": ARCHITECTURE, **feature_model_settings, "context": context,
            "feature_channels": feature_channels(total_channels), "cell_mm": CELL_MM, "cell_grid": cells}


def feature_volume(backbone: FeatureBackbone, image: np.ndarray, mask: np.ndarray, channels: list[int],
                   device: str = "cpu", is_cancelled=None) -> np.ndarray:
    """The chosen patch-feature channels of every voxel, ``[C, S, P, L]``, at the slice's resolution."""
    def forward(inputs):
        features = patch_features(backbone, inputs)[:, channels]
        return torch.nn.functional.interpolate(features, size=inputs.shape[2:], mode="bilinear", align_corners=False)

    with torch.inference_mode():
        return predict_volume(forward, prepare(image, mask, CLIP), mask, backbone.context, device,
                              channels=len(channels), is_cancelled=is_cancelled)


def voxel_cells(shape, spacing, transform, network: dict) -> np.ndarray:
    """Each voxel's cell in the template box (flat index into ``cell_grid``), clipped to the grid."""
    from ...template import template_image

    indices = template_indices(shape, spacing, transform)[..., ::-1]  # (k, j, i), the cell grid's order
    voxels_per_cell = network["cell_mm"] / template_image().GetSpacing()[0]
    grid = network["cell_grid"][::-1]
    cells = np.floor((indices - np.array(network["box_start"][::-1])) / voxels_per_cell).astype(np.int64)
    cells = np.clip(cells, 0, np.array(grid) - 1)
    return np.ravel_multi_index(np.moveaxis(cells, -1, 0), grid)


def mahalanobis(features: torch.Tensor, rows: torch.Tensor, means: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``|L^T (x - mean)|`` of each feature ``[N, C]`` with its cell's row of ``means`` and ``factors``."""
    distances = []
    for chunk, chunk_rows in zip(features.split(VOXEL_CHUNK), rows.split(VOXEL_CHUNK)):
        centred = chunk - means[chunk_rows]
        distances.append(torch.einsum("nc,ncd->nd", centred, factors[chunk_rows]).square().sum(dim=1).sqrt())
    return torch.cat(distances) if distances else torch.zeros(0)


def padim_scores(images, mask, spacing, backbone: FeatureBackbone, statistics: dict, network: dict,
                 device: str = "cpu", is_cancelled=None) -> dict[str, np.ndarray]:
    from ...template import register_brain

    cells = voxel_cells(mask.shape, spacing, register_brain(mask, spacing), network)[mask]
    maps = {}
    for contrast, image in images.items():
        features = feature_volume(backbone, image, mask, network["feature_channels"], device, is_cancelled)
        rows = statistics[f"{contrast}.cell_rows"].long()[torch.from_numpy(cells)]
        score = np.zeros(mask.shape, np.float32)
        score[mask] = mahalanobis(torch.from_numpy(features[:, mask].T.copy()), rows,
                                  statistics[f"{contrast}.means"], statistics[f"{contrast}.factors"]).numpy()
        maps[contrast] = score
    return maps


class GaussianFeatureModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        from .normative import check_template

        self.network = bundle.metadata["network"]
        check_template(bundle)
        self.backbone = FeatureBackbone(self.network, device, purpose=f"model '{bundle.name}'",
                                        remedy="refit it (uadbrain train --model padim)")
        state = torch.load(bundle.verified_weights_path(), map_location="cpu", weights_only=True)
        self.statistics = {key: (value if key.endswith(".cell_rows") else value.float()) for key, value in state.items()}

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        if progress:
            progress(0.1, "feature Gaussians")
        maps = padim_scores(images, brain_mask, spacing, self.backbone, self.statistics, self.network,
                            self.device, is_cancelled)
        if progress:
            progress(1.0, "Mahalanobis distances")
        return ModelOutput(contrast_maps=maps)
