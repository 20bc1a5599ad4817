"""Choose each model's operating point (healthy false-positive rate) on the synthetic validation set.

    uadbrain validation-set --label-maps ../shared/data/label_maps/synthseg --out VALIDATION ...
    uadbrain evaluate --cases VALIDATION/<dataset> --model ... --out EVALUATIONS/<dataset>   # one per data set
    python docs/tools/operating_points.py EVALUATIONS --assign threshold=flair segmenter=t1 [--write]

Reads every ``EVALUATIONS/*/summary.csv`` (its ``dice_fpr_<rate>`` columns; a row of an ensemble on
one contrast that it hands whole to one member counts as that member's), prints per model and
contrast set the pooled Dice at each rate averaged over the data sets, and picks the rate with the
best mean among those at most ``--max-fpr`` (default 0.01, today's default: a higher rate would
flag more of every healthy scan, which lesion Dice alone does not see). ``--assign MODEL=CONTRASTS``
says which contrast set decides a model's rate; ``--write`` stores it as the bundled model's
``postprocessing.fpr``. Maintainers only; the real evaluation scans never enter.
"""

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from UADBrainLib.evaluation.evaluate import OPERATING_FPRS as RATES
from UADBrainLib.inference.models.ensemble import member_names

MODELS = Path(__file__).resolve().parents[2] / "UADBrain" / "Resources" / "Models"


def scoring_model(model: str, contrasts: str) -> str:
    """The bundled model whose map and calibration a run of ``model`` on ``contrasts`` uses: an
    ensemble hands a single contrast routed to one member to that member (``EnsembleModel.for_contrasts``)."""
    metadata = json.loads((MODELS / model / "metadata.json").read_text(encoding="utf-8"))
    if metadata.get("family") != "ensemble" or "+" in contrasts:
        return model
    names = member_names(metadata["scoring"], [contrasts])
    return metadata["members"][names[0]] if len(names) == 1 else model


def read_sweeps(evaluations: Path) -> dict:
    """``{(model, contrasts): {dataset: [Dice at each rate]}}`` of the evaluations that swept every rate."""
    sweeps = defaultdict(dict)
    for path in sorted(evaluations.glob("*/summary.csv")):
        with open(path, encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                values = [row.get(f"dice_fpr_{rate:g}") for rate in RATES]
                if all(v not in (None, "") for v in values):
                    model = scoring_model(row["model"], row["contrasts"])
                    sweeps[(model, row["contrasts"])][row["dataset"]] = [float(v) for v in values]
    return sweeps


def best_rate(per_dataset: dict, max_fpr: float) -> tuple[float, list[float]]:
    means = [sum(d[i] for d in per_dataset.values()) / len(per_dataset) for i in range(len(RATES))]
    allowed = [i for i, rate in enumerate(RATES) if rate <= max_fpr]
    return RATES[max(allowed, key=lambda i: means[i])], means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluations", type=Path, help="a folder of `uadbrain evaluate --out` folders")
    parser.add_argument("--assign", nargs="+", default=[], metavar="MODEL=CONTRASTS",
                        help="the contrast set whose validation Dice chooses the model's rate")
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument("--write", action="store_true", help="store the chosen rates in the bundled models' metadata")
    args = parser.parse_args()
    sweeps = read_sweeps(args.evaluations)
    print("| model | contrasts | data sets | " + " | ".join(f"{r:g}" for r in RATES) + " | chosen |")
    print("|---|---|---|" + "---|" * (len(RATES) + 1))
    chosen = {}
    for (model, contrasts), per_dataset in sorted(sweeps.items()):
        rate, means = best_rate(per_dataset, args.max_fpr)
        chosen[(model, contrasts)] = rate
        print(f"| {model} | {contrasts} | {len(per_dataset)} | " + " | ".join(f"{m:.3f}" for m in means)
              + f" | {rate:g} |")
    for assignment in args.assign:
        model, contrasts = assignment.split("=", 1)
        if (model, contrasts) not in chosen:
            raise SystemExit(f"no sweep of {model} on {contrasts} in {args.evaluations}")
        if args.write:
            path = MODELS / model / "metadata.json"
            metadata = json.loads(path.read_text(encoding="utf-8"))
            metadata.setdefault("postprocessing", {})["fpr"] = chosen[(model, contrasts)]
            path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
            print(f"{model}: fpr {chosen[(model, contrasts)]:g} (from {contrasts}) written to {path}")


if __name__ == "__main__":
    main()
