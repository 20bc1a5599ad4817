import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import geometry_of, phantom_brain
from UADBrainLib.errors import InputError
from UADBrainLib.io import read_image, read_mask, validate_image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_reads_common_formats_with_geometry(tmp_path, suffix):
    image, _, _ = phantom_brain()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    loaded = read_image(path)
    assert loaded.GetPixelID() == sitk.sitkFloat32
    for a, b in zip(geometry_of(loaded), geometry_of(image)):
        assert np.allclose(a, b, atol=1e-4)


def test_reads_a_dicom_series_folder(tmp_path):
    image, _, _ = phantom_brain(spacing=(1.0, 1.0, 2.0))
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_image.SetMetaData("0020|0013", str(k))
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")
        slice_image.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_image.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    loaded = read_image(tmp_path)
    assert loaded.GetSize() == image.GetSize()
    assert np.allclose(loaded.GetSpacing(), (1.0, 1.0, 2.0), atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image).astype(np.float32))


def _expect(message_part, image=None, path=None):
    with pytest.raises(InputError) as error:
        read_image(path) if path is not None else validate_image(image, "flair")
    message = str(error.value)
    assert message_part in message and "\n" not in message and "—" in message


def test_missing_and_corrupt_files(tmp_path):
    _expect("does not exist", path=tmp_path / "nope.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8bnot really gzip" * 10)
    _expect("cannot read", path=corrupt)
    empty_folder = tmp_path / "folder"
    empty_folder.mkdir()
    _expect("without a DICOM series", path=empty_folder)


def test_wrong_dimensionality():
    _expect("2D", sitk.Image(10, 10, sitk.sitkFloat32) + 1)
    _expect("4D with 3 volumes", sitk.Image([5, 5, 5, 3], sitk.sitkFloat32))
    _expect("single slice", sitk.Image(10, 10, 1, sitk.sitkFloat32))
    _expect("components per voxel", sitk.Image([5, 5, 5], sitk.sitkVectorFloat32, 3))


def test_single_volume_4d_is_accepted():
    array = np.random.default_rng(0).normal(size=(1, 6, 7, 8)).astype(np.float32)
    image = sitk.GetImageFromArray(array, isVector=False)
    assert validate_image(image).GetSize() == (8, 7, 6)


def test_empty_constant_and_nan():
    _expect("empty", sitk.Image(8, 8, 8, sitk.sitkFloat32))
    _expect("constant", sitk.Image(8, 8, 8, sitk.sitkFloat32) + 7)
    array = np.ones((8, 8, 8), np.float32)
    array[0, 0, 0] = 2
    array[1, 1, 1] = np.nan
    _expect("NaN", sitk.GetImageFromArray(array))
    array[1, 1, 1] = np.inf
    _expect("NaN or infinite", sitk.GetImageFromArray(array))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 12.0), (1e-9, 1.0, 1.0)])
def test_absurd_spacing(spacing):
    image, _, _ = phantom_brain()
    image.SetSpacing(spacing)
    _expect("not plausible", image)


@pytest.mark.parametrize("spacing, message", [("0 1 1", "zero or negative"), ("15 1 1", "not plausible")])
def test_absurd_spacing_in_a_file_header(tmp_path, spacing, message):
    # ITK refuses zero spacing while reading, and clamps it in NIfTI; a MetaImage header keeps it
    data = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementSpacing = {spacing}\n"
              "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path = tmp_path / "bad.mha"
    path.write_bytes(header.encode() + data.tobytes())
    _expect(message, path=path)


def test_masks(tmp_path):
    image, brain, _ = phantom_brain()
    path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(brain * 3, str(path))
    mask = read_mask(path)
    assert set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1}
    sitk.WriteImage(brain * 0, str(path))
    with pytest.raises(InputError, match="empty"):
        read_mask(path)


@pytest.mark.parametrize("dtype, slope, big_endian", [
    (np.int16, 1.0, False), (np.int16, 0.5, False), (np.uint8, 1.0, False), (np.float64, 1.0, False),
    (np.int16, 1.0, True), (np.float32, 1.0, True)])
def test_nifti_voxels_as_itk_reads_them(tmp_path, dtype, slope, big_endian):
    """NIfTI voxels are decompressed once, by nibabel: values, scaling, byte order and grid must be
    those ITK gives for a file whose qform and sform agree."""
    nibabel = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    array = rng.integers(1, 200, (7, 9, 11)).astype(dtype)
    affine = np.array([[-0.9, 0, 0, 40.0], [0, 0, 1.2, -30.0], [0, 1.1, 0, 12.0], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(array.astype(array.dtype.newbyteorder(">")) if big_endian else array, affine)
    image.header.set_slope_inter(slope, 0.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = tmp_path / "scan.nii.gz"
    nibabel.save(image, str(path))
    ours, itk = read_image(path), sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk), rtol=1e-6)
    np.testing.assert_allclose(ours.GetSpacing(), itk.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-5)
