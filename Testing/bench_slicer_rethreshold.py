"""Latency of the Slicer panel's live threshold slider on a 256³ volume (prints figures).

    python Testing/bench_slicer_rethreshold.py [--size 256] [--steps 20]

Runs the module Logic on real MRML (slicer-core) with the thresholding model on a synthetic
256³ 1 mm brain with lesions, then moves the threshold like a slider and times
``UADBrainMRMLLogic.rethreshold`` end to end (engine re-segmentation, segment update, lesion
table, overlay window), with a breakdown. Rendering is not included: desktop Slicer redraws the
slice views after this returns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "UADBrain"))

import slicer  # noqa: E402

from UADBrainMRML.display import update_anomaly_window  # noqa: E402
from UADBrainMRML.lesiontable import fill_table  # noqa: E402
from UADBrainMRML.logic import UADBrainMRMLLogic  # noqa: E402
from UADBrainMRML.outputs import update_segmentation  # noqa: E402
from UADBrainMRML.volumes import add_volume_from_image  # noqa: E402


def synthetic_brain(size: int, seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    axis = np.arange(size, dtype=np.float32) - size / 2
    k, j, i = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    radius = size * 0.28  # about 1.6 L: a plausible brain volume
    brain = (i / radius) ** 2 + (j / (radius * 1.15)) ** 2 + (k / (radius * 0.9)) ** 2 < 1
    array = np.where(brain, 100 + rng.normal(0, 4, brain.shape), 0).astype(np.float32)
    for _ in range(12):
        centre = rng.uniform(-0.5, 0.5, 3) * radius
        lesion_radius = rng.uniform(2, 9) * size / 256
        blob = (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 < lesion_radius ** 2
        array[blob & brain] += rng.uniform(25, 70)
    image = sitk.GetImageFromArray(array)
    image.SetOrigin((-size / 2, -size / 2, -size / 2))
    return image


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    scene = slicer.vtkMRMLScene()
    flair = add_volume_from_image(scene, synthetic_brain(args.size), "FLAIR")
    logic = UADBrainMRMLLogic(scene)
    start = time.perf_counter()
    outputs = logic.process({"flair": flair}, device="cpu")
    print(f"volume {args.size}³, {outputs.result.report['brain_volume_ml']:.0f} mL brain; first run "
          f"{time.perf_counter() - start:.1f} s, threshold {outputs.result.threshold:.2f} "
          f"({outputs.result.threshold_method}), {outputs.result.lesion_count} lesions")

    base = outputs.result.threshold
    thresholds = [float(value) for value in np.linspace(base * 0.6, base * 2.0, args.steps)]
    total = [timed(logic.rethreshold, outputs, threshold=value) for value in thresholds]
    parts = {"engine": [], "segment": [], "table": [], "overlay": []}
    for value in thresholds:  # the same steps again, one part at a time
        start = time.perf_counter()
        outputs.result = outputs.result.rethreshold(threshold=value)
        parts["engine"].append((time.perf_counter() - start) * 1000.0)
        parts["segment"].append(timed(update_segmentation, outputs))
        parts["table"].append(timed(fill_table, outputs.tableNode, outputs.result.lesions))
        parts["overlay"].append(timed(update_anomaly_window, outputs.anomalyMapNode, outputs.result.threshold))

    def describe(values):
        return f"median {statistics.median(values):6.1f} ms, max {max(values):6.1f} ms"

    print(f"slider, {args.steps} threshold steps (median kernel {outputs.result.median}, cached):")
    print(f"  end to end       {describe(total)}")
    for part, values in parts.items():
        print(f"    {part:<14} {describe(values)}")
    median_change = [timed(logic.rethreshold, outputs, median=kernel) for kernel in (3, 0, 7, 5)]
    print("median kernel change (first use filters the map once): "
          + ", ".join(f"{value:.0f} ms" for value in median_change))
    print(f"lesions at the last step: {outputs.result.lesion_count}")


if __name__ == "__main__":
    main()
