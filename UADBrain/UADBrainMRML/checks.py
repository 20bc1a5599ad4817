"""Early warnings for the panel: what ``process`` would refuse, said before the user clicks Apply."""

from __future__ import annotations

import numpy as np

from UADBrainLib.bundle import find_bundle
from UADBrainLib.errors import UADBrainError
from UADBrainLib.geometry import overlap_fraction
from UADBrainLib.inference.preparation import MIN_OVERLAP

from .volumes import LPS_FROM_RAS, ijk_to_ras


class NodeGrid:
    """The two geometry calls the engine's overlap test needs, answered from a volume node."""

    def __init__(self, node):
        self.matrix = ijk_to_ras(node)
        extent = node.GetImageData().GetExtent()
        self.start = np.array(extent[::2], dtype=float)
        self.size = tuple(extent[2 * axis + 1] - extent[2 * axis] + 1 for axis in range(3))

    def GetSize(self):  # noqa: N802 — SimpleITK's spelling
        return self.size

    def TransformContinuousIndexToPhysicalPoint(self, index):  # noqa: N802
        ras = self.matrix @ np.array([*(self.start + np.asarray(index, dtype=float)), 1.0])
        return tuple(LPS_FROM_RAS @ ras[:3])


def input_problems(input_volumes: dict, model_name=None, mask_node=None) -> list[str]:
    """Problems that would stop a run, as one-line messages (empty when the inputs look usable)."""
    volumes = {contrast: node for contrast, node in (input_volumes or {}).items() if node is not None}
    if not volumes:
        return ["Select at least one input volume."]
    empty = [node.GetName() for node in volumes.values() if node.GetImageData() is None]
    if empty:
        return [f"'{empty[0]}' has no voxels — load the image again."]
    problems = []
    try:
        bundle = find_bundle(model_name, None if model_name else list(volumes))
    except UADBrainError as error:
        return [str(error)]
    unused = [contrast for contrast in volumes if contrast not in bundle.contrasts]
    if unused:
        problems.append(f"Model '{bundle.name}' does not use {', '.join(unused).upper()} — clear that "
                        "selector or choose another model.")
    missing = [contrast for contrast in bundle.required_contrasts if contrast not in volumes]
    if missing:
        problems.append(f"Model '{bundle.name}' needs {', '.join(missing).upper()} — select it or choose "
                        "another model.")
    grids = {contrast.upper(): NodeGrid(node) for contrast, node in volumes.items()}
    if mask_node is not None and mask_node.IsA("vtkMRMLVolumeNode") and mask_node.GetImageData() is not None:
        grids["brain mask"] = NodeGrid(mask_node)
    (reference_name, reference), *others = grids.items()
    for name, grid in others:
        fraction = overlap_fraction(reference, grid)
        if fraction < MIN_OVERLAP:
            problems.append(f"{name} and {reference_name} do not overlap in space ({fraction:.0%}) — they "
                            "must be co-registered scans of the same subject; register them first.")
    return problems
