"""What a detect run produced, and re-thresholding it without rerunning the model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from .options import check_erosion, check_fpr, check_min_size, check_threshold
from .postprocessing import Lesion, PostProcessor, check_median
from .thresholds import resolve_threshold


@dataclass
class Result:
    """Everything a run produced, on the reference input's native grid."""

    anomaly_map: sitk.Image  # the median-filtered map the threshold acts on (what is shown and written)
    brain_mask: sitk.Image
    labels_array: np.ndarray  # unsigned ints (the smallest type that holds them), lesion i = label i, 1 = most anomalous
    lesions: list[Lesion]
    threshold: float
    threshold_method: str
    median: int
    min_size_mm3: float
    erosion_mm: float
    fpr: float
    volume_score: float
    volume_percentile: float | None
    model_name: str
    channels: list[str]
    inputs: dict[str, sitk.Image] = field(default_factory=dict)  # validated inputs, reference first
    channel_maps: dict[str, sitk.Image] = field(default_factory=dict)  # raw, on the 1 mm working grid
    reconstructions: dict[str, sitk.Image] = field(default_factory=dict)
    preprocessed: dict[str, sitk.Image] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    calibration: dict | None = field(default=None, repr=False)
    postprocessor: PostProcessor | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the arrays and images stay out of print(result)
        return (f"Result(model={self.model_name!r}, lesions={self.lesion_count}, flagged_volume_ml="
                f"{self.flagged_volume_ml:.2f}, threshold={self.threshold:.4g} ({self.threshold_method}), "
                f"median={self.median} mm, volume_score={self.volume_score:.4g}, size={self.anomaly_map.GetSize()})")

    # made when asked, not kept: on a 0.5 mm grid each is another full-size image
    @property
    def lesion_labels(self) -> sitk.Image:
        return self._image_of_labels(self.labels_array.dtype, lambda labels: labels)

    @property
    def segmentation(self) -> sitk.Image:
        """The segmentation as a 0/1 uint8 image on the native grid."""
        return self._image_of_labels(np.uint8, lambda labels: (labels > 0).astype(np.uint8))

    def _image_of_labels(self, dtype, convert) -> sitk.Image:
        """An image of ``convert(labels)``: only the box around the lesions is converted and pasted
        into an empty grid, so no temporary copy of the whole grid is made."""
        image = sitk.Image(self.anomaly_map.GetSize(), sitk.GetImageFromArray(np.zeros((2, 2, 2), dtype)).GetPixelID())
        image.CopyInformation(self.anomaly_map)
        if self.lesions:
            low = np.min([lesion.bbox_ijk_min for lesion in self.lesions], axis=0)
            high = np.max([lesion.bbox_ijk_max for lesion in self.lesions], axis=0)
            box = tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high))  # i, j, k
            image[box] = sitk.GetImageFromArray(convert(self.labels_array[box[::-1]]))
        return image

    @property
    def flagged_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    def rethreshold(self, threshold: float | str | None = None, median: int | None = None,
                    min_size_mm3: float | None = None, erosion_mm: float | None = None,
                    fpr: float | None = None) -> "Result":
        """A new Result with the segmentation recomputed from the cached map (no model rerun).

        Arguments left as None keep this result's values; ``threshold`` None keeps the number if
        it was manual, else re-resolves the same method (calibrated/otsu) for the new settings.
        """
        median = self.median if median is None else check_median(median)
        min_size_mm3 = self.min_size_mm3 if min_size_mm3 is None else check_min_size(min_size_mm3)
        erosion_mm = self.erosion_mm if erosion_mm is None else check_erosion(erosion_mm)
        fpr = self.fpr if fpr is None else check_fpr(fpr)
        threshold = check_threshold(threshold)
        if threshold is None:
            threshold = self.threshold if self.threshold_method == "manual" else self.threshold_method
        value, method = resolve_threshold(threshold, self.postprocessor, self.calibration,
                                          self.channels, median, erosion_mm, fpr)
        segmentation = self.postprocessor.segment(value, median, min_size_mm3, erosion_mm)
        return replace(self, anomaly_map=self.postprocessor.anomaly_map(median), labels_array=segmentation.labels, lesions=segmentation.lesions,
                       threshold=value, threshold_method=method, median=median,
                       min_size_mm3=min_size_mm3, erosion_mm=erosion_mm, fpr=fpr)

    def summary(self) -> dict:
        """The run as JSON-ready values (report.json)."""
        return {
            **self.report,
            "model": self.model_name,
            "channels": self.channels,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "fpr": self.fpr if self.threshold_method == "calibrated" else None,
            "median": self.median,
            "min_size_mm3": self.min_size_mm3,
            "erosion_mm": self.erosion_mm,
            "volume_score": self.volume_score,
            "volume_percentile_among_healthy": self.volume_percentile,
            "flagged_volume_ml": self.flagged_volume_ml,
            "lesion_count": self.lesion_count,
            "lesions": [lesion.as_row() for lesion in self.lesions],
        }
