"""What each learned family trains on: networks, batches, loss, validation, bundle metadata.

A :class:`TrainingTask` plugs one family into the generic loop of ``train.py``; a new family adds
its task to :data:`TASKS`. Every anomaly family is validated the same way: on held-out
validation brains with synthetic anomalies inserted in 3D (``synthesis/anomalies.py``) before
normalisation, scored exactly as at inference, by the mean AUPRC over contrasts. The segmenter
never trains on the anomaly kinds it is validated on (Baugh et al. 2023).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..inference.options import MODEL_DEFAULT_POSTPROCESSING
from .data import SlabBatch, TrainingVolume, sample_slabs

KASCENAS_2022 = ("Kascenas A, Pugeault N, O'Neil AQ. Denoising autoencoders for unsupervised anomaly "
                 "detection in brain MRI. MIDL 2022, PMLR 172:653-664.")
BEHRENDT_2024 = ("Behrendt F, Bhattacharya D, Maack L, Krüger J, Opfer R, Mieling R, Schlaefer A. "
                 "Diffusion models with ensembled structure-based anomaly scoring for unsupervised "
                 "anomaly detection. ISBI 2024.")
BAUGH_2023 = ("Baugh M, Tan J, Müller JP, Dombrowski M, Batten J, Kainz B. Many tasks make light work: "
              "learning to localise medical anomalies from multiple synthetic tasks. MICCAI 2023.")
BAUR_2021 = ("Baur C, Denner S, Wiestler B, Navab N, Albarqouni S. Autoencoders for unsupervised anomaly "
             "segmentation in brain MR images: a comparative study. Medical Image Analysis 69, 2021.")
BAUR_2020 = ("Baur C, Wiestler B, Albarqouni S, Navab N. Bayesian skip-autoencoders for unsupervised "
             "hyperintense anomaly segmentation of structural brain MRI. ISBI 2020.")
ZIMMERER_2019 = ("Zimmerer D, Isensee F, Petersen J, Kohl S, Maier-Hein K. Unsupervised anomaly localization "
                 "using variational auto-encoders. MICCAI 2019 (and: Context-encoding variational autoencoder "
                 "for unsupervised anomaly detection, MIDL 2019).")
BEHRENDT_2023 = ("Behrendt F, Bhattacharya D, Krüger J, Opfer R, Schlaefer A. Patched diffusion models for "
                 "unsupervised anomaly detection in brain MRI. MIDL 2023, PMLR 227:1019-1032.")
BEHRENDT_2025 = ("Behrendt F, Bhattacharya D, Mieling R, Maack L, Krüger J, Opfer R, Schlaefer A. Guided "
                 "reconstruction with conditioned diffusion models for unsupervised anomaly detection in brain "
                 "MRIs. Computers in Biology and Medicine 186, 2025.")
SCHLEGL_2019 = ("Schlegl T, Seeböck P, Waldstein SM, Langs G, Schmidt-Erfurth U. f-AnoGAN: fast unsupervised "
                "anomaly detection with generative adversarial networks. Medical Image Analysis 54:30-44, 2019.")
GULRAJANI_2017 = ("Gulrajani I, Ahmed F, Arjovsky M, Dumoulin V, Courville A. Improved training of Wasserstein "
                  "GANs. NeurIPS 2017.")
KINGMA_2014 = "Kingma DP, Welling M. Auto-encoding variational Bayes. ICLR 2014."
WYATT_2022 = ("Wyatt J, Leach A, Schmon SM, Willcocks CG. AnoDDPM: anomaly detection with denoising diffusion "
              "probabilistic models using simplex noise. CVPR Workshops 2022.")
SONG_2021 = "Song J, Meng C, Ermon S. Denoising diffusion implicit models. ICLR 2021."
SYNTHSEG = ("Billot B, Greve DN, Puonti O, et al. SynthSeg: segmentation of brain MRI scans of any "
            "contrast and resolution without retraining. Medical Image Analysis 86, 2023 (label maps).")
LESJAK_2018 = ("Lesjak Ž, Galimzianova A, Koren A, et al. A novel public MR image dataset of multiple "
               "sclerosis patients with lesion segmentations based on multi-rater consensus. "
               "Neuroinformatics 16:51-63, 2018 (lesion shapes).")
VALIDATION_SEED = 2_000_000
VALIDATION_MEDIAN = MODEL_DEFAULT_POSTPROCESSING["median"]  # the median kernel the bundles are written with


@dataclasses.dataclass
class ValidationCase:
    contrast: str
    image: np.ndarray  # normalised as at inference
    mask: np.ndarray
    truth: np.ndarray


def ranking_metrics(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """AUPRC and best Dice of voxel scores against a binary truth."""
    from ..metrics import RankingCurve

    curve = RankingCurve.from_scores(scores, truth)
    dice = 2 * curve.true_positives / np.maximum(curve.true_positives + curve.false_positives + curve.positives, 1)
    return curve.average_precision(), float(dice.max()) if dice.size else float("nan")


def masked_squared_error(outputs, targets, weights):
    """Mean squared error over the pixels where ``weights`` (the brain mask) is set."""
    return ((outputs - targets) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)


def lesion_shapes(folder):
    if not folder:
        return None
    from ..synthesis.anomalies import LesionShapes

    return LesionShapes.from_folder(folder)


class TrainingTask:
    """Base: a family trained on slabs of healthy volumes, validated on synthetic anomalies."""

    family = ""
    output_bias = 0.0
    extra_input_channels = 0  # network inputs beyond the slices and the mask

    def __init__(self, config):
        self.config = config
        self.shapes = lesion_shapes(config.lesion_masks)

    # ---- bundle metadata
    def heads(self) -> list[str]:
        raise NotImplementedError

    def network_spec(self) -> dict:
        from ..inference.models.networks import network_spec

        unet = {"channels": list(self.config.channels), "strides": [2] * (len(self.config.channels) - 1)}
        return network_spec(self.heads(), self.config.context, unet, self.output_bias,
                            extra_channels=self.extra_input_channels)

    def preprocessing(self) -> dict:
        return {"spacing_mm": [self.config.spacing] * 3, "bias_correction": False, "normalisation": "robust_z"}

    def postprocessing(self) -> dict:
        return {"median": VALIDATION_MEDIAN, "min_size_mm3": 20.0, "erosion_mm": 0.0}

    def scoring(self) -> dict:
        return {}

    # ---- training
    def begin_step(self, step: int, networks) -> None:
        """Called before each step's loss: a family that trains its networks in phases or turns
        (f-AnoGAN) freezes what the step does not train here; the optimiser skips parameters
        without gradients."""

    def slabs(self, volumes: list[TrainingVolume], rng: np.random.Generator, contrasts=None) -> SlabBatch:
        return sample_slabs(volumes, self.config.batch_size, self.config.patch_size, self.config.context,
                            rng, contrasts)

    def loss(self, networks, volumes, rng, device):
        raise NotImplementedError

    # ---- validation
    def validation_anomalies(self):
        """The anomalies validation brains get (``anomalies.AnomalyConfig``): one or two tumour-like
        masses of the held-out appearances, 10-40 mm, the same for every family so that their
        validation scores compare."""
        from ..synthesis.anomalies import AnomalyConfig

        return AnomalyConfig(appearances=tuple(self.config.heldout_appearances), shapes=("blob", "ellipsoid"),
                             count=(1, 2), diameter_mm=(10.0, 40.0))

    def validation_set(self, source, count: int) -> list[ValidationCase]:
        """Held-out brains with anomalies, normalised as at inference; made once before training."""
        from ..preprocessing import normalise
        from ..synthesis.anomalies import insert_anomalies

        cases = []
        method = self.preprocessing()["normalisation"]
        for index in range(count):
            volume = source.volume(VALIDATION_SEED + index)
            rng = np.random.default_rng(VALIDATION_SEED + index)
            for _ in range(20):  # tiny anomalies can vanish at coarse spacings: draw again
                inserted = insert_anomalies(volume.images, volume.mask, volume.spacing, rng,
                                            labels=volume.labels, config=self.validation_anomalies(),
                                            lesion_shapes=self.shapes)
                if inserted.mask.any():
                    break
            for contrast, image in inserted.images.items():
                cases.append(ValidationCase(contrast, normalise(image, volume.mask, method), volume.mask,
                                            inserted.mask > 0))
        return cases

    def score_volume(self, networks, case: ValidationCase, device) -> np.ndarray:
        """The raw anomaly map of one validation case, as the model computes it at inference."""
        raise NotImplementedError

    def validate(self, networks, validation: list[ValidationCase], device) -> dict:
        """Per contrast AUPRC and best Dice (median-filtered map, inside the brain); ``score`` is
        the mean AUPRC, higher is better."""
        from ..inference.postprocessing import median_filter

        pooled: dict[str, tuple[list, list]] = {}
        for case in validation:
            scores = self.score_volume(networks, case, device)
            scores = median_filter(np.where(case.mask, scores, 0.0).astype(np.float32), VALIDATION_MEDIAN)
            values, truths = pooled.setdefault(case.contrast, ([], []))
            values.append(scores[case.mask])
            truths.append(case.truth[case.mask])
        metrics = {}
        for contrast, (values, truths) in pooled.items():
            auprc, dice = ranking_metrics(np.concatenate(values), np.concatenate(truths))
            metrics[f"auprc_{contrast}"] = round(auprc, 4)
            metrics[f"dice_{contrast}"] = round(dice, 4)
        metrics["score"] = round(float(np.mean([v for k, v in metrics.items() if k.startswith("auprc_")])), 4)
        return metrics


class DenoisingTask(TrainingTask):
    """Kascenas et al. 2022: restore healthy slices from coarse multi-scale noise."""

    family = "dae"

    def shared_head(self) -> str:
        from ..inference.models.dae import SHARED_HEAD

        return SHARED_HEAD

    def heads(self):
        return [self.shared_head()] if self.config.shared_network else list(self.config.contrasts)

    def head(self, contrast: str) -> str:
        return self.shared_head() if self.config.shared_network else contrast

    def title(self):
        return f"Denoising autoencoder ({', '.join(c.upper() for c in self.config.contrasts)})"

    def description(self):
        networks = "one 2.5D U-Net for all contrasts" if self.config.shared_network else "a 2.5D U-Net per contrast"
        return (f"A denoising autoencoder ({networks}) trained on synthetic healthy brains to remove coarse "
                "noise; anomalies are what it cannot restore (the residual in the lesion direction).")

    def scoring(self):
        from ..inference.models.scores import score_settings

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
        from ..inference.models.noise import coarse_noise

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
            from ..inference.models.features import FeatureDistance

            self._features = FeatureDistance(self.scoring(), device)
        return self._features

    def score_volume(self, networks, case, device):
        from ..inference.models.networks import predict_volume, prepare
        from ..inference.models.scores import score_outputs
        from ..inference.models.thresholding import DEFAULT_DIRECTIONS

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
        from ..inference.models.vae import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ..inference.models.networks import VAE_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "latent_channels": self.config.latent_channels,
                "dense_latent": self.config.dense_latent}
        return network_spec(self.heads(), self.config.context, args, architecture=VAE_ARCHITECTURE)

    def title(self):
        kind = "variational autoencoder" if self.config.kl_weight > 0 else "autoencoder"
        latent = "Dense" if self.config.dense_latent else "Spatial"
        return f"{latent} {kind} ({', '.join(c.upper() for c in self.config.contrasts)})"

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
        from ..inference.models.vae import vae_forwards

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
        return f"Context-encoding VAE ({', '.join(c.upper() for c in self.config.contrasts)})"

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
        from ..inference.models.skip_ae import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ..inference.models.networks import SKIP_AE_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "skip_dropout": self.config.skip_dropout}
        return network_spec(self.heads(), self.config.context, args, architecture=SKIP_AE_ARCHITECTURE)

    def title(self):
        return f"Skip-connection autoencoder ({', '.join(c.upper() for c in self.config.contrasts)})"

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
        from ..inference.models.fanogan import SHARED_HEAD

        return SHARED_HEAD

    def network_spec(self) -> dict:
        from ..inference.models.networks import FANOGAN_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "latent": self.config.dense_latent or 128}
        return network_spec(self.heads(), self.config.context, args, architecture=FANOGAN_ARCHITECTURE)

    def title(self):
        return f"f-AnoGAN ({', '.join(c.upper() for c in self.config.contrasts)})"

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


class DiffusionTask(DenoisingTask):
    """Wyatt et al. 2022 (AnoDDPM): predict the clean slice from one noised to a random step of
    the partial diffusion the model is run with. 2D only: neighbouring slices given as context
    would show the network the lesion the noise hides."""

    family = "diffusion"
    extra_input_channels = 1  # the diffusion step

    def __init__(self, config):
        super().__init__(dataclasses.replace(config, context=0))

    def shared_head(self) -> str:
        from ..inference.models.diffusion import HEAD

        return HEAD

    def sampler(self) -> dict:
        from ..inference.models.diffusion import DEFAULT_SAMPLER

        return {**DEFAULT_SAMPLER, "start": self.config.diffusion_start, "steps": self.config.diffusion_steps}

    def scoring(self):
        from ..inference.models.diffusion import ensemble_for

        ensemble = ensemble_for(self.config.score, self.config.diffusion_start, self.config.noise_levels,
                                self.config.ensemble_seeds)
        return {**super().scoring(), "sampler": self.sampler(), **({"ensemble": ensemble} if ensemble else {})}

    def title(self):
        return f"Partial-noising diffusion model ({', '.join(c.upper() for c in self.config.contrasts)})"

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

        from ..inference.models.diffusion import cumulative_alphas, network_input, noised, unit_noise

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
        from ..inference.models.diffusion import ensemble_samplers, seeded_reconstruction

        return [seeded_reconstruction(network, sampler, self.config.spacing)
                for sampler in ensemble_samplers(self.scoring())]


class ConditionedDiffusionTask(DiffusionTask):
    """Behrendt et al. 2025 (cDDPM): the diffusion model's denoiser also sees the original slice,
    through a condition encoder's few numbers, to keep the subject's intensity profile."""

    extra_input_channels = 2  # the diffusion step and the original slice

    def sampler(self) -> dict:
        return {**super().sampler(), "conditioned": True}

    def network_spec(self) -> dict:
        from ..inference.models.networks import CONDITIONED_ARCHITECTURE, network_spec

        args = {"channels": list(self.config.channels), "strides": [2] * (len(self.config.channels) - 1),
                "condition_size": self.config.condition_size}
        return network_spec(self.heads(), self.config.context, args, architecture=CONDITIONED_ARCHITECTURE,
                            extra_channels=self.extra_input_channels)

    def title(self):
        return f"Conditioned diffusion model ({', '.join(c.upper() for c in self.config.contrasts)})"

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
        return f"Patched diffusion model ({', '.join(c.upper() for c in self.config.contrasts)})"

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


class SegmenterTask(TrainingTask):
    """Baugh et al. 2023: segment synthetic anomalies inserted into healthy slabs."""

    family = "segmenter"
    output_bias = -3.0  # prior logit: without it training sits at the all-healthy solution
    empty_fraction = 0.2  # slabs left healthy, so that normal anatomy is seen as such

    def heads(self):
        from ..inference.models.segmenter import HEAD

        return [HEAD]

    def title(self):
        return "Synthetic-anomaly segmenter"

    def description(self):
        return ("A 2.5D U-Net trained on synthetic healthy brains of every contrast to outline synthetic "
                "anomalies inserted into them (brighter, darker, textured, transplanted, lesion-like, with "
                "real MS lesion shapes); each given contrast is scored on its own and calibrated on "
                "healthy brains.")

    def references(self):
        return [BAUGH_2023, SYNTHSEG, LESJAK_2018]

    def training_anomalies(self):
        from ..synthesis.anomalies import APPEARANCES, AnomalyConfig

        heldout = self.config.heldout_appearances
        return AnomalyConfig(appearances=tuple(a for a in APPEARANCES if a not in heldout), count=(1, 3))

    def scoring(self):
        return {"training_appearances": list(self.training_anomalies().appearances),
                "validation_appearances": list(self.validation_anomalies().appearances)}

    def loss(self, networks, volumes, rng, device):
        import torch
        import torch.nn.functional as F

        from ..inference.models.segmenter import HEAD
        from ..synthesis.anomalies import insert_anomalies

        batch = self.slabs(volumes, rng)
        images = batch.images.copy()
        truth = np.zeros(batch.masks.shape, np.float32)
        config = self.training_anomalies()
        for index, contrast in enumerate(batch.contrasts):
            if rng.random() < self.empty_fraction or not batch.masks[index].any():
                continue
            labels = batch.labels[index] if batch.labels is not None else None
            inserted = insert_anomalies({contrast: images[index]}, batch.masks[index], batch.spacing, rng,
                                        labels=labels, config=config, lesion_shapes=self.shapes)
            images[index] = inserted.images[contrast]
            truth[index] = inserted.mask
        centre = self.config.context
        masks = torch.from_numpy(batch.masks[:, centre:centre + 1].astype(np.float32))
        inputs = torch.cat([torch.from_numpy(batch.prepared(images)), masks], dim=1).to(device)
        target = torch.from_numpy(truth[:, centre:centre + 1]).to(device)
        masks = masks.to(device)
        logits = networks[HEAD](inputs)
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * masks).sum() / masks.sum().clamp_min(1.0)
        probability = torch.sigmoid(logits) * masks
        dice = 1.0 - (2 * (probability * target).sum() + 1.0) / (probability.sum() + target.sum() + 1.0)
        return bce + dice

    def score_volume(self, networks, case, device):
        from ..inference.models.networks import predict_volume, prepare
        from ..inference.models.segmenter import HEAD, anomaly_score

        logits = predict_volume(networks[HEAD], prepare(case.image, case.mask), case.mask, self.config.context, device)
        return anomaly_score(logits)


TASKS: dict[str, type[TrainingTask]] = {"dae": DenoisingTask, "vae": VariationalTask,
                                         "cevae": ContextVAETask, "skip-ae": SkipAutoencoderTask,
                                         "fanogan": FAnoGANTask, "diffusion": DiffusionTask,
                                         "pddpm": PatchedDiffusionTask, "cddpm": ConditionedDiffusionTask,
                                         "segmenter": SegmenterTask}


def make_task(config) -> TrainingTask:
    return TASKS[config.model](config)
