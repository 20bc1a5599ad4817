"""A learned hybrid of reconstruction and synthetic-anomaly segmentation (after Behrendt et al. 2024a).

``hybrid`` combines the segmenter and the denoising autoencoder by a fixed rule. Here a segmenter
learns the combination: its U-Net sees the slices, the brain mask and the residual of the bundled
denoising autoencoder's reconstruction (the bundle's ``reconstruction_model``, pinned by the
SHA-256 of its weights), and is trained like the segmenter on synthetic anomalies inserted into
healthy brains (``training/tasks/segmenter.py``), so it learns when a residual means a lesion and
when it is the autoencoder's own error. (The paper reconstructs with a diffusion model; the
autoencoder's single pass is what lets every training step reconstruct its batch on a CPU.)
"""

from __future__ import annotations

import torch

from .networks import load_networks
from .segmenter import SyntheticAnomalySegmenter


def reconstruction_settings(name: str) -> dict:
    """The network-block entries that pin the reconstruction model."""
    from ...bundle import find_bundle
    from ...errors import ModelError

    bundle = find_bundle(name)
    if bundle.family != "dae":
        raise ModelError(f"the learned hybrid reads a denoising autoencoder's residual; '{name}' is a "
                         f"{bundle.family} model — give a dae bundle.")
    return {"reconstruction_model": name, "reconstruction_model_sha256": bundle.metadata["weights"]["sha256"]}


def load_reconstructor(network: dict, device: str = "cpu") -> torch.nn.Module:
    """The pinned reconstruction network, refused when the installed weights differ."""
    from ...bundle import find_bundle
    from ...errors import ModelError

    bundle = find_bundle(network["reconstruction_model"])
    if bundle.metadata["weights"]["sha256"] != network["reconstruction_model_sha256"]:
        raise ModelError(f"the learned hybrid was trained on the residuals of other weights of "
                         f"'{bundle.name}' than the installed ones — retrain it (uadbrain train --model learned-hybrid).")
    networks = load_networks(bundle, device)
    for parameter in networks.parameters():
        parameter.requires_grad_(False)
    return next(iter(networks.values()))


def with_residual(inputs: torch.Tensor, reconstructor: torch.nn.Module, context: int) -> torch.Tensor:
    """Slice inputs with one more channel: the centre slice minus its reconstruction, in the brain."""
    with torch.no_grad():
        residual = (inputs[:, context:context + 1] - reconstructor(inputs)) * inputs[:, -1:]
    return torch.cat([inputs, residual], dim=1)


class LearnedHybridModel(SyntheticAnomalySegmenter):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        self.reconstructor = load_reconstructor(self.spec, device)

    def _forwards_for(self, head: str):
        network, context = self.networks[head], self.spec["context"]
        return [lambda inputs: network(with_residual(inputs, self.reconstructor, context))]
