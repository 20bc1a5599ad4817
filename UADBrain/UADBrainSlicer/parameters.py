"""The panel's state, saved with the scene: inputs, model, outputs and one pack of run options."""

import enum
import pathlib
from dataclasses import replace
from typing import Annotated, Union

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange, parameterNodeWrapper, parameterPack

from UADBrainLib.device import DEVICE_CHOICES
from UADBrainLib.inference.brain_extraction import BRAIN_MASK_METHODS
from UADBrainLib.inference.options import DEFAULTS, MAX_AGE_YEARS, MODEL_DEFAULT_POSTPROCESSING, DetectOptions

CONTRAST_PARAMETERS = {"flair": "flairVolume", "t1": "t1Volume", "t2": "t2Volume", "t1c": "t1cVolume"}
# several GPUs as cuda:0 … cuda:7; the panel hides what this computer cannot use (panel._offerUsableDevicesOnly)
PANEL_DEVICES = [*DEVICE_CHOICES, *(f"cuda:{index}" for index in range(8))]


class MedianKernel(enum.Enum):
    OFF = 0
    THREE = 3
    FIVE = 5
    SEVEN = 7

    def label(self):
        return "off" if self.value == 0 else f"{self.value} mm"


@parameterPack
class RunOptions:
    """The engine's ``DetectOptions`` as the panel holds them; every default is the engine's.

    device, brainMaskMethod (used when no brain mask is given) and ageYears (for models conditioned
    on age; 0 = not given) are used by Apply; fpr (healthy
    false-positive rate of the calibrated threshold), median, minSizeMm3 and erosionMm are the
    model's own on Apply and set by the Tune section afterwards, without rerunning the model.
    """

    device: Annotated[str, Choice(PANEL_DEVICES)] = DEFAULTS.device
    brainMaskMethod: Annotated[str, Choice(list(BRAIN_MASK_METHODS))] = DEFAULTS.brain_mask_method
    ageYears: Annotated[float, WithinRange(0.0, MAX_AGE_YEARS)] = 0.0  # 0: not given (the spin box shows "unknown")
    fpr: Annotated[float, Minimum(0.0)] = MODEL_DEFAULT_POSTPROCESSING["fpr"]
    median: MedianKernel = MedianKernel(MODEL_DEFAULT_POSTPROCESSING["median"])
    minSizeMm3: Annotated[float, Minimum(0.0)] = MODEL_DEFAULT_POSTPROCESSING["min_size_mm3"]
    erosionMm: Annotated[float, Minimum(0.0)] = MODEL_DEFAULT_POSTPROCESSING["erosion_mm"]

    def forApply(self) -> DetectOptions:
        return replace(DEFAULTS, device=self.device, brain_mask_method=self.brainMaskMethod,
                       age=self.ageYears or None)

    def tuneSettings(self) -> dict:
        """The Tune section's values, as ``UADBrainMRMLLogic.rethreshold`` takes them."""
        return {"median": self.median.value, "minSizeMm3": self.minSizeMm3, "erosionMm": self.erosionMm,
                "fpr": self.fpr}

    def showResult(self, result) -> None:
        self.median = MedianKernel(result.median)
        self.minSizeMm3 = result.min_size_mm3
        self.erosionMm = result.erosion_mm
        self.fpr = result.fpr

    @staticmethod
    def resultSettings(result) -> dict:
        return {"median": result.median, "minSizeMm3": result.min_size_mm3, "erosionMm": result.erosion_mm,
                "fpr": result.fpr}


@parameterNodeWrapper
class UADBrainParameterNode:
    """flairVolume ... t1cVolume: input volumes by contrast. brainMask: optional mask.
    modelName: bundled model ("" = the default for the selected contrasts). replaceExisting: a run
    replaces this module's earlier outputs for the same input. options: the run options.
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
    replaceExisting: bool = False
    options: RunOptions
    exportFolder: pathlib.Path = pathlib.Path.home() / "UADBrain"
    anomalyMap: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    lesionTable: vtkMRMLTableNode
