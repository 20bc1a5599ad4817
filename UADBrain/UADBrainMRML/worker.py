"""Runs ``UADBrainLib.detect`` in a separate Python process for the Slicer panel.

Usage: ``python worker.py FOLDER``. FOLDER holds ``request.json`` and the input images (written
by :mod:`UADBrainMRML.background`). The worker writes ``progress.json`` while it runs (replaced
atomically), then ``result.pickle`` on success or ``error.json`` on failure, and stops at the
next checkpoint once a file named ``cancel`` appears in FOLDER; a cancelled worker removes FOLDER
itself, since the panel may no longer be waiting for it.

It imports the engine only: no MRML, no Qt. Running it as a script (not ``-m``) lets it start
from Slicer's ``PythonSlicer`` without any PYTHONPATH set up.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import time
import traceback
from pathlib import Path

REQUEST_FILE = "request.json"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.pickle"
ERROR_FILE = "error.json"
CANCEL_FILE = "cancel"
PROGRESS_INTERVAL_S = 0.1


def write_json_atomically(path: Path, value) -> None:
    """The standard library only (not UADBrainLib.io's helper): the error file must be written even
    when the engine itself cannot be imported."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value), encoding="utf-8")
    os.replace(temporary, path)


class CancelFile:
    """``is_set()`` like a threading.Event: true once the cancel file exists."""

    def __init__(self, path: Path):
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


class ProgressFile:
    def __init__(self, path: Path):
        self.path = path
        self.last = ("", 0.0)

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage != self.last[0] or now - self.last[1] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
            try:
                write_json_atomically(self.path, {"fraction": fraction, "stage": stage})
            except OSError:  # Windows refuses the replace while the panel reads the file; skip one update
                return
            self.last = (stage, now)


def run(folder: Path) -> None:
    import SimpleITK as sitk

    from UADBrainLib.inference.options import DetectOptions
    from UADBrainLib.inference.pipeline import detect

    request = json.loads((folder / REQUEST_FILE).read_text(encoding="utf-8"))
    images = {contrast: sitk.ReadImage(str(folder / name)) for contrast, name in request["images"].items()}
    mask = sitk.ReadImage(str(folder / request["mask"])) if request["mask"] else None
    options = DetectOptions.from_dict(request["options"])
    result = detect(images, model=request["model"], options=options, mask=mask,
                    progress=ProgressFile(folder / PROGRESS_FILE), cancel=CancelFile(folder / CANCEL_FILE))
    result.inputs = {}  # the caller holds the inputs already; no need to send them back
    temporary = folder / (RESULT_FILE + ".tmp")
    with open(temporary, "wb") as handle:
        pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temporary, folder / RESULT_FILE)


def error_details(error: BaseException) -> dict:
    from UADBrainLib.errors import UADBrainError

    known = isinstance(error, UADBrainError)
    details = {
        "type": type(error).__name__ if known else "UnexpectedError",
        "message": str(error) if known else f"{type(error).__name__}: {error}",
        "traceback": "" if known else traceback.format_exc(),
    }
    if isinstance(error, ModuleNotFoundError) and error.name:
        details["missing_module"] = error.name.split(".")[0]  # the panel offers to install it
    return details


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    try:
        run(folder)
    except BaseException as error:  # noqa: BLE001 — every failure must reach the panel
        if CancelFile(folder / CANCEL_FILE).is_set():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            write_json_atomically(folder / ERROR_FILE, error_details(error))
        return 1
    return 0


if __name__ == "__main__":
    # the folder above this one holds UADBrainLib; replace the script's own folder on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.exit(main(sys.argv))
