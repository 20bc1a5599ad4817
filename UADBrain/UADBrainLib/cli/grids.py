"""``uadbrain grids``: the same scans at other acquisition grids — does the answer hold?"""

from __future__ import annotations

import csv
from dataclasses import asdict, fields
from pathlib import Path

from ..bundle import CONTRASTS
from ..cohort import find_cases, scans_in_folder
from .options import add_device_argument
from ..errors import InputError
from ..evaluation.acquisition import ACQUISITIONS, GridRow, comparison_table, grid_invariance, parse_spacing
from ..inference.options import DetectOptions


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "grids", help="run a model on cases re-acquired at other voxel sizes (grid invariance)",
        description="Simulate each case (images, brain mask, ground truth) at other voxel sizes with "
                    "each voxel's slice profile, run detect on every version, and compare flagged "
                    "volume and Dice with the first acquisition. Writes grids.csv and grids.md to --out.")
    parser.add_argument("--cases", nargs="+", type=Path, default=[], metavar="DIR",
                        help="case folders as for 'uadbrain evaluate' (with a ground truth)")
    parser.add_argument("--healthy", type=Path, metavar="DIR",
                        help="healthy scans as for 'uadbrain evaluate --healthy': all they flag is false positive")
    parser.add_argument("--contrast", nargs="+", default=["flair"], choices=CONTRASTS,
                        help="contrasts given to the model (default: flair)")
    parser.add_argument("--model", default=None, help="model name or bundle folder (default: auto)")
    parser.add_argument("--acquisitions", nargs="+", default=list(ACQUISITIONS), metavar="MM",
                        help=f"voxel sizes, the first the reference (default: {' '.join(ACQUISITIONS)})")
    parser.add_argument("--out", type=Path, default=Path("grids"), help="output folder (default: ./grids)")
    add_device_argument(parser)
    parser.set_defaults(func=run_grids)


def run_grids(args) -> int:
    for acquisition in args.acquisitions:
        parse_spacing(acquisition)
    scans = [scan for root in args.cases for cases in find_cases(root).values() for scan in cases
             if all(c in scan.images for c in args.contrast)]
    if args.healthy:
        scans += [scan for scan in scans_in_folder(args.healthy)
                  if not scan.problem and all(c in scan.images for c in args.contrast)]
    if not scans:
        raise InputError(f"no scan with {'+'.join(args.contrast)} under the given folders — give --cases or --healthy.")
    args.out.mkdir(parents=True, exist_ok=True)

    def show(row: GridRow) -> None:
        print(f"{row.case} @ {row.acquisition} mm: {row.flagged_ml:.2f} mL flagged, Dice {row.dice:.3f}, "
              f"{row.lesions} lesions, {row.seconds:.1f} s", flush=True)

    rows = grid_invariance(scans, args.contrast, args.model, args.acquisitions,
                           DetectOptions(device=args.device), progress=show)
    with open(args.out / "grids.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(GridRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    table = comparison_table(rows)
    (args.out / "grids.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0
