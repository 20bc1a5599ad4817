"""The voxel-wise statistical normative model: cohort statistics fitted in the template's frame.

No network and no gradient steps: each healthy cohort volume is registered to the template by its
brain outline, its normalised intensities resampled onto the template's grid, and per voxel the
cohort's median and MAD-based spread kept (``inference/models/normative.py`` scores with them).
Template voxels that fewer than half the cohort's brains reach take the statistics of the nearest
voxel that enough reach; the spread is smoothed a little (a cohort of tens of brains estimates it
noisily) and has a floor.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from .base import TrainingTask
from .references import BENGS_2022, FONOV_2011, SAASE_2020, SYNTHSEG

MIN_COVERAGE = 0.5  # fraction of the cohort's brains that must reach a voxel for its own statistics
SPREAD_SMOOTHING_MM = 2.0  # Gaussian sigma on the spread map
SPREAD_FLOOR = 0.1  # normalised units (robust SD of the brain): the least spread a voxel is credited
MAD_TO_SD = 1.4826


def cohort_statistics(samples: np.ndarray, spacing_mm: float, ages: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-voxel statistics of ``samples`` ``[N, ...]`` (NaN where a brain does not reach), filled
    from the nearest well-covered voxel where coverage is short: ``median`` and ``spread``, and
    with ``ages`` (years, one per sample) ``age_slope`` (per year) of a least-squares line through
    each voxel's samples, ``median`` then being the line's value at the cohort's mean age plus the
    median residual and ``spread`` the residuals' (the spread at a given age)."""
    coverage = np.mean(np.isfinite(samples), axis=0)
    covered = coverage >= MIN_COVERAGE
    if not covered.any():
        raise ValueError("no template voxel is reached by half of the cohort's brains — registration failed")
    statistics = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # voxels no brain reaches: filled below
        if ages is not None:
            age = np.where(np.isfinite(samples), np.asarray(ages, np.float32).reshape(-1, *[1] * (samples.ndim - 1)),
                           np.nan)
            age_offset = age - np.nanmean(age, axis=0)
            slope = np.nansum(age_offset * (samples - np.nanmean(samples, axis=0)), axis=0) / np.nansum(age_offset ** 2, axis=0)
            slope = np.nan_to_num(slope)
            samples = samples - slope * (age - float(np.mean(ages)))  # each brain brought to the mean age
            statistics["age_slope"] = slope
        median = np.nanmedian(samples, axis=0)
        statistics["spread"] = MAD_TO_SD * np.nanmedian(np.abs(samples - median), axis=0)
        statistics["median"] = median
    nearest = tuple(ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True))
    statistics = {name: values[nearest] for name, values in statistics.items()}
    sigma = SPREAD_SMOOTHING_MM / spacing_mm
    statistics["spread"] = np.maximum(ndimage.gaussian_filter(statistics["spread"], sigma), SPREAD_FLOOR)
    if "age_slope" in statistics:  # fitted from tens of brains per voxel: as noisy as the spread
        statistics["age_slope"] = ndimage.gaussian_filter(statistics["age_slope"], sigma)
    return {name: values.astype(np.float32) for name, values in statistics.items()}


class NormativeTask(TrainingTask):
    """Fitted, not trained: :meth:`fit` replaces the gradient loop of ``train.py``."""

    family = "normative"
    fitted = True

    def __init__(self, config):
        super().__init__(config)
        self.cohort_ages = None  # years, once a cohort conditioned on age is fitted

    def title(self):
        conditioned = " conditioned on age" if self.config.age_range else ""
        return f"Voxel-wise normative model{conditioned} ({self.contrast_names()})"

    def description(self):
        text = ("Per voxel of the ICBM152 template, the median and spread of healthy brains' normalised "
                "intensities (affine registration by the brain's outline); a scan's score is its z-score "
                "against them in the lesion direction, computed on its own grid.")
        if self.config.age_range:
            low, high = self.config.age_range
            text += (f" Conditioned on age (the aim of Bengs et al. 2022, who add brain-age prediction to an autoencoder; here by per-voxel regression): each voxel's "
                     f"expected intensity moves with age along a line fitted over a cohort aged {low:g}-{high:g} "
                     "years, so the atrophy of healthy ageing is not flagged; give the subject's age (--age). "
                     "Without it the scan is scored against the whole cohort's ages (a wider spread).")
        return text

    def references(self):
        return [SAASE_2020, *([BENGS_2022] if self.config.age_range else []), FONOV_2011, SYNTHSEG]

    def network_spec(self) -> dict:
        from ...inference.models.normative import network_spec

        return network_spec(self.config.age_range, self.cohort_ages)

    def fit(self, source, progress=None) -> dict:
        """The statistics (float16 tensors ``<contrast>.median`` / ``.spread``, and ``.age_slope``
        when conditioned on age) of the cohort."""
        import torch

        from ...inference.models.normative import box_slices, network_spec
        from ...template import register_brain, template_image, to_template

        box = box_slices(network_spec())  # the template frame alone: the cohort's ages are not drawn yet
        count = self.cohort_size(source)
        samples, ages = {c: [] for c in self.config.contrasts}, []
        for index in range(count):
            volume = source.volume(self.config.seed * 1_000_000 + index)
            ages.append(volume.age)
            spacing = (volume.spacing,) * 3
            transform = register_brain(volume.mask, spacing)
            reached = to_template(volume.mask.astype(np.float32), spacing, transform)[box] >= 0.5
            for contrast, image in self.normalised_images(volume):
                warped = to_template(image, spacing, transform)[box]
                samples[contrast].append(np.where(reached, warped, np.nan).astype(np.float32))
            if progress:
                progress(index + 1, count)
        self.fitted_volumes = count
        self.cohort_ages = np.array(ages, np.float64) if self.config.age_range else None
        spacing_mm = template_image().GetSpacing()[0]
        state = {}
        for contrast in list(samples):
            statistics = cohort_statistics(np.stack(samples.pop(contrast)), spacing_mm, self.cohort_ages)
            state.update({f"{contrast}.{name}": torch.from_numpy(values).half() for name, values in statistics.items()})
        return state

    def score_volume(self, statistics, case, device) -> np.ndarray:
        from ...inference.models.normative import normative_scores
        from ...inference.models.thresholding import DEFAULT_DIRECTIONS

        arrays = {key: value.float().numpy() for key, value in statistics.items()}
        return normative_scores({case.contrast: case.image}, case.mask, (self.config.spacing,) * 3, arrays,
                                self.network_spec(), DEFAULT_DIRECTIONS, case.age)[case.contrast]
