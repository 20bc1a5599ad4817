"""f-AnoGAN (Schlegl et al. 2019): a Wasserstein GAN of healthy slices and an encoder into its latent.

The generator learns healthy slices from random latent vectors against a WGAN-GP critic; an
encoder then learns, with the generator and critic fixed, the latent vector whose generated slice
matches a given one in its pixels and in the critic's features (the izif loss). A lesion has no
latent vector that generates it, so ``G(E(x))`` shows healthy tissue in its place. The pixel score
is the residual in the lesion direction (or another score of ``scores.py``), as for the other
reconstruction models; the paper's feature residual is an image-level score, not a map.
"""

from __future__ import annotations

from .dae import DenoisingAutoencoder

SHARED_HEAD = "fanogan"


class FAnoGAN(DenoisingAutoencoder):
    shared_head = SHARED_HEAD
