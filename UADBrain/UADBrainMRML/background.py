"""The engine run of the Slicer panel, in a separate Python process.

A separate process (rather than a thread) keeps the GUI responsive whatever the engine does:
SimpleITK and scipy hold Python's global interpreter lock during long filters, and Slicer's
main thread must never wait for it. The process gets the inputs as files in a private temporary
folder, reports progress through a small JSON file that :meth:`BackgroundDetection.poll` reads
(the panel polls it from a QTimer), and hands the engine ``Result`` back as a pickle that this
process wrote into that folder itself. Nothing here touches MRML or Qt.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import SimpleITK as sitk

from UADBrainLib import errors

from . import worker
from .request import EngineRequest

WORKER_SCRIPT = Path(worker.__file__).resolve()


@dataclass
class Status:
    fraction: float
    stage: str
    finished: bool = False  # the process ended (successfully or not)


class BackgroundDetection:
    """One engine run in a child process: ``start()``, then ``poll()`` until finished, ``result()``."""

    def __init__(self, request: EngineRequest, python_executable: str | None = None):
        self.request = request
        self.python = python_executable or sys.executable
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
            "options": asdict(self.request.options),
        }))
        log = open(self.folder / "worker.log", "w")
        self.process = subprocess.Popen([self.python, str(WORKER_SCRIPT), str(self.folder)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def poll(self) -> Status:
        """Progress so far; ``finished`` once the child process has exited (or was cancelled)."""
        if self.cancelled:
            return Status(1.0, "cancelled", finished=True)
        try:
            progress = json.loads((self.folder / worker.PROGRESS_FILE).read_text())
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
        """Stop the run; the child stops at its next checkpoint and its folder is removed."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            (self.folder / worker.CANCEL_FILE).touch()
            self.process.terminate()  # with a launcher (PythonSlicer) the cancel file reaches the real child

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _error(self) -> Exception:
        try:
            details = json.loads((self.folder / worker.ERROR_FILE).read_text())
        except (OSError, ValueError):
            log = (self.folder / "worker.log").read_text(errors="replace").strip().splitlines()
            tail = " | ".join(log[-3:]) or "no output"
            return RuntimeError(f"the analysis process stopped unexpectedly (exit code "
                                f"{self.process.returncode}): {tail}")
        error_class = getattr(errors, details["type"], None)
        if isinstance(error_class, type) and issubclass(error_class, errors.UADBrainError):
            return error_class(details["message"])
        return RuntimeError(f"the analysis failed: {details['message']}\n{details['traceback']}")
