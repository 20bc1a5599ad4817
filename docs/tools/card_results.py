"""Write a model card's "Evaluation on real scans" section from a `uadbrain evaluate` folder.

    python docs/tools/card_results.py --evaluation docs/results/evaluation \
        --bundle UADBrain/Resources/Models/vae --command "uadbrain evaluate ..."

Replaces the section (up to the next "## " heading) in the bundle's README.md: per data set and
contrast the model's pooled figures beside the thresholding baseline, and what it flagged on the
healthy scans. Maintainers only.
"""

import argparse
import csv
import json
import re
from pathlib import Path

HEADING = "## Evaluation on real scans"


def figure(value: str) -> str:
    return f"{float(value):.3f}" if value not in ("", None) else "n/a"


def operating_point(bundle: Path) -> str:
    fpr = json.loads((bundle / "metadata.json").read_text(encoding="utf-8")).get("postprocessing", {}).get("fpr")
    return (f"the model's operating point, a healthy false-positive rate of {fpr:g} chosen on the synthetic "
            "validation set" if fpr else "a healthy false-positive rate of 0.01, the default")


def section(evaluation: Path, model: str, command: str, operating: str, baseline: str = "threshold") -> str:
    with open(evaluation / "summary.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ours = [r for r in rows if r["model"] == model]
    if not ours:
        raise SystemExit(f"model '{model}' is not in {evaluation / 'summary.csv'}")
    base = {(r["dataset"], r["contrasts"]): r for r in rows if r["model"] == baseline}
    lines = [HEADING, "", f"`{command}` (pooled over each data set's brain voxels; calibrated threshold at "
             f"{operating}; the {baseline} baseline beside it, at its own):", "",
             "| data set | contrast | AUPRC | AUROC | best Dice | Dice @ calibrated thr. | baseline AUPRC / best Dice / Dice @ cal. |",
             "|---|---|---|---|---|---|---|"]
    for r in ours:
        b = base.get((r["dataset"], r["contrasts"]))
        against = (" / ".join(figure(b[k]) for k in ("auprc", "best_dice", "dice_calibrated")) if b else "n/a")
        lines.append(f"| {r['dataset']} | {r['contrasts']} | {figure(r['auprc'])} | {figure(r['auroc'])} | "
                     f"{figure(r['best_dice'])} | {figure(r['dice_calibrated'])} | {against} |")
    healthy_file = evaluation / "healthy.csv"
    if healthy_file.is_file():
        with open(healthy_file, encoding="utf-8") as handle:
            healthy = [r for r in csv.DictReader(handle) if r["model"] == model]
        if healthy:
            flagged = ", ".join(f"{r['scan']}: {float(r['flagged_volume_ml']):.1f} mL ({r['threshold_method']}"
                                f"{', brain mask: ' + r['brain_mask_method'] if r.get('brain_mask_method') else ''})"
                                for r in healthy)
            lines += ["", f"Flagged on the raw healthy IXI heads: {flagged}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", type=Path, required=True, help="a `uadbrain evaluate --out` folder")
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle folder whose README.md to update")
    parser.add_argument("--model", help="the model's name in the evaluation (default: the bundle folder's name)")
    parser.add_argument("--command", required=True, help="the evaluate command, quoted in the card")
    args = parser.parse_args()
    card_path = args.bundle / "README.md"
    card = card_path.read_text(encoding="utf-8")
    new = section(args.evaluation, args.model or args.bundle.name, args.command, operating_point(args.bundle))
    pattern = re.compile(re.escape(HEADING) + r".*?(?=^## )", re.S | re.M)
    if not pattern.search(card):
        raise SystemExit(f"{card_path} has no '{HEADING}' section followed by another '## ' section")
    card_path.write_text(pattern.sub(lambda _: new + "\n", card, count=1), encoding="utf-8")
    print(f"updated {card_path}")


if __name__ == "__main__":
    main()
