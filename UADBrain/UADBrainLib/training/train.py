"""``uadbrain train``: train a learned model on healthy brains and write a complete bundle.

One generic loop (:func:`train`) serves every learned family; what differs — networks, batches,
loss, validation, scoring metadata — lives in a :class:`TrainingTask` registered in :data:`TASKS`
(the ``tasks`` package). The loop draws volumes from a :class:`data.VolumePool`, checkpoints
regularly (``--resume`` continues), keeps the weights that scored best on held-out validation
volumes, then writes the bundle: weights with their SHA-256, ``metadata.json``, the healthy
calibration (``calibrate.py``) and a model card.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..bundle import find_bundle, read_bundle, write_metadata
from ..errors import InputError
from .common import CHECKPOINT_FILE, load_checkpoint, machine, save_checkpoint, warmup_cosine, write_weights

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
    score: str = "residual"  # how reconstructions are scored (inference/models/scores.py)
    feature_model: str | None = None  # perceptual score: the segmenter whose encoder gives the features
    shared_network: bool = True  # dae: one network for all contrasts (else one per contrast)
    noise_std: tuple[float, float] = (1.0, 3.0)  # dae: range of the coarse noise's sd, normalised units
    kl_weight: float = 1.0  # vae: weight of the KL term per brain pixel (0: a plain autoencoder)
    latent_channels: int = 16  # vae: latent channels per cell at 1/16 of the slice's resolution
    dense_latent: int = 0  # vae: > 0, one latent vector of this size instead of the spatial latent
    context_weight: float = 0.5  # cevae: weight of the context-encoding loss
    gan_fraction: float = 0.75  # fanogan: share of the steps that train the GAN (the rest: the encoder)
    skip_dropout: float = 0.5  # skip-ae: channel dropout rate of the skip connections in training
    diffusion_start: int = 250  # diffusion: step of 1000 the slices are noised to (training and inference)
    diffusion_steps: int = 10  # diffusion: DDIM steps back to a clean slice at inference
    condition_size: int = 16  # cddpm: numbers encoding the original slice for the denoiser
    patch_mm: float = 64.0  # pddpm: side of the square patch noised and restored at a time
    noise_levels: tuple[int, ...] = ()  # diffusion: reconstruct from each (ensemble scores; default: scores.py)
    ensemble_seeds: int = 2  # diffusion: reconstructions per noise level of an ensemble
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
    cohort_volumes: int = 64  # normative, patchcore: synthetic healthy brains whose statistics are fitted
    reconstruction_model: str = "dae"  # learned-hybrid: the bundled denoising autoencoder whose residual it sees
    memory_bank: int = 16384  # patchcore: healthy patch features kept per contrast
    age_range: tuple[float, float] | None = None  # normative: condition on age, the cohort's ages drawn in these years
    init_from: str | None = None  # a trained bundle (name or folder) whose matching weights start training
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
    return config.learning_rate * warmup_cosine(step, config.steps, warmup, floor=0.05)


def make_sources(config: TrainConfig, preprocessing: dict):
    """Training, validation and calibration sources for the configured data."""
    from .calibrate import resolve_label_maps
    from .data import FolderSource, SyntheticSource

    if config.data == "synthetic":
        maps = resolve_label_maps(config.label_maps)
        make = lambda split: SyntheticSource(maps, config.contrasts, config.spacing,  # noqa: E731
                                             preprocessing["normalisation"], split, config.age_range)
    else:
        make = lambda split: FolderSource(config.data, config.contrasts, preprocessing, split,  # noqa: E731
                                          ages=config.age_range)
    sources = make("train"), make("validation"), make("calibration")
    if getattr(sources[0], "left_out", None):
        left_out = sources[0].left_out
        print(f"left out {len(left_out)} subject(s): {', '.join(left_out[:10])}"
              f"{' …' if len(left_out) > 10 else ''}", file=sys.stderr)
    return sources


def _save_checkpoint(path: Path, networks, optimizer, step: int, best: dict, history: list, rng,
                     minutes: float = 0.0) -> None:
    import torch

    save_checkpoint(path, {"step": step, "minutes": float(minutes), "networks": networks.state_dict(),
                           "optimizer": optimizer.state_dict(), "best_state": best.get("state"),
                           "best": json.dumps({k: v for k, v in best.items() if k != "state"}),
                           "history": json.dumps(history), "numpy_rng": json.dumps(rng.bit_generator.state),
                           "torch_rng": torch.get_rng_state()})


def _load_checkpoint(path: Path, networks, optimizer, rng) -> tuple[int, dict, list, float]:
    """Restore a checkpoint; returns the step, the best validation so far, the history and the
    minutes of training it holds."""
    import torch

    state = load_checkpoint(path)
    networks.load_state_dict(state["networks"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    best = json.loads(state["best"])
    if state["best_state"] is not None:
        best["state"] = state["best_state"]
    return int(state["step"]), best, json.loads(state["history"]), float(state.get("minutes", 0.0))


def initialise_from(networks, source: str, preprocessing: dict) -> dict:
    """Copy into ``networks`` every weight of the bundle ``source`` whose name and shape match (a
    layer that changed, such as the first convolution of a network given more input channels,
    keeps its fresh start); returns what the bundle's metadata records of it."""
    import torch

    bundle = find_bundle(source)
    theirs = bundle.metadata["preprocessing"]
    for key in ("spacing_mm", "normalisation"):
        if theirs.get(key) != preprocessing.get(key):
            raise InputError(f"--init-from {source}: its {key} is {theirs.get(key)}, this training's "
                             f"{preprocessing.get(key)} — give a bundle trained on the same grid and normalisation.")
    state = torch.load(bundle.verified_weights_path(), map_location="cpu", weights_only=True)
    own = networks.state_dict()
    matching = {}
    for key, target in own.items():
        head, _, path = key.partition(".")
        # a network wrapped in another (cddpm's conditioned U-Net holds the plain U-Net) matches by its path's end
        found = [value for name, value in state.items() if name.partition(".")[0] == head and value.shape == target.shape
                 and (name == key or path.endswith("." + name.partition(".")[2]))]
        if len(found) == 1:
            matching[key] = found[0].float() if found[0].is_floating_point() else found[0]
    if not matching:
        raise InputError(f"--init-from {source}: none of its weights fits this family's network "
                         f"({bundle.metadata['family']} bundle) — give a bundle of the same architecture.")
    networks.load_state_dict(matching, strict=False)
    return {"bundle": bundle.name, "sha256": bundle.metadata["weights"]["sha256"],
            "tensors": f"{len(matching)} of {len(own)}"}


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train, calibrate and write the bundle to ``config.out``; returns the bundle folder."""
    import torch
    from tqdm import tqdm

    from ..device import resolve_device
    from ..inference.models.networks import build_networks
    from .data import VolumePool
    from .tasks import make_task

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(config)
    config = task.config  # a family may fix settings it cannot use (the diffusion model: no context)
    train_source, validation_source, calibration_source = make_sources(config, task.preprocessing())
    if task.fitted:
        return fit_bundle(config, task, train_source, validation_source, calibration_source, device, progress)
    networks = build_networks(task.network_spec()).to(device)
    optimizer = torch.optim.AdamW(networks.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    checkpoint = out / CHECKPOINT_FILE
    step, best, history, minutes_before = 0, {"score": -math.inf}, [], 0.0
    initialised = initialise_from(networks, config.init_from, task.preprocessing()) if config.init_from else None
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
            task.begin_step(step, networks)
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
                        train_source.describe(), calibration_source, device, initialised)


def fit_bundle(config: TrainConfig, task, train_source, validation_source, calibration_source, device: str,
               progress: bool = True) -> Path:
    """A fitted family's bundle: its statistics from one pass over the cohort, validated once."""
    from tqdm import tqdm

    started = time.time()
    bar = tqdm(total=task.cohort_size(train_source), desc=f"fit {config.model}", disable=not progress)
    state = task.fit(train_source, progress=lambda done, total: bar.update(1))
    bar.close()
    metrics = task.validate(state, task.validation_set(validation_source, config.validation_volumes), device)
    print(f"validation {json.dumps(metrics)}", file=sys.stderr)
    best = {"score": metrics["score"], "metrics": metrics}
    return write_bundle(config, task, state, best, [], (time.time() - started) / 60, train_source.describe(),
                        calibration_source, device)


def write_bundle(config: TrainConfig, task, state: dict, best: dict, history: list, training_minutes: float,
                 data_description: str, calibration_source, device: str, initialised: dict | None = None) -> Path:
    """Weights, metadata, healthy calibration and model card in ``config.out``."""
    from tqdm import tqdm

    from .calibrate import CALIBRATION_SEED, calibrate_model

    out = Path(config.out)
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
        "weights": write_weights(state, out),
        "network": task.network_spec(),
        "expected_runtime_s": {"cpu": None, "cuda": None},
        "training": {
            "data": data_description, **({"cohort_volumes": task.fitted_volumes} if task.fitted else
                                         {"steps": config.steps, "best_step": best.get("step")}),
            "validation": best.get("metrics"), "time_minutes": round(training_minutes, 1),
            "machine": machine(), "device": device, "seed": config.seed,
            "command": config.command, "uadbrain_version": __version__,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
                         if k not in ("out", "command", "resume")},
            **({"initialised_from": initialised} if initialised else {}),
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
                                             CALIBRATION_SEED, config.age_range)
    else:
        from .calibrate import folder_cases

        cases, description = folder_cases(config.data, config.contrasts, config.calibration_volumes, config.age_range)
    bar = tqdm(total=config.calibration_volumes, desc="calibrate")
    calibration, measured = calibrate_model(bundle, cases, device, description, progress=lambda _: bar.update(1))
    bar.close()
    metadata["calibration"] = calibration
    metadata["expected_runtime_s"]["cuda" if device.startswith("cuda") else "cpu"] = round(measured["seconds_per_case"], 1)
    metadata["expected_runtime_s"]["measured"] = (f"calibration: {measured['cases']} cases of "
                                                  f"{'+'.join(config.contrasts)}, {device}")
    write_metadata(out, metadata)
    (out / "README.md").write_text(model_card(metadata, history), encoding="utf-8")
    return out


def loss_trend(history: list) -> str:
    """Whether the training loss still fell over the last validation interval (so more steps may help)."""
    before, last = history[-2], history[-1]
    if before["loss"] * last["loss"] < 0:  # f-AnoGAN: the critic's Wasserstein loss, then the encoder's
        return (f"not comparable (the loss changed sign between step {before['step']} and step {last['step']}: "
                f"{before['loss']:.4g}, then {last['loss']:.4g})")
    change = (last["loss"] - before["loss"]) / abs(before["loss"]) if before["loss"] else 0.0
    # the recorded loss is a moving average over about the last 50 steps: changes within 5 % are noise
    verdict = "still falling" if change < -0.05 else "rising" if change > 0.05 else "flat"
    return (f"{verdict} (smoothed training loss {before['loss']:.4g} at step {before['step']}, "
            f"{last['loss']:.4g} at step {last['step']})")


def model_card(metadata: dict, history: list) -> str:
    """The bundle's README: what the model is, how it was trained, what was measured."""
    recorded = ("data", "steps", "best_step", "time_minutes", "machine", "device", "seed", "command", "validation")
    training = {**dict.fromkeys(recorded, "not recorded"), **metadata.get("training", {})}
    age = " --age 67" if "age" in metadata.get("network", {}).get("conditioning", {}) else ""
    lines = [
        f"# {metadata['name']}: {metadata['title']}", "", metadata["description"], "",
        "## Use", "", "```", f"uadbrain detect --{metadata['contrasts'][0]} scan.nii.gz --model "
        f"{metadata['name']}{age} --out result/", "```", "",
        f"Contrasts: {', '.join(metadata['contrasts'])}. Model grid: canonical axial slices at "
        f"{metadata['preprocessing']['spacing_mm']} mm, normalisation "
        f"`{metadata['preprocessing']['normalisation']}`. Expected run time: "
        f"{metadata['expected_runtime_s'].get('cpu')} s per case on CPU "
        f"({metadata['expected_runtime_s'].get('measured')}).", "",
        "## Training", "",
        f"- Data: {training['data']}",
        (f"- Cohort: {training['cohort_volumes']} healthy volumes; statistics fitted in one pass, no gradient steps"
         if "cohort_volumes" in training else
         f"- Steps: {training['steps']} (weights of step {training['best_step']}, the best on validation)"
         + (f", starting from the weights of `{training['initialised_from']['bundle']}` "
            f"({training['initialised_from']['tensors']} tensors)" if training.get("initialised_from") else "")),
        f"- Time: {training['time_minutes']} min on {training['machine']} ({training['device']})",
        f"- Seed: {training['seed']}",
        f"- Command: `{training['command']}`",
        f"- Validation (held-out synthetic data){'' if 'cohort_volumes' in training else ' at the kept step'}: "
        f"{json.dumps(training['validation'])}",
    ]
    if len(history) >= 2:
        lines.append(f"- Loss at the end: {loss_trend(history)}")
    rescored = training.get("rescored")
    if rescored:
        lines.append(f"- Rescored from `{rescored['from']}` (its training above; validation with its own score): "
                     f"`{rescored['command']}`")
    lines += ["", "## Healthy calibration", "", f"{(metadata.get('calibration') or {}).get('description', 'none')}",
              ""]
    if history:
        keys = [k for k in history[-1] if k not in ("step", "loss")]
        lines += ["## Validation history", "", "| step | loss | " + " | ".join(keys) + " |",
                  "|" + "---|" * (len(keys) + 2)]
        for row in history:
            lines.append(f"| {row['step']} | {row['loss']:.4f} | "
                         + " | ".join(f"{row.get(k, float('nan')):.4g}" for k in keys) + " |")
    lines += ["", "## Evaluation on real scans", "",
              "Not measured by `uadbrain train`: run `uadbrain evaluate` and add the table here.", "",
              "## References", ""] + [f"- {r}" for r in metadata.get("references", [])] + [""]
    return "\n".join(lines)
