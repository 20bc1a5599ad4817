"""Post-processing of an anomaly map: median filter, brain-mask erosion, threshold, lesions.

Every size is in millimetres. The median filter and the erosion run on a 1 mm canonical working
grid (:func:`working_grid`), so a kernel means the same whatever the acquisition (a 5-voxel kernel
spans 35 mm through 7 mm slices); the filtered map is carried back onto the native grid, where it
is shown, written and thresholded, so overlay, segmentation and histogram agree voxel for voxel.
:class:`PostProcessor` caches filtered maps and eroded masks: re-thresholding (the slider in the
Slicer module and the web app) costs a comparison and a connected-component labelling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..geometry import array_to_image, canonical_reference, lps_to_ras, resample_like

MEDIAN_KERNELS = (0, 3, 5, 7)  # mm, 0 = off
WORKING_SPACING_MM = 1.0  # the grid filters run on; healthy calibrations are made on it
CROP_MARGIN = 4  # voxels kept around the brain so filters see the same neighbourhood
PASTE_SLAB = 32  # native slices carried back at a time


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
    labels: np.ndarray  # unsigned ints on the full native grid, lesion i has label i (1 = highest max score)
    lesions: list[Lesion]

    @property
    def flagged_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))


def check_median(value) -> int:
    """A median kernel in mm, one of :data:`MEDIAN_KERNELS` (0 = off)."""
    if value not in MEDIAN_KERNELS or isinstance(value, bool):
        raise InputError(f"the median kernel must be one of {', '.join(map(str, MEDIAN_KERNELS))} mm "
                         f"(0 = off), got {value!r}.")
    return int(value)


def median_filter(array: np.ndarray, kernel: int) -> np.ndarray:
    """Cubic median filter of ``kernel`` voxels (on the 1 mm working grid: millimetres)."""
    kernel = check_median(kernel)
    if kernel == 0:
        return array
    image = sitk.GetImageFromArray(array)
    return sitk.GetArrayFromImage(sitk.Median(image, [kernel // 2] * 3))


def erode_mask(mask: np.ndarray, erosion_mm: float, spacing_ijk) -> np.ndarray:
    """Erode a mask by a physical distance: keep the voxels farther than ``erosion_mm`` from every
    voxel outside it (and from the array's edge), whatever the spacing.

    The same set as a binary erosion by an ellipsoidal ball of that radius, computed with a
    Euclidean distance transform: its cost does not grow with the radius.
    """
    if not erosion_mm or erosion_mm <= 0:
        return mask
    spacing_kji = np.array(spacing_ijk, dtype=float)[::-1]
    if np.all(np.floor(erosion_mm / spacing_kji) == 0):
        return mask
    padded = np.pad(mask.astype(bool), 1)  # beyond the array counts as outside
    distance = ndimage.distance_transform_edt(padded, sampling=spacing_kji)
    return (distance > erosion_mm)[1:-1, 1:-1, 1:-1]


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


def _padded_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The brain's bounding box plus :data:`CROP_MARGIN` voxels (the whole array without a brain)."""
    box = bounding_box(mask)
    if box is None:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(slice(max(b.start - CROP_MARGIN, 0), min(b.stop + CROP_MARGIN, n))
                 for b, n in zip(box, mask.shape))


def working_grid(native_mask: sitk.Image) -> sitk.Image:
    """The 1 mm canonical grid post-processing runs on: the native extent, cropped to the brain."""
    whole = canonical_reference(native_mask, [WORKING_SPACING_MM] * 3)
    brain = sitk.GetArrayFromImage(resample_like(native_mask, whole, is_label=True)) > 0
    box = _padded_box(brain)
    return _region(whole, box)


def _region(image: sitk.Image, box: tuple[slice, ...]) -> sitk.Image:
    """The part of ``image`` inside ``box`` (numpy [k, j, i] slices), with its own origin."""
    return sitk.RegionOfInterest(image, [int(b.stop - b.start) for b in box[::-1]], [int(b.start) for b in box[::-1]])


class PostProcessor:
    """Cached post-processing of one anomaly map.

    ``working_map`` is the raw fused map on the 1 mm canonical working grid (:func:`working_grid`),
    ``native_mask`` the brain mask on the reference input's native grid. Filters run on the working
    grid, so a kernel or an erosion means the same millimetres whatever the acquisition; the map
    carried back onto the native grid (linear interpolation, 0 outside the brain) is the one shown,
    written, evaluated and thresholded.
    """

    def __init__(self, working_map: sitk.Image, native_mask: sitk.Image):
        self.grid = working_map
        working_mask = resample_like(native_mask, working_map, is_label=True)
        self.working_mask = sitk.GetArrayFromImage(working_mask) > 0
        # outside the brain counts as 0 (not anomalous) for the filters
        self.working = np.where(self.working_mask, sitk.GetArrayViewFromImage(working_map), 0.0).astype(np.float32)
        self.reference = native_mask
        self.spacing = native_mask.GetSpacing()
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        mask = sitk.GetArrayViewFromImage(native_mask) > 0
        self.shape = mask.shape
        self.crop = _padded_box(mask)
        self.mask = np.ascontiguousarray(mask[self.crop])  # the native brain, on the crop
        self._native_crop = _region(native_mask, self.crop)
        self._filtered: dict[int, np.ndarray] = {}
        self._working_eroded: dict[float, np.ndarray] = {}
        self._native_eroded: dict[float, np.ndarray] = {}
        self._shown: tuple[int, sitk.Image] | None = None  # the native map of the last kernel asked for

    # ---- the working grid: statistics of the map (thresholds, volume score, display range)
    def filtered(self, median: int) -> np.ndarray:
        """The working-grid map median-filtered with a cubic kernel of ``median`` mm."""
        median = check_median(median)
        if median not in self._filtered:
            self._filtered[median] = median_filter(self.working, median)
        return self._filtered[median]

    def working_brain(self, erosion_mm: float = 0.0) -> np.ndarray:
        key = float(erosion_mm or 0.0)
        if key not in self._working_eroded:
            eroded = erode_mask(self.working_mask, key, self.grid.GetSpacing())
            if key > 0 and not eroded.any():
                raise InputError(f"a brain-mask erosion of {key:g} mm leaves no brain — choose a smaller erosion.")
            self._working_eroded[key] = eroded
        return self._working_eroded[key]

    def brain_scores(self, median: int, erosion_mm: float = 0.0) -> np.ndarray:
        """The filtered map's values inside the (eroded) brain, on the working grid."""
        return self.filtered(median)[self.working_brain(erosion_mm)]

    def otsu(self, median: int, erosion_mm: float = 0.0) -> float:
        """Otsu's threshold over the upper half of the brain's scores.

        Anomalies are the high tail: over all scores Otsu would split dark from bright tissue
        (e.g. CSF from white matter on FLAIR) and flag half the brain.
        """
        scores = self.brain_scores(median, erosion_mm)
        upper = scores[scores > np.median(scores)]
        return otsu_threshold(upper if upper.size else scores)

    def volume_score(self, median: int) -> float:
        return volume_score(self.brain_scores(median), float(np.prod(self.grid.GetSpacing())) / 1000.0)

    # ---- the native grid: what is shown, written and thresholded
    def anomaly_map(self, median: int) -> sitk.Image:
        """The filtered map on the whole native grid (0 outside the brain)."""
        median = check_median(median)
        if self._shown is None or self._shown[0] != median:
            self._shown = None  # let the previous kernel's full-size map go before making the next
            filtered = array_to_image(self.filtered(median), self.grid)
            full = sitk.Image(self.reference.GetSize(), sitk.sitkFloat32)
            full.CopyInformation(self.reference)
            # carried back a slab at a time and pasted in place: a 0.5 mm grid has 10^8 voxels
            first, last = self.crop[0].start, self.crop[0].stop
            for start in range(first, last, PASTE_SLAB):
                slab = (slice(start, min(start + PASTE_SLAB, last)), *self.crop[1:])
                native_brain = _region(self.reference, slab)
                full[tuple(slab[::-1])] = sitk.Mask(resample_like(filtered, native_brain), native_brain)
            self._shown = (median, full)
        return self._shown[1]

    def map(self, median: int) -> np.ndarray:
        """:meth:`anomaly_map` on the native crop, as a read-only view."""
        return sitk.GetArrayViewFromImage(self.anomaly_map(median))[self.crop]

    def brain(self, erosion_mm: float = 0.0) -> np.ndarray:
        """The native brain on the crop, eroded by ``erosion_mm`` (computed on the working grid)."""
        key = float(erosion_mm or 0.0)
        if key == 0.0:
            return self.mask
        if key not in self._native_eroded:
            eroded = array_to_image(self.working_brain(key).astype(np.uint8), self.grid)
            carried = sitk.GetArrayFromImage(resample_like(eroded, self._native_crop, is_label=True)) > 0
            self._native_eroded[key] = self.mask & carried
        return self._native_eroded[key]

    def shown_scores(self, median: int, erosion_mm: float = 0.0) -> np.ndarray:
        """The shown map's values inside the (eroded) brain, on the native grid."""
        return self.map(median)[self.brain(erosion_mm)]

    def segment(self, threshold: float, median: int = 0, min_size_mm3: float = 0.0,
                erosion_mm: float = 0.0) -> Segmentation:
        """Lesions where the shown map (:meth:`anomaly_map`) exceeds ``threshold`` in the brain."""
        scores = self.map(median)
        flagged = (scores > threshold) & self.brain(erosion_mm)
        box = bounding_box(flagged)
        if box is None:
            return Segmentation(labels=np.zeros(self.shape, np.uint8), lesions=[])
        # label only the box around flagged voxels: a few lesions need not cost a whole-brain pass
        labels, count = ndimage.label(flagged[box])
        offset = tuple(c.start + b.start for c, b in zip(self.crop, box))
        lesions, box_labels = self._measure(labels, count, scores[box], min_size_mm3, offset)
        # the smallest type that holds the labels: the full grid can have 10^8 voxels
        full = np.zeros(self.shape, np.min_scalar_type(len(lesions)))
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
        crop_labels = np.zeros(labels.shape, np.min_scalar_type(kept.size))
        crop_labels.ravel()[flat_index] = new_component
        return lesions, crop_labels
