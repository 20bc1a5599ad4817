"""Post-processing of an anomaly map: median filter, brain-mask erosion, threshold, lesions.

:class:`PostProcessor` works on the map's native grid, cropped to the brain's bounding box, and
caches median-filtered maps and eroded masks, so re-thresholding costs a comparison (or an exact
box count, :func:`median_above`, for a kernel not filtered yet) and a connected-component
labelling (the slider in the Slicer module and the web app). Lesion scores (max, mean) are taken
from the unfiltered map, so they do not depend on the kernel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..geometry import lps_to_ras

MEDIAN_KERNELS = (0, 3, 5, 7)  # 0 = off
CROP_MARGIN = 4  # voxels kept around the brain so filters see the same neighbourhood


@dataclass
class Lesion:
    label: int
    voxels: int
    volume_ml: float
    max_score: float
    mean_score: float
    centroid_ras: tuple[float, float, float]  # mm, Slicer's RAS
    centroid_ijk: tuple[float, float, float]  # continuous voxel index (i, j, k) on the native grid
    bbox_ijk_min: tuple[int, int, int]
    bbox_ijk_max: tuple[int, int, int]  # inclusive

    def as_row(self) -> dict:
        row = asdict(self)
        for key in ("centroid_ras", "centroid_ijk", "bbox_ijk_min", "bbox_ijk_max"):
            for axis, value in zip("xyz" if key == "centroid_ras" else "ijk", row.pop(key)):
                row[f"{key}_{axis}"] = round(value, 2) if isinstance(value, float) else value
        row["volume_ml"] = round(row["volume_ml"], 4)
        row["max_score"] = round(row["max_score"], 4)
        row["mean_score"] = round(row["mean_score"], 4)
        return row


@dataclass
class Segmentation:
    labels: np.ndarray  # int32 on the full native grid, lesion i has label i (1 = highest max score)
    lesions: list[Lesion]

    @property
    def flagged_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))


def _check_kernel(median: int) -> int:
    median = int(median or 0)
    if median == 1:
        median = 0
    if median not in MEDIAN_KERNELS:
        raise ValueError(f"median kernel must be one of {MEDIAN_KERNELS} voxels (0 = off), got {median}")
    return median


def median_filter(array: np.ndarray, kernel: int) -> np.ndarray:
    kernel = _check_kernel(kernel)
    if kernel == 0:
        return array
    image = sitk.GetImageFromArray(array)
    return sitk.GetArrayFromImage(sitk.Median(image, [kernel // 2] * 3))


def median_above(array: np.ndarray, threshold: float, kernel: int) -> np.ndarray:
    """``median_filter(array, kernel) > threshold``, exactly, without computing the median.

    The median of k³ values exceeds t exactly when more than half of them do, so the binary
    segmentation of a median-filtered map is a box count of ``array > t``: three 1D sums instead
    of a k³ sort per voxel (the edge is replicated, as ITK's median filter does).
    """
    kernel = _check_kernel(kernel)
    above = array > threshold
    if kernel == 0:
        return above
    counts = above.astype(np.uint16)
    window = np.ones(kernel, np.uint16)
    for axis in range(3):
        counts = ndimage.convolve1d(counts, window, axis=axis, mode="nearest")
    return counts > kernel ** 3 // 2


def erode_mask(mask: np.ndarray, erosion_mm: float, spacing_ijk) -> np.ndarray:
    """Erode a mask by a physical distance (ellipsoidal element in voxels for anisotropic grids)."""
    if not erosion_mm or erosion_mm <= 0:
        return mask
    spacing_kji = np.array(spacing_ijk, dtype=float)[::-1]
    radii = np.floor(erosion_mm / spacing_kji).astype(int)
    if not radii.any():
        return mask
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    element = sum((g * s / erosion_mm) ** 2 for g, s in zip(grids, spacing_kji)) <= 1.0
    return ndimage.binary_erosion(mask, structure=element)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    histogram, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel, or None when there is none."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if present.size == 0:
            return None
        box.append(slice(present[0], present[-1] + 1))
    return tuple(box)


def volume_score(brain_scores: np.ndarray, voxel_ml: float, top_ml: float = 1.0) -> float:
    """Volume-level anomaly score: mean score of the most anomalous ``top_ml`` mL of brain."""
    count = int(np.clip(round(top_ml / voxel_ml), 1, brain_scores.size))
    return float(np.partition(brain_scores, brain_scores.size - count)[brain_scores.size - count:].mean())


class PostProcessor:
    """Cached post-processing of one anomaly map on its native grid."""

    def __init__(self, anomaly_map: sitk.Image, brain_mask: sitk.Image):
        self.reference = anomaly_map
        self.spacing = anomaly_map.GetSpacing()
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        full_map = sitk.GetArrayViewFromImage(anomaly_map)
        mask = sitk.GetArrayViewFromImage(brain_mask) > 0
        self.shape = full_map.shape
        self.crop = self._brain_box(mask)
        self.mask = np.ascontiguousarray(mask[self.crop])
        # outside the brain counts as 0 (not anomalous) for the filters
        self.map = np.where(self.mask, full_map[self.crop], 0.0).astype(np.float32)
        self._filtered: dict[int, np.ndarray] = {}
        self._eroded: dict[float, np.ndarray] = {}

    def _brain_box(self, mask: np.ndarray) -> tuple[slice, ...]:
        box = bounding_box(mask)
        if box is None:
            return tuple(slice(0, n) for n in mask.shape)
        return tuple(slice(max(b.start - CROP_MARGIN, 0), min(b.stop + CROP_MARGIN, n))
                     for b, n in zip(box, mask.shape))

    def filtered(self, median: int) -> np.ndarray:
        """The map median-filtered with a cubic kernel."""
        median = _check_kernel(median)
        if median not in self._filtered:
            self._filtered[median] = median_filter(self.map, median)
        return self._filtered[median]

    def brain(self, erosion_mm: float = 0.0) -> np.ndarray:
        key = float(erosion_mm or 0.0)
        if key not in self._eroded:
            self._eroded[key] = erode_mask(self.mask, key, self.spacing)
        return self._eroded[key]

    def brain_scores(self, median: int, erosion_mm: float = 0.0) -> np.ndarray:
        return self.filtered(median)[self.brain(erosion_mm)]

    def otsu(self, median: int, erosion_mm: float = 0.0) -> float:
        """Otsu's threshold over the upper half of the brain's scores.

        Anomalies are the high tail: over all scores Otsu would split dark from bright tissue
        (e.g. CSF from white matter on FLAIR) and flag half the brain.
        """
        scores = self.brain_scores(median, erosion_mm)
        upper = scores[scores > np.median(scores)]
        return otsu_threshold(upper if upper.size else scores)

    def volume_score(self, median: int) -> float:
        return volume_score(self.brain_scores(median), self.voxel_ml)

    def segment(self, threshold: float, median: int = 0, min_size_mm3: float = 0.0,
                erosion_mm: float = 0.0) -> Segmentation:
        median = _check_kernel(median)
        if median in self._filtered:
            above = self._filtered[median] > threshold
        else:
            above = median_above(self.map, threshold, median)
        flagged = above & self.brain(erosion_mm)
        full = np.zeros(self.shape, np.int32)
        box = bounding_box(flagged)
        if box is None:
            return Segmentation(labels=full, lesions=[])
        # label only the box around flagged voxels: a few lesions need not cost a whole-brain pass
        labels, count = ndimage.label(flagged[box])
        offset = tuple(c.start + b.start for c, b in zip(self.crop, box))
        lesions, box_labels = self._measure(labels, count, self.map[box], min_size_mm3, offset)
        full[tuple(slice(o, o + n) for o, n in zip(offset, labels.shape))] = box_labels
        return Segmentation(labels=full, lesions=lesions)

    def _measure(self, labels, count, scores, min_size_mm3, offset):
        flat_index = np.flatnonzero(labels)
        component = labels.ravel()[flat_index]
        values = scores.ravel()[flat_index]
        sizes = np.bincount(component, minlength=count + 1)
        keep = sizes * self.voxel_ml * 1000.0 >= (min_size_mm3 or 0.0)
        keep[0] = False
        maxima = np.full(count + 1, -np.inf)
        np.maximum.at(maxima, component, values)
        sums = np.bincount(component, weights=values, minlength=count + 1)
        # new label order: highest maximum score first
        kept = np.flatnonzero(keep)
        kept = kept[np.argsort(-maxima[kept], kind="stable")]
        relabel = np.zeros(count + 1, np.int32)
        relabel[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
        new_component = relabel[component]
        selected = new_component > 0
        coords = np.column_stack(np.unravel_index(flat_index[selected], labels.shape))
        coords += np.array(offset)
        new_labels = new_component[selected]
        total = kept.size + 1
        centroids = np.column_stack([np.bincount(new_labels, weights=coords[:, axis], minlength=total)
                                     for axis in range(3)]) / np.maximum(sizes[np.r_[0, kept]], 1)[:, None]
        lower = np.full((total, 3), np.iinfo(np.int64).max)
        upper = np.full((total, 3), -1)
        np.minimum.at(lower, new_labels, coords)
        np.maximum.at(upper, new_labels, coords)
        lesions = []
        for new_label, old_label in enumerate(kept, start=1):
            centroid_ijk = tuple(float(c) for c in centroids[new_label][::-1])
            point = self.reference.TransformContinuousIndexToPhysicalPoint(centroid_ijk)
            lesions.append(Lesion(
                label=new_label,
                voxels=int(sizes[old_label]),
                volume_ml=float(sizes[old_label] * self.voxel_ml),
                max_score=float(maxima[old_label]),
                mean_score=float(sums[old_label] / sizes[old_label]),
                centroid_ras=lps_to_ras(point),
                centroid_ijk=centroid_ijk,
                bbox_ijk_min=tuple(int(c) for c in lower[new_label][::-1]),
                bbox_ijk_max=tuple(int(c) for c in upper[new_label][::-1]),
            ))
        crop_labels = np.zeros(labels.shape, np.int32)
        crop_labels.ravel()[flat_index] = new_component
        return lesions, crop_labels
