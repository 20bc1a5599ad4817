"""TEMPORARY stand-in for ``UADBrainMRML.logic.UADBrainMRMLLogic`` (not the product).

It has the methods of the Logic that ``adapter.py`` calls, on any vtkMRMLScene, with a trivial
intensity threshold instead of a model, so the web front end can be
built and tested end to end before the real Logic exists. Delete this file and the fallback in
``adapter.py`` once ``UADBrainMRML.logic`` lands.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from UADBrainLib.errors import Cancelled, InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_SIMULATED_MODEL_STEPS = 10
_SIMULATED_STEP_SECONDS = 0.15


@dataclass
class Result:
    lesions: list[dict]
    threshold: float


@dataclass
class Request:
    inputNode: object
    image: sitk.Image
    threshold: float
    median: int
    minSizeMm3: float | None


@dataclass
class Outputs:
    inputNode: object
    anomalyMapNode: object
    segmentationNode: object
    tableNode: object
    result: Result
    rawScore: sitk.Image = field(repr=False)
    lesionMask: sitk.Image | None = field(default=None, repr=False)


class TemporaryThresholdLogic:
    """Scores each voxel by how far the first input lies above its own brain intensity."""

    def __init__(self, scene):
        self.scene = scene
        self.segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentationsLogic.SetMRMLScene(scene)

    def makeRequest(self, inputVolumes, modelName=None, device="auto", maskNode=None, threshold=None,
                    median=None, minSizeMm3=None):
        if not inputVolumes:
            raise InputError("No input volume — load at least one volume and assign its contrast.")
        volumeNode = next(iter(inputVolumes.values()))
        return Request(volumeNode, volume_node_to_sitk(volumeNode), 0.5 if threshold is None else threshold,
                       5 if median is None else median, minSizeMm3)

    def runEngine(self, request, progressCallback=None, cancelEvent=None):
        progress = progressCallback or (lambda fraction, stage: None)
        cancelEvent = cancelEvent or threading.Event()
        for step in range(_SIMULATED_MODEL_STEPS):
            if cancelEvent.is_set():
                raise Cancelled("cancelled by the user.")
            progress(step / _SIMULATED_MODEL_STEPS, "running model")
            time.sleep(_SIMULATED_STEP_SECONDS)
        return _intensity_score(request.image)

    def createOutputs(self, request, result, replaceExisting=False):
        anomalyMapNode = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "anomaly map")
        segmentationNode = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "anomalies")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.GetDisplayNode().SetVisibility2DFill(False)
        tableNode = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "lesions")
        outputs = Outputs(request.inputNode, anomalyMapNode, segmentationNode, tableNode, Result([], 0.0), result)
        self.rethreshold(outputs, request.threshold, request.median, request.minSizeMm3)
        return outputs

    def showOutputs(self, outputs):
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(outputs.inputNode.GetID())
            composite.SetForegroundVolumeID(outputs.anomalyMapNode.GetID())
            composite.SetForegroundOpacity(0.6)

    def jumpToLesion(self, outputs, index):
        r, a, s = outputs.result.lesions[index]["centroid_ras"]
        slicer.vtkMRMLSliceNode.JumpAllSlices(self.scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)

    def rethreshold(self, outputs, threshold=None, median=None, minSizeMm3=None):
        score = outputs.rawScore
        if median:
            score = sitk.Median(score, [median // 2] * 3)
        sitk_to_volume_node(score, outputs.anomalyMapNode)
        display = outputs.anomalyMapNode.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeIron")
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(threshold, max(threshold + 1e-3, float(np.max(sitk.GetArrayViewFromImage(score)))))
        display.ApplyThresholdOn()
        display.SetThreshold(threshold, 1e30)
        components = sitk.ConnectedComponent(score > threshold)
        voxelMm3 = float(np.prod(score.GetSpacing()))
        minVoxels = math.ceil((minSizeMm3 or 0) / voxelMm3)
        components = sitk.RelabelComponent(components, minimumObjectSize=minVoxels)
        outputs.lesionMask = sitk.Cast(components > 0, sitk.sitkUInt8)
        self._set_segmentation(outputs.segmentationNode, outputs.lesionMask)
        outputs.result = Result(_lesion_rows(components, score, voxelMm3), float(threshold))

    def exportResults(self, outputs, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        segNrrd = folder / "segmentation.seg.nrrd"
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(segNrrd))
        if not storage.WriteData(outputs.segmentationNode):
            raise OSError(f"could not write {segNrrd}")
        labelmap = folder / "segmentation.nii.gz"
        sitk.WriteImage(outputs.lesionMask, str(labelmap))
        anomalyMap = folder / "anomaly_map.nii.gz"
        sitk.WriteImage(volume_node_to_sitk(outputs.anomalyMapNode), str(anomalyMap))
        lesionsCsv = folder / "lesions.csv"
        _write_lesions_csv(outputs.result.lesions, lesionsCsv)
        return [segNrrd, labelmap, anomalyMap, lesionsCsv]

    def _set_segmentation(self, segmentationNode, mask):
        labelmapNode = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "anomaly mask")
        sitk_to_volume_node(mask, labelmapNode)
        segmentationNode.GetSegmentation().RemoveAllSegments()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(labelmapNode)
        self.segmentationsLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode)
        self.scene.RemoveNode(labelmapNode)


def _intensity_score(image):
    """Robust z-score above the median of the non-zero voxels, scaled so 1.0 means 5 MADs."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    inside = array[array != 0]
    if inside.size == 0:
        raise InputError("The input volume is empty (all zeros) — load a brain MRI volume.")
    median = float(np.median(inside))
    mad = float(np.median(np.abs(inside - median))) or 1.0
    score = np.clip((array - median) / (5.0 * 1.4826 * mad), 0.0, None) * (array != 0)
    scoreImage = sitk.GetImageFromArray(score.astype(np.float32))
    scoreImage.CopyInformation(image)
    return scoreImage


def _lesion_rows(components, score, voxelMm3):
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(components)
    intensity = sitk.LabelIntensityStatisticsImageFilter()
    intensity.Execute(components, score)
    rows = []
    for label in shape.GetLabels():
        centroidLps = np.array(shape.GetCentroid(label))
        rows.append({
            "label": int(label),
            "volume_ml": shape.GetNumberOfPixels(label) * voxelMm3 / 1000.0,
            "max_score": float(intensity.GetMaximum(label)),
            "centroid_ras": [float(c) for c in _LPS_TO_RAS @ centroidLps],
        })
    return rows


def _write_lesions_csv(lesions, path):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "volume_ml", "max_score", "centroid_r", "centroid_a", "centroid_s"])
        for row in lesions:
            writer.writerow([row["label"], f"{row['volume_ml']:.4f}", f"{row['max_score']:.4f}",
                             *(f"{c:.2f}" for c in row["centroid_ras"])])


def volume_node_to_sitk(volumeNode):
    """Copy a scalar volume node into a SimpleITK image with the same (LPS) geometry."""
    imageData = volumeNode.GetImageData()
    dims = imageData.GetDimensions()
    array = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    image = sitk.GetImageFromArray(array.reshape(dims[::-1]).copy())
    ijkToRas = vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    matrix = np.array([[ijkToRas.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((_LPS_TO_RAS @ matrix[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin((_LPS_TO_RAS @ matrix[:3, 3]).tolist())
    return image


def sitk_to_volume_node(image, volumeNode):
    """Put a SimpleITK image (array and geometry) into an existing volume node."""
    array = sitk.GetArrayFromImage(image)
    imageData = vtkImageData()
    imageData.SetDimensions(image.GetSize())
    imageData.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    rasAxes = _LPS_TO_RAS @ direction * np.array(image.GetSpacing())
    rasOrigin = _LPS_TO_RAS @ np.array(image.GetOrigin())
    ijkToRas = vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            ijkToRas.SetElement(row, column, rasAxes[row, column])
        ijkToRas.SetElement(row, 3, rasOrigin[row])
    volumeNode.SetIJKToRASMatrix(ijkToRas)
    volumeNode.SetAndObserveImageData(imageData)
    if not volumeNode.GetDisplayNode():
        volumeNode.CreateDefaultDisplayNodes()


def write_synthetic_example(folder):
    """A synthetic FLAIR-like head with two bright blobs; stands in for the engine's example case."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:72, :96, :80].astype(np.float32)
    brain = ((x - 40) ** 2 / 34**2 + (y - 48) ** 2 / 42**2 + (z - 36) ** 2 / 30**2) < 1
    array = brain * (100 + rng.normal(0, 4, brain.shape))
    for (cx, cy, cz, radius, gain) in [(52, 36, 40, 6, 60), (28, 60, 30, 3.5, 45)]:
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * radius**2))
        array += brain * gain * blob
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((1.0, 1.0, 1.5))
    image.SetOrigin((-40.0, -48.0, -54.0))
    path = Path(folder) / "example_flair.nii.gz"
    sitk.WriteImage(image, str(path))
    return {"flair": path}
