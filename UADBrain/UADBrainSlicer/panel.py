"""The module's panel (the Widget's content), embedded by ``UADBrain.UADBrainWidget``."""

import logging
from contextlib import contextmanager

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from UADBrainLib.errors import Cancelled
from UADBrainMRML.dependencies import MissingPackage

from .logic import UADBrainLogic
from .packages import ensurePythonPackages, ensureRunPackages, pythonSlicerExecutable
from .parameters import CONTRAST_PARAMETERS, RunOptions
from .startup import loadSyntheticExample, showError
from .volumesets import POLL_INTERVAL_MS, VolumeSetsSection


class UADBrainPanel(VTKObservationMixin):
    """The module's panel: inputs, model, Apply (in a background process), Tune, Export.

    ``uiFile``: the panel's .ui file. ``isShown()``: whether the module is entered (after a scene
    close the parameter node is set up again only then).
    """

    def __init__(self, uiFile: str, isShown) -> None:
        VTKObservationMixin.__init__(self)
        self._isShown = isShown
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the background run in progress, with its request
        self._request = None
        self._outputs = None  # the run the Tune section controls
        self._usableDevices = {"auto", "cpu"}  # _showDevices: what this computer can run on
        self._pendingThreshold = None
        self._updatingTune = False
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._pollRun)

        self.widget = slicer.util.loadUI(uiFile)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
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
        self._volumeSets = VolumeSetsSection(self)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun()
        self._volumeSets.cancel()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRun()
        self._volumeSets.forget()
        self._setOutputs(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self._isShown():
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
            self._offerUsableDevicesOnly()
            self.addObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self._onParameterNodeModified)
            self._selectModelInCombo(self._parameterNode.modelName)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._job is None and not self._volumeSets.running:
            self._showInputProblems()
        # post-processing belongs to the current result (the Tune section)
        if self._outputs is not None and not self._updatingTune:
            wanted = self._parameterNode.options.tuneSettings()
            if wanted != RunOptions.resultSettings(self._outputs.result):
                self._rethreshold(**wanted)

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
        """Say which devices are usable here, and why a GPU that is there is not. (No test operation
        on the GPU: it would hold GPU memory in Slicer's own process; runs happen in a child process.)"""
        from UADBrainLib.device import available_devices, choose_device

        try:
            devices, note = available_devices(probe=False), choose_device("auto", probe=False).note
        except Exception as error:  # a broken PyTorch install (e.g. a DLL that fails to load) must not break the panel
            self.ui.deviceAvailabilityLabel.text = f"PyTorch could not be loaded ({error}); models run on the CPU."
            return
        self._usableDevices = {"auto", *devices, *(["cuda"] if any(d.startswith("cuda") for d in devices) else [])}
        self.ui.deviceAvailabilityLabel.text = (f"Available here: {', '.join(devices)}"
                                                + (f"\nA GPU is not used: {note}" if note else ""))

    def _offerUsableDevicesOnly(self) -> None:
        """Hide and disable the devices this computer cannot use (connectGui refills the list each
        time); a saved choice that is not usable here goes back to auto."""
        combo = self.ui.deviceComboBox
        for index in range(combo.count):
            usable = combo.itemText(index) in self._usableDevices
            combo.view().setRowHidden(index, not usable)
            combo.model().item(index).setEnabled(usable)
        if self._parameterNode.options.device not in self._usableDevices:
            self._parameterNode.options.device = "auto"

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
            options = self._parameterNode.options.forApply()
            extractor = options.brain_mask_method if self._parameterNode.brainMask is None else None
            if not ensureRunPackages([(bundle, list(self._inputVolumes()))], extractor, f"The model '{bundle.name}'"):
                return
            # the model's own post-processing defaults; the Tune section adjusts them afterwards
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
                self.ui.stageLabel.text = (f"Done in {sum(result.report['timings_s'].values()):.1f} s "
                                           f"on {result.report['device']}.")
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
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.volumeSetsCollapsibleButton):  # one run at a time
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
                parameters.options.showResult(result)
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
