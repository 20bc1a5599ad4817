"""How reconstructions become an anomaly score: the bundle's ``scoring.score``.

Every reconstruction family (denoising autoencoder, autoencoders, diffusion) is scored by one of:

* ``residual`` — ``image − reconstruction`` in the direction lesions take on the contrast (bright
  on FLAIR/T2, dark on T1, either on T1c): the L1 residual of the literature, signed.
* ``ssim`` — ``1 − SSIM`` in one 11-pixel window (Wang et al. 2004).
* ``ssim-ens`` — the mean ``1 − SSIM`` over windows of 3, 5, 7 and 11 pixels and, for the diffusion
  model, over reconstructions from several noise levels (Behrendt et al. 2024b).
* ``perceptual`` — an LPIPS-style distance (Zhang et al. 2018) between the feature maps of image
  and reconstruction in a network trained here on synthetic brains (``features.FeatureDistance``).
* ``mahalanobis`` — several stochastic reconstructions (the diffusion model with different noise
  levels and seeds); the voxel-wise distance of the image to their distribution, ``(image − mean) /
  sd`` in the lesion direction (Behrendt et al. 2024c).
* ``kl-combined`` — variational autoencoders: the residual times the smoothed magnitude of the
  gradient of the KL term with respect to the input (Zimmerer et al. 2019, the ceVAE's score).

The structural scores count only where the residual goes the lesion way, so that a dark spot on
FLAIR is not flagged. With several reconstructions, ``residual`` and ``perceptual`` use their mean.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from .thresholding import directional_score

SCORES = ("residual", "ssim", "ssim-ens", "perceptual", "mahalanobis", "kl-combined")
FAMILY_SCORES = {"mahalanobis": ("diffusion",), "kl-combined": ("vae",)}  # scores only these families compute
ENSEMBLE_SCORES = ("ssim-ens", "mahalanobis")  # the scores a diffusion model feeds several reconstructions
SSIM_WINDOW = 11
SSIM_ENSEMBLE_WINDOWS = (3, 5, 7, 11)
SSIM_RANGE = 10.0  # normalised units; sets SSIM's stabilising constants
MAHALANOBIS_FLOOR = 0.1  # normalised units: the least spread credited to the reconstructions
KL_GRADIENT_SMOOTHING_MM = 2.0  # Gaussian sigma applied to the KL gradient's magnitude (it is noisy per pixel)


def score_refusal(score: str, family: str) -> str | None:
    """Why a ``family`` model cannot compute ``score``, or None when it can."""
    if score not in SCORES:
        return f"score '{score}' is unknown (known: {', '.join(SCORES)})"
    families = FAMILY_SCORES.get(score)
    if families and family not in families:
        return (f"the {score} score needs a {' or '.join(families)} model "
                f"({'several reconstructions of one scan' if score == 'mahalanobis' else 'a KL term'}), "
                f"not a {family} model")
    return None


def score_settings(score: str, feature_model: str | None = None) -> dict:
    """The scoring block's entries for ``score``: its name, and the feature model of ``perceptual``."""
    if score != "perceptual":
        return {"score": score}
    from .features import DEFAULT_FEATURE_MODEL, perceptual_settings

    return {"score": score, **perceptual_settings(feature_model or DEFAULT_FEATURE_MODEL)}


def ssim_dissimilarity(image: np.ndarray, reconstruction: np.ndarray, windows=SSIM_ENSEMBLE_WINDOWS) -> np.ndarray:
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


def mahalanobis_score(image: np.ndarray, reconstructions: Sequence[np.ndarray], direction: str) -> np.ndarray:
    """``(image − mean) / sd`` of the reconstructions, per voxel, in the lesion direction."""
    stack = np.stack(reconstructions).astype(np.float32)
    spread = np.maximum(stack.std(axis=0), MAHALANOBIS_FLOOR)
    return directional_score((image - stack.mean(axis=0)) / spread, direction).astype(np.float32)


def score_outputs(score: str, image: np.ndarray, outputs: Sequence[np.ndarray], direction: str,
                  spacing_mm: float, feature_distance=None) -> tuple[np.ndarray, np.ndarray]:
    """``(score map, reconstruction)`` from a model's outputs: its reconstruction(s), or for
    ``kl-combined`` the reconstruction and the KL term's gradient."""
    if score == "kl-combined":
        reconstruction, gradient = outputs
        smoothed = ndimage.gaussian_filter(np.abs(gradient), (0.0, *[KL_GRADIENT_SMOOTHING_MM / spacing_mm] * 2))
        return (directional_score(image - reconstruction, direction) * smoothed).astype(np.float32), reconstruction
    mean = outputs[0] if len(outputs) == 1 else np.mean(outputs, axis=0).astype(np.float32)
    return anomaly_score(image, list(outputs), direction, score, feature_distance), mean


def anomaly_score(image: np.ndarray, reconstructions: np.ndarray | Sequence[np.ndarray], direction: str,
                  score: str = "residual",
                  feature_distance: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The ``score`` of ``image`` given one reconstruction or several (a list).

    ``feature_distance(image, reconstruction)`` computes the perceptual distance.
    """
    several = list(reconstructions) if isinstance(reconstructions, (list, tuple)) else [reconstructions]
    if score == "mahalanobis":
        if len(several) < 2:
            raise ValueError("the Mahalanobis score needs several reconstructions")
        return mahalanobis_score(image, several, direction)
    mean = several[0] if len(several) == 1 else np.mean(several, axis=0)
    residual = directional_score(image - mean, direction)
    if score == "residual":
        return residual.astype(np.float32)
    if score == "ssim":
        structure = ssim_dissimilarity(image, mean, (SSIM_WINDOW,))
    elif score == "ssim-ens":
        structure = np.mean([ssim_dissimilarity(image, r) for r in several], axis=0)
    elif score == "perceptual":
        if feature_distance is None:
            raise ValueError("the perceptual score needs a feature network")
        structure = feature_distance(image, mean)
    else:
        raise ValueError(f"unknown score '{score}' (known: {', '.join(SCORES)})")
    return np.where(residual > 0, structure, 0.0).astype(np.float32)
