"""The families fitted in one pass over a healthy cohort, without gradient steps: the voxel-wise
normative model in the template's frame and PatchCore's memory banks; the template registration
they share."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import phantom_brain
from UADBrainLib.bundle import read_bundle
from UADBrainLib.cli.main import main
from UADBrainLib.inference.models import load_model
from UADBrainLib.inference.models.normative import normative_scores
from UADBrainLib.inference.models.patchcore import nearest_distance
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.inference.pipeline import detect
from UADBrainLib.template import TEMPLATE_BRAIN_THRESHOLD, register_brain, template_image, to_template
from UADBrainLib.training.tasks.normative import SPREAD_FLOOR, cohort_statistics
from UADBrainLib.training.tasks.features import greedy_coreset


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def template_brain_on_a_canonical_grid(scale=0.92, shift=(6.0, -9.0, 4.0), angle=0.08, spacing=2.0):
    """The template's brain moved by a known affine onto a canonical grid: (mask array, spacing)."""
    template = template_image()
    moved = sitk.AffineTransform(3)
    moved.SetMatrix((sitk.VersorTransform((0, 0, 1), angle).GetMatrix()))
    moved.Scale(scale)
    moved.SetTranslation(shift)
    brain = sitk.Cast(template > TEMPLATE_BRAIN_THRESHOLD, sitk.sitkFloat32)
    lo = np.array(template.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.array(template.TransformIndexToPhysicalPoint([s - 1 for s in template.GetSize()]))
    reference = sitk.Image([int(abs(h - l) / spacing) + 12 for l, h in zip(lo, hi)], sitk.sitkFloat32)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin(tuple(np.minimum(lo, hi) - 6 * spacing))
    canonical = sitk.Resample(brain, reference, moved, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(canonical) >= 0.5, (spacing,) * 3


def test_a_brain_registers_to_the_template_by_its_outline():
    mask, spacing = template_brain_on_a_canonical_grid()
    transform = register_brain(mask, spacing)
    reached = to_template(mask.astype(np.float32), spacing, transform) >= 0.5
    template_brain = sitk.GetArrayViewFromImage(template_image()) > TEMPLATE_BRAIN_THRESHOLD
    assert dice(reached, template_brain) > 0.93


def test_cohort_statistics_are_robust_and_fill_voxels_few_brains_reach():
    rng = np.random.default_rng(0)
    samples = rng.normal(2.0, 0.5, (40, 6, 6, 6)).astype(np.float32)
    samples[:3, 1, 1, 1] = 50.0  # three outlying brains move neither median nor spread
    samples[:, :, :, 5] = np.nan  # a face no brain reaches
    samples[:30, :, :, 4] = np.nan  # a face a quarter of the brains reach
    statistics = cohort_statistics(samples, spacing_mm=2.0)
    assert set(statistics) == {"median", "spread"}
    median, spread = statistics["median"], statistics["spread"]
    assert np.all(np.isfinite(median)) and np.all(spread >= SPREAD_FLOOR)
    assert abs(median[1, 1, 1] - 2.0) < 0.3 and abs(median.mean() - 2.0) < 0.1
    assert 0.3 < spread.mean() < 0.7
    np.testing.assert_array_equal(median[:, :, 5], median[:, :, 3])  # filled from the nearest covered voxel


def test_conditioned_on_age_the_statistics_follow_a_line_and_keep_the_spread_at_one_age():
    rng = np.random.default_rng(1)
    ages = rng.uniform(20, 90, 60)
    slope = np.linspace(-0.02, 0.02, 6, dtype=np.float32).reshape(6, 1, 1)  # per year, varying by voxel
    samples = (1.0 + slope * (ages.reshape(-1, 1, 1, 1) - 55.0)
               + rng.normal(0.0, 0.3, (60, 6, 6, 6))).astype(np.float32)
    samples[:5, 2, 2, 2] = np.nan  # a few brains do not reach it
    statistics = cohort_statistics(samples, spacing_mm=10.0, ages=ages)  # 10 mm voxels: smoothing negligible
    assert set(statistics) == {"median", "spread", "age_slope"}
    np.testing.assert_allclose(statistics["age_slope"].mean(axis=(1, 2)), slope.ravel(), atol=0.004)
    # the median at the cohort's mean age, the spread that of one age (0.3), not the whole cohort's (up to 0.5)
    expected = 1.0 + slope.ravel() * (ages.mean() - 55.0)
    np.testing.assert_allclose(statistics["median"].mean(axis=(1, 2)), expected, atol=0.06)
    assert 0.25 < statistics["spread"].mean() < 0.35
    unconditioned = cohort_statistics(samples, spacing_mm=10.0)
    assert unconditioned["spread"][0].mean() > 1.3 * statistics["spread"][0].mean()


def test_a_voxel_brighter_than_the_cohort_scores_its_z_score_on_the_scans_own_grid():
    mask, spacing = template_brain_on_a_canonical_grid()
    from UADBrainLib.inference.models.normative import network_spec, box_slices

    network = network_spec()
    box_shape = tuple(s.stop - s.start for s in box_slices(network))
    statistics = {"flair.median": np.zeros(box_shape, np.float32), "flair.spread": np.full(box_shape, 0.5, np.float32)}
    image = np.zeros(mask.shape, np.float32)
    centre = tuple(int(np.median(axis)) for axis in np.nonzero(mask))
    image[centre] = 2.0
    maps = normative_scores({"flair": image}, mask, spacing, statistics, network, {"flair": "bright"})
    assert maps["flair"].shape == mask.shape
    assert maps["flair"][centre] == pytest.approx(4.0, rel=1e-3)
    assert np.abs(np.delete(maps["flair"].ravel(), np.ravel_multi_index(centre, mask.shape))).max() == 0.0


FIT_SMOKE = ["--contrast", "flair", "--contrast", "t1", "--spacing", "4", "--calibration-spacing", "4",
             "--cohort-volumes", "2", "--validation-volumes", "1", "--calibration-volumes", "1", "--quiet"]


def test_the_normative_model_is_fitted_with_one_command_and_runs_like_any_model(tmp_path, capsys):
    out = tmp_path / "tiny-normative"
    assert main(["train", "--model", "normative", "--out", str(out), *FIT_SMOKE]) == 0
    bundle = read_bundle(out)
    meta = bundle.metadata
    assert meta["family"] == "normative" and meta["training"]["cohort_volumes"] == 2
    assert "steps" not in meta["training"] and "score" in meta["training"]["validation"]
    assert set(torch.load(out / "weights.pt", weights_only=True)) == {
        "flair.median", "flair.spread", "t1.median", "t1.spread"}
    assert "Cohort: 2 healthy volumes" in (out / "README.md").read_text(encoding="utf-8")
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="calibrated"))
    assert result.anomaly_map.GetSize() == image.GetSize()
    assert np.isfinite(sitk.GetArrayViewFromImage(result.anomaly_map)).all()
    assert main(["train", "--model", "normative", "--out", str(tmp_path / "x"), "--init-from", "dae", *FIT_SMOKE]) != 0
    assert "has no network to start from" in capsys.readouterr().err


def test_the_age_conditioned_normative_model_scores_at_the_subjects_age(tmp_path, capsys):
    out = tmp_path / "tiny-normative-age"
    assert main(["train", "--model", "normative", "--age-range", "20", "90", "--out", str(out), *FIT_SMOKE]) == 0
    bundle = read_bundle(out)
    conditioning = bundle.metadata["network"]["conditioning"]["age"]
    assert conditioning["range"] == [20.0, 90.0] and 20 <= conditioning["reference"] <= 90
    assert {"flair.age_slope", "t1.age_slope"} <= set(torch.load(out / "weights.pt", weights_only=True))
    assert "conditioned on age" in bundle.metadata["title"]
    model = load_model(bundle)
    image, mask, _ = phantom_brain()
    runs = {age: detect({"flair": image}, model=model, mask=mask,
                                options=DetectOptions(device="cpu", age=age, check_contrast=False))
            for age in (None, 30.0, 80.0, 101.0)}
    assert runs[30.0].report["conditioned_on"] == ["age"] and runs[30.0].report["age"] == 30.0
    assert not [w for w in runs[30.0].report["warnings"] if "age" in w]
    assert any("no age given" in w for w in runs[None].report["warnings"])
    assert any("outside the 20-90 years" in w for w in runs[101.0].report["warnings"])
    maps = {age: sitk.GetArrayFromImage(run.anomaly_map) for age, run in runs.items()}
    assert not np.allclose(maps[30.0], maps[80.0])  # the age moves the expected intensities
    # an unconditioned model says it ignored the age
    plain = detect({"flair": image}, model="threshold", mask=mask, options=DetectOptions(device="cpu", age=50, check_contrast=False))
    assert any("age not used" in w for w in plain.report["warnings"])
    assert main(["train", "--model", "dae", "--age-range", "20", "90", "--out", str(tmp_path / "x"), *FIT_SMOKE]) != 0
    assert "--age-range conditions the normative model" in capsys.readouterr().err
    with pytest.raises(Exception, match="age"):
        DetectOptions(age=-3)


FOLDER_FIT = ["--model", "normative", "--contrast", "flair", "--spacing", "4", "--validation-volumes", "1",
              "--calibration-volumes", "1", "--quiet"]


def test_a_sites_healthy_cohort_conditions_the_normative_model_on_the_ages_in_its_participants_table(tmp_path, capsys):
    from synthetic_cases import write_case

    cohort = tmp_path / "healthy"
    ages = {"h1": "25", "h2": "41", "h3": "58", "h4": "n/a", "h5": "77", "h6": "95"}
    for seed, name in enumerate(ages):
        write_case(cohort / name, lesions=(), seed=seed, truth_name=None)
    # BIDS' participants table: labels with 'sub-', a de-identified or unknown age as BIDS writes it
    (cohort / "participants.tsv").write_text("participant_id\tage\n" + "".join(f"sub-{name}\t{age}\n"
                                                                               for name, age in ages.items()))
    out = tmp_path / "site-normative-age"
    assert main(["train", *FOLDER_FIT, "--data", str(cohort), "--age-range", "20", "90", "--out", str(out)]) == 0
    assert ("left out 2 subject(s): h4 (no age in the participants table), h6 (95 years, outside --age-range)"
            in capsys.readouterr().err)
    meta = read_bundle(out).metadata
    # four subjects: every split holds all of them, the reference age is their mean
    assert meta["network"]["conditioning"]["age"] == {"range": [20.0, 90.0], "reference": 50.25, "sd": 19.36}
    assert meta["training"]["cohort_volumes"] == 4 and "aged 25-77 years" in meta["training"]["data"]
    # without --age-range: every subject, no conditioning, and a participants table without ages is no obstacle
    (cohort / "participants.tsv").write_text("participant_id\tsex\n" + "".join(f"sub-{name}\tF\n" for name in ages))
    assert main(["train", *FOLDER_FIT, "--data", str(cohort), "--out", str(tmp_path / "plain")]) == 0
    assert "conditioning" not in read_bundle(tmp_path / "plain").metadata["network"]
    # six subjects: one validates, one calibrates, and the four the line is fitted on share one age
    (cohort / "participants.csv").write_text("subject,age\n" + "".join(
        f"{name},{age}\n" for name, age in zip(ages, (40, 40, 40, 40, 60, 60))))
    (cohort / "participants.tsv").unlink()
    assert main(["train", *FOLDER_FIT, "--data", str(cohort), "--age-range", "20", "90", "--out", str(tmp_path / "x")]) == 2
    assert "4 of them to fit on (1 different age(s))" in capsys.readouterr().err

    (cohort / "participants.csv").unlink()
    (cohort / "participants.tsv").write_text("participant_id\tage\nsub-h1\tforty\n")
    assert main(["train", *FOLDER_FIT, "--data", str(cohort), "--age-range", "20", "90", "--out", str(tmp_path / "x")]) == 2
    assert "subject h1" in (error := capsys.readouterr().err) and "'forty'" in error
    (cohort / "participants.tsv").unlink()
    assert main(["train", *FOLDER_FIT, "--data", str(cohort), "--age-range", "20", "90", "--out", str(tmp_path / "x")]) == 2
    assert "0 subject(s)" in (error := capsys.readouterr().err) and "participants.tsv" in error


def test_a_bids_dataset_of_healthy_subjects_is_training_data_with_its_participants_ages(tmp_path, capsys):
    pytest.importorskip("bids", reason='reading BIDS needs the cohort extra: pip install "uadbrain[cohort]"')
    from synthetic_cases import write_bids_dataset

    dataset = write_bids_dataset(tmp_path / "dataset")  # FLAIR: sub-01 at 34 and 36 years, sub-02 at 89+
    out = tmp_path / "bids-normative-age"
    assert main(["train", *FOLDER_FIT, "--data", str(dataset), "--age-range", "20", "90", "--out", str(out)]) == 0
    meta = read_bundle(out).metadata
    assert meta["training"]["cohort_volumes"] == 3  # sub-03's two FLAIR acquisitions are the user's choice:
    assert "left out 1 subject(s): sub-03 (2 flair images" in capsys.readouterr().err  # named, not dropped
    assert meta["network"]["conditioning"]["age"]["reference"] == 53.0


def test_patchcore_fits_its_memory_banks_on_a_bundled_encoder_with_one_command(tmp_path):
    out = tmp_path / "tiny-patchcore"
    assert main(["train", "--model", "patchcore", "--feature-model", "dae", "--memory-bank", "64",
                 "--out", str(out), *FIT_SMOKE]) == 0
    bundle = read_bundle(out)
    meta = bundle.metadata
    assert meta["family"] == "patchcore" and meta["network"]["feature_model"] == "dae"
    assert meta["preprocessing"]["spacing_mm"] == read_bundle_named("dae")["preprocessing"]["spacing_mm"]
    banks = torch.load(out / "weights.pt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in banks.items()} == {"flair.bank": (64, 48), "t1.bank": (64, 48)}
    image, mask, _ = phantom_brain()
    result = detect({"t1": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="calibrated"))
    assert np.isfinite(sitk.GetArrayViewFromImage(result.anomaly_map)).all()


def read_bundle_named(name):
    from UADBrainLib.bundle import find_bundle

    return find_bundle(name).metadata


def test_the_coreset_covers_every_cluster_and_distances_are_to_the_nearest_vector():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = torch.cat([centres[i] + 0.1 * torch.randn(200, 2, generator=generator) for i in (0, 0, 0, 1, 2, 3)])
    chosen = points[greedy_coreset(points, 4)]
    assert torch.cdist(centres, chosen).amin(dim=1).max() < 1.0  # one per cluster, the big one no more
    queries = torch.randn(50, 2, generator=generator) * 5
    np.testing.assert_allclose(nearest_distance(queries, points).numpy(),
                               torch.cdist(queries, points).amin(dim=1).numpy(), rtol=1e-5)


def test_the_gaussian_feature_model_fits_one_gaussian_per_template_cell_with_one_command(tmp_path):
    out = tmp_path / "tiny-padim"
    assert main(["train", "--model", "padim", "--out", str(out), *FIT_SMOKE]) == 0
    bundle = read_bundle(out)
    network = bundle.metadata["network"]
    state = torch.load(out / "weights.pt", weights_only=True)
    dims = len(network["feature_channels"])
    assert state["flair.factors"].shape[1:] == (dims, dims) and state["flair.means"].shape[1] == dims
    rows = state["flair.cell_rows"].long()
    assert rows.numel() == np.prod(network["cell_grid"]) and rows.min() >= 0
    assert rows.max() < len(state["flair.means"])
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="calibrated"))
    assert np.isfinite(sitk.GetArrayViewFromImage(result.anomaly_map)).all()
