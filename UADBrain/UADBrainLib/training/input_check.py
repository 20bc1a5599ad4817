"""Training the input check (``uadbrain train --model input-check``) on synthetic volumes only.

Two phases, both resumable:

1. *Make samples* (the costly part): per synthetic anatomy, one FLAIR, T1, T2 and T1c image from
   the SynthSeg label maps (``synthesis/brains.py``) with heavy augmentation — wider contrast, bias,
   noise, thick slices, pose and size ranges than the default generator, monotone intensity
   warps, lesions and large tumours (``anomalies.py``), imperfect brain masks (eroded, dilated
   into the skull as a coarse atlas mask would be, shifted, cut by the field of view) — plus
   ``other`` volumes: toy phantoms, piecewise-constant blobs, smooth random fields, noise, label
   images, CT-like heads, mis-scaled and heavily corrupted brains. Each becomes the network input of
   ``input_check.network_input`` and is stored in shards of ``.npy`` files.
2. *Train* the tiny CNN on the shards with cheap coarse-grid augmentation (flips, shifts, scale).

The last label maps are held out: the validation set (accuracy, confusion matrix and the decision
rule's false alarms and caught swaps) comes only from them. Real scans are never used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from .. import __version__
from ..errors import InputError
from ..inference.input_check import (CLASSES, GRID_SHAPE, GRID_SPACING_MM, GROUP_OF, INPUT_CHECK_BUNDLE, TASK,
                                     build_network, decide, network_input)
from ..preprocessing import normalise
from .common import CHECKPOINT_FILE, load_checkpoint, save_checkpoint, warmup_cosine, write_weights

BRAIN_CONTRASTS = ("flair", "t1", "t2", "t1c")
NETWORK = {"name": "ContrastNet", "in_channels": 2, "channels": [12, 24, 48, 64], "dropout": 0.2,
           "classes": list(CLASSES)}
WARMUP_STEPS = 100
SHARD_ANATOMIES = 25  # anatomies per shard file
OTHER_PER_ANATOMY = 1.0  # 'other' volumes made per anatomy (20 % of the samples)
OTHER_KINDS = {"phantom": 0.2, "blobs": 0.15, "field": 0.15, "noise": 0.08, "labels": 0.1,
               "ct": 0.1, "misscaled": 0.12, "corrupted": 0.1}


@dataclasses.dataclass
class InputCheckTrainingOptions:
    label_maps: Path
    out: Path
    anatomies: int = 1000  # training anatomies (4 brain samples each, plus 'other' samples)
    validation_anatomies: int = 60
    steps: int = 3000
    batch_size: int = 24
    learning_rate: float = 2e-3
    label_smoothing: float = 0.02
    validate_every: int = 500
    held_out_maps: int = 3  # the last label maps (sorted by name) are never trained on
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    cache_dir: Path | None = None  # shards of samples (default: <out>/samples)
    resume: bool = False

    @property
    def samples_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "samples"


# --------------------------------------------------------------------------- synthetic brains

def synthesis_config():
    """The generator's ranges, widened: scanners, ages and acquisitions the check must accept.

    The per-tissue jitter is wide on purpose: real T1 scans (older 1.5 T T1c above all) can have
    a cortex nearly as bright as white matter, and the check must not be sure such a scan is FLAIR.
    """
    from ..synthesis.brains import SynthesisConfig

    return SynthesisConfig(rotation_deg=25.0, scaling=(0.8, 1.2), shift_mm=15.0,
                           ventricle_growth_mm=(0.0, 4.0), cortical_atrophy_mm=(-1.0, 2.0),
                           contrast_strength_sd=0.3, tissue_jitter_sd=0.12, fluid_jitter_sd=0.2,
                           thick_slice_probability=0.4, slice_thickness_mm=(2.5, 7.0),
                           blur_voxels=(0.0, 0.7), bias_sd=(0.0, 0.35), noise=(0.005, 0.08))


def _lesions(brain, rng):
    from ..synthesis.anomalies import AnomalyConfig, add_anomalies

    config = AnomalyConfig(count=(1, 4), diameter_mm=(3.0, 70.0))
    return add_anomalies(brain, rng, config=config).images


def _ball_mm(mask: np.ndarray, radius_mm: float, spacing: float) -> np.ndarray:
    """Grow (radius > 0) or shrink (< 0) a mask by a distance in mm."""
    if radius_mm >= 0:
        return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm
    return ndimage.distance_transform_edt(mask, sampling=spacing) > -radius_mm


def imperfect_mask(brain_mask: np.ndarray, stripped: bool, spacing: float,
                   rng: np.random.Generator) -> np.ndarray:
    """The brain mask a real run might use: exact, a little off, coarse (atlas-like), or cut."""
    mask = brain_mask.astype(bool)
    draw = rng.random()
    if draw < 0.3:
        mask = _ball_mm(mask, rng.uniform(-3.0, 3.0), spacing)
    elif draw < 0.5 and not stripped:  # coarse masks (atlas registration), some taking in the skull
        mask = _ball_mm(mask, rng.uniform(3.0, 10.0) if rng.random() < 0.75 else rng.uniform(10.0, 20.0), spacing)
        shift = rng.integers(-2, 3, 3)
        mask = np.roll(mask, tuple(int(s) for s in shift), axis=(0, 1, 2))
    if rng.random() < 0.15:  # a field of view that misses the top or bottom of the brain
        rows = np.flatnonzero(mask.any(axis=(1, 2)))
        if rows.size > 10:
            cut = int(rng.uniform(0.05, 0.3) * rows.size)
            if rng.random() < 0.5:
                mask[: rows[0] + cut] = False
            else:
                mask[rows[-1] - cut:] = False
    return mask if mask.sum() > 1000 else brain_mask.astype(bool)


def gamma_warp(image: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random monotone intensity warp (x / median) ** gamma: contrast shape between scanners."""
    median = float(np.median(image[reference])) or 1.0
    return (median * np.power(np.clip(image / median, 0.0, None), np.exp(rng.normal(0.0, 0.2)))).astype(np.float32)


def brain_samples(synthesizer, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """One anatomy in every contrast: [(network input, class index)]."""
    spacing = float(rng.choice([2.0, 3.0], p=[0.6, 0.4]))
    brain = synthesizer.sample(rng, contrasts=BRAIN_CONTRASTS, spacing=spacing, skull_strip=False)
    images = _lesions(brain, rng) if rng.random() < 0.6 else brain.images
    stripped = rng.random() < 0.5
    brain_mask = brain.brain_mask.astype(bool)
    mask = imperfect_mask(brain_mask, stripped, spacing, rng)
    samples = []
    for contrast in BRAIN_CONTRASTS:
        image = images[contrast]
        if stripped:
            image = np.where(brain_mask, image, np.float32(0.0))
        image = gamma_warp(image, brain_mask, rng)
        samples.append((_to_input(image, mask, spacing), CLASSES.index(contrast)))
    return samples


def _to_input(image: np.ndarray, mask: np.ndarray, spacing: float) -> np.ndarray:
    return network_input(normalise(image, mask, "robust_z"), mask, (spacing,) * 3)


# --------------------------------------------------------------------------- 'other' volumes

def _smooth_field(rng: np.random.Generator, shape, cell_voxels: float) -> np.ndarray:
    coarse = rng.standard_normal([max(2, int(math.ceil(s / cell_voxels)) + 1) for s in shape])
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / max(field.std(), 1e-6)).astype(np.float32)


def _random_shape(rng: np.random.Generator, shape) -> np.ndarray:
    """A brain-sized random solid: an ellipsoid, possibly distorted by smooth noise."""
    grids = np.meshgrid(*[np.arange(n) - n / 2.0 for n in shape], indexing="ij")
    radii = [rng.uniform(0.25, 0.45) * n for n in shape]
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, radii)))
    if rng.random() < 0.6:
        radius = radius + rng.uniform(0.1, 0.4) * _smooth_field(rng, shape, rng.uniform(6, 20))
    return radius <= 1.0


def _grid(rng: np.random.Generator) -> tuple[tuple[int, int, int], float]:
    spacing = float(rng.uniform(1.5, 3.0))
    return tuple(int(rng.uniform(140, 200) / spacing) for _ in range(3)), spacing


def other_volume(kind: str, synthesizer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """One non-brain (or not usable) volume: (image, mask, spacing)."""
    if kind in ("ct", "labels", "misscaled", "corrupted"):
        return _from_brain(kind, synthesizer, rng)
    shape, spacing = _grid(rng)
    mask = _random_shape(rng, shape)
    if kind == "phantom":  # the test phantoms: a noisy flat ellipsoid, maybe with spheres in it
        image = np.full(shape, 100.0, np.float32) + rng.uniform(1, 15) * rng.standard_normal(shape).astype(np.float32)
        grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        for _ in range(int(rng.integers(0, 4))):
            centre = np.argwhere(mask)[rng.integers(mask.sum())]
            ball = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= rng.uniform(2, 12) ** 2
            image[ball] += rng.uniform(-60, 80)
    elif kind == "blobs":  # label-map-free piecewise-constant regions
        image = np.full(shape, rng.uniform(20, 200), np.float32)
        for _ in range(int(rng.integers(3, 15))):
            part = _random_shape(rng, shape)
            part = np.roll(part, tuple(int(s) for s in rng.integers(-15, 16, 3)), axis=(0, 1, 2))
            image[part] = rng.uniform(5, 300)
        image += rng.uniform(0.5, 10) * rng.standard_normal(shape).astype(np.float32)
    elif kind == "field":  # smooth random fields through a random nonlinearity
        field = sum(rng.uniform(0.2, 1.0) * _smooth_field(rng, shape, rng.uniform(2, 30)) for _ in range(3))
        warp = rng.choice(["exp", "abs", "sin", "step"])
        image = {"exp": lambda f: np.exp(f), "abs": np.abs, "sin": lambda f: 2 + np.sin(3 * f),
                 "step": lambda f: 1.0 + (f > rng.normal(0, 0.5))}[warp](field)
        image = (100 * image).astype(np.float32)
    else:  # noise textures
        image = {"gauss": lambda: rng.normal(100, 20, shape), "uniform": lambda: rng.uniform(0, 200, shape),
                 "rayleigh": lambda: rng.rayleigh(50, shape),
                 "correlated": lambda: 100 + 20 * _smooth_field(rng, shape, rng.uniform(1.5, 4))}[
            rng.choice(["gauss", "uniform", "rayleigh", "correlated"])]().astype(np.float32)
    image = np.clip(image, 0.0, None)
    return np.where(mask, image, 0.0).astype(np.float32), mask, spacing


# CT numbers (HU) per synthesis.Tissue, for CT-like heads (a CT passed as an MRI)
def _ct_lookup(rng: np.random.Generator) -> np.ndarray:
    from ..synthesis.brains import N_TISSUES, Tissue

    hu = np.full(N_TISSUES, 35.0)
    hu[Tissue.BACKGROUND] = -1000.0
    hu[[Tissue.CEREBRAL_WM, Tissue.CEREBELLAR_WM, Tissue.PERIVENTRICULAR_WM]] = 27.0
    hu[[Tissue.VENTRICLE, Tissue.CSF, Tissue.OUTER_CSF, Tissue.SPINAL_CSF, Tissue.EYE]] = 6.0
    hu[Tissue.SKULL] = rng.uniform(800, 1500)
    hu[Tissue.MARROW] = rng.uniform(250, 600)
    hu[Tissue.SOFT_TISSUE] = rng.uniform(-100, 40)
    hu[[Tissue.MUCOSA, Tissue.SKIN]] = 30.0
    return hu.astype(np.float32)


def _from_brain(kind: str, synthesizer, rng: np.random.Generator):
    spacing = 3.0
    contrast = str(rng.choice(BRAIN_CONTRASTS))
    brain = synthesizer.sample(rng, contrasts=(contrast,), spacing=spacing, skull_strip=False)
    mask = brain.brain_mask.astype(bool)
    image = brain.images[contrast]
    if kind == "ct":  # the whole head in the mask: skull and fat included
        image = _ct_lookup(rng)[brain.labels] + 1000.0
        noise = rng.uniform(2, 8) * rng.standard_normal(image.shape)
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.0)) + noise
        mask = brain.labels > 0
    elif kind == "labels":  # a label image (segmentation) passed as an image
        image = brain.labels.astype(np.float32) * rng.uniform(0.5, 3)
        mask = _ball_mm(mask, rng.uniform(0, 4), spacing) if rng.random() < 0.5 else mask
    elif kind == "misscaled":  # wrong voxel size in the header: a brain far too small or large
        factor = rng.uniform(0.3, 0.5) if rng.random() < 0.5 else rng.uniform(2.0, 3.0)
        image = ndimage.zoom(image, factor, order=1)
        mask = ndimage.zoom(mask.astype(np.float32), factor, order=1) >= 0.5
        if factor > 1:  # keep a brain-sized field of view around the centre
            box = tuple(slice(max(0, n // 2 - 32), n // 2 + 32) for n in image.shape)
            image, mask = image[box], mask[box]
    else:  # heavily corrupted: noise far above the signal, or shuffled blocks
        median = float(np.median(image[mask]))
        if rng.random() < 0.5:
            sigma = rng.uniform(0.8, 2.0) * median
            image = np.hypot(image + sigma * rng.standard_normal(image.shape),
                             sigma * rng.standard_normal(image.shape))
        else:
            block = int(rng.integers(3, 8))
            cut = tuple(n - n % block for n in image.shape)
            image, mask = image[:cut[0], :cut[1], :cut[2]], mask[:cut[0], :cut[1], :cut[2]]
            blocks = image.reshape(cut[0] // block, block, cut[1] // block, block, cut[2] // block, block)
            blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(-1, block, block, block)
            blocks = blocks[rng.permutation(len(blocks))]
            shape = (cut[0] // block, cut[1] // block, cut[2] // block, block, block, block)
            image = blocks.reshape(shape).transpose(0, 3, 1, 4, 2, 5).reshape(cut)
    return np.clip(image, 0.0, None).astype(np.float32), mask, spacing


def other_sample(synthesizer, rng: np.random.Generator) -> np.ndarray | None:
    kind = str(rng.choice(list(OTHER_KINDS), p=np.array(list(OTHER_KINDS.values())) / sum(OTHER_KINDS.values())))
    image, mask, spacing = other_volume(kind, synthesizer, rng)
    if mask.sum() < 500 or np.ptp(image[mask]) <= 0:
        return None
    try:
        return _to_input(image, mask, spacing)
    except InputError:  # no contrast inside the mask: the pipeline refuses such images before the check
        return None


# --------------------------------------------------------------------------- sample shards

def _synthesizer(paths):
    from ..synthesis.brains import Synthesizer

    return Synthesizer(paths, synthesis_config())


def split_label_maps(label_maps: Path, held_out: int):
    from ..synthesis.brains import find_label_maps

    paths = find_label_maps(label_maps)
    if len(paths) <= held_out:
        raise ValueError(f"{len(paths)} label maps in {label_maps}: need more than {held_out}")
    return paths[:-held_out], paths[-held_out:]


def make_shard(synthesizer, seed: int, anatomies: int) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (float16) and class indices of ``anatomies`` anatomies plus 'other' volumes."""
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for _ in range(anatomies):
        for sample, label in brain_samples(synthesizer, rng):
            inputs.append(sample)
            labels.append(label)
        for _ in range(rng.poisson(OTHER_PER_ANATOMY)):
            sample = other_sample(synthesizer, rng)
            if sample is not None:
                inputs.append(sample)
                labels.append(CLASSES.index("other"))
    return np.stack(inputs).astype(np.float16), np.array(labels, np.int64)


def ensure_shards(folder: Path, name: str, paths, anatomies: int, seed: int,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Make the missing shards ``<name>_<i>.npy`` (+ ``_labels``) in ``folder``; return them all."""
    folder.mkdir(parents=True, exist_ok=True)
    synthesizer = _synthesizer(paths)
    shards = []
    count = math.ceil(anatomies / SHARD_ANATOMIES)
    for index in range(count):
        path = folder / f"{name}_{index:04d}.npy"
        labels_path = path.with_name(path.stem + "_labels.npy")
        if not (path.is_file() and labels_path.is_file()):
            started = time.perf_counter()
            size = min(SHARD_ANATOMIES, anatomies - index * SHARD_ANATOMIES)
            inputs, labels = make_shard(synthesizer, seed * 100_000 + index, size)
            np.save(labels_path.with_suffix(".tmp.npy"), labels)
            np.save(path.with_suffix(".tmp.npy"), inputs)
            labels_path.with_suffix(".tmp.npy").replace(labels_path)
            path.with_suffix(".tmp.npy").replace(path)
            log(f"{name} shard {index + 1}/{count}: {len(labels)} samples in "
                f"{time.perf_counter() - started:.0f} s")
        shards.append(path)
    return shards


def load_shards(shards: list[Path]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Memory-mapped inputs per shard, and for every sample its (shard, row) and class."""
    arrays, where, labels = [], [], []
    for number, path in enumerate(shards):
        arrays.append(np.load(path, mmap_mode="r"))
        shard_labels = np.load(path.with_name(path.stem + "_labels.npy"))
        where += [(number, row) for row in range(len(shard_labels))]
        labels.append(shard_labels)
    return arrays, np.array(where), np.concatenate(labels)


# --------------------------------------------------------------------------- training

def augment_batch(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap coarse-grid augmentation: flips, shifts of up to 3 voxels, z-scale jitter."""
    out = np.empty_like(batch)
    for index, sample in enumerate(batch):
        for axis, p in ((3, 0.5), (2, 0.1), (1, 0.1)):  # L-R often; upside down / front-back rarely
            if rng.random() < p:
                sample = np.flip(sample, axis)
        shift = rng.integers(-3, 4, 3)
        sample = np.roll(sample, tuple(int(s) for s in shift), axis=(1, 2, 3))
        scaled = sample.copy()
        scaled[0] *= np.float32(np.exp(rng.normal(0.0, 0.1)))
        out[index] = scaled
    return out


def _refused(given: str, probabilities: dict[str, float]) -> bool:
    try:
        decide({given: probabilities})
    except InputError:
        return True
    return False


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, group accuracy, confusion matrix and the decision rule on labelled samples.

    ``false_alarms``: brain samples given as their own contrast that the rule refuses (must be 0);
    ``caught``: brain samples given as a contrast of another group that the rule refuses.
    """
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), int)
    for truth, guess in zip(labels, predicted):
        confusion[truth, guess] += 1
    groups = np.array([GROUP_OF[c] for c in CLASSES])
    false_alarms = caught = wrong_given = other_warned = 0
    for row, truth in zip(probabilities, labels):
        probs = dict(zip(CLASSES, map(float, row)))
        if CLASSES[truth] == "other":
            other_warned += probs["other"] >= 0.9
            continue
        for given in BRAIN_CONTRASTS:
            refused = _refused(given, probs)
            if GROUP_OF[given] == GROUP_OF[CLASSES[truth]]:
                false_alarms += refused
            else:
                wrong_given += 1
                caught += refused
    brains = int((labels != CLASSES.index("other")).sum())
    return {"accuracy": float((predicted == labels).mean()),
            "group_accuracy": float((groups[predicted] == groups[labels]).mean()),
            "false_alarms": int(false_alarms), "brain_samples": brains,
            "caught_wrong_contrast": round(caught / max(wrong_given, 1), 4),
            "other_warned": round(other_warned / max(len(labels) - brains, 1), 4),
            "confusion": confusion.tolist()}


def recalibrate_batch_norm(network, arrays, where, rng: np.random.Generator, batches: int = 60,
                           batch_size: int = 24) -> None:
    """Replace BatchNorm's running averages by exact averages over augmented training batches.

    The running averages lag behind the weights while they change fast, and the network then
    scores worse in eval mode than in training; recomputing them with the final weights fixes it.
    """
    import torch

    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    network.train()
    device = next(network.parameters()).device
    with torch.no_grad():
        for _ in range(batches):
            chosen = rng.integers(len(where), size=batch_size)
            batch = np.stack([arrays[s][r] for s, r in where[chosen]]).astype(np.float32)
            network(torch.from_numpy(augment_batch(batch, rng)).to(device))
    for norm in norms:
        norm.momentum = 0.1
    network.eval()


def predict_all(network, arrays, where, device: str, batch_size: int = 32) -> np.ndarray:
    import torch

    network.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(where), batch_size):
            batch = np.stack([arrays[s][r] for s, r in where[start:start + batch_size]]).astype(np.float32)
            out.append(torch.softmax(network(torch.from_numpy(batch).to(device)), 1).cpu().numpy())
    network.train()
    return np.concatenate(out)


def train_input_check(options: InputCheckTrainingOptions, log: Callable[[str], None] = print) -> Path:
    """Make the samples, train, and write the bundle into ``options.out``; returns the folder."""
    import torch

    from ..device import resolve_device

    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_paths, held_out = split_label_maps(Path(options.label_maps), options.held_out_maps)
    log(f"label maps: {len(train_paths)} for training, held out: {', '.join(p.name for p in held_out)}")
    validation_shards = ensure_shards(options.samples_dir, "validation", held_out,
                                      options.validation_anatomies, options.seed + 7, log)
    train_shards = ensure_shards(options.samples_dir, "train", train_paths, options.anatomies, options.seed, log)
    generation_s = time.perf_counter() - started
    arrays, where, labels = load_shards(train_shards)
    val_arrays, val_where, val_labels = load_shards(validation_shards)
    log(f"{len(labels)} training samples ({np.bincount(labels, minlength=len(CLASSES)).tolist()} per class), "
        f"{len(val_labels)} validation samples, made in {generation_s / 60:.1f} min")

    device = resolve_device(options.device)
    network = build_network(NETWORK).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, options.steps, WARMUP_STEPS, floor=0.02))
    loss_function = torch.nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
    rng = np.random.default_rng(options.seed)
    step, history, best = 0, [], None
    checkpoint = out / CHECKPOINT_FILE
    if options.resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), json.loads(state["history"])
        best = {"state": state["best_state"], **json.loads(state["best"])}
        rng = np.random.default_rng([options.seed, step])
        log(f"resumed at step {step}")
    train_started = time.perf_counter()
    losses = []
    network.train()
    while step < options.steps:
        chosen = rng.integers(len(where), size=options.batch_size)
        batch = np.stack([arrays[s][r] for s, r in where[chosen]]).astype(np.float32)
        targets = torch.from_numpy(labels[chosen])
        logits = network(torch.from_numpy(augment_batch(batch, rng)).to(device))
        loss = loss_function(logits, targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        if step % options.validate_every == 0 or step == options.steps:
            scores = evaluate(predict_all(network, val_arrays, val_where, device), val_labels)
            scores = {"step": step, "loss": round(float(np.mean(losses)), 4),
                      "minutes": round((time.perf_counter() - train_started) / 60, 1), **scores}
            losses = []
            history.append(scores)
            log(json.dumps({k: v for k, v in scores.items() if k != "confusion"}))
            score = scores["group_accuracy"] - scores["false_alarms"] / max(scores["brain_samples"], 1) * 10
            if best is None or score >= best["score"]:
                best = {"score": score, "step": step,
                        "state": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}}
            save_checkpoint(checkpoint, {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "step": step,
                                         "history": json.dumps(history), "best_state": best["state"],
                                         "best": json.dumps({k: v for k, v in best.items() if k != "state"})})
    training_s = time.perf_counter() - train_started
    network.load_state_dict(best["state"])
    recalibrate_batch_norm(network, arrays, where, rng)
    validation = evaluate(predict_all(network, val_arrays, val_where, device), val_labels)
    log("kept step {} with recalibrated batch norm: {}".format(
        best["step"], json.dumps({k: v for k, v in validation.items() if k != "confusion"})))
    return write_bundle(network, out, options, best["step"], validation, history,
                        {"samples_minutes": round(generation_s / 60, 1), "training_minutes": round(training_s / 60, 1)},
                        np.bincount(labels, minlength=len(CLASSES)).tolist())


# --------------------------------------------------------------------------- bundle

def write_bundle(network, out: Path, options: InputCheckTrainingOptions, best_step: int, validation: dict,
                 history: list, minutes: dict, class_counts: list) -> Path:
    from ..bundle import write_metadata

    weights = write_weights(network.state_dict(), out, half=True)  # float16: the bundle stays small
    (out / "validation.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    metadata = {
        "schema_version": 1,
        "name": INPUT_CHECK_BUNDLE,
        "version": "1.0.0",
        "title": "Input check: contrast and brain/non-brain classifier",
        "description": "A tiny 3D CNN, trained only on synthetic volumes, that says whether a "
                       "brain-masked, robust-z-normalised image looks like FLAIR, T1, T2, T1c or "
                       "none of them (not a brain MRI); detect() uses it to refuse swapped contrasts.",
        "family": "input_check",
        "task": TASK,
        "contrasts": list(BRAIN_CONTRASTS),
        "preprocessing": {"normalisation": "robust_z", "grid_spacing_mm": GRID_SPACING_MM,
                          "grid_shape": list(GRID_SHAPE)},
        "network": NETWORK,
        "weights": weights,
        "training": {
            "uadbrain_version": __version__, "data": "synthetic only (SynthSeg label maps)",
            "anatomies": options.anatomies, "validation_anatomies": options.validation_anatomies,
            "validate_every": options.validate_every, "class_counts": dict(zip(CLASSES, class_counts)),
            "steps": options.steps, "best_step": best_step, "batch_size": options.batch_size,
            "learning_rate": options.learning_rate, "label_smoothing": options.label_smoothing,
            "held_out_label_maps": options.held_out_maps, "seed": options.seed,
            "threads": options.threads, **minutes, "validation": validation,
        },
        "license": "Apache-2.0",
        "references": ["Billot B et al. SynthSeg: segmentation of brain MRI scans of any contrast and "
                       "resolution without retraining. Medical Image Analysis 86, 2023 (label maps)."],
    }
    write_metadata(out, metadata)
    (out / "README.md").write_text(model_card(metadata), encoding="utf-8")
    return out


def model_card(metadata: dict, real_table: str | None = None) -> str:
    """The bundle's README: what the check is, its decision rule, recipe and measured figures."""
    training = metadata["training"]
    validation = training["validation"]
    header = "| truth \\ predicted | " + " | ".join(CLASSES) + " |"
    rows = [f"| {truth} | " + " | ".join(map(str, row)) + " |"
            for truth, row in zip(CLASSES, validation["confusion"])]
    return "\n".join([
        f"# {metadata['name']}: {metadata['title']}", "", metadata["description"], "",
        "Used by `detect()` right after normalisation (`input_check.py`); `--no-contrast-check` or "
        "`DetectOptions(check_contrast=False)` turns it off.", "",
        "## Decision rule", "",
        "T1 and T1c form one group. For each given contrast: **error** when another contrast group "
        "has p >= 0.9 and the given group p <= 0.05; **warning** (\"does not look like a brain MRI\") "
        "when p(other) >= 0.9; otherwise nothing.", "",
        "## Input", "",
        "The image inside its brain mask, normalised with `robust_z`, brain-weighted mean on a "
        f"{metadata['preprocessing']['grid_spacing_mm']} mm canonical grid of "
        f"{' x '.join(map(str, metadata['preprocessing']['grid_shape']))} voxels around the brain; "
        "second channel: the brain fraction.", "",
        "## Training (synthetic data only)", "",
        f"- Data: {training['anatomies']} synthetic anatomies from the SynthSeg label maps "
        f"(the last {training['held_out_label_maps']} held out), each in FLAIR, T1, T2 and T1c, heavily "
        "augmented (contrast, bias, noise, thick slices, pose, size, gamma, lesions and tumours, "
        "imperfect masks), plus 'other' volumes (phantoms, blobs, random fields, noise, label images, "
        "CT-like heads, mis-scaled and corrupted brains). Class counts: "
        f"{json.dumps(training['class_counts'])}.",
        f"- {training['steps']} steps of {training['batch_size']} (kept: step {training['best_step']}), "
        f"AdamW, learning rate {training['learning_rate']}, label smoothing {training['label_smoothing']}; "
        f"making samples {training['samples_minutes']} min, training {training['training_minutes']} min "
        f"({training['threads']} CPU thread).",
        f"- Command: `uadbrain train --model input-check --label-maps ../shared/data/label_maps/synthseg "
        f"--out input-check --anatomies {training['anatomies']} --steps {training['steps']} --batch-size "
        f"{training['batch_size']} --learning-rate {training['learning_rate']} --validation-volumes "
        f"{training['validation_anatomies']} --validate-every {training['validate_every']} --cache-dir samples`", "",
        "## Held-out synthetic validation", "",
        f"{validation['brain_samples']} brain volumes and "
        f"{sum(validation['confusion'][-1])} 'other' volumes from the held-out label maps: accuracy "
        f"{validation['accuracy']:.3f}, contrast-group accuracy {validation['group_accuracy']:.3f}; "
        f"false alarms (a brain given as its own contrast refused) {validation['false_alarms']}; "
        f"wrong-group contrasts refused {validation['caught_wrong_contrast']:.1%}; 'other' warned "
        f"{validation['other_warned']:.1%}.", "", header, "|" + "---|" * (len(CLASSES) + 1), *rows, "",
        "## Real scans (measured only, never trained on)", "",
        "`python -m UADBrainLib.training.input_check ../shared/data [bundle]` prints this table. "
        "False alarm: the scan given as its true contrast is refused. Caught: the scan given as each "
        "contrast of another group is refused. BraTS and MS with their brain masks, IXI raw heads "
        "with the brain mask detect finds itself (auto).", "", real_table or "Not measured yet.", "",
        "## References", "", *[f"- {r}" for r in metadata["references"]], ""])


# --------------------------------------------------------------------------- real scans (measuring only)

def real_scans(shared_data: Path) -> list[tuple[str, dict[str, Path], Path | None, str]]:
    """The evaluation scans and raw IXI T1 heads: (name, contrast → file, mask, brain-mask method).

    BraTS and the MS scans are skull-stripped and come with brain masks; the IXI heads are raw
    and get the brain mask detect finds itself (auto). MS ``t1post`` is a post-contrast T1: it goes in
    as ``t1c``. The two tumour cases without ground truth (``eval_nogt``) come with all four contrasts.
    """
    shared_data = Path(shared_data)
    scans = []
    for case in sorted(p for p in (shared_data / "eval" / "brats2015").glob("pat*") if p.is_dir()):
        scans.append((f"brats/{case.name}", {"flair": case / "flair.nii.gz", "t1c": case / "t1c.nii.gz"},
                      case / "brainmask.nii.gz", "auto"))
    for case in sorted(p for p in (shared_data / "eval" / "ms_lesjak2017").glob("patient*") if p.is_dir()):
        files = {c: case / f"{c}.nii.gz" for c in ("flair", "t1", "t2")}
        files["t1c"] = case / "t1post.nii.gz"
        scans.append((f"ms/{case.name}", {c: p for c, p in files.items() if p.is_file()}, None, "auto"))
    for case in sorted(p for p in (shared_data / "eval_nogt").glob("*") if p.is_dir()):
        files = {c: case / f"{c}.nii.gz" for c in BRAIN_CONTRASTS}
        scans.append((f"nogt/{case.name}", {c: p for c, p in files.items() if p.is_file()}, None, "auto"))
    for path in sorted((shared_data / "healthy" / "ixi_small").glob("*_T1.nii.gz")):
        scans.append((f"ixi/{path.name.split('_')[0]}", {"t1": path}, None, "auto"))
    return scans


def measure_real_scans(shared_data: Path, bundle=None, log: Callable[[str], None] = print) -> list[dict]:
    """Every real scan's prediction; whether the rule passes it as its true contrast (no false
    alarm) and refuses it given as each contrast of another group (swap caught)."""
    from ..inference.input_check import check_scan

    rows = []
    for name, files, mask, method in real_scans(shared_data):
        started = time.perf_counter()
        predictions = check_scan(files, mask, method, bundle=bundle)
        seconds = (time.perf_counter() - started) / len(files)
        for contrast, probabilities in predictions.items():
            row = {"scan": name, "contrast": contrast, "predicted": max(probabilities, key=probabilities.get),
                   "probabilities": {c: round(p, 3) for c, p in probabilities.items()},
                   "false_alarm": _refused(contrast, probabilities),
                   "caught_as": {given: _refused(given, probabilities) for given in BRAIN_CONTRASTS
                                 if GROUP_OF[given] != GROUP_OF[contrast]},
                   "seconds_per_image_incl_loading": round(seconds, 2)}
            rows.append(row)
            log(json.dumps(row))
    return rows


def real_scan_table(rows: list[dict]) -> str:
    """Markdown table of :func:`measure_real_scans` rows."""
    lines = ["| scan | contrast | predicted | p(flair, t1, t2, t1c, other) | false alarm | caught as |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        probabilities = ", ".join(f"{p:.2f}" for p in row["probabilities"].values())
        caught = ", ".join(f"{given} {'yes' if refused else 'no'}" for given, refused in row["caught_as"].items())
        lines.append(f"| {row['scan']} | {row['contrast']} | {row['predicted']} | {probabilities} | "
                     f"{'YES' if row['false_alarm'] else 'no'} | {caught} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m UADBrainLib.training.input_check ../shared/data [bundle folder]
    import sys

    print(real_scan_table(measure_real_scans(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)))
