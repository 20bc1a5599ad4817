"""Where output nodes live: beside their input in the subject hierarchy, tagged as this module's.

Every output node carries two attributes: its role and the ID of the input volume it was computed
from. They let a re-run replace exactly this module's previous outputs for that input.
"""

from __future__ import annotations

import slicer

ROLE_ATTRIBUTE = "UADBrain.Role"
INPUT_ATTRIBUTE = "UADBrain.InputNodeID"
ROLES = ("anomalyMap", "segmentation", "lesionTable", "reconstruction")


def tag_output(node, role: str, input_node) -> None:
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.SetAttribute(INPUT_ATTRIBUTE, input_node.GetID())


def outputs_of(scene, input_node) -> list:
    """This module's output nodes computed from ``input_node``."""
    found = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(ROLE_ATTRIBUTE) in ROLES and node.GetAttribute(INPUT_ATTRIBUTE) == input_node.GetID():
            found.append(node)
    return found


def place_beside(node, input_node) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study or folder) as ``input_node``.

    Desktop Slicer creates hierarchy items for new nodes itself; a plain MRML scene does not, so
    missing items are created here.
    """
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    invalid = hierarchy.GetInvalidItemID()
    input_item = hierarchy.GetItemByDataNode(input_node)
    parent = hierarchy.GetItemParent(input_item) if input_item != invalid else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(node)
    if item == invalid:
        hierarchy.CreateItem(parent, node)
    else:
        hierarchy.SetItemParent(item, parent)
