"""The side-by-side table of the method families: every model x every development task.

    python docs/tools/family_table.py --evaluation docs/results/families [--evaluation MORE ...] \
        --models threshold segmenter dae vae ... > table.md

Reads `uadbrain evaluate` folders (summary.csv, cases.csv, healthy.csv; a later folder's rows
replace an earlier one's for the same model) and writes one markdown row per model: pooled AUPRC /
best Dice / Dice at the calibrated threshold for BraTS FLAIR and T1c and MS FLAIR, T1 and T2, the
mean volume flagged on the healthy IXI heads, the mean `detect` seconds per evaluated scan (as
timed by `uadbrain evaluate`, on whatever else the machine ran) and the network passes per slice
and contrast (from the bundle's metadata). Maintainers only.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "UADBrain"))

from UADBrainLib.bundle import find_bundle  # noqa: E402

TASKS = (("brats2015", "flair", "BraTS FLAIR"), ("brats2015", "t1c", "BraTS T1c"), ("ms_lesjak2017", "flair", "MS FLAIR"),
         ("ms_lesjak2017", "t1", "MS T1"), ("ms_lesjak2017", "t2", "MS T2"))


def network_passes(metadata: dict) -> str:
    """Network evaluations per slice and contrast: one per reconstruction step, plus the scores'."""
    scoring = metadata.get("scoring", {})
    family = metadata["family"]
    if family in ("threshold", "ensemble"):
        return "0" if family == "threshold" else "members'"
    passes_by_family = {"normative": "0 (1 affine registration per scan)",
                        "patchcore": "1 encoder + nearest-neighbour search",
                        "padim": "1 encoder (1 affine registration per scan)",
                        "stfpm": "2 encoders (teacher, student)",
                        "learned-hybrid": "2 (DAE, then segmenter)"}
    if family in passes_by_family:
        return passes_by_family[family]
    passes = 1
    if family == "diffusion":
        ensemble = scoring.get("ensemble") or {"noise_levels": [0], "seeds": 1}
        passes = scoring.get("sampler", {}).get("steps", 10) * len(ensemble["noise_levels"]) * ensemble["seeds"]
        patch_mm = scoring.get("sampler", {}).get("patch_mm")
        if patch_mm:  # pDDPM restores one tile at a time: the passes repeat for each tile that holds brain
            return f"{passes} per {patch_mm:g} mm tile"
    score = scoring.get("score")
    extra = {"perceptual": " + 2 feature encoders", "kl-combined": " + 1 encoder forward/backward"}.get(score, "")
    return f"{passes}{extra}"


def read_rows(folders: list[Path], name: str) -> list[dict]:
    rows = {}
    for folder in folders:
        path = folder / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            found = list(csv.DictReader(handle))
        for model in {r["model"] for r in found}:
            rows[model] = [r for r in found if r["model"] == model]
    return [r for model_rows in rows.values() for r in model_rows]


def figure(value) -> str:
    return f"{float(value):.3f}" if value not in ("", None) else "–"


def table(folders: list[Path], models: list[str]) -> str:
    summary, cases, healthy = (read_rows(folders, n) for n in ("summary.csv", "cases.csv", "healthy.csv"))
    header = ("| model | method / score | " + " | ".join(label for _, _, label in TASKS)
              + " | IXI flagged mL | s / scan | passes / slice |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for model in models:
        metadata = find_bundle(model).metadata
        cells = []
        for dataset, contrast, _ in TASKS:
            row = next((r for r in summary if r["model"] == model and r["dataset"] == dataset
                        and r["contrasts"] == contrast), None)
            cells.append(" / ".join(figure(row[k]) for k in ("auprc", "best_dice", "dice_calibrated")) if row else "–")
        flagged = [float(r["flagged_volume_ml"]) for r in healthy if r["model"] == model]
        seconds = [float(r["seconds"]) for r in cases if r["model"] == model and r.get("seconds")]
        method = metadata["title"].split(" (")[0]  # a rescored title begins with its source's
        kind = f"{method} / {metadata.get('scoring', {}).get('score', '–')}"
        mean = lambda values: f"{sum(values) / len(values):.1f}" if values else "–"  # noqa: E731
        lines.append(f"| `{model}` | {kind} | " + " | ".join(cells)
                     + f" | {mean(flagged)} | {mean(seconds)} | {network_passes(metadata)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", type=Path, action="append", required=True,
                        help="a `uadbrain evaluate --out` folder (repeat; later ones win per model)")
    parser.add_argument("--models", nargs="+", required=True, help="bundled model names, in table order")
    args = parser.parse_args()
    sys.stdout.write(table(args.evaluation, args.models))


if __name__ == "__main__":
    main()
