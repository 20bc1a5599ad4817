"""Small synthetic skull-stripped brains with spherical lesions, written as case folders.

Used by the evaluation, batch and benchmark tests: 40×40×36 voxels at 2 mm (an ellipsoidal
"brain" of about 120 mL on a zero background), noise, and bright (FLAIR, T2, T1c) or dark (T1)
lesions whose ground truth is known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (36, 40, 40)  # [k, j, i]
SPACING = 2.0
LESION_CONTRAST = {"flair": 1.6, "t2": 1.5, "t1": 0.6, "t1c": 1.5}


def brain_mask() -> np.ndarray:
    k, j, i = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    centre = [(n - 1) / 2 for n in SHAPE]
    return (((k - centre[0]) / 14.0) ** 2 + ((j - centre[1]) / 17.5) ** 2
            + ((i - centre[2]) / 15.0) ** 2) < 1.0


def lesion_mask(lesions) -> np.ndarray:
    """Spheres given as ((k, j, i) centre in voxels, radius in voxels)."""
    k, j, i = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    truth = np.zeros(SHAPE, bool)
    for (ck, cj, ci), radius in lesions:
        truth |= (k - ck) ** 2 + (j - cj) ** 2 + (i - ci) ** 2 <= radius ** 2
    return truth


def to_image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([SPACING] * 3)
    image.SetOrigin([-40.0, -40.0, -36.0])
    return image


def volumes(contrasts=("flair",), lesions=(((18, 14, 14), 3), ((20, 26, 24), 2)), seed: int = 0):
    """Images per contrast (float32), the lesion mask and the brain mask, as arrays."""
    rng = np.random.default_rng(seed)
    brain = brain_mask()
    truth = lesion_mask(lesions) & brain
    images = {}
    for contrast in contrasts:
        array = 100.0 + rng.normal(0.0, 5.0, SHAPE)
        array[truth] *= LESION_CONTRAST[contrast]
        images[contrast] = np.where(brain, array, 0.0).astype(np.float32)
    return images, truth, brain


def write_case(folder, contrasts=("flair",), lesions=(((18, 14, 14), 3), ((20, 26, 24), 2)),
               seed: int = 0, truth_name: str | None = "seg", mask: bool = True, names=None) -> Path:
    """A case folder: ``<contrast>.nii.gz`` (or ``names[contrast]``), ground truth, brain mask."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, truth, brain = volumes(contrasts, lesions, seed)
    for contrast, array in images.items():
        sitk.WriteImage(to_image(array), str(folder / f"{(names or {}).get(contrast, contrast)}.nii.gz"))
    if truth_name:
        sitk.WriteImage(to_image(truth.astype(np.uint8)), str(folder / f"{truth_name}.nii.gz"))
    if mask:
        sitk.WriteImage(to_image(brain.astype(np.uint8)), str(folder / "brainmask.nii.gz"))
    return folder


def write_image(path, contrast: str = "flair", lesions=(((18, 14, 14), 3),), seed: int = 0) -> Path:
    images, _, _ = volumes((contrast,), lesions, seed)
    sitk.WriteImage(to_image(images[contrast]), str(path))
    return Path(path)
