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


def write_bids_dataset(root) -> Path:
    """A small BIDS dataset of the synthetic brains: ``sub-01`` has two sessions (FLAIR), ``sub-02``
    FLAIR, T1w and a brain mask in ``derivatives/masks``, ``sub-03`` two FLAIR acquisitions (2D and
    3D: a choice that is the user's); ages and sexes in participants.tsv, one age per session."""
    import json

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.10.0"}))
    layout = {"01": {"ses-1": ["FLAIR"], "ses-2": ["FLAIR"]}, "02": {None: ["FLAIR", "T1w"]},
              "03": {None: ["acq-2D_FLAIR", "acq-3D_FLAIR"]}}
    for number, subject in enumerate(layout):
        for session, suffixes in layout[subject].items():
            folder = root / f"sub-{subject}" / (session or "") / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            prefix = f"sub-{subject}" + (f"_{session}" if session else "")
            for suffix in suffixes:
                contrast = "t1" if suffix == "T1w" else "flair"
                write_image(folder / f"{prefix}_{suffix}.nii.gz", contrast, seed=number)
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t34\tF\nsub-02\t89+\tM\nsub-03\tn/a\tn/a\n")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tage\nses-1\t34\nses-2\t36\n")
    masks = root / "derivatives" / "masks"
    (masks / "sub-02" / "anat").mkdir(parents=True)
    (masks / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "manual"}]}))
    sitk.WriteImage(to_image(brain_mask().astype(np.uint8)), str(masks / "sub-02" / "anat" / "sub-02_desc-brain_mask.nii.gz"))
    return root
