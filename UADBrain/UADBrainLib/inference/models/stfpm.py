"""Student–teacher feature pyramid matching (STFPM, Wang et al. 2021).

The teacher is the encoder of a U-Net trained here on synthetic brains (the bundle's
``feature_model``; no ImageNet weights can be had); a student of the same shape, trained only on
healthy brains (``training/tasks/features.py``), learns to give the teacher's features at its
first four resolutions (4 to 32 mm on the 2 mm grid; with three, the student learnt to follow
the teacher on anything, anomalies included, and validation fell to chance). Where the input is unlike anything healthy the student has not learned
to follow: the score is the discrepancy of the two pyramids, ``|t/|t| − s/|s||²`` per level,
brought to the slice's resolution and averaged over the levels.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import AnomalyModel, ModelOutput
from .features import FeatureBackbone, encoder_features, feature_discrepancy
from .networks import CLIP, load_networks, predict_volume, prepare

STUDENT = "student"
LEVELS = 4  # the student's levels when trained; a bundle records its own (network args "levels")


class PyramidDiscrepancy:
    """``forward(slice inputs)``: the teacher–student discrepancy of each pixel."""

    def __init__(self, teacher: FeatureBackbone, student: torch.nn.Module, levels: int):
        self.teacher, self.student, self.levels = teacher, student, levels

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return feature_discrepancy(self.teacher.features(inputs, self.levels),
                                   encoder_features(self.student.unet, inputs, self.levels), inputs.shape[2:])


def stfpm_scores(images, mask, discrepancy: PyramidDiscrepancy, context: int, device: str = "cpu",
                 is_cancelled=None) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {contrast: np.where(mask, predict_volume(discrepancy, prepare(image, mask, CLIP), mask, context,
                                                        device, is_cancelled=is_cancelled), 0.0).astype(np.float32)
                for contrast, image in images.items()}


class StudentTeacherModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        network = bundle.metadata["network"]
        teacher = FeatureBackbone(network, device, purpose=f"model '{bundle.name}'",
                                  remedy="retrain it (uadbrain train --model stfpm)")
        self.discrepancy = PyramidDiscrepancy(teacher, load_networks(bundle, device)[STUDENT], network["args"]["levels"])
        self.context = network["context"]

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None):
        maps = stfpm_scores(images, brain_mask, self.discrepancy, self.context, self.device, is_cancelled)
        if progress:
            progress(1.0, "student-teacher discrepancy")
        return ModelOutput(contrast_maps=maps)
