"""Anatomy-aware normative model: each voxel against the intensity its own tissue has in this scan.

A small 3D U-Net, trained only on synthetic brains of random contrast with synthetic anomalies
whose voxels keep the label of the tissue they replaced (``training/tissue.py``, the SynthSeg idea),
says where CSF, cortical grey matter, deep grey matter and white matter are — also under a lesion.
The scan's own robust statistics per tissue (median and MAD of the voxels the network is sure of)
give each voxel the intensity and spread healthy tissue of its mix would have; the score is the
deviation from it in the direction lesions take on the contrast. FLAIR-bright cortex and
T2-bright CSF then stop competing with white-matter lesions, and the scale is the contrast between
tissues of this scan, not the spread of the whole brain, so it does not drift with voxel size.

The network sees the scan at ``network_spacing_mm`` (2 mm); its probabilities are interpolated onto
the model grid (1 mm), where the intensities are compared, so small lesions keep their resolution.
"""

from __future__ import annotations

import numpy as np

from ...errors import ModelError
from .base import AnomalyModel, ModelOutput
from .thresholding import DEFAULT_DIRECTIONS, directional_score

TISSUE_CLASSES = ("outside", "csf", "cortical_grey_matter", "deep_grey_matter", "white_matter")
SURE_PROBABILITY = 0.8  # voxels that define a tissue's statistics in this scan
MIN_SURE_VOXELS = 50
MAD_TO_SD = 1.4826


def downsample(array: np.ndarray, factor: int) -> np.ndarray:
    """Block average by an integer factor (the array is zero-padded up to a multiple)."""
    if factor == 1:
        return array.astype(np.float32)
    pads = [(0, (-n) % factor) for n in array.shape]
    padded = np.pad(array.astype(np.float32), pads)
    shape = [n // factor for n in padded.shape]
    return padded.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def upsample(probabilities: np.ndarray, factor: int, shape) -> np.ndarray:
    """Class probabilities ``[C, ...]`` from the block grid back onto the fine grid of ``shape``
    (trilinear; block centres sit where :func:`downsample` put them)."""
    import torch
    import torch.nn.functional as F

    if factor == 1:
        return probabilities[(slice(None),) + tuple(slice(0, n) for n in shape)]
    tensor = torch.from_numpy(np.ascontiguousarray(probabilities))[None]
    fine = F.interpolate(tensor, scale_factor=factor, mode="trilinear", align_corners=False)[0]
    return fine[(slice(None),) + tuple(slice(0, n) for n in shape)].numpy()


def network_input(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the tissue network sees (training and inference alike): [0, 1] by robust percentiles
    of the brain, zero outside it."""
    from ..brainmask_net import normalise_head

    return normalise_head(array, mask)


def _median_and_sd(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation (at least 1e-3)."""
    median = float(np.median(values))
    return median, max(MAD_TO_SD * float(np.median(np.abs(values - median))), 1e-3)


def tissue_statistics(image: np.ndarray, probabilities: np.ndarray, brain: np.ndarray):
    """Robust ``(median, sd)`` per tissue class of this scan (index 0, outside, unused); a class
    with too few sure voxels borrows the statistics of the whole brain."""
    brain_median, brain_sd = _median_and_sd(image[brain])
    medians = np.full(len(probabilities), brain_median, np.float32)
    sds = np.full(len(probabilities), brain_sd, np.float32)
    for index in range(1, len(probabilities)):
        values = image[brain & (probabilities[index] >= SURE_PROBABILITY)]
        if values.size >= MIN_SURE_VOXELS:
            medians[index], sds[index] = _median_and_sd(values)
    return medians, sds


def tissue_deviation(image: np.ndarray, probabilities: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``(intensity − expected) / expected spread``, both mixed from the tissues' statistics by
    the voxel's tissue probabilities (renormalised inside the brain)."""
    medians, sds = tissue_statistics(image, probabilities, brain)
    inside = probabilities[1:]
    total = np.maximum(inside.sum(axis=0), 1e-3)
    expected = np.tensordot(medians[1:], inside, axes=1) / total
    spread = np.maximum(np.tensordot(sds[1:], inside, axes=1) / total, 1e-3)
    return np.where(brain, (image - expected) / spread, 0.0).astype(np.float32)


class TissueNormativeModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        from ..brainmask_net import build_network

        tissue = bundle.metadata.get("tissue_network") or {}
        if tuple(tissue.get("classes", ())) != TISSUE_CLASSES:
            raise ModelError(f"model '{bundle.name}': its tissue classes {tissue.get('classes')} are not "
                             f"those this version of UADBrain scores with — update UADBrain or retrain.")
        self.network_spacing = float(tissue.get("spacing_mm", 2.0))
        self.network = bundle.load_weights_into(build_network(bundle.metadata["network"]), device)

    def tissue_probabilities(self, image: np.ndarray, brain: np.ndarray, spacing) -> np.ndarray:
        """Tissue class probabilities ``[C, S, P, L]`` on the model grid."""
        import torch

        from ..brainmask_net import pad_for_network

        factor = max(1, int(round(self.network_spacing / float(min(spacing)))))
        coarse_brain = downsample(brain, factor) >= 0.5
        coarse = network_input(downsample(image, factor), coarse_brain)
        padded, crop = pad_for_network(coarse)
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(padded)[None, None].to(self.device))
            probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        probabilities = probabilities[(slice(None),) + crop]
        return upsample(probabilities, factor, image.shape)

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        """Each contrast against its tissues; with several contrasts of one patient the tissue
        probabilities are their average (one anatomy, seen through every contrast)."""
        directions = {**DEFAULT_DIRECTIONS, **self.bundle.metadata.get("scoring", {}).get("direction", {})}
        probabilities = None
        for index, image in enumerate(images.values()):
            if is_cancelled and is_cancelled():
                return ModelOutput(contrast_maps={})
            estimate = self.tissue_probabilities(image, brain_mask, spacing)
            probabilities = estimate if probabilities is None else probabilities + estimate
            if progress:
                progress((index + 1) / (len(images) + 1), "tissues")
        probabilities /= len(images)
        contrast_maps = {contrast: directional_score(tissue_deviation(image, probabilities, brain_mask),
                                                     directions[contrast]).astype(np.float32)
                         for contrast, image in images.items()}
        if progress:
            progress(1.0, "tissue-normative scores")
        return ModelOutput(contrast_maps=contrast_maps)
