import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from phantoms import geometry_of, phantom_brain
from UADBrainLib.cli.main import main
from UADBrainLib.inference.result_files import OUTPUT_FILES


def write(image, path):
    sitk.WriteImage(image, str(path))
    return str(path)


def test_detect_writes_every_output_on_the_input_grid(tmp_path, capsys):
    image, brain, _ = phantom_brain()
    flair = write(image, tmp_path / "flair.nii.gz")
    mask = write(brain, tmp_path / "mask.nrrd")
    out = tmp_path / "out"
    assert main(["detect", "--flair", flair, "--mask", mask, "--out", str(out), "--threshold", "5",
                 "--median", "3", "--min-size-mm3", "10", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    for name in ("anomaly_map.nii.gz", "segmentation.nii.gz"):
        written = sitk.ReadImage(str(out / name))
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(geometry_of(written), geometry_of(image)))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["threshold"] == 5.0 and report["median"] == 3 and report["brain_mask_method"] == "given"
    rows = list(csv.DictReader(open(out / "lesions.csv", encoding="utf-8")))
    assert len(rows) == report["lesion_count"] == 1
    assert float(rows[0]["volume_ml"]) == pytest.approx(report["lesions"][0]["volume_ml"])
    assert "1 lesion(s)" in capsys.readouterr().out


def test_example_runs_end_to_end(tmp_path):
    out = tmp_path / "example"
    assert main(["detect", "--example", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "example_lesion.nii.gz"))) > 0
    found = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nii.gz"))) > 0
    assert report["lesion_count"] >= 1
    assert (truth & found).sum() > 0.5 * truth.sum()  # most of the inserted lesion is flagged
    assert (out / "overview.png").stat().st_size > 10_000


def readme_command_one() -> list[str]:
    """The arguments of the ``uadbrain`` call in the README's Quick start command 1."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    line = next(text for text in readme.read_text(encoding="utf-8").splitlines()
                if "pip install -e ." in text and "uadbrain detect" in text)
    return shlex.split(line.split("&& uadbrain ", 1)[1])


def test_readme_command_one_finds_the_example_lesion_with_the_learned_hybrid(tmp_path):
    args = readme_command_one()
    assert args[:2] == ["detect", "--example"] and args[args.index("--model") + 1] == "hybrid"
    out = tmp_path / "example_out"
    args[args.index("--out") + 1] = str(out)
    assert main(args + ["--quiet"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["model"] == "hybrid" and report["threshold_method"] == "calibrated"
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "example_lesion.nii.gz"))) > 0
    # the most anomalous lesion is the inserted one; at the default false-positive rate (1 % of healthy
    # brain voxels) smaller specks elsewhere are flagged too
    found = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nii.gz"))) > 0
    components, _ = ndimage.label(found)  # 6-connected, as the segmentation labels lesions
    with open(out / "lesions.csv", encoding="utf-8") as handle:
        lesion = next(csv.DictReader(handle))
    box = tuple(slice(int(lesion[f"bbox_ijk_min_{a}"]), int(lesion[f"bbox_ijk_max_{a}"]) + 1) for a in "kji")
    first = components == np.bincount(components[box].ravel())[1:].argmax() + 1
    assert 2 * (truth & first).sum() / (truth.sum() + first.sum()) > 0.7


def test_console_script_and_models_listing():
    completed = subprocess.run([sys.executable, "-m", "UADBrainLib.cli.main", "models"], capture_output=True,
                               text=True, cwd="UADBrain", check=True)
    assert "threshold" in completed.stdout


def test_serve_without_the_web_packages_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "slicer_layer_dm" else real_find_spec(name, *args))
    assert main(["serve"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install --no-deps slicer-layer-dm==2.0.0" in error


def test_help_does_not_import_torch():
    """--help answers at once: PyTorch (about a second to import) loads only when a model runs."""
    code = "import sys; from UADBrainLib.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
