"""Writing a result to a folder: maps, segmentation, lesion table, report and an overview picture."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..geometry import canonical_spacing, resample_like, to_canonical
from ..io import write_image
from .result import Result

DICOM_SEG_FILE = "segmentation.dcm"  # written only when asked for (inference/dicom_seg.py)
OUTPUT_FILES = ("anomaly_map.nii.gz", "segmentation.nii.gz", "lesions.csv", "report.json", "overview.png")
LESION_COLUMNS = ("label", "voxels", "volume_ml", "max_score", "mean_score",
                  "centroid_ras_x", "centroid_ras_y", "centroid_ras_z",
                  "centroid_ijk_i", "centroid_ijk_j", "centroid_ijk_k",
                  "bbox_ijk_min_i", "bbox_ijk_min_j", "bbox_ijk_min_k",
                  "bbox_ijk_max_i", "bbox_ijk_max_j", "bbox_ijk_max_k")


def write_lesion_table(result: Result, path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LESION_COLUMNS)
        writer.writeheader()
        for lesion in result.lesions:
            writer.writerow(lesion.as_row())


def nearest_existing(path) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor."""
    path = Path(path).absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def can_create_in(folder: Path) -> bool:
    """Whether files and folders can be made in the existing folder ``folder``."""
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def check_output_folder(out_dir, inputs=(), also_written=()) -> None:
    """Refuse, before any work is done, an output folder that cannot be written or whose outputs
    would overwrite an input (``inputs``: paths; ``also_written``: file names beyond OUTPUT_FILES)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder '{out_dir}' is a file — give a folder (it is created if needed).")
    existing = nearest_existing(out_dir)
    if not existing.is_dir():
        raise InputError(f"output folder '{out_dir}' lies inside the file '{existing}' — give a folder.")
    if not can_create_in(existing):
        raise InputError(f"output folder '{out_dir}' cannot be written (permission denied on '{existing}') — "
                         "choose another --out.")
    written = set(OUTPUT_FILES) | set(also_written)
    for path in inputs:
        path = Path(path)
        if path.name in written and path.absolute().parent.resolve() == out_dir.absolute().resolve():
            raise InputError(f"the input '{path}' has the name of an output in --out and would be overwritten "
                             "— choose another output folder.")


def write_result(result: Result, out_dir, overview: bool = True, extra_report: dict | None = None,
                 replace_folder: bool = False, dicom_seg_series=None) -> list[Path]:
    """Write the standard output files into ``out_dir``; all of them appear, or none.

    Files are written into a staging folder beside ``out_dir`` first. A missing or empty
    ``out_dir`` is then replaced by the staging folder in one rename; so is an ``out_dir`` that
    belongs to this scan alone (``replace_folder``: a batch run's per-scan folder, whose earlier
    outputs are swapped out whole, never mixed with new ones). In a folder that holds other files
    the outputs are moved in one by one, replacing files of the same names and touching nothing
    else. A failure, or a stop by the user, leaves no partial output. ``dicom_seg_series``: a DICOM
    series folder that a DICOM SEG of the segmentation (segmentation.dcm) references.
    """
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    try:
        write_image(result.anomaly_map, staging / "anomaly_map.nii.gz")
        write_image(result.segmentation, staging / "segmentation.nii.gz")
        write_lesion_table(result, staging / "lesions.csv")
        report = {**result.summary(), **(extra_report or {})}
        if dicom_seg_series is not None:
            from .dicom_seg import write_dicom_seg

            try:
                write_dicom_seg(result.segmentation, dicom_seg_series, staging / DICOM_SEG_FILE, result.model_name,
                                result.report.get("model_version"), result.lesion_count)
            except InputError as error:  # the maps stand without it; the report says why it is missing
                report["dicom_seg"] = f"not written: {error}"
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if overview:
            render_overview(result, staging / "overview.png")
        names = sorted(path.name for path in staging.iterdir())
        if replace_folder or not out_dir.exists() or all(p.name in (*OUTPUT_FILES, DICOM_SEG_FILE)
                                                            for p in out_dir.iterdir()):
            _swap_in(staging, out_dir)
        else:
            for name in names:
                (staging / name).replace(out_dir / name)
        return [out_dir / name for name in names]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.uadbrain-partial-"


def remove_stale_staging(out_dir: Path) -> None:
    """Staging folders a killed run left beside ``out_dir`` (never outputs: they were not moved in)."""
    if out_dir.parent.is_dir():
        for stale in out_dir.parent.glob(_staging_prefix(out_dir) + "*"):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put the staging folder in ``out_dir``'s place: an existing folder is moved aside first and
    deleted after, so the folder holds the old outputs or the new ones, never a mix."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    previous = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    previous.rmdir()
    out_dir.rename(previous)
    try:
        staging.rename(out_dir)
    except OSError:
        previous.rename(out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


OVERVIEW_SPACING_MM = 1.0
SCORE_UNITS = "−log10 healthy exceedance"  # calibrated: 2 = 1 healthy voxel in 100 scores as high
# (left, right, top, bottom) of each displayed plane, radiological convention (_display_planes)
PLANE_SIDES = (("R", "L", "A", "P"), ("R", "L", "S", "I"), ("A", "P", "S", "I"))


def _display_planes(volume: np.ndarray, index_kji) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of a canonical [S, P, L] array, radiological display."""
    k, j, i = index_kji
    axial = volume[k]  # rows: anterior → posterior, columns: right → left
    coronal = volume[::-1, j, :]  # rows: superior → inferior
    sagittal = volume[::-1, :, i]  # rows: superior → inferior, columns: anterior → posterior
    return [axial, coronal, sagittal]


def _peak_of_first_lesion(result: Result, picture: sitk.Image) -> tuple[int, int, int]:
    """The most anomalous lesion's peak (its centroid can fall outside an irregular lesion), as an
    index ``[k, j, i]`` of ``picture``'s grid; found on the native grid within the lesion's box."""
    lesion = result.lesions[0]
    box = tuple(slice(low, high + 1) for low, high in zip(lesion.bbox_ijk_min[::-1], lesion.bbox_ijk_max[::-1]))
    scores = np.where(result.labels_array[box] == lesion.label, sitk.GetArrayViewFromImage(result.anomaly_map)[box],
                      -np.inf)
    peak = np.unravel_index(np.argmax(scores), scores.shape)
    index_ijk = [int(p + b.start) for p, b in zip(peak, box)][::-1]
    point = result.anomaly_map.TransformIndexToPhysicalPoint(index_ijk)
    inside = np.clip(picture.TransformPhysicalPointToIndex(point), 0, np.array(picture.GetSize()) - 1)
    return tuple(int(v) for v in inside[::-1])


def render_overview(result: Result, path) -> None:
    """Three orthogonal slices through the most anomalous lesion's peak with the map overlaid, and
    a histogram of brain scores with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # at most 1 mm per voxel: a picture needs no more, and a 0.5 mm volume would cost 8 times the memory
    spacing = np.maximum(canonical_spacing(result.anomaly_map), OVERVIEW_SPACING_MM)
    anomaly = to_canonical(result.anomaly_map, spacing)
    # views, not copies, of the pictures' images (kept alive by these names)
    label_image = resample_like(result.segmentation, anomaly, is_label=True)
    labels = sitk.GetArrayViewFromImage(label_image)
    brain = sitk.GetArrayViewFromImage(resample_like(result.brain_mask, anomaly, is_label=True)) > 0
    scores = sitk.GetArrayViewFromImage(anomaly)
    reference = resample_like(result.inputs[result.report.get("reference_contrast", next(iter(result.inputs)))], anomaly)
    image = sitk.GetArrayViewFromImage(reference)
    centre = _peak_of_first_lesion(result, anomaly) if result.lesions else \
        np.unravel_index(np.argmax(np.where(brain, scores, -np.inf)), scores.shape)
    spacing_lps = anomaly.GetSpacing()  # canonical: (L, P, S)
    aspects = [spacing_lps[1] / spacing_lps[0], spacing_lps[2] / spacing_lps[0], spacing_lps[2] / spacing_lps[1]]

    inside = image[brain] if brain.any() else image.ravel()
    low, high = np.percentile(inside, [1, 99.5])
    figure, axes = plt.subplots(1, 5, figsize=(17, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 0.05, 1.2]})
    overlay_max = max(float(np.percentile(scores[brain], 99.99)) if brain.any() else 1.0, result.threshold * 1.5, 1e-6)
    units = SCORE_UNITS if result.calibration else "model units"
    point = anomaly.TransformIndexToPhysicalPoint([int(c) for c in centre[::-1]])
    ras = (-point[0], -point[1], point[2])
    overlay = None
    for axis, title, plane_image, plane_score, plane_label, aspect, sides in zip(
            axes[:3], (f"axial, S {ras[2]:.0f} mm", f"coronal, A {ras[1]:.0f} mm", f"sagittal, R {ras[0]:.0f} mm"),
            _display_planes(image, centre), _display_planes(scores, centre), _display_planes(labels, centre),
            aspects, PLANE_SIDES):
        axis.imshow(plane_image, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        shown = np.ma.masked_less_equal(plane_score, result.threshold)
        overlay = axis.imshow(shown, cmap="hot", vmin=result.threshold, vmax=overlay_max, alpha=0.7,
                              aspect=aspect, interpolation="nearest")
        if plane_label.any():
            axis.contour(plane_label > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        for text, position, alignment in zip(sides, ((0.01, 0.5), (0.99, 0.5), (0.5, 0.99), (0.5, 0.01)),
                                             (("left", "center"), ("right", "center"), ("center", "top"),
                                              ("center", "bottom"))):
            axis.text(*position, text, transform=axis.transAxes, color="yellow", fontsize=10, fontweight="bold",
                      ha=alignment[0], va=alignment[1])
        axis.set_title(title)
        axis.axis("off")
    figure.colorbar(overlay, cax=axes[3], label=f"anomaly score ({units})")
    brain_scores = result.postprocessor.shown_scores(result.median, result.erosion_mm)
    hist_axis = axes[4]
    counts, edges = np.histogram(brain_scores, bins=200)  # in blocks: matplotlib's hist copies the scores
    del brain_scores
    hist_axis.stairs(counts, edges, fill=True, color="0.4")
    hist_axis.set_yscale("log")
    hist_axis.axvline(result.threshold, color="red", label=f"threshold {result.threshold:.3g} ({result.threshold_method})")
    hist_axis.set_xlabel("anomaly score of the brain voxels, as shown")
    hist_axis.set_ylabel("voxels")
    hist_axis.legend(loc="upper right", fontsize=8)
    listed = "\n".join(f"{lesion.label}: {lesion.volume_ml:.2f} mL at RAS ({lesion.centroid_ras[0]:.0f}, "
                        f"{lesion.centroid_ras[1]:.0f}, {lesion.centroid_ras[2]:.0f})" for lesion in result.lesions[:5])
    if listed:
        hist_axis.text(0.98, 0.70, listed, transform=hist_axis.transAxes, ha="right", va="top", fontsize=7,
                       family="monospace")
    percentile = ("" if result.volume_percentile is None
                  else f", above {result.volume_percentile:.0%} of healthy calibration brains")
    figure.suptitle(f"{result.model_name}: {result.lesion_count} lesion(s), {result.flagged_volume_ml:.2f} mL flagged"
                    f" — volume score {result.volume_score:.3g} (mean score of the most anomalous 1 mL{percentile})")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
