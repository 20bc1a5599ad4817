"""Cohort scaling on this machine (issue 17): the same BIDS cohort in this process, on Dask with one
and two local workers, and as two job-array parts side by side.

    python docs/tools/cohort_scaling.py --scans 16 --out docs/results/cohort_scaling

The cohort: ``--scans`` subjects, each the bundled example FLAIR (1 mm, 256×256×~180) with its own
noise, in a BIDS dataset under a scratch folder; the default model (auto → thresholding on FLAIR).
Every configuration runs in a fresh process (as ``uadbrain bench`` does) into a fresh derivatives
folder (nothing is reused); the plain loop and one Dask worker run twice each, alternately (the
faster kept). Writes
``scaling.json`` and ``scaling.md`` (the table of docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def build_dataset(root: Path, count: int) -> Path:
    from UADBrainLib.inference.bundled_example import load_example

    flair = load_example()["flair"]
    array = sitk.GetArrayFromImage(flair)
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "scaling", "BIDSVersion": "1.10.0"}))
    rng = np.random.default_rng(0)
    for number in range(1, count + 1):
        folder = root / f"sub-{number:03d}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        noisy = array + (array > 0) * rng.normal(0, 0.01 * float(array.max()), array.shape).astype(np.float32)
        image = sitk.GetImageFromArray(noisy.astype(np.float32))
        image.CopyInformation(flair)
        sitk.WriteImage(image, str(folder / f"sub-{number:03d}_FLAIR.nii.gz"))
    return root


def timed_api_run(dataset: Path, out: Path, scheduler, workers: int) -> dict:
    from UADBrainLib.bundle import find_bundle
    from UADBrainLib.cohorts.bids import scans_from_bids
    from UADBrainLib.cohorts.layouts import BIDSDerivatives
    from UADBrainLib.cohorts.runner import CohortJob, run_cohort
    from UADBrainLib.inference.options import DEFAULTS

    scans = scans_from_bids(dataset, out_dir=out)
    bundle = find_bundle(None, ["flair"])
    layout = BIDSDerivatives(out, dataset)
    layout.prepare(bundle)
    job = CohortJob(str(bundle.path), "cpu", DEFAULTS, layout)
    started = time.perf_counter()
    rows = run_cohort(job, scans, out / "summary.csv", scheduler=scheduler, workers=workers)
    seconds = time.perf_counter() - started
    loads: dict[str, int] = {}
    for row in rows:
        loads[row["worker"]] = max(loads.get(row["worker"], 0), row["model_loads"])
    return {"seconds": round(seconds, 1), "scans": len(rows), "done": sum(r["status"] == "done" for r in rows),
            "per_scan_s": round(seconds / len(rows), 2), "workers_seen": len(loads),
            "model_loads_per_worker": sorted(loads.values()),
            "scans_per_worker": sorted(sum(r["worker"] == w for r in rows) for w in loads)}


def api_run_in_fresh_process(dataset: Path, out: Path, scheduler, workers: int, environment=None) -> dict:
    command = [sys.executable, __file__, "--one-run", str(dataset), str(out), str(scheduler), str(workers)]
    finished = subprocess.run(command, check=True, capture_output=True, text=True,
                              env={**os.environ, **(environment or {})})
    return json.loads(finished.stdout.splitlines()[-1])


def timed_cli_runs(dataset: Path, out: Path, parts: list[str | None]) -> dict:
    """``uadbrain detect --bids`` processes started together (one per part), timed to the last."""
    command = [sys.executable, "-m", "UADBrainLib.cli.main", "detect", "--bids", str(dataset), "--out", str(out),
               "--quiet"]
    started = time.perf_counter()
    processes = [subprocess.Popen(command + (["--part", part] if part else []), stdout=subprocess.DEVNULL)
                 for part in parts]
    codes = [process.wait() for process in processes]
    return {"seconds": round(time.perf_counter() - started, 1), "exit_codes": codes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one-run", nargs=4, metavar=("DATASET", "OUT", "SCHEDULER", "WORKERS"),
                        help=argparse.SUPPRESS)  # one configuration, in this process: its JSON on stdout
    args = parser.parse_args()
    if args.one_run:
        dataset, out, scheduler, workers = args.one_run
        print(json.dumps(timed_api_run(Path(dataset), Path(out), None if scheduler == "None" else scheduler,
                                       int(workers))))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="cohort-scaling-"))
    dataset = build_dataset(scratch / "dataset", args.scans)
    results = {"scans": args.scans, "cores": os.cpu_count(), "model": "auto (FLAIR: thresholding)"}
    # a Dask worker starts with the environment its nanny sets (BLAS and OpenMP at one thread, glibc
    # malloc trimmed): the plain loop is also run in it, to tell Dask's own cost from the environment's
    import distributed  # noqa: F401 - registers the distributed configuration
    import dask

    worker_environment = {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()}
    results["dask_worker_environment"] = worker_environment
    repeats = {"in_process": [], "in_process_worker_environment": [], "dask_1_worker": []}
    for repeat in range(2):
        repeats["in_process"].append(api_run_in_fresh_process(dataset, scratch / f"loop{repeat}", None, 1))
        repeats["in_process_worker_environment"].append(
            api_run_in_fresh_process(dataset, scratch / f"env-loop{repeat}", None, 1, worker_environment))
        repeats["dask_1_worker"].append(api_run_in_fresh_process(dataset, scratch / f"dask1-{repeat}", "local", 1))
    for name, runs in repeats.items():
        results[name] = {**min(runs, key=lambda run: run["seconds"]), "all_seconds": [r["seconds"] for r in runs]}
    results["dask_2_workers"] = api_run_in_fresh_process(dataset, scratch / "dask2", "local", 2)
    results["cli_in_process"] = timed_cli_runs(dataset, scratch / "cli", [None])
    results["cli_parts_1_2_and_2_2"] = timed_cli_runs(dataset, scratch / "parts", ["1/2", "2/2"])
    results["cli_gather_after_parts"] = timed_cli_runs(dataset, scratch / "parts", [None])
    one, two = results["dask_1_worker"]["seconds"], results["dask_2_workers"]["seconds"]
    loop = results["in_process"]["seconds"]
    parts, cli = results["cli_parts_1_2_and_2_2"]["seconds"], results["cli_in_process"]["seconds"]
    results["efficiency_dask"] = round(one / (2 * two), 3)
    results["efficiency_parts"] = round(cli / (2 * parts), 3)
    same_environment = results["in_process_worker_environment"]["seconds"]
    results["dask_overhead_per_scan_s"] = round((one - same_environment) / args.scans, 2)
    results["dask_overhead_percent"] = round(100 * (one - same_environment) / same_environment, 1)
    results["worker_environment_gain_percent"] = round(100 * (loop - same_environment) / loop, 1)
    best = min(two, parts)
    per_core_hour = 3600 * args.scans / (best * os.cpu_count())
    results["scans_per_core_hour"] = round(per_core_hour, 1)
    results["hours_for_10000_on_100_cores"] = round(10000 / (per_core_hour * 100), 2)
    (args.out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [("in this process (1 worker, no Dask)", results["in_process"]),
            ("in this process, in a Dask worker's environment", results["in_process_worker_environment"]),
            ("Dask LocalCluster, 1 worker", results["dask_1_worker"]),
            ("Dask LocalCluster, 2 workers", results["dask_2_workers"]),
            ("CLI, in this process", results["cli_in_process"]),
            ("CLI --part 1/2 and --part 2/2 side by side", results["cli_parts_1_2_and_2_2"]),
            ("CLI rerun without --part (gathers: every scan reused)", results["cli_gather_after_parts"])]
    lines = [f"{args.scans} scans (the bundled example FLAIR with noise, BIDS), model auto, {os.cpu_count()} cores:",
             "", "| run | wall s | s per scan | model loads per worker |", "|---|---:|---:|---|"]
    for name, row in rows:
        lines.append(f"| {name} | {row['seconds']} | {row['seconds'] / args.scans:.2f} | "
                     f"{row.get('model_loads_per_worker', '')} |")
    lines += ["", f"Efficiency T1/(2·T2): Dask {results['efficiency_dask']}, job-array parts "
                  f"{results['efficiency_parts']}. Dask overhead with one worker, against the loop in the same "
                  f"environment: {results['dask_overhead_per_scan_s']} s per scan "
                  f"({results['dask_overhead_percent']} %); that environment alone "
                  f"({', '.join(f'{k}={v}' for k, v in worker_environment.items())}) made the loop "
                  f"{results['worker_environment_gain_percent']} % faster.",
              f"{results['scans_per_core_hour']} scans per core-hour → 10,000 scans on 100 cores: "
              f"{results['hours_for_10000_on_100_cores']} h (at this machine's per-core speed, perfect scaling)."]
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
