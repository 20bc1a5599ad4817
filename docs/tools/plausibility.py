"""Margins of the input check's plausibility measurements (``inference/input_check.implausible``).

Every real scan in ``../shared/data`` (eval, eval_nogt, the raw IXI heads) is prepared as ``detect``
prepares it (validated, brain mask — the case's own, else ``auto`` —, the 1 mm model grid) at its
own grid, as a 0.45×0.45×5 mm acquisition (slice profile simulated), and that acquisition with
clinical noise (Gaussian, σ = 10 % and 20 % of the brain's median at the thick grid's voxels). For
each: the spatial structure (the smallest correlation of brain voxels 3 mm apart) and the
share of brain voxels darker than the background's median. The same is measured for images that
must be refused: each scan's intensities inverted, and pure noise volumes on the same grids.


    python docs/tools/plausibility.py [--data ../shared/data] [--out docs/results/plausibility]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "UADBrain"))

from UADBrainLib.cohort import find_cases, read_scan_folder  # noqa: E402
from UADBrainLib.errors import InputError  # noqa: E402
from UADBrainLib.evaluation.acquisition import simulate_acquisition  # noqa: E402
from UADBrainLib.inference.input_check import (MAX_BRAIN_DARKER, MIN_STRUCTURE,  # noqa: E402
                                               brain_darker_than_background, spatial_structure)
from UADBrainLib.inference.preparation import load_scan, prepare_scan  # noqa: E402

THICK = (0.45, 0.45, 5.0)


def real_images(data: Path):
    """(name, image path, mask path or None) of every real scan's every contrast."""
    for dataset, scans in find_cases(data / "eval").items():
        for scan in scans:
            for contrast, path in scan.images.items():
                yield f"{dataset}/{scan.id}/{contrast}", path, scan.mask
    for folder in sorted((data / "eval_nogt").iterdir()):
        scan = read_scan_folder(folder)
        for contrast, path in scan.images.items():
            yield f"eval_nogt/{scan.id}/{contrast}", path, scan.mask
    for path in sorted((data / "healthy" / "ixi_small").glob("*.nii.gz")):
        yield f"ixi/{path.name.split('_')[0]}/t1", path, None


def measure(image: sitk.Image, mask: sitk.Image | None) -> dict:
    try:
        scan = prepare_scan(*load_scan({"flair": image}, mask), [1.0] * 3)
    except InputError as error:  # refused before the check (e.g. a "brain" of 3 L): recorded as such
        return {"refused_before": str(error)}
    array = sitk.GetArrayViewFromImage(scan.images["flair"])
    spacing = scan.grid.GetSpacing()
    darker = brain_darker_than_background(array, scan.mask, spacing)
    return {"structure": round(spatial_structure(array, scan.mask, spacing), 3),
            "brain_darker_than_background": None if darker is None else round(darker, 4),
            "mask": scan.mask_method}


def variants(image: sitk.Image, mask: sitk.Image | None, rng):
    yield "native", image, mask
    thick = simulate_acquisition(image, THICK)
    thick_mask = None if mask is None else simulate_acquisition(mask, THICK, is_label=True)
    yield "0.45x0.45x5", thick, thick_mask
    values = sitk.GetArrayViewFromImage(thick)
    low, level = np.percentile(values, [1, 90])  # the air floor and a typical brain intensity above it
    for sigma in (0.1, 0.2):
        noisy = values + rng.normal(0, sigma * (level - low), values.shape)
        noisy = sitk.GetImageFromArray((np.abs(noisy) if low >= 0 else noisy).astype(np.float32))
        noisy.CopyInformation(thick)
        yield f"0.45x0.45x5 noise {sigma:.0%}", noisy, thick_mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/plausibility"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = args.out / "plausibility.jsonl"  # rows as they come: a stopped run goes on where it was
    rows = [json.loads(line) for line in progress.read_text(encoding="utf-8").splitlines()] if progress.exists() else []
    done = {(r["image"], r["variant"], r["kind"]) for r in rows}

    def record(row: dict) -> None:
        rows.append(row)
        with open(progress, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for name, path, mask_path in real_images(args.data):
        image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
        mask = None if mask_path is None else sitk.ReadImage(str(mask_path))
        for variant, volume, volume_mask in variants(image, mask, rng):
            if (name, variant, "real") not in done:
                record({"image": name, "variant": variant, "kind": "real", **measure(volume, volume_mask)})
            if variant not in ("native", "0.45x0.45x5"):
                continue
            if (name, variant, "inverted") not in done:
                values = sitk.GetArrayViewFromImage(volume)
                inverted = float(values.max()) + float(values.min()) - volume  # the range reversed
                record({"image": name, "variant": variant, "kind": "inverted", **measure(inverted, volume_mask)})
            if (name, variant, "noise") not in done:
                noise = sitk.GetImageFromArray(np.abs(rng.normal(100, 30, sitk.GetArrayViewFromImage(volume).shape))
                                               .astype(np.float32))
                noise.CopyInformation(volume)
                record({"image": name, "variant": variant, "kind": "noise", **measure(noise, volume_mask)})
    (args.out / "plausibility.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    for kind in ("real", "inverted", "noise"):
        chosen = [r for r in rows if r["kind"] == kind]
        measured = [r for r in chosen if "structure" in r]
        structure = [r["structure"] for r in measured]
        darker = [r["brain_darker_than_background"] for r in measured if r["brain_darker_than_background"] is not None]
        caught = sum("refused_before" in r or r["structure"] < MIN_STRUCTURE
                     or (r["brain_darker_than_background"] or 0) >= MAX_BRAIN_DARKER for r in chosen)
        print(f"{kind}: {len(chosen)} images, {caught} refused ({len(chosen) - len(measured)} before the check); "
              f"structure {min(structure):.3f}–{max(structure):.3f} (refused below {MIN_STRUCTURE}); brain darker "
              f"than the background {min(darker):.3f}–{max(darker):.3f} ({len(darker)} with a background; refused "
              f"from {MAX_BRAIN_DARKER})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
