"""Stage 3 of a run, on the main thread: the engine's Result → new nodes in the scene."""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk

from UADBrainLib.errors import InputError

from .display import style_anomaly_map
from .hierarchy import outputs_of, place_beside, tag_output
from .lesiontable import create_table_node, fill_table
from .segmentation import create_segmentation_node, set_segment_mask
from .volumes import set_volume_node_array


@dataclass
class Outputs:
    """The nodes one run created, and the engine Result they show."""

    inputNode: object  # the reference input volume (outputs are on its grid)
    anomalyMapNode: object
    segmentationNode: object
    tableNode: object
    result: object  # UADBrainLib.inference.pipeline.Result, replaced on each rethreshold
    reconstructionNodes: dict = field(default_factory=dict)  # contrast → pseudo-healthy volume


def update_segmentation(outputs: Outputs) -> None:
    """Copy the Result's lesions into the segment; only the brain's bounding box can hold any."""
    result = outputs.result
    set_segment_mask(outputs.segmentationNode, result.labels_array > 0, outputs.inputNode,
                     box=result.postprocessor.crop)


def remove_with_dependents(scene, node) -> None:
    """Remove a node together with its display and storage nodes."""
    dependents = []
    if node.IsA("vtkMRMLDisplayableNode"):
        dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)


def show_anomaly_map(outputs: Outputs) -> None:
    """The anomaly map node holds the result's map (the one the threshold acts on) and its colours."""
    set_volume_node_array(outputs.anomalyMapNode, sitk.GetArrayViewFromImage(outputs.result.anomaly_map),
                          outputs.inputNode)
    style_anomaly_map(outputs.anomalyMapNode, outputs.result)


def create_outputs(scene, reference, result, contrast_nodes: dict, replace_existing: bool = False) -> Outputs:
    """New output nodes for ``result`` beside ``reference``; all or nothing.

    ``contrast_nodes``: contrast → input volume node, to name pseudo-healthy reconstructions.
    With ``replace_existing``, this module's earlier outputs for ``reference`` are removed once
    the new ones exist; outputs computed from other inputs are left alone.
    """
    extent = reference.GetImageData().GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    if result.labels_array.shape != shape:
        raise InputError(f"the input '{reference.GetName()}' changed size while it was analysed — run again.")
    previous = outputs_of(scene, reference) if replace_existing else []
    name = reference.GetName()
    created = []

    def new_node(class_name: str, base_name: str, role: str):
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(base_name))
        created.append(node)
        tag_output(node, role, reference)
        return node

    try:
        anomaly_map = new_node("vtkMRMLScalarVolumeNode", f"{name} anomaly map", "anomalyMap")
        set_volume_node_array(anomaly_map, sitk.GetArrayViewFromImage(result.anomaly_map), reference)
        style_anomaly_map(anomaly_map, result)

        reconstructions = {}
        for contrast, image in result.reconstructions.items():
            source = contrast_nodes.get(contrast, reference)
            node = new_node("vtkMRMLScalarVolumeNode", f"{source.GetName()} pseudo-healthy", "reconstruction")
            set_volume_node_array(node, sitk.GetArrayViewFromImage(image), reference)
            node.CreateDefaultDisplayNodes()
            reconstructions[contrast] = node

        segmentation = create_segmentation_node(scene, scene.GenerateUniqueName(f"{name} anomalies"),
                                                reference, segment_name=f"{name} anomaly")
        created.append(segmentation)
        tag_output(segmentation, "segmentation", reference)

        table = create_table_node(scene, scene.GenerateUniqueName(f"{name} lesions"))
        created.append(table)
        tag_output(table, "lesionTable", reference)

        outputs = Outputs(inputNode=reference, anomalyMapNode=anomaly_map, segmentationNode=segmentation,
                          tableNode=table, result=result, reconstructionNodes=reconstructions)
        update_segmentation(outputs)
        fill_table(table, result.lesions)
        for node in created:
            place_beside(node, reference)
    except BaseException:
        for node in reversed(created):
            remove_with_dependents(scene, node)
        raise
    for node in previous:
        remove_with_dependents(scene, node)
    return outputs
