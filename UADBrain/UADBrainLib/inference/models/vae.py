"""Variational autoencoders: the reconstruction baseline of Baur et al. 2021 and the
context-encoding VAE of Zimmerer et al. 2019 (ceVAE).

A convolutional VAE with a spatial or dense latent (:class:`networks.SliceVAE`), trained on
healthy brains to reconstruct clean slices through its bottleneck; with ``kl_weight`` 0 it is a
plain autoencoder, with a context-encoding loss (training only) a ceVAE. It is scored like the
denoising autoencoder — the residual in the lesion direction (or another score of ``scores.py``)
of the reconstruction from the latent mean — or, with ``kl-combined``, by that residual times the
magnitude of the gradient of the KL term with respect to the input slice (:func:`kl_gradient`):
where the encoder finds the slice unlike its training data, moving those pixels moves the latent
most.
"""

from __future__ import annotations

import torch

from .dae import DenoisingAutoencoder

SHARED_HEAD = "vae"  # the network's name when one network reconstructs every contrast


def kl_gradient(network, inputs: torch.Tensor) -> torch.Tensor:
    """``|∂ KL(q(z|x) ‖ N(0, I)) / ∂x|`` at the centre slice of slice inputs ``[n, 2c + 2, H, W]``."""
    with torch.inference_mode(False), torch.enable_grad():
        slices = inputs.clone().requires_grad_(True)  # a clone outside inference mode can carry gradients
        mean, log_variance = network.encode(slices)
        kl = 0.5 * (mean ** 2 + log_variance.exp() - 1.0 - log_variance).sum()
        (gradient,) = torch.autograd.grad(kl, slices)
    centre = (inputs.shape[1] - 2) // 2  # the slices, centre in the middle, then the brain mask
    return gradient[:, centre:centre + 1].abs().detach()


def vae_forwards(network, score: str) -> list:
    """What the score reads: the reconstruction, and for ``kl-combined`` also the KL gradient."""
    if score == "kl-combined":
        return [network, lambda inputs: kl_gradient(network, inputs)]
    return [network]


class VariationalAutoencoder(DenoisingAutoencoder):
    shared_head = SHARED_HEAD

    def _forwards_for(self, head: str):
        return vae_forwards(self.networks[head], self.score)
