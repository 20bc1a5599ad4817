"""UADBrain: unsupervised anomaly detection in brain MRI, as a 3D Slicer module.

This file is what Slicer loads: the module, a widget that embeds the panel, the Logic entry point
and the test hook. The panel and its parameter node live in the importable package
``UADBrainSlicer``; the Qt-free Logic it drives (shared with the web app) in ``UADBrainMRML``; the
engine in ``UADBrainLib``. Everything the panel does can be scripted from the Python console
through ``UADBrainLogic`` (see its docstring).
"""

import sys

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget

from UADBrainSlicer.logic import UADBrainLogic  # noqa: F401 - the module's Logic, for scripts
from UADBrainSlicer.panel import UADBrainPanel
from UADBrainSlicer.selftest import UADBrainTest  # noqa: F401 - run by Slicer's "Reload and Test"
from UADBrainSlicer.startup import registerSampleData, registerTerminology
from UADBrainSlicer.texts import ACKNOWLEDGEMENT_TEXT, HELP_TEXT

# imported afresh by "Reload" in developer mode (Slicer itself re-reads only this file)
RELOADED_PACKAGES = ("UADBrainMRML", "UADBrainSlicer")


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


class UADBrainWidget(ScriptedLoadableModuleWidget):
    """Embeds ``UADBrainSlicer.panel.UADBrainPanel``, which holds the panel's code."""

    def __init__(self, parent=None) -> None:
        # set before the base __init__, which calls setup() itself when no parent is given
        self.panel = None
        self.logic = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.panel = UADBrainPanel(self.resourcePath("UI/UADBrain.ui"), lambda: self.parent.isEntered)
        self.layout.addWidget(self.panel.widget)
        self.logic = self.panel.logic

    def cleanup(self) -> None:
        if self.panel is not None:
            self.panel.cleanup()

    def enter(self) -> None:
        self.panel.enter()

    def exit(self) -> None:
        self.panel.exit()

    def onReload(self) -> None:
        """Developer mode's Reload: forget the panel's packages, so re-reading this file imports them anew."""
        for name in [name for name in sys.modules if name.split(".")[0] in RELOADED_PACKAGES]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)
