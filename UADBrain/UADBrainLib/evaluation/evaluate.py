"""``uadbrain evaluate``: detection quality of bundled models on cases with a ground truth.

Every case goes through :func:`pipeline.detect` (the one pipeline) with an already loaded model;
the metrics read the pipeline's own median-filtered map, brain mask and segmentation:

* voxel-wise, inside the brain mask the pipeline used (optionally only the central axial slices),
  per case and pooled over a data set: AUPRC (average precision), AUROC, best Dice over all
  thresholds — on the map median-filtered with the run's kernel, exactly what is thresholded;
* at the run's operating threshold (the model's healthy calibration when it has one, else the
  pipeline's Otsu fallback, or ``--threshold``): Dice of the segmentation the pipeline returns
  (after its minimum lesion size), lesion-wise recall (share of ground-truth lesions, 26-connected
  and at least the segmentation's minimum lesion size, touched by a predicted lesion) and
  false-positive lesions per case (predicted lesions touching no ground truth);
  "Dice at the calibrated threshold" is n/a for a model without calibration;
* for a calibrated model, the Dice of the segmentation at each healthy false-positive rate of
  ``OPERATING_FPRS`` (``dice_fpr_<rate>``, pooled per data set): the operating point is chosen
  on the synthetic validation set with these columns, never on the real scans;
* with healthy scans: volume-level AUROC (``Result.volume_score`` of lesion cases vs healthy).

The thresholding baseline (``threshold``) is always one of the models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..bundle import CONTRASTS, find_bundle, list_bundled
from ..cohort import Scan
from ..errors import InputError, ModelError, UADBrainError
from ..geometry import array_to_image, resample_like, same_grid, to_canonical
from ..inference.models import AnomalyModel, load_model
from ..inference.options import DetectOptions
from ..inference.pipeline import detect
from ..inference.result import Result
from ..metrics import RankingCurve, dice, lesion_counts, roc_auc

BASELINE_MODEL = "threshold"
OPERATING_FPRS = (0.05, 0.02, 0.01, 0.005, 0.002, 0.001)  # healthy voxel rates swept per case


def fpr_column(fpr: float) -> str:
    return f"dice_fpr_{fpr:g}"


@dataclass(frozen=True)
class Task:
    """One model given one set of contrasts: a row of the comparison table."""

    model: AnomalyModel
    contrasts: tuple[str, ...]

    @property
    def model_name(self) -> str:
        return self.model.bundle.name

    @property
    def contrast_key(self) -> str:
        return "+".join(self.contrasts)

    @property
    def label(self) -> str:
        return f"{self.model_name} [{self.contrast_key}]"

    def accepts(self, scan: Scan) -> bool:
        return set(self.contrasts) <= set(scan.images)


@dataclass
class Settings:
    threshold: float | str | None = None  # operating threshold; None: calibrated, else Otsu
    fpr: float | None = None
    median: int | None = None  # None: each model's default
    min_size_mm3: float | None = None
    brain_mask_method: str = "auto"  # for scans without a brain mask file
    device: str = "auto"
    central_slices: float | None = None  # fraction of the axial slices kept, centred; None: all

    def detect_options(self) -> DetectOptions:
        options = DetectOptions(threshold=self.threshold, median=self.median,
                                min_size_mm3=self.min_size_mm3, brain_mask_method=self.brain_mask_method,
                                device=self.device)
        if self.fpr is not None:
            options.fpr = self.fpr
        return options


@dataclass
class OverlayPanel:
    """Canonical axial slices of one run through the case's most lesioned slice."""

    label: str
    image: np.ndarray
    anomaly: np.ndarray
    segmentation: np.ndarray
    brain: np.ndarray


@dataclass
class Group:
    """The runs of one task on one data set, pooled."""

    dataset: str
    task: Task
    rows: list[dict] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    # per case: {fpr: (flagged voxels, true-positive voxels)} of the false-positive-rate sweep
    sweeps: list[dict] = field(default_factory=list)

    def curve(self) -> RankingCurve:
        return RankingCurve.from_scores(np.concatenate(self.scores), np.concatenate(self.labels))


@dataclass
class PooledCurve:
    """What the report keeps of a pooled ranking curve: the PR curve thinned for plotting."""

    recall: np.ndarray
    precision: np.ndarray
    average_precision: float
    prevalence: float

    @classmethod
    def of(cls, curve: RankingCurve) -> "PooledCurve":
        recall, precision = curve.pr_points()
        return cls(recall=recall, precision=precision, average_precision=curve.average_precision(),
                   prevalence=curve.positives / max(curve.positives + curve.negatives, 1))


@dataclass
class Evaluation:
    settings: Settings
    groups: list[Group]
    healthy_rows: list[dict]
    summary_rows: list[dict]
    overlays: dict[tuple[str, str], tuple[np.ndarray, list[OverlayPanel]]]  # (dataset, case) → truth slice, panels
    curves: dict[tuple[str, str], PooledCurve]  # (dataset, task label) → pooled PR curve
    skipped: list[str]

    @property
    def case_rows(self) -> list[dict]:
        return [row for group in self.groups for row in group.rows]


def parse_contrast_sets(values) -> list[tuple[str, ...]]:
    """``["flair", "flair+t2"]`` → ``[("flair",), ("flair", "t2")]`` in canonical contrast order."""
    sets = []
    for value in values:
        names = [n.strip().lower() for n in value.split("+") if n.strip()]
        names = ["t1c" if n == "t1post" else n for n in names]
        unknown = [n for n in names if n not in CONTRASTS]
        if unknown or not names:
            raise InputError(f"contrast '{value}' is not understood — use {', '.join(CONTRASTS)} "
                             "or a combination such as flair+t2.")
        ordered = tuple(c for c in CONTRASTS if c in names)
        if ordered not in sets:
            sets.append(ordered)
    return sets


def build_tasks(model_names, contrast_sets, datasets: dict[str, list[Scan]], device: str) -> tuple[list[Task], list[str]]:
    """Tasks for every model × contrast set the model can take; the baseline is always included."""
    names = list(dict.fromkeys([*(model_names or list_bundled()), BASELINE_MODEL]))
    if not contrast_sets:
        present = {c for cases in datasets.values() for case in cases for c in case.images}
        contrast_sets = [(c,) for c in CONTRASTS if c in present]
    tasks, skipped = [], []
    for name in names:
        bundle = find_bundle(name)
        model = None
        for contrasts in contrast_sets:
            unsupported = set(contrasts) - set(bundle.contrasts)
            missing = set(bundle.required_contrasts) - set(contrasts)
            if unsupported or missing:
                skipped.append(f"{bundle.name} [{'+'.join(contrasts)}]: the model "
                               + (f"does not use {', '.join(sorted(unsupported))}" if unsupported
                                  else f"needs {', '.join(sorted(missing))}"))
                continue
            if model is None:
                model = load_model(bundle, device)
            tasks.append(Task(model=model, contrasts=contrasts))
    return tasks, skipped


def central_slab(result: Result, fraction: float) -> np.ndarray:
    """Boolean array on the post-processor's crop: the central ``fraction`` of axial slices."""
    postprocessor = result.postprocessor
    direction = np.abs(np.array(result.anomaly_map.GetDirection()).reshape(3, 3))
    axial_axis = 2 - int(direction[2].argmax())  # image axis closest to S, as a numpy axis
    count = postprocessor.shape[axial_axis]
    low, high = round(count * (1 - fraction) / 2), round(count * (1 + fraction) / 2)
    span = postprocessor.crop[axial_axis]
    keep = (np.arange(span.start, span.stop) >= low) & (np.arange(span.start, span.stop) < high)
    shape = [1, 1, 1]
    shape[axial_axis] = keep.size
    return np.broadcast_to(keep.reshape(shape), postprocessor.mask.shape)


def read_truth(path, reference: sitk.Image) -> np.ndarray:
    """Ground truth (label > 0) on the reference grid as a boolean array."""
    try:
        truth = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"cannot read the ground truth '{path}' — give a NIfTI, NRRD or MHA label image.") from None
    if truth.GetDimension() != 3:
        raise InputError(f"ground truth '{path}' is {truth.GetDimension()}D — give a 3D label image.")
    truth = sitk.Cast(sitk.Greater(truth, 0), sitk.sitkUInt8)
    if not same_grid(truth, reference):
        truth = resample_like(truth, reference, is_label=True)
    return sitk.GetArrayFromImage(truth) > 0


def fpr_sweep(result: Result, region: np.ndarray, truth: np.ndarray) -> dict:
    """``{fpr: (flagged voxels, true-positive voxels)}`` of the segmentation re-thresholded at each
    healthy false-positive rate of ``OPERATING_FPRS`` (empty for a model without calibration)."""
    if result.threshold_method != "calibrated":
        return {}
    counts = {}
    for fpr in OPERATING_FPRS:
        try:
            labels = result.rethreshold(threshold="calibrated", fpr=fpr).labels_array[result.postprocessor.crop]
        except ModelError:  # a rate finer than the calibration resolves
            continue
        flagged = region & (labels > 0)
        counts[fpr] = (int(np.count_nonzero(flagged)), int(np.count_nonzero(flagged & truth)))
    return counts


def pooled_dice(flagged: int, true_positives: int, truth: int) -> float:
    return 2 * true_positives / (flagged + truth) if flagged + truth else 1.0


def score_case(result: Result, truth: np.ndarray, central_slices: float | None) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Metrics of one run, the voxel scores and labels that enter the pooled curve, and the
    false-positive-rate sweep (:func:`fpr_sweep`)."""
    postprocessor = result.postprocessor
    region = postprocessor.brain(result.erosion_mm)
    if central_slices is not None:
        region = region & central_slab(result, central_slices)
    truth_crop = truth[postprocessor.crop]
    scores = postprocessor.map(result.median)[region]  # the map the threshold acts on
    labels = truth_crop[region]
    curve = RankingCurve.from_scores(scores, labels)
    best_dice, best_threshold = curve.best_dice()
    predicted = np.where(region, result.labels_array[postprocessor.crop], 0)
    flagged = predicted > 0
    # ground-truth fragments below the segmentation's own minimum lesion size are not lesions to find
    voxel_mm3 = float(np.prod(result.anomaly_map.GetSpacing()))
    counts = lesion_counts(predicted, truth_crop & region, int(np.ceil(result.min_size_mm3 / voxel_mm3)))
    operating_dice = dice(flagged, truth_crop & region)
    row = {
        "auprc": curve.average_precision(),
        "auroc": curve.auroc(),
        "best_dice": best_dice,
        "best_dice_threshold": best_threshold,
        "threshold": result.threshold,
        "threshold_method": result.threshold_method,
        "dice_calibrated": operating_dice if result.threshold_method == "calibrated" else None,
        "dice_operating": operating_dice,
        "lesions_truth": counts.truth_lesions,
        "lesions_hit": counts.truth_lesions_hit,
        "lesion_recall": counts.recall if counts.truth_lesions else None,
        "lesions_predicted": counts.predicted_lesions,
        "fp_lesions": counts.false_positive_lesions,
        "voxels_evaluated": int(labels.size),
        "truth_voxels": int(labels.sum()),
        "truth_voxels_outside_region": int(truth.sum() - labels.sum()),
        "flagged_voxels": int(np.count_nonzero(flagged)),
        "true_positive_voxels": int(np.count_nonzero(flagged & truth_crop)),
        "volume_score": result.volume_score,
        "median": result.median,
    }
    sweep = fpr_sweep(result, region, truth_crop & region)
    row.update({fpr_column(fpr): pooled_dice(flagged_voxels, hits, int(labels.sum()))
                for fpr, (flagged_voxels, hits) in sweep.items()})
    return row, scores.astype(np.float32), labels, sweep


def truth_slice_index(truth_canonical: np.ndarray) -> int:
    """The canonical axial slice with the most ground truth (the middle slice when empty)."""
    area = truth_canonical.reshape(truth_canonical.shape[0], -1).sum(axis=1)
    return int(area.argmax()) if area.any() else truth_canonical.shape[0] // 2


def overlay_panel(result: Result, task: Task, slice_index: int) -> OverlayPanel:
    def axial(image):
        return sitk.GetArrayFromImage(to_canonical(image))[slice_index]

    return OverlayPanel(label=task.label, image=axial(result.inputs[task.contrasts[0]]),
                        anomaly=axial(result.anomaly_map), segmentation=axial(result.segmentation) > 0,
                        brain=axial(result.brain_mask) > 0)


def run_detect(scan: Scan, task: Task, settings: Settings) -> Result:
    images = {c: scan.images[c] for c in task.contrasts}
    try:
        return detect(images, model=task.model, options=settings.detect_options(), mask=scan.mask)
    except UADBrainError as error:
        raise type(error)(f"{scan.id} ({task.label}): {error}") from None


def evaluate_case(dataset: str, case: Scan, tasks: list[Task], settings: Settings,
                  groups: dict, overlays: bool, progress=None):
    """Every task that can take this case: metrics into ``groups``; the overlay panels (or None)."""
    panels, truth_slice = [], None
    for task in tasks:
        if not task.accepts(case):
            continue
        started = time.perf_counter()
        result = run_detect(case, task, settings)
        truth = read_truth(case.truth, result.anomaly_map)
        row, scores, labels, sweep = score_case(result, truth, settings.central_slices)
        group = groups[(dataset, task.label)]
        group.rows.append({"dataset": dataset, "case": case.id, "model": task.model_name,
                           "contrasts": task.contrast_key, **row,
                           "seconds": round(time.perf_counter() - started, 2)})
        group.scores.append(scores)
        group.labels.append(labels)
        group.sweeps.append(sweep)
        if overlays:
            if truth_slice is None:
                truth_canonical = sitk.GetArrayFromImage(to_canonical(
                    array_to_image(truth.astype(np.uint8), result.anomaly_map))) > 0
                index = truth_slice_index(truth_canonical)
                truth_slice = (index, truth_canonical[index])
            panels.append(overlay_panel(result, task, truth_slice[0]))
        if progress:
            progress(f"{dataset}/{case.id} {task.label}")
    return (truth_slice[1], panels) if panels else None


def evaluate(datasets: dict[str, list[Scan]], tasks: list[Task], settings: Settings,
             healthy: list[Scan] = (), overlays: bool = True, progress=None,
             skipped: list[str] | None = None) -> Evaluation:
    """Run every task on every case (and healthy scan) that has its contrasts; gather metrics."""
    groups, overlay_store, summary, curves = {}, {}, {}, {}
    for dataset, cases in datasets.items():
        dataset_groups = {(dataset, task.label): Group(dataset, task) for task in tasks}
        groups.update(dataset_groups)
        for case in cases:
            panels = evaluate_case(dataset, case, tasks, settings, groups, overlays, progress)
            if panels:
                overlay_store[(dataset, case.id)] = panels
        for key, group in dataset_groups.items():  # pool this data set's voxels, then free them
            if group.rows:
                curve = group.curve()
                summary[key] = summary_row(group, curve)
                curves[key] = PooledCurve.of(curve)
                group.scores.clear()
                group.labels.clear()
    healthy_rows = score_healthy(healthy, tasks, settings, progress)
    for key, row in summary.items():
        add_volume_auroc(row, groups[key], healthy_rows)
    return Evaluation(settings=settings, groups=[g for g in groups.values() if g.rows],
                      healthy_rows=healthy_rows, summary_rows=list(summary.values()), overlays=overlay_store,
                      curves=curves, skipped=list(skipped or []))


def score_healthy(healthy: list[Scan], tasks: list[Task], settings: Settings, progress=None) -> list[dict]:
    """Volume-level scores and what each task flags on scans without lesions."""
    rows = []
    for scan in healthy:
        for task in tasks:
            if not task.accepts(scan):
                continue
            result = run_detect(scan, task, settings)
            rows.append({"scan": scan.id, "model": task.model_name, "contrasts": task.contrast_key,
                         "volume_score": result.volume_score, "threshold": result.threshold,
                         "threshold_method": result.threshold_method,
                         "flagged_volume_ml": result.flagged_volume_ml,
                         "lesion_count": result.lesion_count,
                         "brain_mask_method": result.report.get("brain_mask_method")})
            if progress:
                progress(f"healthy/{scan.id} {task.label}")
    return rows


def summary_row(group: Group, curve: RankingCurve) -> dict:
    """Pooled metrics of one task on one data set."""
    rows = group.rows
    best_dice, _ = curve.best_dice()
    flagged = sum(r["flagged_voxels"] for r in rows)
    truth = sum(r["truth_voxels"] for r in rows)
    true_positives = sum(r["true_positive_voxels"] for r in rows)
    operating_dice = pooled_dice(flagged, true_positives, truth)
    methods = sorted({r["threshold_method"] for r in rows})
    lesions = sum(r["lesions_truth"] for r in rows)
    # the sweep pools only the rates every case resolved
    rates = [f for f in OPERATING_FPRS if group.sweeps and all(f in sweep for sweep in group.sweeps)]
    sweep = {fpr_column(f): pooled_dice(sum(s[f][0] for s in group.sweeps), sum(s[f][1] for s in group.sweeps), truth)
             for f in rates}
    return {
        "dataset": group.dataset,
        "contrasts": group.task.contrast_key,
        "model": group.task.model_name,
        "cases": len(rows),
        "auprc": curve.average_precision(),
        "auroc": curve.auroc(),
        "best_dice": best_dice,
        "dice_calibrated": operating_dice if methods == ["calibrated"] else None,
        "threshold_method": "/".join(methods),
        "dice_operating": operating_dice,
        "lesion_recall": sum(r["lesions_hit"] for r in rows) / lesions if lesions else None,
        "fp_lesions_per_case": float(np.mean([r["fp_lesions"] for r in rows])),
        "volume_auroc": None,
        "healthy_scans": 0,
        "median": "/".join(str(m) for m in sorted({r["median"] for r in rows})),
        **sweep,
    }


def add_volume_auroc(row: dict, group: Group, healthy_rows: list[dict]) -> None:
    """Volume-level AUROC of this data set's cases against the healthy scans of the same task."""
    healthy_scores = [h["volume_score"] for h in healthy_rows
                      if h["model"] == group.task.model_name and h["contrasts"] == group.task.contrast_key]
    if healthy_scores:
        row["volume_auroc"] = roc_auc([r["volume_score"] for r in group.rows], healthy_scores)
        row["healthy_scans"] = len(healthy_scores)


# --------------------------------------------------------------------------- command line
