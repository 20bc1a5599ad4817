"""Clinical grids: sizes in millimetres, and the map shown is the map thresholded (issue 13)."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from phantoms import phantom_brain
from UADBrainLib.cli.main import main
from UADBrainLib.evaluation.acquisition import comparison_table, parse_spacing, simulate_acquisition
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.inference.pipeline import detect
from UADBrainLib.inference.result_files import write_result
from UADBrainLib.metrics import dice


def textured_head(lesion_contrast: float = 12.0):
    """A 1 mm 'brain' with smooth texture and one 7 mm lesion: image, brain mask, lesion mask."""
    shape = (90, 110, 90)
    k, j, i = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    centre = np.array(shape) / 2
    brain = ((k - centre[0]) / 38) ** 2 + ((j - centre[1]) / 48) ** 2 + ((i - centre[2]) / 38) ** 2 < 1
    texture = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=shape), 2.0)
    values = np.where(brain, 100 + texture * 1.5 / texture.std(), 0).astype(np.float32)
    lesion = ((k - centre[0] - 8) ** 2 + (j - centre[1] + 10) ** 2 + (i - centre[2] - 9) ** 2 < 49) & brain
    values[lesion] += lesion_contrast
    images = []
    for array in (values, brain.astype(np.uint8), lesion.astype(np.uint8)):
        image = sitk.GetImageFromArray(array)
        image.SetOrigin((-45.0, -55.0, -45.0))
        images.append(image)
    return images


@pytest.fixture(scope="module")
def head():
    return textured_head()


def run_at(head, spacing):
    image, brain, lesion = head
    acquired = simulate_acquisition(image, spacing)
    truth = sitk.GetArrayFromImage(simulate_acquisition(lesion, spacing, is_label=True)) > 0
    result = detect({"flair": acquired}, model="threshold", mask=simulate_acquisition(brain, spacing, is_label=True),
                    options=DetectOptions(threshold=4.0, check_contrast=False))
    return result, truth


def test_the_same_lesion_is_found_alike_on_every_acquisition_grid(head):
    """Flagged volume within ±25 % and Dice within 0.1 of 1 mm at 0.5 mm, 2 mm and 0.45×0.45×5 mm
    (with voxel-sized kernels a 5-voxel median spanned 25 mm through 5 mm slices)."""
    reference, truth = run_at(head, (1.0, 1.0, 1.0))
    reference_dice = dice(reference.labels_array > 0, truth)
    assert reference.lesion_count == 1 and reference_dice > 0.85
    for spacing in ((0.5, 0.5, 0.5), (2.0, 2.0, 2.0), (0.45, 0.45, 5.0)):
        result, truth = run_at(head, spacing)
        assert result.lesion_count == 1, spacing
        assert result.flagged_volume_ml == pytest.approx(reference.flagged_volume_ml, rel=0.25), spacing
        assert abs(dice(result.labels_array > 0, truth) - reference_dice) < 0.1, spacing


def test_filters_run_on_a_1_mm_grid_whatever_the_acquisition(head):
    result, _ = run_at(head, (0.45, 0.45, 5.0))
    assert result.postprocessor.grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert result.anomaly_map.GetSpacing() == pytest.approx((0.45, 0.45, 5.0))


@pytest.mark.parametrize("median", [0, 3, 5, 7])
def test_the_map_written_and_shown_is_the_map_thresholded(tmp_path, median):
    image, _, _ = phantom_brain(spacing=(0.9, 1.1, 3.0))
    result = detect({"flair": image}, options=DetectOptions(median=5, min_size_mm3=0.0))
    result = result.rethreshold(median=median)
    shown = sitk.GetArrayFromImage(result.anomaly_map)
    brain = sitk.GetArrayFromImage(result.brain_mask) > 0
    assert np.array_equal(result.labels_array > 0, (shown > result.threshold) & brain)
    assert result.lesions and all(lesion.max_score > result.threshold for lesion in result.lesions)
    write_result(result, tmp_path, overview=False)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "anomaly_map.nii.gz")))
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "segmentation.nii.gz"))) > 0
    assert np.array_equal(written, shown)
    assert np.array_equal(segmentation, (written > result.threshold) & brain)


def test_a_new_median_kernel_filters_the_shown_map_anew():
    image, _, _ = phantom_brain()
    result = detect({"flair": image}, options=DetectOptions(median=0))
    smoothed = result.rethreshold(median=7)
    raw, filtered = (sitk.GetArrayFromImage(r.anomaly_map) for r in (result, smoothed))
    assert not np.array_equal(raw, filtered)
    assert np.array_equal(sitk.GetArrayFromImage(smoothed.rethreshold(median=0).anomaly_map), raw)


def test_acquisition_simulation_keeps_extent_and_averages_thick_slices(head):
    image, _, lesion = head
    thick = simulate_acquisition(image, (0.45, 0.45, 5.0))
    assert thick.GetSize() == (200, 244, 18)
    np.testing.assert_allclose(np.array(thick.GetSize()) * thick.GetSpacing(), (90, 109.8, 90), atol=0.5)
    # a 5 mm slice averages the lesion's 12-unit excess over the slab instead of sampling one plane
    assert sitk.GetArrayFromImage(thick).max() < sitk.GetArrayFromImage(image).max()
    assert parse_spacing("0.45x0.45x5") == (0.45, 0.45, 5.0) and parse_spacing("2") == (2.0, 2.0, 2.0)


def test_grids_command_writes_the_comparison_table(tmp_path, head):
    image, brain, lesion = head
    case = tmp_path / "cases" / "c1"
    case.mkdir(parents=True)
    for name, volume in (("flair", image), ("brainmask", brain), ("seg", lesion)):
        sitk.WriteImage(volume, str(case / f"{name}.nii.gz"))
    out = tmp_path / "out"
    assert main(["grids", "--cases", str(case.parent), "--model", "threshold", "--acquisitions", "1", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    table = (out / "grids.md").read_text(encoding="utf-8")
    assert "| 1 mm |" in table and "| 2 mm |" in table
    assert len((out / "grids.csv").read_text(encoding="utf-8").splitlines()) == 3


def test_comparison_table_reports_the_worst_case():
    from UADBrainLib.evaluation.acquisition import GridRow

    rows = [GridRow("a", "1", 1, 2.0, 2.0, 0.8, 0.2, 1, 1.0), GridRow("a", "5", 1, 3.0, 2.0, 0.6, 1.0, 1, 1.0)]
    assert "| 5 mm | 3.0 | 1.0 | 0.600 | 1.50 | -0.200 |" in comparison_table(rows)


def test_grids_command_refuses_a_bad_voxel_size(tmp_path, capsys):
    assert main(["grids", "--cases", str(tmp_path), "--acquisitions", "1", "0.45xx5"]) == 2
    assert "not a voxel size" in capsys.readouterr().err
