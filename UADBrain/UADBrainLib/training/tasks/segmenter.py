"""The synthetic-anomaly segmenter (Baugh et al. 2023 style)."""

from __future__ import annotations

import numpy as np

from .base import TrainingTask, on_grid_of
from .references import BAUGH_2023, BEHRENDT_2024A, KASCENAS_2022, LESJAK_2018, SYNTHSEG


class SegmenterTask(TrainingTask):
    """Baugh et al. 2023: segment synthetic anomalies inserted into healthy slabs."""

    family = "segmenter"
    output_bias = -3.0  # prior logit: without it training sits at the all-healthy solution
    empty_fraction = 0.2  # slabs left healthy, so that normal anatomy is seen as such

    def heads(self):
        from ...inference.models.segmenter import HEAD

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
        from ...synthesis.anomalies import APPEARANCES, AnomalyConfig

        heldout = self.config.heldout_appearances
        return AnomalyConfig(appearances=tuple(a for a in APPEARANCES if a not in heldout), count=(1, 3))

    def scoring(self):
        return {"training_appearances": list(self.training_anomalies().appearances),
                "validation_appearances": list(self.validation_anomalies().appearances)}

    def loss(self, networks, volumes, rng, device):
        import torch
        import torch.nn.functional as F

        from ...synthesis.anomalies import insert_anomalies

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
        logits = self.forward(networks)(inputs)
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * masks).sum() / masks.sum().clamp_min(1.0)
        probability = torch.sigmoid(logits) * masks
        dice = 1.0 - (2 * (probability * target).sum() + 1.0) / (probability.sum() + target.sum() + 1.0)
        return bce + dice

    def forward(self, networks):
        """What turns slice inputs into logits: the network itself, here."""
        from ...inference.models.segmenter import HEAD

        return networks[HEAD]

    def score_volume(self, networks, case, device):
        from ...inference.models.networks import predict_volume, prepare
        from ...inference.models.segmenter import anomaly_score

        logits = predict_volume(self.forward(networks), prepare(case.image, case.mask), case.mask,
                                self.config.context, device)
        return anomaly_score(logits)


class LearnedHybridTask(SegmenterTask):
    """Behrendt et al. 2024a: the segmenter, given the denoising autoencoder's residual as well."""

    family = "learned-hybrid"
    extra_input_channels = 1

    def __init__(self, config):
        from ...bundle import find_bundle

        super().__init__(on_grid_of(config, find_bundle(config.reconstruction_model).metadata))

    def title(self):
        return f"Learned hybrid: segmenter on the slices and the {self.reconstruction_name()} residual"

    def description(self):
        return ("A 2.5D U-Net that sees each slice and the residual of the bundled denoising autoencoder's "
                "reconstruction, trained on synthetic anomalies in synthetic healthy brains to outline what "
                "differs: a learned combination of the reconstruction and synthetic-anomaly families.")

    def references(self):
        return [BEHRENDT_2024A, KASCENAS_2022, BAUGH_2023, SYNTHSEG]

    def reconstruction_name(self) -> str:
        return self.config.reconstruction_model

    def network_spec(self) -> dict:
        from ...inference.models.learned_hybrid import reconstruction_settings

        return {**super().network_spec(), **reconstruction_settings(self.reconstruction_name())}

    def forward(self, networks):
        from ...inference.models.learned_hybrid import load_reconstructor, with_residual
        from ...inference.models.segmenter import HEAD

        if not hasattr(self, "_reconstructor"):
            self._reconstructor = load_reconstructor(self.network_spec(), next(networks.parameters()).device.type)
        return lambda inputs: networks[HEAD](with_residual(inputs, self._reconstructor, self.config.context))
