"""``uadbrain detect --batch``: folder and CSV cohorts, summary, resume, one bad scan."""

import csv

import pytest

from synthetic_cases import write_case, write_image
from UADBrainLib.cli.main import main
from UADBrainLib.cohort import scans_from_csv
from UADBrainLib.inference.result_files import OUTPUT_FILES


def read_summary(out):
    with open(out / "summary.csv", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def cohort(tmp_path):
    folder = tmp_path / "cohort"
    write_case(folder / "s1", truth_name=None)
    write_case(folder / "s2", truth_name=None, mask=False, seed=1)
    write_image(folder / "s3.nii.gz", "flair", seed=2)
    (folder / "broken_flair.nii.gz").write_bytes(b"not an image")
    return folder


def test_folder_cohort_runs_every_scan_and_records_failures(cohort, tmp_path):
    out = tmp_path / "out"
    code = main(["detect", "--batch", str(cohort), "--contrast", "flair", "--out", str(out), "--quiet"])
    assert code == 1  # one scan failed
    summary = read_summary(out)
    assert {k: v["status"] for k, v in summary.items()} == {
        "broken_flair": "failed", "s1": "done", "s2": "done", "s3": "done"}
    assert "cannot read" in summary["broken_flair"]["error"]
    for scan in ("s1", "s2", "s3"):
        assert all((out / scan / name).is_file() for name in OUTPUT_FILES)
        assert int(summary[scan]["lesion_count"]) >= 1 and float(summary[scan]["flagged_volume_ml"]) > 0
        assert summary[scan]["volume_score"] and summary[scan]["threshold_method"] == "calibrated"
    assert 0 <= float(summary["s1"]["volume_percentile_among_healthy"]) <= 100  # from the healthy calibration


def test_rerun_resumes_and_recomputes_when_settings_change(cohort, tmp_path):
    out = tmp_path / "out"
    arguments = ["detect", "--batch", str(cohort), "--contrast", "flair", "--out", str(out), "--quiet"]
    main(arguments)
    written = (out / "s1" / "anomaly_map.nii.gz").stat().st_mtime_ns
    (out / "s2" / "overview.png").unlink()  # an incomplete scan is redone
    main(arguments)
    summary = read_summary(out)
    assert summary["s1"]["status"] == "reused" and summary["s3"]["status"] == "reused"
    assert summary["s2"]["status"] == "done" and summary["broken_flair"]["status"] == "failed"
    assert (out / "s1" / "anomaly_map.nii.gz").stat().st_mtime_ns == written
    assert summary["s1"]["lesion_count"] and summary["s1"]["volume_score"]  # taken from report.json
    main(arguments + ["--median", "3"])
    assert {row["status"] for row in read_summary(out).values()} == {"done", "failed"}


def test_rerun_recomputes_a_scan_whose_input_changed_in_place(cohort, tmp_path):
    out = tmp_path / "out"
    arguments = ["detect", "--batch", str(cohort), "--contrast", "flair", "--out", str(out), "--quiet"]
    main(arguments)
    write_image(cohort / "s3.nii.gz", "flair", seed=9)  # same path, other content
    main(arguments)
    summary = read_summary(out)
    assert summary["s3"]["status"] == "done" and summary["s1"]["status"] == "reused"


def test_a_scan_folder_is_replaced_whole_and_stale_staging_is_removed(cohort, tmp_path):
    out = tmp_path / "out"
    arguments = ["detect", "--batch", str(cohort), "--contrast", "flair", "--out", str(out), "--quiet"]
    main(arguments)
    (out / "s1" / "leftover.txt").write_text("from an older version")
    stale = out / ".s1.uadbrain-partial-killed"  # what a run killed while writing leaves
    stale.mkdir()
    (stale / "anomaly_map.nii.gz").write_bytes(b"half")
    main(arguments + ["--median", "3"])
    assert not stale.exists() and not (out / "s1" / "leftover.txt").exists()
    assert sorted(p.name for p in (out / "s1").iterdir()) == sorted(OUTPUT_FILES)
    assert not [p for p in out.iterdir() if "uadbrain-partial" in p.name]


def test_plain_files_need_a_contrast(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    write_image(folder / "subject1.nii.gz")
    write_image(folder / "subject2_FLAIR.nii.gz")
    out = tmp_path / "out"
    assert main(["detect", "--batch", str(folder), "--out", str(out), "--quiet"]) == 1
    summary = read_summary(out)
    assert summary["subject1"]["status"] == "failed" and "--contrast" in summary["subject1"]["error"]
    assert summary["subject2_FLAIR"]["status"] == "done"


def test_csv_cohort_with_relative_paths_ids_and_masks(tmp_path):
    write_case(tmp_path / "data" / "a", truth_name=None)
    write_case(tmp_path / "data" / "b", truth_name=None, seed=1)
    listing = tmp_path / "scans.csv"
    listing.write_text("id,flair,mask\n"
                       "first,data/a/flair.nii.gz,data/a/brainmask.nii.gz\n"
                       "second,data/b/flair.nii.gz,\n"
                       "first,data/b/flair.nii.gz,\n"
                       "missing,data/c/flair.nii.gz,\n", encoding="utf-8")
    scans = scans_from_csv(listing)
    assert scans[0].mask == tmp_path / "data" / "a" / "brainmask.nii.gz" and scans[1].mask is None
    out = tmp_path / "out"
    assert main(["detect", "--batch", str(listing), "--out", str(out), "--quiet"]) == 1
    rows = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    assert [(r["id"], r["status"]) for r in rows] == [
        ("first", "done"), ("second", "done"), ("first", "failed"), ("missing", "failed")]
    assert "another scan has the id" in rows[2]["error"] and "does not exist" in rows[3]["error"]
    import json

    report = json.loads((out / "first" / "report.json").read_text(encoding="utf-8"))
    assert report["brain_mask_method"] == "given" and report["scan_id"] == "first"


def test_a_csv_age_column_gives_each_scan_its_age(tmp_path):
    write_case(tmp_path / "data" / "a", truth_name=None)
    listing = tmp_path / "scans.csv"
    listing.write_text("id,flair,age\n"
                       "aged,data/a/flair.nii.gz,71\n"
                       "typo,data/a/flair.nii.gz,seventy\n"
                       "unknown,data/a/flair.nii.gz,\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["detect", "--batch", str(listing), "--out", str(out), "--age", "40", "--quiet"]) == 0
    rows = read_summary(out)
    assert {row["status"] for row in rows.values()} == {"done"}  # the default model uses no age
    import json

    reports = {name: json.loads((out / name / "report.json").read_text(encoding="utf-8")) for name in rows}
    assert reports["aged"]["age"] == 71.0 and reports["unknown"]["age"] == 40.0  # the column, else --age
    assert any("age not used" in w for w in reports["aged"]["warnings"])  # the default model is not conditioned
    assert "'seventy' is no age" in reports["typo"]["age_not_read"]  # said, not fatal (test_cohorts: conditioned)


def test_batch_refuses_single_scan_inputs(tmp_path, capsys):
    code = main(["detect", "--batch", str(tmp_path), "--flair", "x.nii.gz", "--out", str(tmp_path / "o")])
    assert code == 2 and "a cohort takes its scans" in capsys.readouterr().err


def test_an_empty_cohort_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["detect", "--batch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no scan" in capsys.readouterr().err
