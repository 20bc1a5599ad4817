"""``uadbrain detect --batch FOLDER_OR_CSV --out DIR``: a cohort with one model load.

Each scan's outputs go to ``DIR/<scan id>/`` (the files of ``uadbrain detect``), and
``DIR/summary.csv`` gets a row per scan, rewritten after every scan. A rerun skips scans whose
outputs are complete and were made with the same model, inputs and settings, so an interrupted
cohort resumes where it stopped. A scan that fails is recorded in the summary with its error and
the cohort goes on.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from ..bundle import find_bundle
from ..cohort import Scan, content_fingerprint, safe_id, scans_from_csv, scans_in_folder
from ..device import resolve_device
from ..errors import InputError, UADBrainError
from ..inference.models import load_model

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("id", "status", "volume_score", "volume_percentile_among_healthy",
                   "flagged_volume_ml", "lesion_count", "threshold", "threshold_method",
                   "seconds", "output", "error")


def load_cohort(source, contrast: str | None, out_dir) -> list[Scan]:
    """Scans from a CSV file or a folder; ids made unique and safe as folder names."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"batch: '{source}' does not exist — give a folder of scans or a CSV file.")
    scans = (scans_in_folder(source, contrast, exclude=[out_dir]) if source.is_dir()
             else scans_from_csv(source))
    seen: set[str] = set()
    for scan in scans:
        scan.id = safe_id(scan.id)
        if scan.id in seen and not scan.problem:
            scan.problem = f"another scan has the id '{scan.id}' — give each scan its own id"
        seen.add(scan.id)
    return scans


def run_settings(scan: Scan, model_name: str, model_version, options) -> dict:
    """What a scan's outputs depend on — model, settings and the inputs' content, not only their
    paths; outputs made from anything else are recomputed."""
    files = {**scan.images, **({"mask": scan.mask} if scan.mask else {})}
    return {"model": model_name, "model_version": model_version,
            "inputs": {c: str(Path(p).resolve()) for c, p in scan.images.items()},
            "mask": str(Path(scan.mask).resolve()) if scan.mask else None,
            "content": {name: content_fingerprint(path) for name, path in files.items()},
            "options": {k: getattr(options, k) for k in ("threshold", "fpr", "median", "min_size_mm3",
                                                          "erosion_mm", "brain_mask_method", "bias_correction", "age")}}


def completed_report(scan_dir: Path, settings: dict) -> dict | None:
    """The report of a finished run of this scan with these settings, else None."""
    from ..inference.result_files import OUTPUT_FILES

    if not all((scan_dir / name).is_file() for name in OUTPUT_FILES):
        return None
    try:
        report = json.loads((scan_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if report.get("batch") == json.loads(json.dumps(settings)) else None


def summary_row(scan: Scan, status: str, report: dict | None = None, seconds=None, error=None) -> dict:
    report = report or {}
    return {"id": scan.id, "status": status,
            "volume_score": report.get("volume_score"),
            "volume_percentile_among_healthy": report.get("volume_percentile_among_healthy"),
            "flagged_volume_ml": report.get("flagged_volume_ml"),
            "lesion_count": report.get("lesion_count"),
            "threshold": report.get("threshold"), "threshold_method": report.get("threshold_method"),
            "seconds": seconds, "output": scan.id if report else None, "error": error}


def write_summary(rows: list[dict], path: Path) -> None:
    """Write the summary CSV atomically (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in SUMMARY_COLUMNS})
    os.replace(partial, path)


def process_scan(scan: Scan, model, options, out_dir: Path) -> dict:
    """Run (or reuse) one scan; never raises for a problem with the scan itself."""
    from ..inference.pipeline import detect
    from ..inference.result_files import check_output_folder, write_result

    if scan.problem:
        return summary_row(scan, "failed", error=scan.problem)
    try:
        options = replace(options, age=scan.age) if scan.age is not None else options  # the CSV's age column
    except InputError as error:
        return summary_row(scan, "failed", error=f"{error} (its age column)")
    try:
        settings = run_settings(scan, model.bundle.name, model.bundle.metadata.get("version"), options)
    except OSError as error:
        return summary_row(scan, "failed", error=f"cannot read '{error.filename}' ({error.strerror}) — check it")
    scan_dir = out_dir / scan.id
    report = completed_report(scan_dir, settings)
    if report is not None:
        return summary_row(scan, "reused", report)
    started = time.perf_counter()
    try:
        check_output_folder(scan_dir, [*scan.images.values(), *([scan.mask] if scan.mask else [])])
        result = detect(scan.images, model=model, options=options, mask=scan.mask)
        write_result(result, scan_dir, extra_report={"batch": settings, "scan_id": scan.id}, replace_folder=True)
    except UADBrainError as error:
        return summary_row(scan, "failed", error=str(error))
    except Exception as error:  # noqa: BLE001 - one broken scan must not stop the cohort
        return summary_row(scan, "failed", error=f"{type(error).__name__}: {error}")
    return summary_row(scan, "done", result.summary(), seconds=round(time.perf_counter() - started, 2))


def run_batch(args) -> int:
    """The ``detect --batch`` command; exit code 1 when any scan failed."""
    from tqdm import tqdm

    from ..inference.result_files import check_output_folder
    from .options import detect_options

    out_dir = Path(args.out)
    check_output_folder(out_dir)
    scans = load_cohort(args.batch, args.contrast, out_dir)
    contrasts = sorted({c for scan in scans for c in scan.images})
    if not contrasts:
        raise InputError(f"batch: no usable scan in '{args.batch}' — {scans[0].problem}.")
    bundle = find_bundle(args.model, None if args.model else contrasts)
    options = detect_options(args)
    model = load_model(bundle, resolve_device(options.device))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    progress = tqdm(scans, desc=f"batch ({bundle.name})", unit="scan", disable=args.quiet)
    for scan in progress:
        progress.set_postfix_str(scan.id, refresh=False)
        rows.append(process_scan(scan, model, options, out_dir))
        write_summary(rows, out_dir / SUMMARY_FILE)
    progress.close()
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "reused", "failed")}
    print(f"{len(rows)} scan(s): {counts['done']} done, {counts['reused']} already done, "
          f"{counts['failed']} failed — summary in {out_dir / SUMMARY_FILE}")
    for row in rows:
        if row["status"] == "failed":
            print(f"  {row['id']}: {row['error']}")
    return 1 if counts["failed"] else 0
