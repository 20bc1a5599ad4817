"""How the outputs look: the anomaly map as a hot overlay above the threshold, views, lesion jumps."""

from __future__ import annotations

import numpy as np
import slicer

COLOR_TABLE_NAME = "UADBrain anomaly"
COLOR_TABLE_ATTRIBUTE = "UADBrain.ColorTable"
DISPLAY_MAX_ATTRIBUTE = "UADBrain.DisplayMaximum"
OVERLAY_OPACITY = 0.6
NO_UPPER_LIMIT = 1e30
# dark red → red → orange → yellow → near white, like a "hot" map; 256 entries
_HOT_STOPS = np.array([[0.35, 0.0, 0.0], [0.85, 0.0, 0.0], [1.0, 0.45, 0.0], [1.0, 0.9, 0.1], [1.0, 1.0, 0.85]])


def anomaly_color_node(scene):
    """The module's colour table, created once per scene."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetAttribute(COLOR_TABLE_ATTRIBUTE):
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(COLOR_TABLE_NAME)
    node.SetAttribute(COLOR_TABLE_ATTRIBUTE, "1")
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    positions = np.linspace(0.0, 1.0, len(_HOT_STOPS))
    for index, fraction in enumerate(np.linspace(0.0, 1.0, 256)):
        red, green, blue = (np.interp(fraction, positions, _HOT_STOPS[:, channel]) for channel in range(3))
        node.SetColor(index, f"{fraction:.3f}", red, green, blue, 1.0)
    node.SetDescription("UADBrain anomaly score: dark red at the threshold, white at the top of the map")
    scene.AddNode(node)
    return node


def display_maximum(result) -> float:
    """Top of the colour window: the 99.9th percentile of brain scores (robust to a few outliers)."""
    scores = result.postprocessor.brain_scores(result.median)
    top = float(np.percentile(scores, 99.9)) if scores.size else 1.0
    return max(top, result.threshold + 1e-3)


def threshold_range(result) -> tuple[float, float]:
    """A useful span for a threshold slider: the brain's median score to above the colour window."""
    scores = result.postprocessor.brain_scores(result.median, result.erosion_mm)
    low = float(np.median(scores)) if scores.size else 0.0
    high = max(display_maximum(result) * 1.25, result.threshold)
    return min(low, result.threshold), high


def style_anomaly_map(node, result) -> None:
    """Hot colours from the threshold upwards; voxels below the threshold are transparent."""
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(anomaly_color_node(node.GetScene()).GetID())
    node.SetAttribute(DISPLAY_MAX_ATTRIBUTE, repr(display_maximum(result)))
    update_anomaly_window(node, result.threshold)


def update_anomaly_window(node, threshold: float) -> None:
    display = node.GetDisplayNode()
    top = max(float(node.GetAttribute(DISPLAY_MAX_ATTRIBUTE)), threshold + 1e-3)
    was_modifying = display.StartModify()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(threshold, top)
    display.AutoThresholdOff()
    display.ApplyThresholdOn()
    display.SetThreshold(threshold, NO_UPPER_LIMIT)
    display.EndModify(was_modifying)


def show_in_slice_views(scene, background_node, foreground_node) -> None:
    """Input as background, anomaly map as foreground overlay, in every slice view of the scene."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(background_node.GetID())
        composite.SetForegroundVolumeID(foreground_node.GetID())
        composite.SetForegroundOpacity(OVERLAY_OPACITY)


def jump_slices_to(scene, position_ras) -> None:
    """Centre every slice view on a point (world RAS), as clicking a markup does."""
    r, a, s = (float(value) for value in position_ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
