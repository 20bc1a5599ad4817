"""Model families, and loading a bundle into a ready model."""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import ModelError
from .base import AnomalyModel, ModelOutput
from .thresholding import ThresholdingModel

FAMILIES: dict[str, type[AnomalyModel]] = {
    "threshold": ThresholdingModel,
}


def register_family(name: str, model_class: type[AnomalyModel]) -> None:
    FAMILIES[name] = model_class


def load_model(bundle: Bundle, device: str = "cpu") -> AnomalyModel:
    """The bundle's model, ready to predict; weights are checked against their SHA-256 first."""
    model_class = FAMILIES.get(bundle.family)
    if model_class is None:
        raise ModelError(f"model '{bundle.name}' is of family '{bundle.family}', which this version "
                         f"of UADBrain does not know ({', '.join(FAMILIES)}) — update UADBrain.")
    if bundle.metadata.get("weights"):
        bundle.verified_weights_path()
    return model_class(bundle, device)


__all__ = ["AnomalyModel", "ModelOutput", "FAMILIES", "load_model", "register_family"]
