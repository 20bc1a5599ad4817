"""Writing an evaluation: CSV and Markdown tables, precision-recall curves, per-case bars, overlays."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np

from .. import __version__
from ..bundle import CONTRASTS
from .evaluate import Evaluation

SUMMARY_COLUMNS = [  # (key, Markdown header)
    ("dataset", "data set"), ("contrasts", "contrasts"), ("model", "model"), ("cases", "cases"),
    ("auprc", "AUPRC"), ("auroc", "AUROC"), ("best_dice", "best Dice"),
    ("dice_calibrated", "Dice @ calibrated thr."), ("threshold_method", "operating thr."),
    ("dice_operating", "Dice @ operating thr."), ("lesion_recall", "lesion recall"),
    ("fp_lesions_per_case", "FP lesions / case"), ("volume_auroc", "volume AUROC"),
]
CASE_COLUMNS = [
    ("dataset", "data set"), ("case", "case"), ("contrasts", "contrasts"), ("model", "model"),
    ("auprc", "AUPRC"), ("auroc", "AUROC"), ("best_dice", "best Dice"),
    ("threshold_method", "operating thr."), ("threshold", "thr. value"),
    ("dice_operating", "Dice @ operating thr."), ("lesions_hit", "lesions hit"),
    ("lesions_truth", "lesions"), ("fp_lesions", "FP lesions"), ("truth_voxels", "lesion voxels"),
    ("volume_score", "volume score"), ("seconds", "s"),
]
HEALTHY_COLUMNS = [
    ("scan", "scan"), ("contrasts", "contrasts"), ("model", "model"), ("volume_score", "volume score"),
    ("threshold_method", "operating thr."), ("flagged_volume_ml", "flagged mL"),
    ("lesion_count", "lesions"), ("brain_mask_method", "brain mask"),
]


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: list[dict], columns) -> str:
    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _contrast_rank(key: str) -> tuple:
    return tuple(CONTRASTS.index(c) for c in key.split("+"))


def sorted_summary(evaluation: Evaluation) -> list[dict]:
    model_order = list(dict.fromkeys(g.task.model_name for g in evaluation.groups))
    return sorted(evaluation.summary_rows, key=lambda r: (r["dataset"], _contrast_rank(r["contrasts"]),
                                                          model_order.index(r["model"])))


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def plot_pr_curves(evaluation: Evaluation, dataset: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    groups = [g for g in evaluation.groups if g.dataset == dataset]
    contrast_keys = sorted({g.task.contrast_key for g in groups}, key=_contrast_rank)
    figure, axes = plt.subplots(1, len(contrast_keys), figsize=(4.2 * len(contrast_keys), 4), squeeze=False)
    for axis, key in zip(axes[0], contrast_keys):
        for group in (g for g in groups if g.task.contrast_key == key):
            curve = evaluation.curves[(dataset, group.task.label)]
            axis.plot(curve.recall, curve.precision, label=f"{group.task.model_name} (AP {curve.average_precision:.2f})")
            prevalence = curve.prevalence
        axis.axhline(prevalence, color="0.6", linestyle=":", linewidth=1, label=f"chance ({prevalence:.3f})")
        axis.set(title=f"{dataset} {key} (pooled)", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_per_case(evaluation: Evaluation, dataset: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    groups = sorted((g for g in evaluation.groups if g.dataset == dataset),
                    key=lambda g: (_contrast_rank(g.task.contrast_key), g.task.model_name))
    cases = list(dict.fromkeys(r["case"] for g in groups for r in g.rows))
    width = 0.8 / max(len(groups), 1)
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.2 * len(cases) * max(1, len(groups) / 3)), 6.5),
                                sharex=True)
    for axis, key, title in zip(axes, ("auprc", "best_dice"), ("AUPRC", "best Dice")):
        for index, group in enumerate(groups):
            by_case = {r["case"]: r[key] for r in group.rows}
            values = [by_case.get(c, np.nan) for c in cases]
            axis.bar(np.arange(len(cases)) + (index - (len(groups) - 1) / 2) * width, values, width,
                     label=group.task.label)
        axis.set(ylabel=title, ylim=(0, 1))
        axis.grid(axis="y", linewidth=0.5, alpha=0.5)
    axes[1].set_xticks(np.arange(len(cases)), cases, rotation=30, ha="right")
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-len(groups) // 4)
    figure.legend(handles, labels, fontsize=8, ncol=min(len(groups), 4), loc="lower center")
    figure.suptitle(f"{dataset}: per case")
    figure.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_overlay(truth_slice: np.ndarray, panels, title: str, path: Path) -> None:
    """Per run: the input with the segmentation (red) and ground truth (cyan) outlined; the map."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 2, figsize=(7, 3.4 * len(panels)), squeeze=False)
    for (image_axis, map_axis), panel in zip(axes, panels):
        brain = panel.brain if panel.brain.any() else np.ones_like(panel.brain)
        low, high = np.percentile(panel.image[brain], [1, 99.5])
        image_axis.imshow(panel.image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        for mask, colour in ((truth_slice, "cyan"), (panel.segmentation, "red")):
            if mask.any():
                image_axis.contour(mask, levels=[0.5], colors=colour, linewidths=0.8)
        image_axis.set_title(f"{panel.label}\ntruth (cyan), segmentation (red)", fontsize=8)
        scores = panel.anomaly[brain]
        map_axis.imshow(np.where(panel.brain, panel.anomaly, np.nan), cmap="hot",
                        vmin=np.median(scores), vmax=np.percentile(scores, 99.9), interpolation="nearest")
        map_axis.set_title("anomaly map (brain median to 99.9th percentile)", fontsize=8)
        for axis in (image_axis, map_axis):
            axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def report_markdown(evaluation: Evaluation, figures: dict[str, list[str]]) -> str:
    settings = evaluation.settings
    summary = sorted_summary(evaluation)
    lines = ["# Evaluation", "",
             f"UADBrain {__version__}. Voxel-wise metrics inside the brain mask the pipeline used "
             + (f"(central {settings.central_slices:.0%} of axial slices)" if settings.central_slices
                else "(whole brain)")
             + ", on the map median-filtered with the kernel in use "
             + f"({'/'.join(sorted({str(r['median']) for r in summary}))}); pooled over each data set's "
               "voxels. Operating threshold: the model's healthy calibration when it has one, else "
               "Otsu on each case's map (per case); lesion-wise figures at that threshold.", "",
             "## Pooled per data set", "", markdown_table(summary, SUMMARY_COLUMNS), ""]
    if evaluation.healthy_rows:
        lines += ["## Healthy scans", "", markdown_table(evaluation.healthy_rows, HEALTHY_COLUMNS), ""]
    lines += ["## Per case", "", markdown_table(evaluation.case_rows, CASE_COLUMNS), ""]
    if evaluation.skipped:
        lines += ["## Not evaluated", ""] + [f"- {text}" for text in evaluation.skipped] + [""]
    lines += ["## Figures", ""]
    for dataset, paths in figures.items():
        lines += [f"![{Path(p).stem}]({p})" for p in paths] + [""]
    return "\n".join(lines)


def write_report(evaluation: Evaluation, out_dir) -> list[Path]:
    """Tables, plots and ``report.md`` in ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    summary = sorted_summary(evaluation)
    for name, rows in (("summary.csv", summary), ("cases.csv", evaluation.case_rows),
                       ("healthy.csv", evaluation.healthy_rows)):
        if rows:
            write_csv(rows, out_dir / name)
            written.append(out_dir / name)
    (out_dir / "summary.md").write_text(markdown_table(summary, SUMMARY_COLUMNS) + "\n", encoding="utf-8")
    written.append(out_dir / "summary.md")
    figures: dict[str, list[str]] = {}
    for dataset in dict.fromkeys(g.dataset for g in evaluation.groups):
        names = [f"pr_curves_{_file_name(dataset)}.png", f"per_case_{_file_name(dataset)}.png"]
        plot_pr_curves(evaluation, dataset, out_dir / names[0])
        plot_per_case(evaluation, dataset, out_dir / names[1])
        figures[dataset] = names
        written += [out_dir / n for n in names]
    if evaluation.overlays:
        (out_dir / "overlays").mkdir(exist_ok=True)
    for (dataset, case), (truth_slice, panels) in evaluation.overlays.items():
        path = out_dir / "overlays" / f"{_file_name(dataset)}_{_file_name(case)}.png"
        plot_overlay(truth_slice, panels, f"{dataset} / {case}", path)
        written.append(path)
    (out_dir / "report.md").write_text(report_markdown(evaluation, figures), encoding="utf-8")
    document = {"uadbrain_version": __version__, "settings": vars(evaluation.settings),
                "summary": summary, "cases": evaluation.case_rows, "healthy": evaluation.healthy_rows,
                "not_evaluated": evaluation.skipped}
    (out_dir / "evaluation.json").write_text(json.dumps(_finite(document), indent=2, default=_json_value) + "\n", encoding="utf-8")
    written += [out_dir / "report.md", out_dir / "evaluation.json"]
    return written


def _finite(value):
    """NaN (an undefined metric) as JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _json_value(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def print_summary(evaluation: Evaluation) -> None:
    columns = [c for c in SUMMARY_COLUMNS if c[0] not in ("dice_calibrated",)]
    rows = [[format_value(r.get(k)) for k, _ in columns] for r in sorted_summary(evaluation)]
    headers = [h for _, h in columns]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
