"""What the module does at Slicer's startup (sample data, terminology) and the synthetic example."""

import logging
import traceback
from pathlib import Path

import qt
import slicer

from UADBrainLib.errors import UADBrainError
from UADBrainMRML.segmentation import TERMINOLOGY_FILE

from .logic import UADBrainLogic

EXAMPLE_SAMPLE_NAME = "UADBrain synthetic brain"
ICON_FILE = Path(__file__).resolve().parent.parent / "Resources" / "Icons" / "UADBrain.png"


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
        thumbnailFileName=str(ICON_FILE),
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
