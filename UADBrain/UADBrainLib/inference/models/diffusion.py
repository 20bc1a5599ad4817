"""Diffusion models with partial noising: AnoDDPM (Wyatt et al. 2022), its patched variant
(pDDPM, Behrendt et al. 2023) and its conditioned variant (cDDPM, Behrendt et al. 2025).

A 2D U-Net learns to predict the clean slice ``x0`` from a noised one ``x_t`` at any step ``t`` of
a forward diffusion process; the step enters as one constant input channel (``t / timesteps``),
which is enough for the few hundred steps used here. At inference a slice is noised only up to
``start`` (not to pure noise) and walked back to ``t = 0`` in a few deterministic DDIM steps
(Song et al. 2021): healthy tissue comes back, an anomaly the partial noise has hidden does not.
The noise is smooth and multi-scale (``noise.coarse_noise``, the role simplex noise plays in
AnoDDPM), because white noise at these steps hides small details only, not lesions. Each
contrast's slices draw their noise, 16 slices at a time, from one generator seeded by the sampler's
``seed``, so a scan always gives the same map, whatever the batches it ran in.

With ``patch_mm`` in the sampler (pDDPM), only one square patch of the slice is noised and
restored at a time, the rest of the slice the clean context; the patches tile the slice and their
restorations are stitched, at the number of patches times the cost.

With ``conditioned`` in the sampler (cDDPM), the network also sees the original slice, through a
vector of a few numbers (``networks.ConditionedSliceUNet``), so that a restoration keeps the
subject's own intensity profile.

Scored like the denoising autoencoder: the residual ``image - reconstruction`` in the lesion
direction, or another score of ``scores.py``. The cost is ``steps`` network passes per slice
instead of one. With an ``ensemble`` in the scoring block (``noise_levels``, ``seeds`` per level)
every slice is reconstructed once per level and seed — what the ensembled SSIM and the
Mahalanobis score compare the image with — at that many times the cost.
"""

from __future__ import annotations

import numpy as np
import torch

from .dae import DenoisingAutoencoder
from .noise import coarse_noise

HEAD = "diffusion"
DEFAULT_SAMPLER = {"timesteps": 1000, "beta": [1e-4, 0.02], "start": 250, "steps": 10,
                   "noise_resolutions": [8, 16, 32], "seed": 0}
ENSEMBLE_FRACTIONS = (0.5, 0.75, 1.0)  # default noise levels of an ensemble: these fractions of the trained start
NOISE_CHUNK = 16  # slices whose noise is drawn at once: the batch the bundled calibrations were computed with


def cumulative_alphas(sampler: dict) -> torch.Tensor:
    """``ᾱ_t`` for ``t = 0 … timesteps`` of the linear beta schedule (``ᾱ_0 = 1``: no noise)."""
    betas = torch.linspace(*sampler["beta"], sampler["timesteps"], dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)]).float()


def unit_noise(shape, sampler: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """Smooth multi-scale noise with unit standard deviation, ``[B, 1, H, W]``."""
    return coarse_noise(shape, std_range=(1.0, 1.0), resolutions=tuple(sampler["noise_resolutions"]),
                        generator=generator)


def noised(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """The forward process ``x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise`` (``t`` per sample)."""
    alpha = alphas.to(x0.device)[t].view(-1, 1, 1, 1)
    return alpha.sqrt() * x0 + (1.0 - alpha).sqrt() * noise


def network_input(x_t: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, timesteps: int,
                  condition: torch.Tensor | None = None) -> torch.Tensor:
    """``[x_t, brain mask, t / timesteps]`` as the network's three input channels, and the
    original slice as a fourth for a conditioned model (cDDPM)."""
    step = (t.float() / timesteps).view(-1, 1, 1, 1).to(x_t.device).expand_as(x_t)
    return torch.cat([x_t * mask, mask, step, *([] if condition is None else [condition * mask])], dim=1)


def restore(network, x0: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, sampler: dict,
            region: torch.Tensor | None = None) -> torch.Tensor:
    """Partial noising to ``start``, then ``steps`` deterministic DDIM steps back to ``x0``.

    With ``region`` (1 inside, 0 outside) only the region is noised and restored; the rest of the
    slice stays the clean image at every step, the context the network restores the region from.
    """
    alphas = cumulative_alphas(sampler).to(x0.device)
    schedule = np.linspace(sampler["start"], 0, sampler["steps"] + 1).round().astype(int)
    count = x0.shape[0]
    keep = (lambda x: x * mask) if region is None else (lambda x: torch.where(region > 0, x, x0) * mask)
    x = keep(noised(x0, torch.full((count,), int(schedule[0])), noise, alphas))
    estimate = x0
    for t, t_next in zip(schedule[:-1], schedule[1:]):
        steps = torch.full((count,), int(t))
        condition = x0 if sampler.get("conditioned") else None
        estimate = network(network_input(x, mask, steps, sampler["timesteps"], condition)) * mask
        alpha, alpha_next = alphas[t], alphas[t_next]
        predicted_noise = (x - alpha.sqrt() * estimate) / (1.0 - alpha).sqrt()
        x = keep(alpha_next.sqrt() * estimate + (1.0 - alpha_next).sqrt() * predicted_noise)
    return estimate


def patch_tiles(size: tuple[int, int], patch: int) -> list[tuple[slice, slice]]:
    """Square windows of ``patch`` pixels tiling a slice (the last row and column flush with its edge)."""
    starts = [sorted({*range(0, max(n - patch, 0) + 1, patch), max(n - patch, 0)}) for n in size]
    return [(slice(r, r + patch), slice(c, c + patch)) for r in starts[0] for c in starts[1]]


def reconstruct(network, inputs: torch.Tensor, sampler: dict, noise: torch.Tensor) -> torch.Tensor:
    """The restored slices of slice-network inputs ``[n, 2, H, W]`` (the slice, its brain mask),
    from partial noising with ``noise`` ``[n, 1, H, W]``: whole (AnoDDPM), or with ``patch_px`` one
    patch at a time, the rest of the slice as context, the restored patches stitched (pDDPM,
    Behrendt et al. 2023)."""
    x0, mask = inputs[:, :1], inputs[:, 1:2]
    patch = int(sampler.get("patch_px") or 0)
    if not patch:
        return restore(network, x0, mask, noise, sampler)
    stitched = x0 * mask
    for rows, columns in patch_tiles(tuple(x0.shape[-2:]), patch):
        region = torch.zeros_like(mask)
        region[..., rows, columns] = 1.0
        if (region * mask).any():
            stitched = torch.where(region > 0, restore(network, x0, mask, noise, sampler, region), stitched)
    return stitched


def seeded_reconstruction(network, sampler: dict, spacing_mm: float | None = None):
    """``inputs -> reconstruction`` for one volume's slice batches, with its own seeded noise
    (``spacing_mm``, the model grid's: what turns a patch's millimetres into pixels)."""
    if sampler.get("patch_mm"):
        sampler = {**sampler, "patch_px": max(1, int(round(sampler["patch_mm"] / spacing_mm)))}
    return SeededReconstruction(network, sampler)


class SeededReconstruction:
    """A diffusion model's slice forward with its volume's seeded noise.

    The noise of a volume's slices is drawn in chunks of :data:`NOISE_CHUNK` slices from a
    generator seeded by the sampler's ``seed`` — what each batch drew when every batch held that
    many slices, so the maps (and the calibrations computed from them) stay the same — and handed
    out by slice position, whatever batches ``predict_volume`` runs: a batch run again with fewer
    slices after an out-of-memory error (``checkpoint``/``restore``) gets the same noise.
    """

    def __init__(self, network, sampler: dict):
        self.network, self.sampler = network, sampler
        self.start_volume(None)

    def start_volume(self, slices: int | None) -> None:
        """A new volume of ``slices`` slices (None: unknown; every chunk full)."""
        self.slices, self.position, self.drawn = slices, 0, []
        self.generator = torch.Generator().manual_seed(int(self.sampler["seed"]))

    def checkpoint(self) -> int:
        return self.position

    def restore(self, position: int) -> None:
        self.position = position

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        count = inputs.shape[0]
        noise = self._noise(self.position, count, tuple(inputs.shape[-2:]))
        self.position += count
        return reconstruct(self.network, inputs, self.sampler, noise.to(inputs.device))

    def _noise(self, start: int, count: int, size: tuple[int, int]) -> torch.Tensor:
        drawn = sum(chunk.shape[0] for chunk in self.drawn)
        while drawn < start + count:
            left = NOISE_CHUNK if self.slices is None or drawn >= self.slices else self.slices - drawn
            self.drawn.append(unit_noise((min(NOISE_CHUNK, left), 1, *size), self.sampler, self.generator))
            drawn += self.drawn[-1].shape[0]
        return torch.cat(self.drawn)[start:start + count]


def ensemble_for(score: str, start: int, noise_levels=(), seeds: int = 2) -> dict | None:
    """The scoring block's ``ensemble``: the given noise levels, else for an ensemble score
    :data:`ENSEMBLE_FRACTIONS` of the trained ``start``; None for one reconstruction."""
    from .scores import ENSEMBLE_SCORES

    if not noise_levels and score not in ENSEMBLE_SCORES:
        return None
    levels = noise_levels or [int(round(start * fraction)) for fraction in ENSEMBLE_FRACTIONS]
    return {"noise_levels": [int(level) for level in levels], "seeds": int(seeds)}


def ensemble_samplers(scoring: dict) -> list[dict]:
    """The sampler of each reconstruction the scoring asks for: one, or one per noise level and seed."""
    sampler = {**DEFAULT_SAMPLER, **scoring.get("sampler", {})}
    ensemble = scoring.get("ensemble")
    if not ensemble:
        return [sampler]
    return [{**sampler, "start": int(level), "seed": int(sampler["seed"]) + seed}
            for level in ensemble["noise_levels"] for seed in range(int(ensemble.get("seeds", 1)))]


class PartialDiffusionModel(DenoisingAutoencoder):
    shared_head = HEAD

    def _forwards_for(self, head: str):
        spacing = float(np.mean(self.bundle.spacing_mm))  # the model grid is isotropic
        return [seeded_reconstruction(self.networks[head], sampler, spacing)
                for sampler in ensemble_samplers(self.scoring)]
