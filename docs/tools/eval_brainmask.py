"""Compare the brain extractors side by side, in one run, on what the repository can reach.

- **Synthetic heads with known masks**, from the two label maps the learned model never trained on:
  T1, T1c, T2 and FLAIR, each as a routine 1 mm head, an atrophied head (ventricles grown 3-6 mm,
  cortex thinned 0.5-1.5 mm) and a thick-slice stack (re-acquired at 0.9 x 0.9 x 5 mm with its slice
  profile), stored in six orientations: Dice and mean surface distance on the input's grid.
- **The two raw IXI T1 heads** (no reference mask): brain volume, agreement with the other
  extractors, the same head re-acquired at 2 x 2 x 5 mm, and an overlay picture per extractor.
- **Seconds per head and peak memory**: each extractor runs in its own process (2 threads).

Run from the repository root with the data at ../shared/data (figures in docs/RESULTS.md)::

    python docs/tools/eval_brainmask.py --methods learned,deepbet,hd-bet-fast,atlas \
        --json docs/results/brainmask/brainmask.json --look docs/results/brainmask
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ORIENTATIONS = ["LPS", "RAS", "LIP", "PIR", "ASL", "RPI"]
CONTRASTS = ("t1", "t1c", "t2", "flair")
VARIANTS = ("routine", "atrophy", "thick")
THICK_SPACING = (0.9, 0.9, 5.0)
IXI_THICK_SPACING = (2.0, 2.0, 5.0)


def arr(image):
    return sitk.GetArrayFromImage(image) > 0


def write_synthetic_cases(folder: Path, per_variant: int, contrasts, variants, spacing: float) -> list[dict]:
    from UADBrainLib.evaluation.acquisition import simulate_acquisition
    from UADBrainLib.synthesis.brains import SynthesisConfig, Synthesizer
    from UADBrainLib.training.brainmask import SYNTHESIS_OVERRIDES, split_label_maps

    _, held_out = split_label_maps(DATA / "label_maps" / "synthseg", 2)
    routine = {**SYNTHESIS_OVERRIDES, "thick_slice_probability": 0.0}
    configs = {"routine": SynthesisConfig(**routine), "thick": SynthesisConfig(**routine),
               "atrophy": SynthesisConfig(**{**routine, "ventricle_growth_mm": (3.0, 6.0),
                                             "cortical_atrophy_mm": (0.5, 1.5)})}
    rng = np.random.default_rng(777)
    cases = []
    for variant in variants:
        synthesizer = Synthesizer(held_out, configs[variant])
        for contrast in contrasts:
            for n in range(per_variant):
                head = synthesizer.sample(rng, contrasts=(contrast,), spacing=spacing, skull_strip=False,
                                          field_of_view_mm=[float(rng.choice([192, 224, 256])) for _ in range(3)])
                image, truth = head.image(contrast), head.mask_image()
                if variant == "thick":
                    image = simulate_acquisition(image, THICK_SPACING)
                    truth = simulate_acquisition(truth, THICK_SPACING, is_label=True)
                orientation = ORIENTATIONS[len(cases) % len(ORIENTATIONS)]
                name = f"{variant}_{contrast}_{n}_{orientation}"
                sitk.WriteImage(sitk.DICOMOrient(image, orientation), str(folder / f"{name}.nii.gz"))
                sitk.WriteImage(sitk.DICOMOrient(truth, orientation), str(folder / f"{name}_truth.nii.gz"))
                cases.append({"name": name, "set": f"synthetic {variant}", "contrast": contrast,
                              "image": str(folder / f"{name}.nii.gz"),
                              "truth": str(folder / f"{name}_truth.nii.gz")})
    return cases


def write_ixi_cases(folder: Path) -> list[dict]:
    from UADBrainLib.evaluation.acquisition import simulate_acquisition

    cases = []
    for path in sorted((DATA / "healthy" / "ixi_small").glob("*.nii.gz")):
        name = path.name[:6]
        cases.append({"name": name, "set": "IXI raw T1, 2 mm", "contrast": "t1", "image": str(path)})
        thick = folder / f"{name}_thick.nii.gz"
        sitk.WriteImage(simulate_acquisition(sitk.ReadImage(str(path)), IXI_THICK_SPACING), str(thick))
        cases.append({"name": f"{name}_thick", "set": "IXI raw T1, 2x2x5 mm", "contrast": "t1",
                      "image": str(thick)})
    return cases


def run_worker(method: str, cases: list[dict], masks: Path, look: Path | None) -> dict:
    """Every case through one extractor (this process): per-case rows and the peak memory."""
    import torch

    from UADBrainLib.cli.brainmask import render_mask_overlay
    from UADBrainLib.inference.brain_extraction import extract
    from UADBrainLib.training.brainmask import dice, mean_surface_distance_mm

    torch.set_num_threads(2)
    rows = []
    for case in cases:
        image = sitk.ReadImage(case["image"])
        started = time.perf_counter()
        mask, _ = extract(image, method)
        seconds = time.perf_counter() - started
        sitk.WriteImage(mask, str(masks / f"{case['name']}_{method}.nii.gz"))
        m = arr(mask)
        row = {"case": case["name"], "set": case["set"], "contrast": case["contrast"], "method": method,
               "seconds": round(seconds, 2), "volume_ml": float(m.sum() * np.prod(image.GetSpacing()) / 1000)}
        if "truth" in case:
            truth = arr(sitk.ReadImage(case["truth"]))
            row["dice"] = dice(m, truth)
            row["msd_mm"] = mean_surface_distance_mm(m, truth, image.GetSpacing()[::-1])
        elif look is not None:
            render_mask_overlay(image, mask, look / f"{case['name']}_{method}.png",
                                f"{case['name']}: {method}, {row['volume_ml']:.0f} mL")
        rows.append(row)
        print(json.dumps(row), flush=True)
    # VmHWM, not ru_maxrss: a child process inherits its parent's ru_maxrss, not its memory
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    return {"rows": rows, "peak_rss_mb": peak_kb / 1024}


def agreement(rows: list[dict], masks: Path, methods: list[str]) -> None:
    """For cases without a reference: Dice of each extractor with each other one."""
    from UADBrainLib.training.brainmask import dice

    for row in rows:
        if "dice" in row:
            continue
        mine = arr(sitk.ReadImage(str(masks / f"{row['case']}_{row['method']}.nii.gz")))
        for other in methods:
            if other != row["method"]:
                theirs = arr(sitk.ReadImage(str(masks / f"{row['case']}_{other}.nii.gz")))
                row[f"dice_vs_{other}"] = dice(mine, theirs)


def summary_table(rows: list[dict], memory: dict, methods: list[str]) -> str:
    sets = list(dict.fromkeys(r["set"] for r in rows if "dice" in r))
    header = ["extractor"] + [f"{s} Dice mean (min)" for s in sets] + \
             ["synthetic MSD mm", "s / head", "peak RSS MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [method]
        for s in sets:
            d = [r["dice"] for r in mine if r["set"] == s]
            cells.append(f"{np.mean(d):.3f} ({np.min(d):.3f})")
        cells.append(f"{np.mean([r['msd_mm'] for r in mine if 'msd_mm' in r]):.2f}")
        cells.append(f"{np.mean([r['seconds'] for r in mine]):.1f}")
        cells.append(f"{memory[method]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    by_contrast = ["", "| extractor | " + " | ".join(f"{c} Dice mean (min)" for c in CONTRASTS) + " |",
                   "|" + "---|" * (len(CONTRASTS) + 1)]
    for method in methods:
        cells = [method]
        for contrast in CONTRASTS:
            d = [r["dice"] for r in rows if r["method"] == method and r["contrast"] == contrast and "dice" in r]
            cells.append(f"{np.mean(d):.3f} ({np.min(d):.3f})" if d else "–")
        by_contrast.append("| " + " | ".join(cells) + " |")
    raw = ["", "| head | " + " | ".join(f"{m} mL" for m in methods) + " | " +
           " | ".join(f"Dice {a} vs {b}" for i, a in enumerate(methods) for b in methods[i + 1:]) + " |"]
    raw.append("|" + "---|" * (1 + len(methods) + len(methods) * (len(methods) - 1) // 2))
    for case in dict.fromkeys(r["case"] for r in rows if "dice" not in r):
        mine = {r["method"]: r for r in rows if r["case"] == case}
        cells = [case] + [f"{mine[m]['volume_ml']:.0f}" for m in methods]
        cells += [f"{mine[a][f'dice_vs_{b}']:.3f}" for i, a in enumerate(methods) for b in methods[i + 1:]]
        raw.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + by_contrast + raw)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="learned,deepbet,hd-bet-fast,atlas")
    parser.add_argument("--parts", default="synth,ixi")
    parser.add_argument("--per-variant", type=int, default=1, help="synthetic heads per variant and contrast")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--contrasts", default=",".join(CONTRASTS))
    parser.add_argument("--spacing", type=float, default=1.0, help="synthetic heads' voxel size (mm)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--look", type=Path, help="folder for the overlay pictures of the raw heads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cases = json.loads((args.work / "cases.json").read_text())
        result = run_worker(args.worker, cases, args.work, args.look)
        (args.work / f"rows_{args.worker}.json").write_text(json.dumps(result))
        return
    methods = args.methods.split(",")
    if args.look:
        args.look.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eval_brainmask_") as work:
        work = Path(work)
        cases = []
        if "synth" in args.parts:
            cases += write_synthetic_cases(work, args.per_variant, args.contrasts.split(","),
                                           args.variants.split(","), args.spacing)
        if "ixi" in args.parts:
            cases += write_ixi_cases(work)
        (work / "cases.json").write_text(json.dumps(cases))
        rows, memory = [], {}
        for method in methods:
            command = [sys.executable, __file__, "--worker", method, "--work", str(work)]
            subprocess.run(command + (["--look", str(args.look)] if args.look else []), check=True)
            result = json.loads((work / f"rows_{method}.json").read_text())
            rows += result["rows"]
            memory[method] = result["peak_rss_mb"]
        agreement(rows, work, methods)
    table = summary_table(rows, memory, methods)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "peak_rss_mb": memory, "table": table}, indent=1))


if __name__ == "__main__":
    main()
