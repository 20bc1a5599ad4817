"""The panel's "Many volume sets" section: the model of the Model section on every checked set."""

import logging

import qt
import slicer

from UADBrainLib.errors import UADBrainError

from .packages import ensureRunPackages, pythonSlicerExecutable
from .startup import showError

POLL_INTERVAL_MS = 200  # how often a background run is polled (this section's and the panel's Apply)


class VolumeSetsSection:
    """Find the scene's volume sets, run them one after another in the background, report each.

    One run at a time: while the sets run, Apply and the Inputs and Model sections are disabled
    (and the panel disables this section while Apply runs)."""

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

    def forget(self) -> None:
        """The scene is closing: stop, and drop the sets (their nodes go with the scene)."""
        self.cancel()
        self._sets = []
        self.ui.volumeSetsList.clear()
        self.ui.runVolumeSetsButton.enabled = False
        self.ui.volumeSetsStatusLabel.text = ""

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
            parameters = self.panel._parameterNode
            modelName = parameters.modelName or None
            options = parameters.options.forApply()
            if not ensureRunPackages(self._modelsOf(chosen, modelName), options.brain_mask_method,
                                     "The run over many volume sets"):
                return
            self._runs = self.panel.logic.startVolumeSetRuns(
                chosen, modelName, options, pythonSlicerExecutable(), slicer.util.startupEnvironment(),
                self.panel.logic.getParameterNode().replaceExisting)
        except Exception as error:  # noqa: BLE001 - shown to the user, the panel stays usable
            showError("Could not start the run over many volume sets.", error)
            return
        self._setRunning(True)
        self._timer.start()

    @staticmethod
    def _modelsOf(sets, modelName) -> list:
        """``(bundle, contrasts)`` of each set (without a model named, each set's own default)."""
        from UADBrainLib.bundle import find_bundle

        models = []
        for volumeSet in sets:
            try:
                models.append((find_bundle(modelName, None if modelName else list(volumeSet.volumes)),
                               list(volumeSet.volumes)))
            except UADBrainError:
                pass  # that set fails on its own, with this reason, and the list goes on
        return models

    def cancel(self) -> None:
        if self._runs is not None:
            self._runs.cancel()
            self._poll()

    def _poll(self) -> None:
        try:
            status = self._runs.poll()
        except Exception as error:  # noqa: BLE001 - a failure here must not repeat every poll
            self._runs.cancel()
            self._stop()
            showError("The run over many volume sets stopped.", error)
            return
        self.ui.progressBar.value = int(round(100 * status.fraction))
        self.ui.stageLabel.text = status.stage
        if not status.finished:
            return
        self._stop()
        lines = [status.stage]
        for outcome in status.outcomes:
            lines.append(f"{outcome.name}: {outcome.summary}")
            for warning in outcome.warnings:
                logging.warning(f"UADBrain: {outcome.name}: {warning}")
        self.ui.volumeSetsStatusLabel.text = "\n".join(lines)

    def _stop(self) -> None:
        self._timer.stop()
        self._runs = None
        self._setRunning(False)

    def _setRunning(self, running: bool) -> None:
        self.ui.runVolumeSetsButton.text = "Cancel" if running else "Run on checked sets"
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.findVolumeSetsButton, self.ui.volumeSetsList):
            widget.enabled = not running
        if running:
            self.ui.applyButton.enabled = False
        else:
            self.panel._showInputProblems()  # Apply as the inputs allow
