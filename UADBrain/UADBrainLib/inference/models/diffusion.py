"""Diffusion model with partial noising (AnoDDPM, Wyatt et al. 2022).

A 2D U-Net learns to predict the clean slice ``x0`` from a noised one ``x_t`` at any step ``t`` of
a forward diffusion process; the step enters as one constant input channel (``t / timesteps``),
which is enough for the few hundred steps used here. At inference a slice is noised only up to
``start`` (not to pure noise) and walked back to ``t = 0`` in a few deterministic DDIM steps
(Song et al. 2021): healthy tissue comes back, an anomaly the partial noise has hidden does not.
The noise is smooth and multi-scale (``noise.coarse_noise``, the role simplex noise plays in
AnoDDPM), because white noise at these steps hides small details only, not lesions. Each
contrast's slices draw their noise, batch by batch, from one generator seeded by the sampler's
``seed``, so a scan always gives the same map.

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


def network_input(x_t: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, timesteps: int) -> torch.Tensor:
    """``[x_t, brain mask, t / timesteps]`` as the network's three input channels."""
    step = (t.float() / timesteps).view(-1, 1, 1, 1).to(x_t.device).expand_as(x_t)
    return torch.cat([x_t * mask, mask, step], dim=1)


def reconstruct(network, inputs: torch.Tensor, sampler: dict, generator: torch.Generator) -> torch.Tensor:
    """Partial noising to ``start``, then ``steps`` deterministic DDIM steps back to ``x0``.

    ``inputs`` are slice-network inputs ``[n, 2, H, W]`` (the slice, its brain mask).
    """
    x0, mask = inputs[:, :1], inputs[:, 1:2]
    alphas = cumulative_alphas(sampler).to(x0.device)
    schedule = np.linspace(sampler["start"], 0, sampler["steps"] + 1).round().astype(int)
    noise = unit_noise(tuple(x0.shape), sampler, generator).to(x0.device)
    count = x0.shape[0]
    x = noised(x0, torch.full((count,), int(schedule[0])), noise, alphas) * mask
    estimate = x0
    for t, t_next in zip(schedule[:-1], schedule[1:]):
        steps = torch.full((count,), int(t))
        estimate = network(network_input(x, mask, steps, sampler["timesteps"])) * mask
        alpha, alpha_next = alphas[t], alphas[t_next]
        predicted_noise = (x - alpha.sqrt() * estimate) / (1.0 - alpha).sqrt()
        x = (alpha_next.sqrt() * estimate + (1.0 - alpha_next).sqrt() * predicted_noise) * mask
    return estimate


def seeded_reconstruction(network, sampler: dict):
    """``inputs -> reconstruction`` for one volume's slice batches, with its own seeded noise."""
    generator = torch.Generator().manual_seed(int(sampler["seed"]))
    return lambda inputs: reconstruct(network, inputs, sampler, generator)


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
        return [seeded_reconstruction(self.networks[head], sampler) for sampler in ensemble_samplers(self.scoring)]
