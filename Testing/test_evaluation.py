"""``uadbrain evaluate``: case discovery, metrics from the pipeline's own outputs, reports."""

import csv
import json
import time

import numpy as np
import pytest

from synthetic_cases import write_case, write_image
from UADBrainLib.cli.main import main
from UADBrainLib.cohort import contrast_from_name, find_cases, read_scan_folder
from UADBrainLib.errors import InputError
from UADBrainLib.evaluation.evaluate import (OPERATING_FPRS, Settings, build_tasks, evaluate, fpr_column,
                                             parse_contrast_sets, read_truth, run_detect, score_case)
from UADBrainLib.metrics import dice


def test_case_folder_convention(tmp_path):
    case = write_case(tmp_path / "p1", contrasts=("flair", "t1c"), truth_name="lesions",
                      names={"t1c": "t1post"})
    scan = read_scan_folder(case)
    assert list(scan.images) == ["flair", "t1c"] and scan.images["t1c"].name == "t1post.nii.gz"
    assert scan.truth.name == "lesions.nii.gz" and scan.mask.name == "brainmask.nii.gz"


def test_find_cases_accepts_a_case_a_dataset_and_a_folder_of_datasets(tmp_path):
    for name in ("pat1", "pat2"):
        write_case(tmp_path / "eval" / "brats" / name)
    write_case(tmp_path / "eval" / "ms" / "patient07", truth_name="gt")
    (tmp_path / "eval" / "ms" / "masks_only").mkdir()  # no images: ignored
    datasets = find_cases(tmp_path / "eval")
    assert {k: [c.id for c in v] for k, v in datasets.items()} == {"brats": ["pat1", "pat2"], "ms": ["patient07"]}
    assert list(find_cases(tmp_path / "eval" / "brats")) == ["brats"]
    assert [c.id for c in find_cases(tmp_path / "eval" / "brats" / "pat2")["brats"]] == ["pat2"]
    with pytest.raises(InputError, match="no case folder"):
        find_cases(tmp_path / "eval" / "ms" / "masks_only")


def test_contrast_sets_and_names():
    assert parse_contrast_sets(["flair", "t2+flair", "t1post"]) == [("flair",), ("flair", "t2"), ("t1c",)]
    with pytest.raises(InputError):
        parse_contrast_sets(["pd"])
    assert contrast_from_name("IXI012-HH-1211_T1.nii.gz") == "t1"
    assert contrast_from_name("sub-01_flair.nrrd") == "flair"
    assert contrast_from_name("scan.nii.gz") is None


def test_metrics_come_from_the_pipeline_outputs(tmp_path):
    datasets = find_cases(write_case(tmp_path / "d" / "c1").parent)
    tasks, _ = build_tasks(["threshold"], [("flair",)], datasets, "cpu")
    case = datasets["d"][0]
    result = run_detect(case, tasks[0], Settings())
    truth = read_truth(case.truth, result.anomaly_map)
    row, scores, labels, sweep = score_case(result, truth, None)
    brain = result.postprocessor.brain()
    assert scores.size == labels.size == brain.sum() == row["voxels_evaluated"]
    segmentation = np.asarray(result.labels_array) > 0
    assert row["dice_operating"] == pytest.approx(dice(segmentation, truth))
    assert row["threshold_method"] == "calibrated" and row["dice_calibrated"] == row["dice_operating"]
    assert row["auprc"] > 0.9 and row["lesions_truth"] == 2
    central, central_scores, _, _ = score_case(result, truth, 0.5)
    assert central_scores.size < scores.size and central["voxels_evaluated"] == central_scores.size
    # the false-positive-rate sweep re-thresholds the same segmentation: at the run's own rate it
    # is the operating Dice, and a higher rate never flags fewer voxels
    assert set(sweep) == set(OPERATING_FPRS)
    assert row[fpr_column(result.fpr)] == pytest.approx(row["dice_operating"])
    flagged = [sweep[fpr][0] for fpr in sorted(OPERATING_FPRS)]
    assert flagged == sorted(flagged)


def test_evaluate_command_writes_tables_and_plots(tmp_path, capsys):
    cases = tmp_path / "cases"
    write_case(cases / "c1", contrasts=("flair", "t1"))
    write_case(cases / "c2", contrasts=("flair", "t1"), lesions=(((16, 22, 12), 3),), seed=1)
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    write_image(healthy / "h1_flair.nii.gz", "flair", lesions=(), seed=3)
    write_image(healthy / "h2_flair.nii.gz", "flair", lesions=(), seed=4)
    out = tmp_path / "out"
    code = main(["evaluate", "--cases", str(cases), "--model", "threshold", "--out", str(out),
                 "--healthy", str(healthy), "--quiet"])
    assert code == 0
    for name in ("summary.csv", "summary.md", "cases.csv", "healthy.csv", "report.md", "evaluation.json",
                 "pr_curves_cases.png", "per_case_cases.png", "overlays/cases_c1.png", "overlays/cases_c2.png"):
        assert (out / name).is_file(), name
    with open(out / "summary.csv", encoding="utf-8") as handle:
        summary = {row["contrasts"]: row for row in csv.DictReader(handle)}
    assert set(summary) == {"flair", "t1"}
    assert float(summary["flair"]["auprc"]) > 0.9 and float(summary["t1"]["auprc"]) > 0.5
    assert summary["flair"]["model"] == "threshold" and summary["flair"]["cases"] == "2"
    assert float(summary["flair"]["dice_calibrated"]) >= 0  # the bundled baseline is calibrated
    assert float(summary["flair"]["volume_auroc"]) == 1.0 and summary["t1"]["volume_auroc"] == ""
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| cases | flair | threshold | 2 |" in report
    document = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert len(document["cases"]) == 4 and len(document["healthy"]) == 2
    assert "AUPRC" in capsys.readouterr().out


def test_calibrated_model_reports_dice_at_its_calibrated_threshold(tmp_path):
    """A copy of the baseline with its own healthy calibration gets the Dice@calibrated column; one
    without calibration reports it as n/a."""
    import shutil

    import SimpleITK as sitk

    from UADBrainLib.bundle import find_bundle, write_metadata
    from UADBrainLib.inference.calibration import compute_calibration
    from UADBrainLib.inference.pipeline import detect_raw_scores

    healthy = write_image(tmp_path / "h_flair.nii.gz", "flair", lesions=(), seed=7)
    raw = detect_raw_scores({"flair": healthy}, model="threshold")
    maps = {name: sitk.GetArrayFromImage(image) for name, image in raw.channel_maps.items()}
    mask = raw.postprocessor.working_mask  # the channel maps' grid: 1 mm
    bundle_dir = tmp_path / "calibrated"
    shutil.copytree(find_bundle("threshold").path, bundle_dir)
    metadata = json.loads((bundle_dir / "metadata.json").read_text(encoding="utf-8"))
    metadata["name"] = "threshold-calibrated"
    metadata["calibration"] = compute_calibration([(maps, mask, 0.001)], ["flair"])
    write_metadata(bundle_dir, metadata)

    datasets = find_cases(write_case(tmp_path / "d" / "c1").parent)
    tasks, _ = build_tasks([str(bundle_dir)], [("flair",)], datasets, "cpu")
    assert [t.model_name for t in tasks] == ["threshold-calibrated", "threshold"]
    # a single small healthy volume resolves false-positive rates down to about 0.002
    evaluation = evaluate(datasets, tasks, Settings(fpr=0.01), overlays=False)
    rows = {r["model"]: r for r in evaluation.summary_rows}
    assert rows["threshold-calibrated"]["threshold_method"] == "calibrated"
    assert rows["threshold-calibrated"]["dice_calibrated"] == rows["threshold-calibrated"]["dice_operating"]
    uncalibrated_dir = tmp_path / "uncalibrated"
    shutil.copytree(bundle_dir, uncalibrated_dir)
    metadata.update(name="threshold-uncalibrated", calibration=None)
    write_metadata(uncalibrated_dir, metadata)
    tasks, _ = build_tasks([str(uncalibrated_dir)], [("flair",)], datasets, "cpu")
    row = evaluate(datasets, tasks[:1], Settings(), overlays=False).summary_rows[0]
    assert row["threshold_method"] == "otsu" and row["dice_calibrated"] is None


def test_models_that_cannot_take_a_contrast_are_listed_not_run(tmp_path):
    datasets = find_cases(write_case(tmp_path / "d" / "c1").parent)
    tasks, skipped = build_tasks(["threshold"], [("flair",), ("t2",)], datasets, "cpu")
    evaluation = evaluate(datasets, tasks, Settings(), overlays=False, skipped=skipped)
    assert [r["contrasts"] for r in evaluation.summary_rows] == ["flair"]  # the cases have no t2


def test_baseline_on_the_real_evaluation_cases(shared_data):
    """Thresholding on BraTS and MS FLAIR through the one pipeline; FINDINGS.md: AUPRC 0.94 / 0.45."""
    started = time.perf_counter()
    eval_dir = shared_data / "eval"
    datasets = {**find_cases(eval_dir / "brats2015"), **find_cases(eval_dir / "ms_lesjak2017")}
    tasks, _ = build_tasks(["threshold"], [("flair",)], datasets, "cpu")
    evaluation = evaluate(datasets, tasks, Settings(), overlays=False)
    summary = {r["dataset"]: r for r in evaluation.summary_rows}
    assert summary["brats2015"]["cases"] == 4 and summary["ms_lesjak2017"]["cases"] == 2
    assert summary["brats2015"]["auprc"] > 0.9 and summary["brats2015"]["best_dice"] > 0.85
    assert summary["ms_lesjak2017"]["auprc"] > 0.4 and summary["ms_lesjak2017"]["best_dice"] > 0.4
    print(f"real-data evaluation took {time.perf_counter() - started:.1f} s")
