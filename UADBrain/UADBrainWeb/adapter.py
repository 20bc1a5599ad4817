"""The one seam between the web front end and the module Logic (``UADBrainMRML.logic``).

Everything the web app asks of the Logic goes through this file, so the Logic's contract can
change in one place. A run uses the Logic's three stages so that MRML is only touched on the
event-loop thread (the one that renders the views):

    logic = UADBrainMRMLLogic(scene)
    request = logic.makeRequest(inputVolumes, modelName, maskNode, options)      # options: a DetectOptions
    result = logic.runEngine(request, progressCallback, cancelEvent)      # worker thread, no MRML
    outputs = logic.createOutputs(request, result, replaceExisting=True)
    logic.showOutputs(outputs); logic.jumpToLesion(outputs, index)
    logic.rethreshold(outputs, threshold=..., median=..., minSizeMm3=..., fpr=..., erosionMm=...)
    logic.tuneSlider(outputs); logic.readout(outputs); logic.removeOutputs(outputs)
    paths = logic.exportResults(outputs, folder)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from UADBrainLib.device import available_devices
from UADBrainLib.errors import Cancelled
from UADBrainLib.inference import brain_extraction
from UADBrainLib.inference.options import DEFAULTS, DetectOptions
from UADBrainLib.inference.postprocessing import MEDIAN_KERNELS

CONTRASTS = ("flair", "t1", "t2", "t1c")
BRAIN_MASK_METHODS = brain_extraction.BRAIN_MASK_METHODS
MEDIAN_CHOICES = [{"title": "off" if kernel == 0 else f"{kernel} mm", "value": kernel} for kernel in MEDIAN_KERNELS]
DOWNLOAD_FILE_NAMES = {
    "segmentation_nrrd": "segmentation.seg.nrrd",
    "segmentation_nifti": "segmentation.nii.gz",
    "anomaly_map": "anomaly_map.nii.gz",
    "lesions_csv": "lesions.csv",
}


@dataclass(frozen=True)
class PostProcessing:
    """What the Tune controls set; None keeps the run's value (the model's default on a new run)."""

    threshold: float | None
    median: int | None = None  # 0 = off
    min_size_mm3: float | None = None
    fpr: float | None = None
    erosion_mm: float | None = None

    def options(self, device: str) -> DetectOptions:
        return replace(DEFAULTS, threshold=self.threshold, median=self.median, min_size_mm3=self.min_size_mm3,
                       fpr=self.fpr, erosion_mm=self.erosion_mm, device=device)


def create_logic(scene):
    from UADBrainMRML.logic import UADBrainMRMLLogic

    return UADBrainMRMLLogic(scene)


def available_models() -> list[str]:
    """Bundled model names, the default first."""
    from UADBrainLib.bundle import list_bundled

    return list_bundled()


def write_example_volumes(folder: Path) -> dict[str, Path]:
    """The built-in example case written as files, keyed by contrast."""
    import SimpleITK as sitk

    from UADBrainLib.inference.bundled_example import load_example

    paths = {}
    for contrast, image in load_example().items():
        if contrast in CONTRASTS:
            paths[contrast] = Path(folder) / f"example_{contrast}.nii.gz"
            sitk.WriteImage(image, str(paths[contrast]))
    return paths


def usable_devices() -> list[str]:
    """``auto`` and the devices usable on this server, GPUs first (the CPU alone if PyTorch cannot load)."""
    try:
        return ["auto", *available_devices(probe=False)]  # no GPU memory held by listing it
    except Exception:  # noqa: BLE001 - a broken PyTorch install must not stop the page from opening
        return ["auto", "cpu"]


def run_options(device: str, post: PostProcessing, brain_mask_method: str = DEFAULTS.brain_mask_method,
                age: float | None = DEFAULTS.age) -> DetectOptions:
    return replace(post.options(device), brain_mask_method=brain_mask_method, age=age)


def start_run(logic, volumes: dict, model: str | None, options: DetectOptions):
    """Loop thread: the engine's inputs, copied out of the volume nodes."""
    return logic.makeRequest(volumes, modelName=model or None, maskNode=None, options=options)


def subject_of(file_name: str) -> str:
    """The subject a file's name states: the name without its extension and contrast token
    (``case2_flair.nii.gz`` and ``case2_t1.nii.gz`` are subject ``case2``)."""
    from UADBrainLib.cohort import split_contrast
    from UADBrainLib.io import image_path_suffix
    from UADBrainMRML.volumesets import UNNAMED_SET

    stem = file_name[: -len(image_path_suffix(file_name)) or None]
    contrast_named, subject = split_contrast(stem)
    return (subject or UNNAMED_SET) if contrast_named else " ".join(stem.lower().replace("_", " ").split())


def volume_sets(volumes: list[dict], nodes: dict) -> list:
    """The page's volumes per subject (each volume's subject field, first read from its file
    name), with the contrast the page gives it."""
    from UADBrainMRML.volumesets import group_into_sets

    entries = [(volume["subject"], volume["contrast"], nodes[volume["id"]], "of one subject") for volume in volumes]
    return group_into_sets(entries, remedy="give one of them another subject, or remove it")


def start_set_runs(logic, sets: list, model: str | None, options: DetectOptions):
    """Loop thread: every set in turn, each in a background process; poll the runs on the loop thread."""
    import sys

    return logic.startVolumeSetRuns(sets, model or None, options, sys.executable, replaceExisting=True)


def set_rows(runs, status) -> list[dict]:
    """One row per set for the page: its name, where it stands, whether it has a result to show."""
    rows = []
    for index, volume_set in enumerate(runs.sets):
        outcome = status.outcomes[index] if index < len(status.outcomes) else None
        if outcome is not None:
            text = outcome.summary
        else:
            text = ("running" if index == len(status.outcomes) else "waiting") if not status.finished else "skipped"
        rows.append({"index": index, "name": volume_set.name, "status": text,
                     "ok": outcome is not None and outcome.error is None})
    return rows


def run_engine(logic, request, progress, cancel_event):
    """Worker thread: the model run itself; touches no MRML node."""
    result = logic.runEngine(request, progress, cancel_event)
    if cancel_event.is_set():
        raise Cancelled("cancelled by the user.")
    return result


def finish_run(logic, request, result):
    """Loop thread: the result as nodes, replacing the previous run's, shown in the slice views."""
    outputs = logic.createOutputs(request, result, replaceExisting=True)
    show_outputs(logic, outputs)
    return outputs


def show_outputs(logic, outputs) -> None:
    logic.showOutputs(outputs)


def remove_outputs(logic, outputs) -> None:
    logic.removeOutputs(outputs)


def rethreshold(logic, outputs, post: PostProcessing) -> None:
    logic.rethreshold(outputs, threshold=post.threshold, median=post.median, minSizeMm3=post.min_size_mm3,
                      fpr=post.fpr, erosionMm=post.erosion_mm)


def readout(logic, outputs) -> str:
    """Flagged volume, lesion count and threshold in one line, as the Slicer panel shows them."""
    return logic.readout(outputs)


def slider(logic, outputs):
    """The threshold slider's span, step and decimals, as the Slicer panel shows them."""
    return logic.tuneSlider(outputs)


def jump_to_lesion(logic, outputs, index: int) -> None:
    logic.jumpToLesion(outputs, index)


def threshold_of(outputs) -> float:
    return float(outputs.result.threshold)


def lesion_rows(outputs) -> list[dict]:
    """Lesions as plain rows for the page, in the engine's order (1 = most anomalous)."""
    return [
        {
            "volume_ml": round(float(lesion.volume_ml), 3),
            "max_score": round(float(lesion.max_score), 3),
            "centroid_ras": [round(float(c), 1) for c in lesion.centroid_ras],
            "index": index,
        }
        for index, lesion in enumerate(outputs.result.lesions)
    ]


def export(logic, outputs, folder: Path) -> dict[str, Path]:
    """Write every result file; returns them by download kind."""
    by_name = {Path(path).name: Path(path) for path in logic.exportResults(outputs, folder)}
    return {kind: by_name[name] for kind, name in DOWNLOAD_FILE_NAMES.items() if name in by_name}
