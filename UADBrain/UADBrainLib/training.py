"""``uadbrain train``: train a learned model on healthy brains and write a complete bundle.

One generic loop (:func:`train`) serves every learned family; what differs — networks, batches,
loss, validation, scoring metadata — lives in a :class:`TrainingTask` registered in :data:`TASKS`
(``training_tasks.py``). The loop draws volumes from a :class:`training_data.VolumePool`, checkpoints
regularly (``--resume`` continues), keeps the weights that scored best on held-out validation
volumes, then writes the bundle: weights with their SHA-256, ``metadata.json``, the healthy
calibration (``calibrate.py``) and a model card.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .bundle import CONTRASTS, read_bundle, sha256_of, write_metadata
from .errors import InputError

WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "training_history.json"


@dataclasses.dataclass
class TrainConfig:
    model: str  # the family to train (a key of TASKS)
    contrasts: list[str]
    data: str  # "synthetic" or a folder of healthy scans
    out: Path
    steps: int = 20000
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    label_maps: str | None = None
    name: str | None = None
    spacing: float = 2.0
    context: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    patch: int | None = None  # in-plane size of training slices (default ~192 mm)
    score: str = "residual"
    shared_network: bool = True  # dae: one network for all contrasts (else one per contrast)
    noise_std: tuple[float, float] = (1.0, 3.0)  # dae: range of the coarse noise's sd, normalised units
    kl_weight: float = 1.0  # vae: weight of the KL term per brain pixel (0: a plain autoencoder)
    latent_channels: int = 16  # vae: latent channels per cell at 1/16 of the slice's resolution
    diffusion_start: int = 250  # diffusion: step of 1000 the slices are noised to (training and inference)
    diffusion_steps: int = 10  # diffusion: DDIM steps back to a clean slice at inference
    pool_size: int = 16
    refresh_every: int = 25
    validate_every: int = 500
    checkpoint_every: int = 250
    validation_volumes: int = 4
    calibration_volumes: int = 8
    calibration_spacing: float = 1.0  # mm; synthetic calibration brains (inputs are usually 1 mm)
    threads: int = 1
    cache_dir: str | None = None
    lesion_masks: str | None = None  # folder of real lesion masks: shapes for synthetic anomalies
    heldout_appearances: tuple[str, ...] = ("tumour",)  # anomaly kinds only validated on (segmenter)
    command: str = ""

    @property
    def patch_size(self) -> int:
        if self.patch:
            return int(self.patch)
        return int(math.ceil(192.0 / self.spacing / 16.0) * 16)

    @property
    def bundle_name(self) -> str:
        return self.name or Path(self.out).name


def lr_at(step: int, config: TrainConfig, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate at the last step."""
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_sources(config: TrainConfig, preprocessing: dict):
    """Training, validation and calibration sources for the configured data."""
    from .calibrate import resolve_label_maps
    from .training_data import FolderSource, SyntheticSource

    if config.data == "synthetic":
        maps = resolve_label_maps(config.label_maps)
        make = lambda split: SyntheticSource(maps, config.contrasts, config.spacing,  # noqa: E731
                                             preprocessing["normalisation"], split)
    else:
        make = lambda split: FolderSource(config.data, config.contrasts, preprocessing, split)  # noqa: E731
    return make("train"), make("validation"), make("calibration")


def _save_checkpoint(path: Path, networks, optimizer, step: int, best: dict, history: list, rng,
                     minutes: float = 0.0) -> None:
    import torch

    temporary = path.with_suffix(".tmp")
    torch.save({"step": step, "minutes": float(minutes), "networks": networks.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_state": best.get("state"), "best": json.dumps({k: v for k, v in best.items() if k != "state"}),
                "history": json.dumps(history), "numpy_rng": json.dumps(rng.bit_generator.state),
                "torch_rng": torch.get_rng_state()}, temporary)
    temporary.replace(path)


def _load_checkpoint(path: Path, networks, optimizer, rng) -> tuple[int, dict, list, float]:
    """Restore a checkpoint; returns the step, the best validation so far, the history and the
    minutes of training it holds."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    networks.load_state_dict(state["networks"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    best = json.loads(state["best"])
    if state["best_state"] is not None:
        best["state"] = state["best_state"]
    return int(state["step"]), best, json.loads(state["history"]), float(state.get("minutes", 0.0))


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train, calibrate and write the bundle to ``config.out``; returns the bundle folder."""
    import torch
    from tqdm import tqdm

    from .device import resolve_device
    from .models.networks import build_networks
    from .training_data import VolumePool
    from .training_tasks import make_task

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(config)
    config = task.config  # a family may fix settings it cannot use (the diffusion model: no context)
    train_source, validation_source, calibration_source = make_sources(config, task.preprocessing())
    networks = build_networks(task.network_spec()).to(device)
    optimizer = torch.optim.AdamW(networks.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    checkpoint = out / CHECKPOINT_FILE
    step, best, history, minutes_before = 0, {"score": -math.inf}, [], 0.0
    if config.resume and checkpoint.is_file():
        step, best, history, minutes_before = _load_checkpoint(checkpoint, networks, optimizer, rng)
    elif config.resume:
        print(f"no checkpoint in {out}; starting from scratch", file=sys.stderr)

    validation = task.validation_set(validation_source, config.validation_volumes)
    pool = VolumePool(train_source, config.pool_size, first_seed=config.seed * 1_000_000 + step,
                      cache_dir=config.cache_dir, background=config.steps - step > config.refresh_every)
    started = time.time() - 60.0 * minutes_before  # training time accumulates over resumed runs
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.model}", disable=not progress)
    running = None
    try:
        networks.train()
        while step < config.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            loss = task.loss(networks, pool.volumes, rng, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(networks.parameters(), 5.0)
            optimizer.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", best=f"{best['score']:.3f}")
            if step % config.refresh_every == 0:
                pool.refresh()
            if step % config.validate_every == 0 or step == config.steps:
                networks.eval()
                scores = task.validate(networks, validation, device)
                networks.train()
                history.append({"step": step, "loss": running, "minutes": round((time.time() - started) / 60, 2),
                                **scores})
                if scores["score"] > best["score"]:
                    best = {"score": scores["score"], "step": step, "metrics": scores,
                            "state": {k: v.detach().cpu().clone() for k, v in networks.state_dict().items()}}
                bar.write(f"step {step}: loss {running:.4f}, validation {json.dumps(scores)}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(checkpoint, networks, optimizer, step, best, history, rng,
                                 (time.time() - started) / 60.0)
    finally:
        bar.close()
        pool.close()
    training_minutes = (time.time() - started) / 60
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    state = best.get("state") or networks.state_dict()
    return write_bundle(config, task, state, best, history, training_minutes,
                        train_source.describe(), calibration_source, device)


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), {platform.system()}"


def write_bundle(config: TrainConfig, task, state: dict, best: dict, history: list,
                 training_minutes: float, data_description: str, calibration_source, device: str) -> Path:
    """Weights, metadata, healthy calibration and model card in ``config.out``."""
    import torch
    from tqdm import tqdm

    from .calibrate import CALIBRATION_SEED, calibrate_model

    out = Path(config.out)
    weights = out / WEIGHTS_FILE
    torch.save({k: v.detach().cpu() for k, v in state.items()}, weights)
    metadata = {
        "schema_version": 1,
        "name": config.bundle_name,
        "version": "1.0.0",
        "title": task.title(),
        "description": task.description(),
        "family": task.family,
        "contrasts": list(config.contrasts),
        "required_contrasts": [],
        "preprocessing": task.preprocessing(),
        "scoring": task.scoring(),
        "postprocessing": task.postprocessing(),
        "calibration": None,
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(weights)},
        "network": task.network_spec(),
        "expected_runtime_s": {"cpu": None, "cuda": None},
        "training": {
            "data": data_description, "steps": config.steps, "best_step": best.get("step"),
            "validation": best.get("metrics"), "time_minutes": round(training_minutes, 1),
            "machine": _machine(), "device": device, "seed": config.seed,
            "command": config.command, "uadbrain_version": __version__,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
                         if k not in ("out", "command", "resume")},
        },
        "license": "Apache-2.0",
        "references": task.references(),
    }
    write_metadata(out, metadata)
    bundle = read_bundle(out)
    if config.data == "synthetic":
        from .calibrate import synthetic_cases

        cases, description = synthetic_cases(calibration_source.label_maps, config.contrasts,
                                             config.calibration_volumes, config.calibration_spacing,
                                             CALIBRATION_SEED)
    else:
        from .calibrate import folder_cases

        cases, description = folder_cases(config.data, config.contrasts, config.calibration_volumes)
    bar = tqdm(total=config.calibration_volumes, desc="calibrate")
    calibration, measured = calibrate_model(bundle, cases, device, description, progress=lambda _: bar.update(1))
    bar.close()
    metadata["calibration"] = calibration
    metadata["expected_runtime_s"]["cuda" if device.startswith("cuda") else "cpu"] = round(measured["seconds_per_case"], 1)
    write_metadata(out, metadata)
    (out / "README.md").write_text(model_card(metadata, history), encoding="utf-8")
    return out


def model_card(metadata: dict, history: list) -> str:
    """The bundle's README: what the model is, how it was trained, what was measured."""
    training = metadata["training"]
    lines = [
        f"# {metadata['name']}: {metadata['title']}", "", metadata["description"], "",
        "## Use", "", "```", f"uadbrain detect --{metadata['contrasts'][0]} scan.nii.gz --model "
        f"{metadata['name']} --out result/", "```", "",
        f"Contrasts: {', '.join(metadata['contrasts'])}. Model grid: canonical axial slices at "
        f"{metadata['preprocessing']['spacing_mm']} mm, normalisation "
        f"`{metadata['preprocessing']['normalisation']}`. Expected run time: "
        f"{metadata['expected_runtime_s']} s per case.", "",
        "## Training", "",
        f"- Data: {training['data']}",
        f"- Steps: {training['steps']} (weights of step {training['best_step']}, the best on validation)",
        f"- Time: {training['time_minutes']} min on {training['machine']} ({training['device']})",
        f"- Seed: {training['seed']}",
        f"- Command: `{training['command']}`",
        f"- Validation (held-out synthetic data) at the kept step: {json.dumps(training['validation'])}",
        "", "## Healthy calibration", "",
        f"{(metadata.get('calibration') or {}).get('description', 'none')}", "",
        "## Validation history", "", "| step | loss | " + " | ".join(k for k in (history[-1] if history else {})
                                                                  if k not in ("step", "loss")) + " |",
    ]
    if history:
        keys = [k for k in history[-1] if k not in ("step", "loss")]
        lines.append("|" + "---|" * (len(keys) + 2))
        for row in history:
            lines.append(f"| {row['step']} | {row['loss']:.4f} | "
                         + " | ".join(f"{row.get(k, float('nan')):.4g}" for k in keys) + " |")
    lines += ["", "## Evaluation on real scans", "",
              "Not measured by `uadbrain train`: run `uadbrain evaluate` and add the table here.", "",
              "## References", ""] + [f"- {r}" for r in metadata["references"]] + [""]
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    from .device import DEVICE_CHOICES
    from .training_tasks import TASKS

    parser = subparsers.add_parser(
        "train", help="train a model on healthy brains and write a complete bundle",
        description="Train a learned anomaly model on synthetic healthy brains (from anatomical label "
                    "maps) or on a folder of real healthy scans, calibrate it on held-out healthy "
                    "volumes and write a bundle (weights, metadata.json, README.md) to --out.")
    parser.add_argument("--model", required=True, choices=sorted([*TASKS, "brainmask", "input-check"]),
                        help="model family (brainmask: the brain extractor, brainmask_training.py; "
                             "input-check: the contrast check, input_check_training.py)")
    parser.add_argument("--contrast", action="append", dest="contrasts",
                        choices=CONTRASTS, help="contrast to train on (repeat for several)")
    parser.add_argument("--data", default="synthetic", help="'synthetic' or a folder of healthy scans")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--label-maps", help="folder of label maps for --data synthetic "
                        "(default: the bundled example's)")
    parser.add_argument("--name", help="bundle name (default: the --out folder's name)")
    parser.add_argument("--spacing", type=float, default=TrainConfig.spacing, help="model grid spacing, mm")
    parser.add_argument("--context", type=int, default=TrainConfig.context,
                        help="neighbouring slices on each side given as channels (0 = 2D; the diffusion model is always 2D)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--channels", default=",".join(map(str, TrainConfig.channels)),
                        help="U-Net channels per level, comma-separated")
    parser.add_argument("--patch", type=int, help="in-plane training window, pixels (default ~192 mm)")
    parser.add_argument("--score", choices=("residual", "ssim"), default="residual",
                        help="dae, vae: anomaly score of the reconstruction")
    parser.add_argument("--noise-std", default=",".join(f"{v:g}" for v in TrainConfig.noise_std),
                        help="dae: range LOW,HIGH of the coarse noise's standard deviation (normalised units)")
    parser.add_argument("--network-per-contrast", action="store_true",
                        help="dae, vae: train one network per contrast instead of one shared by all")
    parser.add_argument("--kl-weight", type=float, default=TrainConfig.kl_weight,
                        help="vae: weight of the KL divergence (0 trains a plain autoencoder)")
    parser.add_argument("--latent-channels", type=int, default=TrainConfig.latent_channels,
                        help="vae: latent channels per cell at 1/16 of the slice's resolution")
    parser.add_argument("--diffusion-start", type=int, default=TrainConfig.diffusion_start,
                        help="diffusion: noise slices to this step of 1000 (training and inference)")
    parser.add_argument("--diffusion-steps", type=int, default=TrainConfig.diffusion_steps,
                        help="diffusion: DDIM steps back to a clean slice at inference")
    parser.add_argument("--lesion-masks", help="folder of binary lesion masks (NIfTI) whose shapes "
                        "synthetic anomalies borrow (default: ellipsoids and blobs only)")
    parser.add_argument("--heldout-appearance", action="append", dest="heldout_appearances",
                        help="anomaly appearance kept out of the segmenter's training and used to "
                             "validate it (repeat; default: tumour)")
    parser.add_argument("--validate-every", type=int, default=TrainConfig.validate_every)
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    parser.add_argument("--validation-volumes", type=int, default=TrainConfig.validation_volumes)
    parser.add_argument("--calibration-volumes", type=int, default=TrainConfig.calibration_volumes)
    parser.add_argument("--calibration-spacing", type=float, default=TrainConfig.calibration_spacing,
                        help="spacing of the synthetic calibration brains, mm")
    parser.add_argument("--pool-size", type=int, default=TrainConfig.pool_size,
                        help="training volumes held in memory")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="CPU threads for torch")
    parser.add_argument("--cache-dir", help="keep generated training volumes here, to reuse across runs")
    parser.add_argument("--anatomies", type=int, default=1000,
                        help="input-check: synthetic anatomies to make training samples from")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)


def run_train(args) -> int:
    if args.model == "brainmask":
        from .brainmask_training import run_train_brainmask

        return run_train_brainmask(args)
    if args.model == "input-check":
        from .input_check_training import run_train_input_check

        return run_train_input_check(args)
    if not args.contrasts:
        raise InputError("--contrast is required: the contrast(s) to train on (repeat for several).")
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise InputError(f"--channels '{args.channels}' is not a comma-separated list of integers.") from None
    try:
        low, high = (float(v) for v in args.noise_std.split(","))
    except ValueError:
        raise InputError(f"--noise-std '{args.noise_std}' is not LOW,HIGH (two numbers).") from None
    contrasts = list(dict.fromkeys(args.contrasts))
    config = TrainConfig(
        model=args.model, contrasts=contrasts, data=args.data, out=args.out, steps=args.steps,
        device=args.device, seed=args.seed, resume=args.resume, label_maps=args.label_maps,
        name=args.name, spacing=args.spacing, context=args.context, batch_size=args.batch_size,
        learning_rate=args.learning_rate, channels=channels, patch=args.patch, score=args.score,
        validate_every=args.validate_every, checkpoint_every=args.checkpoint_every,
        validation_volumes=args.validation_volumes, calibration_volumes=args.calibration_volumes,
        calibration_spacing=args.calibration_spacing,
        pool_size=args.pool_size, threads=args.threads, cache_dir=args.cache_dir,
        lesion_masks=args.lesion_masks, shared_network=not args.network_per_contrast, noise_std=(low, high),
        kl_weight=args.kl_weight, latent_channels=args.latent_channels,
        diffusion_start=args.diffusion_start, diffusion_steps=args.diffusion_steps,
        heldout_appearances=tuple(args.heldout_appearances or TrainConfig.heldout_appearances),
        command="uadbrain " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    out = train(config, progress=not args.quiet)
    print(f"wrote bundle {out} (use it with --model {out})")
    return 0
