"""``uadbrain validation-set``: synthetic cases by anomaly type that ``uadbrain evaluate`` reads."""

import json
import shutil

import numpy as np
import SimpleITK as sitk

from UADBrainLib.cli.main import main
from UADBrainLib.cohort import find_cases
from UADBrainLib.synthesis.example import EXAMPLE_LABELS


def test_cases_by_type_at_two_grids_read_as_evaluation_cases(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    shutil.copy(EXAMPLE_LABELS, maps / "example_labels.nii.gz")
    out = tmp_path / "validation"
    assert main(["validation-set", "--label-maps", str(maps), "--out", str(out), "--types", "bright", "tumour",
                 "--cases-per-type", "1", "--held-out-maps", "1", "--acquisitions", "1", "2x2x5",
                 "--contrasts", "flair", "t1"]) == 0
    datasets = find_cases(out)
    assert sorted(datasets) == ["bright_1mm", "bright_2x2x5mm", "tumour_1mm", "tumour_2x2x5mm"]
    for name, scans in datasets.items():
        (scan,) = scans
        assert set(scan.images) == {"flair", "t1"} and scan.mask is not None and scan.truth is not None
        truth = sitk.ReadImage(str(scan.truth))
        image = sitk.ReadImage(str(scan.images["flair"]))
        assert truth.GetSpacing() == image.GetSpacing() and truth.GetOrigin() == image.GetOrigin()
        assert np.allclose(image.GetSpacing(), (1, 1, 1) if name.endswith("_1mm") else (2, 2, 5))
        assert sitk.GetArrayViewFromImage(truth).any()
    record = json.loads((out / "validation_set.json").read_text(encoding="utf-8"))
    assert record["label_maps_held_out"] == ["example_labels.nii.gz"] and record["types"] == ["bright", "tumour"]
    # the same seed draws the same case whatever other types are asked for
    again = tmp_path / "again"
    assert main(["validation-set", "--label-maps", str(maps), "--out", str(again), "--types", "tumour",
                 "--cases-per-type", "1", "--held-out-maps", "1", "--acquisitions", "1", "--contrasts", "flair", "t1"]) == 0
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tumour_1mm" / "case_000" / "seg.nii.gz")))
    second = sitk.GetArrayFromImage(sitk.ReadImage(str(again / "tumour_1mm" / "case_000" / "seg.nii.gz")))
    assert np.array_equal(first, second)


def test_a_count_below_one_is_refused_in_one_line(tmp_path, capsys):
    assert main(["validation-set", "--label-maps", str(tmp_path), "--cases-per-type", "0"]) == 2
    assert capsys.readouterr().err.strip().startswith("uadbrain: error: --cases-per-type must be at least 1")
