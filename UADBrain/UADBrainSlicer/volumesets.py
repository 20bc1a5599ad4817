"""The panel's "Many volume sets" section: the model of the Model section on every checked set."""

import logging

import qt
import slicer

from UADBrainMRML.dependencies import brain_extractor_modules, required_modules

from .packages import ensurePythonPackages, pythonSlicerExecutable
from .startup import showError

POLL_INTERVAL_MS = 200


class VolumeSetsSection:
    """Find the scene's volume sets, run them one after another in the background, report each."""

    def __init__(self, panel) -> None:
        self.panel, self.ui = panel, panel.ui
        self._sets = []
        self._runs = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self.ui.findVolumeSetsButton.connect("clicked(bool)", self.onFind)
        self.ui.runVolumeSetsButton.connect("clicked(bool)", self.onRun)

    @property
    def running(self) -> bool:
        return self._runs is not None

    def onFind(self) -> None:
        self._sets = self.panel.logic.volumeSets()
        self.ui.volumeSetsList.clear()
        for volumeSet in self._sets:
            contrasts = ", ".join(contrast.upper() for contrast in volumeSet.volumes)
            item = qt.QListWidgetItem(f"{volumeSet.name}: {contrasts}"
                                      + (f" — {volumeSet.problem}" if volumeSet.problem else ""))
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked if volumeSet.problem else qt.Qt.Checked)
            self.ui.volumeSetsList.addItem(item)
        self.ui.runVolumeSetsButton.enabled = bool(self._sets)
        self.ui.volumeSetsStatusLabel.text = (f"{len(self._sets)} volume sets found." if self._sets else
                                              "No volume named by its contrast (FLAIR, T1, T2, T1c) in the scene.")

    def onRun(self) -> None:
        if self._runs is not None:
            self.cancel()
            return
        chosen = [volumeSet for index, volumeSet in enumerate(self._sets)
                  if self.ui.volumeSetsList.item(index).checkState() == qt.Qt.Checked]
        if not chosen:
            self.ui.volumeSetsStatusLabel.text = "Check at least one set."
            return
        try:
            from UADBrainLib.bundle import find_bundle

            parameters = self.panel._parameterNode
            modelName = parameters.modelName or None
            options = parameters.options.forApply()
            contrasts = list(dict.fromkeys(c for volumeSet in chosen for c in volumeSet.volumes))
            needed = required_modules(find_bundle(modelName, None if modelName else contrasts), contrasts)
            needed += brain_extractor_modules(options.brain_mask_method)
            if not ensurePythonPackages(needed, "The run over many volume sets"):
                return
            self._runs = self.panel.logic.startVolumeSetRuns(
                chosen, modelName, options, pythonSlicerExecutable(), slicer.util.startupEnvironment(),
                self.panel.logic.getParameterNode().replaceExisting)
        except Exception as error:  # noqa: BLE001 - shown to the user, the panel stays usable
            showError("Could not start the run over many volume sets.", error)
            return
        self._setRunning(True)
        self._timer.start()

    def cancel(self) -> None:
        if self._runs is None:
            return
        self._runs.cancel()
        self._poll()

    def _poll(self) -> None:
        status = self._runs.poll()
        self.ui.progressBar.value = int(round(100 * status.fraction))
        self.ui.stageLabel.text = status.stage
        if not status.finished:
            return
        self._timer.stop()
        self._runs = None
        self._setRunning(False)
        lines = [status.stage]
        for outcome in status.outcomes:
            if outcome.error:
                lines.append(f"{outcome.name}: failed — {outcome.error}")
            else:
                lines.append(f"{outcome.name}: {outcome.outputs.result.lesion_count} lesions, "
                             f"{outcome.outputs.result.flagged_volume_ml:.1f} mL (on {outcome.device})")
                for warning in outcome.warnings:
                    logging.warning(f"UADBrain: {outcome.name}: {warning}")
        self.ui.volumeSetsStatusLabel.text = "\n".join(lines)

    def _setRunning(self, running: bool) -> None:
        self.ui.runVolumeSetsButton.text = "Cancel" if running else "Run on checked sets"
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton, self.ui.applyButton,
                       self.ui.findVolumeSetsButton, self.ui.volumeSetsList):
            widget.enabled = not running
