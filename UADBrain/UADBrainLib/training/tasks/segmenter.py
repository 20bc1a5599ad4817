"""The synthetic-anomaly segmenter (Baugh et al. 2023 style)."""

from __future__ import annotations

import numpy as np

from .base import TrainingTask
from .references import BAUGH_2023, LESJAK_2018, SYNTHSEG


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

        from ...inference.models.segmenter import HEAD
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
        logits = networks[HEAD](inputs)
        bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * masks).sum() / masks.sum().clamp_min(1.0)
        probability = torch.sigmoid(logits) * masks
        dice = 1.0 - (2 * (probability * target).sum() + 1.0) / (probability.sum() + target.sum() + 1.0)
        return bce + dice

    def score_volume(self, networks, case, device):
        from ...inference.models.networks import predict_volume, prepare
        from ...inference.models.segmenter import HEAD, anomaly_score

        logits = predict_volume(networks[HEAD], prepare(case.image, case.mask), case.mask, self.config.context, device)
        return anomaly_score(logits)
