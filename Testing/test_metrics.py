"""Metrics: exact ranking metrics against brute force (and scikit-learn), Dice, lesion counts."""

import math

import numpy as np
import pytest

from UADBrainLib.metrics import RankingCurve, dice, dice_at_threshold, lesion_counts, roc_auc


def brute_force(scores, labels):
    """AP, AUROC and best Dice from their definitions, one threshold at a time."""
    thresholds = np.unique(scores)[::-1]
    positives = labels.sum()
    ap, previous_recall, best = 0.0, 0.0, 0.0
    for t in thresholds:
        flagged = scores >= t
        tp = np.sum(flagged & labels)
        recall = tp / positives
        ap += (recall - previous_recall) * tp / flagged.sum()
        previous_recall = recall
        best = max(best, 2 * tp / (flagged.sum() + positives))
    pos, neg = scores[labels], scores[~labels]
    auroc = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) / (pos.size * neg.size)
    return ap, auroc, best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_equal_their_definitions_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.2
    scores = np.round(rng.normal(size=400) + 1.5 * labels, 1)  # rounding makes many ties
    curve = RankingCurve.from_scores(scores, labels)
    ap, auroc, best = brute_force(scores, labels)
    assert curve.average_precision() == pytest.approx(ap, abs=1e-12)
    assert curve.auroc() == pytest.approx(auroc, abs=1e-12)
    value, threshold = curve.best_dice()
    assert value == pytest.approx(best, abs=1e-12)
    assert dice(scores >= threshold, labels) == pytest.approx(best, abs=1e-12)


def test_ranking_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    labels = rng.random(200_000) < 0.03
    scores = (rng.normal(size=labels.size) + 2 * labels).astype(np.float32)
    curve = RankingCurve.from_scores(scores, labels)
    assert curve.average_precision() == pytest.approx(sklearn_metrics.average_precision_score(labels, scores), abs=1e-9)
    assert curve.auroc() == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-9)


def test_perfect_and_reversed_rankings():
    labels = np.array([0, 0, 0, 1, 1], bool)
    perfect = RankingCurve.from_scores(np.arange(5.0), labels)
    assert perfect.average_precision() == 1.0 and perfect.auroc() == 1.0
    assert perfect.best_dice() == (1.0, 3.0)
    assert RankingCurve.from_scores(-np.arange(5.0), labels).auroc() == 0.0


def test_undefined_metrics_are_nan():
    curve = RankingCurve.from_scores(np.arange(4.0), np.zeros(4, bool))
    assert math.isnan(curve.average_precision()) and math.isnan(curve.auroc())
    assert math.isnan(curve.best_dice()[0])
    assert math.isnan(RankingCurve.from_scores(np.arange(4.0), np.ones(4, bool)).auroc())
    with pytest.raises(ValueError):
        RankingCurve.from_scores(np.array([0.0, np.nan]), np.array([0, 1], bool))


def test_pr_points_are_thinned_for_plots():
    rng = np.random.default_rng(0)
    labels = rng.random(50_000) < 0.1
    curve = RankingCurve.from_scores(rng.normal(size=labels.size) + labels, labels)
    recall, precision = curve.pr_points(max_points=300)
    assert recall.size <= 300 and np.all(np.diff(recall) >= 0) and recall[-1] == 1.0
    assert precision.shape == recall.shape


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice(a, b) == 0.5
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert dice_at_threshold(np.array([0.9, 0.5, 0.2]), np.array([1, 1, 0], bool), 0.5) == pytest.approx(2 / 3)


def test_lesion_counts_hits_and_false_positives():
    truth = np.zeros((10, 10, 10), bool)
    truth[1:3, 1:3, 1:3] = True  # lesion A: hit
    truth[6:8, 6:8, 6:8] = True  # lesion B: hit
    truth[1, 8, 8] = True  # lesion C: missed
    prediction = np.zeros_like(truth)
    prediction[2, 2, 2] = True  # touches A
    prediction[7:9, 7:9, 7:9] = True  # overlaps B
    prediction[5, 0, 0] = True  # false positive
    prediction[0, 5, 5] = True  # false positive
    counts = lesion_counts(prediction, truth)
    assert (counts.truth_lesions, counts.truth_lesions_hit) == (3, 2)
    assert (counts.predicted_lesions, counts.false_positive_lesions) == (4, 2)
    assert counts.recall == pytest.approx(2 / 3)
    from scipy import ndimage

    labelled, _ = ndimage.label(prediction)
    assert lesion_counts(labelled.astype(np.int32), truth) == counts


def test_connectivity_and_minimum_truth_size():
    """Truth: 26-connected (corner-touching voxels are one lesion); predictions: face-connected,
    as the pipeline labels its lesions. Truth fragments below the minimum size are not counted."""
    truth = np.zeros((6, 6, 6), bool)
    truth[0, 0, 0] = truth[1, 1, 1] = True  # one lesion of 2 voxels
    truth[4, 4, 4] = True  # a 1-voxel fragment
    counts = lesion_counts(truth.copy(), truth)
    assert counts.truth_lesions == 2 and counts.predicted_lesions == 3
    large_only = lesion_counts(truth.copy(), truth, min_truth_voxels=2)
    assert (large_only.truth_lesions, large_only.truth_lesions_hit) == (1, 1)
    assert large_only.false_positive_lesions == 0  # touching a small fragment is not a false positive


def test_volume_level_auroc():
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0], [1.0]) == 0.5
    assert math.isnan(roc_auc([1.0], []))
