"""Denoising autoencoder (Kascenas et al. 2022): a U-Net trained to remove coarse noise.

Trained on healthy brains only, the network restores healthy tissue; what it cannot restore —
a lesion it never saw — remains in the residual ``image − reconstruction``. The score is that
residual in the direction lesions take on the contrast (bright on FLAIR/T2, dark on T1, either
on T1c), or a structural-dissimilarity score over several window sizes (Behrendt et al. 2024),
as the bundle's ``scoring`` says. One U-Net per contrast, or one shared by all contrasts (the
head :data:`SHARED_HEAD`); each contrast is a channel that the pipeline calibrates and fuses.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import AnomalyModel, ModelOutput
from .networks import SliceNetworkModel
from .thresholding import DEFAULT_DIRECTIONS, directional_score

SCORES = ("residual", "ssim")
SHARED_HEAD = "dae"  # the network's name when one network restores every contrast
DEFAULT_SSIM_WINDOWS = (3, 5, 7, 11)
SSIM_RANGE = 10.0  # normalised units; sets SSIM's stabilising constants


def ssim_dissimilarity(image: np.ndarray, reconstruction: np.ndarray, windows=DEFAULT_SSIM_WINDOWS) -> np.ndarray:
    """``1 − SSIM`` per voxel (2D windows within each axial slice), averaged over window sizes."""
    c1, c2 = (0.01 * SSIM_RANGE) ** 2, (0.03 * SSIM_RANGE) ** 2
    x, y = image.astype(np.float64), reconstruction.astype(np.float64)
    total = np.zeros(image.shape)
    for window in windows:
        mean = lambda a: ndimage.uniform_filter(a, size=(1, window, window))  # noqa: E731
        mx, my = mean(x), mean(y)
        vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
        ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        total += 1.0 - ssim
    return (total / len(windows)).astype(np.float32)


def anomaly_score(image: np.ndarray, reconstruction: np.ndarray, direction: str, score: str = "residual",
                  windows=DEFAULT_SSIM_WINDOWS) -> np.ndarray:
    residual = directional_score(image - reconstruction, direction)
    if score == "residual":
        return residual.astype(np.float32)
    if score == "ssim":  # dissimilarity where the residual goes the lesion way
        return np.where(residual > 0, ssim_dissimilarity(image, reconstruction, windows), 0.0).astype(np.float32)
    raise ValueError(f"unknown score '{score}' (known: {', '.join(SCORES)})")


class DenoisingAutoencoder(SliceNetworkModel, AnomalyModel):
    shared_head = SHARED_HEAD

    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self._load()

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        scoring = self.bundle.metadata.get("scoring", {})
        directions = {**DEFAULT_DIRECTIONS, **scoring.get("direction", {})}
        score = scoring.get("score", "residual")
        windows = scoring.get("ssim_windows", DEFAULT_SSIM_WINDOWS)
        head_for = lambda contrast: contrast if contrast in self.networks else self.shared_head  # noqa: E731
        results = self._run_per_contrast(head_for, images, brain_mask, "reconstructing",
                                         progress, is_cancelled)
        maps, reconstructions = {}, {}
        for contrast, (prepared, reconstruction) in results.items():
            reconstruction = np.where(brain_mask, reconstruction, 0.0).astype(np.float32)
            maps[contrast] = np.where(brain_mask, anomaly_score(prepared, reconstruction, directions[contrast],
                                                                score, windows), 0.0).astype(np.float32)
            reconstructions[contrast] = reconstruction
        return ModelOutput(contrast_maps=maps, reconstructions=reconstructions)
