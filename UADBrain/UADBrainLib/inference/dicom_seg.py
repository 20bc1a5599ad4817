"""DICOM Segmentation of a result, for a PACS: one binary segment referencing the source series.

Written with highdicom (``pip install "uadbrain[cohort]"``). The segment's coding is the one the
Slicer module gives its segment (UADBrainMRML reads it from here): SNOMED CT "Morphologically
Altered Structure" / "Lesion" in the "Brain".
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..geometry import resample_like

# (coding scheme, code value, code meaning)
SEGMENT_CATEGORY = ("SCT", "49755003", "Morphologically Altered Structure")
SEGMENT_TYPE = ("SCT", "52988006", "Lesion")
SEGMENT_REGION = ("SCT", "12738006", "Brain")
SEGMENT_LABEL = "anomaly"


def dicom_series_files(folder) -> list[str]:
    """The files of the one DICOM series in ``folder``, in the order the image reader stacks them."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise InputError(f"'{folder}' holds no DICOM series — DICOM SEG references a DICOM input.")
    return list(files)


def dicom_series_input(images: dict, reference_contrast: str | None = None) -> Path | None:
    """The DICOM series folder among the inputs that a DICOM SEG references: the reference
    contrast's (the grid of the result) when it is one, else the first; None when none is."""
    folders = {contrast: Path(path) for contrast, path in images.items()
               if isinstance(path, (str, Path)) and Path(path).is_dir()}
    return folders.get(reference_contrast) or next(iter(folders.values()), None)


def write_dicom_seg(segmentation: sitk.Image, series_folder, path, model_name: str, model_version: str,
                    lesion_count: int) -> None:
    """Write ``segmentation`` (labels > 0 = anomaly, on any grid) as a DICOM SEG of the series in
    ``series_folder``: resampled onto the series' own grid, one frame per source slice."""
    try:
        import highdicom as hd
        import pydicom
    except ImportError:
        raise InputError('--dicom-seg needs highdicom — pip install "uadbrain[cohort]".') from None
    from .. import __version__

    files = dicom_series_files(series_folder)
    sources = [pydicom.dcmread(file) for file in files]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    series_grid = reader.Execute()
    on_series = resample_like(sitk.Cast(segmentation > 0, sitk.sitkUInt8), series_grid, is_label=True)
    mask = sitk.GetArrayFromImage(on_series).astype(bool)  # [slice k, row, column], slice k = files[k]
    def coded(code):
        scheme, value, meaning = code
        return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"UADBrain {model_name}", version=str(model_version or __version__),
        family=coded(("DCM", "123109", "Artificial Intelligence")))
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=coded(SEGMENT_CATEGORY), segmented_property_type=coded(SEGMENT_TYPE),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        anatomic_regions=[coded(SEGMENT_REGION)])
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=9901,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="UADBrain",
            manufacturer_model_name=f"UADBrain {model_name}", software_versions=__version__,
            device_serial_number="none", omit_empty_frames=False,
            series_description=f"UADBrain anomaly ({model_name}, {lesion_count} lesion(s))"[:64])
    except (ValueError, AttributeError, TypeError) as error:  # highdicom's word on the source series
        raise InputError(f"DICOM SEG: the series in '{series_folder}' cannot be referenced ({error}) — "
                         "check that it is one complete series from the scanner.") from None
    seg.save_as(str(path))
