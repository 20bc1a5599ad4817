"""The anomaly segmentation node: one segment, a terminology entry, the input as reference geometry."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from UADBrainLib.inference.dicom_seg import SEGMENT_CATEGORY, SEGMENT_REGION, SEGMENT_TYPE
from UADBrainLib.resources import RESOURCES_DIR

from .volumes import array_to_matrix, array_view, ijk_to_ras

SEGMENT_ID = "anomaly"
SEGMENT_COLOR = (0.0, 0.9, 1.0)  # cyan outline, distinct from the red-yellow anomaly map
# Slicer's own contexts lack SNOMED CT "Lesion" under "Morphologically altered structure", so the
# module ships a one-entry context; Slicer loads it at startup (UADBrain.py) for the terminology
# selector. The codes themselves are standard DICOM/SNOMED CT and go into DICOM SEG as they are.
TERMINOLOGY_FILE = RESOURCES_DIR / "Terminologies" / "SegmentationCategoryTypeModifier-UADBrain.term.json"
TERMINOLOGY_CONTEXT = "Segmentation category and type - UADBrain"
REGION_CONTEXT = "Anatomic codes - DICOM master list"  # shipped with Slicer
# Slicer's serialized terminology entry: 7 '~'-separated fields, codes as scheme^value^meaning; the
# codes are the engine's, which its DICOM SEG writer (uadbrain detect --dicom-seg) uses too
TERMINOLOGY_ENTRY = "~".join((
    TERMINOLOGY_CONTEXT,
    "^".join(SEGMENT_CATEGORY),
    "^".join(SEGMENT_TYPE),
    "^^",  # type modifier
    REGION_CONTEXT,
    "^".join(SEGMENT_REGION),
    "^^",  # region modifier
))


def ensure_converter_rules() -> None:
    """Register the standard segmentation representation converters when none are registered.

    Slicer's Segmentations module does this at application startup; in plain-Python MRML
    (slicer-core, the web app) nobody does, and binary labelmaps cannot be created without them.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                 slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule):
        factory.RegisterConverterRule(rule())


def create_segmentation_node(scene, name: str, reference_node, segment_name: str):
    """A segmentation node with one empty lesion segment on the reference volume's geometry."""
    ensure_converter_rules()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    segmentation = node.GetSegmentation()
    segmentation.AddEmptySegment(SEGMENT_ID, segment_name, list(SEGMENT_COLOR))
    segment = segmentation.GetSegment(SEGMENT_ID)
    segment.SetTag(segment.GetTerminologyEntryTagName(), TERMINOLOGY_ENTRY)  # every Slicer 5 has the tag API
    display = node.GetDisplayNode()
    display.SetOpacity2DFill(0.15)
    display.SetOpacity2DOutline(1.0)
    return node


def set_segment_mask(segmentation_node, mask: np.ndarray, reference_node, box=None) -> None:
    """Replace the segment's voxels by ``mask`` ([k, j, i] on the reference grid).

    ``box``: a tuple of slices (k, j, i) outside which ``mask`` is known to be empty; only that
    part is copied, which keeps live re-thresholding of large volumes fast.
    """
    box = box or tuple(slice(0, n) for n in mask.shape)
    cropped = np.ascontiguousarray(mask[box], dtype=np.uint8)
    start = reference_node.GetImageData().GetExtent()[::2]
    k, j, i = box
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetImageToWorldMatrix(array_to_matrix(ijk_to_ras(reference_node, world=False)))
    labelmap.SetExtent(start[0] + i.start, start[0] + i.stop - 1, start[1] + j.start, start[1] + j.stop - 1,
                       start[2] + k.start, start[2] + k.stop - 1)
    labelmap.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(cropped.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, SEGMENT_ID, logic.MODE_REPLACE,
                                     labelmap.GetExtent())


def segment_mask(segmentation_node, reference_node, segment_id: str = SEGMENT_ID) -> np.ndarray:
    """The segment as a uint8 [k, j, i] array on the reference volume's grid (edits included)."""
    reference_data = reference_node.GetImageData()
    extent = reference_data.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    mask = np.zeros(shape, np.uint8)
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    if labelmap.GetPointData().GetScalars() is None or labelmap.IsEmpty():
        return mask
    geometry = slicer.vtkOrientedImageData()
    geometry.SetImageToWorldMatrix(array_to_matrix(ijk_to_ras(reference_node, world=False)))
    geometry.SetExtent(extent)
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, geometry, resampled, False, True):
        raise RuntimeError(f"could not resample segment '{segment_id}' onto the reference grid")
    values = array_view(resampled)
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return (values == label_value).astype(np.uint8)
