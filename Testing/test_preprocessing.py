import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import ellipsoid, phantom_brain
from UADBrainLib.errors import InputError
from UADBrainLib.preprocessing import (atlas_brain_mask, check_mask_volume, histogram_equalise, looks_skull_stripped,
                                       n4_bias_correction, nonzero_brain_mask, normalise, robust_statistics, robust_z)


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_nonzero_mask_with_constant_nonzero_background_and_dark_holes():
    # BraTS-like: z-scored inside the brain, constant negative value outside; a voxel of the
    # brain that happens to equal the background value must not punch a hole
    image, brain, _ = phantom_brain(background=-3.62)
    array = sitk.GetArrayFromImage(image)
    array[24, 28, 26] = -3.62
    image = sitk.GetImageFromArray(array)
    mask = sitk.GetArrayFromImage(nonzero_brain_mask(image)) > 0
    assert np.array_equal(mask, sitk.GetArrayFromImage(brain) > 0)


def test_skull_stripped_detection():
    stripped, _, _ = phantom_brain(shape=(80, 96, 90), spacing=(2.0, 2.0, 2.0))
    assert looks_skull_stripped(stripped)
    # a raw head: noisy air all around and a big bright scalp shell
    rng = np.random.default_rng(1)
    shape = (80, 96, 90)
    head = np.abs(rng.normal(0, 3, shape)).astype(np.float32)
    centre = np.array(shape) / 2
    head[ellipsoid(shape, centre, np.array(shape) * 0.47)] = 180
    head[ellipsoid(shape, centre, np.array(shape) * 0.40)] = 100
    raw = sitk.GetImageFromArray(head)
    raw.SetSpacing((2.0, 2.0, 2.0))
    assert not looks_skull_stripped(raw)


def test_robust_z_is_invariant_to_scanner_scaling_and_offset():
    image, brain, _ = phantom_brain()
    array, mask = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(brain) > 0
    assert np.allclose(robust_z(array, mask), robust_z(3.5 * array - 40, mask), atol=1e-4)


def test_robust_statistics_barely_move_with_a_lesion():
    image, brain, lesion = phantom_brain()
    mask = sitk.GetArrayFromImage(brain) > 0
    with_lesion = sitk.GetArrayFromImage(image)
    without = with_lesion.copy()
    without[sitk.GetArrayFromImage(lesion) > 0] -= 60
    (m1, s1), (m2, s2) = robust_statistics(with_lesion[mask]), robust_statistics(without[mask])
    assert abs(m1 - m2) < 0.1 * s2 and abs(s1 - s2) < 0.1 * s2


def test_constant_brain_is_rejected():
    with pytest.raises(InputError, match="no intensity contrast"):
        robust_z(np.ones((5, 5, 5)), np.ones((5, 5, 5), bool))


def test_histogram_equalisation_is_monotone_in_unit_range():
    image, brain, _ = phantom_brain()
    array, mask = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(brain) > 0
    equalised = histogram_equalise(array, mask)
    assert equalised.min() >= 0 and equalised.max() <= 1
    order = np.argsort(array[mask])
    assert np.all(np.diff(equalised[mask][order]) >= -1e-6)
    assert np.median(equalised[mask]) == pytest.approx(0.5, abs=0.02)
    assert np.array_equal(normalise(array, mask, "histeq"), equalised)
    with pytest.raises(ValueError):
        normalise(array, mask, "percentile99")


def test_n4_removes_a_smooth_bias_field():
    image, brain, _ = phantom_brain(lesion=False)
    array = sitk.GetArrayFromImage(image)
    k = np.linspace(-1, 1, array.shape[0])[:, None, None]
    biased = sitk.GetImageFromArray((array * np.exp(0.3 * k)).astype(np.float32))
    biased.CopyInformation(image)
    mask = sitk.GetArrayFromImage(brain) > 0
    corrected = sitk.GetArrayFromImage(n4_bias_correction(biased, brain))

    def spread(values):
        return np.std(values[mask]) / np.mean(values[mask])
    assert spread(corrected) < 0.6 * spread(sitk.GetArrayFromImage(biased))


def test_mask_volume_check():
    _, brain, _ = phantom_brain(shape=(10, 10, 10))
    with pytest.raises(InputError, match="does not look like a brain"):
        check_mask_volume(brain)


def test_atlas_brain_mask_recovers_the_template_brain_under_an_affine_move():
    from UADBrainLib.template import TEMPLATE_PATH

    template = sitk.ReadImage(str(TEMPLATE_PATH), sitk.sitkFloat32)
    move = sitk.Euler3DTransform((0, 0, 0), 0.08, -0.05, 0.1, (6.0, -4.0, 3.0))
    moved = sitk.Resample(template, template, move, sitk.sitkLinear, 0.0)
    moved = moved + sitk.Cast(sitk.AdditiveGaussianNoise(moved * 0, 2.0, 0, 1), sitk.sitkFloat32)
    expected = sitk.GetArrayFromImage(moved) > 20
    mask = sitk.GetArrayFromImage(atlas_brain_mask(moved)) > 0
    assert dice(mask, expected) > 0.9
