"""The feature-modelling families, fitted on a bundled encoder's features of a healthy cohort.

Fitted, not trained: each cohort brain goes through the feature network once.

* PatchCore: a random sample of the patch features inside each brain is pooled per contrast, and
  a greedy k-centre coreset (Sener and Savarese 2018, as in PatchCore) of ``memory_bank`` vectors
  is kept, so that the bank covers every kind of healthy patch seen while holding a fraction of them.
* PaDiM-style Gaussians: per template cell, the running sums of the features of the voxels that
  land in it give a mean and a covariance (shrunk towards the identity, as PaDiM does).

STFPM is the one trained with gradient steps: its student learns the encoder's features on healthy slabs.
"""

from __future__ import annotations

import numpy as np

from .base import TrainingTask, on_grid_of
from .references import DEFARD_2021, FONOV_2011, ROTH_2022, SYNTHSEG, WANG_2021

SAMPLE_FACTOR = 10  # features sampled from the cohort per vector kept in the bank


def greedy_coreset(features, size: int, seed: int = 0):
    """Indices of ``size`` rows of ``features`` ``[N, C]`` chosen by greedy k-centre selection:
    each next row is the one farthest from those already chosen."""
    import torch

    count = features.shape[0]
    if size >= count:
        return torch.arange(count)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(count, (1,), generator=torch.Generator().manual_seed(seed)))
    nearest = torch.cdist(features, features[chosen[0]][None])[:, 0]
    for index in range(1, size):
        chosen[index] = int(nearest.argmax())
        nearest = torch.minimum(nearest, torch.cdist(features, features[chosen[index]][None])[:, 0])
    return chosen


class FeatureTask(TrainingTask):
    """What the feature families share: the bundled encoder (``--feature-model``) and its grid."""

    fitted = True

    def __init__(self, config):
        from ...bundle import find_bundle

        self.backbone_bundle = find_bundle(config.feature_model or "segmenter")
        super().__init__(on_grid_of(config, self.backbone_bundle.metadata))

    def preprocessing(self) -> dict:
        """The feature network's: it only knows inputs prepared as it was trained."""
        return dict(self.backbone_bundle.metadata["preprocessing"])

    def backbone_settings(self) -> dict:
        from ...inference.models.features import backbone_settings

        return backbone_settings(self.backbone_bundle.name, self.family)

    def backbone(self):
        from ...inference.models.features import FeatureBackbone

        if not hasattr(self, "_backbone"):
            self._backbone = FeatureBackbone(self.network_spec(), "cpu", purpose=self.family)
        return self._backbone


class PatchCoreTask(FeatureTask):
    family = "patchcore"

    def title(self):
        return f"PatchCore on the {self.backbone_bundle.name} encoder ({self.contrast_names()})"

    def description(self):
        return (f"Distance of each pixel's patch feature (the encoder of the bundled '{self.backbone_bundle.name}' "
                "model, trained here on synthetic brains, at 4 and 8 mm) to the nearest of a coreset of healthy "
                "patch features per contrast.")

    def references(self):
        return [ROTH_2022, SYNTHSEG]

    def network_spec(self) -> dict:
        from ...inference.models.patchcore import network_spec

        return network_spec(self.backbone_settings(), self.config.context)

    def fit(self, source, progress=None) -> dict:
        """``<contrast>.bank``: float16 ``[memory_bank, C]`` per contrast."""
        import torch

        from ...inference.models.networks import CLIP, predict_volume, prepare
        from ...inference.models.patchcore import brain_feature_mask, patch_features

        backbone, count = self.backbone(), self.cohort_size(source)
        per_volume = max(1, SAMPLE_FACTOR * self.config.memory_bank // count)
        rng = np.random.default_rng(self.config.seed)
        pooled = {c: [] for c in self.config.contrasts}
        for index in range(count):
            volume = source.volume(self.config.seed * 1_000_000 + index)
            for contrast, image in self.normalised_images(volume):
                collected = []

                def collect(inputs, collected=collected):
                    features = patch_features(backbone, inputs)
                    inside = brain_feature_mask(inputs, features.shape[2:])
                    collected.append(features.permute(0, 2, 3, 1)[inside])
                    return torch.zeros((inputs.shape[0], 1, *inputs.shape[2:]))

                with torch.inference_mode():
                    predict_volume(collect, prepare(image, volume.mask, CLIP), volume.mask,
                                   backbone.context, "cpu")
                features = torch.cat(collected)
                keep = rng.choice(len(features), size=min(per_volume, len(features)), replace=False)
                pooled[contrast].append(features[torch.from_numpy(keep)])
            if progress:
                progress(index + 1, count)
        self.fitted_volumes = count
        state = {}
        for contrast, parts in pooled.items():
            features = torch.cat(parts)
            state[f"{contrast}.bank"] = features[greedy_coreset(features, self.config.memory_bank,
                                                                self.config.seed)].half()
        return state

    def score_volume(self, banks, case, device) -> np.ndarray:
        import torch

        from ...inference.models.patchcore import patchcore_scores

        with torch.inference_mode():
            return patchcore_scores({case.contrast: case.image}, case.mask, self.backbone(),
                                    {k.removesuffix(".bank"): v.float() for k, v in banks.items()})[case.contrast]


MIN_CELL_SAMPLES_PER_DIM = 10  # a cell's Gaussian needs this many features per dimension
COVARIANCE_SHRINKAGE = 0.01  # PaDiM's identity term added to each covariance


class GaussianFeatureTask(FeatureTask):
    family = "padim"

    def title(self):
        return f"PaDiM-style Gaussian feature density on the {self.backbone_bundle.name} encoder ({self.contrast_names()})"

    def description(self):
        return (f"Per 12-mm cell of the ICBM152 template (affine registration by the brain's outline), a "
                f"Gaussian of healthy patch features of the bundled '{self.backbone_bundle.name}' encoder; a "
                "voxel's score is the Mahalanobis distance of its feature to its cell's Gaussian.")

    def references(self):
        return [DEFARD_2021, FONOV_2011, SYNTHSEG]

    def network_spec(self) -> dict:
        from ...inference.models.padim import network_spec
        from ...inference.models.patchcore import FEATURE_LEVELS

        channels = self.backbone_bundle.metadata["network"]["args"]["channels"][:FEATURE_LEVELS]
        return network_spec(self.backbone_settings(), self.config.context, sum(channels))

    def fit(self, source, progress=None) -> dict:
        """Per contrast: ``cell_rows`` (each cell's row; cells with too few features take the
        nearest well-sampled one), and per row the ``means`` and the ``factors`` (Cholesky
        factor of the precision matrix), float16."""
        import torch
        from scipy import ndimage

        from ...inference.models.padim import feature_volume, voxel_cells
        from ...template import register_brain

        network, backbone, count = self.network_spec(), self.backbone(), self.cohort_size(source)
        cells, dims = int(np.prod(network["cell_grid"])), len(network["feature_channels"])
        sums = {c: (torch.zeros(cells, dtype=torch.float64), torch.zeros(cells, dims, dtype=torch.float64),
                    torch.zeros(cells, dims * dims, dtype=torch.float64)) for c in self.config.contrasts}
        for index in range(count):
            volume = source.volume(self.config.seed * 1_000_000 + index)
            spacing = (volume.spacing,) * 3
            where = torch.from_numpy(voxel_cells(volume.mask.shape, spacing, register_brain(volume.mask, spacing),
                                                 network)[volume.mask])
            for contrast, image in self.normalised_images(volume):
                features = feature_volume(backbone, image, volume.mask, network["feature_channels"])
                features = torch.from_numpy(features[:, volume.mask].T.copy()).double()
                n, first, second = sums[contrast]
                n.index_add_(0, where, torch.ones(len(where), dtype=torch.float64))
                first.index_add_(0, where, features)
                for chunk, chunk_cells in zip(features.split(16384), where.split(16384)):
                    second.index_add_(0, chunk_cells, (chunk[:, :, None] * chunk[:, None, :]).reshape(len(chunk), -1))
            if progress:
                progress(index + 1, count)
        self.fitted_volumes = count
        state = {}
        for contrast, (n, first, second) in sums.items():
            sampled = (n >= MIN_CELL_SAMPLES_PER_DIM * dims).numpy()
            rows = np.full(cells, -1, np.int64)
            rows[sampled] = np.arange(sampled.sum())
            grid = tuple(network["cell_grid"][::-1])
            nearest = ndimage.distance_transform_edt(~sampled.reshape(grid), return_distances=False,
                                                     return_indices=True)
            rows = rows.reshape(grid)[tuple(nearest)].ravel()
            kept = torch.from_numpy(sampled)
            means = first[kept] / n[kept, None]
            covariances = (second[kept].view(-1, dims, dims) / n[kept, None, None]
                           - means[:, :, None] * means[:, None, :] + COVARIANCE_SHRINKAGE * torch.eye(dims))
            factors = torch.linalg.cholesky(torch.linalg.inv(covariances))
            state[f"{contrast}.cell_rows"] = torch.from_numpy(rows.astype(np.int16))
            state[f"{contrast}.means"] = means.half()
            state[f"{contrast}.factors"] = factors.half()
        return state

    def score_volume(self, statistics, case, device) -> np.ndarray:
        from ...inference.models.padim import padim_scores

        usable = {k: (v if k.endswith(".cell_rows") else v.float()) for k, v in statistics.items()}
        return padim_scores({case.contrast: case.image}, case.mask, (self.config.spacing,) * 3, self.backbone(),
                            usable, self.network_spec())[case.contrast]


class StudentTeacherTask(FeatureTask):
    """STFPM: a student encoder trained to give the bundled encoder's features on healthy slabs."""

    family = "stfpm"
    fitted = False

    def heads(self):
        from ...inference.models.stfpm import STUDENT

        return [STUDENT]

    def title(self):
        return f"Student-teacher feature pyramid matching on the {self.backbone_bundle.name} encoder ({self.contrast_names()})"

    def description(self):
        return (f"A student encoder trained on synthetic healthy brains to reproduce the features of the bundled "
                f"'{self.backbone_bundle.name}' encoder at 4, 8, 16 and 32 mm; a pixel's score is how far the two "
                "feature pyramids disagree.")

    def references(self):
        return [WANG_2021, SYNTHSEG]

    def network_spec(self) -> dict:
        from ...inference.models.networks import ENCODER_ARCHITECTURE, network_spec
        from ...inference.models.stfpm import LEVELS

        teacher = self.backbone_bundle.metadata["network"]["args"]
        shape = {key: teacher[key] for key in ("channels", "strides", "num_res_units")}
        return {**network_spec(self.heads(), self.config.context, {**shape, "levels": LEVELS},
                               architecture=ENCODER_ARCHITECTURE), **self.backbone_settings()}

    def loss(self, networks, volumes, rng, device):
        import torch
        import torch.nn.functional as F

        from ...inference.models.features import encoder_features, feature_discrepancy
        from ...inference.models.stfpm import STUDENT

        levels = self.network_spec()["args"]["levels"]
        batch = self.slabs(volumes, rng)
        centre = self.config.context
        masks = torch.from_numpy(batch.masks[:, centre:centre + 1].astype(np.float32))
        inputs = torch.cat([torch.from_numpy(batch.prepared()), masks], dim=1).to(device)
        with torch.no_grad():
            teacher = self.backbone().features(inputs, levels)
        student = encoder_features(networks[STUDENT].unet, inputs, levels)
        # the discrepancy at the finest level's resolution, averaged over the brain's pixels there
        size = teacher[0].shape[2:]
        weights = F.adaptive_avg_pool2d(masks.to(device), size)
        return (feature_discrepancy(teacher, student, size) * weights).sum() / weights.sum().clamp_min(1.0)

    def score_volume(self, networks, case, device):
        from ...inference.models.stfpm import STUDENT, PyramidDiscrepancy, stfpm_scores

        discrepancy = PyramidDiscrepancy(self.backbone(), networks[STUDENT], self.network_spec()["args"]["levels"])
        return stfpm_scores({case.contrast: case.image}, case.mask, discrepancy, self.config.context,
                            device)[case.contrast]
