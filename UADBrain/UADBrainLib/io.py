"""Reading, validating and writing images.

Every image that enters the pipeline goes through :func:`validate_image`, which turns each way an
input can be unusable into an :class:`InputError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 10.0
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_image(path, name: str = "image") -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder as a float32 3D image, validated."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name}: '{path}' does not exist — check the path.")
    try:
        image = _read_dicom_folder(path) if path.is_dir() else sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        if "spacing" in reason.lower():  # ITK refuses zero or negative spacing while reading
            raise InputError(f"{name}: '{path}' has a zero or negative voxel spacing in its header "
                             "— fix the header.") from None
        raise InputError(
            f"{name}: cannot read '{path}' ({_short(reason)}) — give a NIfTI, NRRD, MHA file "
            "or a folder with one DICOM series.") from None
    if not path.is_dir() and image_path_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_finite(path, name)
    return validate_image(image, name)


def _check_nifti_finite(path: Path, name: str) -> None:
    """ITK's NIfTI reader silently turns NaN into 0: look at the stored floats directly."""
    try:
        import nibabel
    except ImportError:  # e.g. inside Slicer, which reads files with its own readers anyway
        return
    try:
        stored = nibabel.load(str(path))
    except Exception:  # unreadable by nibabel but readable by ITK: nothing more to check
        return
    if np.issubdtype(stored.get_data_dtype(), np.floating):
        data = np.asanyarray(stored.dataobj)
        finite = np.isfinite(data)
        if not finite.all():
            raise _non_finite_error(name, finite)


def _non_finite_error(name: str, finite: np.ndarray) -> InputError:
    return InputError(f"{name}: {int((~finite).sum())} voxels are NaN or infinite — fix or mask "
                      "them (e.g. set them to 0) before running.")


def read_mask(path, name: str = "mask") -> sitk.Image:
    """Read a brain mask: any nonzero voxel is brain."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name}: '{path}' does not exist — check the path.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"{name}: cannot read '{path}' — give a NIfTI, NRRD or MHA label image.") from None
    image = _as_3d(image, name)
    _check_spacing(image, name)
    mask = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(f"{name}: the mask is empty — give a mask with the brain set to nonzero.")
    return mask


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"'{folder}' is a folder without a DICOM series — give an image file "
                         "or a folder holding one DICOM series.")
    if len(series) > 1:
        raise InputError(f"'{folder}' holds {len(series)} DICOM series — put each series in its own "
                         "folder and give the one to analyse.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_3d(image: sitk.Image, name: str) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(colour or vector image) — give a single-channel MRI volume.")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"{name}: is 4D with {size[3]} volumes (e.g. a time series) — extract "
                             "one 3D volume and give that.")
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise InputError(f"{name}: is {image.GetDimension()}D — give a 3D volume, not a single "
                         "slice or a series.")
    if min(image.GetSize()) < 2:
        raise InputError(f"{name}: has size {image.GetSize()} — that is a single slice; give a 3D volume.")
    return image


def _check_spacing(image: sitk.Image, name: str) -> None:
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing < MIN_SPACING_MM) \
            or np.any(spacing > MAX_SPACING_MM):
        raise InputError(f"{name}: voxel spacing {tuple(round(float(s), 4) for s in spacing)} mm is "
                         f"not plausible (must be {MIN_SPACING_MM:g}–{MAX_SPACING_MM:g} mm) — fix the header.")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"{name}: the orientation matrix is not a rotation — fix the header.")


def validate_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """Check an image is a usable 3D MRI volume and return it as float32."""
    image = _as_3d(image, name)
    _check_spacing(image, name)
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if not finite.all():
        raise _non_finite_error(name, finite)
    if not values.any():
        raise InputError(f"{name}: every voxel is 0 — the volume is empty; check the file.")
    if values.min() == values.max():
        raise InputError(f"{name}: every voxel has the value {float(values.flat[0]):g} — the volume "
                         "is constant; check the file.")
    return image


def image_path_suffix(path) -> str:
    name = os.fspath(path).lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def write_image(image: sitk.Image, path) -> None:
    sitk.WriteImage(image, str(path), useCompression=True)
