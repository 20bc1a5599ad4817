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
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from UADBrainLib.bundle import CONTRASTS
from UADBrainLib.errors import Cancelled, InputError
from UADBrainLib.geometry import resample_like
from UADBrainLib.inference.options import DetectOptions
from UADBrainLib.inference.pipeline import detect

from .background import BackgroundDetection
from .checks import input_problems
from .display import jump_slices_to, show_in_slice_views, update_anomaly_window
from .export import export_outputs
from .lesiontable import fill_table
from .outputs import Outputs, create_outputs, show_anomaly_map, update_segmentation
from .request import EngineRequest, make_request
from .segmentation import create_segmentation_node, set_segment_mask
from .tune import Slider, readout, remove_outputs, slider_for
from .volumes import add_volume_from_image
from .volumesets import VolumeSet, VolumeSetRuns, volume_sets

# share of the progress bar before and after the engine's own stages
PREPARE_SHARE, IMPORT_SHARE = 0.03, 0.05


class UADBrainMRMLLogic:
    def __init__(self, scene):
        self.scene = scene

    # ------------------------------------------------------------------ one call, for scripts
    def process(self, inputVolumes: dict, modelName=None, maskNode=None, options: DetectOptions | None = None,
                progressCallback=None, cancelEvent=None, replaceExisting=False, **optionValues) -> Outputs:
        """Detect anomalies in co-registered volumes; returns the new output nodes.

        ``inputVolumes``: contrast ("flair", "t1", "t2", "t1c") → scalar volume node. ``modelName``:
        a bundled model name or bundle folder (None: the default model for these contrasts).
        ``maskNode``: optional brain mask (labelmap volume or segmentation). ``options``: a
        ``UADBrainLib.DetectOptions``; or give its fields by name (``threshold="otsu"``, ``fpr=0.005``,
        ``median=3``, ``min_size_mm3=10``, ``erosion_mm=2``, ``device="cpu"``, ...): None keeps the
        engine's default, which for post-processing is the model's. ``progressCallback(fraction,
        stage)``; ``cancelEvent``: a threading.Event. Raises ``UADBrainLib.errors.UADBrainError``
        subclasses with a message for the user.
        """
        progress = progressCallback or (lambda fraction, stage: None)
        cancel = cancelEvent or threading.Event()
        progress(0.0, "reading inputs")
        options = replace(options or DetectOptions(), **optionValues)
        request = self.makeRequest(inputVolumes, modelName, maskNode, options)
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
    def makeRequest(inputVolumes: dict, modelName=None, maskNode=None,
                    options: DetectOptions | None = None) -> EngineRequest:
        """Stage 1 (main thread): the engine's inputs, copied out of the nodes."""
        return make_request(inputVolumes, modelName, maskNode, options)

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

    def volumeSets(self) -> list[VolumeSet]:
        """The scene's volumes grouped per subject (a DICOM study, else the name without its contrast)."""
        return volume_sets(self.scene)

    def startVolumeSetRuns(self, sets: list[VolumeSet], modelName=None, options: DetectOptions | None = None,
                           pythonExecutable: str | None = None, environment: dict | None = None,
                           replaceExisting: bool = False) -> VolumeSetRuns:
        """The model on each set in turn, in background processes; poll the returned runs from the
        main thread (each set's outputs appear as it finishes) until finished."""
        return VolumeSetRuns(self, sets, modelName, options, pythonExecutable, environment, replaceExisting)

    def createOutputs(self, request: EngineRequest, result, replaceExisting: bool = False) -> Outputs:
        """Stage 3 (main thread): new nodes beside the reference input (the first contrast given)."""
        nodes = {contrast: self.scene.GetNodeByID(node_id) for contrast, node_id in request.input_node_ids.items()}
        reference = nodes[request.reference_contrast]
        if reference is None:
            raise InputError("the input volume was removed from the scene during the run — load it and run again.")
        return create_outputs(self.scene, reference, result, nodes, replaceExisting)

    # ------------------------------------------------------------------ after a run
    def rethreshold(self, outputs: Outputs, threshold=None, median=None, minSizeMm3=None, fpr=None,
                    erosionMm=None) -> dict:
        """New segmentation, lesion table and overlay window from the cached map (no model rerun).

        ``threshold``: a number, "calibrated", "otsu", or None to keep the current one (a manual
        number stays; calibrated/Otsu are recomputed for the new median, false-positive rate and
        erosion). ``median`` (0 = off), ``minSizeMm3``, ``fpr`` (healthy false-positive rate of the
        calibrated threshold) and ``erosionMm`` (brain-mask erosion): None keeps the current value.
        Returns the new settings and totals.
        """
        previous = outputs.result
        result = previous.rethreshold(threshold=threshold, median=median, min_size_mm3=minSizeMm3,
                                      fpr=fpr, erosion_mm=erosionMm)
        outputs.result = result
        update_segmentation(outputs)
        fill_table(outputs.tableNode, result.lesions)
        if result.median != previous.median:  # another kernel: the shown map itself changes
            show_anomaly_map(outputs)
        else:
            update_anomaly_window(outputs.anomalyMapNode, result.threshold)
        return {"threshold": result.threshold, "thresholdMethod": result.threshold_method,
                "median": result.median, "minSizeMm3": result.min_size_mm3, "fpr": result.fpr,
                "erosionMm": result.erosion_mm,
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
    def tuneSlider(outputs: Outputs) -> Slider:
        """The threshold slider (minimum, maximum, step, decimals) for this run's map."""
        return slider_for(outputs.result)

    @staticmethod
    def readout(outputs: Outputs) -> str:
        """One line: flagged volume, lesion count, threshold and how it was chosen."""
        return readout(outputs.result)

    def removeOutputs(self, outputs: Outputs) -> None:
        """Remove every node of a run (also its pseudo-healthy reconstructions) from the scene."""
        remove_outputs(self.scene, outputs)

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
