"""What every trainer shares: the learning-rate schedule, checkpoints that survive an interrupted
run, weights written with the SHA-256 that the bundle's metadata records, and the machine's name.

Used by the anomaly-model trainer (``train.py``), the brain extractor's (``brainmask.py``) and the
contrast check's (``input_check.py``). Bundles are read back with ``torch.load(weights_only=True)``
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
