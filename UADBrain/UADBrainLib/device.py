"""Choosing the compute device."""

from __future__ import annotations

import importlib.util

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str | None = "auto") -> str:
    """``auto`` → ``cuda`` when a CUDA GPU is usable, else ``cpu``; ``cuda`` must be available."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not cuda_available():
            raise DeviceError("CUDA was requested but no CUDA GPU is available to PyTorch — use "
                              "--device cpu (or auto), or install a CUDA build of PyTorch.")
        return requested
    raise DeviceError(f"unknown device '{requested}' — use one of {', '.join(DEVICE_CHOICES)}.")


def available_devices() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]
