import numpy as np
import pytest

from UADBrainLib.errors import ModelError
from UADBrainLib.inference.calibration import (calibrated_threshold, channel_sets, compute_calibration, fuse,
                                               quantile_table, scored_contrasts, surprise, volume_percentile)


def healthy_cases(count=4, shape=(30, 30, 30), seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, bool)
    return [({"flair": rng.normal(0, 1, shape).astype(np.float32),
              "t1": rng.normal(0, 3, shape).astype(np.float32)}, mask, 0.001) for _ in range(count)]


def test_quantile_table_and_surprise():
    values = np.random.default_rng(0).normal(size=200_000)
    table = quantile_table(values)
    assert table["exceedance"][0] == 1.0 and min(table["exceedance"]) * values.size >= 20
    assert np.all(np.diff(table["score"]) >= 0)
    s = surprise(np.array([values.min() - 1, 0.0, 3.09, 10.0]), table)
    assert s[0] == 0.0
    assert s[1] == pytest.approx(np.log10(2), abs=0.02)
    assert s[2] == pytest.approx(3.0, abs=0.15)
    assert s[3] > s[2]  # extrapolated beyond the table, still increasing


def test_fuse_puts_contrasts_on_one_scale():
    calibration = compute_calibration(healthy_cases(), ["flair", "t1"], medians=(0,))
    # 3 SD on flair and 9 on t1 (SD 3) are equally unusual for healthy brains
    fused_flair = fuse({"flair": np.array([3.0], np.float32)}, calibration)
    fused_t1 = fuse({"t1": np.array([9.0], np.float32)}, calibration)
    assert fused_flair[0] == pytest.approx(fused_t1[0], abs=0.3)
    both = fuse({"flair": np.array([3.0], np.float32), "t1": np.array([0.0], np.float32)}, calibration)
    assert both[0] == pytest.approx(fused_flair[0])
    # uncalibrated: the raw map
    raw = np.array([1.5], np.float32)
    assert fuse({"flair": raw}, None)[0] == 1.5


def test_calibrated_threshold_flags_the_requested_share_of_healthy_voxels():
    calibration = compute_calibration(healthy_cases(), ["flair", "t1"], medians=(0, 3))
    fresh = healthy_cases(count=2, seed=7)
    for channels in (["flair"], ["flair", "t1"]):
        for median in (0, 3):
            from UADBrainLib.inference.postprocessing import median_filter

            threshold = calibrated_threshold(calibration, channels, median, fpr=0.01)
            flagged = []
            for maps, mask, _ in fresh:
                fused = fuse({c: maps[c] for c in channels}, calibration)
                flagged.append((median_filter(fused, median) > threshold).mean())
            assert np.mean(flagged) == pytest.approx(0.01, rel=0.25)
    assert set(calibration["fused"]) == {"flair", "t1", "flair+t1"}


def test_missing_calibration_is_a_clear_error():
    with pytest.raises(ModelError, match="no healthy calibration"):
        calibrated_threshold(None, ["flair"], 5)
    calibration = compute_calibration(healthy_cases(1), ["flair"], medians=(5,))
    with pytest.raises(ModelError, match="median kernel 3"):
        calibrated_threshold(calibration, ["flair"], 3)
    with pytest.raises(ModelError, match="below what the calibration resolves"):
        calibrated_threshold(calibration, ["flair"], 5, fpr=1e-9)


def test_volume_percentile():
    calibration = compute_calibration(healthy_cases(), ["flair"], medians=(5,))
    scores = calibration["fused"]["flair"]["volume_scores"]
    assert len(scores) == 4
    assert volume_percentile(calibration, ["flair"], max(scores) + 1) == 1.0
    assert volume_percentile(calibration, ["flair"], min(scores) - 1) == 0.0
    assert volume_percentile(None, ["flair"], 3.0) is None


def test_channel_sets_respect_required():
    assert channel_sets(["t1", "flair"], []) == [["flair"], ["t1"], ["flair", "t1"]]
    assert channel_sets(["t1", "flair"], ["flair"]) == [["flair"], ["flair", "t1"]]


def test_a_lead_contrast_is_scored_alone():
    assert scored_contrasts(["flair", "t1", "t2"], ["flair"]) == ["flair"]
    assert scored_contrasts(["t1", "t2"], ["flair"]) == ["t1", "t2"]
    assert scored_contrasts(["flair", "t1"], []) == ["flair", "t1"]
    # only the sets the pipeline can score get a calibration table
    assert channel_sets(["flair", "t1", "t2"], [], lead=["flair"]) == [["flair"], ["t1"], ["t2"], ["t1", "t2"]]


@pytest.mark.parametrize("rule, combine", [("min", np.minimum), ("mean", lambda a, b: (a + b) / 2)])
def test_min_and_mean_fusion_and_their_calibration(rule, combine):
    cases = healthy_cases()
    calibration = compute_calibration(cases, ["flair", "t1"], medians=(0,), rule=rule)
    maps = {"flair": np.array([3.0, 0.0], np.float32), "t1": np.array([9.0, 9.0], np.float32)}
    fused, each = fuse(maps, calibration, rule), [fuse({c: m}, calibration) for c, m in maps.items()]
    np.testing.assert_allclose(fused, combine(*each), rtol=1e-6)
    flagged = [(fuse(m, calibration, rule) > calibrated_threshold(calibration, ["flair", "t1"], 0, 0.01)).mean()
               for m, _, _ in healthy_cases(count=2, seed=7)]
    assert np.mean(flagged) == pytest.approx(0.01, rel=0.25)
    with pytest.raises(ModelError, match="fusion 'median' is unknown"):
        fuse(maps, calibration, "median")


@pytest.mark.parametrize("kernel", [0, 3, 5, 7])
def test_median_filtering_on_the_brain_box_gives_the_whole_volume_numbers(kernel):
    from UADBrainLib.inference.calibration import _median_filtered_in_mask
    from UADBrainLib.inference.postprocessing import median_filter

    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 46, 36)).astype(np.float32)
    mask = np.zeros(values.shape, bool)
    mask[8:30, 0:25, 4:35] = rng.random((22, 25, 31)) > 0.2  # touches one border of the volume
    whole = median_filter(np.where(mask, values, 0.0).astype(np.float32), kernel)[mask]
    assert np.array_equal(_median_filtered_in_mask(values, mask, kernel), whole)
