"""The anatomy-aware normative model: tissue statistics, its grids, training and loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from phantoms import ellipsoid
from UADBrainLib.bundle import read_bundle
from UADBrainLib.cli.main import main
from UADBrainLib.inference.models import load_model
from UADBrainLib.inference.models.tissue import TISSUE_CLASSES, downsample, tissue_deviation, upsample
from UADBrainLib.synthesis.example import example_label_map_paths
from UADBrainLib.training.tissue import TISSUE_TO_CLASS, tissue_classes

SHAPE = (40, 44, 42)


def flair_like_phantom(seed: int = 0):
    """White matter (1.0) with a cortical shell (1.3, FLAIR-bright grey matter), CSF (0.3) in the
    middle and a lesion in the white matter as bright as the cortex (1.32); exact tissue probabilities (lesion = white matter)."""
    rng = np.random.default_rng(seed)
    brain = ellipsoid(SHAPE, (20, 22, 21), (17, 19, 18))
    white = ellipsoid(SHAPE, (20, 22, 21), (13, 15, 14))
    csf = ellipsoid(SHAPE, (20, 22, 21), (4, 5, 4))
    lesion = ellipsoid(SHAPE, (20, 12, 21), (2, 2, 2))
    classes = np.where(csf, 1, np.where(white, 4, np.where(brain, 2, 0)))
    probabilities = np.stack([classes == index for index in range(len(TISSUE_CLASSES))]).astype(np.float32)
    image = np.choose(classes, [0.0, 0.3, 1.3, 1.1, 1.0]).astype(np.float32)
    image[lesion] = 1.32
    image += rng.normal(0.0, 0.03, SHAPE).astype(np.float32) * brain
    return image, probabilities, brain, lesion, classes


def test_a_lesion_stands_out_of_its_tissue_while_bright_cortex_does_not():
    image, probabilities, brain, lesion, classes = flair_like_phantom()
    score = tissue_deviation(image, probabilities, brain)
    cortex = classes == 2
    assert np.median(score[lesion]) > 8.0  # 0.32 above white matter, noise sd 0.03
    assert np.percentile(np.abs(score[cortex]), 99) < 4.0
    # against the brain as a whole (what thresholding does) much of the cortex outranks the lesion
    assert np.percentile(image[cortex], 90) > np.median(image[lesion])
    assert np.all(score[~brain] == 0.0)


def test_block_grids_keep_shape_and_position():
    rng = np.random.default_rng(1)
    fine = rng.random((9, 10, 11)).astype(np.float32)
    coarse = downsample(fine, 2)
    assert coarse.shape == (5, 5, 6) and coarse[0, 0, 0] == pytest.approx(fine[:2, :2, :2].mean())
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 6, 6))
    back = upsample(downsample(ramp, 2)[None], 2, ramp.shape)[0]
    assert back.shape == ramp.shape
    assert np.abs(back[1:-1] - ramp[1:-1]).max() < 1e-5  # linear fields come back exactly inside


def test_every_synthesis_tissue_inside_the_brain_has_a_class():
    labels = np.arange(len(TISSUE_TO_CLASS)).reshape(1, 1, -1)
    inside = tissue_classes(labels, np.ones(labels.shape, bool))
    assert inside.min() >= 1 and inside.max() == len(TISSUE_CLASSES) - 1
    assert np.all(tissue_classes(labels, np.zeros(labels.shape, bool)) == 0)


@pytest.fixture(scope="module")
def tiny_tissue_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tissue")
    maps = folder / "maps"
    maps.mkdir()
    source = example_label_map_paths()[0]
    for index in range(5):  # four are held out for validation
        shutil.copy(source, maps / f"map_{index}{''.join(source.suffixes)}")
    out = folder / "bundle"
    assert main(["train", "--model", "tissue", "--label-maps", str(maps), "--out", str(out), "--steps", "2",
                 "--validate-every", "2", "--validation-volumes", "1", "--threads", "1"]) == 0
    return out


def test_training_writes_a_bundle_that_loads_and_scores(tiny_tissue_bundle):
    bundle = read_bundle(tiny_tissue_bundle)
    assert bundle.family == "tissue" and bundle.metadata["tissue_network"]["classes"] == list(TISSUE_CLASSES)
    assert bundle.metadata["training"]["steps"] == 2
    model = load_model(bundle)
    image, _, brain, _, _ = flair_like_phantom()
    output = model.predict({"flair": image, "t1": 2.0 - image}, brain, (1.0, 1.0, 1.0))
    for contrast in ("flair", "t1"):
        score = output.contrast_maps[contrast]
        assert score.shape == SHAPE and score.dtype == np.float32 and np.isfinite(score).all()
        assert np.all(score[~brain] == 0.0)


@pytest.mark.parametrize("spacing_mm", [[1.0, 1.0, 1.0], 1.0])  # the schema allows one number for all axes
def test_the_pipeline_runs_the_bundle_on_a_scan_of_another_grid(tiny_tissue_bundle, tmp_path, spacing_mm):
    from phantoms import phantom_brain
    from UADBrainLib.bundle import write_metadata
    from UADBrainLib.inference.options import DetectOptions
    from UADBrainLib.inference.pipeline import detect

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_tissue_bundle, folder)
    metadata = read_bundle(folder).metadata
    metadata["preprocessing"]["spacing_mm"] = spacing_mm
    write_metadata(folder, metadata)
    image, mask, _ = phantom_brain()
    result = detect({"flair": image}, model=load_model(read_bundle(folder)), mask=mask,
                    options=DetectOptions(device="cpu", threshold="otsu"))
    assert result.anomaly_map.GetSize() == image.GetSize() and np.isfinite(result.threshold)
