"""``uadbrain train`` and its data: splits, identical preprocessing, slabs, pool, checkpoints,
and a few-step smoke test that writes a complete, loadable, checksummed, calibrated bundle."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_models import tiny_bundle

from phantoms import phantom_brain
from UADBrainLib import bundle as bundle_module
from UADBrainLib.bundle import read_bundle, sha256_of
from UADBrainLib.cli.main import main
from UADBrainLib.errors import InputError
from UADBrainLib.inference.models import load_model
from UADBrainLib.inference.models.networks import build_networks
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.inference.pipeline import detect, detect_raw_scores
from UADBrainLib.preprocessing import normalise
from UADBrainLib.training.data import (FolderSource, TrainingVolume, VolumePool, find_subjects, linear_normaliser,
                                       preprocess_case, sample_slabs, split_indices, training_volume)
from UADBrainLib.training import rescore as rescore_module
from UADBrainLib.training.tasks import make_task
from UADBrainLib.training.train import TrainConfig, _load_checkpoint, _save_checkpoint, loss_trend, lr_at


def test_splits_hold_out_validation_and_calibration_items():
    splits = {name: split_indices(20, name) for name in ("train", "validation", "calibration")}
    assert splits == {"train": list(range(16)), "validation": [16, 17], "calibration": [18, 19]}
    assert split_indices(3, "calibration") == [0, 1, 2]  # too few to hold any out


def test_training_normalisation_is_the_pipelines():
    rng = np.random.default_rng(0)
    array = rng.gamma(2.0, 50.0, (10, 12, 14)).astype(np.float32)
    mask = rng.random(array.shape) > 0.3
    offset, scale = linear_normaliser(array, mask, "robust_z")
    np.testing.assert_allclose((array - offset) / scale, normalise(array, mask, "robust_z"), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError):
        linear_normaliser(array, mask, "histeq")


def test_real_scans_are_preprocessed_exactly_as_detect_does(tmp_path):
    image, mask, _ = phantom_brain()
    bundle = tiny_bundle(tmp_path, "dae", ["flair"])
    result = detect_raw_scores({"flair": image}, model=bundle, mask=mask,
                               options=DetectOptions(device="cpu", threshold="otsu", keep_preprocessed=True))
    volume = preprocess_case({"flair": image}, bundle.preprocessing, mask)
    expected = sitk.GetArrayFromImage(result.preprocessed["flair"])
    np.testing.assert_allclose(volume.normalised("flair")[volume.mask], expected[volume.mask], atol=1e-4)


def _write(image, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_subjects_are_found_in_flat_and_per_subject_layouts(tmp_path):
    image, mask, _ = phantom_brain()
    _write(image, tmp_path / "flat" / "IXI001-HH_T1.nii.gz")
    _write(image, tmp_path / "flat" / "IXI001-HH_FLAIR.nii.gz")
    _write(image, tmp_path / "flat" / "IXI002-HH_T1.nii.gz")
    _write(image, tmp_path / "nested" / "s1" / "flair.nii.gz")
    _write(mask, tmp_path / "nested" / "s1" / "brainmask.nii.gz")
    flat = find_subjects(tmp_path / "flat", ["t1"])
    assert [s["name"] for s in flat] == ["IXI001-HH", "IXI002-HH"]
    assert [s["name"] for s in find_subjects(tmp_path / "flat", ["flair", "t1"])] == ["IXI001-HH"]
    nested = find_subjects(tmp_path / "nested", ["flair"])
    assert nested[0]["mask"].name == "brainmask.nii.gz"
    with pytest.raises(InputError, match="no subject"):
        find_subjects(tmp_path / "nested", ["t2"])
    volume = FolderSource(tmp_path / "nested", ["flair"], {"spacing_mm": [3.0] * 3}).volume(0)
    assert volume.mask.any() and volume.spacing == 3.0


def _volume(seed=0, shape=(16, 40, 36)):
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    mask = sum(((g - n / 2) / (n * 0.4)) ** 2 for g, n in zip(grid, shape)) <= 1.0
    image = np.where(mask, rng.gamma(4.0, 25.0, shape), 0).astype(np.float32)
    return training_volume({"flair": image, "t1": 2 * image}, mask, 2.0, "robust_z")


def test_slabs_are_windows_of_neighbouring_slices_with_their_volume_normalisation():
    volumes = [_volume(0), _volume(1)]
    batch = sample_slabs(volumes, 6, 32, 2, np.random.default_rng(0))
    assert batch.images.shape == batch.masks.shape == (6, 5, 32, 32)
    assert set(batch.contrasts) <= {"flair", "t1"}
    assert np.all(batch.images[~batch.masks] == 0)
    prepared = batch.prepared()
    assert np.all(prepared[~batch.masks] == 0) and np.abs(prepared).max() <= 10


class CountingSource:
    key = "counting"

    def __init__(self):
        self.made = []

    def volume(self, seed):
        self.made.append(seed)
        return _volume(seed)


def test_volume_pool_refreshes_and_reuses_its_disk_cache(tmp_path):
    source = CountingSource()
    pool = VolumePool(source, size=2, first_seed=10, cache_dir=tmp_path, background=False)
    first = pool.volumes[0]
    assert pool.refresh() == 1 and pool.volumes[0] is not first and source.made == [10, 11, 12]
    cached = VolumePool(CountingSource(), size=3, first_seed=10, cache_dir=tmp_path, background=False)
    assert cached.source.made == []  # all three came from the cache
    reloaded = TrainingVolume.load(tmp_path / "counting" / "10.npz")
    assert reloaded.normalisers == first.normalisers


def test_checkpoint_round_trip_restores_weights_optimiser_and_random_state(tmp_path):
    spec = tiny_bundle(tmp_path, "dae", ["flair"]).metadata["network"]
    networks = build_networks(spec)
    optimizer = torch.optim.AdamW(networks.parameters())
    rng = np.random.default_rng(3)
    best = {"score": 0.5, "step": 4, "state": networks.state_dict()}
    _save_checkpoint(tmp_path / "checkpoint.pt", networks, optimizer, 7, best, [{"step": 4}], rng, 12.5)
    expected_draw = rng.random()
    restored_rng = np.random.default_rng(99)
    step, restored_best, history, minutes = _load_checkpoint(
        tmp_path / "checkpoint.pt", build_networks(spec), torch.optim.AdamW(networks.parameters()), restored_rng)
    assert (step, restored_best["score"], history, minutes) == (7, 0.5, [{"step": 4}], 12.5)
    assert restored_rng.random() == expected_draw


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(model="dae", contrasts=["flair"], data="synthetic", out=".", steps=1000)
    rates = [lr_at(step, config) for step in (0, 199, 600, 999)]
    assert rates[0] < rates[1] == pytest.approx(config.learning_rate) and rates[1] > rates[2] > rates[3]



def test_the_trainers_share_one_schedule_and_write_weights_the_bundle_can_verify(tmp_path):
    from UADBrainLib.bundle import sha256_of
    from UADBrainLib.training.common import WEIGHTS_FILE, load_checkpoint, save_checkpoint, warmup_cosine, write_weights

    factors = [warmup_cosine(step, 1000, 100, floor=0.02) for step in (0, 99, 100, 550, 999, 5000)]
    assert factors[0] == pytest.approx(0.01) and factors[1] == factors[2] == pytest.approx(1.0)
    assert factors[2] > factors[3] > factors[4] and factors[5] == pytest.approx(0.02)
    state = {"weight": torch.arange(4, dtype=torch.float32), "count": torch.tensor([3])}
    entry = write_weights(state, tmp_path, half=True)
    assert entry == {"file": WEIGHTS_FILE, "sha256": sha256_of(tmp_path / WEIGHTS_FILE)}
    loaded = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert loaded["weight"].dtype == torch.float16 and loaded["count"].dtype == torch.int64
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": 5, "network": state})
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 5
    assert not (tmp_path / "checkpoint.tmp").exists()

SMOKE = ["--contrast", "flair", "--contrast", "t1", "--steps", "2", "--channels", "4,8",
         "--batch-size", "2", "--patch", "32", "--spacing", "4", "--calibration-spacing", "4",
         "--validation-volumes", "1", "--calibration-volumes", "1", "--pool-size", "1",
         "--validate-every", "2", "--quiet"]


@pytest.mark.parametrize("family", ["dae", "vae", "skip-ae", "diffusion", "segmenter", "stfpm", "learned-hybrid"])
def test_train_writes_a_complete_calibrated_bundle(tmp_path, family):
    out = tmp_path / f"tiny-{family}"
    assert main(["train", "--model", family, "--out", str(out), *SMOKE]) == 0
    bundle = read_bundle(out)
    meta = bundle.metadata
    for key in ("name", "version", "title", "description", "family", "contrasts", "preprocessing", "scoring",
                "postprocessing", "calibration", "weights", "network", "expected_runtime_s", "training",
                "license", "references"):
        assert key in meta, key
    assert meta["family"] == family and meta["contrasts"] == ["flair", "t1"]
    assert meta["weights"]["sha256"] == sha256_of(out / "weights.pt")
    assert set(meta["calibration"]["channels"]) == {"flair", "t1"}
    assert set(meta["calibration"]["fused"]) == {"flair", "t1", "flair+t1"}
    assert meta["training"]["steps"] == 2 and "score" in meta["training"]["validation"]
    assert "## Training" in (out / "README.md").read_text(encoding="utf-8")
    image, mask, _ = phantom_brain()
    # a 2-step model's calibration may not fit the phantom (automatic would fall back to Otsu): ask for it
    result = detect({"t1": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", fpr=0.01, threshold="calibrated"))
    assert result.threshold_method == "calibrated" and np.isfinite(result.threshold)

    assert main(["train", "--model", family, "--out", str(out), *SMOKE[:4], "--steps", "3", *SMOKE[6:],
                 "--resume"]) == 0
    history = json.loads((out / "training_history.json").read_text(encoding="utf-8"))
    assert [row["step"] for row in history] == [2, 3]


def test_dense_autoencoder_trains_with_one_command(tmp_path):
    out = tmp_path / "tiny-dense-ae"
    assert main(["train", "--model", "vae", "--dense-latent", "8", "--kl-weight", "0", "--out", str(out), *SMOKE]) == 0
    meta = read_bundle(out).metadata
    assert meta["network"]["args"]["dense_latent"] == 8 and meta["title"].startswith("Dense autoencoder")
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(read_bundle(out)), mask=mask,
                    options=DetectOptions(device="cpu", threshold="otsu"))
    assert result.anomaly_map.GetSize() == image.GetSize()


RESCORE_SMOKE = ["--volumes", "1", "--spacing", "4", "--device", "cpu"]


def test_rescore_writes_a_calibrated_bundle_sharing_a_bundled_models_weights(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "dae").mkdir(parents=True)
    source = tiny_bundle(models / "dae", "dae", ["flair"])
    for module in (bundle_module, rescore_module):  # the tiny model stands in for a bundled one
        monkeypatch.setattr(module, "BUNDLED_MODELS_DIR", models)
    out = tmp_path / "dae-ssim-ens"
    assert main(["rescore", "--model", str(source.path), "--score", "ssim-ens", "--out", str(out),
                 *RESCORE_SMOKE]) == 0
    bundle = read_bundle(out)
    meta = bundle.metadata
    assert meta["weights"]["bundle"] == "dae" and not (out / "weights.pt").exists()
    assert meta["scoring"]["score"] == "ssim-ens" and meta["calibration"]["channels"]
    assert meta["training"]["rescored"]["from"] == "tiny-dae" and "ensembled SSIM" in meta["title"]
    assert "Rescored from `tiny-dae`" in (out / "README.md").read_text(encoding="utf-8")
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="calibrated"))
    assert result.anomaly_map.GetSize() == image.GetSize()


def test_rescore_copies_a_folders_weights_and_refuses_what_its_family_cannot_score(tmp_path):
    (tmp_path / "src").mkdir()
    source = tiny_bundle(tmp_path / "src", "diffusion", ["flair"])
    out = tmp_path / "diffusion-mahalanobis"
    assert main(["rescore", "--model", str(source.path), "--score", "mahalanobis", "--noise-levels", "50,100",
                 "--ensemble-seeds", "1", "--out", str(out), *RESCORE_SMOKE]) == 0
    meta = read_bundle(out).metadata
    assert meta["weights"]["sha256"] == sha256_of(out / "weights.pt") == source.metadata["weights"]["sha256"]
    assert meta["scoring"]["ensemble"] == {"noise_levels": [50, 100], "seeds": 1}
    assert "bundle" not in meta["weights"]

    (tmp_path / "dae").mkdir()
    dae = tiny_bundle(tmp_path / "dae", "dae", ["flair"])
    refused = tmp_path / "dae-mahalanobis"
    assert main(["rescore", "--model", str(dae.path), "--score", "mahalanobis", "--out", str(refused),
                 *RESCORE_SMOKE]) == 2
    assert not refused.exists() and not refused.with_name(refused.name + ".partial").exists()


def test_train_records_the_score_and_the_reconstructions_it_compares(tmp_path):
    out = tmp_path / "tiny-diffusion-ssim-ens"
    assert main(["train", "--model", "diffusion", "--score", "ssim-ens", "--diffusion-start", "200",
                 "--ensemble-seeds", "1", "--out", str(out), *SMOKE]) == 0
    scoring = read_bundle(out).metadata["scoring"]
    assert scoring["score"] == "ssim-ens" and scoring["ensemble"] == {"noise_levels": [100, 150, 200], "seeds": 1}
    assert main(["train", "--model", "dae", "--score", "mahalanobis", "--out", str(tmp_path / "no"), *SMOKE]) == 2


def test_context_encoding_vae_trains_with_one_command_and_blanks_rectangles_through_all_slices(tmp_path):
    out = tmp_path / "tiny-cevae"
    assert main(["train", "--model", "cevae", "--out", str(out), *SMOKE]) == 0
    meta = read_bundle(out).metadata
    assert meta["family"] == "vae" and meta["scoring"]["score"] == "kl-combined"
    assert meta["title"].startswith("Context-encoding VAE") and meta["calibration"]["channels"]
    task = make_task(TrainConfig(model="cevae", contrasts=["flair"], data="synthetic", out=tmp_path))
    images = torch.ones(3, 3, 40, 40)
    blanked = task.blanked(images, np.random.default_rng(0))
    removed = blanked == 0
    assert removed.any() and (removed == removed[:, :1]).all()  # the same rectangles in every slice
    assert torch.equal(images, torch.ones(3, 3, 40, 40))  # the batch itself is untouched


def test_patched_diffusion_trains_with_one_command_noising_one_brain_patch_per_slice(tmp_path):
    out = tmp_path / "tiny-pddpm"
    assert main(["train", "--model", "pddpm", "--patch-mm", "48", "--out", str(out), *SMOKE]) == 0
    meta = read_bundle(out).metadata
    assert meta["family"] == "diffusion" and meta["scoring"]["sampler"]["patch_mm"] == 48.0
    assert meta["title"].startswith("Patched diffusion model")
    task = make_task(TrainConfig(model="pddpm", contrasts=["flair"], data="synthetic", out=tmp_path, spacing=4.0,
                                 patch_mm=48.0))
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 1.0
    region = task.noised_region(masks, np.random.default_rng(0))
    assert (region.sum(dim=(1, 2, 3)) == 12 * 12).all() and ((region * masks).sum(dim=(1, 2, 3)) > 0).all()


def test_conditioned_diffusion_trains_with_one_command_and_sees_the_original_slice(tmp_path):
    out = tmp_path / "tiny-cddpm"
    assert main(["train", "--model", "cddpm", "--condition-size", "4", "--out", str(out), *SMOKE]) == 0
    bundle = read_bundle(out)
    meta = bundle.metadata
    assert meta["family"] == "diffusion" and meta["scoring"]["sampler"]["conditioned"] is True
    assert meta["network"]["args"]["in_channels"] == 4 and meta["title"].startswith("Conditioned diffusion")
    network = next(iter(load_model(bundle).networks.values()))
    inputs = torch.randn(2, 4, 32, 32)
    changed = inputs.clone()
    changed[:, 3] += 1.0  # another original slice, the same noised one
    with torch.no_grad():
        assert network(inputs).shape == (2, 1, 32, 32) and not torch.allclose(network(inputs), network(changed))
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="otsu"))
    assert result.anomaly_map.GetSize() == image.GetSize()


def test_training_can_start_from_a_trained_bundles_matching_weights(tmp_path):
    source = tmp_path / "tiny-pddpm"
    assert main(["train", "--model", "pddpm", "--out", str(source), *SMOKE]) == 0
    # cddpm's first convolution takes the condition channels too: it alone keeps its fresh start
    out = tmp_path / "tiny-cddpm"
    assert main(["train", "--model", "cddpm", "--condition-size", "4", "--init-from", str(source),
                 "--out", str(out), *SMOKE]) == 0
    started = read_bundle(out).metadata["training"]["initialised_from"]
    copied, total = (int(n) for n in started["tensors"].split(" of "))
    assert started["bundle"] == "tiny-pddpm" and 0 < copied < total
    assert "starting from the weights of `tiny-pddpm`" in (out / "README.md").read_text(encoding="utf-8")

    other_grid = [*SMOKE[:12], "--spacing", "3", *SMOKE[14:]]
    assert main(["train", "--model", "cddpm", "--init-from", str(source), "--out", str(tmp_path / "refused"),
                 *other_grid]) == 2
    assert main(["train", "--model", "tissue", "--init-from", str(source), "--out", str(tmp_path / "t")]) == 2


def test_fanogan_trains_critic_generator_then_encoder_with_one_command(tmp_path):
    out = tmp_path / "tiny-fanogan"
    # 8 steps: 5 critic, 1 generator, 2 encoder updates
    assert main(["train", "--model", "fanogan", "--dense-latent", "8", "--out", str(out), *SMOKE[:4], "--steps", "8",
                 *SMOKE[6:-3], "--validate-every", "8", "--quiet"]) == 0
    bundle = read_bundle(out)
    assert bundle.metadata["family"] == "fanogan" and np.isfinite(bundle.metadata["training"]["validation"]["score"])
    network = next(iter(load_model(bundle).networks.values()))
    task = make_task(TrainConfig(model="fanogan", contrasts=["flair"], data="synthetic", out=tmp_path, steps=12))
    trained = {}
    for step in (0, 5, 11):
        task.begin_step(step, {"fanogan": network})
        trained[task.phase] = {id(p) for p in network.parameters() if p.requires_grad}
    assert set(trained) == {"critic", "generator", "encoder"}
    assert trained["critic"] == {id(p) for p in network.critic.parameters()}
    assert trained["encoder"] == {id(p) for p in network.encoder_parameters()}
    assert not trained["generator"] & (trained["critic"] | trained["encoder"])


def test_model_card_says_whether_the_loss_still_fell_at_the_end():
    def history(*losses):
        return [{"step": 1000 * (i + 1), "loss": loss} for i, loss in enumerate(losses)]

    assert loss_trend(history(0.9, 0.6, 0.5)).startswith("still falling (smoothed training loss 0.6 at step 2000, 0.5 at")
    assert loss_trend(history(0.6, 0.599)).startswith("flat")
    assert loss_trend(history(0.5, 0.6)).startswith("rising")
    assert loss_trend(history(-12.0, -10.0)).startswith("rising")
    assert loss_trend(history(-12.0, 2.2)).startswith("not comparable")
