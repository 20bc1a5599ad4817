"""Training-time augmentation of synthetic whole heads for the brain extractor.

The generator (``synthesis/brains.py``) draws anatomy, contrast, pose, resolution, bias and noise; this
module adds what a scanner's field of view and a user's earlier processing do to a head: smaller
and off-centre fields of view, cut-offs inside the brain, skull-stripped inputs (zero or z-score-like
constant background, often in a field of view hugging the brain), left-right flips, an empty border
of random width (so that the network cannot use the distance to the array border as a cue) and a
global intensity gamma. Every function takes and returns a :class:`HeadSample` (crops make it smaller).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..inference.brainmask_net import normalise_head


@dataclasses.dataclass
class HeadSample:
    """A head image, its brain mask and the region inside the scanned field of view."""

    image: np.ndarray  # float32 [S, P, L], raw intensities
    mask: np.ndarray  # bool, brain tissue + CSF inside the skull
    valid: np.ndarray  # bool, voxels inside the field of view


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
    skull_strip_probability: float = 0.3
    constant_background_probability: float = 0.5  # of stripped images: background = brain quantile
    tight_crop_probability: float = 0.7  # of stripped images: field of view hugs the brain
    tight_margin_voxels: tuple[int, int] = (-2, 6)  # per side; negative cuts into the brain
    crop_probability: float = 0.5  # of raw heads: the brain off-centre in a smaller field of view
    crop_fraction: float = 0.2  # at most this share of each axis removed per side
    cut_probability: float = 0.3  # field of view ends inside the brain
    cut_depth: tuple[float, float] = (0.05, 0.35)  # share of the brain's extent removed
    flip_probability: float = 0.5  # left-right
    margin_voxels: int = 16  # empty border of 0 to this many voxels per side (inference uses half)
    gamma_probability: float = 0.5
    gamma_log_sd: float = 0.3


MIN_SIZE_VOXELS = 16


def crop(sample: HeadSample, low, high) -> HeadSample:
    """The sample inside [low, high) per axis (array order), at least MIN_SIZE_VOXELS wide."""
    bounds = []
    for lo, hi, n in zip(low, high, sample.image.shape):
        lo, hi = max(int(lo), 0), min(int(hi), n)
        if hi - lo < MIN_SIZE_VOXELS:
            lo, hi = 0, n
        bounds.append(slice(lo, hi))
    region = tuple(bounds)
    return HeadSample(*(np.ascontiguousarray(a[region]) for a in
                        (sample.image, sample.mask, sample.valid)))


def crop_around_brain(sample: HeadSample, rng: np.random.Generator,
                      margin_voxels: tuple[int, int]) -> HeadSample:
    """A field of view hugging the brain, as in skull-stripped datasets (BraTS, MNI space)."""
    index = np.argwhere(sample.mask)
    if index.size == 0:
        return sample
    margins = rng.integers(margin_voxels[0], margin_voxels[1] + 1, size=(2, 3))
    return crop(sample, index.min(axis=0) - margins[0], index.max(axis=0) + 1 + margins[1])


def random_crop(sample: HeadSample, rng: np.random.Generator, fraction: float) -> HeadSample:
    """Remove a random share (up to ``fraction``) of each axis on each side."""
    shape = np.array(sample.image.shape)
    low = (rng.uniform(0, fraction, 3) * shape).astype(int)
    high = shape - (rng.uniform(0, fraction, 3) * shape).astype(int)
    return crop(sample, low, high)


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
    """The head as an earlier brain extraction left it: a constant outside the brain mask.

    The background is 0, or (z-scored scans such as BraTS keep 0 outside, which lies inside the
    brain's own range) a random brain intensity quantile.
    """
    background = 0.0
    if rng.random() < config.constant_background_probability and sample.mask.any():
        background = float(np.quantile(sample.image[sample.mask], rng.uniform(0.0, 0.6)))
    image = np.where(sample.mask, sample.image, background).astype(np.float32)
    return HeadSample(image, sample.mask, sample.valid)


def random_margin(sample: HeadSample, rng: np.random.Generator, most: int) -> HeadSample:
    """An empty border of random width per side, outside the field of view."""
    pads = [tuple(int(v) for v in rng.integers(0, most + 1, 2)) for _ in range(3)]
    return HeadSample(np.pad(sample.image, pads), np.pad(sample.mask, pads),
                      np.pad(sample.valid, pads))


def augment(sample: HeadSample, rng: np.random.Generator,
            config: AugmentationConfig = AugmentationConfig()) -> HeadSample:
    if rng.random() < config.skull_strip_probability:
        sample = skull_strip(sample, rng, config)
        if rng.random() < config.tight_crop_probability:
            sample = crop_around_brain(sample, rng, config.tight_margin_voxels)
    elif rng.random() < config.crop_probability:
        sample = random_crop(sample, rng, config.crop_fraction)
    if rng.random() < config.cut_probability:
        sample = cut_field_of_view(sample, rng, config.cut_depth)
    if rng.random() < config.flip_probability:
        sample = HeadSample(*(np.ascontiguousarray(a[:, :, ::-1]) for a in
                              (sample.image, sample.mask, sample.valid)))
    return random_margin(sample, rng, config.margin_voxels)


def network_input(sample: HeadSample, rng: np.random.Generator,
                  config: AugmentationConfig = AugmentationConfig()) -> np.ndarray:
    """The normalised network input, exactly as inference prepares it, plus a random gamma."""
    array = normalise_head(sample.image, sample.valid)
    if rng.random() < config.gamma_probability:
        array = array ** np.float32(np.exp(rng.normal(0.0, config.gamma_log_sd)))
    return array.astype(np.float32)
