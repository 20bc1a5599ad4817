"""Detection metrics, pure numpy: exact voxel-wise ranking metrics, Dice, lesion-wise counts.

Voxel-wise metrics come from one :class:`RankingCurve` per set of voxels: the scores are sorted
once, and true/false positives are counted at every distinct score, so AUPRC (average precision),
AUROC and the best Dice over all thresholds are exact (no binning) and cost one sort, even for
tens of millions of voxels. Pooled metrics over several cases use the concatenated voxels.

Lesion-wise counts: predicted lesions are the pipeline's (face-connected components,
``postprocessing.PostProcessor.segment``); ground-truth lesions are 26-connected components, so a
lesion whose voxels touch only at edges or corners is one lesion, not a spray of fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FACE_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)  # the pipeline's lesions
FULL_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # ground-truth lesions


@dataclass(frozen=True)
class RankingCurve:
    """Counts of flagged voxels at every distinct score, highest score first.

    A voxel is flagged at threshold ``t`` when its score is ``>= t``; ``true_positives[n]`` and
    ``false_positives[n]`` count the flagged anomalous and normal voxels at ``thresholds[n]``.
    """

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray
    positives: int
    negatives: int

    @classmethod
    def from_scores(cls, scores, labels) -> "RankingCurve":
        scores = np.asarray(scores).ravel()
        labels = np.asarray(labels, dtype=bool).ravel()
        if scores.shape != labels.shape:
            raise ValueError(f"scores and labels differ in size ({scores.size} vs {labels.size})")
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores must be finite")
        order = np.argsort(scores)[::-1]
        sorted_scores = scores[order]
        # the last voxel of each run of equal scores closes that threshold
        ends = np.flatnonzero(np.diff(sorted_scores))
        if sorted_scores.size:
            ends = np.r_[ends, sorted_scores.size - 1]
        true_positives = np.cumsum(labels[order], dtype=np.int64)[ends]
        false_positives = ends + 1 - true_positives
        positives = int(labels.sum())
        return cls(thresholds=sorted_scores[ends], true_positives=true_positives,
                   false_positives=false_positives, positives=positives,
                   negatives=int(labels.size - positives))

    @property
    def precision(self) -> np.ndarray:
        return self.true_positives / np.maximum(self.true_positives + self.false_positives, 1)

    @property
    def recall(self) -> np.ndarray:
        return self.true_positives / max(self.positives, 1)

    @property
    def false_positive_rate(self) -> np.ndarray:
        return self.false_positives / max(self.negatives, 1)

    def average_precision(self) -> float:
        """AUPRC as average precision: sum over thresholds of (recall step) × precision."""
        if self.positives == 0:
            return float("nan")
        recall_steps = np.diff(np.r_[0.0, self.recall])
        return float(np.sum(recall_steps * self.precision))

    def auroc(self) -> float:
        if self.positives == 0 or self.negatives == 0:
            return float("nan")
        tpr = np.r_[0.0, self.recall]
        fpr = np.r_[0.0, self.false_positive_rate]
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)

    def dice(self) -> np.ndarray:
        """Dice of the segmentation ``score >= threshold`` at every threshold."""
        return 2 * self.true_positives / np.maximum(self.true_positives + self.false_positives
                                                    + self.positives, 1)

    def best_dice(self) -> tuple[float, float]:
        """The highest Dice over all thresholds and the threshold reaching it (``score >= t``)."""
        if self.positives == 0 or self.thresholds.size == 0:
            return float("nan"), float("nan")
        dice = self.dice()
        best = int(np.argmax(dice))
        return float(dice[best]), float(self.thresholds[best])

    def pr_points(self, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) thinned to about ``max_points`` evenly spaced in recall, for plots."""
        recall, precision = self.recall, self.precision
        if recall.size > max_points:
            keep = np.unique(np.searchsorted(recall, np.linspace(0, recall[-1], max_points)))
            keep = keep[keep < recall.size]
            recall, precision = recall[keep], precision[keep]
        return recall, precision


def dice(prediction, truth) -> float:
    """Dice overlap of two masks; 1.0 when both are empty (they agree that nothing is there)."""
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(prediction & truth)) / total


def dice_at_threshold(scores, labels, threshold: float) -> float:
    """Dice of ``score > threshold`` (the pipeline's rule) against ``labels``."""
    return dice(np.asarray(scores) > threshold, labels)


@dataclass(frozen=True)
class LesionCounts:
    truth_lesions: int  # connected components of the ground truth (of at least the minimum size)
    truth_lesions_hit: int  # ... that at least one predicted voxel touches
    predicted_lesions: int
    false_positive_lesions: int  # predicted components touching no ground-truth voxel

    @property
    def recall(self) -> float:
        return self.truth_lesions_hit / self.truth_lesions if self.truth_lesions else float("nan")


def lesion_counts(prediction, truth, min_truth_voxels: int = 1) -> LesionCounts:
    """Lesion-wise hits and false positives.

    ``prediction``: a boolean mask (face-connected components, as the pipeline labels them), or
    an integer label array whose nonzero labels are the predicted lesions (the pipeline's
    ``Result.labels_array``, so counts match its lesion table). Ground-truth components smaller
    than ``min_truth_voxels`` are not counted as lesions to find; a predicted lesion touching one
    is still not a false positive.
    """
    prediction = np.asarray(prediction)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in shape ({prediction.shape} vs {truth.shape})")
    if prediction.dtype == bool:
        predicted_labels, predicted_count = ndimage.label(prediction, structure=FACE_CONNECTIVITY)
    else:
        predicted_labels = prediction
        predicted_count = np.unique(prediction[prediction > 0]).size
    truth_labels, truth_count = ndimage.label(truth, structure=FULL_CONNECTIVITY)
    counted = np.bincount(truth_labels.ravel(), minlength=truth_count + 1) >= max(min_truth_voxels, 1)
    counted[0] = False
    flagged = predicted_labels > 0
    hit = np.unique(truth_labels[flagged & truth])
    touching = np.unique(predicted_labels[flagged & truth]).size
    return LesionCounts(truth_lesions=int(counted.sum()), truth_lesions_hit=int(counted[hit].sum()),
                        predicted_lesions=int(predicted_count),
                        false_positive_lesions=int(predicted_count - touching))


def roc_auc(positive_scores, negative_scores) -> float:
    """AUROC of two score samples (e.g. volume-level scores of lesion and healthy scans)."""
    positive_scores = np.asarray(positive_scores, dtype=float)
    negative_scores = np.asarray(negative_scores, dtype=float)
    if positive_scores.size == 0 or negative_scores.size == 0:
        return float("nan")
    scores = np.r_[positive_scores, negative_scores]
    labels = np.r_[np.ones(positive_scores.size, bool), np.zeros(negative_scores.size, bool)]
    return RankingCurve.from_scores(scores, labels).auroc()
