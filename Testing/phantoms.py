"""Small synthetic volumes built in code, for tests that must run on a fresh clone."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

OBLIQUE_DIRECTION = tuple(
    sitk.VersorTransform((0.2, -0.3, 0.9), 0.35).GetMatrix())  # a rotation about a tilted axis


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def phantom_brain(shape=(48, 56, 52), spacing=(1.5, 1.2, 2.0), origin=(12.0, -30.0, 40.0),
                  direction=None, lesion=True, seed=0, background=0.0):
    """A noisy ellipsoid 'brain' with an optional bright spherical lesion.

    Returns (image, brain mask, lesion mask) as SimpleITK images sharing one geometry. ``shape``
    is in array order (k, j, i); ``spacing``/``origin`` in SimpleITK order (i, j, k).
    """
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2
    brain = ellipsoid(shape, centre, np.array(shape) * 0.42)
    values = np.full(shape, background, np.float32)
    values[brain] = 100 + rng.normal(0, 4, brain.sum())
    lesion_mask = np.zeros(shape, bool)
    if lesion:
        lesion_mask = ellipsoid(shape, centre + np.array([2, -5, 6]), (6, 6, 6)) & brain
        values[lesion_mask] += 60
    images = []
    for array in (values, brain.astype(np.uint8), lesion_mask.astype(np.uint8)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        if direction is not None:
            image.SetDirection(direction)
        images.append(image)
    return tuple(images)


def geometry_of(image: sitk.Image):
    return (image.GetSize(), image.GetOrigin(), image.GetSpacing(), image.GetDirection())
