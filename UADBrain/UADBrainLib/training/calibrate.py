"""Healthy calibration of a model bundle (``uadbrain calibrate``; also the last step of training).

Held-out healthy volumes — synthetic brains from label maps the model was not trained on, or a
folder of real healthy scans — run through the very pipeline users run (``pipeline.detect``, raw
channel scores), and ``calibration.compute_calibration`` turns their voxel scores into the
bundle's ``calibration`` block: the calibrated threshold then means "this false-positive rate on
healthy brains".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..bundle import Bundle, find_bundle
from ..errors import InputError
from ..inference.calibration import compute_calibration
from .data import FolderSource, HealthyCase, SyntheticSource

DEFAULT_VOLUMES = 8
CALIBRATION_SEED = 1_000_000  # calibration draws never coincide with training draws


def calibrate_model(model, cases: Iterable[HealthyCase], device: str = "cpu", description: str = "",
                    progress=None) -> tuple[dict, dict]:
    """The calibration block for ``model`` (name, folder, Bundle or loaded model) from healthy cases.

    Returns ``(calibration, measurements)``: the block for ``metadata["calibration"]``, and the
    number of cases and mean ``detect`` time per case (the bundle's expected run time).
    """
    from ..inference.models import AnomalyModel, load_model
    from ..inference.options import DetectOptions
    from ..inference.pipeline import detect_raw_scores

    if not isinstance(model, AnomalyModel):
        bundle = model if isinstance(model, Bundle) else find_bundle(model)
        model = load_model(bundle, device)
    bundle = model.bundle
    # every channel is scored, lead contrasts or not: each needs its own table
    maps_per_case, channels, seconds = [], [], []
    for case in cases:
        started = time.perf_counter()
        # an age-conditioned model is calibrated on brains of many ages, each scored at its own
        options = DetectOptions(device=device, age=case.age)
        result = detect_raw_scores(case.images, model=model, options=options, mask=case.mask)
        seconds.append(time.perf_counter() - started)
        # on the working grid (cropped to the brain), where detect filters and thresholds its statistics
        maps = {name: sitk.GetArrayFromImage(image) for name, image in result.channel_maps.items()}
        grid = result.postprocessor.grid
        maps_per_case.append((maps, result.postprocessor.working_mask, float(np.prod(grid.GetSpacing())) / 1000.0))
        channels += [name for name in maps if name not in channels]
        if progress:
            progress(case.name)
    if not maps_per_case:
        raise InputError("no healthy volume to calibrate on — give at least one.")
    calibration = compute_calibration(maps_per_case, channels, bundle.required_contrasts,
                                      description=description, rule=bundle.contrast_fusion,
                                      lead=bundle.lead_contrasts)
    return calibration, {"seconds_per_case": float(np.mean(seconds)), "cases": len(maps_per_case)}


def synthetic_cases(label_maps: list, contrasts: list[str], count: int, spacing: float = 1.0,
                    seed: int = CALIBRATION_SEED, ages: tuple[float, float] | None = None
                    ) -> tuple[Iterable[HealthyCase], str]:
    """Healthy synthetic cases from the calibration split of the label maps (of ``ages`` years,
    when given), and their description."""
    source = SyntheticSource(label_maps, contrasts, spacing, "none", split="calibration", ages=ages)
    description = (f"{count} {source.describe()} (held out from training), {spacing:g} mm, "
                   f"seeds {seed}-{seed + count - 1}; UADBrain {__version__}")
    return (source.healthy_case(seed + i, spacing) for i in range(count)), description


def folder_cases(folder, contrasts: list[str], count: int | None = None,
                 ages: tuple[float, float] | None = None) -> tuple[Iterable[HealthyCase], str]:
    """Healthy real cases: the calibration split of a folder of healthy scans (with ``ages``: of
    the subjects whose age is known and in that range, each case carrying it)."""
    source = FolderSource(folder, contrasts, {}, split="calibration", ages=ages)
    count = len(source.subjects) if count is None else min(count, len(source.subjects))
    description = f"{count} real healthy subject(s) from {Path(folder).name}; UADBrain {__version__}"
    return (source.healthy_case(i) for i in range(count)), description


def default_label_maps() -> list:
    """The label maps ``--data synthetic`` uses when none are given: the bundled example's."""
    try:
        from ..synthesis.example import example_label_map_paths
    except ImportError:
        return []
    return list(example_label_map_paths())


def resolve_label_maps(folder) -> list:
    if folder is None:
        maps = default_label_maps()
        if not maps:
            raise InputError("no label maps to synthesise healthy brains from — give --label-maps "
                             "FOLDER (SynthSeg/FreeSurfer-style NIfTI label maps).")
        return maps
    from ..synthesis.brains import find_label_maps

    maps = find_label_maps(folder)
    if not maps:
        raise InputError(f"no label maps (NIfTI files) in '{folder}' — give a folder of "
                         "SynthSeg/FreeSurfer-style label maps.")
    return maps
