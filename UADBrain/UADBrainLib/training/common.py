"""What every trainer shares: the learning-rate schedule, checkpoints that survive an interrupted
run, weights written with the SHA-256 that the bundle's metadata records, and the machine's name.

Used by the anomaly-model trainer (``train.py``), the brain extractor's (``brainmask.py``), the
tissue network's (``tissue.py``) and the contrast check's (``input_check.py``); the three whose 3D
networks see one whole volume per step share :func:`train_whole_volumes`. Bundles are read back with ``torch.load(weights_only=True)``
after their checksum is verified (``bundle.py``), so only tensors and plain values are saved.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

from ..bundle import sha256_of

WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def warmup_cosine(step: int, steps: int, warmup: int, floor: float) -> float:
    """Factor of the base learning rate: linear warm-up over ``warmup`` steps, then cosine decay
    to ``floor`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(steps - warmup, 1))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically: a run killed while saving keeps the previous one."""
    import torch

    temporary = Path(path).with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def write_weights(state_dict: dict, folder: Path, half: bool = False) -> dict:
    """The network's weights as ``folder/weights.pt`` (on the CPU; floating-point tensors in
    float16 with ``half``); returns the metadata's ``weights`` entry."""
    import torch

    weights = Path(folder) / WEIGHTS_FILE
    torch.save({name: (tensor.detach().cpu().half() if half and tensor.is_floating_point() else tensor.detach().cpu())
                for name, tensor in state_dict.items()}, weights)
    return {"file": WEIGHTS_FILE, "sha256": sha256_of(weights)}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), {platform.system()}"


def train_whole_volumes(network, make_loader, loss_function, validate, out: Path, steps: int,
                        learning_rate: float, warmup_steps: int, validate_every: int, resume: bool,
                        device: str, log) -> tuple[int, float, list[dict]]:
    """Train a 3D network one whole volume per step, with a warm-up/cosine schedule, a CSV loss log,
    validation scores and a checkpoint every ``validate_every`` steps (``resume`` goes on from it).

    ``make_loader(step)`` gives ``(input, target)`` tensor pairs (drawn afresh from that step on);
    ``validate(network)`` gives a dict of scores. Returns ``(steps done, wall seconds, history)``.
    """
    import csv
    import json
    import time

    import numpy as np
    import torch

    from ..inference.brainmask_net import pad_for_network

    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, warmup_steps, floor=0.02))
    step, wall_before, history = 0, 0.0, []
    checkpoint_path = Path(out) / CHECKPOINT_FILE
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, device)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, wall_before = int(state["step"]), float(state["wall_s"])
        history = json.loads(state["history"])
        log(f"resumed at step {step}")
    log_path = Path(out) / "training_log.csv"
    new_log = not (resume and log_path.is_file())
    started = time.perf_counter()
    network.train()
    with open(log_path, "w" if new_log else "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "loss", "learning_rate", "wall_s"])
        losses = []
        for image, target in make_loader(step):
            if step >= steps:
                break
            optimizer.zero_grad(set_to_none=True)
            padded_image, _ = pad_for_network(image[0].numpy())  # (channel, S, P, L) -> one volume
            padded_target, _ = pad_for_network(target[0].numpy())
            logits = network(torch.from_numpy(padded_image)[None, None].to(device))
            loss = loss_function(logits, torch.from_numpy(padded_target)[None, None].to(device))
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            wall = wall_before + time.perf_counter() - started
            if step % 25 == 0:
                writer.writerow([step, round(float(np.mean(losses)), 5),
                                 f"{scheduler.get_last_lr()[0]:.3g}", round(wall, 1)])
                handle.flush()
                losses = []
            if step % validate_every == 0 or step == steps:
                network.eval()
                scores = {"step": step, "wall_s": round(wall, 1), **validate(network)}
                network.train()
                history.append(scores)
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))
                save_checkpoint(checkpoint_path, {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                                                  "scheduler": scheduler.state_dict(), "step": step, "wall_s": wall,
                                                  "history": json.dumps(history)})
    return step, wall_before + time.perf_counter() - started, history
