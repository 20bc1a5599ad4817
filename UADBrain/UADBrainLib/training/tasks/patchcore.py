"""PatchCore's memory banks: healthy patch features, thinned to a greedy coreset.

Fitted, not trained: each cohort brain's slices go through the feature network once; a random
sample of the patch features inside its brain is pooled per contrast, and a greedy k-centre
coreset (Sener and Savarese 2018, as in PatchCore) of ``memory_bank`` vectors is kept, so that
the bank covers every kind of healthy patch seen while holding a fraction of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .base import TrainingTask
from .references import ROTH_2022, SYNTHSEG

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


class PatchCoreTask(TrainingTask):
    family = "patchcore"
    fitted = True

    def __init__(self, config):
        from ...bundle import find_bundle

        self.backbone_bundle = find_bundle(config.feature_model or "segmenter")
        # the cohort is drawn on the feature network's grid, the only one it knows
        spacing = self.backbone_bundle.metadata["preprocessing"]["spacing_mm"]
        super().__init__(dataclasses.replace(config, spacing=float(spacing[0] if isinstance(spacing, list) else spacing),
                                             context=self.backbone_bundle.metadata["network"]["context"]))

    def title(self):
        return f"PatchCore on the {self.backbone_bundle.name} encoder ({self.contrast_names()})"

    def description(self):
        return (f"Distance of each pixel's patch feature (the encoder of the bundled '{self.backbone_bundle.name}' "
                "model, trained here on synthetic brains, at 4 and 8 mm) to the nearest of a coreset of healthy "
                "patch features per contrast.")

    def references(self):
        return [ROTH_2022, SYNTHSEG]

    def preprocessing(self) -> dict:
        """The feature network's: it only knows inputs prepared as it was trained."""
        return dict(self.backbone_bundle.metadata["preprocessing"])

    def network_spec(self) -> dict:
        from ...inference.models.features import backbone_settings
        from ...inference.models.patchcore import network_spec

        return network_spec(backbone_settings(self.backbone_bundle.name, "PatchCore"),
                            self.backbone_bundle.metadata["network"]["context"])

    def backbone(self):
        from ...inference.models.features import FeatureBackbone

        return FeatureBackbone(self.network_spec(), "cpu", purpose="PatchCore")

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
            for contrast, raw in volume.images.items():
                offset, scale = volume.normalisers[contrast]
                collected = []

                def collect(inputs, collected=collected):
                    features = patch_features(backbone, inputs)
                    inside = brain_feature_mask(inputs, features.shape[2:])
                    collected.append(features.permute(0, 2, 3, 1)[inside])
                    return torch.zeros((inputs.shape[0], 1, *inputs.shape[2:]))

                with torch.inference_mode():
                    predict_volume(collect, prepare((raw - offset) / scale, volume.mask, CLIP), volume.mask,
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

        if not hasattr(self, "_backbone"):
            self._backbone = self.backbone()
        with torch.inference_mode():
            return patchcore_scores({case.contrast: case.image}, case.mask, self._backbone,
                                    {k.removesuffix(".bank"): v.float() for k, v in banks.items()})[case.contrast]
