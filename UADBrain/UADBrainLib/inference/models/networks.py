"""Slice-wise (2D / 2.5D) U-Nets shared by the learned model families.

A network sees one axial slice of the canonical grid (``array[k]``, rows P, columns L) with
``context`` neighbouring slices on each side as extra channels, plus the brain mask of the
centre slice. Inputs are the normalised images (``preprocessing.normalise``) clipped to
``±CLIP`` and set to 0 outside the brain, identically in training and at inference.

A bundle's ``network`` block names the architecture and its arguments, the context and the
heads: one network per head (e.g. one per contrast for the denoising autoencoder, one shared
head for the segmenter), stored in one ``state_dict`` with keys ``<head>.<parameter>``. Two
architectures exist: a U-Net (:class:`SliceUNet`, skip connections, for the denoising
autoencoder and the segmenter), a variational autoencoder without skip connections
(:class:`SliceVAE`), whose bottleneck is what keeps it from copying a lesion through, and an
autoencoder whose skip connections are dropped out in training (:class:`SliceSkipAE`), and a
U-Net conditioned on a vector encoding its last input channel (:class:`ConditionedSliceUNet`),
and f-AnoGAN's encoder, generator and critic (:class:`SliceFAnoGAN`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

CLIP = 10.0  # normalised units (robust SD); beyond this, intensities carry no more information
PAD_MULTIPLE = 16  # 2 ** number of down-sampling steps of the default U-Net
ARCHITECTURE = "monai.UNet-2d"
VAE_ARCHITECTURE = "uadbrain.VAE-2d"
SKIP_AE_ARCHITECTURE = "uadbrain.SkipAE-2d"
CONDITIONED_ARCHITECTURE = "uadbrain.ConditionedUNet-2d"
FANOGAN_ARCHITECTURE = "uadbrain.fAnoGAN-2d"
ENCODER_ARCHITECTURE = "uadbrain.UNetEncoder-2d"
DEFAULT_UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
DEFAULT_VAE_LATENT = 16  # latent channels at 1/16 of the input's resolution (32-mm cells at 2 mm)
DENSE_GRID = 4  # a dense latent reads (and the decoder starts from) the bottleneck pooled to 4 x 4


class SliceUNet(nn.Module):
    """A MONAI 2D U-Net with a learnable output offset (its initial value sets the prior logit)."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 strides=DEFAULT_UNET["strides"], num_res_units: int = DEFAULT_UNET["num_res_units"],
                 output_bias: float = 0.0):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units)
        self.output_bias = nn.Parameter(torch.full((1, out_channels, 1, 1), float(output_bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x) + self.output_bias


def _vae_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not InstanceNorm: the bottleneck of a small brain slice can be a single pixel
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(min(8, out_channels), out_channels), nn.LeakyReLU(0.1))


class SliceVAE(nn.Module):
    """A convolutional variational autoencoder (Baur et al. 2021), spatial or dense latent.

    The encoder halves the resolution ``len(channels) - 1`` times and ends in a Gaussian latent:
    ``latent_channels`` per cell (spatial), or, with ``dense_latent`` > 0, one vector of that size
    read from the bottleneck pooled to ``DENSE_GRID`` x ``DENSE_GRID`` (dense: the slice's whole
    layout must pass through it; the decoder stretches the vector's grid back to the bottleneck's
    size, so slices of any size fit). The decoder mirrors the encoder with bilinear up-sampling.
    It has no skip connections, so everything it reconstructs passed through the latent.
    ``forward`` decodes the latent mean (deterministic, as at inference); :meth:`sample` draws from
    the posterior and returns ``(reconstruction, mean, log variance)`` for training.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 latent_channels: int = DEFAULT_VAE_LATENT, dense_latent: int = 0):
        super().__init__()
        channels = list(channels)
        self.halvings, self.dense_latent, self.bottleneck_channels = len(channels) - 1, dense_latent, channels[-1]
        layers = [_vae_block(in_channels, channels[0])]
        for before, after in zip(channels[:-1], channels[1:]):
            layers += [_vae_block(before, after, stride=2), _vae_block(after, after)]
        self.encoder = nn.Sequential(*layers)
        if dense_latent:
            cells = channels[-1] * DENSE_GRID * DENSE_GRID
            self.to_latent = nn.Sequential(nn.AdaptiveAvgPool2d(DENSE_GRID), nn.Flatten(),
                                           nn.Linear(cells, 2 * dense_latent))
            self.from_vector = nn.Linear(dense_latent, cells)
            self.from_latent = _vae_block(channels[-1], channels[-1])
        else:
            self.to_latent = nn.Conv2d(channels[-1], 2 * latent_channels, 1)
            self.from_latent = _vae_block(latent_channels, channels[-1])
        layers = []
        for before, after in zip(channels[::-1][:-1], channels[::-1][1:]):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       _vae_block(before, after), _vae_block(after, after)]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(channels[0], out_channels, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.to_latent(self.encoder(x)).chunk(2, dim=1)
        return mean, log_variance.clamp(-10.0, 10.0)

    def bottleneck_size(self, x: torch.Tensor) -> tuple[int, int]:
        """The encoder's output grid for input ``x`` (each stride-2 convolution: ``(n - 1) // 2 + 1``)."""
        size = list(x.shape[-2:])
        for _ in range(self.halvings):
            size = [(n - 1) // 2 + 1 for n in size]
        return size[0], size[1]

    def decode(self, latent: torch.Tensor, bottleneck_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Reconstruction from ``latent``; a dense latent needs the bottleneck's grid to stretch to."""
        if self.dense_latent:
            grid = self.from_vector(latent).view(-1, self.bottleneck_channels, DENSE_GRID, DENSE_GRID)
            latent = nn.functional.interpolate(grid, size=bottleneck_size, mode="bilinear", align_corners=False)
        return self.decoder(self.from_latent(latent))

    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encode(x)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        return self.decode(latent, self.bottleneck_size(x)), mean, log_variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0], self.bottleneck_size(x))


class SliceSkipAE(nn.Module):
    """An autoencoder with skip connections (Baur et al. 2020): the decoder of :class:`SliceVAE`,
    fed at each level by the encoder's features through channel dropout of rate ``skip_dropout``.

    Skip connections keep detail a bottleneck loses, but a network trained on clean slices learns
    to copy its input through them, lesions included. Dropping whole skip channels in training
    (off at inference, so a scan always gives the same map) makes the decoder complete slices from
    what the bottleneck and the remaining channels say a healthy slice holds.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 skip_dropout: float = 0.5):
        super().__init__()
        channels = list(channels)
        self.first = _vae_block(in_channels, channels[0])
        self.downs = nn.ModuleList(nn.Sequential(_vae_block(before, after, stride=2), _vae_block(after, after))
                                   for before, after in zip(channels[:-1], channels[1:]))
        self.skip_dropout = nn.Dropout2d(skip_dropout)
        self.ups = nn.ModuleList(nn.Sequential(_vae_block(before + after, after), _vae_block(after, after))
                                 for before, after in zip(channels[::-1][:-1], channels[::-1][1:]))
        self.last = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.first(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, self.skip_dropout(skip)], dim=1))
        return self.last(x)


class ConditionedSliceUNet(nn.Module):
    """A :class:`SliceUNet` conditioned on its last input channel through a vector (cDDPM).

    A condition encoder (stride-2 blocks, global average, linear) turns the last input channel —
    for the conditioned diffusion model the original slice — into ``condition_size`` numbers, given
    to the U-Net as that many constant channels in place of the image itself: the global profile of
    the slice (its intensities, its anatomy's rough layout) conditions the restoration, while a
    lesion's detail cannot pass through so few numbers.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 strides=DEFAULT_UNET["strides"], num_res_units: int = DEFAULT_UNET["num_res_units"],
                 condition_size: int = 16):
        super().__init__()
        layers, before = [], 1
        for after in channels[:-1]:
            layers.append(_vae_block(before, after, stride=2))
            before = after
        self.condition_encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                               nn.Linear(before, condition_size))
        self.unet = SliceUNet(in_channels - 1 + condition_size, out_channels, channels, strides, num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        condition = self.condition_encoder(x[:, -1:])[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.unet(torch.cat([x[:, :-1], condition], dim=1))


class SliceCritic(nn.Module):
    """A WGAN critic: stride-2 blocks with layer normalisation (no batch statistics, as the
    gradient penalty asks), a global average (the features f-AnoGAN compares) and a linear score."""

    def __init__(self, channels=DEFAULT_UNET["channels"]):
        super().__init__()
        layers, before = [], 1
        for after in channels:
            layers += [nn.Conv2d(before, after, 3, stride=2, padding=1), nn.GroupNorm(1, after), nn.LeakyReLU(0.2)]
            before = after
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.score = nn.Linear(before, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.body(x))


class SliceFAnoGAN(nn.Module):
    """f-AnoGAN (Schlegl et al. 2019): a generator from a dense latent vector, a WGAN critic, and an
    encoder that maps a slice to the latent whose generated slice resembles it.

    Encoder and generator are the two halves of a dense :class:`SliceVAE` (its latent mean is the
    code, so slices of any size fit); ``forward`` is the reconstruction ``G(E(x))``.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 latent: int = 128):
        super().__init__()
        self.autoencoder = SliceVAE(in_channels, out_channels, channels, dense_latent=latent)
        self.critic = SliceCritic(channels)
        self.latent = latent

    def encoder_parameters(self):
        return [*self.autoencoder.encoder.parameters(), *self.autoencoder.to_latent.parameters()]

    def generator_parameters(self):
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.autoencoder.parameters() if id(p) not in encoder]

    def generate(self, latent: torch.Tensor, bottleneck_size: tuple[int, int]) -> torch.Tensor:
        return self.autoencoder.decode(latent, bottleneck_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder(x)


class SliceUNetEncoder(nn.Module):
    """The first ``levels`` down-sampling blocks of the MONAI U-Net that :class:`SliceUNet` builds,
    and nothing else (``features.encoder_features`` reads them): STFPM's student, shaped like its
    teacher's encoder."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=DEFAULT_UNET["channels"],
                 strides=DEFAULT_UNET["strides"], num_res_units: int = DEFAULT_UNET["num_res_units"],
                 levels: int = 3):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units)
        block = self.unet.model
        for level in range(levels):  # a level: (down, SkipConnection(deeper levels), up)
            block[2] = nn.Identity()
            if level == levels - 1:
                block[1].submodule = nn.Identity()
            block = block[1].submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("an encoder's outputs are read level by level (features.encoder_features)")


ARCHITECTURES = {ARCHITECTURE: SliceUNet, ENCODER_ARCHITECTURE: SliceUNetEncoder, VAE_ARCHITECTURE: SliceVAE, SKIP_AE_ARCHITECTURE: SliceSkipAE,
                 CONDITIONED_ARCHITECTURE: ConditionedSliceUNet, FANOGAN_ARCHITECTURE: SliceFAnoGAN}
ARCHITECTURE_DEFAULTS = {
    ARCHITECTURE: DEFAULT_UNET, CONDITIONED_ARCHITECTURE: DEFAULT_UNET, ENCODER_ARCHITECTURE: DEFAULT_UNET,
    VAE_ARCHITECTURE: {"channels": DEFAULT_UNET["channels"], "latent_channels": DEFAULT_VAE_LATENT},
    SKIP_AE_ARCHITECTURE: {"channels": DEFAULT_UNET["channels"]},
    FANOGAN_ARCHITECTURE: {"channels": DEFAULT_UNET["channels"]}}


def network_spec(heads: Sequence[str], context: int, unet: dict | None = None,
                 output_bias: float = 0.0, architecture: str = ARCHITECTURE, extra_channels: int = 0) -> dict:
    """The ``network`` block of a bundle's metadata (``unet``: the architecture's own arguments;
    ``extra_channels``: inputs beyond the slices and the mask, e.g. a diffusion step)."""
    defaults = ARCHITECTURE_DEFAULTS[architecture]
    args = {**defaults, **(unet or {}), "in_channels": 2 * context + 2 + extra_channels, "out_channels": 1}
    if architecture == ARCHITECTURE:
        args["output_bias"] = output_bias
    return {"architecture": architecture, "args": args, "heads": list(heads), "context": int(context),
            "clip": CLIP, "pad_multiple": PAD_MULTIPLE}


def build_networks(spec: dict) -> nn.ModuleDict:
    network_class = ARCHITECTURES.get(spec.get("architecture"))
    if network_class is None:
        from ...errors import ModelError

        raise ModelError(f"network architecture '{spec.get('architecture')}' is unknown to this "
                         "version of UADBrain — update UADBrain or retrain the model.")
    return nn.ModuleDict({head: network_class(**spec["args"]) for head in spec["heads"]})


def load_networks(bundle, device: str = "cpu") -> nn.ModuleDict:
    """The bundle's networks with verified weights, on ``device``, in eval mode."""
    return bundle.load_weights_into(build_networks(bundle.metadata["network"]), device)


def prepare(image: np.ndarray, mask: np.ndarray, clip: float = CLIP) -> np.ndarray:
    """Network input intensities: clipped, 0 outside the brain."""
    return np.where(mask, np.clip(image, -clip, clip), 0.0).astype(np.float32)


def context_indices(centres: np.ndarray, context: int, depth: int) -> np.ndarray:
    """Slice indices ``centre - context … centre + context`` per centre, clamped to the volume."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(centres)[:, None] + offsets[None, :], 0, depth - 1)


def slice_inputs(prepared: np.ndarray, mask: np.ndarray, centres: np.ndarray, context: int) -> np.ndarray:
    """Network inputs ``[n, 2·context + 2, P, L]``: neighbouring slices, then the centre's mask."""
    indices = context_indices(centres, context, prepared.shape[0])
    stack = prepared[indices]  # [n, 2c+1, P, L]
    return np.concatenate([stack, mask[centres][:, None].astype(np.float32)], axis=1)


def brain_box(mask: np.ndarray, multiple: int = PAD_MULTIPLE, margin: int = 2):
    """Slices of the brain's bounding box in S, and in P and L padded to ``multiple``.

    Returns ``(s_slice, p_slice, l_slice, pad)``: the in-plane window may extend past the array,
    ``pad`` gives the zero padding ((before, after) for P and L) that makes it fit.
    """
    present = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    s_slice = slice(int(present[0][0]), int(present[0][-1]) + 1)
    windows, pads = [], []
    for axis in (1, 2):
        lo, hi = int(present[axis][0]) - margin, int(present[axis][-1]) + 1 + margin
        size = -(-(hi - lo) // multiple) * multiple
        lo -= (size - (hi - lo)) // 2
        hi = lo + size
        before, after = max(0, -lo), max(0, hi - mask.shape[axis])
        windows.append(slice(lo + before, hi - after))
        pads.append((before, after))
    return s_slice, windows[0], windows[1], pads


def predict_volume(forward: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                   mask: np.ndarray, context: int, device: str, batch_size: int = 16,
                   progress: Callable[[float], None] | None = None,
                   is_cancelled: Callable[[], bool] | None = None, paired: np.ndarray | None = None,
                   channels: int | None = None) -> np.ndarray:
    """Run a slice network over every brain slice of one prepared volume.

    Returns the network's first output channel on the full ``[S, P, L]`` grid (0 outside the
    brain's bounding box), or with ``channels`` its first ``channels`` as ``[C, S, P, L]``. With ``paired`` (a second prepared volume, e.g. a reconstruction to
    compare with), each input holds the second volume's slice inputs after the first's.
    """
    from ..device_memory import run_in_batches

    output = np.zeros(image.shape if channels is None else (channels, *image.shape), np.float32)
    if not mask.any():
        return output
    s_slice, p_slice, l_slice, pads = brain_box(mask)
    crop_image = np.pad(image[:, p_slice, l_slice], [(0, 0), *pads])
    crop_mask = np.pad(mask[:, p_slice, l_slice], [(0, 0), *pads])
    crop_paired = None if paired is None else np.pad(paired[:, p_slice, l_slice], [(0, 0), *pads])
    centres = np.arange(s_slice.start, s_slice.stop)
    crop_out = np.zeros((channels or 1, *crop_image.shape), np.float32)

    def run_batch(start: int, stop: int) -> None:
        batch = centres[start:stop]
        inputs = slice_inputs(crop_image, crop_mask, batch, context)
        if crop_paired is not None:
            inputs = np.concatenate([inputs, slice_inputs(crop_paired, crop_mask, batch, context)], axis=1)
        inputs = torch.from_numpy(inputs).to(device)
        crop_out[:, batch] = forward(inputs)[:, :channels or 1].transpose(0, 1).float().cpu().numpy()
        if progress:
            progress(stop / centres.size)

    if hasattr(forward, "start_volume"):  # a stochastic forward: its noise by slice position (diffusion.py)
        forward.start_volume(centres.size)
    with torch.inference_mode():
        run_in_batches(centres.size, run_batch, device, batch_size, checkpoint=getattr(forward, "checkpoint", None),
                       restore=getattr(forward, "restore", None), is_cancelled=is_cancelled)
    (p0, p1), (l0, l1) = pads
    unpadded = crop_out[:, :, p0:crop_out.shape[2] - p1, l0:crop_out.shape[3] - l1]
    output[..., p_slice, l_slice] = unpadded if channels else unpadded[0]
    return output


class SliceNetworkModel:
    """Mixin for models that run a slice network per contrast: loading, batching, progress."""

    batch_size = 16

    def _load(self) -> None:
        self.spec = self.bundle.metadata["network"]
        self.networks = load_networks(self.bundle, self.device)

    def _forwards_for(self, head: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """What turns a batch of slice inputs into outputs, once per output wanted: the head's
        network itself, here (a stochastic model may give several samplers)."""
        return [self.networks[head]]

    def _run_per_contrast(self, head_for: Callable[[str], str], images: dict, brain_mask: np.ndarray,
                          message: str, progress=None, is_cancelled=None) -> dict[str, tuple]:
        """``{contrast: (prepared input, [network output per forward])}`` for every given contrast."""
        results = {}
        for index, (contrast, image) in enumerate(images.items()):
            prepared = prepare(image, brain_mask, self.spec.get("clip", CLIP))
            forwards = self._forwards_for(head_for(contrast))
            outputs = []
            runs = len(images) * len(forwards)  # progress is shared evenly by every contrast's every forward
            for run, forward in enumerate(forwards):
                done = (index * len(forwards) + run) / runs
                report = ((lambda f, d=done, c=contrast: progress(d + f / runs, f"{message} {c}"))
                          if progress else None)
                outputs.append(predict_volume(forward, prepared, brain_mask, self.spec["context"], self.device,
                                              self.batch_size, progress=report, is_cancelled=is_cancelled))
            results[contrast] = (prepared, outputs)
        return results
