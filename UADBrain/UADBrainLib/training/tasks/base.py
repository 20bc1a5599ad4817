"""What every learned family shares: held-out validation on synthetic anomalies, scored as at
inference; the bundle metadata a family provides.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...inference.options import MODEL_DEFAULT_POSTPROCESSING
from ..data import SlabBatch, TrainingVolume, sample_slabs


VALIDATION_SEED = 2_000_000
VALIDATION_MEDIAN = MODEL_DEFAULT_POSTPROCESSING["median"]  # the median kernel the bundles are written with


@dataclasses.dataclass
class ValidationCase:
    contrast: str
    image: np.ndarray  # normalised as at inference
    mask: np.ndarray
    truth: np.ndarray
    age: float | None = None  # years, for age-conditioned models


def ranking_metrics(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """AUPRC and best Dice of voxel scores against a binary truth."""
    from ...metrics import RankingCurve

    curve = RankingCurve.from_scores(scores, truth)
    dice = 2 * curve.true_positives / np.maximum(curve.true_positives + curve.false_positives + curve.positives, 1)
    return curve.average_precision(), float(dice.max()) if dice.size else float("nan")


def masked_squared_error(outputs, targets, weights):
    """Mean squared error over the pixels where ``weights`` (the brain mask) is set."""
    return ((outputs - targets) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)


def lesion_shapes(folder):
    if not folder:
        return None
    from ...synthesis.anomalies import LesionShapes

    return LesionShapes.from_folder(folder)


def on_grid_of(config, metadata: dict):
    """``config`` with the model grid's spacing and the slice context of the bundle (``metadata``)
    whose network a family builds on: that network only knows inputs like those it was trained on."""
    spacing = metadata["preprocessing"]["spacing_mm"]
    return dataclasses.replace(config, spacing=float(spacing[0] if isinstance(spacing, list) else spacing),
                               context=metadata["network"]["context"])


class TrainingTask:
    """Base: a family trained on slabs of healthy volumes, validated on synthetic anomalies."""

    family = ""
    output_bias = 0.0
    extra_input_channels = 0  # network inputs beyond the slices and the mask
    fitted = False  # True: statistics fitted by ``fit(source)`` in one pass, no networks, no gradient steps

    def __init__(self, config):
        self.config = config
        self.shapes = lesion_shapes(config.lesion_masks)

    # ---- bundle metadata
    def contrast_names(self) -> str:
        """The trained contrasts as titles name them: ``FLAIR, T1``."""
        return ", ".join(c.upper() for c in self.config.contrasts)

    def heads(self) -> list[str]:
        raise NotImplementedError

    def network_spec(self) -> dict:
        from ...inference.models.networks import network_spec

        unet = {"channels": list(self.config.channels), "strides": [2] * (len(self.config.channels) - 1)}
        return network_spec(self.heads(), self.config.context, unet, self.output_bias,
                            extra_channels=self.extra_input_channels)

    def preprocessing(self) -> dict:
        return {"spacing_mm": [self.config.spacing] * 3, "bias_correction": False, "normalisation": "robust_z"}

    def postprocessing(self) -> dict:
        return {"median": VALIDATION_MEDIAN, "min_size_mm3": 20.0, "erosion_mm": 0.0}

    def scoring(self) -> dict:
        return {}

    # ---- training
    @staticmethod
    def normalised_images(volume: TrainingVolume):
        """``(contrast, image)`` of a training volume, normalised as at inference."""
        for contrast, raw in volume.images.items():
            offset, scale = volume.normalisers[contrast]
            yield contrast, (raw - offset) / scale

    def cohort_size(self, source) -> int:
        """A fitted family's cohort: every subject of a folder's training split, or
        ``cohort_volumes`` synthetic brains."""
        subjects = getattr(source, "subjects", None)
        return len(subjects) if subjects is not None else self.config.cohort_volumes

    def begin_step(self, step: int, networks) -> None:
        """Called before each step's loss: a family that trains its networks in phases or turns
        (f-AnoGAN) freezes what the step does not train here; the optimiser skips parameters
        without gradients."""

    def slabs(self, volumes: list[TrainingVolume], rng: np.random.Generator, contrasts=None) -> SlabBatch:
        return sample_slabs(volumes, self.config.batch_size, self.config.patch_size, self.config.context,
                            rng, contrasts)

    def loss(self, networks, volumes, rng, device):
        raise NotImplementedError

    # ---- validation
    def validation_anomalies(self):
        """The anomalies validation brains get (``anomalies.AnomalyConfig``): one or two tumour-like
        masses of the held-out appearances, 10-40 mm, the same for every family so that their
        validation scores compare."""
        from ...synthesis.anomalies import AnomalyConfig

        return AnomalyConfig(appearances=tuple(self.config.heldout_appearances), shapes=("blob", "ellipsoid"),
                             count=(1, 2), diameter_mm=(10.0, 40.0))

    def validation_set(self, source, count: int) -> list[ValidationCase]:
        """Held-out brains with anomalies, normalised as at inference; made once before training."""
        from ...preprocessing import normalise
        from ...synthesis.anomalies import insert_anomalies

        cases = []
        method = self.preprocessing()["normalisation"]
        for index in range(count):
            volume = source.volume(VALIDATION_SEED + index)
            rng = np.random.default_rng(VALIDATION_SEED + index)
            for _ in range(20):  # tiny anomalies can vanish at coarse spacings: draw again
                inserted = insert_anomalies(volume.images, volume.mask, volume.spacing, rng,
                                            labels=volume.labels, config=self.validation_anomalies(),
                                            lesion_shapes=self.shapes)
                if inserted.mask.any():
                    break
            for contrast, image in inserted.images.items():
                cases.append(ValidationCase(contrast, normalise(image, volume.mask, method), volume.mask,
                                            inserted.mask > 0, volume.age))
        return cases

    def score_volume(self, networks, case: ValidationCase, device) -> np.ndarray:
        """The raw anomaly map of one validation case, as the model computes it at inference."""
        raise NotImplementedError

    def validate(self, networks, validation: list[ValidationCase], device) -> dict:
        """Per contrast AUPRC and best Dice (median-filtered map, inside the brain); ``score`` is
        the mean AUPRC, higher is better."""
        from ...inference.postprocessing import median_filter

        pooled: dict[str, tuple[list, list]] = {}
        for case in validation:
            scores = self.score_volume(networks, case, device)
            scores = median_filter(np.where(case.mask, scores, 0.0).astype(np.float32), VALIDATION_MEDIAN)
            values, truths = pooled.setdefault(case.contrast, ([], []))
            values.append(scores[case.mask])
            truths.append(case.truth[case.mask])
        metrics = {}
        for contrast, (values, truths) in pooled.items():
            auprc, dice = ranking_metrics(np.concatenate(values), np.concatenate(truths))
            metrics[f"auprc_{contrast}"] = round(auprc, 4)
            metrics[f"dice_{contrast}"] = round(dice, 4)
        metrics["score"] = round(float(np.mean([v for k, v in metrics.items() if k.startswith("auprc_")])), 4)
        return metrics
