import json
import shutil
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import OBLIQUE_DIRECTION, geometry_of, phantom_brain
from UADBrainLib import DetectOptions, detect
from UADBrainLib.bundle import find_bundle
from UADBrainLib.errors import Cancelled, InputError, ModelError
from UADBrainLib.inference.pipeline import detect_raw_scores


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("direction", [None, OBLIQUE_DIRECTION, (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_outputs_are_on_the_exact_input_grid_and_find_the_lesion(direction):
    image, _, lesion = phantom_brain(direction=direction, origin=(-20.0, 15.5, 60.0))
    result = detect({"flair": image}, options=DetectOptions(threshold=5.0))
    for output in (result.anomaly_map, result.segmentation, result.lesion_labels, result.brain_mask):
        assert geometry_of(output) == geometry_of(image)
    assert result.lesion_count == 1
    assert dice(sitk.GetArrayFromImage(result.segmentation), sitk.GetArrayFromImage(lesion)) > 0.8


def test_label_images_hold_the_labels_array_voxel_for_voxel():
    """The label and segmentation images are pasted from the lesions' box: nothing outside it may be
    lost, several lesions included, and a run without lesions gives empty images."""
    image, brain, _ = phantom_brain()
    result = detect({"flair": image}, mask=brain, options=DetectOptions(threshold=0.5, min_size_mm3=0))
    assert result.lesion_count > 50
    for threshold in (0.5, 1.0, 1e6):
        run = result.rethreshold(threshold)
        labels = sitk.GetArrayFromImage(run.lesion_labels)
        assert labels.dtype == run.labels_array.dtype and np.array_equal(labels, run.labels_array)
        segmentation = sitk.GetArrayFromImage(run.segmentation)
        assert segmentation.dtype == np.uint8 and np.array_equal(segmentation, run.labels_array > 0)


def test_inputs_are_never_modified():
    image, brain, _ = phantom_brain(direction=OBLIQUE_DIRECTION)
    before = (sitk.GetArrayFromImage(image).copy(), geometry_of(image), sitk.GetArrayFromImage(brain).copy())
    detect({"flair": image}, mask=brain, options=DetectOptions(bias_correction=True))
    assert np.array_equal(sitk.GetArrayFromImage(image), before[0]) and geometry_of(image) == before[1]
    assert np.array_equal(sitk.GetArrayFromImage(brain), before[2])


def test_model_grid_spacing_from_bundle(tmp_path):
    bundle = find_bundle("threshold")
    custom = tmp_path / "threshold-2mm"
    shutil.copytree(bundle.path, custom)
    metadata = json.loads((custom / "metadata.json").read_text(encoding="utf-8"))
    metadata["preprocessing"]["spacing_mm"] = [2.0, 2.0, 2.0]
    (custom / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    image, _, lesion = phantom_brain(direction=OBLIQUE_DIRECTION)
    result = detect({"flair": image}, model=custom, options=DetectOptions(threshold=5.0))
    assert result.report["model_spacing_mm"] == [2.0, 2.0, 2.0]
    assert geometry_of(result.segmentation) == geometry_of(image)
    assert dice(sitk.GetArrayFromImage(result.segmentation), sitk.GetArrayFromImage(lesion)) > 0.6


def test_rethreshold_equals_a_fresh_run():
    image, _, _ = phantom_brain(spacing=(1.0, 1.0, 2.5))
    first = detect({"flair": image}, options=DetectOptions(threshold=2.0, median=3, min_size_mm3=5))
    again = first.rethreshold(6.0, median=5, min_size_mm3=30)
    fresh = detect({"flair": image}, options=DetectOptions(threshold=6.0, median=5, min_size_mm3=30))
    assert np.array_equal(again.labels_array, fresh.labels_array)
    assert again.lesions == fresh.lesions
    assert (again.threshold, again.median, again.min_size_mm3) == (6.0, 5, 30.0)
    assert first.threshold == 2.0  # the original result is left as it was
    assert first.rethreshold("otsu").threshold_method == "otsu"


def dark_lesion_t1(flair, brain, hidden_lesion=None):
    """A T1-like phantom: the FLAIR's brain intensities reversed (a hidden lesion set to the brain's
    level), the background kept dark — a bright one is refused as an inverted image."""
    values = 200 - sitk.GetArrayFromImage(flair)
    if hidden_lesion is not None:
        values = np.where(sitk.GetArrayFromImage(hidden_lesion) > 0, 100.0, values)
    t1 = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(brain) > 0, values, 0.0).astype(np.float32))
    t1.CopyInformation(flair)
    return t1


def test_multi_contrast_and_given_mask():
    flair, brain, lesion = phantom_brain(seed=1)
    t1 = dark_lesion_t1(flair, brain)
    result = detect({"t1": t1, "flair": flair}, model="threshold", mask=brain, options=DetectOptions(threshold=5.0))
    assert result.channels == ["flair", "t1"] and result.report["brain_mask_method"] == "given"
    assert result.report["scored_contrasts"] == ["flair", "t1"]
    assert not any("not scored" in w for w in result.report["warnings"])
    assert dice(sitk.GetArrayFromImage(result.segmentation), sitk.GetArrayFromImage(lesion)) > 0.8


def test_a_lead_contrast_is_scored_alone_and_the_others_are_named():
    """auto scores FLAIR alone when it is given: every combination with another contrast measured
    worse on the evaluation scans (docs/RESULTS.md)."""
    flair, brain, _ = phantom_brain(seed=1)
    t1 = dark_lesion_t1(flair, brain)
    alone = detect({"flair": flair}, model="auto", mask=brain)
    both = detect({"t1": t1, "flair": flair}, model="auto", mask=brain)
    assert both.channels == ["flair"] and both.report["scored_contrasts"] == ["flair"]
    assert set(both.report["inputs"]) == {"flair", "t1"} and set(both.inputs) == {"flair", "t1"}
    assert any(w.startswith("t1 not scored: model 'auto' scores flair alone") for w in both.report["warnings"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(both.anomaly_map), sitk.GetArrayFromImage(alone.anomaly_map))
    assert both.threshold == alone.threshold
    every = detect_raw_scores({"t1": t1, "flair": flair}, model="auto", mask=brain)
    assert every.channels == ["flair", "t1"]


def test_contrast_fusion_min_flags_what_all_contrasts_agree_on(tmp_path):
    flair, brain, lesion = phantom_brain(seed=1)
    t1 = dark_lesion_t1(flair, brain, lesion)  # the lesion is invisible on this T1: "min" must not flag it
    agreeing = tmp_path / "agreeing"
    shutil.copytree(find_bundle("threshold").path, agreeing)
    metadata = json.loads((agreeing / "metadata.json").read_text(encoding="utf-8"))
    metadata["scoring"]["contrast_fusion"] = "min"
    (agreeing / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    options = DetectOptions(threshold=5.0)
    any_contrast = detect({"flair": flair, "t1": t1}, model="threshold", mask=brain, options=options)
    all_contrasts = detect({"flair": flair, "t1": t1}, model=agreeing, mask=brain, options=options)
    assert any_contrast.lesion_count == 1 and all_contrasts.lesion_count == 0
    agreement, either = (sitk.GetArrayFromImage(r.anomaly_map) for r in (all_contrasts, any_contrast))
    assert np.all(agreement <= either + 1e-6) and np.any(agreement < either)


def test_non_overlapping_contrasts_are_rejected():
    flair, _, _ = phantom_brain()
    t1, _, _ = phantom_brain(origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="do not overlap"):
        detect({"flair": flair, "t1": t1})


def test_unknown_model_and_unsupported_contrast(tmp_path):
    image, _, _ = phantom_brain()
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        detect({"flair": image}, model="nope")
    flair_only = tmp_path / "flair-only"
    shutil.copytree(find_bundle("threshold").path, flair_only)
    metadata = json.loads((flair_only / "metadata.json").read_text(encoding="utf-8"))
    metadata["contrasts"] = ["flair"]
    (flair_only / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(ModelError, match="does not use t1"):
        detect({"t1": image}, model=flair_only)
    with pytest.raises(InputError, match="unknown contrast 'dwi'"):
        detect({"dwi": image})


def test_weights_checksum_mismatch(tmp_path):
    bundle = tmp_path / "tampered"
    shutil.copytree(find_bundle("threshold").path, bundle)
    (bundle / "model.pt").write_bytes(b"not the trained weights")
    metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    metadata["weights"] = {"file": "model.pt", "sha256": "0" * 64}
    (bundle / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    image, _, _ = phantom_brain()
    with pytest.raises(ModelError, match="checksum mismatch"):
        detect({"flair": image}, model=bundle)


def test_corrupt_metadata(tmp_path):
    bundle = tmp_path / "broken"
    bundle.mkdir()
    (bundle / "metadata.json").write_text("{not json", encoding="utf-8")
    image, _, _ = phantom_brain()
    with pytest.raises(ModelError, match="unreadable"):
        detect({"flair": image}, model=bundle)


def test_progress_and_cancel():
    image, _, _ = phantom_brain()
    seen = []
    detect({"flair": image}, progress=lambda fraction, stage: seen.append((fraction, stage)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1][1] == "done"
    cancel = threading.Event()

    def cancel_at_model(fraction, stage):
        if stage == "model":
            cancel.set()
    with pytest.raises(Cancelled):
        detect({"flair": image}, progress=cancel_at_model, cancel=cancel)


def test_report_and_volume_score():
    image, _, _ = phantom_brain()
    healthy, _, _ = phantom_brain(lesion=False)
    with_lesion = detect({"flair": image})
    # a lesion-free phantom is pure noise, which the input check refuses as no MRI
    without = detect({"flair": healthy}, options=DetectOptions(check_contrast=False))
    assert with_lesion.volume_score > without.volume_score
    summary = with_lesion.summary()
    json.dumps(summary)
    assert summary["brain_mask_method"].startswith("nonzero")
    assert set(summary["timings_s"]) >= {"load", "brain mask", "model", "post-process"}


def test_a_calibration_that_flags_most_of_the_brain_falls_back_to_otsu(monkeypatch):
    """A synthetic-brain calibration can miss a real scanner so widely that its threshold flags
    nearly the whole brain; detect then uses Otsu and says why."""
    from UADBrainLib.inference import calibration

    image, brain, _ = phantom_brain()
    fitting = detect({"flair": image}, mask=brain)
    assert fitting.threshold_method == "calibrated"
    assert not any("calibration" in w for w in fitting.report["warnings"])
    monkeypatch.setattr(calibration, "calibrated_threshold", lambda *args, **kwargs: -1e9)
    result = detect({"flair": image}, mask=brain)
    assert result.threshold_method == "otsu"
    assert any("calibration would flag more than 30%" in w for w in result.report["warnings"])
    assert detect({"flair": image}, mask=brain, options=DetectOptions(threshold="calibrated")).threshold == -1e9


def test_auto_hands_a_contrast_routed_to_one_member_to_that_member():
    image, brain, _ = phantom_brain()
    alone = detect({"flair": image}, model="threshold", mask=brain)
    routed = detect({"flair": image}, model="auto", mask=brain)
    assert routed.model_name == "auto" and routed.report["scored_by"].startswith("threshold ")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(routed.anomaly_map), sitk.GetArrayFromImage(alone.anomaly_map))
    assert routed.threshold == alone.threshold and routed.threshold_method == alone.threshold_method


def test_auto_routes_a_lone_t2_to_the_learned_hybrid_and_t2_beside_t1_to_the_dae():
    from UADBrainLib.bundle import find_bundle
    from UADBrainLib.inference.models import load_model

    auto = load_model(find_bundle("auto"))
    assert auto.for_contrasts(["t2"]).bundle.name == "learned-hybrid"  # chosen on the synthetic validation set
    assert auto.for_contrasts(["t1"]).bundle.name == "segmenter"
    assert auto.for_contrasts(["t1", "t2"]) is auto and auto.routes["t2"] == ["dae"]  # fused: 1.1.0's members
