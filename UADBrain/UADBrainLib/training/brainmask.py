"""Training the learned brain extractor on synthetic whole heads (``uadbrain train --model brainmask``).

Every step draws a fresh synthetic head from the SynthSeg label maps (``synthesis/brains.py``): a random
contrast (T1, T2, FLAIR, T1c-like or fully random per tissue), pose, field of view, thick slices,
blur, bias and noise; ``head_augmentation.py`` adds field-of-view cut-offs, skull-stripped inputs,
flips and gamma. The last label maps are held out: validation heads come only from them. Heads are
made by a background worker while the network trains; checkpoints allow resuming.

The result is a complete bundle folder (``metadata.json``, ``weights.pt``, ``training_log.csv``,
``validation.json``) that ``brainmask_net.BrainMaskModel`` loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from scipy import ndimage

from .. import __version__
from ..bundle import write_metadata
from ..device import resolve_device
from ..inference.brainmask_net import (BRAINMASK_BUNDLE, MARGIN_VOXELS, TASK, build_network, normalise_head,
                                       pad_for_network)
from .common import train_whole_volumes, write_weights
from .head_augmentation import AugmentationConfig, HeadSample, augment, crop_around_brain, network_input, skull_strip

SPACING_MM = 2.0
CONTRAST_MIX = {"t1": 0.18, "t2": 0.15, "flair": 0.18, "t1c": 0.09, "random": 0.40}
FIELD_OF_VIEW_VOXELS = (96, 112, 128)  # per axis, at 2 mm: 192 to 256 mm
NETWORK = {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                    "num_res_units": 1}}
VALIDATION_KINDS = ("raw", "augmented", "stripped")


@dataclasses.dataclass
class BrainmaskTrainingOptions:
    label_maps: Path
    out: Path
    steps: int = 6000
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    validate_every: int = 250
    validation_heads: int = 12
    held_out_maps: int = 2  # the last label maps (sorted by name) are never trained on
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    workers: int = 1  # background processes making heads
    reuse: int = 2  # training steps per synthetic head, each with its own augmentation
    field_of_view_voxels: tuple[int, ...] = FIELD_OF_VIEW_VOXELS
    resume: bool = False


# --------------------------------------------------------------------------- metrics

def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric mean distance between the two masks' boundary voxels (mm); spacing in array order."""
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() or not b.any():
        return float("inf")
    surface_a = a & ~ndimage.binary_erosion(a)
    surface_b = b & ~ndimage.binary_erosion(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)
    return float((to_b[surface_a].sum() + to_a[surface_b].sum()) / (surface_a.sum() + surface_b.sum()))


# --------------------------------------------------------------------------- synthetic heads

def split_label_maps(label_maps: Path, held_out: int) -> tuple[list[Path], list[Path]]:
    from ..synthesis.brains import find_label_maps

    paths = find_label_maps(label_maps)
    if len(paths) <= held_out:
        raise ValueError(f"{len(paths)} label maps in {label_maps}: need more than the "
                         f"{held_out} held out for validation")
    return paths[:-held_out] if held_out else paths, paths[-held_out:] if held_out else []


def draw_head(synthesizer, rng: np.random.Generator,
              field_of_view_voxels=FIELD_OF_VIEW_VOXELS) -> tuple[HeadSample, str]:
    """One random synthetic whole head (random contrast and field of view) and its contrast."""
    contrast = str(rng.choice(list(CONTRAST_MIX), p=list(CONTRAST_MIX.values())))
    field_of_view = [float(rng.choice(field_of_view_voxels)) * SPACING_MM for _ in range(3)]
    head = synthesizer.sample(rng, contrasts=(contrast,), spacing=SPACING_MM, skull_strip=False,
                              field_of_view_mm=field_of_view)
    mask = head.brain_mask.astype(bool)
    return HeadSample(head.images[contrast], mask, np.ones(mask.shape, bool)), contrast


# raw heads: any tilt, no bias correction, often thick slices
SYNTHESIS_OVERRIDES = {"rotation_deg": 20.0, "thick_slice_probability": 0.4,
                       "blur_voxels": (0.0, 0.5), "bias_sd": (0.0, 0.3)}


def _synthesizer(paths: list[Path]):
    from ..synthesis.brains import SynthesisConfig, Synthesizer

    return Synthesizer(paths, SynthesisConfig(**SYNTHESIS_OVERRIDES))


def head_stream(paths: list[Path], seed: int, reuse: int = 2,
                field_of_view_voxels=FIELD_OF_VIEW_VOXELS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless augmented training pairs (input, mask); each head is augmented ``reuse`` times
    (making a head costs more than augmenting it)."""
    synthesizer = _synthesizer(paths)
    rng = np.random.default_rng(seed)
    config = AugmentationConfig()
    while True:
        head, _ = draw_head(synthesizer, rng, field_of_view_voxels)
        for _ in range(reuse):
            sample = augment(head, rng, config)
            yield network_input(sample, rng, config), sample.mask


def validation_heads(paths: list[Path], count: int, seed: int = 12345,
                     field_of_view_voxels=FIELD_OF_VIEW_VOXELS):
    """Fixed heads (input, mask, contrast, kind) from held-out label maps, in turn of each kind:
    raw, augmented (field of view, flips, gamma) and skull-stripped in a tight field of view."""
    synthesizer = _synthesizer(paths)
    rng = np.random.default_rng(seed)
    config = AugmentationConfig()
    heads = []
    for index in range(count):
        head, contrast = draw_head(synthesizer, rng, field_of_view_voxels)
        kind = VALIDATION_KINDS[index % len(VALIDATION_KINDS)]
        if kind == "augmented":
            head = augment(head, rng, dataclasses.replace(config, skull_strip_probability=0.0))
        elif kind == "stripped":
            head = crop_around_brain(skull_strip(head, rng, config), rng, config.tight_margin_voxels)
        image = network_input(head, rng, config) if kind == "augmented" else normalise_head(
            head.image, head.valid)
        heads.append((image, head.mask, contrast, kind))
    return heads


class HeadDataset(torch.utils.data.IterableDataset):
    """Torch view of :func:`head_stream`, one seed per worker (and per resume point)."""

    def __init__(self, paths: list[Path], seed: int, reuse: int, field_of_view_voxels):
        self.paths, self.seed, self.reuse = paths, seed, reuse
        self.field_of_view_voxels = field_of_view_voxels

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        seed = self.seed * 1000 + (info.id if info else 0)
        for image, mask in head_stream(self.paths, seed, self.reuse, self.field_of_view_voxels):
            yield torch.from_numpy(image)[None], torch.from_numpy(mask.astype(np.float32))[None]


# --------------------------------------------------------------------------- training

def predict_grid(network, array: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Probability for one normalised array (network already in eval mode)."""
    padded, crop = pad_for_network(array, MARGIN_VOXELS)
    with torch.inference_mode():
        logits = network(torch.from_numpy(padded)[None, None].to(device))
    return torch.sigmoid(logits)[0, 0].cpu().numpy()[crop]


def validate(network, heads, device: str = "cpu") -> dict:
    """Dice per kind and contrast of the held-out heads (the training loop puts the network in eval mode)."""
    scores = {}
    for image, mask, contrast, kind in heads:
        value = dice(predict_grid(network, image, device) >= 0.5, mask)
        for key in ("all", contrast, kind):
            scores.setdefault(key, []).append(value)
    summary = {"dice_mean": float(np.mean(scores["all"])), "dice_min": float(np.min(scores["all"]))}
    summary.update({f"dice_{key}": float(np.mean(values)) for key, values in sorted(scores.items())
                    if key != "all"})
    return summary


def train_brainmask(options: BrainmaskTrainingOptions,
                    log: Callable[[str], None] = print) -> Path:
    """Train and write the bundle into ``options.out``; returns the bundle folder."""
    from monai.losses import DiceCELoss

    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    train_paths, held_out_paths = split_label_maps(Path(options.label_maps), options.held_out_maps)
    log(f"label maps: {len(train_paths)} for training, {len(held_out_paths)} held out "
        f"({', '.join(p.name for p in held_out_paths)})")

    device = resolve_device(options.device)
    network = build_network(NETWORK).to(device)
    heads = validation_heads(held_out_paths or train_paths, options.validation_heads,
                             field_of_view_voxels=options.field_of_view_voxels)

    def make_loader(step: int):
        return torch.utils.data.DataLoader(
            HeadDataset(train_paths, options.seed + step, options.reuse, options.field_of_view_voxels),
            batch_size=None, num_workers=options.workers, prefetch_factor=2 if options.workers else None)

    step, wall, history = train_whole_volumes(
        network, make_loader, DiceCELoss(sigmoid=True), lambda net: validate(net, heads, device), out,
        options.steps, options.learning_rate, options.warmup_steps, options.validate_every, options.resume,
        device, log)
    return write_bundle(network, out, options, step, wall, history)


def write_bundle(network, out: Path, options: BrainmaskTrainingOptions, steps: int, wall_s: float,
                 history: list[dict]) -> Path:
    weights = write_weights(network.state_dict(), out)
    (out / "validation.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    metadata = {
        "schema_version": 1,
        "name": BRAINMASK_BUNDLE,
        "version": "1.0.0",
        "title": "Learned brain extraction (any contrast, raw heads)",
        "description": "A small 3D U-Net trained only on synthetic whole heads (random contrast, "
                       "pose, resolution, field of view, bias, noise) that outputs the brain mask "
                       "(brain tissue + CSF inside the skull) of any raw head scan.",
        "family": "brainmask",
        "task": TASK,
        "contrasts": [],
        "input": "one MRI volume of any contrast (T1, T2, FLAIR, T1c, ...), raw or skull-stripped",
        "preprocessing": {"spacing_mm": SPACING_MM, "margin_voxels": MARGIN_VOXELS, "normalisation": "head percentiles 0.5-99.5"},
        "network": NETWORK,
        "postprocessing": {"threshold": 0.5, "largest_component": True, "fill_holes": True},
        "weights": weights,
        "expected_runtime_s": {"cpu": 5},
        "training": {
            "uadbrain_version": __version__,
            "steps": steps, "wall_s": round(wall_s), "threads": options.threads,
            "learning_rate": options.learning_rate, "seed": options.seed,
            "contrast_mix": CONTRAST_MIX, "field_of_view_voxels": list(options.field_of_view_voxels),
            "heads_reused": options.reuse, "synthesis_overrides": SYNTHESIS_OVERRIDES,
            "augmentation": dataclasses.asdict(AugmentationConfig()),
            "held_out_label_maps": options.held_out_maps,
            "final_validation": history[-1] if history else None,
        },
        "license": "Apache-2.0",
        "references": [
            "Hoopes A, Mora JS, Dalca AV, Fischl B, Hoffmann M. SynthStrip: skull-stripping for any "
            "brain image. NeuroImage 260, 2022.",
            "Billot B et al. SynthSeg: segmentation of brain MRI scans of any contrast and "
            "resolution without retraining. Medical Image Analysis 86, 2023.",
        ],
    }
    write_metadata(out, metadata)
    return out
