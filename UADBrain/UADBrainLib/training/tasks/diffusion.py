"""The diffusion families: partial noising (AnoDDPM), patched (pDDPM) and conditioned (cDDPM)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .reconstruction import DenoisingTask
from .references import BEHRENDT_2023, BEHRENDT_2024, BEHRENDT_2025, SONG_2021, SYNTHSEG, WYATT_2022


class DiffusionTask(DenoisingTask):
    """Wyatt et al. 2022 (AnoDDPM): predict the clean slice from one noised to a random step of
    the partial diffusion the model is run with. 2D only: neighbouring slices given as context
    would show the network the lesion the noise hides."""

    family = "diffusion"
    extra_input_channels = 1  # the diffusion step

    def __init__(self, config):
        super().__init__(dataclasses.replace(config, context=0))

    def shared_head(self) -> str:
        from ...inference.models.diffusion import HEAD

        return HEAD

    def sampler(self) -> dict:
        from ...inference.models.diffusion import DEFAULT_SAMPLER

        return {**DEFAULT_SAMPLER, "start": self.config.diffusion_start, "steps": self.config.diffusion_steps}

    def scoring(self):
        from ...inference.models.diffusion import ensemble_for

        ensemble = ensemble_for(self.config.score, self.config.diffusion_start, self.config.noise_levels,
                                self.config.ensemble_seeds)
        return {**super().scoring(), "sampler": self.sampler(), **({"ensemble": ensemble} if ensemble else {})}

    def title(self):
        return f"Partial-noising diffusion model ({self.contrast_names()})"

    def description(self):
        sampler = self.sampler()
        return (f"A 2D U-Net trained on synthetic healthy brains as a diffusion model; each slice is noised "
                f"with smooth multi-scale noise to step {sampler['start']} of {sampler['timesteps']} and "
                f"restored in {sampler['steps']} DDIM steps; anomalies are what it cannot restore (the "
                "residual in the lesion direction).")

    def references(self):
        return [WYATT_2022, SONG_2021, BEHRENDT_2024, SYNTHSEG]

    def loss(self, networks, volumes, rng, device):
        import torch

        from ...inference.models.diffusion import cumulative_alphas, network_input, noised, unit_noise

        sampler = self.sampler()
        batch, images, masks = self.batch_tensors(volumes, rng)
        steps = torch.from_numpy(rng.integers(1, sampler["start"] + 1, size=images.shape[0]))
        x_t = noised(images, steps, unit_noise(tuple(images.shape), sampler), cumulative_alphas(sampler))
        region, weights = self.noised_region(masks, rng), masks
        if region is not None:  # the rest of the slice stays clean (the context) and is not scored
            x_t, weights = torch.where(region > 0, x_t, images), masks * region
        condition = images if sampler.get("conditioned") else None
        inputs = network_input(x_t, masks, steps, sampler["timesteps"], condition).to(device)
        return self.reconstruction_loss(networks, batch.contrasts, inputs, images.to(device), weights.to(device))

    def noised_region(self, masks, rng):
        """Where the slices are noised (1) and scored: everywhere (None), here."""
        return None

    def reconstructions(self, network):
        from ...inference.models.diffusion import ensemble_samplers, seeded_reconstruction

        return [seeded_reconstruction(network, sampler, self.config.spacing)
                for sampler in ensemble_samplers(self.scoring())]


class ConditionedDiffusionTask(DiffusionTask):
    """Behrendt et al. 2025 (cDDPM): the diffusion model's denoiser also sees the original slice,
    through a condition encoder's few numbers, to keep the subject's intensity profile."""

    extra_input_channels = 2  # the diffusion step and the original slice

    def sampler(self) -> dict:
        return {**super().sampler(), "conditioned": True}

    def network_spec(self) -> dict:
        from ...inference.models.networks import CONDITIONED_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "strides": [2] * (len(self.config.channels) - 1),
                "condition_size": self.config.condition_size}
        return network_spec(self.heads(), self.config.context, args, architecture=CONDITIONED_ARCHITECTURE,
                            extra_channels=self.extra_input_channels)

    def title(self):
        return f"Conditioned diffusion model ({self.contrast_names()})"

    def description(self):
        return (super().description().replace("A 2D U-Net", "A 2D U-Net conditioned on "
                f"{self.config.condition_size} numbers encoding the original slice,", 1))

    def references(self):
        return [BEHRENDT_2025, WYATT_2022, SONG_2021, SYNTHSEG]


class PatchedDiffusionTask(DiffusionTask):
    """Behrendt et al. 2023 (pDDPM): noise one square patch of the slice and restore it from the
    clean rest; at inference every patch of the slice in turn, the restorations stitched."""

    def sampler(self) -> dict:
        return {**super().sampler(), "patch_mm": self.config.patch_mm}

    def title(self):
        return f"Patched diffusion model ({self.contrast_names()})"

    def description(self):
        sampler = self.sampler()
        return (f"A 2D U-Net trained on synthetic healthy brains as a diffusion model that restores one "
                f"{sampler['patch_mm']:g}-mm patch of a slice, noised with smooth multi-scale noise to step "
                f"{sampler['start']} of {sampler['timesteps']}, from the clean rest of the slice; at inference "
                f"each patch in turn is restored in {sampler['steps']} DDIM steps and the patches stitched; "
                "anomalies are what it cannot restore.")

    def references(self):
        return [BEHRENDT_2023, WYATT_2022, SONG_2021, SYNTHSEG]

    def noised_region(self, masks, rng):
        """One square patch per slice, centred on a random brain pixel of it."""
        import torch

        patch = max(1, int(round(self.config.patch_mm / self.config.spacing)))
        region = torch.zeros_like(masks)
        height, width = masks.shape[-2:]
        for index in range(masks.shape[0]):
            brain = np.argwhere(masks[index, 0].numpy() > 0)
            centre = brain[rng.integers(len(brain))] if len(brain) else (height // 2, width // 2)
            top, left = (int(np.clip(c - patch // 2, 0, max(n - patch, 0))) for c, n in zip(centre, (height, width)))
            region[index, :, top:top + patch, left:left + patch] = 1.0
        return region
