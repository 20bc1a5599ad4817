"""The bad-input corpus (issue 13): every kind of wrong input a clinic or a script produces, built
in code. Each ends in a one-line refusal with exit code 2 — no traceback, no output folder, the
inputs byte-identical — or, for the kinds that are valid after all, in the right answer."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from phantoms import phantom_brain
from UADBrainLib.bundle import find_bundle
from UADBrainLib.cli.main import main
from UADBrainLib.inference.bundled_example import example_volume_path
from UADBrainLib.io import read_image


def save(image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def save_nifti(array, affine, path, edit=None) -> str:
    image = nib.Nifti1Image(np.asarray(array), affine)
    if edit:
        edit(image)
    nib.save(image, str(path))
    return str(path)


def written(path, data: bytes) -> str:
    Path(path).write_bytes(data)
    return str(path)


def cut_short(path, keep: float = 0.5) -> str:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return str(path)


def dicom_series(folder: Path, image: sitk.Image, series_uid="1.2.826.0.1.3680043.2.1125.1.1",
                 positions=None) -> Path:
    """One file per slice with patient position and orientation, as a scanner writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = positions[k] if positions is not None else image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, position)))
        slice_image.SetMetaData("0020|0013", str(k))
        slice_image.SetMetaData("0020|000e", series_uid)
        slice_image.SetMetaData("0020|000d", series_uid + ".0")  # one study and frame of reference
        slice_image.SetMetaData("0020|0052", series_uid + ".1")
        slice_image.SetMetaData("0018|0050", str(image.GetSpacing()[2]))  # slice thickness
        slice_image.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_image.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(slice_image)
    return folder


def broken_bundle(folder: Path, change) -> str:
    shutil.copytree(find_bundle("threshold").path, folder)
    metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    change(folder, metadata)
    return str(folder)


def write_metadata(folder, metadata):
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def weighted_bundle(folder: Path, damage) -> str:
    shutil.copytree(find_bundle("dae").path, folder)
    damage(folder, json.loads((folder / "metadata.json").read_text(encoding="utf-8")))
    return str(folder)


def corpus(tmp: Path) -> dict:
    """name → (command-line arguments after 'detect', part of the expected message)."""
    inputs = tmp / "in"
    inputs.mkdir()
    image, brain, _ = phantom_brain()
    good = save(image, inputs / "good.nii.gz")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # nibabel's (i, j, k)
    affine = np.diag([1.5, 1.2, 2.0, 1.0])
    far, _, _ = phantom_brain(origin=(900.0, 0.0, 0.0))
    constant = sitk.Image(20, 20, 20, sitk.sitkFloat32) + 3
    with_nan = array.astype(np.float32).copy()
    with_nan[3, 3, 3] = np.nan
    with_inf = array.astype(np.float32).copy()
    with_inf[4, 4, 4] = np.inf
    big = sitk.Image(200, 200, 200, sitk.sitkFloat32) + 100  # 8 L of "tissue": an abdomen, not a head
    big += sitk.AdditiveGaussianNoise(sitk.Image(200, 200, 200, sitk.sitkFloat32), 5.0, 0.0, 1)
    tiny = sitk.Image(30, 30, 30, sitk.sitkFloat32)
    tiny[10:13, 10:13, 10:13] = 50
    tiny += sitk.AdditiveGaussianNoise(sitk.Image(30, 30, 30, sitk.sitkFloat32), 0.1, 0.0, 2)
    gapped = dicom_series(tmp / "dicom_gap", image)
    os.remove(sorted(gapped.iterdir())[20])
    truncated_dicom = dicom_series(tmp / "dicom_cut", image)
    cut_short(sorted(truncated_dicom.iterdir())[20], 0.3)
    two_series = dicom_series(tmp / "dicom_two", image)
    dicom_series(two_series, image, series_uid="1.2.826.0.1.3680043.2.1125.1.2")
    duplicated = [image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(image.GetDepth())]
    duplicated[10] = duplicated[9]
    duplicate_slices = dicom_series(tmp / "dicom_dup", image, positions=duplicated)
    uneven = [image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(image.GetDepth())]
    uneven = [(x, y, z + (0.7 if k > 30 else 0.0)) for k, (x, y, z) in enumerate(uneven)]
    uneven_slices = dicom_series(tmp / "dicom_uneven", image, positions=uneven)
    out_file = tmp / "not_a_folder.txt"
    out_file.write_text("x")
    in_out = tmp / "out"
    in_out.mkdir()
    named_like_output = save(image, in_out / "anomaly_map.nii.gz")
    mask_like_output = save(brain, in_out / "segmentation.nii.gz")
    example = {c: str(example_volume_path(c)) for c in ("flair", "t2")}
    noise = sitk.GetImageFromArray(np.random.default_rng(3).normal(100, 20, array.shape[::-1]).astype(np.float32))
    noise.CopyInformation(image)
    example_flair = sitk.ReadImage(example["flair"], sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(example_flair)
    inverted = float(values.max()) + float(values.min()) - example_flair  # air brightest, as a negative film

    def no_weights_checksum(folder, metadata):
        metadata["weights"]["sha256"] = "0" * 64
        write_metadata(folder, metadata)

    def truncated_weights(folder, metadata):
        from UADBrainLib.bundle import sha256_of

        weights = folder / metadata["weights"]["file"]
        cut_short(weights, 0.5)
        metadata["weights"]["sha256"] = sha256_of(weights)
        write_metadata(folder, metadata)

    def model(change):
        name = f"model{len(list(tmp.glob('model*')))}"
        return broken_bundle(tmp / name, change)

    empty_folder = tmp / "no_dicom"
    empty_folder.mkdir()
    return {
        # files
        "missing file": (["--flair", str(inputs / "missing.nii.gz")], "does not exist"),
        "not an image": (["--flair", written(inputs / "text.nii.gz", b"hello")], "cannot read"),
        "zero-byte file": (["--flair", written(inputs / "zero.nii", b"")], "cannot read"),
        "corrupt gzip": (["--flair", written(inputs / "corrupt.nii.gz", b"\x1f\x8b" + b"x" * 400)], "cannot read"),
        "cut-short nii.gz": (["--flair", cut_short(save(image, inputs / "cut.nii.gz"))], "cut short"),
        "cut-short nii": (["--flair", cut_short(save(image, inputs / "cut.nii"))], "cut short"),
        "2D image": (["--flair", save(image[:, :, 5], inputs / "slice.nii.gz")], "2D"),
        "4D image": (["--flair", save(sitk.JoinSeries([image, image]), inputs / "4d.nii.gz")], "4D"),
        "colour image": (["--flair", save(sitk.Compose([image, image, image]), inputs / "rgb.nrrd")], "components"),
        "complex image": (["--flair", save_nifti(array.astype(np.complex64), affine, inputs / "complex.nii.gz")],
                          "complex"),
        "constant": (["--flair", save(constant, inputs / "flat.nii.gz")], "constant"),
        "empty": (["--flair", save(constant * 0, inputs / "empty.nii.gz")], "empty"),
        "NaN voxel": (["--flair", save_nifti(with_nan, affine, inputs / "nan.nii.gz")], "NaN"),
        "infinite voxel": (["--flair", save_nifti(with_inf, affine, inputs / "inf.nii.gz")], "NaN or infinite"),
        "absurd spacing": (["--flair", save_nifti(array, np.diag([1, 1, 25.0, 1]), inputs / "thick.nii.gz")],
                           "not plausible"),
        "tiny spacing": (["--flair", save_nifti(array, np.diag([1, 1, 0.001, 1]), inputs / "thin.nii.gz")],
                         "voxel size"),
        "pixdim 0, no sform": (["--flair", save_nifti(array, affine, inputs / "pixdim0.nii.gz", edit=lambda i: (
            i.header["pixdim"].__setitem__(slice(1, 4), 0), i.set_qform(None, code=0), i.set_sform(None, code=0)))],
            "voxel size of 0"),
        "sheared grid": (["--flair", save_nifti(array, np.array([[1.5, 0.6, 0, 0], [0, 1.2, 0, 0], [0, 0, 2, 0],
                                                                 [0, 0, 0, 1.0]]), inputs / "shear.nii.gz")],
                         "sheared"),
        "folder without DICOM": (["--flair", str(empty_folder)], "without a DICOM series"),
        "DICOM slice missing": (["--flair", str(gapped)], "slice(s) missing"),
        "DICOM slice cut short": (["--flair", str(truncated_dicom)], "could not be read"),
        "DICOM two series": (["--flair", str(two_series)], "2 DICOM series"),
        "DICOM duplicate slice": (["--flair", str(duplicate_slices)], "same position"),
        "DICOM uneven spacing": (["--flair", str(uneven_slices)], "slice spacing varying"),
        "no overlap": (["--flair", good, "--t1", save(far, inputs / "far.nii.gz")], "do not overlap"),
        "non-brain volume": (["--flair", save(big, inputs / "abdomen.nii.gz"), "--brain-mask-method", "nonzero"],
                             "more than any brain"),
        "too small for a brain": (["--flair", save(tiny, inputs / "tiny.nii.gz"), "--brain-mask-method", "nonzero"],
                                  "does not look like a brain"),
        "noise volume with a mask": (["--flair", save(noise, inputs / "noise.nii.gz"), "--mask", save(
            brain, inputs / "noise_mask.nii.gz")], "looks like noise"),
        "noise volume, brain found": (["--flair", save(noise, inputs / "noise2.nii.gz"), "--brain-mask-method",
                                       "nonzero"], "looks like noise"),
        "inverted intensities": (["--flair", save(inverted, inputs / "inverted.nii.gz"), "--mask",
                                  str(example_volume_path("brain_mask"))], "look inverted"),
        # masks
        "mask missing": (["--flair", good, "--mask", str(inputs / "nomask.nii.gz")], "does not exist"),
        "mask empty": (["--flair", good, "--mask", save(brain * 0, inputs / "mask0.nii.gz")], "empty"),
        "mask 2D": (["--flair", good, "--mask", save(brain[:, :, 5], inputs / "mask2d.nii.gz")], "2D"),
        "mask everywhere": (["--flair", good, "--mask", save(brain * 0 + 1, inputs / "ones.nii.gz")],
                            "covers the whole image"),
        "mask elsewhere": (["--flair", good, "--mask", save(phantom_brain(origin=(900.0, 0, 0))[1],
                                                              inputs / "farmask.nii.gz")], "do not overlap"),
        # options
        "fpr NaN": (["--flair", good, "--fpr", "nan"], "false-positive rate"),
        "fpr 1": (["--flair", good, "--fpr", "1"], "false-positive rate"),
        "fpr 2": (["--flair", good, "--fpr", "2"], "false-positive rate"),
        "fpr 0": (["--flair", good, "--fpr", "0"], "false-positive rate"),
        "fpr negative": (["--flair", good, "--fpr", "-0.1"], "false-positive rate"),
        "min size negative": (["--flair", good, "--min-size-mm3", "-5"], "minimum lesion size"),
        "min size NaN": (["--flair", good, "--min-size-mm3", "nan"], "minimum lesion size"),
        "erosion negative": (["--flair", good, "--erosion-mm", "-1"], "erosion"),
        "erosion absurd": (["--flair", good, "--erosion-mm", "1000"], "erosion"),
        "erosion larger than the brain": (["--flair", good, "--erosion-mm", "29"], "leaves no brain"),
        "threshold word": (["--flair", good, "--threshold", "high"], "not understood"),
        "threshold NaN": (["--flair", good, "--threshold", "nan"], "finite"),
        "threshold infinite": (["--flair", good, "--threshold", "inf"], "finite"),
        "brain-mask method unknown": (["--flair", good, "--brain-mask-method", "magic"], "brain-mask method"),
        # models
        "unknown model": (["--flair", good, "--model", "no-such-model"], "unknown model"),
        "folder without metadata": (["--flair", good, "--model", str(empty_folder)], "not a model bundle"),
        "metadata not JSON": (["--flair", good, "--model", model(
            lambda f, m: (f / "metadata.json").write_text("{not json", encoding="utf-8"))], "unreadable"),
        "metadata contrasts a string": (["--flair", good, "--model", model(
            lambda f, m: write_metadata(f, {**m, "contrasts": "flair"}))], "contrasts should be an array"),
        "metadata unknown contrast": (["--flair", good, "--model", model(
            lambda f, m: write_metadata(f, {**m, "contrasts": ["flair", "pd"]}))], "not one of"),
        "metadata without family": (["--flair", good, "--model", model(
            lambda f, m: write_metadata(f, {k: v for k, v in m.items() if k != "family"}))], "lacks 'family'"),
        "metadata bad median": (["--flair", good, "--model", model(
            lambda f, m: write_metadata(f, {**m, "postprocessing": {"median": 4}}))], "postprocessing.median"),
        "weights checksum mismatch": (["--flair", good, "--model", weighted_bundle(tmp / "w1", no_weights_checksum)],
                                      "checksum mismatch"),
        "weights cut short, checksum matching": (["--flair", good, "--model",
                                                   weighted_bundle(tmp / "w2", truncated_weights)], "cannot be loaded"),
        "contrast the model does not use": (["--t2", good, "--model", model(
            lambda f, m: write_metadata(f, {**m, "contrasts": ["flair"], "required_contrasts": []}))],
            "does not use"),
        # outputs and the command line
        "output is a file": (["--flair", good, "--out-override", str(out_file)], "is a file"),
        "output inside a file": (["--flair", good, "--out-override", str(out_file / "sub")], "inside the file"),
        "input named like an output": (["--flair", named_like_output, "--out-override", str(in_out)],
                                       "would be overwritten"),
        "mask named like an output": (["--flair", good, "--mask", mask_like_output, "--out-override", str(in_out)],
                                      "would be overwritten"),
        "no input": ([], "no input"),
        "example and files": (["--example", "--flair", good], "leave out the contrast files"),
        "batch and files": (["--batch", str(inputs), "--flair", good], "leave out"),
        "batch source missing": (["--batch", str(tmp / "nowhere")], "does not exist"),
        "cuda without a GPU": (["--flair", good, "--device", "cuda"], "CUDA"),
        # a real brain given as the wrong contrast
        "FLAIR and T2 swapped": (["--flair", example["t2"], "--t2", example["flair"], "--model", "auto"],
                                 "swapped"),
    }


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return list(corpus(Path(folder)))


def fingerprints(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, corpus(folder)


@pytest.mark.parametrize("case", _case_names())
def test_bad_input_is_refused_in_one_line_without_output(built, capsys, case, monkeypatch):
    folder, cases = built
    if case == "cuda without a GPU":
        monkeypatch.setattr("UADBrainLib.device.cuda_status", lambda probe=True: (0, None))
    arguments, expected = cases[case]
    out = folder / "result"
    if "--out-override" in arguments:
        at = arguments.index("--out-override")
        out = Path(arguments[at + 1])
        arguments = arguments[:at] + arguments[at + 2:]
    before = fingerprints(folder)
    out_existed = out.exists()
    code = main(["detect", *arguments, "--out", str(out), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2, error
    assert len(error) == 1 and error[0].startswith("uadbrain: error:") and expected in error[0], error
    assert "Traceback" not in error[0]
    assert out.exists() == out_existed  # no output folder made
    assert fingerprints(folder) == before  # inputs byte-identical, nothing written anywhere


def test_the_corpus_is_large_and_varied():
    assert len(_case_names()) >= 60


def test_valid_nifti_variants_read_with_the_nifti_rules(tmp_path):
    """sform over qform and over a negative or zero pixdim, as nibabel (and the NIfTI standard) say."""
    data = np.random.default_rng(0).normal(100, 10, (20, 24, 16)).astype(np.float32)
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (-40, -25, -45)
    expected_origin = (40.0, 25.0, -45.0)  # LPS

    def check(path):
        image = read_image(path)
        assert image.GetSpacing() == pytest.approx((2.0, 1.0, 3.0))
        assert image.GetOrigin() == pytest.approx(expected_origin)
        assert image.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))

    check(save_nifti(data, affine, tmp_path / "plain.nii.gz"))
    check(save_nifti(data, affine, tmp_path / "pixdim0.nii.gz", edit=lambda i: i.header["pixdim"].__setitem__(
        slice(1, 4), 0)))
    check(save_nifti(data, affine, tmp_path / "negative.nii.gz", edit=lambda i: (
        i.header["pixdim"].__setitem__(1, -2.0), i.set_qform(None, code=0))))
    check(save_nifti(data, affine, tmp_path / "qform_differs.nii.gz", edit=lambda i: i.set_qform(
        np.diag([-2.0, 1.0, 3.0, 1.0]), code=1)))


def test_outputs_carry_the_input_affine_exactly(tmp_path):
    image, brain, _ = phantom_brain()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = np.array([[0, -1.2, 0, 30.0], [1.5, 0, 0, -20.0], [0, 0, 2.0, 10.0], [0, 0, 0, 1]])
    path = save_nifti(array, affine, tmp_path / "rotated.nii.gz", edit=lambda i: i.set_qform(None, code=0))
    out = tmp_path / "out"
    assert main(["detect", "--flair", path, "--out", str(out), "--quiet", "--no-contrast-check"]) == 0
    for name in ("anomaly_map.nii.gz", "segmentation.nii.gz"):
        np.testing.assert_allclose(nib.load(str(out / name)).affine, affine, atol=1e-4)


def test_sigterm_stops_with_one_line_and_no_output(tmp_path, capsys, monkeypatch):
    import signal

    import UADBrainLib.inference.pipeline as pipeline

    image, _, _ = phantom_brain()
    flair = save(image, tmp_path / "flair.nii.gz")
    real_detect = pipeline.detect

    def terminated_midway(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as a job scheduler stops a run
        return real_detect(*args, **kwargs)

    monkeypatch.setattr(pipeline, "detect", terminated_midway)
    out = tmp_path / "out"
    assert main(["detect", "--flair", flair, "--out", str(out), "--quiet"]) == 143
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["uadbrain: stopped (SIGTERM); no partial output was left"]
    assert not out.exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_stop_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    import UADBrainLib.inference.result_files as result_files

    image, _, _ = phantom_brain()
    flair = save(image, tmp_path / "flair.nii.gz")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(result_files, "render_overview", interrupted)
    out = tmp_path / "out"
    assert main(["detect", "--flair", flair, "--out", str(out), "--quiet"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flair.nii.gz"]  # no output, no staging


@pytest.mark.parametrize("case", ["out is a folder", "out is the input", "out inside a file", "overlay not png",
                                  "writing fails midway"])
def test_brainmask_outputs_appear_whole_or_not_at_all(tmp_path, capsys, case, monkeypatch):
    image, _, _ = phantom_brain()
    scan = save(image, tmp_path / "scan.nii.gz")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder.nii.gz").mkdir()
    out, extra, expected = {
        "out is a folder": (tmp_path / "folder.nii.gz", [], "is a folder"),
        "out is the input": (Path(scan), [], "is the input"),
        "out inside a file": (tmp_path / "a_file" / "mask.nii.gz", [], "not a writable folder"),
        "overlay not png": (tmp_path / "mask.nii.gz", ["--overlay", str(tmp_path / "o.jpg")], ".png"),
        "writing fails midway": (tmp_path / "mask.nii.gz", ["--overlay", str(tmp_path / "o.png")], "cannot write"),
    }[case]
    if case == "writing fails midway":  # the mask is written, then the picture fails
        import UADBrainLib.cli.brainmask as brainmask

        def failing(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(brainmask, "render_mask_overlay", failing)
    before = fingerprints(tmp_path)
    code = main(["brainmask", "--image", scan, "--out", str(out), "--method", "nonzero", *extra])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and expected in error[0], error
    assert fingerprints(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder.nii.gz",
                                                                                          "scan.nii.gz"]
