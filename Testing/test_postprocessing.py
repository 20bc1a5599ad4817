import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import ellipsoid
from UADBrainLib.errors import InputError
from UADBrainLib.inference.postprocessing import PostProcessor, erode_mask, median_filter, otsu_threshold


def image_of(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction:
        image.SetDirection(direction)
    return image


def two_blob_map(spacing):
    """A map with two separate cubes of 8 and 27 voxels inside an all-brain mask."""
    scores = np.zeros((20, 20, 20), np.float32)
    scores[2:4, 2:4, 2:4] = 5.0  # 8 voxels
    scores[10:13, 10:13, 10:13] = 8.0  # 27 voxels
    return image_of(scores, spacing), image_of(np.ones_like(scores, np.uint8), spacing)


def test_minimum_size_is_in_cubic_millimetres_under_anisotropic_spacing():
    # 8 voxels of 1×1×3 mm = 24 mm³; 27 voxels = 81 mm³
    post = PostProcessor(*two_blob_map((1.0, 1.0, 3.0)))
    assert [l.voxels for l in post.segment(1.0, 0, 0.0).lesions] == [27, 8]
    assert [l.voxels for l in post.segment(1.0, 0, 25.0).lesions] == [27]
    # the same voxels at 0.5 mm isotropic are 1 mm³ and 3.4 mm³: both go at 5 mm³
    small = PostProcessor(*two_blob_map((0.5, 0.5, 0.5)))
    assert small.segment(1.0, 0, 5.0).lesions == []


def test_lesion_table_values():
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    post = PostProcessor(*[image_of(sitk.GetArrayFromImage(i), (2.0, 1.0, 1.5), (5.0, -3.0, 7.0), direction)
                           for i in two_blob_map((1, 1, 1))])
    big, small = post.segment(1.0, 0, 0.0).lesions
    assert (big.label, small.label) == (1, 2)  # ordered by maximum score
    assert big.volume_ml == pytest.approx(27 * 3.0 / 1000)
    assert big.max_score == 8.0 and big.mean_score == 8.0
    assert big.centroid_ijk == (11.0, 11.0, 11.0)
    assert big.bbox_ijk_min == (10, 10, 10) and big.bbox_ijk_max == (12, 12, 12)
    lps = post.reference.TransformContinuousIndexToPhysicalPoint((11.0, 11.0, 11.0))
    assert big.centroid_ras == pytest.approx((-lps[0], -lps[1], lps[2]))


def test_labels_are_on_the_full_grid():
    scores = np.zeros((30, 30, 30), np.float32)
    scores[12:15, 12:15, 12:15] = 4
    brain = np.zeros_like(scores, np.uint8)
    brain[8:22, 8:22, 8:22] = 1
    segmentation = PostProcessor(image_of(scores), image_of(brain)).segment(1.0)
    assert segmentation.labels.shape == scores.shape
    assert np.array_equal(segmentation.labels > 0, scores > 1)


def test_median_filter_removes_isolated_voxels_and_keeps_blobs():
    array = np.zeros((20, 20, 20), np.float32)
    array[5, 5, 5] = 10
    array[10:16, 10:16, 10:16] = 10
    for kernel in (3, 5):
        filtered = median_filter(array, kernel)
        assert filtered[5, 5, 5] == 0 and filtered[13, 13, 13] == 10
    assert median_filter(array, 0) is array
    with pytest.raises(InputError, match="median kernel must be one of 0, 3, 5, 7 mm"):
        median_filter(array, 4)


def test_erosion_in_millimetres_respects_spacing():
    mask = ellipsoid((40, 40, 40), (20, 20, 20), (15, 15, 15))
    eroded = erode_mask(mask, 4.0, (1.0, 1.0, 2.0))  # (i, j, k) spacing: 2 mm along k
    profile_k = eroded[:, 20, 20].sum()
    profile_i = eroded[20, 20, :].sum()
    assert profile_i == pytest.approx(mask[20, 20, :].sum() - 8, abs=1)
    assert profile_k == pytest.approx(mask[:, 20, 20].sum() - 4, abs=1)


def test_otsu_splits_two_modes():
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 5000),
                             np.random.default_rng(1).normal(10, 1, 5000)])
    assert 3 < otsu_threshold(values) < 7


@pytest.mark.parametrize("kernel", [0, 3, 5, 7])
def test_segmenting_before_and_after_filtering_agree_exactly(kernel):
    rng = np.random.default_rng(kernel)
    scores = ndimage_smooth(rng.normal(size=(30, 34, 28)).astype(np.float32)) * 10
    scores[10:20, 12:22, 8:18] += 3.0
    brain = ellipsoid(scores.shape, (15, 17, 14), (13, 15, 12)).astype(np.uint8)
    for threshold in (0.3, 1.0):
        fresh = PostProcessor(image_of(scores), image_of(brain)).segment(threshold, kernel)
        filtered_first = PostProcessor(image_of(scores), image_of(brain))
        filtered_first.filtered(kernel)
        cached = filtered_first.segment(threshold, kernel)
        assert np.array_equal(fresh.labels, cached.labels) and fresh.lesions == cached.lesions
        assert fresh.lesions  # the test is not vacuous


def ndimage_smooth(array):
    from scipy import ndimage

    return ndimage.gaussian_filter(array, 1.5)
