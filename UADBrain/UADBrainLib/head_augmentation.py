"""Training-time augmentation of synthetic whole heads for the brain extractor.

The generator (``synthesis.py``) draws anatomy, contrast, pose, resolution, bias and noise; this
module adds what a scanner's field of view and a user's earlier processing do to a head: cut-offs
at the edge of the scanned region, skull-stripped inputs (with a zero or a z-score-like constant
background), left-right flips and a global intensity gamma. Every function takes and returns a
:class:`HeadSample` on the same canonical grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from .brainmask_net import normalise_head


@dataclasses.dataclass
class HeadSample:
    """A head image, its brain mask and the region inside the scanned field of view."""

    image: np.ndarray  # float32 [S, P, L], raw intensities
    mask: np.ndarray  # bool, brain tissue + CSF inside the skull
    valid: np.ndarray  # bool, voxels inside the field of view


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
    cut_probability: float = 0.35  # field of view ends inside the head
    cut_depth: tuple[float, float] = (0.05, 0.35)  # share of the brain's extent removed
    skull_strip_probability: float = 0.12
    strip_dilation_voxels: tuple[int, int] = (-1, 2)  # imperfect earlier skull stripping
    constant_background_probability: float = 0.5  # of stripped images: background = brain quantile
    flip_probability: float = 0.5  # left-right
    gamma_probability: float = 0.5
    gamma_log_sd: float = 0.3


def cut_field_of_view(sample: HeadSample, rng: np.random.Generator,
                      depth: tuple[float, float]) -> HeadSample:
    """Remove everything beyond a plane crossing the brain along one axis (one side)."""
    axis = int(rng.integers(3))
    extent = np.flatnonzero(sample.mask.any(axis=tuple(a for a in range(3) if a != axis)))
    if extent.size == 0:
        return sample
    removed = int(round(rng.uniform(*depth) * (extent[-1] - extent[0] + 1)))
    keep = np.ones(sample.image.shape[axis], bool)
    if rng.random() < 0.5:
        keep[:extent[0] + removed] = False
    else:
        keep[extent[-1] + 1 - removed:] = False
    shape = [1, 1, 1]
    shape[axis] = -1
    keep = keep.reshape(shape)
    return HeadSample(np.where(keep, sample.image, 0).astype(np.float32), sample.mask & keep,
                      sample.valid & keep)


def skull_strip(sample: HeadSample, rng: np.random.Generator, config: AugmentationConfig) -> HeadSample:
    """The head as an earlier brain extraction left it: constant outside a (dilated/eroded) mask."""
    radius = int(rng.integers(config.strip_dilation_voxels[0], config.strip_dilation_voxels[1] + 1))
    kept = sample.mask
    if radius > 0:
        kept = ndimage.binary_dilation(kept, iterations=radius)
    elif radius < 0:
        kept = ndimage.binary_erosion(kept, iterations=-radius)
    background = 0.0
    if rng.random() < config.constant_background_probability and kept.any():
        # z-scored scans (e.g. BraTS) keep 0 outside, which lies inside the brain's own range
        background = float(np.quantile(sample.image[kept], rng.uniform(0.0, 0.6)))
    image = np.where(kept, sample.image, background).astype(np.float32)
    return HeadSample(image, sample.mask, sample.valid)


def augment(sample: HeadSample, rng: np.random.Generator,
            config: AugmentationConfig = AugmentationConfig()) -> HeadSample:
    if rng.random() < config.skull_strip_probability:
        sample = skull_strip(sample, rng, config)
    if rng.random() < config.cut_probability:
        sample = cut_field_of_view(sample, rng, config.cut_depth)
    if rng.random() < config.flip_probability:
        sample = HeadSample(*(np.ascontiguousarray(a[:, :, ::-1]) for a in
                              (sample.image, sample.mask, sample.valid)))
    return sample


def network_input(sample: HeadSample, rng: np.random.Generator,
                  config: AugmentationConfig = AugmentationConfig()) -> np.ndarray:
    """The normalised network input, exactly as inference prepares it, plus a random gamma."""
    array = normalise_head(sample.image, sample.valid)
    if rng.random() < config.gamma_probability:
        array = array ** np.float32(np.exp(rng.normal(0.0, config.gamma_log_sd)))
    return array.astype(np.float32)
