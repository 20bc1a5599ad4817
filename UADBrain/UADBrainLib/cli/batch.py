"""``uadbrain detect --batch FOLDER_OR_CSV`` / ``--bids DATASET``: a cohort, each worker loading the
model once.

Folder and CSV cohorts get ``OUT/<scan id>/`` (the files of ``uadbrain detect``); a BIDS dataset
gets ``OUT/`` as a BIDS derivatives dataset. ``OUT/summary.csv`` has a row per scan, rewritten as
each scan finishes, and ``OUT/cohort_report.html`` is written at the end. A rerun skips scans whose
outputs are complete and were made with the same model, inputs and settings (see cohorts/runner.py).
"""

from __future__ import annotations

from pathlib import Path

from ..bundle import BUNDLED_MODELS_DIR, find_bundle
from ..cohort import Scan, safe_id, scans_from_csv, scans_in_folder
from ..cohorts.runner import CohortJob, parse_part, run_cohort, select_part
from ..errors import InputError

SUMMARY_FILE = "summary.csv"
REPORT_FILE = "cohort_report.html"


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


def output_names(part: tuple[int, int] | None) -> tuple[str, str]:
    """The summary and report names; a part of a job array writes its own, so parts never collide."""
    if part is None:
        return SUMMARY_FILE, REPORT_FILE
    tag = f".part-{part[0]}-of-{part[1]}"
    return f"summary{tag}.csv", f"cohort_report{tag}.html"


def run_batch(args) -> int:
    """The ``detect --batch`` / ``--bids`` command; exit code 1 when any scan failed."""
    from tqdm import tqdm

    from ..cohorts.layouts import BIDSDerivatives, ScanFolders
    from ..cohorts.report import write_cohort_report
    from ..inference.result_files import check_output_folder
    from .options import detect_options

    out_dir = Path(args.out)
    check_output_folder(out_dir)
    part = parse_part(args.part) if args.part else None
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: give 1 or more.")
    if args.workers != 1 and args.scheduler != "local":
        raise InputError("--workers starts workers on this machine; a --scheduler ADDRESS has its own — give one.")
    if args.bids and args.dicom_seg:
        raise InputError("--dicom-seg references DICOM series; a BIDS dataset holds NIfTI images — leave it out "
                         "(or run the DICOM folders with --batch).")
    if args.bids:
        from ..cohorts.bids import scans_from_bids

        scans = scans_from_bids(args.bids, args.participant_label, args.session, out_dir)
        layout = BIDSDerivatives(out_dir, args.bids)
        source = args.bids
    else:
        scans = load_cohort(args.batch, args.contrast, out_dir)
        layout = ScanFolders(out_dir)
        source = args.batch
    contrasts = sorted({c for scan in scans for c in scan.images})
    if not contrasts:
        raise InputError(f"batch: no usable scan in '{source}' — {scans[0].problem}.")
    scans = select_part(scans, part)
    bundle = find_bundle(args.model, None if args.model else contrasts)
    options = detect_options(args)
    # a bundled model by name: each worker finds it in its own install (a cluster's paths may differ)
    bundled = bundle.path.parent.resolve() == BUNDLED_MODELS_DIR.resolve()
    job = CohortJob(bundle.name if bundled else str(bundle.path), options.device or "auto", options, layout,
                    dicom_seg=args.dicom_seg)
    # one local worker: this process, without Dask (the one place that decides it)
    scheduler = None if args.scheduler == "local" and args.workers == 1 else args.scheduler
    if scheduler in (None, "local"):
        job.model()  # a model that cannot load here is one refusal, not a failure per scan
    # (on a cluster the workers load it on their own hardware: a login node may have no GPU)
    layout.prepare(bundle)
    summary_name, report_name = output_names(part)
    where = "this process" if scheduler is None else (
        f"{args.workers} local workers" if scheduler == "local" else f"Dask at {scheduler}")
    progress = tqdm(total=len(scans), desc=f"{bundle.name} on {where}", unit="scan", disable=args.quiet)
    failed = 0

    def show(row: dict) -> None:
        nonlocal failed
        failed += row["status"] == "failed"
        progress.set_postfix_str(f"failed {failed}, last {row['id']}", refresh=False)
        progress.update()

    try:
        rows = run_cohort(job, scans, out_dir / summary_name, scheduler, args.workers, on_row=show)
    finally:
        progress.close()
    write_cohort_report(rows, out_dir / report_name, layout.overview_of,
                        f"UADBrain cohort: {Path(source).name} ({bundle.name}"
                        f"{f', part {part[0]} of {part[1]}' if part else ''})")
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "reused", "failed")}
    print(f"{len(rows)} scan(s): {counts['done']} done, {counts['reused']} already done, "
          f"{counts['failed']} failed — summary in {out_dir / summary_name}, report in {out_dir / report_name}")
    for row in rows:
        if row["status"] == "failed":
            print(f"  {row['id']}: {row['error']}")
    return 1 if counts["failed"] else 0
