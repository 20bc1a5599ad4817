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
from .references import FONOV_2011, SAASE_2020, SYNTHSEG

MIN_COVERAGE = 0.5  # fraction of the cohort's brains that must reach a voxel for its own statistics
SPREAD_SMOOTHING_MM = 2.0  # Gaussian sigma on the spread map
SPREAD_FLOOR = 0.1  # normalised units (robust SD of the brain): the least spread a voxel is credited
MAD_TO_SD = 1.4826


def cohort_statistics(samples: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel ``(median, spread)`` of ``samples`` ``[N, ...]`` (NaN where a brain does not
    reach), filled from the nearest well-covered voxel where coverage is short."""
    coverage = np.mean(np.isfinite(samples), axis=0)
    covered = coverage >= MIN_COVERAGE
    if not covered.any():
        raise ValueError("no template voxel is reached by half of the cohort's brains — registration failed")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # voxels no brain reaches: filled below
        median = np.nanmedian(samples, axis=0)
        spread = MAD_TO_SD * np.nanmedian(np.abs(samples - median), axis=0)
    nearest = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    median, spread = median[tuple(nearest)], spread[tuple(nearest)]
    spread = ndimage.gaussian_filter(spread, SPREAD_SMOOTHING_MM / spacing_mm)
    return median.astype(np.float32), np.maximum(spread, SPREAD_FLOOR).astype(np.float32)


class NormativeTask(TrainingTask):
    """Fitted, not trained: :meth:`fit` replaces the gradient loop of ``train.py``."""

    family = "normative"
    fitted = True

    def title(self):
        return f"Voxel-wise normative model ({self.contrast_names()})"

    def description(self):
        return ("Per voxel of the ICBM152 template, the median and spread of healthy brains' normalised "
                "intensities (affine registration by the brain's outline); a scan's score is its z-score "
                "against them in the lesion direction, computed on its own grid.")

    def references(self):
        return [SAASE_2020, FONOV_2011, SYNTHSEG]

    def network_spec(self) -> dict:
        from ...inference.models.normative import network_spec

        return network_spec()

    def fit(self, source, progress=None) -> dict:
        """The statistics (float16 tensors ``<contrast>.median`` / ``.spread``) of the cohort."""
        import torch

        from ...inference.models.normative import box_slices
        from ...template import register_brain, template_image, to_template

        box = box_slices(self.network_spec())
        count = self.cohort_size(source)
        samples = {c: [] for c in self.config.contrasts}
        for index in range(count):
            volume = source.volume(self.config.seed * 1_000_000 + index)
            spacing = (volume.spacing,) * 3
            transform = register_brain(volume.mask, spacing)
            reached = to_template(volume.mask.astype(np.float32), spacing, transform)[box] >= 0.5
            for contrast, image in self.normalised_images(volume):
                warped = to_template(image, spacing, transform)[box]
                samples[contrast].append(np.where(reached, warped, np.nan).astype(np.float32))
            if progress:
                progress(index + 1, count)
        self.fitted_volumes = count
        spacing_mm = template_image().GetSpacing()[0]
        state = {}
        for contrast, stack in samples.items():
            median, spread = cohort_statistics(np.stack(stack), spacing_mm)
            state[f"{contrast}.median"] = torch.from_numpy(median).half()
            state[f"{contrast}.spread"] = torch.from_numpy(spread).half()
        return state

    def score_volume(self, statistics, case, device) -> np.ndarray:
        from ...inference.models.normative import normative_scores
        from ...inference.models.thresholding import DEFAULT_DIRECTIONS

        arrays = {key: value.float().numpy() for key, value in statistics.items()}
        return normative_scores({case.contrast: case.image}, case.mask, (self.config.spacing,) * 3, arrays,
                                self.network_spec(), DEFAULT_DIRECTIONS)[case.contrast]
