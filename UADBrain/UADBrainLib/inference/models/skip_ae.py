"""Autoencoder with skip connections (Baur et al. 2020, the skip baseline of Baur et al. 2021).

A U-Net-shaped autoencoder (:class:`networks.SliceSkipAE`) trained on healthy brains to
reconstruct clean slices, its skip connections dropped out channel-wise in training so that it
cannot simply copy a slice through them. Scored like the denoising autoencoder (the residual in
the lesion direction, or another score of ``scores.py``).
"""

from __future__ import annotations

from .dae import DenoisingAutoencoder

SHARED_HEAD = "skip-ae"  # the network's name when one network reconstructs every contrast


class SkipAutoencoder(DenoisingAutoencoder):
    shared_head = SHARED_HEAD
