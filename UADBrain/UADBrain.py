"""UADBrain: unsupervised anomaly detection in brain MRI, as a 3D Slicer module.

The panel is thin: it gathers inputs into a parameter node, runs the engine in a background
process through the Qt-free Logic in ``UADBrainMRML`` (shared with the web app), and turns the
result into nodes. Everything the panel does can be scripted from the Python console through
``UADBrainLogic`` (see its docstring).
"""

import enum
import logging
import os
import pathlib
import shutil
import traceback
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from UADBrainLib.device import DEVICE_CHOICES
from UADBrainLib.errors import Cancelled, UADBrainError
from UADBrainLib.inference.options import DEFAULTS, MODEL_DEFAULT_POSTPROCESSING
from UADBrainMRML.dependencies import (TORCH, DependencyError, MissingPackage, missing_modules, pip_requirement,
                                       required_modules)
from UADBrainMRML.logic import UADBrainMRMLLogic
from UADBrainMRML.segmentation import TERMINOLOGY_FILE

CONTRAST_PARAMETERS = {"flair": "flairVolume", "t1": "t1Volume", "t2": "t2Volume", "t1c": "t1cVolume"}
POLL_INTERVAL_MS = 200
EXAMPLE_SAMPLE_NAME = "UADBrain synthetic brain"

HELP_TEXT = """
<p>Finds what looks abnormal in brain MRI without having been shown any lesion: a <b>normative
model</b> learned what healthy brains look like, and every voxel it cannot explain is flagged.
The result is an <b>anomaly map</b> (colour overlay), a <b>segmentation</b> of the flagged regions
and a <b>lesion table</b> (volume, maximum score, centroid; click a row to go there).</p>
<p><b>How to use:</b> select one or more co-registered volumes of one patient (FLAIR, T1, T2, T1c;
any subset the model supports), optionally a brain mask, press <b>Apply</b>. The default model
scores FLAIR alone when it is selected (adding other contrasts measured worse) and says so; without
FLAIR it flags what all selected contrasts agree on. Tune the threshold,
median filter and minimum lesion size afterwards: the segmentation updates live, without rerunning
the model. <b>Calibrated</b> sets the threshold at which about 1 in 100 healthy brain voxels would
be flagged (models with a healthy calibration); <b>Otsu</b> picks it from this brain's own scores.
Export writes the segmentation (.seg.nrrd and NIfTI), the anomaly map (NIfTI) and the lesion table
(CSV); DICOM SEG through Slicer's DICOM export.</p>
<p><b>What it does not do:</b> it is <b>not a diagnostic device</b> and is not approved for clinical
use. It flags <i>unusual</i> tissue, not disease: artefacts, unusual anatomy, registration errors and
normal variants can be flagged, and lesions that look like healthy tissue to the model are missed.
It does not classify lesions. Every finding needs review by a qualified reader.</p>
"""

ACKNOWLEDGEMENT_TEXT = """
<p>The bundled models are trained only on <b>synthetic healthy brains</b> generated from anatomical
label maps of the SynthSeg training set (Billot et al., Medical Image Analysis 86:102789, 2023;
label maps Apache-2.0); no patient images were used for training.</p>
<p>Methods: Baur C, Denner S, Wiestler B, Navab N, Albarqouni S. Autoencoders for unsupervised anomaly
segmentation in brain MR images: a comparative study. Medical Image Analysis 69:101952, 2021.
Lagogiannis I, Meissen F, Kaissis G, Rueckert D. Unsupervised pathology detection: a deep dive into
the state of the art. IEEE Transactions on Medical Imaging 43(1):241-252, 2024.
Meissen F, Kaissis G, Rueckert D. Challenging current semi-supervised anomaly segmentation methods
for brain MRI. BrainLes 2021, LNCS 12962, 2022 (thresholding baseline).
Kascenas A, Pugeault N, O'Neil AQ. Denoising autoencoders for unsupervised anomaly detection in brain
MRI. MIDL 2022, PMLR 172:653-664.
Behrendt F et al. Diffusion models with ensembled structure-based anomaly scoring for unsupervised
anomaly detection. ISBI 2024 (structural-dissimilarity scoring).</p>
"""


#
# UADBrain
#


class UADBrain(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Brain Anomaly Detection (UADBrain)"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["UADBrain developers"]
        self.parent.helpText = HELP_TEXT
        self.parent.acknowledgementText = ACKNOWLEDGEMENT_TEXT
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("startupCompleted()", registerTerminology)


def registerTerminology():
    """The anomaly segment's terminology context, so Slicer's terminology selector knows its code."""
    if not slicer.modules.terminologies.logic().LoadTerminologyFromFile(str(TERMINOLOGY_FILE)):
        logging.error(f"UADBrain: could not load the terminology context {TERMINOLOGY_FILE}")


def registerSampleData():
    """A one-click synthetic example in the Sample Data module; it is generated, not downloaded."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="UADBrain",
        sampleName=EXAMPLE_SAMPLE_NAME,
        uris="uadbrain:synthetic-example",  # never fetched: the custom downloader generates the data
        fileNames="UADBrainSyntheticBrain.nrrd",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "UADBrain.png"),
        customDownloader=loadSyntheticExampleSample,
    )


def loadSyntheticExampleSample(source=None) -> dict:
    """Sample Data button (called with its data source): the example, errors in a message box."""
    try:
        return loadSyntheticExample()
    except Exception as error:  # nothing may escape into Qt's signal handling unseen
        showError("Could not create the synthetic example.", error)
        return {}


def loadSyntheticExample() -> dict:
    """Load the stored synthetic example and show its first volume."""
    slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        volumes = UADBrainLogic().loadSyntheticExample()
    finally:
        slicer.app.restoreOverrideCursor()
    slicer.util.setSliceViewerLayers(background=next(iter(volumes.values())), fit=True)
    return volumes


def showError(what: str, error: Exception) -> None:
    """A user's error as its one-line message; a bug with its traceback for the report."""
    if isinstance(error, UADBrainError):
        slicer.util.errorDisplay(f"{what}\n\n{error}")
    else:
        logging.exception(what)
        slicer.util.errorDisplay(f"{what}\n\n{error}", detailedText=traceback.format_exc())


#
# Parameter node
#


class MedianKernel(enum.Enum):
    OFF = 0
    THREE = 3
    FIVE = 5
    SEVEN = 7

    def label(self):
        return "off" if self.value == 0 else f"{self.value}×{self.value}×{self.value} voxels"


@parameterNodeWrapper
class UADBrainParameterNode:
    """The panel's state, saved with the scene.

    flairVolume ... t1cVolume: input volumes by contrast. brainMask: optional mask.
    modelName: bundled model ("" = the default for the selected contrasts). device: auto/cpu/cuda.
    replaceExisting: a run replaces this module's earlier outputs for the same input.
    fpr: healthy false-positive rate of the calibrated threshold (used by Apply and Tune).
    median, minSizeMm3, erosionMm: post-processing; Apply uses the model's defaults, Tune shows and
    changes them. Every default is the engine's (``UADBrainLib.inference.options.DEFAULTS``).
    exportFolder: where Export writes. anomalyMap, segmentation, lesionTable: the outputs the Tune
    section controls.
    """

    flairVolume: vtkMRMLScalarVolumeNode
    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    t1cVolume: vtkMRMLScalarVolumeNode
    # a Union of node types must include None, or the wrapper cannot write its default (no node)
    brainMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    modelName: str = ""
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = DEFAULTS.device
    replaceExisting: bool = False
    fpr: Annotated[float, Minimum(0.0)] = DEFAULTS.fpr
    median: MedianKernel = MedianKernel(MODEL_DEFAULT_POSTPROCESSING["median"])
    minSizeMm3: Annotated[float, Minimum(0.0)] = MODEL_DEFAULT_POSTPROCESSING["min_size_mm3"]
    erosionMm: Annotated[float, Minimum(0.0)] = MODEL_DEFAULT_POSTPROCESSING["erosion_mm"]
    exportFolder: pathlib.Path = pathlib.Path.home() / "UADBrain"
    anomalyMap: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    lesionTable: vtkMRMLTableNode


#
# UADBrainWidget
#


class UADBrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the background run in progress, with its request
        self._request = None
        self._outputs = None  # the run the Tune section controls
        self._pendingThreshold = None
        self._updatingTune = False
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._pollRun)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UADBrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = UADBrainLogic()
        self.ui.progressBar.hide()
        self._populateModels()
        self._showDevices()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.loadExampleButton.connect("clicked(bool)", self.onLoadExample)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdSliderChanged)
        self.ui.calibratedThresholdButton.connect("clicked(bool)", lambda: self._rethreshold(threshold="calibrated"))
        self.ui.otsuThresholdButton.connect("clicked(bool)", lambda: self._rethreshold(threshold="otsu"))
        self.ui.lesionTableView.connect("clicked(QModelIndex)", self.onLesionClicked)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self._setOutputs(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        parameterNode = self.logic.getParameterNode()
        if not any(getattr(parameterNode, name) for name in CONTRAST_PARAMETERS.values()):
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.GetAttribute("UADBrain.Role"):
                parameterNode.flairVolume = firstVolume
        self.setParameterNode(parameterNode)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self._onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.modelName)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._job is None:
            self._showInputProblems()
        # post-processing belongs to the current result (the Tune section)
        if self._outputs is not None and not self._updatingTune:
            result, p = self._outputs.result, self._parameterNode
            wanted = (p.median.value, p.minSizeMm3, p.erosionMm, p.fpr)
            if wanted != (result.median, result.min_size_mm3, result.erosion_mm, result.fpr):
                self._rethreshold(median=p.median.value, minSizeMm3=p.minSizeMm3, erosionMm=p.erosionMm, fpr=p.fpr)

    def _inputVolumes(self) -> dict:
        return {contrast: getattr(self._parameterNode, name) for contrast, name in CONTRAST_PARAMETERS.items()
                if getattr(self._parameterNode, name) is not None}

    def _showInputProblems(self) -> None:
        if self._parameterNode is None:  # the panel is not shown
            return
        problems = self.logic.inputProblems(self._inputVolumes(), self._parameterNode.modelName or None,
                                            self._parameterNode.brainMask)
        self.ui.inputProblemsLabel.text = "\n".join(problems)
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = problems[0] if problems else "Run the anomaly detection."

    # ------------------------------------------------------------------ model and device
    def _populateModels(self) -> None:
        from UADBrainLib.bundle import find_bundle, list_bundled

        self.ui.modelComboBox.clear()
        for name in list_bundled():
            bundle = find_bundle(name)
            self.ui.modelComboBox.addItem(bundle.metadata.get("title", name), name)

    def _selectModelInCombo(self, modelName: str) -> None:
        """Show the parameter node's model; an unset or unknown one becomes the default (first)."""
        index = max(self.ui.modelComboBox.findData(modelName), 0)
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.currentIndex = index
        self.ui.modelComboBox.blockSignals(wasBlocked)
        self.onModelChanged(index)

    def onModelChanged(self, index: int) -> None:
        modelName = self.ui.modelComboBox.itemData(index) or ""
        if self._parameterNode and self._parameterNode.modelName != modelName:
            self._parameterNode.modelName = modelName
        self._describeModel(modelName)

    def _describeModel(self, modelName: str) -> None:
        from UADBrainLib.bundle import find_bundle

        if not modelName:
            self.ui.modelDescriptionLabel.text = "No bundled model is installed."
            return
        metadata = find_bundle(modelName).metadata
        required = ", ".join(c.upper() for c in metadata.get("required_contrasts", [])) or "none"
        runtime = metadata.get("expected_runtime_s", {})
        runtimeText = "; ".join(f"about {seconds:g} s on {device.upper()}" for device, seconds in runtime.items())
        self.ui.modelDescriptionLabel.text = (
            f"{metadata.get('description', '')}\n"
            f"Contrasts: {', '.join(c.upper() for c in metadata['contrasts'])} (required: {required}). "
            f"{runtimeText}")

    def _showDevices(self) -> None:
        from UADBrainLib.device import available_devices

        try:
            devices = available_devices()
        except Exception as error:  # a broken PyTorch install (e.g. a DLL that fails to load) must not break the panel
            self.ui.deviceAvailabilityLabel.text = f"PyTorch could not be loaded ({error}); models run on the CPU."
            return
        self.ui.deviceAvailabilityLabel.text = f"Available here: {', '.join(devices)}"

    # ------------------------------------------------------------------ run
    def onLoadExample(self) -> None:
        with self._userErrors("Could not create the synthetic example."):
            volumes = loadSyntheticExample()
            if not volumes:
                return
            with slicer.util.NodeModify(self._parameterNode.parameterNode):
                for contrast, name in CONTRAST_PARAMETERS.items():
                    setattr(self._parameterNode, name, volumes.get(contrast))

    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancelRun()
            self.ui.stageLabel.text = "Cancelled; the scene is unchanged."
            return
        with self._userErrors("Could not start the analysis."):
            from UADBrainLib.bundle import find_bundle

            modelName = self._parameterNode.modelName or None
            bundle = find_bundle(modelName, None if modelName else list(self._inputVolumes()))
            if not ensurePythonPackages(required_modules(bundle, list(self._inputVolumes())),
                                        f"The model '{bundle.name}'"):
                return
            # the model's own post-processing defaults; the Tune section adjusts them afterwards
            options = replace(DEFAULTS, device=self._parameterNode.device, fpr=self._parameterNode.fpr)
            request = self.logic.makeRequest(self._inputVolumes(), modelName=modelName,
                                             maskNode=self._parameterNode.brainMask, options=options)
            # the startup environment, as slicer.util.launchConsoleProcess uses: PythonSlicer sets up its own
            self._job = self.logic.startBackground(request, pythonSlicerExecutable(),
                                                   slicer.util.startupEnvironment())
            self._request = request
            self._showRunWarnings([])
            self._setRunning(True)
            self._pollTimer.start()

    def _pollRun(self) -> None:
        status = self._job.poll()
        self.ui.progressBar.value = int(round(100 * status.fraction))
        self.ui.stageLabel.text = status.stage
        if not status.finished:
            return
        job, request = self._job, self._request
        self._pollTimer.stop()
        self._job = self._request = None
        self._setRunning(False)
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)  # reading the result and creating nodes
        try:
            with self._userErrors("The analysis failed."):
                try:
                    result = job.result()
                except MissingPackage as missing:  # e.g. what brain extraction of a raw head needs
                    if ensurePythonPackages([missing.module], "The analysis"):
                        self.ui.stageLabel.text = f"Installed '{missing.module}'; press Apply to run again."
                    return
                replaceExisting = self.logic.getParameterNode().replaceExisting
                outputs = self.logic.createOutputs(request, result, replaceExisting)
                self._setOutputs(outputs)
                self.logic.showOutputs(outputs)
                self.ui.stageLabel.text = f"Done in {sum(result.report['timings_s'].values()):.1f} s."
                self._showRunWarnings(result.report.get("warnings", []))
        finally:
            slicer.app.restoreOverrideCursor()
            job.cleanup()

    def _showRunWarnings(self, warnings: list[str]) -> None:
        """What the engine reported about this run (a contrast not scored, an unusual image, Otsu
        instead of the calibration), under the progress bar and in the Python console."""
        self.ui.runWarningsLabel.text = "\n".join(f"Warning: {warning}" for warning in warnings)
        self.ui.runWarningsLabel.visible = bool(warnings)
        for warning in warnings:
            logging.warning(f"UADBrain: {warning}")

    def _cancelRun(self) -> None:
        if self._job is None:
            return
        self._pollTimer.stop()
        self._job.cancel()
        self._job.cleanup()
        self._job = self._request = None
        self._setRunning(False)

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.toolTip = "Stop the analysis; the scene stays as it was." if running else ""
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton):
            widget.enabled = not running
        if not running:
            self._showInputProblems()

    # ------------------------------------------------------------------ tune
    def _setOutputs(self, outputs) -> None:
        self._outputs = outputs
        hasOutputs = outputs is not None
        for widget in (self.ui.thresholdSlider, self.ui.calibratedThresholdButton, self.ui.otsuThresholdButton,
                       self.ui.medianComboBox, self.ui.minSizeSpinBox, self.ui.erosionSpinBox, self.ui.exportButton):
            widget.enabled = hasOutputs
        self.ui.lesionTableView.setMRMLTableNode(outputs.tableNode if hasOutputs else None)
        if not hasOutputs:
            self.ui.readoutLabel.text = "No result yet."
            return
        self.ui.calibratedThresholdButton.enabled = outputs.result.calibration is not None
        slider = self.logic.tuneSlider(outputs)
        self._updatingTune = True
        try:
            parameters = self.logic.getParameterNode()
            with slicer.util.NodeModify(parameters):
                parameters.anomalyMap = outputs.anomalyMapNode
                parameters.segmentation = outputs.segmentationNode
                parameters.lesionTable = outputs.tableNode
            self.ui.thresholdSlider.blockSignals(True)
            self.ui.thresholdSlider.decimals = slider.decimals
            self.ui.thresholdSlider.minimum, self.ui.thresholdSlider.maximum = slider.minimum, slider.maximum
            self.ui.thresholdSlider.singleStep = slider.step
            self.ui.thresholdSlider.blockSignals(False)
        finally:
            self._updatingTune = False
        self._showTuneState()

    def _showTuneState(self) -> None:
        result = self._outputs.result
        self._updatingTune = True
        try:
            self.ui.thresholdSlider.blockSignals(True)
            self.ui.thresholdSlider.maximum = max(self.ui.thresholdSlider.maximum, result.threshold)
            self.ui.thresholdSlider.minimum = min(self.ui.thresholdSlider.minimum, result.threshold)
            self.ui.thresholdSlider.value = result.threshold
            self.ui.thresholdSlider.blockSignals(False)
            parameters = self.logic.getParameterNode()
            with slicer.util.NodeModify(parameters):
                parameters.median = MedianKernel(result.median)
                parameters.minSizeMm3 = result.min_size_mm3
                parameters.erosionMm = result.erosion_mm
                parameters.fpr = result.fpr
        finally:
            self._updatingTune = False
        self.ui.readoutLabel.text = self.logic.readout(self._outputs)

    def onThresholdSliderChanged(self, value: float) -> None:
        # coalesce: while one update runs, slider events pile up; only the latest value matters
        if self._pendingThreshold is None:
            qt.QTimer.singleShot(0, self._applyPendingThreshold)
        self._pendingThreshold = value

    def _applyPendingThreshold(self) -> None:
        value, self._pendingThreshold = self._pendingThreshold, None
        if value is not None:
            self._rethreshold(threshold=value)

    def _rethreshold(self, **settings) -> None:
        if self._outputs is None:
            return
        if not self._outputsStillInScene():
            return
        with self._userErrors("Could not update the segmentation."):
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)  # the first use of a median kernel filters the map
            try:
                self.logic.rethreshold(self._outputs, **settings)
            finally:
                slicer.app.restoreOverrideCursor()
            self._showTuneState()

    def _outputsStillInScene(self) -> bool:
        outputs = self._outputs
        present = all(slicer.mrmlScene.IsNodePresent(node) for node in
                      (outputs.inputNode, outputs.anomalyMapNode, outputs.segmentationNode, outputs.tableNode))
        if not present:
            self._setOutputs(None)
            self.ui.readoutLabel.text = "The result's nodes were removed from the scene; run again to tune."
        return present

    def onLesionClicked(self, index) -> None:
        # the row's "Lesion" cell names the lesion (a header row, if the view shows one, does not)
        lesionNumber = str(index.sibling(index.row(), 0).data())
        if self._outputs is not None and lesionNumber.isdigit():
            self.logic.jumpToLesion(self._outputs, int(lesionNumber) - 1)

    # ------------------------------------------------------------------ export
    def onExport(self) -> None:
        if self._outputs is None or not self._outputsStillInScene():
            return
        with self._userErrors("Export failed."):
            paths = self.logic.exportResults(self._outputs, self._parameterNode.exportFolder)
            self.ui.exportStatusLabel.text = f"Wrote {len(paths)} files to {paths[0].parent}."

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _userErrors(self, what: str):
        """One-line messages for the user's errors, details for bugs; nothing escapes to Qt."""
        try:
            yield
        except Cancelled:
            self.ui.stageLabel.text = "Cancelled; the scene is unchanged."
        except Exception as error:
            showError(what, error)


def pythonSlicerExecutable() -> str:
    """Slicer's own Python interpreter (a launcher on Slicer's PATH), which runs the engine in the background."""
    executable = shutil.which("PythonSlicer")
    if not executable:
        raise DependencyError("PythonSlicer was not found on the PATH of this Slicer — reinstall Slicer.")
    return executable


def ensurePythonPackages(modules, purpose: str) -> bool:
    """Install what is missing of ``modules`` into Slicer's Python if the user agrees; False if not."""
    missing = missing_modules(modules)
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"{purpose} needs the Python packages {', '.join(missing)}, which this Slicer does not have yet.\n\n"
            "Download and install them now? This can take several minutes.", "UADBrain: install Python packages"):
        return False
    # PyTorch (listed first) through the PyTorch extension, which picks the build for this GPU driver
    if TORCH in missing:
        installTorch()
    for module in missing:
        if module != TORCH:
            slicer.util.pip_install(pip_requirement(module))
    return True


def installTorch() -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise DependencyError("PyTorch is installed through Slicer's PyTorch extension, which is missing — install "
                              "'PyTorch' in View > Extensions Manager, restart Slicer and try again.") from None
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
        raise DependencyError("PyTorch was not installed — install it from the PyTorch Utils module and try again.")


#
# UADBrainLogic
#


class UADBrainLogic(ScriptedLoadableModuleLogic, UADBrainMRMLLogic):
    """The module Logic on Slicer's scene; scriptable from the Python console.

    Example (Python console, batch over the loaded FLAIR volumes)::

        import UADBrain
        logic = UADBrain.UADBrainLogic()
        for flair in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if flair.GetAttribute("UADBrain.Role") or "FLAIR" not in flair.GetName():
                continue
            outputs = logic.process({"flair": flair}, threshold="otsu")
            print(flair.GetName(), outputs.result.lesion_count, outputs.result.flagged_volume_ml)
            logic.exportResults(outputs, f"/tmp/uadbrain/{flair.GetName()}")

    See ``UADBrainMRML.logic.UADBrainMRMLLogic`` for every method.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        UADBrainMRMLLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return UADBrainParameterNode(super().getParameterNode())


#
# UADBrainTest
#


def makePhantomFlair(scene, name="Phantom FLAIR"):
    """A skull-stripped 'FLAIR' made with NumPy alone (no PyTorch): a noisy ellipsoidal brain with two
    bright lesions, on an oblique, anisotropic grid with a non-zero origin."""
    import numpy as np
    import SimpleITK as sitk

    from UADBrainMRML.volumes import add_volume_from_image

    shape = (36, 44, 40)  # k, j, i
    k, j, i = np.mgrid[:shape[0], :shape[1], :shape[2]].astype(np.float32)
    brain = ((i - 20) / 17) ** 2 + ((j - 22) / 19) ** 2 + ((k - 18) / 15) ** 2 < 1
    array = np.where(brain, 100 + np.random.default_rng(0).normal(0, 3, shape), 0)
    for (ci, cj, ck), radius in (((12, 15, 18), 3.5), ((27, 30, 13), 3.0)):
        array += 60 * brain * (((i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2) < radius ** 2)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((2.0, 2.5, 3.0))
    image.SetOrigin((-31.5, 12.25, 40.0))
    a, b = np.cos(0.3), np.sin(0.3)
    image.SetDirection((a, -b, 0.0, b, a, 0.0, 0.0, 0.0, 1.0))
    return add_volume_from_image(scene, image, name)


class UADBrainTest(ScriptedLoadableModuleTest):
    """The full flow inside desktop Slicer (Developer mode: Reload and Test), on a NumPy phantom and on
    the stored synthetic example; the learned default model is run when PyTorch is installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ScriptedFlow()
        self.setUp()
        self.test_PanelRunTuneExportAndCancel()
        self.setUp()
        self.test_SyntheticExample()

    def test_ScriptedFlow(self):
        """process → rethreshold → export → reload, through the Logic as a console user would."""
        self.delayDisplay("Scripted flow on a phantom")
        logic = UADBrainLogic()
        flair = makePhantomFlair(slicer.mrmlScene)
        outputs = logic.process({"flair": flair}, device="cpu")
        result = outputs.result
        self.assertGreater(result.lesion_count, 0)
        self.assertEqual(outputs.anomalyMapNode.GetImageData().GetDimensions(), flair.GetImageData().GetDimensions())
        self.assertEqual(outputs.anomalyMapNode.GetOrigin(), flair.GetOrigin())
        self.assertEqual(outputs.anomalyMapNode.GetSpacing(), flair.GetSpacing())
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        self.assertEqual(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(outputs.segmentationNode)),
                         hierarchy.GetItemParent(hierarchy.GetItemByDataNode(flair)))
        # the segment's terminology resolves in the context loaded at startup
        entry = slicer.vtkSlicerTerminologyEntry()
        terminologies = slicer.modules.terminologies.logic()
        segment = outputs.segmentationNode.GetSegmentation().GetSegment("anomaly")
        entryString = vtk.reference("")
        self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), entryString))
        self.assertTrue(terminologies.DeserializeTerminologyEntry(entryString.get(), entry))
        loaded = vtk.vtkStringArray()
        terminologies.GetLoadedTerminologyNames(loaded)
        self.assertIn(entry.GetTerminologyContextName(), [loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())])

        logic.showOutputs(outputs)
        red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        self.assertEqual(red.GetForegroundVolumeID(), outputs.anomalyMapNode.GetID())

        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(outputs.segmentationNode, "anomaly", flair).sum()
        summary = logic.rethreshold(outputs, threshold=result.threshold * 1.5)
        self.assertEqual(summary["thresholdMethod"], "manual")
        self.assertLessEqual(slicer.util.arrayFromSegmentBinaryLabelmap(outputs.segmentationNode, "anomaly", flair).sum(),
                             voxels)

        folder = pathlib.Path(slicer.app.temporaryPath) / "UADBrainTest"
        paths = logic.exportResults(outputs, folder)
        self.assertEqual(len(paths), 4)
        reloaded = slicer.util.loadSegmentation(str(folder / "segmentation.seg.nrrd"))
        self.assertEqual(
            slicer.util.arrayFromSegmentBinaryLabelmap(reloaded, reloaded.GetSegmentation().GetNthSegmentID(0), flair).sum(),
            slicer.util.arrayFromSegmentBinaryLabelmap(outputs.segmentationNode, "anomaly", flair).sum())
        self.delayDisplay("Scripted flow passed")

    def test_PanelRunTuneExportAndCancel(self):
        """The panel: Apply runs in the background with the GUI responsive, Tune, row click, Cancel."""
        self.delayDisplay("Panel flow")
        slicer.util.selectModule("UADBrain")
        widget = slicer.util.getModuleWidget("UADBrain")
        parameters = widget._parameterNode
        parameters.flairVolume = makePhantomFlair(slicer.mrmlScene)
        parameters.device = "cpu"
        self.assertTrue(widget.ui.applyButton.enabled, widget.ui.inputProblemsLabel.text)

        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        widget.ui.applyButton.click()  # cancel at once
        self.assertEqual(widget.ui.applyButton.text, "Apply")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

        widget.ui.applyButton.click()
        self._waitUntil(lambda: widget._job is None, timeoutSeconds=600)
        outputs = widget._outputs
        self.assertIsNotNone(outputs, widget.ui.stageLabel.text)
        self.assertEqual(parameters.segmentation.GetID(), outputs.segmentationNode.GetID())

        wanted = outputs.result.threshold * 1.3
        widget.ui.thresholdSlider.value = wanted
        self._waitUntil(lambda: widget._pendingThreshold is None, timeoutSeconds=10)
        self.assertAlmostEqual(widget._outputs.result.threshold, widget.ui.thresholdSlider.value, places=6)
        self.assertEqual(widget._outputs.result.threshold_method, "manual")
        self.assertIn("mL flagged", widget.ui.readoutLabel.text)

        if outputs.result.lesion_count:
            model = widget.ui.lesionTableView.model()
            row = next(r for r in range(model.rowCount()) if str(model.index(r, 0).data()) == "1")
            widget.onLesionClicked(model.index(row, 0))
            red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
            centre = [red.GetSliceToRAS().GetElement(axis, 3) for axis in range(3)]
            for value, expected in zip(centre, outputs.result.lesions[0].centroid_ras):
                self.assertAlmostEqual(value, expected, places=3)

        parameters.exportFolder = pathlib.Path(slicer.app.temporaryPath) / "UADBrainPanelTest"
        widget.onExport()
        self.assertTrue((parameters.exportFolder / "lesions.csv").is_file())
        self.delayDisplay("Panel flow passed")

    def test_SyntheticExample(self):
        """The panel's example button (the Sample Data entry runs the same code)."""
        self.delayDisplay("Synthetic example")
        slicer.util.selectModule("UADBrain")
        widget = slicer.util.getModuleWidget("UADBrain")
        widget.onLoadExample()
        self.assertIsNotNone(widget._parameterNode.flairVolume)
        self.assertTrue(widget.ui.applyButton.enabled, widget.ui.inputProblemsLabel.text)
        # the learned default model needs PyTorch; without it, the baseline
        model = "threshold" if missing_modules([TORCH]) else None
        outputs = widget.logic.process({"flair": widget._parameterNode.flairVolume}, modelName=model, device="cpu")
        self.assertGreater(outputs.result.lesion_count, 0)
        self.delayDisplay("Synthetic example passed")

    def _waitUntil(self, condition, timeoutSeconds):
        import time

        deadline = time.monotonic() + timeoutSeconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail("timed out waiting for the panel")
            slicer.app.processEvents()
            time.sleep(0.05)
