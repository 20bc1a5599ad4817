"""The module Logic on MRML nodes, without Qt: shared by the Slicer panel and the web app.

A run has three stages; only the first and last touch the scene:

1. :meth:`UADBrainMRMLLogic.makeRequest` (main thread): copies the input volumes into SimpleITK
   images with their exact geometry.
2. :meth:`UADBrainMRMLLogic.runEngine` (any thread) or :class:`BackgroundDetection` (another
   process): ``UADBrainLib.detect``, with progress and cancellation. No MRML.
3. :meth:`UADBrainMRMLLogic.createOutputs` (main thread): the Result becomes new nodes.

:meth:`UADBrainMRMLLogic.process` runs the three in a row, for the Python console and batch use.
A cancelled or failed run leaves the scene as it was; inputs are never modified.
"""

from __future__ import annotations

import threading
from pathlib import Path

import SimpleITK as sitk

from UADBrainLib.bundle import CONTRASTS
from UADBrainLib.errors import Cancelled, InputError
from UADBrainLib.geometry import resample_like
from UADBrainLib.inference.pipeline import detect

from .background import BackgroundDetection
from .checks import input_problems
from .display import jump_slices_to, show_in_slice_views, threshold_range, update_anomaly_window
from .export import export_outputs
from .lesiontable import fill_table
from .outputs import Outputs, create_outputs, update_segmentation
from .request import EngineRequest, make_request
from .segmentation import create_segmentation_node, set_segment_mask
from .volumes import add_volume_from_image

# share of the progress bar before and after the engine's own stages
PREPARE_SHARE, IMPORT_SHARE = 0.03, 0.05


class UADBrainMRMLLogic:
    def __init__(self, scene):
        self.scene = scene

    # ------------------------------------------------------------------ one call, for scripts
    def process(self, inputVolumes: dict, modelName=None, device="auto", maskNode=None, threshold=None,
                median=None, minSizeMm3=None, progressCallback=None, cancelEvent=None,
                replaceExisting=False) -> Outputs:
        """Detect anomalies in co-registered volumes; returns the new output nodes.

        ``inputVolumes``: contrast ("flair", "t1", "t2", "t1c") → scalar volume node. ``modelName``:
        a bundled model name or bundle folder (None: the default model for these contrasts).
        ``maskNode``: optional brain mask (labelmap volume or segmentation). ``threshold``: a
        number, "calibrated" or "otsu" (None: calibrated when the model has a calibration, else
        Otsu). ``median`` (voxels, 0 = off) and ``minSizeMm3``: None uses the model's defaults.
        ``progressCallback(fraction, stage)``; ``cancelEvent``: a threading.Event. Raises
        ``UADBrainLib.errors.UADBrainError`` subclasses with a message for the user.
        """
        progress = progressCallback or (lambda fraction, stage: None)
        cancel = cancelEvent or threading.Event()
        progress(0.0, "reading inputs")
        request = self.makeRequest(inputVolumes, modelName, device, maskNode, threshold, median, minSizeMm3)
        result = self.runEngine(request, lambda fraction, stage: progress(
            PREPARE_SHARE + (1.0 - PREPARE_SHARE - IMPORT_SHARE) * fraction, stage), cancel)
        if cancel.is_set():
            raise Cancelled("cancelled by the user.")
        progress(1.0 - IMPORT_SHARE, "creating output nodes")
        outputs = self.createOutputs(request, result, replaceExisting)
        progress(1.0, "done")
        return outputs

    # ------------------------------------------------------------------ the three stages
    @staticmethod
    def makeRequest(inputVolumes: dict, modelName=None, device="auto", maskNode=None, threshold=None,
                    median=None, minSizeMm3=None) -> EngineRequest:
        """Stage 1 (main thread): the engine's inputs, copied out of the nodes."""
        return make_request(inputVolumes, modelName, device, maskNode, threshold, median, minSizeMm3)

    @staticmethod
    def runEngine(request: EngineRequest, progressCallback=None, cancelEvent=None):
        """Stage 2 (any thread): the engine Result. Touches no MRML."""
        return detect(request.images, model=request.model, options=request.options, mask=request.mask,
                      progress=progressCallback, cancel=cancelEvent)

    @staticmethod
    def startBackground(request: EngineRequest, pythonExecutable: str | None = None,
                        environment: dict | None = None) -> BackgroundDetection:
        """Stage 2 in a child process; poll the returned job, then pass ``job.result()`` to stage 3.

        ``environment``: the child's environment variables (None: this process's).
        """
        job = BackgroundDetection(request, pythonExecutable, environment)
        job.start()
        return job

    def createOutputs(self, request: EngineRequest, result, replaceExisting: bool = False) -> Outputs:
        """Stage 3 (main thread): new nodes beside the reference input (the first contrast given)."""
        nodes = {contrast: self.scene.GetNodeByID(node_id) for contrast, node_id in request.input_node_ids.items()}
        reference = nodes[request.reference_contrast]
        if reference is None:
            raise InputError("the input volume was removed from the scene during the run — load it and run again.")
        return create_outputs(self.scene, reference, result, nodes, replaceExisting)

    # ------------------------------------------------------------------ after a run
    def rethreshold(self, outputs: Outputs, threshold=None, median=None, minSizeMm3=None) -> dict:
        """New segmentation, lesion table and overlay window from the cached map (no model rerun).

        ``threshold``: a number, "calibrated", "otsu", or None to keep the current one (a manual
        number stays; calibrated/Otsu are recomputed for the new median). ``median`` (0 = off) and
        ``minSizeMm3``: None keeps the current value. Returns the new settings and totals.
        """
        result = outputs.result.rethreshold(threshold=threshold, median=median, min_size_mm3=minSizeMm3)
        outputs.result = result
        update_segmentation(outputs)
        fill_table(outputs.tableNode, result.lesions)
        update_anomaly_window(outputs.anomalyMapNode, result.threshold)
        return {"threshold": result.threshold, "thresholdMethod": result.threshold_method,
                "median": result.median, "minSizeMm3": result.min_size_mm3,
                "flaggedVolumeMl": result.flagged_volume_ml, "lesionCount": result.lesion_count}

    def exportResults(self, outputs: Outputs, folder) -> list[Path]:
        """segmentation.seg.nrrd, segmentation.nii.gz, anomaly_map.nii.gz and lesions.csv in ``folder``."""
        return export_outputs(outputs, folder)

    def showOutputs(self, outputs: Outputs) -> None:
        """Input as background and the anomaly map as overlay in the slice views; go to lesion 1."""
        show_in_slice_views(self.scene, outputs.inputNode, outputs.anomalyMapNode)
        if outputs.result.lesions:
            self.jumpToLesion(outputs, 0)

    def jumpToLesion(self, outputs: Outputs, index: int) -> None:
        """Centre the slice views on lesion ``index`` (0 = the most anomalous)."""
        jump_slices_to(self.scene, outputs.result.lesions[index].centroid_ras)

    # ------------------------------------------------------------------ helpers for the panel
    @staticmethod
    def thresholdRange(outputs: Outputs) -> tuple[float, float]:
        """(low, high) for a threshold slider: from the brain's median score to above the map's top."""
        return threshold_range(outputs.result)

    @staticmethod
    def inputProblems(inputVolumes: dict, modelName=None, maskNode=None) -> list[str]:
        """What would stop a run with these inputs, as one-line messages."""
        return input_problems(inputVolumes, modelName, maskNode)

    def loadSyntheticExample(self) -> dict:
        """The built-in synthetic example (no download) as volume nodes keyed by contrast.

        Its true lesions are added as a segmentation named "... true lesions" for comparison.
        """
        from UADBrainLib.inference.bundled_example import load_example

        example = load_example()
        volumes = {contrast: add_volume_from_image(self.scene, image, f"Example {contrast.upper()}")
                   for contrast, image in example.items() if contrast in CONTRASTS}
        truth = example.get("lesion")
        if truth is not None and volumes:
            contrast, reference = next(iter(volumes.items()))
            on_grid = resample_like(truth, example[contrast], is_label=True)
            segmentation = create_segmentation_node(self.scene, "Example true lesions", reference, "true lesion")
            set_segment_mask(segmentation, sitk.GetArrayViewFromImage(on_grid) > 0, reference)
        return volumes
