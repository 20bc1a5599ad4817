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
        return ["auto", *available_devices()]
    except Exception:  # noqa: BLE001 - a broken PyTorch install must not stop the page from opening
        return ["auto", "cpu"]


def start_run(logic, volumes: dict, model: str | None, device: str, post: PostProcessing,
              brain_mask_method: str = DEFAULTS.brain_mask_method, age: float | None = DEFAULTS.age):
    """Loop thread: the engine's inputs, copied out of the volume nodes."""
    options = replace(post.options(device), brain_mask_method=brain_mask_method, age=age)
    return logic.makeRequest(volumes, modelName=model or None, maskNode=None, options=options)


def run_engine(logic, request, progress, cancel_event):
    """Worker thread: the model run itself; touches no MRML node."""
    result = logic.runEngine(request, progress, cancel_event)
    if cancel_event.is_set():
        raise Cancelled("cancelled by the user.")
    return result


def finish_run(logic, request, result):
    """Loop thread: the result as nodes, replacing the previous run's, shown in the slice views."""
    outputs = logic.createOutputs(request, result, replaceExisting=True)
    logic.showOutputs(outputs)
    return outputs


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
