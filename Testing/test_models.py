"""The learned model families (denoising and variational autoencoders, partial-noising diffusion,
synthetic-anomaly segmenter) and their slice networks, on tiny randomly initialised bundles built
in code."""

import json
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import OBLIQUE_DIRECTION, geometry_of, phantom_brain
from UADBrainLib.bundle import BUNDLED_MODELS_DIR, list_bundled, read_bundle, sha256_of
from UADBrainLib.errors import Cancelled, ModelError
from UADBrainLib.inference.bundled_example import load_example
from UADBrainLib.inference.models import family_class, load_model
from UADBrainLib.inference.models.dae import SHARED_HEAD, DenoisingAutoencoder
from UADBrainLib.inference.models.diffusion import DEFAULT_SAMPLER
from UADBrainLib.inference.models.diffusion import HEAD as DIFFUSION_HEAD
from UADBrainLib.inference.models.diffusion import PartialDiffusionModel, cumulative_alphas, patch_tiles
from UADBrainLib.inference.models.networks import (PAD_MULTIPLE, SKIP_AE_ARCHITECTURE, VAE_ARCHITECTURE, SliceSkipAE,
                                                   SliceVAE, brain_box, build_networks,
                                                   context_indices, network_spec, predict_volume, prepare)
from UADBrainLib.inference.models.noise import coarse_noise
from UADBrainLib.inference.models.scores import anomaly_score, mahalanobis_score, ssim_dissimilarity
from UADBrainLib.inference.models.segmenter import HEAD, SyntheticAnomalySegmenter
from UADBrainLib.inference.models.skip_ae import SHARED_HEAD as SKIP_AE_HEAD
from UADBrainLib.inference.models.skip_ae import SkipAutoencoder
from UADBrainLib.inference.models.vae import SHARED_HEAD as VAE_HEAD
from UADBrainLib.inference.models.vae import VariationalAutoencoder, kl_gradient
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.inference.pipeline import detect, detect_raw_scores

TINY_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 1}
TINY_VAE = {"channels": [4, 8, 8], "latent_channels": 2}


def tiny_bundle(folder, family, contrasts, context=1, score="residual", shared=False, **scoring_settings):
    scoring = {"score": score, **scoring_settings}
    if family == "vae":
        heads = [VAE_HEAD] if shared else list(contrasts)
        spec = network_spec(heads, context, TINY_VAE, architecture=VAE_ARCHITECTURE)
    elif family == "skip-ae":
        heads = [SKIP_AE_HEAD] if shared else list(contrasts)
        spec = network_spec(heads, context, {"channels": [4, 8, 8]}, architecture=SKIP_AE_ARCHITECTURE)
    elif family == "diffusion":
        heads = [DIFFUSION_HEAD] if shared else list(contrasts)
        spec = network_spec(heads, 0, TINY_UNET, extra_channels=1)
        scoring.setdefault("sampler", {"start": 100, "steps": 3})
    else:
        heads = [SHARED_HEAD] if shared else list(contrasts) if family == "dae" else [HEAD]
        spec = network_spec(heads, context, TINY_UNET, output_bias=-3.0 if family == "segmenter" else 0.0)
    torch.manual_seed(0)
    torch.save(build_networks(spec).state_dict(), folder / "weights.pt")
    metadata = {
        "name": f"tiny-{family}", "version": "0", "title": "tiny", "family": family,
        "contrasts": list(contrasts), "required_contrasts": [],
        "preprocessing": {"spacing_mm": [3.0, 3.0, 3.0], "bias_correction": False, "normalisation": "robust_z"},
        "scoring": scoring, "postprocessing": {"median": 3, "min_size_mm3": 0.0, "erosion_mm": 0.0},
        "calibration": None, "network": spec,
        "weights": {"file": "weights.pt", "sha256": sha256_of(folder / "weights.pt")},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return read_bundle(folder)


def canonical_case(shape=(20, 28, 24), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    mask = sum(((g - n / 2) / (n * 0.4)) ** 2 for g, n in zip(grid, shape)) <= 1.0
    image = np.where(mask, rng.normal(0, 1, shape), 0).astype(np.float32)
    return image, mask


# ---------------------------------------------------------------- slice machinery

def test_context_indices_clamp_at_the_volume_ends():
    indices = context_indices(np.array([0, 5, 9]), 2, 10)
    assert indices.tolist() == [[0, 0, 0, 1, 2], [3, 4, 5, 6, 7], [7, 8, 9, 9, 9]]


def test_brain_box_covers_the_brain_with_padded_windows():
    _, mask = canonical_case(shape=(12, 50, 37))
    s_slice, p_slice, l_slice, pads = brain_box(mask)
    for window, (before, after) in zip((p_slice, l_slice), pads):
        assert (window.stop - window.start + before + after) % PAD_MULTIPLE == 0
    inside = np.zeros_like(mask)
    inside[s_slice, p_slice, l_slice] = True
    assert not (mask & ~inside).any()


def test_predict_volume_puts_every_slice_back_where_it_came_from():
    image, mask = canonical_case(shape=(9, 41, 30))
    prepared = prepare(image, mask)
    context = 2
    centre_slice = lambda x: x[:, context:context + 1]  # noqa: E731  (an "identity" network)
    output = predict_volume(centre_slice, prepared, mask, context, "cpu", batch_size=4)
    np.testing.assert_array_equal(output, prepared)


def test_prepare_clips_and_zeroes_outside_the_brain():
    image = np.array([[[-50.0, 3.0, 50.0]]], np.float32)
    mask = np.array([[[True, True, False]]])
    assert prepare(image, mask).tolist() == [[[-10.0, 3.0, 0.0]]]


def test_predict_volume_stops_when_cancelled():
    image, mask = canonical_case()
    with pytest.raises(Cancelled):
        predict_volume(lambda x: x[:, :1], image, mask, 0, "cpu", is_cancelled=lambda: True)


# ---------------------------------------------------------------- scores and noise

def test_residual_score_follows_the_lesion_direction():
    image = np.array([3.0, -3.0], np.float32)
    reconstruction = np.zeros(2, np.float32)
    assert anomaly_score(image, reconstruction, "bright").tolist() == [3.0, -3.0]
    assert anomaly_score(image, reconstruction, "dark").tolist() == [-3.0, 3.0]
    assert anomaly_score(image, reconstruction, "both").tolist() == [3.0, 3.0]


def test_ssim_dissimilarity_is_zero_for_identical_images_and_high_where_they_differ():
    image, _ = canonical_case()
    assert np.abs(ssim_dissimilarity(image, image)).max() < 1e-6
    changed = image.copy()
    changed[10, 10:16, 10:16] += 5.0
    dissimilarity = ssim_dissimilarity(changed, image)
    assert dissimilarity[10, 13, 13] > 10 * np.median(dissimilarity)


def test_coarse_noise_is_smooth_and_reproducible():
    first = coarse_noise((2, 1, 96, 96), generator=torch.Generator().manual_seed(1))
    second = coarse_noise((2, 1, 96, 96), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second)
    assert first.shape == (2, 1, 96, 96)
    neighbour_difference = (first[..., 1:] - first[..., :-1]).abs().mean()
    white_noise_difference = 2 / np.sqrt(np.pi) * first.std()  # E|x - y| for independent voxels
    assert neighbour_difference < 0.5 * white_noise_difference


# ---------------------------------------------------------------- families

def test_families_load_lazily_by_name():
    assert family_class("dae") is DenoisingAutoencoder
    assert family_class("segmenter") is SyntheticAnomalySegmenter
    assert family_class("vae") is VariationalAutoencoder
    assert family_class("diffusion") is PartialDiffusionModel
    assert family_class("skip-ae") is SkipAutoencoder


@pytest.mark.parametrize("family", ["dae", "vae", "skip-ae", "diffusion", "segmenter"])
def test_model_scores_each_contrast_inside_the_brain(tmp_path, family):
    model = load_model(tiny_bundle(tmp_path, family, ["flair", "t1"]))
    image, mask = canonical_case()
    fractions = []
    output = model.predict({"flair": image, "t1": -image}, mask, (3.0, 3.0, 3.0),
                           progress=lambda fraction, message: fractions.append(fraction))
    assert set(output.contrast_maps) == {"flair", "t1"}
    for score in output.contrast_maps.values():
        assert score.shape == image.shape and score.dtype == np.float32
        assert np.all(score[~mask] == 0) and np.isfinite(score).all() and score[mask].std() > 0
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert set(output.reconstructions) == (set() if family == "segmenter" else {"flair", "t1"})


def test_dae_with_one_shared_network_restores_every_contrast(tmp_path):
    model = load_model(tiny_bundle(tmp_path, "dae", ["flair", "t2"], shared=True))
    assert list(model.networks) == [SHARED_HEAD]
    image, mask = canonical_case()
    output = model.predict({"flair": image, "t2": -image}, mask, (3.0, 3.0, 3.0))
    assert set(output.reconstructions) == {"flair", "t2"}
    assert not np.allclose(output.reconstructions["flair"], output.reconstructions["t2"])


def test_vae_reconstructs_from_its_latent_mean_and_samples_only_in_training():
    torch.manual_seed(0)
    network = SliceVAE(in_channels=4, channels=[4, 8, 8], latent_channels=2).eval()
    slices = torch.randn(3, 4, 16, 20)
    mean, log_variance = network.encode(slices)
    assert mean.shape == log_variance.shape == (3, 2, 4, 5)  # two halvings, no skip connections
    assert torch.equal(network(slices), network.decode(mean))
    first, _, _ = network.sample(slices)
    second, _, _ = network.sample(slices)
    assert first.shape == (3, 1, 16, 20) and not torch.equal(first, second)


def test_dense_vae_squeezes_any_slice_through_one_vector():
    torch.manual_seed(0)
    network = SliceVAE(in_channels=4, channels=[4, 8, 8], dense_latent=6).eval()
    for shape in ((3, 4, 16, 20), (2, 4, 32, 48)):
        slices = torch.randn(*shape)
        mean, log_variance = network.encode(slices)
        assert mean.shape == log_variance.shape == (shape[0], 6)  # one vector per slice, whatever its size
        assert network(slices).shape == (shape[0], 1, *shape[2:])
        assert torch.equal(network(slices), network.decode(mean, network.bottleneck_size(slices)))
    assert network.sample(slices)[0].shape == (2, 1, 32, 48)


def test_kl_gradient_score_is_the_residual_weighted_by_the_latents_sensitivity(tmp_path):
    model = load_model(tiny_bundle(tmp_path, "vae", ["flair"], score="kl-combined"))
    network = model.networks["flair"]
    inputs = torch.randn(2, 4, 16, 16)
    with torch.inference_mode():  # as predict_volume calls it
        gradient = kl_gradient(network, inputs)
    assert gradient.shape == (2, 1, 16, 16) and gradient.min() >= 0 and gradient.max() > 0
    image, mask = canonical_case()
    output = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    score, residual = output.contrast_maps["flair"], prepare(image, mask) - output.reconstructions["flair"]
    assert np.isfinite(score).all() and (np.sign(score[mask]) == np.sign(residual[mask])).mean() > 0.95


def test_skip_autoencoder_drops_skip_channels_in_training_only():
    torch.manual_seed(0)
    network = SliceSkipAE(in_channels=4, channels=[4, 8, 8], skip_dropout=0.9)
    slices = torch.randn(2, 4, 21, 30)  # odd sizes: the decoder follows the skips' grids
    network.eval()
    assert network(slices).shape == (2, 1, 21, 30) and torch.equal(network(slices), network(slices))
    network.train()
    assert not torch.equal(network(slices), network(slices))


def test_vae_with_one_shared_network_reconstructs_every_contrast(tmp_path):
    model = load_model(tiny_bundle(tmp_path, "vae", ["flair", "t2"], shared=True))
    assert isinstance(model, VariationalAutoencoder) and list(model.networks) == [VAE_HEAD]
    image, mask = canonical_case(shape=(9, 21, 35))  # in-plane sizes not a multiple of the padding
    output = model.predict({"flair": image, "t2": -image}, mask, (3.0, 3.0, 3.0))
    assert output.reconstructions["flair"].shape == image.shape
    assert not np.allclose(output.reconstructions["flair"], output.reconstructions["t2"])


def test_diffusion_schedule_starts_clean_and_decays():
    alphas = cumulative_alphas(DEFAULT_SAMPLER)
    assert alphas.shape == (DEFAULT_SAMPLER["timesteps"] + 1,) and alphas[0] == 1.0
    assert torch.all(alphas[1:] < alphas[:-1]) and alphas[-1] < 1e-3


def test_diffusion_reconstruction_is_reproducible_and_runs_the_sampler_steps(tmp_path):
    model = load_model(tiny_bundle(tmp_path, "diffusion", ["flair"]))
    calls = []
    network = model.networks["flair"]
    network.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[1]))
    image, mask = canonical_case()
    first = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    batches = -(-int(mask.any(axis=(1, 2)).sum()) // model.batch_size)
    assert len(calls) == 3 * batches and set(calls) == {3}  # 3 DDIM steps; slice, mask, step channels
    second = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    assert np.array_equal(first.contrast_maps["flair"], second.contrast_maps["flair"])
    assert np.all(first.reconstructions["flair"][~mask] == 0)


@pytest.mark.parametrize("score", ["ssim", "ssim-ens", "perceptual"])
def test_structure_and_perceptual_scores_count_only_where_the_residual_goes_the_lesion_way(tmp_path, score):
    settings = {"feature_model": "segmenter"} if score == "perceptual" else {}
    model = load_model(tiny_bundle(tmp_path, "dae", ["flair"], score=score, **settings))
    image, mask = canonical_case()
    output = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    score_map, residual = output.contrast_maps["flair"], prepare(image, mask) - output.reconstructions["flair"]
    assert score_map.min() >= 0 and score_map.max() > 0
    assert not score_map[residual <= 0].any()


def test_one_ssim_window_differs_from_the_window_ensemble():
    image, mask = canonical_case()
    reconstruction = np.where(mask, 0.5 * image, 0).astype(np.float32)
    single = anomaly_score(image, reconstruction, "both", "ssim")
    ensemble = anomaly_score(image, reconstruction, "both", "ssim-ens")
    assert single.shape == ensemble.shape and not np.allclose(single, ensemble)


def test_mahalanobis_score_is_the_deviation_from_the_reconstructions_in_units_of_their_spread():
    reconstructions = [np.array([1.0, 1.0, 0.0]), np.array([3.0, 3.0, 0.0])]  # mean 2, sd 1 (sd 0: floored)
    image = np.array([5.0, -1.0, 0.05])
    np.testing.assert_allclose(mahalanobis_score(image, reconstructions, "bright"), [3.0, -3.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(mahalanobis_score(image, reconstructions, "both"), [3.0, 3.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="several"):
        anomaly_score(image, reconstructions[:1], "bright", "mahalanobis")


def test_diffusion_ensemble_reconstructs_once_per_noise_level_and_seed(tmp_path):
    bundle = tiny_bundle(tmp_path, "diffusion", ["flair"], score="mahalanobis",
                         ensemble={"noise_levels": [50, 100], "seeds": 2})
    model = load_model(bundle)
    calls = []
    network = model.networks["flair"]
    network.register_forward_hook(lambda module, inputs, output: calls.append(1))
    image, mask = canonical_case()
    output = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    batches = -(-int(mask.any(axis=(1, 2)).sum()) // model.batch_size)
    assert len(calls) == 2 * 2 * 3 * batches  # levels x seeds x DDIM steps
    assert np.isfinite(output.contrast_maps["flair"]).all() and output.contrast_maps["flair"].max() > 0


def test_patch_tiles_cover_the_slice_with_windows_of_the_patch_size():
    tiles = patch_tiles((40, 50), 16)
    covered = np.zeros((40, 50), int)
    for rows, columns in tiles:
        assert rows.stop - rows.start == columns.stop - columns.start == 16 and rows.stop <= 40 and columns.stop <= 50
        covered[rows, columns] += 1
    assert covered.min() >= 1 and len(tiles) == 3 * 4


def test_patched_diffusion_restores_each_brain_patch_in_turn(tmp_path):
    bundle = tiny_bundle(tmp_path, "diffusion", ["flair"], sampler={"start": 100, "steps": 3, "patch_mm": 24.0})
    model = load_model(bundle)
    calls = []
    model.networks["flair"].register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    image, mask = canonical_case()
    output = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    patch = 8  # 24 mm on the 3-mm grid
    height, width = calls[0][-2:]
    assert len(calls) > 3 * -(-int(mask.any(axis=(1, 2)).sum()) // model.batch_size)  # more than one patch
    assert len(patch_tiles((height, width), patch)) > 1 and np.isfinite(output.contrast_maps["flair"]).all()
    again = model.predict({"flair": image}, mask, (3.0, 3.0, 3.0))
    assert np.array_equal(output.contrast_maps["flair"], again.contrast_maps["flair"])


def test_a_score_the_family_cannot_compute_is_refused(tmp_path):
    with pytest.raises(ModelError, match="mahalanobis score needs a diffusion model"):
        load_model(tiny_bundle(tmp_path, "dae", ["flair"], score="mahalanobis"))
    with pytest.raises(ModelError, match="kl-combined score needs a vae model"):
        load_model(tiny_bundle(tmp_path, "dae", ["flair"], score="kl-combined"))


def test_a_perceptual_score_calibrated_with_other_feature_weights_is_refused(tmp_path):
    bundle = tiny_bundle(tmp_path, "dae", ["flair"], score="perceptual", feature_model="segmenter",
                         feature_model_sha256="0" * 64)
    with pytest.raises(ModelError, match="rescore"):
        load_model(bundle)


def test_changed_weights_are_refused(tmp_path):
    bundle = tiny_bundle(tmp_path, "dae", ["flair"])
    with open(bundle.path / "weights.pt", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="checksum"):
        load_model(bundle)


@pytest.mark.parametrize("family", ["dae", "vae", "skip-ae", "diffusion", "segmenter"])
def test_detect_with_a_learned_model_returns_maps_on_the_input_grid(tmp_path, family):
    bundle = tiny_bundle(tmp_path, family, ["flair"])
    image, mask, _ = phantom_brain(direction=OBLIQUE_DIRECTION)
    result = detect_raw_scores({"flair": image}, model=bundle, mask=mask,
                               options=DetectOptions(device="cpu", threshold="otsu"))
    assert geometry_of(result.anomaly_map) == geometry_of(image)
    # raw channel maps stay on the 1 mm working grid (what calibration reads)
    assert geometry_of(result.channel_maps["flair"]) == geometry_of(result.postprocessor.grid)
    assert result.postprocessor.grid.GetSpacing() == (1.0, 1.0, 1.0)
    brain = sitk.GetArrayFromImage(mask) > 0
    assert np.all(sitk.GetArrayFromImage(result.anomaly_map)[~brain] == 0)
    if family != "segmenter":
        assert geometry_of(result.reconstructions["flair"]) == geometry_of(image)


def test_detect_can_be_cancelled_inside_the_model(tmp_path):
    bundle = tiny_bundle(tmp_path, "segmenter", ["flair"])
    image, mask, _ = phantom_brain()
    cancel = threading.Event()

    def progress(fraction, stage):
        if stage.startswith("segmenting"):
            cancel.set()

    with pytest.raises(Cancelled):
        detect({"flair": image}, model=bundle, mask=mask, progress=progress, cancel=cancel,
               options=DetectOptions(device="cpu", threshold="otsu"))


def _calibrate_by_hand(bundle, contrasts):
    table = {"exceedance": [1.0, 0.1, 0.01, 0.001], "score": [-20.0, 1.0, 2.0, 3.0]}
    bundle.metadata["calibration"] = {"channels": {c: table for c in contrasts}, "fused": {}}
    (bundle.path / "metadata.json").write_text(json.dumps(bundle.metadata), encoding="utf-8")


def _two_member_ensemble(tmp_path, member_fusion=None, members_when_alone=None):
    """A FLAIR/T1 ensemble of a tiny segmenter and thresholding, both calibrated by hand."""
    member_folder = tmp_path / "members" / "seg"
    member_folder.mkdir(parents=True)
    segmenter = tiny_bundle(member_folder, "segmenter", ["flair", "t1"])
    _calibrate_by_hand(segmenter, ["flair", "t1"])
    threshold = tmp_path / "members" / "thr"
    threshold.mkdir()
    (threshold / "metadata.json").write_text(json.dumps({
        "name": "thr", "family": "threshold", "contrasts": ["flair", "t1"],
        "preprocessing": {"spacing_mm": None, "normalisation": "robust_z"}}), encoding="utf-8")
    _calibrate_by_hand(read_bundle(threshold), ["flair", "t1"])
    ensemble_folder = tmp_path / "ensemble"
    ensemble_folder.mkdir()
    (ensemble_folder / "metadata.json").write_text(json.dumps({
        "name": "ens", "family": "ensemble", "contrasts": ["flair", "t1"],
        "members": {"segmenter": "../members/seg", "threshold": "../members/thr"},
        "preprocessing": {"spacing_mm": [1.5, 1.5, 1.5], "normalisation": "robust_z"},
        "scoring": {"members_per_contrast": {"flair": ["threshold", "segmenter"], "t1": ["segmenter"]},
                    **({"member_fusion": member_fusion} if member_fusion else {}),
                    **({"members_when_alone": members_when_alone} if members_when_alone else {})}}), encoding="utf-8")
    return read_bundle(ensemble_folder), read_bundle(threshold)


def test_ensemble_routes_each_contrast_to_its_members_in_calibrated_units(tmp_path):
    from UADBrainLib.inference.calibration import surprise

    ensemble, threshold = _two_member_ensemble(tmp_path)
    model = load_model(ensemble)
    image, mask = canonical_case(shape=(30, 40, 36))
    output = model.predict({"flair": image, "t1": image}, mask, (1.5, 1.5, 1.5))
    flair_threshold = surprise(image, threshold.calibration["channels"]["flair"])
    assert output.contrast_maps["flair"].shape == image.shape
    assert np.all(output.contrast_maps["flair"][mask] >= flair_threshold[mask] - 1e-5)
    assert not np.allclose(output.contrast_maps["flair"][mask], flair_threshold[mask])  # the segmenter adds
    assert np.all(output.contrast_maps["t1"][~mask] == 0)


def test_ensemble_min_fusion_flags_only_where_all_members_agree(tmp_path):
    from UADBrainLib.inference.calibration import surprise

    ensemble, threshold = _two_member_ensemble(tmp_path, member_fusion="min")
    image, mask = canonical_case(shape=(30, 40, 36))
    output = load_model(ensemble).predict({"flair": image}, mask, (1.5, 1.5, 1.5))
    flair_threshold = surprise(image, threshold.calibration["channels"]["flair"])
    assert np.all(output.contrast_maps["flair"][mask] <= flair_threshold[mask] + 1e-5)
    assert not np.allclose(output.contrast_maps["flair"][mask], flair_threshold[mask])


def test_a_contrast_given_alone_goes_to_its_own_member_and_with_others_to_the_usual_ones(tmp_path):
    from UADBrainLib.inference.models.ensemble import routed_bundles

    ensemble, _ = _two_member_ensemble(tmp_path, members_when_alone={"t1": "threshold"})
    model = load_model(ensemble)
    assert model.for_contrasts(["t1"]).bundle.name == "thr"  # alone: its own member, with that member's calibration
    assert model.for_contrasts(["flair", "t1"]) is model  # beside FLAIR: the segmenter, fused by the ensemble
    assert [b.name for b in routed_bundles(ensemble, ["t1"])] == ["thr"]
    assert {b.name for b in routed_bundles(ensemble, ["flair", "t1"])} == {"thr", "tiny-segmenter"}
    image, mask, _ = phantom_brain(lesion=False)
    alone = detect({"t1": image}, model=model, mask=mask, options=DetectOptions(device="cpu", check_contrast=False))
    assert alone.report["scored_by"] == "thr None"
    # a calibration of the ensemble on that contrast alone is in the ensemble's own units, not the member's
    raw = detect_raw_scores({"t1": image}, model=model, mask=mask, options=DetectOptions(device="cpu", check_contrast=False))
    assert raw.report["scored_by"] == "ens None"


def test_an_ensemble_routing_to_a_model_it_does_not_name_is_refused(tmp_path):
    ensemble, _ = _two_member_ensemble(tmp_path, members_when_alone={"t1": "dae"})
    with pytest.raises(ModelError, match="routes contrasts to 'dae', which is not one of its members"):
        load_model(ensemble)
    image, mask, _ = phantom_brain(lesion=False)
    with pytest.raises(ModelError, match="routes contrasts to 'dae'"):  # detect reads the routes before loading
        detect({"t1": image}, model=ensemble, mask=mask, options=DetectOptions(device="cpu"))


def test_ensemble_with_an_unknown_member_fusion_is_refused(tmp_path):
    # the metadata schema names the field and the allowed values
    with pytest.raises(ModelError, match='member_fusion is "median", not one of "max", "min"'):
        ensemble, _ = _two_member_ensemble(tmp_path, member_fusion="median")
        load_model(ensemble)


# ---------------------------------------------------------------- the bundled models

LEARNED_BUNDLES = [name for name in list_bundled() if read_bundle(BUNDLED_MODELS_DIR / name).metadata.get("weights")]


@pytest.mark.parametrize("name", LEARNED_BUNDLES)
def test_bundled_learned_model_is_small_documented_calibrated_and_runs(name):
    bundle = read_bundle(BUNDLED_MODELS_DIR / name)
    assert bundle.weights_path.stat().st_size <= 20 * 1024 * 1024  # its own file, or a bundled model it shares
    card = (bundle.path / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation on real scans" in card and "| brats2015 |" in card and "IXI" in card
    assert set(bundle.calibration["channels"]) == set(bundle.contrasts)
    image, mask, _ = phantom_brain()
    result = detect({bundle.contrasts[0]: image}, model=load_model(bundle), mask=mask,
                    options=DetectOptions(device="cpu", threshold="calibrated"))
    assert np.isfinite(result.threshold) and np.isfinite(sitk.GetArrayFromImage(result.anomaly_map)).all()


def test_hybrid_drops_what_no_learned_model_confirms():
    """On the bundled example, ``hybrid`` (thresholding confirmed by the segmenter or the DAE) keeps
    the inserted lesion and drops the bright frontal-horn rim that thresholding alone flags."""
    example = load_example()
    truth = sitk.GetArrayFromImage(example["lesion"]) > 0

    def dice(result):
        flagged = sitk.GetArrayFromImage(result.segmentation) > 0
        return 2 * (flagged & truth).sum() / (flagged.sum() + truth.sum())

    options = DetectOptions(device="cpu")
    alone = detect({"flair": example["flair"]}, model="threshold", options=options)
    confirmed = detect({"flair": example["flair"]}, model="hybrid", options=options)
    assert confirmed.report["scored_by"].startswith("hybrid ") and confirmed.threshold_method == "calibrated"
    assert dice(confirmed) > dice(alone) + 0.05
    assert confirmed.flagged_volume_ml < alone.flagged_volume_ml
