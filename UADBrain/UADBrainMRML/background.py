"""The engine run of the Slicer panel, in a separate Python process.

A separate process (rather than a thread) keeps the GUI responsive whatever the engine does:
SimpleITK and scipy hold Python's global interpreter lock during long filters, and Slicer's
main thread must never wait for it. The process gets the inputs as files in a private temporary
folder, reports progress through a small JSON file that :meth:`BackgroundDetection.poll` reads
(the panel polls it from a QTimer), and hands the engine ``Result`` back as a pickle that this
process wrote into that folder itself. Nothing here touches MRML or Qt.

In Slicer the child is ``PythonSlicer``, a launcher that starts the real interpreter as its own
child: stopping the launcher alone would leave the engine running. The child therefore gets a
process group of its own, and cancelling stops the whole group (and writes a cancel file the
worker checks, in case a platform keeps the interpreter out of the group).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from UADBrainLib import errors
from UADBrainLib.device import allow_mps_operator_fallback

from . import worker
from .dependencies import MissingPackage
from .request import EngineRequest

WORKER_SCRIPT = Path(worker.__file__).resolve()
STOP_TIMEOUT_S = 5.0  # how long cleanup waits for a stopped process group to exit


@dataclass
class Status:
    fraction: float
    stage: str
    finished: bool = False  # the process ended (successfully or not)


class BackgroundDetection:
    """One engine run in a child process: ``start()``, then ``poll()`` until finished, ``result()``."""

    def __init__(self, request: EngineRequest, python_executable: str | None = None,
                 environment: dict | None = None):
        self.request = request
        self.python = python_executable or sys.executable
        self.environment = environment  # None: this process's environment
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self.cancelled = False

    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="uadbrain-run-"))
        names = {contrast: f"{contrast}.nrrd" for contrast in self.request.images}
        for contrast, name in names.items():
            sitk.WriteImage(self.request.images[contrast], str(self.folder / name))
        if self.request.mask is not None:
            sitk.WriteImage(self.request.mask, str(self.folder / "mask.nrrd"))
        (self.folder / worker.REQUEST_FILE).write_text(json.dumps({
            "images": names,
            "mask": "mask.nrrd" if self.request.mask is not None else None,
            "model": self.request.model,
            "options": self.request.options.to_dict(),
        }), encoding="utf-8")
        log = open(self.folder / "worker.log", "w", encoding="utf-8")
        environment = dict(os.environ if self.environment is None else self.environment)
        allow_mps_operator_fallback(environment)  # the worker imports PyTorch after it starts
        self.process = subprocess.Popen([self.python, str(WORKER_SCRIPT), str(self.folder)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=environment, **_own_process_group())
        log.close()

    def poll(self) -> Status:
        """Progress so far; ``finished`` once the child process has exited (or was cancelled)."""
        if self.cancelled:
            return Status(1.0, "cancelled", finished=True)
        try:
            progress = json.loads((self.folder / worker.PROGRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not written yet (or being replaced on Windows)
            progress = {"fraction": 0.0, "stage": "starting"}
        return Status(float(progress["fraction"]), str(progress["stage"]), self.process.poll() is not None)

    def result(self):
        """The engine Result; raises the engine's error (or Cancelled) when the run did not succeed."""
        if self.cancelled:
            raise errors.Cancelled("cancelled by the user.")
        self.process.wait()
        result_file = self.folder / worker.RESULT_FILE
        if self.process.returncode == 0 and result_file.is_file():
            with open(result_file, "rb") as handle:
                result = pickle.load(handle)  # written by our own worker into our private folder
            result.inputs = dict(self.request.images)
            return result
        raise self._error()

    def cancel(self) -> None:
        """Stop the run: the child's whole process group, launcher and interpreter alike."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            (self.folder / worker.CANCEL_FILE).touch()
            _stop_process_group(self.process)

    def cleanup(self) -> None:
        """Remove the run's folder; a run still going is cancelled first."""
        if self.process is not None:
            if self.process.poll() is None:
                self.cancel()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return  # the worker removes its folder itself once it sees the cancel file
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _error(self) -> Exception:
        try:
            details = json.loads((self.folder / worker.ERROR_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log = (self.folder / "worker.log").read_text(errors="replace", encoding="utf-8").strip().splitlines()
            tail = " | ".join(log[-3:]) or "no output"
            return RuntimeError(f"the analysis process stopped unexpectedly (exit code "
                                f"{self.process.returncode}): {tail}")
        if details.get("missing_module"):
            return MissingPackage(details["missing_module"])
        error_class = getattr(errors, details["type"], None)
        if isinstance(error_class, type) and issubclass(error_class, errors.UADBrainError):
            return error_class(details["message"])
        return RuntimeError(f"the analysis failed: {details['message']}\n{details['traceback']}")


def _own_process_group() -> dict:
    """Popen arguments: the child leads a process group of its own, with no console window."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _stop_process_group(process: subprocess.Popen) -> None:
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # the group has already exited
        pass
