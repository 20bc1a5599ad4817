"""Reading, validating and writing images.

Every image that enters the pipeline goes through :func:`validate_image`, which turns each way an
input can be unusable into an :class:`InputError` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import SimpleITK as sitk

from .errors import InputError

MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 10.0
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_image(path, name: str = "image") -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder as a float32 3D image, validated."""
    return validate_image(_read(path, name, "a NIfTI, NRRD, MHA file or a folder with one DICOM series"), name)


def read_mask(path, name: str = "mask") -> sitk.Image:
    """Read a brain mask: any nonzero voxel is brain."""
    return validate_mask(_read(path, name, "a NIfTI, NRRD or MHA label image"), name)


def validate_mask(image, name: str = "mask") -> sitk.Image:
    """A 3D mask image as 0/1 uint8 (any nonzero voxel is brain), checked like an input."""
    if not isinstance(image, sitk.Image):
        raise InputError(f"{name}: expected a file path or a SimpleITK image, got {type(image).__name__} — "
                         "a bare array has no position in space; wrap it in an image with the scan's geometry.")
    image = _as_3d(image, name)
    _check_spacing(image, name)
    _check_real(image, name)
    mask = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(f"{name}: the mask is empty — give a mask with the brain set to nonzero.")
    return mask


def _read(path, name: str, what: str) -> sitk.Image:
    """A file or DICOM folder as an image; a NIfTI file read and placed by the NIfTI rules."""
    path = Path(path)
    try:
        path.stat()
        readable = os.access(path, os.R_OK)
    except PermissionError:
        readable = False
    except OSError:
        raise InputError(f"{name}: '{path}' does not exist — check the path.") from None
    if not readable:
        raise InputError(f"{name}: '{path}' cannot be read (permission denied) — check its permissions "
                         "or those of its folder.")
    if not path.is_dir() and image_path_suffix(path) in (".nii", ".nii.gz"):
        image = _read_nifti(path, name)
        if image is not None:
            return image
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # header oddities are judged here, not printed by ITK
    try:
        return _read_dicom_folder(path) if path.is_dir() else sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        if "spacing" in reason.lower():  # ITK refuses zero or negative spacing while reading
            raise InputError(f"{name}: '{path}' has a zero or negative voxel spacing in its header "
                             "— fix the header.") from None
        raise InputError(f"{name}: cannot read '{path}' ({_short(reason)}) — give {what}.") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)


def _read_nifti(path: Path, name: str) -> sitk.Image | None:
    """A NIfTI file read whole by nibabel and placed by the NIfTI rules (sform when set, else
    qform, else pixdim: ITK prefers the qform and reads a zero or negative pixdim its own way), or
    None when ITK should read it (nibabel missing or unable to judge it; 2D, 4D, colour or complex
    voxels, which the checks after reading refuse with their own reasons).

    Refuses a file cut short (ITK reads it silently, the missing voxels as 0), NaN or infinite
    voxels (ITK turns them into 0), a zero voxel size no sform overrides (ITK reads it as 1 mm)
    and a sheared grid. The voxels are decompressed once, here: ITK does not read the file again.
    """
    try:
        import nibabel
    except ImportError:  # e.g. inside Slicer, which reads files with its own readers anyway
        return None
    nibabel_log = logging.getLogger("nibabel.global")  # it logs the header repairs it makes
    level = nibabel_log.level
    nibabel_log.setLevel(logging.ERROR)
    try:
        stored = nibabel.load(str(path))
        with nibabel.openers.ImageOpener(str(path)) as handle:  # the header as written, not as repaired
            written = type(stored.header).from_fileobj(handle, check=False)
    except Exception:  # unreadable by nibabel: ITK's reader says why
        return None
    finally:
        nibabel_log.setLevel(level)
    try:
        data = np.asanyarray(stored.dataobj)
    except (OSError, EOFError, ValueError, zlib.error):
        raise InputError(f"{name}: '{path}' is cut short or damaged (its voxel data end before the header "
                         "says they should) — copy or export the file again.") from None
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        finite = np.isfinite(data)
        if not finite.all():
            raise _non_finite_error(name, finite)
    if not _is_3d_volume(written) or data.dtype.fields is not None or np.iscomplexobj(data):
        return None
    sform_code = int(written["sform_code"])
    if sform_code == 0 and np.any(np.asarray(written["pixdim"][1:4]) == 0):
        raise InputError(f"{name}: the header gives a voxel size of 0 mm and no sform to replace it — fix the "
                         "header (pixdim) or export the scan again.")
    affine = np.asarray(stored.affine, dtype=float)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing < MIN_SPACING_MM):
        raise InputError(f"{name}: the header's {'sform' if sform_code else 'qform'} gives a voxel size of "
                         f"{tuple(round(float(s), 4) for s in spacing)} mm — fix the header.")
    direction = columns / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:
        raise InputError(f"{name}: the voxel axes in the header are not perpendicular (a sheared grid) — "
                         "resample the scan onto an orthogonal grid first.")
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    if np.issubdtype(data.dtype, np.floating) and data.dtype.itemsize > 4:
        data = data.astype(np.float32)  # scaled integers come as float64; the pipeline works in float32
    elif not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))  # ITK takes the machine's byte order
    image = sitk.GetImageFromArray(data.reshape(data.shape[:3]).T)  # nibabel's [i, j, k] → ITK's
    del data
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (ras_to_lps @ direction).ravel()])
    image.SetOrigin([float(v) for v in ras_to_lps @ affine[:3, 3]])
    return image


def _is_3d_volume(header) -> bool:
    """Whether a NIfTI header describes one 3D volume (a 4th axis of length 1 counts as 3D)."""
    shape = header.get_data_shape()
    return len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)


def _non_finite_error(name: str, finite: np.ndarray) -> InputError:
    return InputError(f"{name}: {int((~finite).sum())} voxels are NaN or infinite — fix or mask "
                      "them (e.g. set them to 0) before running.")


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"'{folder}' is a folder without a DICOM series — give an image file "
                         "or a folder holding one DICOM series.")
    if len(series) > 1:
        raise InputError(f"'{folder}' holds {len(series)} DICOM series — put each series in its own "
                         "folder and give the one to analyse.")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    left_out = [path for path in sorted(folder.iterdir()) if _looks_like_dicom(path)
                and str(path) not in set(files) and path.name.upper() != "DICOMDIR"]
    if left_out:
        raise InputError(f"'{folder}': {len(left_out)} DICOM file(s) could not be read with the series "
                         f"(damaged or cut short?), e.g. '{left_out[0].name}' — export the series again.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _check_slice_positions(reader, len(files), folder)
    return image


def _looks_like_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    if not path.is_file() or path.name.startswith("."):
        return False
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _check_slice_positions(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced: ITK would stack them at one spacing,
    placing every slice after a gap (a missing file) at the wrong position."""
    if count < 3:
        return
    try:
        orientation = np.array([float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")])
        positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
                              for i in range(count)])
    except (RuntimeError, ValueError):
        return  # no patient geometry to check (e.g. a secondary capture): ITK's spacing stands
    normal = np.cross(orientation[:3], orientation[3:6])
    steps = np.diff(positions @ normal)
    typical = float(np.median(np.abs(steps)))
    tolerance = max(0.01 * typical, 1e-3)
    if typical < tolerance or np.any(np.abs(steps) < tolerance):
        raise InputError(f"'{folder}': two slices of the series lie at the same position (two acquisitions "
                         "mixed in one series?) — give a folder with one acquisition.")
    uneven = np.flatnonzero(np.abs(np.abs(steps) - typical) > tolerance)
    if uneven.size:
        first = int(uneven[0])
        missing = round(abs(steps[first]) / typical) - 1
        what = (f"a gap of {abs(steps[first]):.2f} mm after slice {first + 1} ({missing} slice(s) missing?)"
                if missing >= 1 and abs(abs(steps[first]) - (missing + 1) * typical) <= tolerance
                else f"slice spacing varying from {np.abs(steps).min():.2f} to {np.abs(steps).max():.2f} mm")
        raise InputError(f"'{folder}': the series has {what}; stacking it evenly would misplace the slices "
                         "— export the complete series again.")


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


def _check_real(image: sitk.Image, name: str) -> None:
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{name}: has complex-valued voxels (raw k-space or phase data?) — give the "
                         "magnitude image.")


def validate_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """Check an image is a usable 3D MRI volume and return it as float32."""
    image = _as_3d(image, name)
    _check_spacing(image, name)
    _check_real(image, name)
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


@contextmanager
def replaced_atomically(path, **open_options) -> Iterator[IO]:
    """A text file that becomes ``path`` in one rename when the block ends without an error: a
    reader never sees half a file, and writers racing for one path (parts of a job array on several
    hosts) each write their own temporary file, the last rename winning."""
    path = Path(path)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", **{"encoding": "utf-8", **open_options}) as file:
            yield file
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_text_atomically(path, text: str) -> None:
    with replaced_atomically(path) as file:
        file.write(text)
