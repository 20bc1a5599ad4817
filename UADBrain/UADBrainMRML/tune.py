"""The Tune section's state, without Qt: shared by the Slicer panel and the web app.

The threshold slider's span, step and decimals, the one-line readout, and removing a run's nodes
with everything that depends on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .display import threshold_range
from .outputs import Outputs, remove_with_dependents

SLIDER_STEPS = 200


@dataclass(frozen=True)
class Slider:
    minimum: float
    maximum: float
    step: float
    decimals: int  # enough for one step: scores may span less than 1


def slider_for(result) -> Slider:
    """The threshold slider for a result: the brain's median score to above the colour window,
    always including the result's own threshold."""
    low, high = threshold_range(result)
    low, high = min(low, result.threshold), max(high, result.threshold)
    step = max(high - low, 1e-6) / SLIDER_STEPS
    return Slider(low, high, step, max(2, math.ceil(-math.log10(step)) + 1))


def readout(result) -> str:
    return (f"{result.flagged_volume_ml:.2f} mL flagged in {result.lesion_count} lesion(s); "
            f"threshold {result.threshold:.3g} ({result.threshold_method}).")


def remove_outputs(scene, outputs: Outputs) -> None:
    """Remove every node of a run (map, segmentation, table, reconstructions) with its display and
    storage nodes; nodes already gone are skipped."""
    nodes = [outputs.anomalyMapNode, outputs.segmentationNode, outputs.tableNode,
             *outputs.reconstructionNodes.values()]
    for node in nodes:
        if node is not None and node.GetScene() is scene:
            remove_with_dependents(scene, node)

