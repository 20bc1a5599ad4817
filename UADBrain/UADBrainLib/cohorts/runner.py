"""Running a cohort: every scan once, in this process or on Dask workers, streamed into a summary.

A :class:`CohortJob` holds what every scan is run with (model bundle, device, options, output
layout) and is sent to each worker; a worker process loads the model the first time it needs it
and keeps it for every later scan. A scan whose outputs are complete and were made with the same
model, inputs and settings is reused, so an interrupted cohort — or one whose worker was killed —
resumes where it stopped. A scan that fails is a row of the summary with its reason; the cohort
goes on.
"""

from __future__ import annotations

import csv
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..cohort import Scan, content_fingerprint
from ..errors import InputError, UADBrainError
from ..inference.options import DetectOptions
from ..io import replaced_atomically

SUMMARY_COLUMNS = ("id", "status", "volume_score", "volume_percentile_among_healthy",
                   "flagged_volume_ml", "lesion_count", "threshold", "threshold_method",
                   "seconds", "output", "age", "sex", "worker", "error")
SETTINGS_OPTIONS = ("threshold", "fpr", "median", "min_size_mm3", "erosion_mm", "brain_mask_method",
                    "bias_correction", "age")

SUMMARY_INTERVAL_S = 2.0
_loaded_models: dict[tuple[str, str], object] = {}  # per process: a worker loads each model once
_load_lock = threading.Lock()  # a worker with several threads still loads it once


@dataclass(frozen=True)
class CohortJob:
    """What every scan of a cohort is run with; pickled to the workers."""

    bundle: str  # a bundled model's name (found in each worker's own install) or a bundle folder
    device: str  # as asked ("auto", "cpu", "cuda"): resolved where the model loads, on the worker
    options: DetectOptions
    layout: object  # ScanFolders or BIDSDerivatives: where and how a scan's outputs are written
    dicom_seg: bool = False  # also a DICOM SEG for scans given as a DICOM series
    torch_threads: int | None = None  # per worker process, so that workers share the cores (None: see model())

    def model(self):
        """This process's model, loaded on first use."""
        from ..bundle import find_bundle
        from ..device import resolve_device
        from ..inference.models import load_model

        key = (self.bundle, self.device)
        with _load_lock:
            if key not in _loaded_models:
                threads = self.torch_threads or dask_worker_threads()
                if threads:
                    import torch

                    torch.set_num_threads(threads)
                _loaded_models[key] = load_model(find_bundle(self.bundle), resolve_device(self.device))
            return _loaded_models[key]


def dask_worker_threads() -> int | None:
    """The threads of the Dask worker this runs in (a cluster's worker: PyTorch uses as many, not
    every core of the node), None outside one."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or cgroup allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def model_loads() -> int:
    """How many models this process has loaded (one per worker is the goal)."""
    return len(_loaded_models)


def run_settings(scan: Scan, model_name: str, model_version, options: DetectOptions, dicom_seg: bool) -> dict:
    """What a scan's outputs depend on — model, settings and the inputs' content, not only their
    paths; outputs made from anything else are recomputed."""
    files = {**scan.images, **({"mask": scan.mask} if scan.mask else {})}
    return {"model": model_name, "model_version": model_version,
            "inputs": {c: str(Path(p).resolve()) for c, p in scan.images.items()},
            "mask": str(Path(scan.mask).resolve()) if scan.mask else None,
            "content": {name: content_fingerprint(path) for name, path in files.items()},
            "options": {k: getattr(options, k) for k in SETTINGS_OPTIONS},
            **({"dicom_seg": True} if dicom_seg else {})}


def summary_row(scan: Scan, status: str, report: dict | None = None, seconds=None, error=None,
                output: str | None = None) -> dict:
    report = report or {}
    return {"id": scan.id, "status": status,
            "volume_score": report.get("volume_score"),
            "volume_percentile_among_healthy": report.get("volume_percentile_among_healthy"),
            "flagged_volume_ml": report.get("flagged_volume_ml"),
            "lesion_count": report.get("lesion_count"),
            "threshold": report.get("threshold"), "threshold_method": report.get("threshold_method"),
            "seconds": seconds, "output": output if report else None, "age": scan.age, "sex": scan.sex,
            "worker": worker_name(), "error": error,
            "model_loads": model_loads()}  # not a summary column: for measuring


def process_scan(job: CohortJob, scan: Scan) -> dict:
    """Run (or reuse) one scan; never raises for a problem with the scan itself."""
    from ..inference.pipeline import detect

    if scan.problem:
        return summary_row(scan, "failed", error=scan.problem)
    notes = {}
    try:
        model = job.model()
        options = job.options
        if scan.age is not None:
            try:
                options = replace(job.options, age=scan.age)
            except InputError as error:
                if "age" in model.conditioning:
                    return summary_row(scan, "failed", error=f"{error} (its age in the scan list or participants.tsv)")
                notes["age_not_read"] = f"'{scan.age}' is no age in years; the model does not use one"
        settings = run_settings(scan, model.bundle.name, model.bundle.metadata.get("version"), options,
                                job.dicom_seg)
    except OSError as error:
        return summary_row(scan, "failed", error=f"cannot read '{error.filename}' ({error.strerror}) — check it")
    output = job.layout.output_of(scan)
    report = job.layout.completed_report(scan, settings)
    if report is not None:
        return summary_row(scan, "reused", report, output=output)
    started = time.perf_counter()
    try:
        job.layout.check(scan)
        result = detect(scan.images, model=model, options=options, mask=scan.mask)
        extra = {"batch": settings, "scan_id": scan.id, **notes,
                 **({"sex": scan.sex} if scan.sex else {})}
        job.layout.write(result, scan, extra, dicom_seg=job.dicom_seg)
    except UADBrainError as error:
        return summary_row(scan, "failed", error=str(error))
    except Exception as error:  # noqa: BLE001 - one broken scan must not stop the cohort
        return summary_row(scan, "failed", error=f"{type(error).__name__}: {error}")
    return summary_row(scan, "done", result.summary(), seconds=round(time.perf_counter() - started, 2),
                       output=output)


def write_summary(rows: Iterable[dict], path: Path) -> None:
    """Write the summary CSV atomically (a reader never sees half a file)."""
    with replaced_atomically(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in SUMMARY_COLUMNS})


def select_part(scans: list[Scan], part: tuple[int, int] | None) -> list[Scan]:
    """Part K of N (``--part K/N``, for job arrays): every N-th scan in the order of their ids, so
    that parts are disjoint, together whole, and the same on every machine."""
    if part is None:
        return scans
    index, count = part
    return sorted(scans, key=lambda scan: scan.id)[index - 1::count]


def parse_part(text: str) -> tuple[int, int]:
    """'K/N' → (K, N), refused unless 1 ≤ K ≤ N."""
    try:
        index, count = (int(value) for value in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise InputError(f"--part '{text}': give K/N with 1 ≤ K ≤ N, e.g. --part 2/8 for the second of 8 jobs.")
    return index, count


def run_in_process(job: CohortJob, scans: list[Scan]) -> Iterator[tuple[int, dict]]:
    """(scan number, row) for the scans one after another in this process (one worker: no
    scheduler to pay for)."""
    for number, scan in enumerate(scans):
        yield number, process_scan(job, scan)


# A task the cluster loses without a worker dying on it is sent again this many times: a finished
# result whose worker was killed before the client gathered it makes distributed 2026.8's
# Future.result raise "RuntimeError: <asyncio.locks.Event …> is bound to a different event loop"
# (seen in CI, and in 2 of 40 reruns of the worker-killing test here, both then reused). A task
# that raised on its worker (the future's status "error": the model cannot load there, say) is not
# sent again: it would fail the same way.
CLUSTER_LOSSES_RETRIED = 2
WORKER_DIED = ("every worker that ran it died (killed, or out of memory?), as often as the scheduler allows "
               "(distributed.scheduler.allowed-failures) — run it alone, e.g. uadbrain detect on its files, to see why")


def run_on_dask(job: CohortJob, scans: list[Scan], scheduler: str = "local",
                workers: int = 2) -> Iterator[tuple[int, dict]]:
    """The scans as Dask tasks, (scan number, row) yielded as they finish (in any order).

    ``scheduler`` "local" starts a ``LocalCluster`` of ``workers`` processes (one thread each, the
    cores shared out among them); anything else is the address of a running ``dask.distributed``
    scheduler (e.g. started by dask-jobqueue). A worker that dies has its scans rerun on another
    (Dask's own retry); a scan that kills every worker it meets is reported failed. A task the
    cluster loses otherwise is sent again (``CLUSTER_LOSSES_RETRIED``).
    """
    try:
        from distributed import Client, LocalCluster, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise InputError('more than one worker needs Dask — pip install "uadbrain[cohort]", or leave out '
                         '--workers/--scheduler to run in this process.') from None
    import logging
    import uuid

    cluster = None
    if scheduler == "local":
        job = replace(job, torch_threads=max(1, usable_cores() // workers))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        address = cluster
    else:
        address = scheduler
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as error:
        if cluster is not None:
            cluster.close()
        raise InputError(f"cannot reach the Dask scheduler '{scheduler}' ({error}) — check the address "
                         "(tcp://HOST:8786) and that the scheduler runs.") from None
    run = uuid.uuid4().hex[:12]  # keys of this run alone: another cohort on a shared scheduler has its own
    futures: dict = {}  # future → (scan number, how often the scan was sent)
    finished = as_completed()

    def send(number: int, sent: int) -> None:
        future = client.submit(process_scan, job, scans[number], pure=False,
                               key=f"uadbrain-{run}-{number}-{sent}-{scans[number].id}")
        futures[future] = (number, sent)
        finished.add(future)

    try:
        for number in range(len(scans)):
            send(number, 1)
        for future in finished:
            number, sent = futures.pop(future)
            try:
                row = future.result()
            except KilledWorker:
                row = summary_row(scans[number], "failed", error=WORKER_DIED)
            except Exception as error:  # noqa: BLE001 - the task raised, or the cluster lost it
                if future.status != "error" and sent <= CLUSTER_LOSSES_RETRIED:
                    logging.getLogger(__name__).warning("scan %s: %s: %s — sent again", scans[number].id,
                                                        type(error).__name__, error)
                    send(number, sent + 1)  # outputs its first run completed are reused, not recomputed
                    continue
                row = summary_row(scans[number], "failed", error=f"{type(error).__name__}: {error}")
            finally:
                future.release()
            yield number, row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_cohort(job: CohortJob, scans: list[Scan], summary_path: Path, scheduler: str | None = None,
               workers: int = 1, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Every scan's row, in the cohort's order: in this process (``scheduler`` None), on
    ``workers`` local Dask workers ("local") or on a running Dask cluster (its address). The summary
    is rewritten as scans finish (at most every ``SUMMARY_INTERVAL_S``: a cohort of thousands would
    spend its time rewriting it) and at the end."""
    if scheduler is None:
        rows_as_they_finish = run_in_process(job, scans)
    else:
        rows_as_they_finish = run_on_dask(job, scans, scheduler, workers)
    finished: dict[int, dict] = {}
    written = 0.0
    for number, row in rows_as_they_finish:
        finished[number] = row
        if time.monotonic() - written > SUMMARY_INTERVAL_S:
            write_summary([finished[n] for n in sorted(finished)], summary_path)
            written = time.monotonic()
        if on_row:
            on_row(row)
    rows = [finished[n] for n in sorted(finished)]
    write_summary(rows, summary_path)
    return rows
