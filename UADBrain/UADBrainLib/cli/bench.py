"""``uadbrain bench``: speed and memory of every bundled model, each run in its own process."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..bundle import CONTRASTS, find_bundle, list_bundled
from ..device import available_devices, choose_device
from ..errors import InputError
from ..evaluation.benchmark import (DEFAULT_REAL_CASES, bench_table, machine_info, machine_line, model_contrasts,
                                    phantom_head, real_case, run_in_subprocess)
from .options import add_device_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time each pipeline stage, peak memory, rethreshold latency, batch throughput",
        description="Benchmark every bundled model on a synthetic 1 mm 256³ head and on a real "
                    "evaluation case (when found), on CPU and on GPU when present. Prints a table and "
                    "writes bench.json and bench.md to --out.")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output folder (default: ./bench)")
    add_device_argument(parser, default=None, nargs="+",
                        help="devices: auto, cpu, cuda, cuda:N, mps (default: every one usable here, GPUs first)")
    parser.add_argument("--cases", type=Path, metavar="DIR",
                        help=f"evaluation cases; the first is benchmarked (default: {DEFAULT_REAL_CASES} "
                             "when present)")
    parser.add_argument("--model", nargs="+", metavar="NAME", help="models (default: every bundled model)")
    parser.add_argument("--contrast", nargs="+", choices=CONTRASTS, default=["flair"],
                        help="contrasts to give each model when it can use them (default: flair)")
    parser.add_argument("--size", type=int, default=256, help="synthetic head grid size (default 256 → 1 mm)")
    parser.add_argument("--repeats", type=int, default=20, help="rethreshold calls timed (default 20)")
    parser.add_argument("--batch-volumes", type=int, default=3,
                        help="extra detect runs with the loaded model, for volumes per minute (default 3)")
    parser.add_argument("--no-real", action="store_true", help="only the synthetic head")
    parser.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from ..io import write_image

    if args.size < 32:
        raise InputError("--size must be at least 32 voxels.")
    # auto: the device a run would choose here
    devices = list(dict.fromkeys(choose_device(d).device for d in args.device)) if args.device else available_devices()
    models = args.model or list_bundled()
    real = None if args.no_real else real_case(args.cases)
    rows = []
    with tempfile.TemporaryDirectory(prefix="uadbrain-bench-") as folder:
        needed = sorted({c for name in models for c in find_bundle(name).contrasts if c in CONTRASTS})
        images, _, brain = phantom_head(needed, args.size)
        phantom_paths = {}
        for contrast, image in images.items():
            phantom_paths[contrast] = str(Path(folder) / f"phantom_{contrast}.nii.gz")
            write_image(image, phantom_paths[contrast])
        brain_path = str(Path(folder) / "phantom_brainmask.nii.gz")
        write_image(brain, brain_path)
        del images, brain
        phantom = f"synthetic head {args.size}³ {256.0 / args.size:g} mm"
        cases = [(f"{phantom}, mask given", phantom_paths, brain_path),
                 (f"{phantom}, raw (brain extraction)", phantom_paths, None)]
        if real is not None:
            dataset, scan = real
            cases.append((f"{dataset}/{scan.id}", {c: str(p) for c, p in scan.images.items()},
                          str(scan.mask) if scan.mask else None))
        for name in models:
            bundle = find_bundle(name)
            for case_name, paths, mask in cases:
                contrasts = model_contrasts(bundle, paths, args.contrast)
                if contrasts is None:
                    continue
                for device in devices:
                    print(f"bench: {bundle.name} on {case_name} ({'+'.join(contrasts)}, {device}) …", flush=True)
                    rows.append(run_in_subprocess({
                        "model": bundle.name, "case": case_name, "device": device,
                        "images": {c: paths[c] for c in contrasts}, "mask": mask,
                        "repeats": args.repeats, "batch_volumes": args.batch_volumes}))
    document = {"uadbrain_version": __version__, "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": machine_info(), "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    table = bench_table(rows)
    (args.out / "bench.md").write_text(f"{machine_line(document['machine'])}\n\n{table}\n", encoding="utf-8")
    print(table)
    print(f"wrote bench.json and bench.md to {args.out}")
    return 1 if any("error" in row for row in rows) else 0
