"""The input check: a wrong contrast is refused with a clear message, a non-brain image only warned."""

import json
import shutil
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import phantom_brain
from UADBrainLib import DetectOptions, detect
from UADBrainLib.bundle import find_bundle, list_bundled
from UADBrainLib.cli.main import main
from UADBrainLib.errors import InputError
from UADBrainLib.inference.bundled_example import example_volume_path, load_example
from UADBrainLib.inference.input_check import INPUT_CHECK_BUNDLE, TASK, check_inputs, check_scan, decide, load_checker


@pytest.fixture(scope="module")
def example():
    return load_example()


def probabilities(**given):
    values = dict.fromkeys(("flair", "t1", "t2", "t1c", "other"), 0.0)
    values.update(given)
    return values


def test_bundle_is_checksummed_and_not_listed_as_an_anomaly_model():
    bundle = find_bundle(INPUT_CHECK_BUNDLE)
    assert bundle.metadata["task"] == TASK
    assert bundle.verified_weights_path().stat().st_size < 2_000_000
    assert load_checker(bundle).classes == ("flair", "t1", "t2", "t1c", "other")
    assert INPUT_CHECK_BUNDLE not in list_bundled()


def test_corrupt_or_missing_bundle_skips_the_check_with_a_warning(tmp_path):
    image = np.indices((20, 20, 20)).sum(axis=0).astype(np.float32)  # structured: not refused as noise
    mask = np.ones(image.shape, bool)
    copy = tmp_path / "input-check"
    shutil.copytree(find_bundle(INPUT_CHECK_BUNDLE).path, copy)
    with open(copy / "weights.pt", "ab") as handle:
        handle.write(b"tampered")
    for bundle in (copy, tmp_path / "missing"):
        outcome = check_inputs({"flair": image}, mask, (2.0, 2.0, 2.0), bundle=str(bundle))
        assert "skipped" in outcome.report and "contrast check was skipped" in outcome.warnings[0]


def test_without_torch_the_check_is_skipped(tmp_path, monkeypatch):
    copy = tmp_path / "input-check"  # a bundle not loaded yet, so loading must import torch
    shutil.copytree(find_bundle(INPUT_CHECK_BUNDLE).path, copy)
    monkeypatch.setitem(sys.modules, "torch", None)
    outcome = check_inputs({"flair": np.indices((8, 8, 8)).sum(axis=0)}, np.ones((8, 8, 8), bool), (2.0,) * 3,
                           bundle=str(copy))
    assert outcome.report == {"skipped": "torch is not installed"} and len(outcome.warnings) == 1


def test_decision_rule():
    assert decide({"flair": probabilities(flair=0.97, t2=0.03)}) == []
    assert decide({"t1": probabilities(t1c=0.98, t1=0.01)}) == []  # T1 and T1c are one group
    assert decide({"flair": probabilities(t2=0.89, flair=0.04, other=0.07)}) == []  # not confident
    assert decide({"flair": probabilities(t2=0.93, flair=0.06)}) == []  # given contrast plausible
    with pytest.raises(InputError, match=r"^flair: this image looks like a T1-weighted scan \(99%\), not FLAIR — "):
        decide({"flair": probabilities(t1=0.5, t1c=0.49, flair=0.01)})
    # confident but not beyond doubt (as a real BraTS T1c that looks 93 % FLAIR-like): a warning
    warnings = decide({"t1c": probabilities(flair=0.93, t1c=0.04, t1=0.01, t2=0.02)})
    assert len(warnings) == 1 and warnings[0].startswith("t1c: this image looks rather like a FLAIR scan (93%)")
    with pytest.raises(InputError, match=r"^flair and t2 look swapped: .* — swap the two files"):
        decide({"flair": probabilities(t2=0.96), "t2": probabilities(flair=0.97)})
    warnings = decide({"t1": probabilities(other=0.95, t1=0.05)})
    assert len(warnings) == 1 and warnings[0].startswith("t1: this image does not look like a brain MRI")


def test_a_flair_given_as_t2_is_refused_by_detect(example):
    with pytest.raises(InputError, match=r"^t2: this image looks like a FLAIR scan \(\d+%\), not T2 — check which"):
        detect({"t2": example["flair"]}, mask=example["brain_mask"])


def test_swapped_flair_and_t2_are_named(example):
    with pytest.raises(InputError, match="flair and t2 look swapped"):
        detect({"flair": example["t2"], "t2": example["flair"]}, mask=example["brain_mask"])


def test_the_right_contrasts_pass_with_their_probabilities_in_the_report(example):
    result = detect({c: example[c] for c in ("flair", "t1", "t2")}, mask=example["brain_mask"])
    check = result.report["input_check"]
    assert check["predicted"] == {"flair": "flair", "t1": "t1", "t2": "t2"}
    assert set(check["probabilities"]["flair"]) == {"flair", "t1", "t2", "t1c", "other"}
    assert [w for w in result.report["warnings"] if "not scored" not in w] == []


def test_cli_refuses_a_wrong_contrast_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", "--t2", str(example_volume_path("flair")), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("uadbrain: error: t2: this image looks like a FLAIR scan") and "\n" not in error
    assert "--no-contrast-check" in error and not out.exists()


def test_no_contrast_check_skips_it(tmp_path, example):
    out = tmp_path / "out"
    assert main(["detect", "--t2", str(example_volume_path("flair")), "--out", str(out), "--quiet",
                 "--no-contrast-check"]) == 0
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["input_check"] == {"skipped": "turned off"}
    result = detect({"t2": example["flair"]}, mask=example["brain_mask"],
                    options=DetectOptions(check_contrast=False))
    assert result.report["input_check"] == {"skipped": "turned off"}


@pytest.mark.parametrize("contrast", ["flair", "t1", "t2", "t1c"])
def test_a_toy_phantom_is_never_refused(contrast):
    image, brain, _ = phantom_brain()
    result = detect({contrast: image}, mask=brain)
    assert result.report["input_check"]["predicted"][contrast] == "other"


def test_a_non_brain_image_gets_a_warning_on_stderr(tmp_path, capsys):
    image, brain, _ = phantom_brain()
    path = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(image, str(path))
    assert main(["detect", "--flair", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    for warning in report["warnings"]:
        assert f"uadbrain: warning: {warning}" in capsys.readouterr().err


def test_real_scans_pass_as_their_true_contrast(shared_data, ixi_heads):
    """No false alarm on any real scan: BraTS, MS and the two tumour cases without ground truth
    (skull-stripped), and the raw IXI heads with the brain mask the automatic path finds."""
    from UADBrainLib.training.input_check import real_scans

    found_masks = {f"ixi/{path.name.split('_')[0]}": mask for path, (mask, _) in ixi_heads.items()}
    for name, files, mask, method in real_scans(shared_data):
        predictions = check_scan(files, found_masks.get(name, mask), method)
        warnings = decide(predictions)  # never an error
        assert not any("does not look like a brain" in w for w in warnings), name


def test_noise_and_inverted_intensities_are_refused_before_the_network():
    from UADBrainLib.inference.input_check import brain_darker_than_background, implausible, spatial_structure

    image, brain, _ = phantom_brain(shape=(60, 60, 60), spacing=(1.0, 1.0, 1.0))
    values, mask = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(brain) > 0
    spacing = (1.0, 1.0, 1.0)
    assert implausible("flair", values, mask, spacing) is None
    noise = np.random.default_rng(1).normal(100, 20, values.shape)
    assert abs(spatial_structure(noise, mask, spacing)) < 0.05
    assert "looks like noise" in implausible("flair", noise, mask, spacing)
    inverted = values.max() + values.min() - values
    assert "look inverted" in implausible("flair", inverted, mask, spacing)
    # a brain filling the grid leaves no background to judge: nothing is refused for it
    assert brain_darker_than_background(values, mask, spacing) < 0.01
    assert brain_darker_than_background(inverted, mask, spacing) > 0.99
    assert brain_darker_than_background(inverted, np.ones_like(mask), spacing) is None
    # turned off, the checks do not run
    assert check_inputs({"flair": noise}, mask, spacing, enabled=False).report == {"skipped": "turned off"}
