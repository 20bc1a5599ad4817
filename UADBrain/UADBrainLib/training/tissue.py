"""Training the tissue network of the anatomy-aware normative model (``uadbrain train --model tissue``).

Every step draws a synthetic skull-stripped brain from the label maps (``synthesis/brains.py``) in a
random contrast (T1, T2, FLAIR, T1c-like or fully random per tissue), with ageing (enlarged
ventricles, cortical atrophy), thick slices, bias and noise, and inserts synthetic anomalies
(``synthesis/anomalies.py``, MS lesion outlines when ``lesion_masks`` is given). The target is the
tissue each voxel *was* before the anomaly replaced it, so the network learns anatomy that a lesion
does not change. The last label maps are held out for validation. The result is a bundle folder
that ``inference/models/tissue.py`` loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import __version__
from ..bundle import write_metadata
from ..device import resolve_device
from ..inference.brainmask_net import build_network, pad_for_network
from ..inference.models.tissue import TISSUE_CLASSES, network_input
from ..synthesis.brains import N_TISSUES, Tissue
from ..synthesis.validation_set import DEFAULT_HELD_OUT_MAPS
from .brainmask import dice, split_label_maps
from .common import train_whole_volumes, write_weights

SPACING_MM = 2.0
CONTRAST_MIX = {"t1": 0.2, "t2": 0.2, "flair": 0.25, "t1c": 0.1, "random": 0.25}
NETWORK = {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": len(TISSUE_CLASSES),
                                    "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                    "num_res_units": 1}}
# healthy ageing and clinical acquisitions: larger ventricles and sulci, thick slices, more bias
SYNTHESIS_OVERRIDES = {"ventricle_growth_mm": (0.0, 6.0), "cortical_atrophy_mm": (-1.0, 1.5),
                       "thick_slice_probability": 0.4, "bias_sd": (0.0, 0.25)}
ANOMALY_PROBABILITY = 0.8
MARGIN_VOXELS = (0, 6)  # random empty border around the brain's box

_C = {name: index for index, name in enumerate(TISSUE_CLASSES)}
# synthesis tissue -> tissue class (inside the brain mask; outside is class 0)
TISSUE_TO_CLASS = np.full(N_TISSUES, _C["csf"], np.int64)
for _tissue in (Tissue.CORTEX, Tissue.CEREBELLAR_CORTEX, Tissue.HIPPOCAMPUS_AMYGDALA):
    TISSUE_TO_CLASS[_tissue] = _C["cortical_grey_matter"]
for _tissue in (Tissue.THALAMUS, Tissue.CAUDATE, Tissue.PUTAMEN, Tissue.PALLIDUM, Tissue.ACCUMBENS,
                Tissue.VENTRAL_DC):
    TISSUE_TO_CLASS[_tissue] = _C["deep_grey_matter"]
for _tissue in (Tissue.CEREBRAL_WM, Tissue.PERIVENTRICULAR_WM, Tissue.CEREBELLAR_WM, Tissue.BRAINSTEM,
                Tissue.SPINAL_CORD):
    TISSUE_TO_CLASS[_tissue] = _C["white_matter"]


@dataclasses.dataclass
class TissueTrainingOptions:
    label_maps: Path
    out: Path
    lesion_masks: Path | None = None
    steps: int = 3000
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    validate_every: int = 250
    validation_brains: int = 8
    held_out_maps: int = DEFAULT_HELD_OUT_MAPS  # the validation set's maps: never trained on
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    workers: int = 1
    reuse: int = 2  # training steps per synthetic brain (each with its own crop and flip)
    resume: bool = False


def tissue_classes(labels: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return np.where(brain, TISSUE_TO_CLASS[labels], 0)


def draw_brain(synthesizer, rng: np.random.Generator, lesion_shapes) -> tuple[np.ndarray, np.ndarray, str]:
    """One synthetic brain with anomalies: (network input, tissue classes, contrast)."""
    from ..synthesis.anomalies import insert_anomalies

    contrast = str(rng.choice(list(CONTRAST_MIX), p=list(CONTRAST_MIX.values())))
    brain = synthesizer.sample(rng, contrasts=(contrast,), spacing=SPACING_MM, skull_strip=True)
    mask = brain.brain_mask.astype(bool)
    image = brain.images[contrast]
    if rng.random() < ANOMALY_PROBABILITY:
        image = insert_anomalies({contrast: image}, mask, SPACING_MM, rng, labels=brain.labels,
                                 lesion_shapes=lesion_shapes).images[contrast]
    box = tuple(slice(max(0, a.min() - int(rng.integers(*MARGIN_VOXELS, endpoint=True))),
                      a.max() + 1 + int(rng.integers(*MARGIN_VOXELS, endpoint=True)))
                for a in np.nonzero(mask))
    return network_input(image[box], mask[box]), tissue_classes(brain.labels[box], mask[box]), contrast


def _synthesizer(paths):
    from ..synthesis.brains import SynthesisConfig, Synthesizer

    return Synthesizer(paths, SynthesisConfig(**SYNTHESIS_OVERRIDES))


def _lesion_shapes(folder):
    from ..synthesis.anomalies import LesionShapes

    return LesionShapes.from_folder(folder) if folder else None


def brain_stream(paths, seed: int, reuse: int, lesion_masks) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    synthesizer, shapes = _synthesizer(paths), _lesion_shapes(lesion_masks)
    rng = np.random.default_rng(seed)
    while True:
        image, classes, _ = draw_brain(synthesizer, rng, shapes)
        for _ in range(reuse):
            if rng.random() < 0.5:  # left-right
                image, classes = image[..., ::-1], classes[..., ::-1]
            gamma = float(np.exp(rng.normal(0.0, 0.25)))
            yield np.ascontiguousarray(image ** gamma, dtype=np.float32), np.ascontiguousarray(classes)


class BrainDataset(torch.utils.data.IterableDataset):
    def __init__(self, paths, seed: int, reuse: int, lesion_masks):
        self.paths, self.seed, self.reuse, self.lesion_masks = paths, seed, reuse, lesion_masks

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        seed = self.seed * 1000 + (info.id if info else 0)
        for image, classes in brain_stream(self.paths, seed, self.reuse, self.lesion_masks):
            yield torch.from_numpy(image)[None], torch.from_numpy(classes)[None]


def validation_brains(paths, count: int, lesion_masks, seed: int = 4321):
    synthesizer, shapes = _synthesizer(paths), _lesion_shapes(lesion_masks)
    rng = np.random.default_rng(seed)
    return [draw_brain(synthesizer, rng, shapes) for _ in range(count)]


def predict_classes(network, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    padded, crop = pad_for_network(image)
    with torch.inference_mode():
        logits = network(torch.from_numpy(padded)[None, None].to(device))
    return logits[0].argmax(0).cpu().numpy()[crop]


def validate(network, brains, device: str = "cpu") -> dict:
    """Tissue Dice per class and contrast of the held-out brains (the training loop puts the network in
    eval mode)."""
    scores = {name: [] for name in TISSUE_CLASSES[1:]}
    by_contrast: dict[str, list[float]] = {}
    for image, classes, contrast in brains:
        predicted = predict_classes(network, image, device)
        values = [dice(predicted == index, classes == index) for index in range(1, len(TISSUE_CLASSES))]
        for name, value in zip(TISSUE_CLASSES[1:], values):
            scores[name].append(value)
        by_contrast.setdefault(contrast, []).append(float(np.mean(values)))
    summary = {"dice_mean": float(np.mean([np.mean(v) for v in scores.values()]))}
    summary.update({f"dice_{name}": float(np.mean(v)) for name, v in scores.items()})
    summary.update({f"dice_{c}": float(np.mean(v)) for c, v in sorted(by_contrast.items())})
    return summary


def train_tissue(options: TissueTrainingOptions, log: Callable[[str], None] = print) -> Path:
    """Train and write the tissue network's bundle into ``options.out``."""
    from monai.losses import DiceCELoss

    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    train_paths, held_out_paths = split_label_maps(Path(options.label_maps), options.held_out_maps)
    log(f"label maps: {len(train_paths)} for training, {len(held_out_paths)} held out")
    device = resolve_device(options.device)
    network = build_network(NETWORK).to(device)
    brains = validation_brains(held_out_paths or train_paths, options.validation_brains, options.lesion_masks)

    def make_loader(step: int):
        return torch.utils.data.DataLoader(
            BrainDataset(train_paths, options.seed + step, options.reuse, options.lesion_masks),
            batch_size=None, num_workers=options.workers, prefetch_factor=2 if options.workers else None)

    step, wall, history = train_whole_volumes(
        network, make_loader, DiceCELoss(softmax=True, to_onehot_y=True), lambda net: validate(net, brains, device),
        out, options.steps, options.learning_rate, options.warmup_steps, options.validate_every, options.resume,
        device, log)
    return write_bundle(network, out, options, step, wall, history)


def write_bundle(network, out: Path, options: TissueTrainingOptions, steps: int, wall_s: float,
                 history: list[dict], name: str = "tissue") -> Path:
    weights = write_weights(network.state_dict(), out)
    (out / "validation.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    metadata = {
        "schema_version": 1,
        "name": name,
        "version": "1.0.0",
        "title": "Anatomy-aware normative model (each voxel against its own tissue)",
        "description": "A 3D U-Net trained only on synthetic brains of random contrast with synthetic "
                       "anomalies finds CSF, cortical and deep grey matter and white matter, also under a "
                       "lesion; each voxel is scored against the robust intensity statistics its tissue "
                       "has in the same scan.",
        "family": "tissue",
        "contrasts": ["flair", "t1", "t2", "t1c"],
        "required_contrasts": [],
        "preprocessing": {"spacing_mm": [1.0, 1.0, 1.0], "bias_correction": False, "normalisation": "robust_z"},
        "tissue_network": {"spacing_mm": SPACING_MM, "classes": list(TISSUE_CLASSES)},
        "network": NETWORK,
        "postprocessing": {"median": 5, "min_size_mm3": 20.0, "erosion_mm": 0.0},
        "weights": weights,
        "training": {
            "uadbrain_version": __version__, "steps": steps, "wall_s": round(wall_s),
            "threads": options.threads, "learning_rate": options.learning_rate, "seed": options.seed,
            "contrast_mix": CONTRAST_MIX, "synthesis_overrides": SYNTHESIS_OVERRIDES,
            "anomaly_probability": ANOMALY_PROBABILITY,
            "lesion_masks": str(options.lesion_masks) if options.lesion_masks else None,
            "held_out_label_maps": options.held_out_maps,
            "final_validation": history[-1] if history else None,
        },
        "license": "Apache-2.0",
        "references": [
            "Billot B et al. SynthSeg: segmentation of brain MRI scans of any contrast and "
            "resolution without retraining. Medical Image Analysis 86, 2023.",
        ],
    }
    write_metadata(out, metadata)
    return out
