"""The ``uadbrain`` command.

Subcommands live in their own modules, each exposing ``add_parser(subparsers)`` that registers
its arguments and sets ``func(args) -> int``; :data:`COMMAND_MODULES` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import __version__
from .bundle import CONTRASTS, find_bundle, list_bundled
from .device import DEVICE_CHOICES
from .errors import UADBrainError
from .postprocessing import MEDIAN_KERNELS

# modules adding subcommands besides detect and models (imported lazily: some need extras)
COMMAND_MODULES = ("training", "calibrate", "evaluation", "benchmark", "serve_command",
                   "brainmask_command")


class StageProgress:
    """A tqdm progress bar that shows the current pipeline stage."""

    def __init__(self, description: str = "detect", disable: bool = False):
        from tqdm import tqdm

        self.description = description
        self.bar = tqdm(total=100, desc=description, disable=disable,
                        bar_format="{desc:<32} {percentage:3.0f}%|{bar}| [{elapsed}]")

    def __call__(self, fraction: float, stage: str) -> None:
        self.bar.set_description_str(f"{self.description}: {stage}", refresh=False)
        self.bar.update(round(fraction * 100) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def add_detect_options(parser: argparse.ArgumentParser) -> None:
    """Model and post-processing options shared by detect, batch and evaluation commands."""
    parser.add_argument("--model", help=f"bundled model name or bundle folder (bundled: "
                        f"{', '.join(list_bundled()) or 'none'}; default: the first that handles the inputs)")
    parser.add_argument("--threshold", default=None,
                        help="a number (map units), 'calibrated' (healthy false-positive rate --fpr) "
                             "or 'otsu'; default: calibrated when the model has a calibration, else otsu")
    parser.add_argument("--fpr", type=float, default=None,
                        help="share of healthy brain voxels flagged by the calibrated threshold (default 0.01)")
    parser.add_argument("--median", type=int, choices=MEDIAN_KERNELS, default=None,
                        help="median filter kernel in voxels, 0 = off (default: the model's)")
    parser.add_argument("--min-size-mm3", type=float, default=None,
                        help="drop lesions smaller than this volume (default: the model's)")
    parser.add_argument("--erosion-mm", type=float, default=None,
                        help="erode the brain mask by this distance before thresholding")
    parser.add_argument("--brain-mask-method", default="auto",
                        help="auto (given mask, else nonzero region of a skull-stripped scan, else "
                             "brain extraction), nonzero, atlas")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                        help="N4 bias field correction (default: as the model expects)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="compute device: auto (CUDA when available), cpu or cuda")
    parser.add_argument("--no-contrast-check", dest="check_contrast", action="store_false",
                        help="do not refuse inputs that look like another contrast (e.g. a T1 given "
                             "as --flair, FLAIR and T2 swapped)")


def detect_options(args):
    from .pipeline import DetectOptions

    options = DetectOptions(threshold=args.threshold, median=args.median, min_size_mm3=args.min_size_mm3,
                            erosion_mm=args.erosion_mm, brain_mask_method=args.brain_mask_method,
                            bias_correction=args.bias_correction, device=args.device,
                            check_contrast=args.check_contrast)
    if args.fpr is not None:
        options.fpr = args.fpr
    return options


def _add_detect(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="detect anomalies in one scan (or a bundled example)",
                                   description="Detect anomalies in co-registered brain MRI volumes of one "
                                               "subject; writes anomaly_map.nii.gz, segmentation.nii.gz, "
                                               "lesions.csv, report.json and overview.png to --out.")
    for contrast in CONTRASTS:
        parser.add_argument(f"--{contrast}", metavar="FILE",
                            help=f"{contrast.upper()} volume (NIfTI, NRRD, MHA or DICOM folder)")
    parser.add_argument("--mask", metavar="FILE", help="brain mask (nonzero = brain), optional")
    parser.add_argument("--example", action="store_true",
                        help="run on the bundled synthetic example (a brain with one inserted lesion)")
    parser.add_argument("--batch", metavar="FOLDER_OR_CSV",
                        help="run a cohort with one model load: a folder of scan folders (<contrast>.nii.gz) "
                             "and/or image files, or a CSV with columns flair,t1,t2,t1c,mask,id; one output "
                             "folder per scan and summary.csv in --out; a rerun resumes")
    parser.add_argument("--contrast", choices=CONTRASTS,
                        help="with --batch: the contrast of plain image files (default: read from the file name)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_detect_options(parser)
    parser.set_defaults(func=run_detect)


def run_detect(args) -> int:
    from .outputs import write_result
    from .pipeline import detect

    images = {c: getattr(args, c) for c in CONTRASTS if getattr(args, c)}
    if args.batch:
        if images or args.mask or args.example:
            raise UADBrainError("--batch takes its scans from the folder or CSV; leave out --example, "
                                "--mask and the contrast files.")
        from .batch import run_batch

        return run_batch(args)
    mask = args.mask
    extra = {}
    example = None
    if args.example:
        if images:
            raise UADBrainError("--example runs on the bundled example; leave out the contrast files.")
        from .bundled_example import load_example

        example = load_example()
        images = {"flair": example["flair"]}
        extra = {"example": {"inputs": ["example_flair.nii.gz"], "ground_truth": "example_lesion.nii.gz"}}
    if not images:
        raise UADBrainError("no input — give at least one of --flair, --t1, --t2, --t1c (or --example).")
    progress = StageProgress(disable=args.quiet)
    try:
        result = detect(images, model=args.model, options=detect_options(args), mask=mask, progress=progress)
    finally:
        progress.close()
    written = write_result(result, args.out, extra_report=extra)
    if example is not None:  # the example's input and truth, to view beside the outputs
        from .io import write_image

        for name in ("flair", "lesion"):
            write_image(example[name], args.out / f"example_{name}.nii.gz")
    for warning in result.report.get("warnings", []):
        print(f"uadbrain: warning: {warning}", file=sys.stderr)
    print(f"{result.lesion_count} lesion(s), {result.flagged_volume_ml:.2f} mL flagged "
          f"(threshold {result.threshold:.3g}, {result.threshold_method}; model {result.model_name}; "
          f"brain mask: {result.report['brain_mask_method']})")
    for lesion in result.lesions[:5]:
        x, y, z = lesion.centroid_ras
        print(f"  lesion {lesion.label}: {lesion.volume_ml:.2f} mL, max score {lesion.max_score:.3g}, "
              f"centre RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm")
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the bundled models")
    parser.set_defaults(func=run_models)


def run_models(args) -> int:
    for index, name in enumerate(list_bundled()):
        bundle = find_bundle(name)
        marker = " (default)" if index == 0 else ""
        print(f"{name}{marker}: {bundle.summary()}")
        print(f"    {bundle.metadata.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uadbrain", description="Unsupervised anomaly detection in brain MRI.")
    parser.add_argument("--version", action="version", version=f"uadbrain {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_detect(subparsers)
    _add_models(subparsers)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{module_name}").add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UADBrainError as error:
        print(f"uadbrain: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uadbrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
