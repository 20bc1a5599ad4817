"""The full flow inside desktop Slicer (Developer mode: Reload and Test): ``UADBrain.UADBrainTest``."""

import pathlib

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from UADBrainMRML.dependencies import TORCH, missing_modules

from .logic import UADBrainLogic


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
        panel = slicer.util.getModuleWidget("UADBrain").panel
        parameters = panel._parameterNode
        parameters.flairVolume = makePhantomFlair(slicer.mrmlScene)
        parameters.options.device = "cpu"
        self.assertTrue(panel.ui.applyButton.enabled, panel.ui.inputProblemsLabel.text)

        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        panel.ui.applyButton.click()
        self.assertEqual(panel.ui.applyButton.text, "Cancel")
        panel.ui.applyButton.click()  # cancel at once
        self.assertEqual(panel.ui.applyButton.text, "Apply")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

        panel.ui.applyButton.click()
        self._waitUntil(lambda: panel._job is None, timeoutSeconds=600)
        outputs = panel._outputs
        self.assertIsNotNone(outputs, panel.ui.stageLabel.text)
        self.assertEqual(parameters.segmentation.GetID(), outputs.segmentationNode.GetID())

        wanted = outputs.result.threshold * 1.3
        panel.ui.thresholdSlider.value = wanted
        self._waitUntil(lambda: panel._pendingThreshold is None, timeoutSeconds=10)
        self.assertAlmostEqual(panel._outputs.result.threshold, panel.ui.thresholdSlider.value, places=6)
        self.assertEqual(panel._outputs.result.threshold_method, "manual")
        self.assertIn("mL flagged", panel.ui.readoutLabel.text)

        if outputs.result.lesion_count:
            model = panel.ui.lesionTableView.model()
            row = next(r for r in range(model.rowCount()) if str(model.index(r, 0).data()) == "1")
            panel.onLesionClicked(model.index(row, 0))
            red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
            centre = [red.GetSliceToRAS().GetElement(axis, 3) for axis in range(3)]
            for value, expected in zip(centre, outputs.result.lesions[0].centroid_ras):
                self.assertAlmostEqual(value, expected, places=3)

        parameters.exportFolder = pathlib.Path(slicer.app.temporaryPath) / "UADBrainPanelTest"
        panel.onExport()
        self.assertTrue((parameters.exportFolder / "lesions.csv").is_file())
        self.delayDisplay("Panel flow passed")

    def test_SyntheticExample(self):
        """The panel's example button (the Sample Data entry runs the same code)."""
        self.delayDisplay("Synthetic example")
        slicer.util.selectModule("UADBrain")
        panel = slicer.util.getModuleWidget("UADBrain").panel
        panel.onLoadExample()
        self.assertIsNotNone(panel._parameterNode.flairVolume)
        self.assertTrue(panel.ui.applyButton.enabled, panel.ui.inputProblemsLabel.text)
        # the learned default model needs PyTorch; without it, the baseline
        model = "threshold" if missing_modules([TORCH]) else None
        outputs = panel.logic.process({"flair": panel._parameterNode.flairVolume}, modelName=model, device="cpu")
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
