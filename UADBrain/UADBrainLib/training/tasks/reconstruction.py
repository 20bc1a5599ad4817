"""The reconstruction families: denoising autoencoder, VAE (spatial or dense, plain or context-encoding),
skip-connection autoencoder and f-AnoGAN.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .base import TrainingTask, masked_squared_error
from .references import (BAUR_2020, BAUR_2021, BEHRENDT_2024, GULRAJANI_2017, KASCENAS_2022, KINGMA_2014,
                         SCHLEGL_2019, SYNTHSEG, ZIMMERER_2019)


class DenoisingTask(TrainingTask):
    """Kascenas et al. 2022: restore healthy slices from coarse multi-scale noise."""

    family = "dae"

    def shared_head(self) -> str:
        from ...inference.models.dae import SHARED_HEAD

        return SHARED_HEAD

    def heads(self):
        return [self.shared_head()] if self.config.shared_network else list(self.config.contrasts)

    def head(self, contrast: str) -> str:
        return self.shared_head() if self.config.shared_network else contrast

    def title(self):
        return f"Denoising autoencoder ({self.contrast_names()})"

    def description(self):
        networks = "one 2.5D U-Net for all contrasts" if self.config.shared_network else "a 2.5D U-Net per contrast"
        return (f"A denoising autoencoder ({networks}) trained on synthetic healthy brains to remove coarse "
                "noise; anomalies are what it cannot restore (the residual in the lesion direction).")

    def scoring(self):
        from ...inference.models.scores import score_settings

        return score_settings(self.config.score, self.config.feature_model)

    def references(self):
        return [KASCENAS_2022, BEHRENDT_2024, SYNTHSEG]

    def per_head_loss(self, contrasts, head_loss):
        """Mean over the batch's heads of ``head_loss(head, indices of the samples it scores)``."""
        heads = [self.head(c) for c in contrasts]
        losses = [head_loss(head, [i for i, h in enumerate(heads) if h == head]) for head in dict.fromkeys(heads)]
        return sum(losses) / len(losses)

    def reconstruction_loss(self, networks, contrasts, inputs, targets, weights):
        """The masked squared error of each head's outputs for the samples it scores."""
        return self.per_head_loss(contrasts, lambda head, chosen: masked_squared_error(
            networks[head](inputs[chosen]), targets[chosen], weights[chosen]))

    def batch_tensors(self, volumes, rng):
        """A batch of slabs, its prepared images and its brain masks as tensors."""
        import torch

        batch = self.slabs(volumes, rng)
        return batch, torch.from_numpy(batch.prepared()), torch.from_numpy(batch.masks.astype(np.float32))

    def slice_targets(self, inputs, images, masks, device):
        """Network inputs (the given slices and the centre's mask), the clean centre slices and their
        brain masks (the loss weights), on ``device``."""
        import torch

        centre = self.config.context
        return (torch.cat([inputs, masks[:, centre:centre + 1]], dim=1).to(device),
                images[:, centre:centre + 1].to(device), masks[:, centre:centre + 1].to(device))

    def loss(self, networks, volumes, rng, device):
        from ...inference.models.noise import coarse_noise

        batch, images, masks = self.batch_tensors(volumes, rng)
        noise = coarse_noise((images.shape[0], 1, *images.shape[2:]), std_range=self.config.noise_std)
        inputs, targets, weights = self.slice_targets((images + noise) * masks, images, masks, device)
        return self.reconstruction_loss(networks, batch.contrasts, inputs, targets, weights)

    def reconstructions(self, network) -> list:
        """What turns slice inputs into the outputs the score reads: the network itself, here."""
        return [network]

    def feature_distance(self, device):
        """The perceptual score's feature network (made once), or None for the other scores."""
        if self.config.score != "perceptual":
            return None
        if getattr(self, "_features", None) is None:
            from ...inference.models.features import FeatureDistance

            self._features = FeatureDistance(self.scoring(), device)
        return self._features

    def score_volume(self, networks, case, device):
        from ...inference.models.networks import predict_volume, prepare
        from ...inference.models.scores import score_outputs
        from ...inference.models.thresholding import DEFAULT_DIRECTIONS

        prepared = prepare(case.image, case.mask)
        outputs = [predict_volume(forward, prepared, case.mask, self.config.context, device)
                   for forward in self.reconstructions(networks[self.head(case.contrast)])]
        features = self.feature_distance(device)
        distance = (lambda image, reconstruction: features.distance(image, reconstruction, case.mask)) \
            if features else None
        return score_outputs(self.config.score, prepared, outputs, DEFAULT_DIRECTIONS[case.contrast],
                             self.config.spacing, distance)[0]


class VariationalTask(DenoisingTask):
    """Baur et al. 2021: reconstruct clean healthy slices through a spatial VAE's bottleneck;
    ``kl_weight`` 0 makes it a plain autoencoder. Scored like the denoising autoencoder."""

    family = "vae"

    def shared_head(self) -> str:
        from ...inference.models.vae import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ...inference.models.networks import VAE_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "latent_channels": self.config.latent_channels,
                "dense_latent": self.config.dense_latent}
        return network_spec(self.heads(), self.config.context, args, architecture=VAE_ARCHITECTURE)

    def title(self):
        kind = "variational autoencoder" if self.config.kl_weight > 0 else "autoencoder"
        latent = "Dense" if self.config.dense_latent else "Spatial"
        return f"{latent} {kind} ({self.contrast_names()})"

    def description(self):
        kind = "variational autoencoder" if self.config.kl_weight > 0 else "plain autoencoder"
        latent = (f"a dense latent of {self.config.dense_latent} numbers" if self.config.dense_latent
                  else "a spatial latent")
        return (f"A convolutional {kind} with {latent} and no skip connections, trained on "
                "synthetic healthy brains to reconstruct clean slices through its bottleneck; anomalies are "
                "what it cannot reconstruct (the residual in the lesion direction).")

    def references(self):
        return [BAUR_2021, KINGMA_2014, SYNTHSEG]

    def reconstructions(self, network):
        from ...inference.models.vae import vae_forwards

        return vae_forwards(network, self.config.score)

    def elbo_loss(self, network, inputs, targets, weights):
        """Reconstruction error plus ``kl_weight`` times the KL term per brain pixel (the ELBO of a
        Gaussian likelihood with variance 1/2)."""
        reconstruction, mean, log_variance = network.sample(inputs)
        kl = 0.5 * (mean ** 2 + log_variance.exp() - 1.0 - log_variance).sum()
        return (masked_squared_error(reconstruction, targets, weights)
                + self.config.kl_weight * kl / weights.sum().clamp_min(1.0))

    def loss(self, networks, volumes, rng, device):
        batch, images, masks = self.batch_tensors(volumes, rng)
        inputs, targets, weights = self.slice_targets(images, images, masks, device)
        return self.per_head_loss(batch.contrasts, lambda head, chosen: self.elbo_loss(
            networks[head], inputs[chosen], targets[chosen], weights[chosen]))


class ContextVAETask(VariationalTask):
    """Zimmerer et al. 2019 (ceVAE): the VAE's loss plus a context-encoding loss — the same
    network restores whole slices from copies with rectangles blanked out (in every context slice)
    — scored by the residual times the KL term's input gradient."""

    blanks = (1, 3)  # rectangles per slice
    blank_mm = (10.0, 50.0)  # side lengths

    def title(self):
        return f"Context-encoding VAE ({self.contrast_names()})"

    def description(self):
        score = ("the residual in the lesion direction times the gradient of the KL term with respect to the "
                 "input" if self.config.score == "kl-combined" else f"the {self.config.score} score")
        return ("A convolutional variational autoencoder trained on synthetic healthy brains both to reconstruct "
                "slices through its latent and to restore slices with rectangles blanked out (context encoding); "
                f"scored by {score}.")

    def references(self):
        return [ZIMMERER_2019, BAUR_2021, KINGMA_2014, SYNTHSEG]

    def blanked(self, images, rng):
        """Copies of slab ``images`` ``[B, slices, H, W]`` with random rectangles set to 0 (the
        normalised mean) through all slices."""
        blanked = images.clone()
        height, width = images.shape[-2:]
        for index in range(images.shape[0]):
            for _ in range(int(rng.integers(self.blanks[0], self.blanks[1] + 1))):
                rows, columns = (int(np.clip(rng.uniform(*self.blank_mm) / self.config.spacing, 1, n))
                                 for n in (height, width))
                top, left = int(rng.integers(0, height - rows + 1)), int(rng.integers(0, width - columns + 1))
                blanked[index, :, top:top + rows, left:left + columns] = 0.0
        return blanked

    def loss(self, networks, volumes, rng, device):
        batch, images, masks = self.batch_tensors(volumes, rng)
        inputs, targets, weights = self.slice_targets(images, images, masks, device)
        context_inputs = self.slice_targets(self.blanked(images, rng) * masks, images, masks, device)[0]

        def head_loss(head, chosen):
            restored = networks[head](context_inputs[chosen])  # the latent mean, as at inference
            return (self.elbo_loss(networks[head], inputs[chosen], targets[chosen], weights[chosen])
                    + self.config.context_weight * masked_squared_error(restored, targets[chosen], weights[chosen]))

        return self.per_head_loss(batch.contrasts, head_loss)


class SkipAutoencoderTask(DenoisingTask):
    """Baur et al. 2020: reconstruct clean healthy slices through an autoencoder whose skip
    connections are dropped out channel-wise in training."""

    family = "skip-ae"

    def shared_head(self) -> str:
        from ...inference.models.skip_ae import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ...inference.models.networks import SKIP_AE_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "skip_dropout": self.config.skip_dropout}
        return network_spec(self.heads(), self.config.context, args, architecture=SKIP_AE_ARCHITECTURE)

    def title(self):
        return f"Skip-connection autoencoder ({self.contrast_names()})"

    def description(self):
        return (f"A convolutional autoencoder with skip connections, each dropped out channel-wise at rate "
                f"{self.config.skip_dropout:g} in training (off at inference), trained on synthetic healthy brains "
                "to reconstruct clean slices; anomalies are what it cannot reconstruct (the residual in the "
                "lesion direction).")

    def references(self):
        return [BAUR_2020, BAUR_2021, SYNTHSEG]

    def loss(self, networks, volumes, rng, device):
        batch, images, masks = self.batch_tensors(volumes, rng)
        inputs, targets, weights = self.slice_targets(images, images, masks, device)
        return self.reconstruction_loss(networks, batch.contrasts, inputs, targets, weights)


class FAnoGANTask(DenoisingTask):
    """Schlegl et al. 2019: a WGAN-GP (``n_critic`` critic updates per generator update) for the
    first ``gan_fraction`` of the steps, then the encoder alone with the izif loss."""

    family = "fanogan"
    n_critic = 5
    gradient_penalty = 10.0
    feature_weight = 1.0  # kappa of the izif loss

    def __init__(self, config):
        super().__init__(dataclasses.replace(config, shared_network=True))
        self.phase = "critic"

    def shared_head(self) -> str:
        from ...inference.models.fanogan import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ...inference.models.networks import FANOGAN_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "latent": self.config.dense_latent or 128}
        return network_spec(self.heads(), self.config.context, args, architecture=FANOGAN_ARCHITECTURE)

    def title(self):
        return f"f-AnoGAN ({self.contrast_names()})"

    def description(self):
        return ("A Wasserstein GAN (gradient penalty) trained on synthetic healthy brain slices, and an encoder "
                "into its latent trained with the izif loss (pixels and critic features); anomalies are what "
                "the generator cannot produce (the residual in the lesion direction).")

    def references(self):
        return [SCHLEGL_2019, GULRAJANI_2017, SYNTHSEG]

    def begin_step(self, step, networks):
        network = networks[self.shared_head()]
        if step < self.config.gan_fraction * self.config.steps:
            self.phase = "generator" if step % (self.n_critic + 1) == self.n_critic else "critic"
        else:
            self.phase = "encoder"
        trained = {"critic": network.critic.parameters(), "generator": network.generator_parameters(),
                   "encoder": network.encoder_parameters()}[self.phase]
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        for parameter in trained:
            parameter.requires_grad_(True)

    def loss(self, networks, volumes, rng, device):
        import torch

        network = networks[self.shared_head()]
        batch, images, masks = self.batch_tensors(volumes, rng)
        inputs, targets, weights = self.slice_targets(images, images, masks, device)
        real = targets * weights
        size = network.autoencoder.bottleneck_size(inputs)
        if self.phase == "encoder":
            reconstruction = network(inputs) * weights
            features = ((network.critic.features(reconstruction) - network.critic.features(real)) ** 2).mean()
            return masked_squared_error(reconstruction, targets, weights) + self.feature_weight * features
        latent = torch.randn(inputs.shape[0], network.latent, device=device)
        fake = network.generate(latent, size) * weights
        if self.phase == "generator":
            return -network.critic(fake).mean()
        fake = fake.detach()
        mix = torch.rand(inputs.shape[0], 1, 1, 1, device=device)
        mixed = (mix * real + (1.0 - mix) * fake).requires_grad_(True)
        (gradient,) = torch.autograd.grad(network.critic(mixed).sum(), mixed, create_graph=True)
        penalty = ((gradient.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
        return network.critic(fake).mean() - network.critic(real).mean() + self.gradient_penalty * penalty

    def validate(self, networks, validation, device):
        if self.phase != "encoder":  # without its encoder the model cannot score a scan yet
            return {"score": float("nan")}
        return super().validate(networks, validation, device)
