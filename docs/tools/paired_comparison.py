"""Two models compared case by case on one `uadbrain evaluate` folder: is the difference more than
the cases' own spread?

    python docs/tools/paired_comparison.py --evaluation EVAL --candidate learned-hybrid \
        --baseline t1=segmenter t2=dae [--metrics auprc dice_calibrated] > comparison.md

For each data set and contrast, the mean per-case difference (candidate − baseline) of each
metric, how many cases the candidate wins, and a 95 % bootstrap interval of the mean difference
(10 000 resamples of the cases, fixed seed). Pooled figures (all voxels of all cases, as the
summary tables give them) are in the folder's summary.csv; a pooled lead whose per-case interval
spans zero is not a lead the cases support. Maintainers only.
"""

import argparse
import csv
from pathlib import Path

import numpy as np

RESAMPLES = 10_000


def per_case(rows: list[dict], dataset: str, model: str, contrast: str, metric: str) -> dict[str, float]:
    return {row["case"]: float(row[metric]) for row in rows
            if row["dataset"] == dataset and row["model"] == model and row["contrasts"] == contrast}


def bootstrap_interval(differences: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, (RESAMPLES, len(differences))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", required=True, type=Path, help="a uadbrain evaluate output folder")
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--baseline", nargs="+", required=True, metavar="CONTRAST=MODEL",
                        help="the model each contrast is compared with")
    parser.add_argument("--metrics", nargs="+", default=["auprc", "best_dice", "dice_calibrated"])
    args = parser.parse_args()
    baselines = dict(item.split("=", 1) for item in args.baseline)
    with open(args.evaluation / "cases.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    print(f"| data set | contrast | {args.candidate} vs | metric | mean difference | wins | 95 % interval |")
    print("|---|---|---|---|---|---|---|")
    for dataset in sorted({row["dataset"] for row in rows}):
        for contrast, baseline in baselines.items():
            for metric in args.metrics:
                candidate = per_case(rows, dataset, args.candidate, contrast, metric)
                reference = per_case(rows, dataset, baseline, contrast, metric)
                cases = sorted(set(candidate) & set(reference))
                if not cases:
                    continue
                differences = np.array([candidate[c] - reference[c] for c in cases])
                low, high = bootstrap_interval(differences)
                print(f"| {dataset} | {contrast} | {baseline} | {metric} | {differences.mean():+.3f} | "
                      f"{int((differences > 0).sum())}/{len(cases)} | [{low:+.3f}, {high:+.3f}] |")


if __name__ == "__main__":
    main()
