"""``uadbrain evaluate``: models on cases with a ground truth, tables and figures."""

from __future__ import annotations

from pathlib import Path

from ..bundle import list_bundled
from ..cohort import Scan, find_cases, scans_in_folder
from ..device import resolve_device
from .options import add_device_argument
from ..errors import InputError
from ..evaluation.evaluate import BASELINE_MODEL, Settings, build_tasks, evaluate, parse_contrast_sets
from ..inference.brain_extraction import BRAIN_MASK_METHODS
from ..inference.postprocessing import MEDIAN_KERNELS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate models on cases with a ground truth (tables, plots)",
        description="Run bundled models (always including the thresholding baseline) through the "
                    "detection pipeline on cases with a ground-truth lesion mask and write CSV and "
                    "Markdown tables, precision-recall curves, per-case bars and overlays to --out. "
                    "Case folder convention: <contrast>.nii.gz (flair, t1, t2, t1c; t1post = t1c), "
                    "seg/lesions/gt.nii.gz (anomaly = label > 0), optional brainmask.nii.gz.")
    parser.add_argument("--cases", required=True, nargs="+", type=Path, metavar="DIR",
                        help="a case folder, a folder of case folders, or a folder of such data sets")
    parser.add_argument("--model", nargs="+", metavar="NAME",
                        help=f"bundled model names or bundle folders (default: all bundled: "
                             f"{', '.join(list_bundled()) or 'none'}); '{BASELINE_MODEL}' is always added")
    parser.add_argument("--contrast", nargs="+", metavar="C",
                        help="contrasts to give each model, each evaluated separately; combine with + "
                             "(e.g. flair t1c flair+t2); default: every contrast the cases have, one at a time")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default: ./evaluation)")
    parser.add_argument("--healthy", type=Path, metavar="DIR",
                        help="healthy scans (scan folders, or image files whose name states the contrast, "
                             "e.g. IXI012_T1.nii.gz): adds volume-level AUROC and what is flagged on them")
    parser.add_argument("--median", type=int, choices=MEDIAN_KERNELS, default=None,
                        help="median filter kernel for maps and segmentations (default: each model's)")
    parser.add_argument("--threshold", default=None,
                        help="operating threshold: a number, 'calibrated' or 'otsu' (default: calibrated "
                             "when the model has a calibration, else otsu)")
    parser.add_argument("--fpr", type=float, default=None,
                        help="healthy false-positive rate of the calibrated threshold (default 0.01)")
    parser.add_argument("--min-size-mm3", type=float, default=None,
                        help="minimum lesion size of the segmentation (default: each model's)")
    parser.add_argument("--central-slices", type=float, default=None, metavar="FRACTION",
                        help="score only the central FRACTION of axial slices (e.g. 0.6, as the "
                             "earlier probes did); default: the whole brain")
    parser.add_argument("--brain-mask-method", default="auto", choices=BRAIN_MASK_METHODS,
                        help="for scans without brainmask.nii.gz (auto: the nonzero region of a "
                             "skull-stripped scan, else brain extraction)")
    add_device_argument(parser)
    parser.add_argument("--no-overlays", action="store_true", help="skip the per-case overlay images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from tqdm import tqdm

    from ..evaluation.report import print_summary, write_report

    if args.central_slices is not None and not 0 < args.central_slices <= 1:
        raise InputError("--central-slices must be a fraction in (0, 1], e.g. 0.6.")
    datasets: dict[str, list[Scan]] = {}
    for root in args.cases:
        for name, cases in find_cases(root).items():
            datasets.setdefault(name, []).extend(cases)
    healthy = []
    if args.healthy:
        healthy = scans_in_folder(args.healthy)
        unusable = [f"{s.id}: {s.problem}" for s in healthy if s.problem]
        if unusable:
            raise InputError(f"healthy scan {unusable[0]}.")
    settings = Settings(threshold=args.threshold, fpr=args.fpr, median=args.median,
                        min_size_mm3=args.min_size_mm3, brain_mask_method=args.brain_mask_method,
                        device=args.device,
                        central_slices=args.central_slices)
    device = resolve_device(args.device)
    tasks, skipped = build_tasks(args.model, parse_contrast_sets(args.contrast or []), datasets, device)
    if not tasks:
        raise InputError("no model can take the requested contrasts — see uadbrain models.")
    total = sum(task.accepts(case) for cases in datasets.values() for case in cases for task in tasks)
    total += sum(task.accepts(scan) for scan in healthy for task in tasks)
    bar = tqdm(total=total, desc="evaluate", unit="run", disable=args.quiet)

    def step(description: str) -> None:
        bar.set_postfix_str(description, refresh=False)
        bar.update(1)

    try:
        evaluation = evaluate(datasets, tasks, settings, healthy, overlays=not args.no_overlays,
                              progress=step, skipped=skipped)
    finally:
        bar.close()
    written = write_report(evaluation, args.out)
    print_summary(evaluation)
    print(f"wrote {len(written)} files to {args.out}")
    return 0
