"""The module Logic on Slicer's scene: ``UADBrainMRMLLogic`` with Slicer's parameter node."""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from UADBrainMRML.logic import UADBrainMRMLLogic

from .parameters import UADBrainParameterNode


class UADBrainLogic(ScriptedLoadableModuleLogic, UADBrainMRMLLogic):
    """The module Logic on Slicer's scene; scriptable from the Python console.

    Example (Python console, batch over the loaded FLAIR volumes)::

        import UADBrain
        logic = UADBrain.UADBrainLogic()
        for flair in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if flair.GetAttribute("UADBrain.Role") or "FLAIR" not in flair.GetName():
                continue
            outputs = logic.process({"flair": flair}, threshold="otsu", fpr=0.005)
            print(flair.GetName(), outputs.result.lesion_count, outputs.result.flagged_volume_ml)
            logic.exportResults(outputs, f"/tmp/uadbrain/{flair.GetName()}")

    See ``UADBrainMRML.logic.UADBrainMRMLLogic`` for every method.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        UADBrainMRMLLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return UADBrainParameterNode(super().getParameterNode())
