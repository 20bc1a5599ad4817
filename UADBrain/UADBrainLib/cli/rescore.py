"""``uadbrain rescore``: a trained reconstruction model with another anomaly score, as a new bundle."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..bundle import find_bundle
from .options import add_device_argument
from ..inference.models.scores import SCORES
from ..training.calibrate import CALIBRATION_SEED, DEFAULT_VOLUMES, resolve_label_maps, synthetic_cases
from .train import integer_list


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "rescore", help="score a trained reconstruction model another way, as a new calibrated bundle",
        description="Write a new bundle that scores the reconstructions of a trained DAE, autoencoder or "
                    "diffusion model with another score (residual, ssim, ssim-ens, perceptual, mahalanobis), "
                    "calibrated on synthetic healthy brains. A bundled source's weights are shared, not copied.")
    parser.add_argument("--model", required=True, help="bundled model name or bundle folder to rescore")
    parser.add_argument("--score", required=True, choices=SCORES,
                        help="residual: the residual in the lesion direction (L1); ssim: 1-SSIM, 11-pixel window; "
                             "ssim-ens: mean 1-SSIM over windows 3-11 (and noise levels); perceptual: LPIPS-style "
                             "distance of a segmenter's features; mahalanobis: distance to several reconstructions "
                             "(diffusion); kl-combined: residual times the KL term's input gradient (vae)")
    parser.add_argument("--out", required=True, type=Path, help="new bundle folder (must not exist)")
    parser.add_argument("--name", help="bundle name (default: the --out folder's name)")
    parser.add_argument("--feature-model", help="perceptual: the segmenter bundle whose encoder gives the features "
                        "(default: segmenter)")
    parser.add_argument("--noise-levels", type=integer_list, default=(),
                        help="diffusion: noise levels to reconstruct from, comma-separated steps of 1000 "
                             "(default for ssim-ens and mahalanobis: 50, 75 and 100 %% of the trained level)")
    parser.add_argument("--ensemble-seeds", type=int, default=2, help="diffusion: reconstructions per noise level")
    parser.add_argument("--label-maps", help="folder of label maps for the synthetic calibration brains "
                        "(default: the bundled example's)")
    parser.add_argument("--volumes", type=int, default=DEFAULT_VOLUMES, help="healthy calibration volumes")
    parser.add_argument("--spacing", type=float, default=1.0, help="calibration volume spacing in mm")
    add_device_argument(parser)
    parser.set_defaults(func=run_rescore)


def run_rescore(args) -> int:
    from tqdm import tqdm

    from ..device import resolve_device
    from ..training.rescore import rescore

    bundle = find_bundle(args.model)
    cases, description = synthetic_cases(resolve_label_maps(args.label_maps), bundle.contrasts, args.volumes,
                                         args.spacing, CALIBRATION_SEED)
    bar = tqdm(total=args.volumes, desc=f"calibrate {args.out.name}")
    out = rescore(bundle, args.out, args.score, cases, description, resolve_device(args.device), name=args.name,
                  feature_model=args.feature_model, noise_levels=args.noise_levels, seeds=args.ensemble_seeds,
                  command="uadbrain " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                  progress=lambda _: bar.update(1))
    bar.close()
    print(f"wrote bundle {out} (use it with --model {out})")
    return 0
