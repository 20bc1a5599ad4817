"""Choosing the compute device: a CUDA GPU, then an Apple-silicon GPU (MPS), then the CPU.

A GPU counts as usable only when PyTorch can run one small operation on it: a CUDA build whose
driver is too old, or whose GPU cannot initialise, reports ``torch.cuda.is_available()`` falsely
or fails on first use. ``auto`` then runs on the CPU and says why (:attr:`DeviceChoice.note`); an
explicit ``cuda`` or ``mps`` request refuses with that reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass

from .errors import DeviceError, first_line

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N for the N-th CUDA GPU
DEVICE_HELP = "auto (a CUDA GPU, else an Apple-silicon GPU, else the CPU), cpu, cuda, cuda:N or mps"
REINSTALL_HINT = ("reinstall PyTorch for this machine's GPU (https://pytorch.org/get-started/locally; in Slicer "
                  "through the PyTorch extension's 'PyTorch Utils' module), or choose the CPU")

# With this set, operators PyTorch lacks on MPS run on the CPU one by one instead of raising.
MPS_OPERATOR_FALLBACK = {"PYTORCH_ENABLE_MPS_FALLBACK": "1"}


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # what runs: "cpu", "cuda", "cuda:1", "mps"
    note: str | None = None  # why ``auto`` left a GPU that is there unused


def allow_mps_operator_fallback(environment=None) -> None:
    """Set :data:`MPS_OPERATOR_FALLBACK` in ``environment`` (None: this process's, where it helps
    only before PyTorch is imported, which reads it then) unless the user set it. The programs that
    run scans call it (the CLI, the web app, the Slicer panel's worker process); where it came too
    late, an operator MPS lacks moves the whole scan to the CPU (pipeline.py)."""
    if sys.platform != "darwin":
        return
    environment = os.environ if environment is None else environment
    for name, value in MPS_OPERATOR_FALLBACK.items():
        environment.setdefault(name, value)


def check_device_name(value: str | None) -> str:
    """The device name, lower-cased, or a one-line refusal (the argparse type of every ``--device``)."""
    name = str(value if value is not None else "auto").strip().lower()
    if name in DEVICE_CHOICES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise DeviceError(f"unknown device {value!r} — use {DEVICE_HELP}.")


def _torch():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _probe(torch, device: str) -> str | None:
    """None when one small operation runs on ``device``, else the error's first line."""
    try:
        value = (torch.ones(2, device=device) * 2).sum().item()
    except Exception as error:  # CUDA/MPS start-up errors come as RuntimeError, AssertionError, OSError...
        return first_line(error)
    return None if value == 4 else f"a test operation gave {value} instead of 4"


@functools.lru_cache(maxsize=None)
def cuda_status(probe: bool = True) -> tuple[int, str | None]:
    """``(usable CUDA GPUs, why a CUDA build cannot use its GPU or None)``, once per process.
    ``probe``: run one operation on the GPU (a GUI process that only lists devices skips it: it
    would hold a CUDA context, hundreds of MB of GPU memory, for the application's lifetime)."""
    torch = _torch()
    if torch is None or not torch.backends.cuda.is_built():
        return 0, None
    with warnings.catch_warnings(record=True) as caught:  # an old driver is reported as a warning
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        reason = next((first_line(w.message) for w in caught), None)
        return 0, (f"the CUDA build of PyTorch {torch.__version__} found no usable GPU: {reason}" if reason else None)
    problem = _probe(torch, "cuda") if probe else None
    if problem:
        return 0, f"the CUDA GPU could not start with PyTorch {torch.__version__}: {problem}"
    return torch.cuda.device_count(), None


@functools.lru_cache(maxsize=None)
def mps_status(probe: bool = True) -> tuple[bool, str | None]:
    """``(Apple-silicon GPU usable, why an MPS build cannot use it or None)``, once per process."""
    torch = _torch()
    mps = getattr(torch.backends, "mps", None) if torch is not None else None
    if mps is None or not mps.is_built() or not mps.is_available():
        return False, None
    problem = _probe(torch, "mps") if probe else None
    return (False, f"the Apple-silicon GPU (MPS) could not start: {problem}") if problem else (True, None)


def choose_device(requested: str | None = "auto", probe: bool = True) -> DeviceChoice:
    """The device a run uses for ``requested``; ``cuda``/``cuda:N``/``mps`` must be usable
    (``probe``: see :func:`cuda_status`)."""
    requested = check_device_name(requested)
    if requested == "cpu":
        return DeviceChoice("cpu")
    gpus, cuda_problem = cuda_status(probe)
    if requested == "auto":
        if gpus:
            return DeviceChoice("cuda")
        mps_usable, mps_problem = mps_status(probe)
        if mps_usable:
            return DeviceChoice("mps")
        problems = [p for p in (cuda_problem, mps_problem) if p]
        return DeviceChoice("cpu", f"{'; '.join(problems)} — {REINSTALL_HINT}." if problems else None)
    if requested == "mps":
        mps_usable, mps_problem = mps_status(probe)
        if not mps_usable:
            raise DeviceError(f"MPS was requested but {mps_problem or 'no Apple-silicon GPU is available to PyTorch'}"
                              " — choose the CPU (or auto).")
        return DeviceChoice("mps")
    if not gpus:
        raise DeviceError(f"CUDA was requested but {cuda_problem or 'no CUDA GPU is available to PyTorch'} — "
                          f"{REINSTALL_HINT} (or auto).")
    index = int(requested.partition(":")[2] or 0)
    if index >= gpus:
        raise DeviceError(f"{requested} was requested but PyTorch sees {gpus} CUDA GPU{'s' * (gpus > 1)} "
                          f"(cuda:0{f' … cuda:{gpus - 1}' if gpus > 1 else ''}) — choose one of them.")
    return DeviceChoice(requested)


def resolve_device(requested: str | None = "auto") -> str:
    """The device name :func:`choose_device` picks (for tools that need no note)."""
    return choose_device(requested).device


def available_devices(probe: bool = True) -> list[str]:
    """The devices a user can pick here, GPUs first (``probe``: see :func:`cuda_status`)."""
    gpus = cuda_status(probe)[0]
    cuda = ["cuda"] if gpus == 1 else [f"cuda:{index}" for index in range(gpus)]
    return cuda + (["mps"] if mps_status(probe)[0] else []) + ["cpu"]
