"""Stage 1 of a run, on the main thread: MRML nodes → the engine's inputs (copies, never views)."""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk

from UADBrainLib.bundle import CONTRASTS
from UADBrainLib.errors import InputError
from UADBrainLib.inference.options import DetectOptions

from .volumes import image_from_volume_node, mask_image_from_node


@dataclass
class EngineRequest:
    """Everything the engine needs, detached from the scene (safe to hand to another thread)."""

    images: dict[str, sitk.Image]  # contrast → image, in the engine's contrast order
    mask: sitk.Image | None
    model: str | None
    options: DetectOptions
    input_node_ids: dict[str, str] = field(default_factory=dict)  # contrast → volume node ID

    @property
    def reference_contrast(self) -> str:
        return next(iter(self.images))


def make_request(input_volumes: dict, model_name=None, mask_node=None, options: DetectOptions | None = None) -> EngineRequest:
    """``options``: every run parameter (None: the engine's defaults, the model's post-processing)."""
    volumes = {contrast: node for contrast, node in (input_volumes or {}).items() if node is not None}
    if not volumes:
        raise InputError(f"no input volume — select at least one of: {', '.join(CONTRASTS)}.")
    unknown = [contrast for contrast in volumes if contrast not in CONTRASTS]
    if unknown:
        raise InputError(f"unknown contrast '{unknown[0]}' — use {', '.join(CONTRASTS)}.")
    ordered = [contrast for contrast in CONTRASTS if contrast in volumes]
    images = {contrast: image_from_volume_node(volumes[contrast], contrast) for contrast in ordered}
    mask = mask_image_from_node(mask_node) if mask_node is not None else None
    return EngineRequest(images=images, mask=mask, model=model_name, options=options or DetectOptions(),
                         input_node_ids={contrast: volumes[contrast].GetID() for contrast in ordered})
