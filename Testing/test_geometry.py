import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import OBLIQUE_DIRECTION, phantom_brain
from UADBrainLib.geometry import (canonical_spacing, is_axis_aligned, overlap_fraction, resample_like, same_grid,
                                  to_canonical)

# flip i, swap j/k: an axis-aligned but non-canonical orientation (e.g. RAS-stored NIfTI read as LPS)
PERMUTED = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)


def value_at(image, point):
    index = image.TransformPhysicalPointToIndex(point)
    return image[index]


def test_axis_aligned_reorientation_is_exact():
    image, _, _ = phantom_brain(direction=PERMUTED)
    canonical = to_canonical(image)
    assert np.allclose(canonical.GetDirection(), np.eye(3).ravel())
    assert sorted(canonical.GetSize()) == sorted(image.GetSize())
    assert np.allclose(canonical_spacing(image), canonical.GetSpacing())
    # every voxel keeps its value at the same physical point
    for index in [(0, 0, 0), (10, 20, 30), (51, 55, 47)]:
        point = image.TransformIndexToPhysicalPoint(index)
        assert value_at(canonical, point) == image[index]


def test_oblique_image_is_resampled_onto_identity_grid_covering_it():
    image, _, _ = phantom_brain(direction=OBLIQUE_DIRECTION)
    assert not is_axis_aligned(image)
    canonical = to_canonical(image)
    assert np.allclose(canonical.GetDirection(), np.eye(3).ravel())
    centre = image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()])
    assert abs(value_at(canonical, centre) - image[[s // 2 for s in image.GetSize()]]) < 30
    # brain content survives: similar total intensity (volume-weighted)
    original = sitk.GetArrayViewFromImage(image).sum() * np.prod(image.GetSpacing())
    resampled = sitk.GetArrayViewFromImage(canonical).sum() * np.prod(canonical.GetSpacing())
    assert resampled == pytest.approx(original, rel=0.03)


def test_requested_spacing():
    image, _, _ = phantom_brain()
    resampled = to_canonical(image, spacing=(2.0, 2.0, 2.0))
    assert resampled.GetSpacing() == (2.0, 2.0, 2.0)


def test_round_trip_back_to_native_grid_is_exact_geometry():
    image, _, _ = phantom_brain(direction=OBLIQUE_DIRECTION, origin=(-7.5, 33.0, 101.0))
    back = resample_like(to_canonical(image, spacing=(2, 2, 2)), image)
    assert same_grid(back, image)
    centre = tuple(s // 2 for s in image.GetSize())
    assert abs(back[centre] - image[centre]) < 25


def test_overlap_fraction():
    image, _, _ = phantom_brain()
    assert overlap_fraction(image, image) == pytest.approx(1.0)
    moved = sitk.Image(image)
    moved.SetOrigin([o + 1000 for o in image.GetOrigin()])
    assert overlap_fraction(image, moved) == 0.0
