"""Model families, and loading a bundle into a ready model."""

from __future__ import annotations

import importlib

from ...bundle import Bundle
from ...errors import ModelError
from .base import AnomalyModel, ModelOutput
from .thresholding import ThresholdingModel

# a class, or "module:Class" within this package for families that import torch (loaded on use)
FAMILIES: dict[str, type[AnomalyModel] | str] = {
    "threshold": ThresholdingModel,
    "dae": "dae:DenoisingAutoencoder",
    "vae": "vae:VariationalAutoencoder",
    "skip-ae": "skip_ae:SkipAutoencoder",
    "fanogan": "fanogan:FAnoGAN",
    "diffusion": "diffusion:PartialDiffusionModel",
    "segmenter": "segmenter:SyntheticAnomalySegmenter",
    "tissue": "tissue:TissueNormativeModel",
    "normative": "normative:VoxelNormativeModel",
    "patchcore": "patchcore:PatchCoreModel",
    "padim": "padim:GaussianFeatureModel",
    "stfpm": "stfpm:StudentTeacherModel",
    "learned-hybrid": "learned_hybrid:LearnedHybridModel",
    "ensemble": "ensemble:EnsembleModel",
}


def family_class(name: str) -> type[AnomalyModel] | None:
    model_class = FAMILIES.get(name)
    if isinstance(model_class, str):
        module_name, class_name = model_class.split(":")
        model_class = getattr(importlib.import_module(f"{__package__}.{module_name}"), class_name)
    return model_class


def load_model(bundle: Bundle, device: str = "cpu") -> AnomalyModel:
    """The bundle's model, ready to predict; weights are checked against their SHA-256 first."""
    model_class = family_class(bundle.family)
    if model_class is None:
        raise ModelError(f"model '{bundle.name}' is of family '{bundle.family}', which this version "
                         f"of UADBrain does not know ({', '.join(FAMILIES)}) — update UADBrain.")
    if bundle.metadata.get("weights"):
        bundle.verified_weights_path()
    return model_class(bundle, device)


__all__ = ["AnomalyModel", "ModelOutput", "FAMILIES", "family_class", "load_model"]
