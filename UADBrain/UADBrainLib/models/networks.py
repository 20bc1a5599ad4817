"""Slice-wise (2D / 2.5D) U-Nets shared by the learned model families.

A network sees one axial slice of the canonical grid (``array[k]``, rows P, columns L) with
``context`` neighbouring slices on each side as extra channels, plus the brain mask of the
centre slice. Inputs are the normalised images (``preprocessing.normalise``) clipped to
``±CLIP`` and set to 0 outside the brain, identically in training and at inference.

A bundle's ``network`` block names the architecture and its arguments, the context and the
heads: one U-Net per head (e.g. one per contrast for the denoising autoencoder, one shared
head for the segmenter), stored in one ``state_dict`` with keys ``<head>.<parameter>``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

CLIP = 10.0  # normalised units (robust SD); beyond this, intensities carry no more information
PAD_MULTIPLE = 16  # 2 ** number of down-sampling steps of the default U-Net
ARCHITECTURE = "monai.UNet-2d"
DEFAULT_UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}


class SliceUNet(nn.Module):
    """A MONAI 2D U-Net with a learnable output offset (its initial value sets the prior logit)."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 strides=DEFAULT_UNET["strides"], num_res_units: int = DEFAULT_UNET["num_res_units"],
                 output_bias: float = 0.0):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units)
        self.output_bias = nn.Parameter(torch.full((1, out_channels, 1, 1), float(output_bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x) + self.output_bias


def network_spec(heads: Sequence[str], context: int, unet: dict | None = None,
                 output_bias: float = 0.0) -> dict:
    """The ``network`` block of a bundle's metadata."""
    args = {**DEFAULT_UNET, **(unet or {}), "in_channels": 2 * context + 2, "out_channels": 1,
            "output_bias": output_bias}
    return {"architecture": ARCHITECTURE, "args": args, "heads": list(heads), "context": int(context),
            "clip": CLIP, "pad_multiple": PAD_MULTIPLE}


def build_networks(spec: dict) -> nn.ModuleDict:
    if spec.get("architecture") != ARCHITECTURE:
        from ..errors import ModelError

        raise ModelError(f"network architecture '{spec.get('architecture')}' is unknown to this "
                         "version of UADBrain — update UADBrain or retrain the model.")
    return nn.ModuleDict({head: SliceUNet(**spec["args"]) for head in spec["heads"]})


def load_networks(bundle, device: str = "cpu") -> nn.ModuleDict:
    """The bundle's networks with verified weights, on ``device``, in eval mode."""
    return bundle.load_weights_into(build_networks(bundle.metadata["network"]), device)


def prepare(image: np.ndarray, mask: np.ndarray, clip: float = CLIP) -> np.ndarray:
    """Network input intensities: clipped, 0 outside the brain."""
    return np.where(mask, np.clip(image, -clip, clip), 0.0).astype(np.float32)


def context_indices(centres: np.ndarray, context: int, depth: int) -> np.ndarray:
    """Slice indices ``centre - context … centre + context`` per centre, clamped to the volume."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(centres)[:, None] + offsets[None, :], 0, depth - 1)


def slice_inputs(prepared: np.ndarray, mask: np.ndarray, centres: np.ndarray, context: int) -> np.ndarray:
    """Network inputs ``[n, 2·context + 2, P, L]``: neighbouring slices, then the centre's mask."""
    indices = context_indices(centres, context, prepared.shape[0])
    stack = prepared[indices]  # [n, 2c+1, P, L]
    return np.concatenate([stack, mask[centres][:, None].astype(np.float32)], axis=1)


def brain_box(mask: np.ndarray, multiple: int = PAD_MULTIPLE, margin: int = 2):
    """Slices of the brain's bounding box in S, and in P and L padded to ``multiple``.

    Returns ``(s_slice, p_slice, l_slice, pad)``: the in-plane window may extend past the array,
    ``pad`` gives the zero padding ((before, after) for P and L) that makes it fit.
    """
    present = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    s_slice = slice(int(present[0][0]), int(present[0][-1]) + 1)
    windows, pads = [], []
    for axis in (1, 2):
        lo, hi = int(present[axis][0]) - margin, int(present[axis][-1]) + 1 + margin
        size = -(-(hi - lo) // multiple) * multiple
        lo -= (size - (hi - lo)) // 2
        hi = lo + size
        before, after = max(0, -lo), max(0, hi - mask.shape[axis])
        windows.append(slice(lo + before, hi - after))
        pads.append((before, after))
    return s_slice, windows[0], windows[1], pads


def predict_volume(forward: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                   mask: np.ndarray, context: int, device: str, batch_size: int = 16,
                   progress: Callable[[float], None] | None = None,
                   is_cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """Run a slice network over every brain slice of one prepared volume.

    Returns the network's first output channel on the full ``[S, P, L]`` grid (0 outside the
    brain's bounding box).
    """
    from ..errors import Cancelled

    output = np.zeros(image.shape, np.float32)
    if not mask.any():
        return output
    s_slice, p_slice, l_slice, pads = brain_box(mask)
    crop_image = np.pad(image[:, p_slice, l_slice], [(0, 0), *pads])
    crop_mask = np.pad(mask[:, p_slice, l_slice], [(0, 0), *pads])
    centres = np.arange(s_slice.start, s_slice.stop)
    crop_out = np.zeros(crop_image.shape, np.float32)
    with torch.inference_mode():
        for start in range(0, centres.size, batch_size):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled("cancelled by the user.")
            batch = centres[start:start + batch_size]
            inputs = torch.from_numpy(slice_inputs(crop_image, crop_mask, batch, context)).to(device)
            crop_out[batch] = forward(inputs)[:, 0].float().cpu().numpy()
            if progress:
                progress(min(start + batch_size, centres.size) / centres.size)
    (p0, p1), (l0, l1) = pads
    unpadded = crop_out[:, p0:crop_out.shape[1] - p1, l0:crop_out.shape[2] - l1]
    output[:, p_slice, l_slice] = unpadded
    return output


class SliceNetworkModel:
    """Mixin for models that run a slice network per contrast: loading, batching, progress."""

    batch_size = 16

    def _load(self) -> None:
        self.spec = self.bundle.metadata["network"]
        self.networks = load_networks(self.bundle, self.device)

    def _run_per_contrast(self, head_for: Callable[[str], str], images: dict, brain_mask: np.ndarray,
                          message: str, progress=None, is_cancelled=None) -> dict[str, tuple]:
        """``{contrast: (prepared input, network output)}`` for every given contrast."""
        results = {}
        count = len(images)
        for index, (contrast, image) in enumerate(images.items()):
            prepared = prepare(image, brain_mask, self.spec.get("clip", CLIP))
            report = (lambda f, i=index, c=contrast: progress((i + f) / count, f"{message} {c}")) if progress else None
            output = predict_volume(self.networks[head_for(contrast)], prepared, brain_mask,
                                    self.spec["context"], self.device, self.batch_size,
                                    progress=report, is_cancelled=is_cancelled)
            results[contrast] = (prepared, output)
        return results
