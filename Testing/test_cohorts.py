"""Cohorts at scale: BIDS in, BIDS derivatives out, Dask workers, job-array parts, the cohort report,
DICOM SEG (issue 17)."""

import csv
import fnmatch
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthetic_cases import to_image, volumes, write_bids_dataset, write_case, write_image
from test_bad_inputs import dicom_series
from UADBrainLib.cli.main import main
from UADBrainLib.cohorts.layouts import LESION_COLUMN_DESCRIPTIONS
from UADBrainLib.inference.result_files import LESION_COLUMNS, OUTPUT_FILES

pytest.importorskip("distributed", reason='the cohort extra is not installed: pip install "uadbrain[cohort]"')
pytest.importorskip("bids", reason='the cohort extra is not installed: pip install "uadbrain[cohort]"')


def read_summary(path):
    with open(path, encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def bids_naming_problems(root: Path) -> list[str]:
    """What in ``root`` breaks the BIDS derivatives naming rules, read from the BIDS schema itself
    (bidsschematools): the description file, the folders, each name's entities (known keys, in the
    schema's order, alphanumeric labels, matching their folders) and its suffix and extension
    (a derivative anat rule's, else listed in .bidsignore)."""
    from bidsschematools import schema as bids_schema

    schema = bids_schema.load_schema()
    order = [schema.objects.entities[name].name for name in schema.rules.entities]
    anat_rules = [rule for name, rule in schema.rules.files.deriv.imaging.items() if name.startswith("anat_")]
    problems = []
    description = json.loads((root / "dataset_description.json").read_text())
    if description.get("DatasetType") != "derivative" or not description.get("GeneratedBy", [{}])[0].get("Name"):
        problems.append("dataset_description.json: DatasetType derivative and GeneratedBy[].Name are required")
    ignored = [line.strip() for line in (root / ".bidsignore").read_text().splitlines() if line.strip()]

    def is_ignored(relative: str) -> bool:
        return any(fnmatch.fnmatch(Path(relative).name, pattern) or relative.startswith(pattern.rstrip("/") + "/")
                   and pattern.endswith("/") or fnmatch.fnmatch(relative, pattern) for pattern in ignored)

    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        parts = relative.split("/")
        if len(parts) == 1:
            if path.name not in ("dataset_description.json", "README", "CHANGES", "LICENSE") and not is_ignored(relative):
                problems.append(f"{relative}: not a BIDS top-level file and not in .bidsignore")
            continue
        if "/figures/" in f"/{relative}" and is_ignored(relative.split("/", 1)[1]):
            continue
        if not (parts[0].startswith("sub-") and parts[-2] == "anat"
                and (len(parts) == 3 or (len(parts) == 4 and parts[1].startswith("ses-")))):
            problems.append(f"{relative}: not in sub-X/[ses-Y/]anat/")
            continue
        name = path.name
        extension = name[name.index("."):]
        *pairs, suffix = name[: -len(extension)].split("_")
        keys = [pair.split("-", 1)[0] for pair in pairs]
        if any(len(pair.split("-", 1)) != 2 or not pair.split("-", 1)[1].isalnum() for pair in pairs):
            problems.append(f"{relative}: entities must be key-label with an alphanumeric label")
            continue
        if keys != sorted(keys, key=lambda key: order.index(key) if key in order else -1) or \
                not set(keys) <= set(order):
            problems.append(f"{relative}: entities unknown or out of the schema's order: {keys}")
        labels = dict(pair.split("-", 1) for pair in pairs)
        if f"sub-{labels.get('sub')}" != parts[0] or (len(parts) == 4 and f"ses-{labels.get('ses')}" != parts[1]):
            problems.append(f"{relative}: sub/ses entities differ from the folders")
        by_rule = any(suffix in rule.suffixes and extension in rule.extensions
                      and {schema.objects.entities[e].name for e in rule.entities} >= set(keys)
                      for rule in anat_rules)
        if not by_rule and not is_ignored(relative):
            problems.append(f"{relative}: suffix '{suffix}{extension}' is in no derivative anat rule nor .bidsignore")
    return problems


def test_a_bids_dataset_runs_on_local_dask_workers_into_a_valid_derivatives_dataset(tmp_path):
    dataset = write_bids_dataset(tmp_path / "dataset")
    out = dataset / "derivatives" / "uadbrain"
    code = main(["detect", "--bids", str(dataset), "--out", str(out), "--workers", "2", "--quiet"])
    assert code == 1  # sub-03 is reported, not fatal
    summary = read_summary(out / "summary.csv")
    assert {k: v["status"] for k, v in summary.items()} == {
        "sub-01_ses-1": "done", "sub-01_ses-2": "done", "sub-02": "done", "sub-03": "failed"}
    assert "2 flair images" in summary["sub-03"]["error"]
    assert len({row["worker"] for row in summary.values() if row["status"] == "done"}) >= 1
    assert bids_naming_problems(out) == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert [g["Name"] for g in description["GeneratedBy"]] == ["UADBrain", "UADBrain model auto"]
    assert description["GeneratedBy"][1]["Version"]
    anat = out / "sub-01" / "ses-2" / "anat"
    sidecar = json.loads((anat / "sub-01_ses-2_space-orig_desc-anomaly_map.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz"]
    assert sidecar["age"] == 36  # the session's age, from sub-01_sessions.tsv
    assert summary["sub-02"]["age"] == "89" and summary["sub-02"]["sex"] == "M"  # '89+' de-identified
    second = json.loads((out / "sub-02" / "anat" / "sub-02_space-orig_desc-anomaly_map.json").read_text())
    assert second["brain_mask_method"] == "given"  # the derivatives' desc-brain_mask
    with open(anat / "sub-01_ses-2_space-orig_desc-anomaly_lesions.tsv", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    assert tuple(header) == LESION_COLUMNS
    columns = json.loads((anat / "sub-01_ses-2_space-orig_desc-anomaly_lesions.json").read_text())
    assert set(columns) == set(LESION_COLUMNS) and columns["volume_ml"]["Units"] == "mL"
    dseg = sitk.ReadImage(str(anat / "sub-01_ses-2_space-orig_desc-anomaly_dseg.nii.gz"))
    lookup = (anat / "sub-01_ses-2_space-orig_desc-anomaly_dseg.tsv").read_text().splitlines()
    assert lookup[0] == "index\tname" and len(lookup) - 1 == int(sitk.GetArrayViewFromImage(dseg).max())
    assert (out / "sub-01" / "figures" / "sub-01_ses-2_desc-anomaly_overview.png").is_file()

    from bids import BIDSLayout  # pybids reads it back as a derivatives dataset

    layout = BIDSLayout(out, validate=False, is_derivative=True)
    assert len(layout.get(desc="anomaly", suffix="dseg", extension=".nii.gz")) == 3

    rerun = main(["detect", "--bids", str(dataset), "--out", str(out), "--participant-label", "sub-02", "01",
                  "--session", "2", "--quiet"])
    assert rerun == 0
    assert {k: v["status"] for k, v in read_summary(out / "summary.csv").items()} == {
        "sub-01_ses-2": "reused"}  # sub-02 has no session 2


def test_a_bids_dataset_without_derivatives_and_one_subject_asked_for(tmp_path):
    import shutil

    from UADBrainLib.cohorts.bids import scans_from_bids

    dataset = write_bids_dataset(tmp_path / "dataset")
    shutil.rmtree(dataset / "derivatives")
    scans = scans_from_bids(dataset, participant_labels=["sub-02"])
    assert [(s.id, sorted(s.images), s.mask) for s in scans] == [("sub-02", ["flair", "t1"], None)]


def test_bids_refusals_name_the_problem(tmp_path, capsys):
    dataset = write_bids_dataset(tmp_path / "dataset")
    assert main(["detect", "--bids", str(dataset), "--participant-label", "09", "--out", str(tmp_path / "o")]) == 2
    assert "no subject 09" in capsys.readouterr().err
    assert main(["detect", "--bids", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset_description.json" in capsys.readouterr().err
    assert main(["detect", "--batch", str(tmp_path), "--session", "1", "--out", str(tmp_path / "o")]) == 2
    assert "give --bids" in capsys.readouterr().err
    assert main(["detect", "--example", "--part", "1/2", "--out", str(tmp_path / "o")]) == 2
    assert "run a cohort" in capsys.readouterr().err
    assert main(["detect", "--bids", str(dataset), "--dicom-seg", "--out", str(tmp_path / "o")]) == 2
    assert "BIDS dataset holds NIfTI" in capsys.readouterr().err
    assert main(["detect", "--bids", str(dataset), "--workers", "2", "--scheduler", "tcp://h:8786",
                 "--out", str(tmp_path / "o")]) == 2
    assert "has its own" in capsys.readouterr().err


def run_killing_a_busy_worker(tmp_path, count: int, allowed_failures: int | None = None) -> list[dict]:
    """``count`` scans on a 2-worker LocalCluster; when the first scan finishes, the worker busy with
    another is killed with SIGKILL. ``allowed_failures``: the scheduler's retries (None: Dask's)."""
    import contextlib

    import dask
    from distributed import Client, LocalCluster

    from UADBrainLib.bundle import find_bundle
    from UADBrainLib.cohort import Scan
    from UADBrainLib.cohorts.layouts import ScanFolders
    from UADBrainLib.cohorts.runner import CohortJob, run_cohort
    from UADBrainLib.inference.options import DEFAULTS

    scans = [Scan(id=f"s{n}", images={"flair": write_image(tmp_path / f"s{n}.nii.gz", seed=n)}) for n in range(count)]
    out = tmp_path / "out"
    job = CohortJob(str(find_bundle("threshold").path), "cpu", DEFAULTS, ScanFolders(out), torch_threads=1)
    killed = []
    retries = (dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures})
               if allowed_failures is not None else contextlib.nullcontext())
    with retries, LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_a_busy_worker(row):
            busy = [address for address, tasks in client.processing().items() if tasks]
            if not killed and busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])

        rows = run_cohort(job, scans, out / "summary.csv", scheduler=cluster.scheduler_address,
                          on_row=kill_a_busy_worker)
    assert killed, "no worker was busy when the first scan finished"
    return rows


@pytest.mark.alone
def test_a_worker_killed_mid_run_loses_no_scan(tmp_path):
    rows = run_killing_a_busy_worker(tmp_path, 6)
    # "reused": the killed worker had written that scan's outputs before the scheduler heard it finish
    assert len(rows) == 6 and {row["status"] for row in rows} <= {"done", "reused"}, \
        [(row["id"], row["status"], row["error"]) for row in rows]
    assert all((tmp_path / "out" / f"s{n}" / name).is_file() for n in range(6) for name in OUTPUT_FILES)
    # each worker process loaded the model once, however many scans it ran
    assert all(row["model_loads"] == 1 for row in rows)


@pytest.mark.alone
def test_scans_whose_workers_keep_dying_are_reported_and_the_cohort_goes_on(tmp_path):
    rows = run_killing_a_busy_worker(tmp_path, 6, allowed_failures=0)  # one death is all the scheduler allows
    failed = [row for row in rows if row["status"] == "failed"]
    # the scans the killed worker held (running, or queued on it) are reported; the cohort went on
    assert failed and all("every worker that ran it died" in row["error"] for row in failed)
    assert len(rows) == 6 and all(row["status"] in ("done", "reused") for row in rows if row not in failed)


def test_a_scan_whose_result_the_cluster_lost_is_sent_again(tmp_path, monkeypatch, caplog):
    """A finished scan whose worker was killed before its result was gathered made Dask raise (seen
    in CI: the scan reported failed); it is sent again and its outputs reused. A task that raised on
    its worker is not: it would fail the same way."""
    from distributed import Future

    from UADBrainLib.bundle import find_bundle
    from UADBrainLib.cohort import Scan
    from UADBrainLib.cohorts.layouts import ScanFolders
    from UADBrainLib.cohorts.runner import CohortJob, run_cohort
    from UADBrainLib.inference.options import DEFAULTS

    result = Future.result
    lost = []

    def result_lost_once(future, timeout=None):
        row = result(future, timeout)
        if row["id"] == "s1" and not lost:
            lost.append(future.key)
            raise RuntimeError("<asyncio.locks.Event object [unset]> is bound to a different event loop")
        return row

    monkeypatch.setattr(Future, "result", result_lost_once)
    scans = [Scan(id=f"s{n}", images={"flair": write_image(tmp_path / f"s{n}.nii.gz", seed=n)}) for n in range(3)]
    out = tmp_path / "out"
    job = CohortJob(str(find_bundle("threshold").path), "cpu", DEFAULTS, ScanFolders(out), torch_threads=1)
    rows = run_cohort(job, scans, out / "summary.csv", scheduler="local", workers=1)
    assert lost and [(row["id"], row["status"]) for row in rows] == [("s0", "done"), ("s1", "reused"), ("s2", "done")]
    assert "scan s1: RuntimeError" in caplog.text and "sent again" in caplog.text
    caplog.clear()
    broken = CohortJob(str(tmp_path / "no-such-model"), "cpu", DEFAULTS, ScanFolders(out), torch_threads=1)
    rows = run_cohort(broken, scans[:1], out / "summary.csv", scheduler="local", workers=1)
    assert rows[0]["status"] == "failed" and "no-such-model" in rows[0]["error"] and "sent again" not in caplog.text


def test_parts_of_a_job_array_are_disjoint_whole_and_gathered_by_a_plain_rerun(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for n in range(5):
        write_image(cohort / f"s{n}_flair.nii.gz", seed=n)
    (cohort / "s5_flair.nii.gz").write_bytes(b"broken")
    out = tmp_path / "out"
    arguments = ["detect", "--batch", str(cohort), "--model", "threshold", "--out", str(out), "--quiet"]
    for part in ("1/2", "2/2"):
        main(arguments + ["--part", part])
    first, second = (read_summary(out / f"summary.part-{k}-of-2.csv") for k in (1, 2))
    assert set(first).isdisjoint(second) and set(first) | set(second) == {f"s{n}_flair" for n in range(6)}
    assert (out / "cohort_report.part-1-of-2.html").is_file()
    assert main(arguments) == 1  # s5 is broken
    gathered = read_summary(out / "summary.csv")
    assert {k: v["status"] for k, v in gathered.items()} == {
        **{f"s{n}_flair": "reused" for n in range(5)}, "s5_flair": "failed"}
    assert main(arguments + ["--part", "3/2"]) == 2


def test_the_cohort_report_ranks_scans_shows_overviews_and_failures(tmp_path):
    cohort = tmp_path / "cohort"
    write_case(cohort / "big", truth_name=None, lesions=(((18, 14, 14), 5),))
    write_case(cohort / "small", truth_name=None, lesions=(((18, 14, 14), 2),), seed=1)
    (cohort / "broken_flair.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    main(["detect", "--batch", str(cohort), "--model", "threshold", "--out", str(out), "--quiet"])
    page = (out / "cohort_report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3  # the distributions and one overview per scan that ran
    assert page.index("scan-big") < page.index("scan-small")  # most anomalous first
    assert "Failures" in page and "cannot read" in page
    assert "src='http" not in page and "href='http" not in page  # self-contained


def test_an_unreadable_age_fails_a_scan_only_for_a_model_conditioned_on_age(tmp_path, monkeypatch):
    from UADBrainLib.cohort import Scan
    from UADBrainLib.cohorts import runner
    from UADBrainLib.cohorts.layouts import ScanFolders
    from UADBrainLib.inference.options import DEFAULTS

    class ConditionedOnAge:
        conditioning = ("age",)

    monkeypatch.setitem(runner._loaded_models, ("conditioned", "cpu"), ConditionedOnAge())
    job = runner.CohortJob("conditioned", "cpu", DEFAULTS, ScanFolders(tmp_path))
    row = runner.process_scan(job, Scan(id="s", images={"flair": write_image(tmp_path / "s.nii.gz")}, age="20-25"))
    assert row["status"] == "failed" and "participants.tsv" in row["error"]  # an age band: no age for the model


def test_every_lesion_column_is_described_for_the_bids_sidecar():
    assert tuple(LESION_COLUMN_DESCRIPTIONS) == LESION_COLUMNS


def dicom_case(folder: Path, seed: int = 0) -> Path:
    images, _, _ = volumes(("flair",), (((18, 14, 14), 4),), seed)
    return dicom_series(folder, to_image(images["flair"] * 10), series_uid=f"1.2.826.0.1.3680043.2.1125.7.{seed + 1}")


def test_dicom_seg_reads_back_with_the_series_geometry_and_the_modules_coding(tmp_path):
    import highdicom
    import pydicom

    from UADBrainLib.inference.dicom_seg import SEGMENT_CATEGORY, SEGMENT_REGION, SEGMENT_TYPE
    from UADBrainMRML.segmentation import TERMINOLOGY_ENTRY

    series = dicom_case(tmp_path / "series")
    out = tmp_path / "out"
    assert main(["detect", "--flair", str(series), "--model", "threshold", "--dicom-seg", "--out", str(out),
                 "--quiet"]) == 0
    seg = highdicom.seg.segread(str(out / "segmentation.dcm"))
    sources = sorted((pydicom.dcmread(p) for p in series.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    description = seg.SegmentSequence[0]
    coded = [(c.CodingSchemeDesignator, c.CodeValue, c.CodeMeaning) for c in (
        description.SegmentedPropertyCategoryCodeSequence[0], description.SegmentedPropertyTypeCodeSequence[0],
        description.AnatomicRegionSequence[0])]
    assert coded == [SEGMENT_CATEGORY, SEGMENT_TYPE, SEGMENT_REGION]
    for scheme, value, meaning in coded:  # the same codes as the Slicer module's terminology entry
        assert f"{scheme}^{value}^" in TERMINOLOGY_ENTRY
    pixels = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in sources], segment_numbers=[1])[..., 0]
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nii.gz"))) > 0
    assert pixels.shape == expected.shape and np.array_equal(pixels > 0, expected) and expected.any()


def test_dicom_seg_in_a_batch_and_its_refusals(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    dicom_case(cohort / "dicom_scan" / "flair")
    write_image(cohort / "nifti_flair.nii.gz")
    out = tmp_path / "out"
    assert main(["detect", "--batch", str(cohort), "--model", "threshold", "--dicom-seg", "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "dicom_scan" / "segmentation.dcm").is_file()
    report = json.loads((out / "nifti_flair" / "report.json").read_text())
    assert report["dicom_seg"].startswith("not written") and not (out / "nifti_flair" / "segmentation.dcm").exists()
    rerun = main(["detect", "--batch", str(cohort), "--model", "threshold", "--dicom-seg", "--out", str(out), "--quiet"])
    assert rerun == 0 and {r["status"] for r in read_summary(out / "summary.csv").values()} == {"reused"}
    assert main(["detect", "--flair", str(cohort / "nifti_flair.nii.gz"), "--dicom-seg", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--dicom-seg references a DICOM series" in capsys.readouterr().err


def test_a_dicom_seg_that_cannot_be_written_leaves_the_other_outputs_and_says_why(tmp_path, monkeypatch, capsys):
    from UADBrainLib.errors import InputError
    from UADBrainLib.inference import dicom_seg

    def refuse(*_):
        raise InputError("DICOM SEG: the series cannot be referenced (no frame of reference)")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", refuse)
    out = tmp_path / "out"
    code = main(["detect", "--flair", str(dicom_case(tmp_path / "series")), "--model", "threshold", "--dicom-seg",
                 "--out", str(out), "--quiet"])
    assert code == 1 and "no frame of reference" in capsys.readouterr().err
    assert all((out / name).is_file() for name in OUTPUT_FILES) and not (out / "segmentation.dcm").exists()
    assert json.loads((out / "report.json").read_text())["dicom_seg"].startswith("not written")
