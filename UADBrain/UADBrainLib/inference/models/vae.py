"""Variational autoencoder (the reconstruction baseline of Baur et al. 2021).

A convolutional VAE with a spatial latent (:class:`networks.SliceVAE`), trained on healthy
brains to reconstruct clean slices through its bottleneck; with ``kl_weight`` 0 it is a plain
autoencoder. It is scored exactly like the denoising autoencoder — the residual in the lesion
direction (or SSIM) of the reconstruction from the latent mean — so the two reconstruction
families differ only in how they learned to restore healthy tissue: the DAE by removing noise
through a U-Net with skip connections, the VAE by squeezing the slice through its latent.
"""

from __future__ import annotations

from .dae import DenoisingAutoencoder

SHARED_HEAD = "vae"  # the network's name when one network reconstructs every contrast


class VariationalAutoencoder(DenoisingAutoencoder):
    shared_head = SHARED_HEAD
