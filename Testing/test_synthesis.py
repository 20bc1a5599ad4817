"""Synthetic healthy brains (synthesis/brains.py), synthetic anomalies (synthesis/anomalies.py), the example."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from UADBrainLib.errors import InputError
from UADBrainLib.synthesis.anomalies import (APPEARANCES, SHAPES, AnomalyConfig, LesionShapes, add_anomalies,
                                             insert_anomalies)
from UADBrainLib.synthesis.brains import (BRAIN_TISSUES, CONTRASTS, DEFAULT_FIELD_OF_VIEW_MM, Synthesizer, Tissue,
                                          compact_labels, load_label_map, synthesize)
from UADBrainLib.synthesis.example import load_example_labels, make_example


@pytest.fixture(scope="module")
def labels():
    return load_example_labels()


@pytest.fixture(scope="module")
def four_contrasts(labels):
    return synthesize(labels, CONTRASTS, spacing=2.0, skull_strip=False, seed=11)


def core(brain, *tissues):
    """Voxels of these tissues away from any other tissue (no partial volume)."""
    region = np.isin(brain.labels, tissues)
    return ndimage.binary_erosion(region, iterations=1) & (brain.brain_mask > 0)


def test_same_seed_same_brain_and_different_seed_different_brain(labels):
    a = synthesize(labels, ("flair", "t1"), seed=3)
    b = synthesize(labels, ("flair", "t1"), seed=np.random.default_rng(3))
    c = synthesize(labels, ("flair", "t1"), seed=4)
    for contrast in ("flair", "t1"):
        np.testing.assert_array_equal(a.images[contrast], b.images[contrast])
    np.testing.assert_array_equal(a.brain_mask, b.brain_mask)
    assert not np.array_equal(a.images["flair"], c.images["flair"])


@pytest.mark.parametrize("spacing", [2.0, 3.0])
def test_output_grid_is_canonical_at_the_requested_spacing(labels, spacing):
    brain = synthesize(labels, ("t1",), spacing=spacing, seed=0)
    expected = tuple(round(f / spacing) for f in DEFAULT_FIELD_OF_VIEW_MM)
    assert brain.images["t1"].shape == brain.brain_mask.shape == brain.labels.shape == expected
    assert brain.images["t1"].dtype == np.float32
    image = brain.image("t1")
    assert image.GetSpacing() == pytest.approx((spacing,) * 3)
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    assert image.GetOrigin() == pytest.approx(brain.origin)
    for other in (brain.mask_image(), brain.labels_image()):
        assert other.GetSize() == image.GetSize() and other.GetOrigin() == image.GetOrigin()


def test_one_millimetre_output_with_a_small_field_of_view(labels):
    brain = synthesize(labels, ("flair",), spacing=1.0, seed=0, field_of_view_mm=(64, 80, 72))
    assert brain.images["flair"].shape == (64, 80, 72)
    assert brain.brain_mask.any()


def test_brain_mask_is_brain_tissue_and_csf_in_one_piece(four_contrasts):
    mask = four_contrasts.brain_mask > 0
    labels = four_contrasts.labels
    assert np.isin(labels[mask], list(BRAIN_TISSUES)).mean() > 0.97
    assert mask[np.isin(labels, [Tissue.CORTEX, Tissue.CEREBRAL_WM, Tissue.VENTRICLE])].mean() > 0.97
    for outside in (Tissue.SKULL, Tissue.SKIN, Tissue.EYE, Tissue.SOFT_TISSUE):
        assert mask[labels == outside].mean() < 0.05
    _, pieces = ndimage.label(mask)
    assert pieces == 1
    assert (ndimage.binary_fill_holes(mask) & ~mask).sum() < 0.01 * mask.sum()
    volume_ml = mask.sum() * 8 / 1000
    assert 900 < volume_ml < 2200
    csf_share = np.isin(labels[mask], [Tissue.CSF, Tissue.VENTRICLE]).mean()
    assert 0.08 < csf_share < 0.4


@pytest.mark.parametrize("contrast,order", [
    ("flair", (Tissue.VENTRICLE, Tissue.CEREBRAL_WM, Tissue.CORTEX)),
    ("t1", (Tissue.VENTRICLE, Tissue.CORTEX, Tissue.CEREBRAL_WM)),
    ("t2", (Tissue.CEREBRAL_WM, Tissue.CORTEX, Tissue.VENTRICLE)),
    ("t1c", (Tissue.VENTRICLE, Tissue.CORTEX, Tissue.CEREBRAL_WM)),
])
def test_tissue_contrast_ordering(four_contrasts, contrast, order):
    image = four_contrasts.images[contrast]
    medians = [np.median(image[core(four_contrasts, tissue)]) for tissue in order]
    assert medians[0] < medians[1] < medians[2], (contrast, medians)


def test_t2_csf_is_far_brighter_than_the_brain_median(four_contrasts):
    t2 = four_contrasts.images["t2"]
    ratio = np.median(t2[core(four_contrasts, Tissue.VENTRICLE)]) / np.median(
        t2[four_contrasts.brain_mask > 0])
    assert ratio > 2.0


def test_skull_stripped_is_the_whole_head_inside_the_mask(labels):
    head = synthesize(labels, ("t1", "flair"), seed=5, skull_strip=False)
    stripped = synthesize(labels, ("t1", "flair"), seed=5, skull_strip=True)
    mask = head.brain_mask > 0
    np.testing.assert_array_equal(head.brain_mask, stripped.brain_mask)
    for contrast in ("t1", "flair"):
        np.testing.assert_array_equal(head.images[contrast][mask], stripped.images[contrast][mask])
        assert not stripped.images[contrast][~mask].any()
        scalp = np.isin(head.labels, [Tissue.SKIN, Tissue.SOFT_TISSUE])
        assert np.median(head.images[contrast][scalp]) > 0.3 * np.median(head.images[contrast][mask])
    assert stripped.skull_stripped and not head.skull_stripped


def test_contrasts_of_one_draw_share_the_anatomy(four_contrasts):
    ventricles = core(four_contrasts, Tissue.VENTRICLE)
    flair, t2 = four_contrasts.images["flair"], four_contrasts.images["t2"]
    mask = four_contrasts.brain_mask > 0
    assert np.median(flair[ventricles]) < 0.5 * np.median(flair[mask])
    assert np.median(t2[ventricles]) > 1.8 * np.median(t2[mask])
    # the FLAIR and T2 edges coincide: strongly anti-correlated inside the brain
    assert np.corrcoef(flair[mask], t2[mask])[0, 1] < -0.3


def test_random_contrast_and_synthesizer(labels):
    synthesizer = Synthesizer([labels])
    brain = synthesizer.sample(seed=2, contrasts=("random",))
    assert np.isfinite(brain.images["random"]).all() and brain.images["random"].max() > 0
    assert len(synthesizer) == 1


def test_unknown_contrast_is_a_user_error(labels):
    with pytest.raises(InputError, match="unknown contrast"):
        synthesize(labels, ("dwi",), seed=0)


def test_freesurfer_labels_are_compacted():
    values = np.array([0, 2, 41, 3, 4, 24, 515, 506, 136, 25, 999, 99])
    expected = [Tissue.BACKGROUND, Tissue.CEREBRAL_WM, Tissue.CEREBRAL_WM, Tissue.CORTEX,
                Tissue.VENTRICLE, Tissue.CSF, Tissue.SKULL, Tissue.EYE, Tissue.CHOROID_PLEXUS,
                Tissue.PERIVENTRICULAR_WM, Tissue.SOFT_TISSUE, Tissue.CEREBRAL_WM]
    np.testing.assert_array_equal(compact_labels(values), expected)


# ------------------------------------------------------------------------------- anomalies

@pytest.fixture(scope="module")
def healthy(labels):
    return synthesize(labels, ("flair", "t1", "t2"), seed=21)


@pytest.mark.parametrize("appearance", APPEARANCES)
def test_anomaly_mask_marks_where_the_image_changed(healthy, appearance):
    config = AnomalyConfig(appearances=(appearance,), shapes=("ellipsoid", "blob"), count=(2, 2),
                           diameter_mm=(8.0, 20.0), edge_blur_voxels=(0.0, 1.0))
    result = add_anomalies(healthy, seed=1, config=config)
    mask = result.mask > 0
    assert mask.any() and {a.appearance for a in result.anomalies} == {appearance}
    near = ndimage.binary_dilation(mask, iterations=4)  # blurred edges reach 3 sd
    for contrast, image in result.images.items():
        change = np.abs(image - healthy.images[contrast])
        assert not change[~near].any()  # nothing changes away from the anomalies
        assert (change[mask] > 0).mean() > 0.95  # the mask is where it changed ...
        assert change[mask].sum() > 0.5 * change.sum()  # ... and most of the change
        assert change[mask].mean() > 0.03 * np.median(healthy.images[contrast][healthy.brain_mask > 0])
    assert not (mask & (healthy.brain_mask == 0)).any()


def test_anomalies_are_deterministic_and_restricted(healthy):
    config = AnomalyConfig(shapes=("ellipsoid",), appearances=("darker",), count=(3, 3))
    a = add_anomalies(healthy, seed=9, config=config)
    b = add_anomalies(healthy, seed=9, config=config)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.images["t1"], b.images["t1"])
    assert {(x.shape, x.appearance) for x in a.anomalies} == {("ellipsoid", "darker")}
    with pytest.raises(InputError):
        AnomalyConfig(shapes=("cube",))


def test_periventricular_lesions_hug_the_ventricles(healthy):
    config = AnomalyConfig(shapes=("periventricular",), appearances=("lesion",), count=(1, 1))
    result = add_anomalies(healthy, seed=4, config=config)
    mask = result.mask > 0
    ventricles = ndimage.binary_dilation(healthy.labels == Tissue.VENTRICLE, iterations=2)
    assert mask.any() and (mask & ventricles).any()
    flair = result.images["flair"]
    assert np.median(flair[mask]) > np.median(healthy.images["flair"][mask])


def test_ms_lesions_have_conventional_contrast_ratios(healthy):
    config = AnomalyConfig(shapes=("ellipsoid",), appearances=("ms",), count=(12, 12), diameter_mm=(6.0, 10.0),
                           edge_blur_voxels=(0.0, 0.0), white_matter_probability=1.0)
    result = add_anomalies(healthy, seed=5, config=config)
    labelled, count = ndimage.label(result.mask > 0)
    ratios = {c: [] for c in ("flair", "t2", "t1")}
    for index in range(1, count + 1):
        inside = (labelled == index) & np.isin(healthy.labels, (Tissue.CEREBRAL_WM, Tissue.PERIVENTRICULAR_WM))
        for contrast, values in ratios.items():
            values.append(np.median(result.images[contrast][inside] / healthy.images[contrast][inside]))
    flair, t2, t1 = (np.array(ratios[c]) for c in ("flair", "t2", "t1"))
    assert count >= 6
    assert flair.min() >= 1.15 - 1e-4 and flair.max() <= 1.7 + 1e-4
    assert t2.min() >= 1.35 - 1e-4 and t2.max() <= 2.4 + 1e-4 and np.median(t2) > np.median(flair)
    assert t1.min() >= 0.65 - 1e-4 and t1.max() <= 1.0 + 1e-4
    assert np.corrcoef(flair, t2)[0, 1] > 0.5  # one severity: bright on FLAIR is bright on T2


def test_anomalies_without_labels_or_lesion_bank(healthy):
    result = insert_anomalies(healthy.images, healthy.brain_mask, healthy.spacing, seed=0,
                              config=AnomalyConfig(shapes=SHAPES, count=(4, 4)))
    assert result.mask.any() and len(result.anomalies) >= 1


def test_real_lesion_outlines_from_a_folder(healthy, shared_data):
    folder = shared_data / "eval" / "ms_lesjak2017" / "masks_only"
    bank = LesionShapes.from_folder(folder)
    assert len(bank) > 100
    config = AnomalyConfig(shapes=("ms_lesion",), appearances=("lesion",), count=(3, 3))
    result = add_anomalies(healthy, seed=2, config=config, lesion_shapes=bank)
    assert result.mask.any()
    assert {a.shape for a in result.anomalies} == {"ms_lesion"}


# ------------------------------------------------------------------------------- example

def test_example_is_a_deterministic_head_with_one_visible_lesion():
    example = make_example(seed=0)
    again = make_example(seed=0)
    assert set(example) == {"flair", "t1", "t2", "lesion", "brain_mask"}
    arrays = {k: sitk.GetArrayFromImage(v) for k, v in example.items()}
    for key, image in example.items():
        np.testing.assert_array_equal(arrays[key], sitk.GetArrayFromImage(again[key]))
        assert image.GetSpacing() == pytest.approx((2.0, 2.0, 2.0))
    lesion, brain = arrays["lesion"] > 0, arrays["brain_mask"] > 0
    assert 0.3 < lesion.sum() * 8 / 1000 < 10 and not (lesion & ~brain).any()
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion) & brain
    for contrast, brighter in (("flair", True), ("t2", True), ("t1", False)):
        inside, around = np.median(arrays[contrast][lesion]), np.median(arrays[contrast][ring])
        assert (inside > 1.2 * around) if brighter else (inside < 0.85 * around), contrast
    assert 1000 < brain.sum() * 8 / 1000 < 2000


def test_shared_synthseg_map_gives_a_whole_head(shared_data):
    path = shared_data / "label_maps" / "synthseg" / "training_seg_01.nii.gz"
    brain = synthesize(load_label_map(path), ("t2",), seed=0, skull_strip=False)
    head = brain.images["t2"] > 0.1 * np.median(brain.images["t2"][brain.brain_mask > 0])
    assert head.sum() > 1.3 * brain.brain_mask.sum()  # scalp, skull and face around the brain
    assert 0.08 < np.isin(brain.labels[brain.brain_mask > 0], [Tissue.CSF, Tissue.VENTRICLE]).mean() < 0.4


def test_older_synthetic_brains_have_larger_ventricles_and_more_sulcal_csf(labels):
    def tissue_ml(age, tissue):
        brains = [synthesize(labels, ("t1",), spacing=3.0, seed=seed, age=age) for seed in range(3)]
        return np.mean([np.count_nonzero(b.labels == tissue) * 27 / 1000 for b in brains]), brains[0]

    (young_ventricles, young), (old_ventricles, old) = (tissue_ml(age, Tissue.VENTRICLE) for age in (25, 85))
    assert old_ventricles > 1.3 * young_ventricles
    assert old.parameters["age"] == 85 and young.parameters["cortical_atrophy_mm"] < old.parameters["cortical_atrophy_mm"]
    unconditioned = synthesize(labels, ("t1",), spacing=3.0, seed=0)
    assert unconditioned.parameters["age"] is None
