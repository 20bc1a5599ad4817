"""Writing a run's nodes to a folder: .seg.nrrd, NIfTI labelmap, NIfTI anomaly map, lesion CSV.

Images are written from the nodes in their own (local) coordinates, as Slicer's Save dialog
does, so a segmentation edited in the Segment Editor is exported with its edits. The lesion
table is the engine's measurement at the current threshold (centroids in world RAS).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import slicer

from UADBrainLib.inference.result_files import write_lesion_table
from UADBrainLib.io import write_image

from .segmentation import segment_mask
from .volumes import ijk_to_ras, image_from_array, image_from_volume_node

EXPORT_FILES = ("segmentation.seg.nrrd", "segmentation.nii.gz", "anomaly_map.nii.gz", "lesions.csv")


def export_outputs(outputs, folder) -> list[Path]:
    """Write the four files into ``folder`` (created if needed); all or nothing.

    Files go to a staging folder inside ``folder`` first and are moved into place only when all
    were written. Existing files of the same names are replaced; nothing else is touched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".uadbrain-export-", dir=folder))
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(staging / "segmentation.seg.nrrd"))
        if not storage.WriteData(outputs.segmentationNode):
            raise OSError(f"could not write {folder / 'segmentation.seg.nrrd'} — check the folder is writable.")
        reference = outputs.inputNode
        mask = segment_mask(outputs.segmentationNode, reference)
        write_image(image_from_array(mask, ijk_to_ras(reference, world=False),
                                     reference.GetImageData().GetExtent()[::2]),
                    staging / "segmentation.nii.gz")
        write_image(image_from_volume_node(outputs.anomalyMapNode, world=False), staging / "anomaly_map.nii.gz")
        write_lesion_table(outputs.result, staging / "lesions.csv")
        written = []
        for name in EXPORT_FILES:
            target = folder / name
            (staging / name).replace(target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
