"""The module Logic (UADBrainMRML) against real MRML from slicer-core: no Qt, no slicer.app.

Stand-ins for what desktop Slicer does by itself, kept to two and used only where needed:

* ``add_slice_views``: Slicer's layout manager creates the slice and slice-composite nodes of
  the views on screen; here they are added by hand to check where the Logic sends the views.
* ``place_in_study``: Slicer's subject-hierarchy plugins create a hierarchy item for every node
  and DICOM import creates patient/study items; here a study is made by hand.

Everything else (volume, segmentation, table and storage nodes, the segmentations logic, the
subject hierarchy node) is the real MRML library.
"""

import ast
import csv
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from UADBrainLib.bundle import find_bundle, list_bundled  # noqa: E402
from UADBrainLib.errors import Cancelled, InputError  # noqa: E402
from UADBrainLib.inference.models.thresholding import ThresholdingModel  # noqa: E402
from UADBrainLib.inference.options import DetectOptions  # noqa: E402
from UADBrainMRML import dependencies  # noqa: E402
from UADBrainMRML import outputs as outputs_module  # noqa: E402
from UADBrainMRML.dependencies import MissingPackage, required_modules  # noqa: E402
from UADBrainMRML.logic import UADBrainMRMLLogic  # noqa: E402
from UADBrainMRML.segmentation import (REGION_CONTEXT, SEGMENT_ID, TERMINOLOGY_CONTEXT, TERMINOLOGY_ENTRY,  # noqa: E402
                                       TERMINOLOGY_FILE, segment_mask)
from UADBrainMRML.volumes import (add_volume_from_image, array_view, ijk_to_ras, image_from_volume_node,  # noqa: E402
                                  matrix_to_array)

SHAPE = (36, 44, 40)  # k, j, i
SPACING = (2.0, 2.5, 3.0)  # i, j, k (mm): anisotropic
ORIGIN = (-31.5, 12.25, 40.0)  # LPS mm, non-zero
LESIONS = [((12, 15, 18), 3.5), ((27, 30, 13), 3.0)]  # (i, j, k) centre, radius in voxels


ON_CPU = DetectOptions(device="cpu")  # the child process needs no torch import


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


OBLIQUE = rotation(0.3, -0.2, 0.5)


def brain_mask_array() -> np.ndarray:
    k, j, i = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]].astype(np.float32)
    return ((i - 20) / 17) ** 2 + ((j - 22) / 19) ** 2 + ((k - 18) / 15) ** 2 < 1


def synthetic_flair(seed: int = 0) -> sitk.Image:
    """A skull-stripped 'FLAIR': noisy ellipsoidal brain with two bright blobs, oblique grid."""
    k, j, i = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]].astype(np.float32)
    brain = brain_mask_array()
    array = np.where(brain, 100 + np.random.default_rng(seed).normal(0, 3, SHAPE), 0)
    for (ci, cj, ck), radius in LESIONS:
        array += 60 * brain * (((i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2) < radius ** 2)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(OBLIQUE.ravel().tolist())
    return image


def ras_of_index(image: sitk.Image, index) -> np.ndarray:
    x, y, z = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
    return np.array([-x, -y, z])


def grid_of(node):
    """Everything that defines a volume node's grid, as plain values."""
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    return (node.GetOrigin(), node.GetSpacing(), tuple(matrix_to_array(directions).ravel()),
            node.GetImageData().GetExtent(), node.GetTransformNodeID())


def scene_snapshot(scene):
    nodes = sorted((scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetClassName(), scene.GetNthNode(i).GetName())
                   for i in range(scene.GetNumberOfNodes()))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return nodes, hierarchy.GetNumberOfItems()


def place_in_study(scene, node, study_name="Study 1"):
    """Stand-in for DICOM import: a patient and a study holding ``node``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient 1")
    study = hierarchy.CreateStudyItem(patient, study_name)
    hierarchy.CreateItem(study, node)
    return study


def add_slice_views(scene):
    """Stand-in for Slicer's layout manager: the three slice views' nodes."""
    views = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        slice_node = slicer.vtkMRMLSliceNode()
        slice_node.SetName(name)
        slice_node.SetLayoutName(name)
        slice_node.SetOrientation(orientation)
        scene.AddNode(slice_node)
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        scene.AddNode(composite)
        views.append((slice_node, composite))
    return views


@pytest.fixture(scope="module")
def flair_image():
    return synthetic_flair()


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # desktop Slicer always has one
    return scene


@pytest.fixture
def flair(scene, flair_image):
    return add_volume_from_image(scene, flair_image, "FLAIR")


@pytest.fixture
def logic(scene):
    return UADBrainMRMLLogic(scene)


# ---------------------------------------------------------------------------- geometry


def test_node_geometry_matches_simpleitk_voxel_by_voxel(scene, flair_image, flair):
    matrix = ijk_to_ras(flair)
    for index in [(0, 0, 0), (39, 0, 0), (0, 43, 0), (0, 0, 35), (17.5, 3.25, 30)]:
        np.testing.assert_allclose((matrix @ [*index, 1.0])[:3], ras_of_index(flair_image, index), atol=1e-9)
    back = image_from_volume_node(flair)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), SPACING, atol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), OBLIQUE.ravel(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(flair_image))


def test_image_data_extent_not_starting_at_zero_is_placed_correctly(scene, flair_image):
    node = add_volume_from_image(scene, flair_image, "FLAIR")
    node.GetImageData().SetExtent(3, 42, 4, 47, 5, 40)  # same voxels, indexed from (3, 4, 5)
    image = image_from_volume_node(node)
    np.testing.assert_allclose(ras_of_index(image, (0, 0, 0)), (ijk_to_ras(node) @ [3, 4, 5, 1.0])[:3], atol=1e-9)


def test_a_run_on_an_extent_not_starting_at_zero_keeps_that_extent(scene, flair_image, logic):
    node = add_volume_from_image(scene, flair_image, "FLAIR")
    node.GetImageData().SetExtent(3, 42, 4, 47, 5, 40)
    out = logic.process({"flair": node})
    assert grid_of(out.anomalyMapNode) == grid_of(node)
    np.testing.assert_array_equal(segment_mask(out.segmentationNode, node), out.result.labels_array > 0)


def test_parent_linear_transform_is_composed_into_the_engine_input(scene, flair):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(0.0, 0.0, 0.4)
    matrix[:3, 3] = (5.0, -7.0, 11.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    flair.SetAndObserveTransformNodeID(transform.GetID())
    image = image_from_volume_node(flair)
    local = ijk_to_ras(flair, world=False)
    np.testing.assert_allclose(ras_of_index(image, (3, 5, 7)), (matrix @ local @ [3, 5, 7, 1.0])[:3], atol=1e-9)


# ---------------------------------------------------------------------------- a run


def test_outputs_are_on_the_exact_input_grid_beside_the_input(scene, flair, logic):
    study = place_in_study(scene, flair)
    out = logic.process({"flair": flair})
    result = out.result
    # the two inserted blobs are the two most anomalous lesions (noise specks may follow at 1 % fpr)
    assert sorted(result.labels_array[round(k), round(j), round(i)] for (i, j, k), _ in LESIONS) == [1, 2]
    for node in (out.anomalyMapNode,):
        assert grid_of(node) == grid_of(flair)
    np.testing.assert_array_equal(array_view(out.anomalyMapNode.GetImageData()),
                                  sitk.GetArrayViewFromImage(result.anomaly_map))
    assert out.anomalyMapNode.GetName() == "FLAIR anomaly map"
    assert out.segmentationNode.GetName() == "FLAIR anomalies"
    assert out.tableNode.GetName() == "FLAIR lesions"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in (out.anomalyMapNode, out.segmentationNode, out.tableNode):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    # reference geometry from the input: what DICOM SEG export needs
    assert out.segmentationNode.GetNodeReferenceID(
        out.segmentationNode.GetReferenceImageGeometryReferenceRole()) == flair.GetID()
    segment = out.segmentationNode.GetSegmentation().GetSegment(SEGMENT_ID)
    assert segment.GetTerminology() == TERMINOLOGY_ENTRY
    display = out.anomalyMapNode.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(result.threshold)
    assert display.GetWindowLevelMin() == pytest.approx(result.threshold)


# the review's families whose scoring differs from the DAE's: the KL-gradient score, tiled and conditioned
# diffusion, a GAN's generator, skip connections, a dense bottleneck; statistics in the template's frame,
# feature memory banks and Gaussians, a student network, a segmenter reading a reconstruction
REVIEW_FAMILIES = [name for name in ("cevae", "pddpm", "cddpm", "fanogan", "skip-ae", "ae-dense", "normative",
                                     "normative-age", "patchcore", "padim", "stfpm", "learned-hybrid") if name in list_bundled()]


@pytest.mark.parametrize("model", REVIEW_FAMILIES)
def test_the_reviews_families_run_in_the_module_like_any_model(flair, logic, model):
    out = logic.process({"flair": flair}, modelName=model, options=ON_CPU)
    assert grid_of(out.anomalyMapNode) == grid_of(flair) and out.result.report["scored_by"].startswith(model + " ")
    np.testing.assert_array_equal(array_view(out.anomalyMapNode.GetImageData()),
                                  sitk.GetArrayViewFromImage(out.result.anomaly_map))
    assert np.isfinite(array_view(out.anomalyMapNode.GetImageData())).all()


def test_segment_and_table_match_the_engine_voxel_for_voxel(flair, logic):
    out = logic.process({"flair": flair})
    np.testing.assert_array_equal(segment_mask(out.segmentationNode, flair), out.result.labels_array > 0)
    table = out.tableNode.GetTable()
    assert table.GetNumberOfRows() == out.result.lesion_count
    for row, lesion in enumerate(out.result.lesions):
        assert table.GetColumnByName("Volume").GetValue(row) == pytest.approx(lesion.volume_ml)
        assert table.GetColumnByName("Max score").GetValue(row) == pytest.approx(lesion.max_score)
        assert [table.GetColumnByName(axis).GetValue(row) for axis in "RAS"] == pytest.approx(lesion.centroid_ras)


def test_lesion_centroids_are_world_ras_of_the_lesion_voxels(flair, logic):
    out = logic.process({"flair": flair})
    labels = out.result.labels_array
    matrix = ijk_to_ras(flair)
    for lesion in out.result.lesions:
        k, j, i = np.nonzero(labels == lesion.label)
        centroid = (matrix @ [i.mean(), j.mean(), k.mean(), 1.0])[:3]
        np.testing.assert_allclose(lesion.centroid_ras, centroid, atol=1e-6)


def test_rethreshold_changes_the_segmentation_without_running_the_model(flair, logic, monkeypatch):
    calls = []
    predict = ThresholdingModel.predict

    def counting_predict(self, *args, **kwargs):
        calls.append(1)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(ThresholdingModel, "predict", counting_predict)
    out = logic.process({"flair": flair})
    assert len(calls) == 1
    before = segment_mask(out.segmentationNode, flair)
    summary = logic.rethreshold(out, threshold=out.result.threshold * 3)
    after = segment_mask(out.segmentationNode, flair)
    assert len(calls) == 1
    assert after.sum() < before.sum()
    np.testing.assert_array_equal(after, out.result.labels_array > 0)
    assert summary["thresholdMethod"] == "manual" and summary["lesionCount"] == out.result.lesion_count
    assert out.tableNode.GetTable().GetNumberOfRows() == out.result.lesion_count
    assert out.anomalyMapNode.GetDisplayNode().GetLowerThreshold() == pytest.approx(out.result.threshold)
    summary = logic.rethreshold(out, threshold="otsu", median=0, minSizeMm3=0.0)
    assert (summary["thresholdMethod"], summary["median"], summary["minSizeMm3"]) == ("otsu", 0, 0.0)
    np.testing.assert_array_equal(segment_mask(out.segmentationNode, flair), out.result.labels_array > 0)
    assert len(calls) == 1
    # the overlay shows the map of the new kernel, the one just thresholded, voxel for voxel
    shown = array_view(out.anomalyMapNode.GetImageData()).reshape(out.result.labels_array.shape)
    np.testing.assert_array_equal(shown, sitk.GetArrayViewFromImage(out.result.anomaly_map))
    brain = sitk.GetArrayViewFromImage(out.result.brain_mask) > 0
    np.testing.assert_array_equal((shown > out.result.threshold) & brain, out.result.labels_array > 0)


def test_inputs_are_never_modified(scene, flair, logic, tmp_path):
    array_before = array_view(flair.GetImageData()).copy()
    grid_before = grid_of(flair)
    mtimes = (flair.GetMTime(), flair.GetImageData().GetMTime())
    out = logic.process({"flair": flair})
    logic.rethreshold(out, threshold=out.result.threshold * 2)
    logic.exportResults(out, tmp_path)
    logic.showOutputs(out)
    np.testing.assert_array_equal(array_view(flair.GetImageData()), array_before)
    assert grid_of(flair) == grid_before
    assert (flair.GetMTime(), flair.GetImageData().GetMTime()) == mtimes


def test_rerun_adds_new_nodes_unless_replace_existing_then_only_that_inputs_outputs_go(scene, flair_image, logic):
    flair = add_volume_from_image(scene, flair_image, "FLAIR")
    other = add_volume_from_image(scene, synthetic_flair(seed=1), "Other FLAIR")
    first = logic.process({"flair": flair})
    second = logic.process({"flair": flair})
    kept = logic.process({"flair": other})
    assert second.anomalyMapNode.GetName() != first.anomalyMapNode.GetName()  # unique names
    for node in (first.anomalyMapNode, second.segmentationNode):
        assert scene.IsNodePresent(node)
    third = logic.process({"flair": flair}, replaceExisting=True)
    for old in (first, second):
        for node in (old.anomalyMapNode, old.segmentationNode, old.tableNode):
            assert not scene.IsNodePresent(node)
    for node in (third.anomalyMapNode, third.segmentationNode, third.tableNode,
                 kept.anomalyMapNode, kept.segmentationNode, kept.tableNode, flair, other):
        assert scene.IsNodePresent(node)
    display_nodes = [scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeDisplayNode")
                     for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeDisplayNode"))]
    assert len(display_nodes) == 4  # two inputs, two anomaly maps: none orphaned


@pytest.mark.parametrize("cancel_at", ["reading inputs", "model"])
def test_cancel_leaves_the_scene_exactly_as_before(scene, flair, logic, cancel_at):
    place_in_study(scene, flair)
    before = scene_snapshot(scene)
    cancel = threading.Event()
    stages = []

    def progress(fraction, stage):
        stages.append(stage)
        if stage == cancel_at:
            cancel.set()

    with pytest.raises(Cancelled):
        logic.process({"flair": flair}, progressCallback=progress, cancelEvent=cancel)
    assert cancel_at in stages
    assert scene_snapshot(scene) == before


def test_a_failure_while_creating_nodes_rolls_back(scene, flair, logic, monkeypatch):
    before = scene_snapshot(scene)

    def broken_fill(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs_module, "fill_table", broken_fill)
    with pytest.raises(RuntimeError):
        logic.process({"flair": flair})
    nodes_after, _ = scene_snapshot(scene)
    color_tables = [entry for entry in nodes_after if entry not in before[0]]
    assert all(entry[1] == "vtkMRMLColorTableNode" for entry in color_tables)  # the shared colour table may stay


def test_brain_mask_from_a_segmentation_or_a_labelmap(scene, flair_image, flair, logic):
    from UADBrainMRML.segmentation import create_segmentation_node, set_segment_mask

    mask = brain_mask_array()
    segmentation = create_segmentation_node(scene, "brain", flair, "brain")
    set_segment_mask(segmentation, mask, flair)
    out = logic.process({"flair": flair}, maskNode=segmentation)
    assert out.result.report["brain_mask_method"] == "given"
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out.result.brain_mask) > 0, mask)
    labelmap_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    labelmap_image.CopyInformation(flair_image)
    labelmap = add_volume_from_image(scene, labelmap_image, "brain", "vtkMRMLLabelMapVolumeNode")
    out = logic.process({"flair": flair}, maskNode=labelmap)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(out.result.brain_mask) > 0, mask)


def test_outputs_follow_a_transformed_input(scene, flair, logic):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = (20.0, -10.0, 5.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    flair.SetAndObserveTransformNodeID(transform.GetID())
    out = logic.process({"flair": flair})
    assert grid_of(out.anomalyMapNode) == grid_of(flair)
    assert out.segmentationNode.GetTransformNodeID() == transform.GetID()
    labels = out.result.labels_array
    lesion = out.result.lesions[0]
    k, j, i = np.nonzero(labels == lesion.label)
    world = matrix @ ijk_to_ras(flair, world=False) @ [i.mean(), j.mean(), k.mean(), 1.0]
    np.testing.assert_allclose(lesion.centroid_ras, world[:3], atol=1e-6)


# ---------------------------------------------------------------------------- export


def test_export_files_read_back_with_identical_geometry(flair, flair_image, logic, tmp_path):
    out = logic.process({"flair": flair})
    logic.rethreshold(out, threshold=out.result.threshold * 1.5)
    paths = logic.exportResults(out, tmp_path / "case")
    assert sorted(p.name for p in paths) == sorted(
        ["segmentation.seg.nrrd", "segmentation.nii.gz", "anomaly_map.nii.gz", "lesions.csv"])
    expected_labels = out.result.labels_array > 0

    for name in ("anomaly_map.nii.gz", "segmentation.nii.gz"):
        image = sitk.ReadImage(str(tmp_path / "case" / name))
        np.testing.assert_allclose(image.GetOrigin(), flair_image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), flair_image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), flair_image.GetDirection(), atol=1e-6)
    anomaly = sitk.ReadImage(str(tmp_path / "case" / "anomaly_map.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(anomaly), sitk.GetArrayViewFromImage(out.result.anomaly_map))
    labelmap = sitk.ReadImage(str(tmp_path / "case" / "segmentation.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labelmap) > 0, expected_labels)

    # .seg.nrrd through Slicer's own reader, into a fresh scene
    other_scene = slicer.vtkMRMLScene()
    reference = add_volume_from_image(other_scene, flair_image, "FLAIR")
    segmentation = other_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "case" / "segmentation.seg.nrrd"))
    assert storage.ReadData(segmentation)
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    assert segmentation.GetSegmentation().GetSegment(segment_id).GetTerminology() == TERMINOLOGY_ENTRY
    np.testing.assert_array_equal(segment_mask(segmentation, reference, segment_id), expected_labels)
    # and through SimpleITK: same axes and spacing (the file holds the segment's bounding box)
    seg_image = sitk.ReadImage(str(tmp_path / "case" / "segmentation.seg.nrrd"))
    np.testing.assert_allclose(seg_image.GetSpacing(), flair_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(seg_image.GetDirection(), flair_image.GetDirection(), atol=1e-6)
    start = flair_image.TransformPhysicalPointToContinuousIndex(seg_image.GetOrigin())
    np.testing.assert_allclose(start, np.round(start), atol=1e-4)  # on the input's voxel lattice

    with open(tmp_path / "case" / "lesions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == out.result.lesion_count
    assert float(rows[0]["volume_ml"]) == pytest.approx(out.result.lesions[0].volume_ml, abs=1e-4)


def test_export_reflects_segment_editor_edits(flair, logic, tmp_path):
    from UADBrainMRML.segmentation import set_segment_mask

    out = logic.process({"flair": flair})
    edited = (out.result.labels_array > 0).copy()
    edited[0, 0, 0] = 1  # the user painted one voxel
    set_segment_mask(out.segmentationNode, edited, flair)
    logic.exportResults(out, tmp_path)
    labelmap = sitk.ReadImage(str(tmp_path / "segmentation.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labelmap), edited)


# ---------------------------------------------------------------------------- views, checks


def test_show_outputs_overlays_the_map_and_jumps_to_the_first_lesion(scene, flair, logic):
    views = add_slice_views(scene)
    out = logic.process({"flair": flair})
    logic.showOutputs(out)
    for slice_node, composite in views:
        assert composite.GetBackgroundVolumeID() == flair.GetID()
        assert composite.GetForegroundVolumeID() == out.anomalyMapNode.GetID()
        assert composite.GetForegroundOpacity() > 0
        centre = matrix_to_array(slice_node.GetSliceToRAS())[:3, 3]
        np.testing.assert_allclose(centre, out.result.lesions[0].centroid_ras, atol=1e-6)
    logic.jumpToLesion(out, 1)
    centre = matrix_to_array(views[0][0].GetSliceToRAS())[:3, 3]
    np.testing.assert_allclose(centre, out.result.lesions[1].centroid_ras, atol=1e-6)


def test_input_problems_are_reported_before_a_run(scene, flair_image, flair, logic):
    assert logic.inputProblems({"flair": flair}) == []
    assert logic.inputProblems({}) == ["Select at least one input volume."]
    far = sitk.Image(flair_image)
    far.SetOrigin((500.0, 500.0, 500.0))
    far_node = add_volume_from_image(scene, far, "T1 elsewhere")
    problems = logic.inputProblems({"flair": flair, "t1": far_node})
    assert len(problems) == 1 and "do not overlap" in problems[0]
    assert "unknown model" in logic.inputProblems({"flair": flair}, modelName="no-such-model")[0]
    with pytest.raises(InputError, match="overlap"):
        logic.process({"flair": flair, "t1": far_node})


# ---------------------------------------------------------------------------- background process


def wait_for(job, timeout_s=120.0):
    """The stages a background run (or a list of them) went through, polled until it finished."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        status = job.poll()
        seen.append(status.stage)
        if status.finished:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"background run did not finish in {timeout_s} s (stages {set(seen)})")


def test_background_process_gives_the_same_result_as_in_process(scene, flair, logic):
    request = logic.makeRequest({"flair": flair}, options=ON_CPU)  # cpu: the child needs no torch import
    job = logic.startBackground(request, sys.executable)
    try:
        stages = wait_for(job)
        result = job.result()
    finally:
        job.cleanup()
    assert "post-process" in stages or "done" in stages
    out = logic.createOutputs(request, result)
    direct = logic.process({"flair": flair})
    np.testing.assert_array_equal(out.result.labels_array, direct.result.labels_array)
    np.testing.assert_array_equal(segment_mask(out.segmentationNode, flair), direct.result.labels_array > 0)
    assert out.result.inputs["flair"] is request.images["flair"]
    summary = logic.rethreshold(out, threshold=out.result.threshold * 2)  # the shipped Result is complete
    assert summary["lesionCount"] <= direct.result.lesion_count



def test_fpr_and_erosion_reach_the_engine_through_the_background_worker(scene, flair, logic):
    """The panel's Apply: options made in the main process arrive whole in the worker's detect."""
    options = DetectOptions(device="cpu", fpr=0.002, erosion_mm=3.0, min_size_mm3=7.0)
    request = logic.makeRequest({"flair": flair}, options=options)
    job = logic.startBackground(request, sys.executable)
    try:
        wait_for(job)
        result = job.result()
    finally:
        job.cleanup()
    assert (result.fpr, result.erosion_mm, result.min_size_mm3) == (0.002, 3.0, 7.0)
    direct = logic.process({"flair": flair}, options=options)
    np.testing.assert_array_equal(result.labels_array, direct.result.labels_array)


def test_tune_changes_fpr_and_erosion_without_rerunning(scene, flair, logic):
    out = logic.process({"flair": flair}, threshold="otsu", device="cpu")
    scorer = find_bundle(out.result.report["scored_by"].split()[0])
    assert out.result.fpr == DetectOptions().postprocessing(scorer.metadata["postprocessing"])[3]  # its operating point
    eroded = logic.rethreshold(out, erosionMm=4.0, fpr=0.05)
    assert (eroded["erosionMm"], eroded["fpr"]) == (4.0, 0.05)
    brain = out.result.postprocessor.brain(4.0)
    assert not (out.result.labels_array[out.result.postprocessor.crop] > 0)[~brain].any()
    slider = logic.tuneSlider(out)
    assert slider.minimum <= out.result.threshold <= slider.maximum and slider.step > 0
    assert logic.readout(out).endswith(f"({out.result.threshold_method}).")


def test_remove_outputs_takes_every_node_of_the_run_and_its_dependents(scene, flair, logic):
    out = logic.process({"flair": flair})
    nodes = [out.anomalyMapNode, out.segmentationNode, out.tableNode, *out.reconstructionNodes.values()]
    dependents = [node.GetNthDisplayNode(i) for node in nodes if node.IsA("vtkMRMLDisplayableNode")
                  for i in range(node.GetNumberOfDisplayNodes())]
    logic.removeOutputs(out)
    assert not [node.GetID() for node in nodes + dependents if scene.IsNodePresent(node)]
    assert scene.IsNodePresent(flair)


def test_background_cancel_leaves_the_scene_unchanged(scene, flair, logic):
    before = scene_snapshot(scene)
    job = logic.startBackground(logic.makeRequest({"flair": flair}, options=ON_CPU), sys.executable)
    job.cancel()
    try:
        assert job.poll().finished
        with pytest.raises(Cancelled):
            job.result()
    finally:
        job.cleanup()
    assert scene_snapshot(scene) == before


def test_background_errors_arrive_as_the_engines_user_errors(scene, flair, logic):
    request = logic.makeRequest({"flair": flair}, modelName="no-such-model", options=ON_CPU)
    job = logic.startBackground(request, sys.executable)
    try:
        wait_for(job)
        with pytest.raises(Exception, match="unknown model 'no-such-model'") as raised:
            job.result()
    finally:
        job.cleanup()
    from UADBrainLib.errors import ModelError

    assert isinstance(raised.value, ModelError)


def test_many_volume_sets_run_one_after_another_and_a_broken_one_is_reported(scene, flair_image, logic):
    first = add_volume_from_image(scene, flair_image, "case1_FLAIR")
    empty = sitk.Image(flair_image.GetSize(), sitk.sitkFloat32)  # a volume with no image in it
    empty.CopyInformation(flair_image)
    add_volume_from_image(scene, empty, "case2 FLAIR")
    dicom_series = add_volume_from_image(scene, synthetic_flair(seed=3), "3: AX T2 FLAIR")
    place_in_study(scene, dicom_series, "Brain MRI")
    add_volume_from_image(scene, flair_image, "localizer")  # names no contrast: not a set
    sets = logic.volumeSets()
    assert [s.name for s in sets] == ["case1", "case2", "Patient 1 / Brain MRI"]
    assert sets[0].volumes == {"flair": first} and sets[2].volumes == {"flair": dicom_series}

    runs = logic.startVolumeSetRuns(sets, options=ON_CPU, pythonExecutable=sys.executable)
    stages = wait_for(runs, timeout_s=300.0)
    status = runs.poll()  # a finished list answers with its outcome again
    fractions = [float(stage.split("/")[0]) for stage in stages if "/" in stage.split(" ")[0]]
    assert fractions == sorted(fractions) and {1, 2, 3} <= set(fractions)  # one set after another
    assert status.stage == "done: 2 of 3 sets ran, 1 failed"
    ran, broken, series = status.outcomes
    assert broken.outputs is None and broken.error and "\n" not in broken.error
    for outcome, volume in ((ran, first), (series, dicom_series)):
        assert outcome.error is None and outcome.device == "cpu"
        assert outcome.outputs.inputNode is volume
        assert outcome.outputs.anomalyMapNode.GetName().startswith(volume.GetName())  # named per volume
    direct = logic.process({"flair": first}, options=ON_CPU)
    np.testing.assert_array_equal(ran.outputs.result.labels_array, direct.result.labels_array)


@pytest.mark.parametrize("names, expected", [
    (["FLAIR", "T1"], {"(no subject name)": ["flair", "t1"]}),  # a contrast alone: one unnamed set
    (["sub-01_T1w", "sub-01_FLAIR", "sub-02_T2w"], {"sub 01": ["flair", "t1"], "sub 02": ["t2"]}),  # BIDS
    (["case2_T1_GD", "Case2-FLAIR", "case2 T1"], {"case2": ["flair", "t1", "t1c"]}),
    (["3: AX T2 FLAIR", "localizer", "T1 POST GAD"], {"3 ax": ["flair"], "(no subject name)": ["t1c"]}),
])
def test_volume_sets_are_grouped_by_name(scene, flair_image, logic, names, expected):
    for name in names:
        add_volume_from_image(scene, flair_image, name)
    sets = logic.volumeSets()
    assert {s.name: list(s.volumes) for s in sets} == expected
    assert not any(s.problem for s in sets)


def test_two_series_of_one_contrast_in_a_study_are_named_as_the_problem(scene, flair_image, logic):
    for name in ("2: AX FLAIR", "5: SAG FLAIR"):
        place_in_study(scene, add_volume_from_image(scene, flair_image, name), "Brain MRI")
    (volume_set,) = logic.volumeSets()
    assert volume_set.problem.startswith("two FLAIR volumes loaded from one DICOM study ('2: AX FLAIR', "
                                         "'5: SAG FLAIR') — choose them in the Inputs section")
    runs = logic.startVolumeSetRuns([volume_set], options=ON_CPU, pythonExecutable=sys.executable)
    status = runs.poll()
    assert status.finished and status.outcomes[0].error == volume_set.problem  # reported, no process started


def test_cancelling_many_volume_sets_keeps_the_scene_as_it_was(scene, flair_image, logic):
    for name in ("a_FLAIR", "b_FLAIR"):
        add_volume_from_image(scene, flair_image, name)
    before = scene_snapshot(scene)
    runs = logic.startVolumeSetRuns(logic.volumeSets(), options=ON_CPU, pythonExecutable=sys.executable)
    assert runs.poll().stage.startswith("1/2 a:")
    runs.cancel()
    status = runs.poll()
    assert status.finished and status.stage == "cancelled: 0 of 2 sets ran" and not status.outcomes
    assert scene_snapshot(scene) == before


def test_synthetic_example_loads_as_volumes_and_runs(scene, logic):
    volumes = logic.loadSyntheticExample()
    assert "flair" in volumes
    out = logic.process(volumes, device="cpu")
    assert grid_of(out.anomalyMapNode) == grid_of(volumes["flair"])
    assert out.result.lesion_count > 0
    truth = scene.GetFirstNodeByName("Example true lesions")
    assert segment_mask(truth, volumes["flair"], SEGMENT_ID).any()


# ---------------------------------------------------------------------------- terminology


def test_segment_terminology_resolves_in_the_context_the_module_ships():
    """Slicer's terminology logic reads the entry; its category and type are in the shipped context
    (Slicer's own contexts lack SNOMED CT 'Lesion' under 'Morphologically altered structure')."""
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    assert terminologies.LoadTerminologyFromFile(str(TERMINOLOGY_FILE)) == TERMINOLOGY_CONTEXT
    entry = slicer.vtkSlicerTerminologyEntry()
    assert terminologies.DeserializeTerminologyEntry(TERMINOLOGY_ENTRY, entry)
    assert terminologies.SerializeTerminologyEntry(entry) == TERMINOLOGY_ENTRY  # Slicer's exact format
    category, kind = slicer.vtkSlicerTerminologyCategory(), slicer.vtkSlicerTerminologyType()
    assert terminologies.GetNthCategoryInTerminology(TERMINOLOGY_CONTEXT, 0, category)
    assert terminologies.GetNthTypeInTerminologyCategory(TERMINOLOGY_CONTEXT, category, 0, kind)
    assert (category.GetCodingSchemeDesignator(), category.GetCodeValue()) == (
        entry.GetCategoryObject().GetCodingSchemeDesignator(), entry.GetCategoryObject().GetCodeValue())
    assert (kind.GetCodingSchemeDesignator(), kind.GetCodeValue()) == (
        entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue())
    assert entry.GetRegionContextName() == REGION_CONTEXT


def test_segment_region_is_in_slicers_anatomic_context():
    spec = importlib.util.find_spec("trame_slicer")  # ships copies of Slicer's terminology files
    if spec is None:
        pytest.skip("needs Slicer's anatomic context file (installed with the web extra, trame-slicer)")
    region_file = Path(spec.origin).parent / "resources" / "terminologies" / "AnatomicRegionAndModifier-DICOM-Master.term.json"
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    assert terminologies.LoadRegionContextFromFile(str(region_file))
    entry = slicer.vtkSlicerTerminologyEntry()
    terminologies.DeserializeTerminologyEntry(TERMINOLOGY_ENTRY, entry)
    region = slicer.vtkSlicerTerminologyType()
    codes = set()
    for index in range(terminologies.GetNumberOfRegionsInRegionContext(REGION_CONTEXT)):
        terminologies.GetNthRegionInRegionContext(REGION_CONTEXT, index, region)
        codes.add((region.GetCodingSchemeDesignator(), region.GetCodeValue()))
    assert (entry.GetRegionObject().GetCodingSchemeDesignator(), entry.GetRegionObject().GetCodeValue()) in codes


# ---------------------------------------------------------------------------- Slicer's Python


class FakeBundle:
    def __init__(self, metadata):
        self.metadata = metadata


def test_networks_need_pytorch_and_monai_the_baseline_nothing():
    assert required_modules(FakeBundle({"family": "threshold", "weights": None})) == []
    assert required_modules(FakeBundle({"family": "dae", "weights": {"file": "w.pt", "sha256": "0"}})) == ["torch", "monai"]


def test_an_ensemble_needs_what_its_routes_need():
    """auto scores FLAIR by thresholding (nothing to install) and T1 by the segmenter; hybrid
    nests an ensemble of two networks."""
    auto, hybrid = find_bundle("auto"), find_bundle("hybrid")
    assert required_modules(auto, ["flair"]) == [] and required_modules(auto, ["flair", "t1"]) == []
    assert required_modules(auto, ["t1"]) == ["torch", "monai"] and required_modules(auto) == ["torch", "monai"]
    assert required_modules(hybrid, ["flair"]) == ["torch", "monai"]


def test_pytorch_is_installed_before_what_depends_on_it(monkeypatch):
    """pip would pull a PyPI torch wheel in for MONAI; the PyTorch extension must install it first."""
    installed = {"numpy"}
    monkeypatch.setattr(dependencies.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    assert dependencies.missing_modules(["monai"]) == ["torch", "monai"]
    assert dependencies.missing_modules(["nibabel", "monai", "torch"]) == ["torch", "nibabel", "monai"]
    installed.add("torch")
    assert dependencies.missing_modules(["monai", "numpy"]) == ["monai"]


def python_wrapper(tmp_path, blocked=()) -> str:
    """An executable standing in for PythonSlicer: this Python with ``blocked`` packages missing."""
    code = (f"import runpy, sys; [sys.modules.__setitem__(name, None) for name in {tuple(blocked)!r}]; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    script = tmp_path / "python-wrapper"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{code}" "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return str(script)


def slow_launcher(tmp_path) -> str:
    """Like PythonSlicer (a CTK launcher): starts an interpreter as its child and waits for it. The
    child here ignores the cancel file, as an engine busy in a long filter would."""
    script = tmp_path / "launcher"
    script.write_text(f'#!/bin/sh\n"{sys.executable}" -c "import time; time.sleep(120)" &\nwait $!\n', encoding="utf-8")
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell wrapper")
def test_background_run_needs_only_what_slicer_ships(scene, flair, logic, tmp_path):
    from test_slicer_ui import NOT_IN_SLICER

    request = logic.makeRequest({"flair": flair}, options=ON_CPU)
    job = logic.startBackground(request, python_wrapper(tmp_path, NOT_IN_SLICER))
    try:
        wait_for(job)
        result = job.result()
    finally:
        job.cleanup()
    np.testing.assert_array_equal(result.labels_array, logic.process({"flair": flair}).result.labels_array)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell wrapper")
def test_a_missing_package_in_the_background_arrives_as_missing_package(scene, flair, logic, tmp_path):
    job = logic.startBackground(logic.makeRequest({"flair": flair}, options=ON_CPU), python_wrapper(tmp_path, ["scipy"]))
    try:
        wait_for(job)
        with pytest.raises(MissingPackage) as raised:
            job.result()
    finally:
        job.cleanup()
    assert raised.value.module == "scipy"


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_stops_the_interpreter_behind_a_launcher(scene, flair, logic, tmp_path):
    """PythonSlicer is a launcher: stopping it alone would leave the engine running (and its folder)."""
    job = logic.startBackground(logic.makeRequest({"flair": flair}, options=ON_CPU), slow_launcher(tmp_path))
    children_file = Path(f"/proc/{job.process.pid}/task/{job.process.pid}/children")
    deadline = time.monotonic() + 30
    while not children_file.read_text(encoding="utf-8").split():
        assert time.monotonic() < deadline, "the launcher started no interpreter"
        time.sleep(0.01)
    interpreter = int(children_file.read_text(encoding="utf-8").split()[0])
    job.cancel()
    job.cleanup()
    deadline = time.monotonic() + 10
    while process_alive(interpreter) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not process_alive(interpreter), "the interpreter behind the launcher is still running"
    finally:
        if process_alive(interpreter):
            os.kill(interpreter, 9)  # the one process this test started, by its id
    assert not job.folder.exists()
    with pytest.raises(Cancelled):
        job.result()


# ---------------------------------------------------------------------------- UADBrainTest's phantom


def test_the_phantom_of_uadbraintest_has_lesions_the_default_model_finds(scene, logic):
    """UADBrainTest (desktop Slicer only) runs on this NumPy phantom; here it runs on real MRML."""
    selftest = Path(__file__).resolve().parent.parent / "UADBrain" / "UADBrainSlicer" / "selftest.py"
    module = ast.parse(selftest.read_text(encoding="utf-8"))
    function = next(node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "makePhantomFlair")
    namespace = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(selftest), "exec"), namespace)
    flair = namespace["makePhantomFlair"](scene)
    out = logic.process({"flair": flair}, device="cpu")
    # its two bright blobs are the two most anomalous lesions
    assert [lesion.label for lesion in out.result.lesions[:2]] == [1, 2]
    assert sorted(out.result.labels_array[k, j, i] for i, j, k in ((12, 15, 18), (27, 30, 13))) == [1, 2]
    logic.rethreshold(out, threshold=out.result.threshold * 1.3)
    assert out.result.threshold_method == "manual"
