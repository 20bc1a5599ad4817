"""``uadbrain validation-set``: synthetic evaluation cases with anomalies by type, at clinical grids."""

from __future__ import annotations

from pathlib import Path

from ..bundle import CONTRASTS
from ..evaluation.acquisition import parse_spacing


def add_parser(subparsers) -> None:
    # the synthesis package imports torch: it is imported when the command runs, not for --help
    parser = subparsers.add_parser(
        "validation-set", help="write synthetic cases with anomalies by type, to choose methods on",
        description="Draw synthetic brains from held-out label maps, insert anomalies of one type per "
                    "dataset (MS-like lesions, tumours, brighter, darker, subtle, textured) and write them "
                    "as evaluation cases, at 1 mm and at other acquisition grids. Run 'uadbrain evaluate "
                    "--cases OUT' on them: methods are chosen there, not on the real evaluation scans.")
    parser.add_argument("--label-maps", type=Path, required=True, metavar="DIR",
                        help="SynthSeg label maps (e.g. ../shared/data/label_maps/synthseg)")
    parser.add_argument("--out", type=Path, default=Path("validation"), help="output folder (default: ./validation)")
    parser.add_argument("--types", nargs="+", metavar="TYPE",
                        help="anomaly types, one dataset each: ms, tumour, bright, dark, subtle, texture (default: all)")
    parser.add_argument("--cases-per-type", type=int, default=4, metavar="N", help="cases per type (default 4)")
    parser.add_argument("--acquisitions", nargs="+", default=["1", "0.45x0.45x5"], metavar="MM",
                        help="voxel sizes to write each case at (default: 1 0.45x0.45x5)")
    parser.add_argument("--contrasts", nargs="+", choices=CONTRASTS, default=list(CONTRASTS),
                        help="contrasts written per case (default: all four)")
    parser.add_argument("--held-out-maps", type=int, metavar="N",
                        help="brains come from the last N label maps, which the bundled models never trained "
                             "on (default 4)")
    parser.add_argument("--lesion-masks", type=Path, metavar="DIR",
                        help="binary lesion masks whose shapes outline the MS-like lesions (e.g. "
                             "../shared/data/eval/ms_lesjak2017/masks_only); without, caps and blobs")
    parser.add_argument("--seed", type=int, default=7_000_000, help="random seed (default 7000000)")
    parser.set_defaults(func=run_validation_set)


def run_validation_set(args) -> int:
    from ..errors import InputError
    from ..synthesis.validation_set import ANOMALY_TYPES, DEFAULT_HELD_OUT_MAPS, write_validation_set

    if args.cases_per_type < 1:
        raise InputError("--cases-per-type must be at least 1.")
    held_out = DEFAULT_HELD_OUT_MAPS if args.held_out_maps is None else args.held_out_maps
    folders = write_validation_set(args.label_maps, args.out, args.types or list(ANOMALY_TYPES), args.cases_per_type,
                                   [parse_spacing(a) for a in args.acquisitions], args.contrasts,
                                   held_out, args.lesion_masks, args.seed)
    print(f"wrote {len(folders)} datasets of {args.cases_per_type} cases to {args.out}; evaluate them with "
          f"'uadbrain evaluate --cases {args.out} --model NAME'")
    return 0
