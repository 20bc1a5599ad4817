"""``uadbrain calibrate``: a model's healthy calibration, written into its bundle."""

from __future__ import annotations

from ..bundle import find_bundle, write_metadata
from .options import add_device_argument
from ..training.calibrate import (CALIBRATION_SEED, DEFAULT_VOLUMES, calibrate_model, folder_cases, resolve_label_maps,
                                  synthetic_cases)


def add_parser(subparsers) -> None:

    parser = subparsers.add_parser(
        "calibrate", help="calibrate a model's automatic threshold on healthy brains",
        description="Run healthy volumes (synthetic, from label maps, or a folder of real healthy "
                    "scans) through the pipeline and store the healthy score distribution in the "
                    "bundle's metadata.json, so that --threshold calibrated means a false-positive "
                    "rate on healthy brains.")
    parser.add_argument("--model", required=True, help="bundled model name or bundle folder (written in place)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic', a folder of healthy scans or a BIDS dataset (a model conditioned "
                             "on age reads each subject's age from the folder's participants.tsv or "
                             "participants.csv, a BIDS dataset's from participants.tsv)")
    parser.add_argument("--contrast", action="append", dest="contrasts",
                        help="contrast(s) to calibrate (default: all the model uses)")
    parser.add_argument("--label-maps", help="folder of label maps for --data synthetic")
    parser.add_argument("--volumes", type=int, default=DEFAULT_VOLUMES, help="healthy volumes to use")
    parser.add_argument("--spacing", type=float, default=1.0, help="synthetic volume spacing in mm")
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    add_device_argument(parser)
    parser.set_defaults(func=run_calibrate)


def run_calibrate(args) -> int:
    from tqdm import tqdm

    from ..device import resolve_device

    from ..inference.models.normative import age_conditioning

    bundle = find_bundle(args.model)
    contrasts = args.contrasts or bundle.contrasts
    conditioning = age_conditioning(bundle.metadata.get("network", {}))
    ages = tuple(conditioning["range"]) if conditioning else None  # each brain scored at its own age, as trained
    if args.data == "synthetic":
        cases, description = synthetic_cases(resolve_label_maps(args.label_maps), contrasts,
                                             args.volumes, args.spacing, args.seed, ages)
    else:
        cases, description = folder_cases(args.data, contrasts, args.volumes, ages)
    bar = tqdm(total=args.volumes, desc=f"calibrate {bundle.name}")
    calibration, measured = calibrate_model(bundle, cases, resolve_device(args.device), description,
                                            progress=lambda name: bar.update(1))
    bar.close()
    bundle.metadata["calibration"] = calibration
    write_metadata(bundle.path, bundle.metadata)
    print(f"calibrated {bundle.name} on {measured['cases']} healthy volume(s) "
          f"({measured['seconds_per_case']:.1f} s each); wrote {bundle.path / 'metadata.json'}")
    return 0
