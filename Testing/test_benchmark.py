"""``uadbrain bench``: the synthetic head, the measuring worker and the table (no timed assertions)."""

import numpy as np
import SimpleITK as sitk

from synthetic_cases import write_case
from UADBrainLib.bundle import find_bundle
from UADBrainLib.evaluation.benchmark import (PHANTOM_TISSUES, bench_table, model_contrasts, phantom_head,
                                              run_in_subprocess, run_worker)


def test_phantom_is_a_head_with_a_brain_sized_mask_and_a_lesion():
    images, lesion, brain = phantom_head(("flair", "t1"), size=64)
    assert images["flair"].GetSize() == (64, 64, 64) and images["flair"].GetSpacing() == (4.0, 4.0, 4.0)
    brain_ml = sitk.GetArrayViewFromImage(brain).sum() * 64 / 1000
    assert 1000 < brain_ml < 2000
    flair = sitk.GetArrayFromImage(images["flair"])
    t1 = sitk.GetArrayFromImage(images["t1"])
    in_lesion = sitk.GetArrayFromImage(lesion) > 0
    healthy = (sitk.GetArrayFromImage(brain) > 0) & ~in_lesion
    assert in_lesion.any() and flair[in_lesion].mean() > np.median(flair[healthy]) * 1.4
    assert t1[in_lesion].mean() < np.median(t1[healthy])
    assert flair[0].std() > 0  # noisy air: a raw head, not a skull-stripped scan
    assert len(PHANTOM_TISSUES) == 6


def test_worker_measures_stages_rethreshold_and_batch(tmp_path):
    case = write_case(tmp_path / "c", truth_name=None)
    row = run_worker({"model": "threshold", "case": "small", "device": "cpu",
                      "images": {"flair": str(case / "flair.nii.gz")}, "mask": None,
                      "repeats": 3, "batch_volumes": 1})
    assert {"load", "brain mask", "normalise", "model", "post-process"} <= set(row["stages_s"])
    assert row["rethreshold_calls"] == 3 and row["rethreshold_ms_median"] > 0
    assert row["batch_volumes"] == 1 and row["volumes_per_minute"] > 0
    assert row["peak_rss_mb"] >= row["rss_before_detect_mb"] > 0 and row["gpu_peak_mb"] is None
    table = bench_table([row, {"model": "threshold", "case": "x", "device": "cpu", "error": "boom"}])
    assert "| threshold | small | cpu |" in table and "failed: boom" in table


def test_each_run_is_a_fresh_process(tmp_path):
    case = write_case(tmp_path / "c", truth_name=None)
    spec = {"model": "threshold", "case": "small", "device": "cpu", "mask": str(case / "brainmask.nii.gz"),
            "images": {"flair": str(case / "flair.nii.gz")}, "repeats": 2, "batch_volumes": 0}
    row = run_in_subprocess(spec)
    assert "error" not in row and row["brain_mask_method"] == "given" and row["volumes_per_minute"] is None
    failed = run_in_subprocess({**spec, "images": {"flair": str(tmp_path / "missing.nii.gz")}})
    assert "does not exist" in failed["error"]


def test_models_get_the_preferred_contrasts_they_can_use():
    bundle = find_bundle("threshold")
    assert model_contrasts(bundle, {"flair": 1, "t1": 1}, ["flair"]) == ["flair"]
    assert model_contrasts(bundle, {"t1": 1}, ["flair"]) == ["t1"]
