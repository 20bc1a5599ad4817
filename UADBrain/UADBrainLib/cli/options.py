"""The detect options shared by the detect, batch and evaluation commands."""

from __future__ import annotations

import argparse

from ..bundle import list_bundled
from ..device import DEVICE_CHOICES
from ..inference.postprocessing import MEDIAN_KERNELS


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
    from ..inference.options import DetectOptions

    options = DetectOptions(threshold=args.threshold, median=args.median, min_size_mm3=args.min_size_mm3,
                            erosion_mm=args.erosion_mm, brain_mask_method=args.brain_mask_method,
                            bias_correction=args.bias_correction, device=args.device,
                            check_contrast=args.check_contrast)
    if args.fpr is not None:
        options.fpr = args.fpr
    return options
