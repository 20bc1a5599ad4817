"""Fitting network work into the device's memory, and what a run tells the user about it.

Slice batches on a CUDA GPU are sized from its free memory, measured on a first one-slice batch;
on any device a batch that runs out of memory is halved and run again. A scan whose one-slice
batch does not fit, or that runs out of memory elsewhere (a brain extractor), runs again on the
CPU (``pipeline.py``). A slice's result does not depend on its batch, so each path gives the same
map within floating-point tolerance. What happened reaches the run's report through
:func:`collecting_device_notes` (a context variable: safe with runs in several threads).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

MEMORY_MARGIN = 0.7  # share of the free GPU memory a batch may take: the allocator fragments, cuDNN needs workspace
_NOTES: ContextVar[list[str] | None] = ContextVar("uadbrain_device_notes", default=None)
_peak_before_reset: dict[str, int] = {}  # a device's allocation peak before this module reset it to measure


@contextmanager
def collecting_device_notes() -> Iterator[list[str]]:
    """The notes of everything run within: batches shrunk, a fallback to the CPU."""
    notes: list[str] = []
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def add_device_note(message: str) -> None:
    notes = _NOTES.get()
    if notes is not None and message not in notes:
        notes.append(message)


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA/MPS/CPU allocation failure (``torch.OutOfMemoryError``, or the RuntimeError MPS and
    the CPU allocator raise)."""
    import torch

    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(error, out_of_memory):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


GPU_OUT_OF_MEMORY = ("CUDA out of memory", "HIP out of memory", "MPS backend out of memory")


def cpu_fallback_note(error: BaseException, device: str, chosen_by_auto: bool = False) -> str | None:
    """What the report says when the scan runs again on the CPU — the GPU ran out of memory, MPS
    lacks an operator, or (when ``auto`` chose the GPU) CUDA itself failed, e.g. no kernel for this
    GPU — or None when the error stands. (The host running out of memory is no reason: the CPU run
    would need more of it.)"""
    from ..device import REINSTALL_HINT
    from ..errors import first_line

    if device == "cpu":
        return None
    reason, ran = first_line(error), "the scan ran on the CPU instead (same result, slower)"
    if any(text in str(error) for text in GPU_OUT_OF_MEMORY):
        return (f"{device} ran out of memory ({reason}); {ran} — close other programs that use the GPU, "
                "or choose the CPU to skip the try.")
    if device == "mps" and isinstance(error, NotImplementedError):
        return f"mps lacks an operator this model needs ({reason}); {ran}."
    if chosen_by_auto and isinstance(error, RuntimeError) and str(error).startswith("CUDA error"):
        return f"{device} failed ({reason}); {ran} — {REINSTALL_HINT}."
    return None


def release_cached_memory(device: str) -> None:
    """Hand the GPU memory PyTorch caches back (after an out-of-memory error)."""
    import torch

    try:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        elif device == "mps":
            torch.mps.empty_cache()
    except RuntimeError:  # a GPU left in an error state: the CPU run that follows needs none of it
        pass


def reset_peak_memory(device: str) -> None:
    """Start measuring ``device``'s allocation peak (CUDA)."""
    import torch

    if device.startswith("cuda"):
        _peak_before_reset.pop(device, None)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: str) -> int | None:
    """The most ``device`` held since :func:`reset_peak_memory`, across this module's own resets (CUDA)."""
    import torch

    if not device.startswith("cuda"):
        return None
    return max(torch.cuda.max_memory_allocated(device), _peak_before_reset.get(device, 0))


def _fitting_batch_size(device: str, run_one: Callable[[], None], largest: int) -> int:
    """Run one one-slice batch on a CUDA device and return how many slices its free memory holds."""
    import torch

    torch.cuda.synchronize(device)
    _peak_before_reset[device] = peak_memory_bytes(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run_one()
    torch.cuda.synchronize(device)
    per_slice = max(torch.cuda.max_memory_allocated(device) - base, 1)
    free, _ = torch.cuda.mem_get_info(device)
    reusable = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by PyTorch
    return max(1, min(largest, int(MEMORY_MARGIN * (free + reusable) / per_slice)))


def run_in_batches(count: int, run_batch: Callable[[int, int], None], device: str, largest: int,
                   checkpoint: Callable[[], object] | None = None,
                   restore: Callable[[object], None] | None = None,
                   is_cancelled: Callable[[], bool] | None = None) -> None:
    """``run_batch(start, stop)`` over ``0 … count`` in batches of at most ``largest`` that fit
    ``device``. ``checkpoint``/``restore`` save and put back a stochastic network's random state,
    so a batch run again draws what it drew the first time."""
    from ..errors import Cancelled

    size, start = largest, 0
    if device.startswith("cuda") and count:
        # an out-of-memory error here (not even one slice fits) reaches the caller, which moves the scan to the CPU
        size, start = _fitting_batch_size(device, lambda: run_batch(0, 1), largest), 1
    while start < count:
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("cancelled by the user.")
        stop = min(start + size, count)
        state = checkpoint() if checkpoint else None
        try:
            run_batch(start, stop)
        except Exception as error:
            if not is_out_of_memory(error) or stop - start == 1:
                raise
            release_cached_memory(device)
            if restore is not None:
                restore(state)
            size = max(1, (stop - start) // 2)
            add_device_note(f"{device} ran out of memory with {stop - start} slices per batch; "
                            f"went on with {size} (same result, slower).")
            continue
        start = stop
