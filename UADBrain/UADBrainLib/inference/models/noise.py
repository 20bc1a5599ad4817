"""Smooth multi-scale noise: what the DAE learns to remove (training) and what the partial-noising
diffusion model adds before restoring a slice (training and inference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coarse_noise(shape: tuple[int, int, int, int], std_range=(0.5, 2.0), resolutions=(8, 16, 32),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Smooth multi-scale noise ``[B, 1, H, W]``: low-resolution Gaussian fields, upsampled, summed.

    Each sample draws one total standard deviation (normalised units) and splits it randomly
    over the scales, so the network learns to undo blobs of many sizes and strengths.
    """
    batch, _, height, width = shape
    weights = torch.rand(batch, len(resolutions), generator=generator) + 0.1
    weights = weights / weights.norm(dim=1, keepdim=True)
    std = std_range[0] + (std_range[1] - std_range[0]) * torch.rand(batch, generator=generator)
    noise = torch.zeros(batch, 1, height, width)
    for index, resolution in enumerate(resolutions):
        low = torch.randn(batch, 1, resolution, resolution, generator=generator)
        field = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
        noise += field * (weights[:, index] * std)[:, None, None, None]
    return noise
