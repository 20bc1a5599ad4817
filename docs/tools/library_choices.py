"""Measure the field's libraries against the code UADBrain has for the same job (docs/DEVELOPING.md,
"Libraries: adopted or declined"). Needs ``pip install connected-components-3d dcm2niix torchio``;
a part whose library is missing says so. Run from the repository root::

    python docs/tools/library_choices.py
"""
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def timed(function, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return value, best


def blobs(shape, seed=0):
    """A binary volume of many smooth blobs (scattered lesion-like specks and a few large ones)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    return noise > 2.2 * noise.std()


def connected_components():
    print("## connected components (26-connectivity): seconds, best of 3")
    try:
        import cc3d
    except ImportError:
        print("cc3d not installed")
        return
    for label, shape in (("1 mm brain box 182x218x182", (182, 218, 182)),
                         ("0.5 mm head 400x512x512", (400, 512, 512))):
        mask = blobs(shape)
        (_, n_scipy), t_scipy = timed(lambda: ndimage.label(mask, np.ones((3, 3, 3), bool)))
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        (labelled), t_itk = timed(lambda: sitk.ConnectedComponent(image, True))
        n_itk = int(sitk.GetArrayViewFromImage(labelled).max())
        (_, n_cc3d), t_cc3d = timed(lambda: cc3d.connected_components(mask, connectivity=26, return_N=True))
        print(f"{label}: {n_scipy} components (ITK {n_itk}, cc3d {n_cc3d}); scipy {t_scipy:.2f} s, "
              f"SimpleITK {t_itk:.2f} s, cc3d {t_cc3d:.2f} s")


def nifti_headers():
    print("## NIfTI header rules: where ITK and nibabel put the far corner voxel (mm apart)")
    import nibabel

    from UADBrainLib.errors import InputError
    from UADBrainLib.io import read_image

    data = np.random.default_rng(1).uniform(0, 100, (20, 24, 16)).astype(np.float32)
    shear = np.array([[1.0, 0.3, 0, -10], [0, 1.2, 0, -12], [0, 0, 2.0, -16], [0, 0, 0, 1]])
    flipped = np.diag([-1.0, 1.2, 2.0, 1.0])
    cases = {}
    image = nibabel.Nifti1Image(data, np.diag([1.0, 1.2, 2.0, 1.0]))
    image.header["pixdim"][1:4] = 0
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    cases["pixdim 0, no sform/qform"] = image
    image = nibabel.Nifti1Image(data, flipped)
    image.header["pixdim"][1] = -1.0
    image.set_qform(np.diag([1.0, 1.2, 2.0, 1.0]), code=1)
    cases["negative pixdim, sform and qform disagree"] = image
    cases["sheared sform"] = nibabel.Nifti1Image(data, shear)
    with tempfile.TemporaryDirectory() as folder:
        for name, image in cases.items():
            path = Path(folder) / "case.nii"
            nibabel.save(image, str(path))
            corner = np.array(data.shape) - 1.0
            by_nibabel = (nibabel.load(str(path)).affine @ np.append(corner, 1))[:3] * [-1, -1, 1]
            try:
                itk = sitk.ReadImage(str(path))
                itk_verdict = f"{np.linalg.norm(np.array(itk.TransformContinuousIndexToPhysicalPoint(corner.tolist())) - by_nibabel):.2f} mm from nibabel"
            except RuntimeError as error:
                itk_verdict = f"refused ({str(error).strip().splitlines()[-1][:60]})"
            try:
                ours = read_image(path, "t1")
                verdict = f"{np.linalg.norm(np.array(ours.TransformContinuousIndexToPhysicalPoint(corner.tolist())) - by_nibabel):.2f} mm from nibabel"
            except InputError as error:
                verdict = f"refused ({str(error)[:70]}...)"
            print(f"{name}: ITK {itk_verdict}; UADBrain {verdict}")


def write_series(folder: Path, skip: int | None = None):
    """An axial series of 12 slices at 3 mm, slice ``skip`` left out (a file lost on export)."""
    volume = (np.random.default_rng(2).uniform(0, 1000, (12, 32, 32))).astype(np.int16)
    for k in range(12):
        if k == skip:
            continue
        slice_image = sitk.GetImageFromArray(volume[k:k + 1])
        slice_image.SetSpacing((1.0, 1.0, 3.0))
        slice_image.SetOrigin((0.0, 0.0, 3.0 * k))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for tag, value in {"0008|0060": "MR", "0020|000e": "1.2.3.4", "0020|0013": str(k + 1),
                           "0020|0032": f"0\\0\\{3.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0018|0050": "3", "0028|0030": "1\\1"}.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:02d}.dcm"))
        writer.Execute(slice_image)


def dicom_series():
    print("## DICOM series with one slice missing (12 slices at 3 mm, slice 6 lost)")
    from UADBrainLib.errors import InputError
    from UADBrainLib.io import read_image

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "series").mkdir()
        write_series(folder / "series", skip=6)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder / "series")))
        stacked = reader.Execute()
        last = stacked.TransformIndexToPhysicalPoint((0, 0, stacked.GetSize()[2] - 1))[2]
        print(f"SimpleITK alone: {stacked.GetSize()[2]} slices at {stacked.GetSpacing()[2]:.2f} mm, last slice "
              f"placed at z = {last:.1f} mm (truly 33.0 mm; the slices between shifted by up to 1.5 mm); a console message only")
        try:
            read_image(folder / "series", "flair")
            print("UADBrain: read (wrong)")
        except InputError as error:
            print(f"UADBrain: refused — {error}")
        if shutil.which("dcm2niix") is None:
            print("dcm2niix not installed")
            return
        (folder / "out").mkdir()
        run = subprocess.run(["dcm2niix", "-o", str(folder / "out"), "-f", "series", str(folder / "series")],
                             capture_output=True, text=True)
        warnings = [line for line in run.stdout.splitlines() if "arning" in line or "rror" in line]
        outputs = sorted(p.name for p in (folder / "out").glob("*.nii*"))
        print(f"dcm2niix (exit {run.returncode}): wrote {outputs}; says: {' | '.join(warnings)[:300]}")


def acquisition_simulation():
    print("## thick-slice simulation: TorchIO RandomAnisotropy against evaluation.acquisition")
    try:
        import torchio
    except ImportError:
        print("torchio not installed")
        return
    from UADBrainLib.evaluation.acquisition import simulate_acquisition
    from UADBrainLib.synthesis.brains import synthesize
    from UADBrainLib.synthesis.example import load_example_labels

    head = synthesize(load_example_labels(), ("flair",), spacing=1.0, skull_strip=True, seed=3)
    image = head.image("flair")
    ours, t_ours = timed(lambda: simulate_acquisition(image, (1.0, 1.0, 5.0)))
    subject = torchio.Subject(image=torchio.ScalarImage.from_sitk(image))
    transform = torchio.RandomAnisotropy(axes=(2,), downsampling=(5, 5))
    theirs, t_theirs = timed(lambda: transform(subject))
    print(f"evaluation.acquisition: {image.GetSize()} -> {ours.GetSize()} at {ours.GetSpacing()} mm (the grid a "
          f"5 mm scan has, Gaussian slice profile), {t_ours:.2f} s")
    print(f"TorchIO RandomAnisotropy: {image.GetSize()} -> {tuple(theirs['image'].shape[1:])} at "
          f"{theirs['image'].spacing} mm (back on the input grid: a training augmentation), {t_theirs:.2f} s")


def training_augmentation():
    print("## label-to-image synthesis with artefacts: TorchIO against synthesis/brains.py (one 1 mm head)")
    try:
        import torchio
    except ImportError:
        print("torchio not installed")
        return
    from UADBrainLib.synthesis.brains import synthesize
    from UADBrainLib.geometry import to_canonical
    from UADBrainLib.synthesis.example import example_label_map_paths, load_example_labels

    ours, t_ours = timed(lambda: synthesize(load_example_labels(), ("flair",), spacing=1.0, skull_strip=False,
                                            seed=4), 2)
    label_image = to_canonical(sitk.ReadImage(str(example_label_map_paths()[0])), (1.0, 1.0, 1.0), is_label=True)
    subject = torchio.Subject(labels=torchio.LabelMap.from_sitk(label_image))
    pipeline = torchio.Compose([torchio.RandomLabelsToImage(label_key="labels"), torchio.RandomBiasField(),
                                torchio.RandomMotion(), torchio.RandomGhosting(), torchio.RandomSpike(),
                                torchio.RandomAnisotropy(), torchio.RandomNoise()])
    _, t_theirs = timed(lambda: pipeline(subject), 2)
    print(f"synthesis/brains.py: {t_ours:.2f} s per head (anatomy-aware: atrophy, partial volume, rims, "
          "per-tissue priors for each contrast, the brain mask and acquisition in one draw)")
    print(f"TorchIO LabelsToImage + bias, motion, ghosting, spike, anisotropy, noise: {t_theirs:.2f} s per head "
          "(a Gaussian per label with no contrast priors)")


if __name__ == "__main__":
    import sys

    chosen = sys.argv[1:] or ["connected_components", "nifti_headers", "dicom_series", "acquisition_simulation",
                               "training_augmentation"]
    for part in chosen:
        globals()[part]()
