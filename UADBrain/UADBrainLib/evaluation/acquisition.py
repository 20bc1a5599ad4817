"""Scans as other scanners would have acquired them: the same anatomy on another voxel grid.

:func:`simulate_acquisition` resamples an image onto a grid of another spacing over the same
physical extent and orientation, blurring first with each new voxel's slice profile (a Gaussian
whose full width at half maximum is the new voxel size), so a 5 mm slice averages 5 mm of tissue
as a thick 2D slice does, instead of picking every fifth 1 mm slice. Labels are resampled as
partial-volume fractions and kept where at least half the voxel is inside.

:func:`grid_invariance` runs one model on every case at several acquisitions and reports, per
acquisition, the flagged volume and Dice next to those at 1 mm (``uadbrain grids``; the table in
docs/RESULTS.md). The goal (issue 13): flagged volume within ±25 % and Dice within 0.1 of 1 mm.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..cohort import Scan
from ..errors import InputError
from ..inference.options import DetectOptions
from ..metrics import dice

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
ACQUISITIONS = ("1", "0.5", "2", "0.45x0.45x5")  # the grids; the first is the reference
SKULL_STRIPPED_ZERO_FRACTION = 0.3  # a source with more exact zeros than this was skull-stripped


def parse_spacing(text: str) -> tuple[float, float, float]:
    """'1' → (1, 1, 1); '0.45x0.45x5' → (0.45, 0.45, 5): mm along the image's i, j, k axes."""
    try:
        values = [float(part) for part in text.lower().split("x")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(0.1 <= v <= 20 for v in values):
        raise InputError(f"acquisition '{text}' is not a voxel size — give one (1) or three (0.45x0.45x5) "
                         "sizes in mm between 0.1 and 20.")
    return tuple(values)


def acquisition_grid(image: sitk.Image, spacing) -> sitk.Image:
    """An empty grid at ``spacing`` over ``image``'s extent, in its orientation."""
    spacing = np.asarray(spacing, dtype=float)
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    extent = np.asarray(image.GetSize()) * old_spacing
    size = np.maximum(np.round(extent / spacing).astype(int), 1)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    # keep the extent's first corner: the new first voxel centre sits half a new voxel inside it
    corner = np.asarray(image.GetOrigin()) - direction @ (old_spacing / 2)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin([float(v) for v in corner + direction @ (spacing / 2)])
    return grid


def simulate_acquisition(image: sitk.Image, spacing, is_label: bool = False) -> sitk.Image:
    """``image`` on a grid of ``spacing`` (mm along i, j, k) with each voxel's slice profile."""
    grid = acquisition_grid(image, spacing)
    source = sitk.Cast(image > 0, sitk.sitkFloat32) if is_label else sitk.Cast(image, sitk.sitkFloat32)
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    # blur only by what the new voxel adds to the old one's own profile
    sigma = np.sqrt(np.maximum(np.asarray(spacing, float) ** 2 - old_spacing ** 2, 0.0)) * FWHM_TO_SIGMA
    if np.any(sigma > 0):
        source = sitk.SmoothingRecursiveGaussian(source, [float(max(s, 1e-3)) for s in sigma])
    resampled = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    if is_label:
        return sitk.Cast(resampled >= 0.5, sitk.sitkUInt8)
    return resampled


@dataclass
class GridRow:
    case: str
    acquisition: str
    voxels: int
    flagged_ml: float
    truth_ml: float
    dice: float
    false_positive_ml: float
    lesions: int
    seconds: float


def run_acquisition(scan: Scan, contrasts, spacing, model, options: DetectOptions, acquisition: str) -> GridRow:
    """One case at one acquisition: its inputs, brain mask and truth simulated, then ``detect``."""
    from ..inference.pipeline import detect

    images = {}
    for contrast in contrasts:
        source = sitk.ReadImage(str(scan.images[contrast]), sitk.sitkFloat32)
        acquired = simulate_acquisition(source, spacing)
        if float(np.mean(sitk.GetArrayViewFromImage(source) == 0)) > SKULL_STRIPPED_ZERO_FRACTION:
            # a skull-stripped scan is stripped after acquisition: zero outside its mask on the new grid
            stripped = simulate_acquisition(source != 0, spacing, is_label=True)
            acquired = sitk.Mask(acquired, stripped)
        images[contrast] = acquired
    mask = simulate_acquisition(sitk.ReadImage(str(scan.mask)), spacing, is_label=True) if scan.mask else None
    reference = next(iter(images.values()))
    # a healthy scan has no ground truth: everything it flags is a false positive
    truth = (sitk.GetArrayFromImage(simulate_acquisition(sitk.ReadImage(str(scan.truth)), spacing, True)) > 0
             if scan.truth else np.zeros(reference.GetSize()[::-1], bool))
    started = time.perf_counter()
    result = detect(images, model=model, options=options, mask=mask)
    seconds = time.perf_counter() - started
    flagged = result.labels_array > 0
    voxel_ml = float(np.prod(result.anomaly_map.GetSpacing())) / 1000.0
    return GridRow(case=scan.id, acquisition=acquisition, voxels=int(flagged.size),
                   flagged_ml=float(flagged.sum() * voxel_ml), truth_ml=float(truth.sum() * voxel_ml),
                   dice=dice(flagged, truth) if scan.truth else float("nan"), false_positive_ml=float((flagged & ~truth).sum() * voxel_ml),
                   lesions=result.lesion_count, seconds=seconds)


def grid_invariance(scans: list[Scan], contrasts, model, acquisitions=ACQUISITIONS,
                    options: DetectOptions | None = None, progress=None) -> list[GridRow]:
    """Every scan at every acquisition (the first is the reference the others are compared to)."""
    options = options or DetectOptions()
    rows = []
    for scan in scans:
        for acquisition in acquisitions:
            rows.append(run_acquisition(scan, contrasts, parse_spacing(acquisition), model, options, acquisition))
            if progress:
                progress(rows[-1])
    return rows


def comparison_table(rows: list[GridRow]) -> str:
    """Markdown: per acquisition, pooled flagged volume and mean Dice, and the worst case's deviation
    from the reference acquisition (the first of each case)."""
    reference = {}
    for row in rows:
        reference.setdefault(row.case, row)
    lines = ["| acquisition | flagged mL (sum) | false-positive mL (sum) | mean Dice | worst volume ratio "
             "to ref. | worst Dice change | s per scan |", "|---|---|---|---|---|---|---|"]
    for acquisition in dict.fromkeys(row.acquisition for row in rows):
        group = [row for row in rows if row.acquisition == acquisition]
        ratios = [row.flagged_ml / reference[row.case].flagged_ml if reference[row.case].flagged_ml else
                  float("inf") if row.flagged_ml else 1.0 for row in group]
        changes = [row.dice - reference[row.case].dice for row in group if not math.isnan(row.dice)]
        worst_ratio = max(ratios, key=lambda r: abs(math.log(r)) if 0 < r < float("inf") else float("inf"))
        worst_change = f"{min(changes, key=lambda c: -abs(c)):+.3f}" if changes else "n/a"
        dices = [row.dice for row in group if not math.isnan(row.dice)]
        mean_dice = f"{np.mean(dices):.3f}" if dices else "n/a"
        lines.append(f"| {acquisition} mm | {sum(r.flagged_ml for r in group):.1f} | "
                     f"{sum(r.false_positive_ml for r in group):.1f} | {mean_dice} | "
                     f"{worst_ratio:.2f} | {worst_change} | {np.mean([r.seconds for r in group]):.1f} |")
    return "\n".join(lines)
