"""``uadbrain bench``: time per pipeline stage, peak memory, rethreshold latency, batch throughput.

Each (model, case, device) runs in a fresh Python process (``python -m UADBrainLib.evaluation.benchmark
--worker SPEC``), so its peak resident memory (``ru_maxrss``) is that run's own and the first
``detect`` call is cold, as a user's would be. In that process:

* one ``detect`` with the model loaded once: the pipeline's own stage timings
  (``Result.report["timings_s"]``) and the wall time;
* the median of repeated ``Result.rethreshold`` calls at different thresholds (the slider: a
  comparison and a connected-component labelling on the cached map);
* ``--batch-volumes`` more ``detect`` calls with the same loaded model: volumes per minute.

Cases: a synthetic raw head built in code (1 mm, 256³ by default: skull, scalp, CSF, grey and
white matter, ventricles, one lesion, bias field and noise), once with its brain mask given and
once without (the pipeline's brain extraction path for raw heads), and a real evaluation case
when one is found (``--cases``, default ``../shared/data/eval`` from the current folder).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..bundle import CONTRASTS, find_bundle
from ..errors import InputError

DEFAULT_REAL_CASES = Path("..") / "shared" / "data" / "eval"
WORKER_TIMEOUT_S = 3600
# tissue intensities of the phantom per contrast: scalp, skull, CSF, grey matter, white matter, lesion
PHANTOM_TISSUES = ("scalp", "skull", "csf", "gm", "wm", "lesion")
PHANTOM_INTENSITY = {
    "flair": (0.9, 0.05, 0.15, 0.75, 0.6, 1.25),
    "t1": (0.9, 0.05, 0.2, 0.55, 0.8, 0.4),
    "t2": (0.6, 0.05, 1.2, 0.8, 0.6, 1.1),
    "t1c": (0.9, 0.05, 0.2, 0.55, 0.8, 1.0),
}


# --------------------------------------------------------------------------- synthetic head

def phantom_labels(size: int = 256, field_mm: float = 256.0) -> tuple[np.ndarray, float]:
    """Tissue labels (indices into PHANTOM_TISSUES, -1 = air) of an ellipsoidal head, and spacing."""
    spacing = field_mm / size
    axes = [(np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing for _ in range(3)]
    z, y, x = np.ix_(*axes)  # array order [k, j, i]
    radius = np.sqrt((x / 75.0) ** 2 + (y / 95.0) ** 2 + (z / 88.0) ** 2)
    # cortical folding: the grey/white boundary and the brain surface undulate
    folds = 0.025 * np.sin(x / 6.0) * np.sin(y / 7.0) * np.cos(z / 5.0)
    labels = np.full(radius.shape, -1, np.int8)
    for tissue, outer in (("scalp", 1.0), ("skull", 0.93), ("csf", 0.86)):
        labels[radius < outer] = PHANTOM_TISSUES.index(tissue)
    labels[radius + folds < 0.82] = PHANTOM_TISSUES.index("gm")
    labels[radius - folds < 0.70] = PHANTOM_TISSUES.index("wm")
    for side in (-1, 1):  # lateral ventricles
        ventricle = ((x - side * 9.0) / 6.0) ** 2 + (y / 22.0) ** 2 + ((z - 8.0) / 9.0) ** 2 < 1.0
        labels[ventricle] = PHANTOM_TISSUES.index("csf")
    lesion = (x - 28.0) ** 2 + (y + 20.0) ** 2 + (z - 18.0) ** 2 < 9.0 ** 2
    labels[lesion] = PHANTOM_TISSUES.index("lesion")
    return labels, spacing


def phantom_head(contrasts=("flair",), size: int = 256, seed: int = 0):
    """A synthetic raw head (skull not removed) per contrast, its lesion mask and its brain mask
    (CSF, grey and white matter, lesion), as SimpleITK images."""
    labels, spacing = phantom_labels(size)
    rng = np.random.default_rng(seed)
    bias = (1.0 + 0.15 * np.linspace(-1, 1, size, dtype=np.float32))[None, None, :]
    images = {}
    for contrast in contrasts:
        table = np.r_[np.float32(0.0), np.asarray(PHANTOM_INTENSITY[contrast], np.float32)]
        array = table[labels + 1] * bias
        array = np.abs(array + rng.normal(0.0, 0.03, array.shape).astype(np.float32)) * 1000.0
        images[contrast] = _image(array.astype(np.float32), spacing)
    lesion = _image((labels == PHANTOM_TISSUES.index("lesion")).astype(np.uint8), spacing)
    brain = _image((labels >= PHANTOM_TISSUES.index("csf")).astype(np.uint8), spacing)
    return images, lesion, brain


def _image(array: np.ndarray, spacing: float):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing([spacing] * 3)
    image.SetOrigin([-(n - 1) / 2 * spacing for n in image.GetSize()])
    return image


# --------------------------------------------------------------------------- worker (fresh process)

def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def run_worker(spec: dict) -> dict:
    """One model on one case on one device, measured in this (fresh) process."""
    from ..inference.device_memory import peak_memory_bytes, reset_peak_memory
    from ..inference.models import load_model
    from ..inference.options import DetectOptions
    from ..inference.pipeline import detect

    started = time.perf_counter()
    import torch

    import_s = time.perf_counter() - started
    device = spec["device"]
    cuda = device.startswith("cuda")
    started = time.perf_counter()
    model = load_model(find_bundle(spec["model"]), device)
    model_load_s = time.perf_counter() - started
    rss_before_mb = _rss_mb()
    reset_peak_memory(device)
    options = DetectOptions(device=device)
    started = time.perf_counter()
    result = detect(spec["images"], model=model, options=options, mask=spec.get("mask"))
    detect_s = time.perf_counter() - started
    # (the slice batches reset CUDA's peak counter to size themselves: peak_memory_bytes spans those resets)
    gpu_peak_mb = (peak_memory_bytes(device) / 2 ** 20 if cuda else
                   # MPS keeps no peak: what its driver holds after the run is the closest reading
                   torch.mps.driver_allocated_memory() / 2 ** 20 if device == "mps" else None)

    brain_scores = result.postprocessor.brain_scores(result.median)
    thresholds = np.quantile(brain_scores, np.linspace(0.95, 0.9995, spec["repeats"]))
    latencies = []
    for threshold in thresholds:
        started = time.perf_counter()
        result.rethreshold(float(threshold))
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    result.rethreshold(float(thresholds[0]), median=3 if result.median != 3 else 5)
    new_median_s = time.perf_counter() - started

    batch_times = []
    for _ in range(spec["batch_volumes"]):
        started = time.perf_counter()
        detect(spec["images"], model=model, options=options, mask=spec.get("mask"))
        batch_times.append(time.perf_counter() - started)
    return {
        "model": spec["model"], "case": spec["case"], "device": device,
        "ran_on": result.report["device"], "warnings": result.report["warnings"],
        "contrasts": list(spec["images"]), "size": list(result.anomaly_map.GetSize()),
        "spacing_mm": [round(s, 3) for s in result.anomaly_map.GetSpacing()],
        "brain_mask_method": result.report.get("brain_mask_method"),
        "torch_import_s": round(import_s, 3), "model_load_s": round(model_load_s, 3),
        "detect_s": round(detect_s, 3), "stages_s": result.report["timings_s"],
        "rethreshold_ms_median": round(1000 * float(np.median(latencies)), 2),
        "rethreshold_ms_max": round(1000 * float(np.max(latencies)), 2),
        "rethreshold_calls": len(latencies),
        "rethreshold_new_median_ms": round(1000 * new_median_s, 1),
        "batch_volumes": len(batch_times),
        "batch_s_per_volume": round(float(np.mean(batch_times)), 3) if batch_times else None,
        "volumes_per_minute": round(60.0 / float(np.mean(batch_times)), 2) if batch_times else None,
        "rss_before_detect_mb": round(rss_before_mb, 1) if rss_before_mb else None,
        # ru_maxrss comes from approximate kernel counters: never report less than a reading we took
        "peak_rss_mb": round(max(_peak_rss_mb(), rss_before_mb or 0.0, _rss_mb() or 0.0), 1),
        "gpu_peak_mb": round(gpu_peak_mb, 1) if gpu_peak_mb is not None else None,
        "torch_threads": torch.get_num_threads(),
    }


def run_in_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="uadbrain-bench-") as folder:
        spec_path, result_path = Path(folder) / "spec.json", Path(folder) / "result.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        process = subprocess.run([sys.executable, "-m", "UADBrainLib.evaluation.benchmark", "--worker", str(spec_path),
                                  str(result_path)], capture_output=True, encoding="utf-8", errors="replace",
                                 timeout=WORKER_TIMEOUT_S,
                                 cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": _package_root()})
        if process.returncode != 0 or not result_path.is_file():
            tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"model": spec["model"], "case": spec["case"], "device": spec["device"],
                    "error": tail[0]}
        return json.loads(result_path.read_text(encoding="utf-8"))


def _package_root() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


# --------------------------------------------------------------------------- cases and the command

def real_case(cases_dir: Path | None):
    """The first evaluation case under ``cases_dir`` (or the default location), or None."""
    from ..cohort import find_cases

    root = cases_dir if cases_dir is not None else DEFAULT_REAL_CASES
    if not root.is_dir():
        if cases_dir is not None:
            raise InputError(f"bench: '{cases_dir}' is not a folder — give a folder of evaluation cases.")
        return None
    datasets = find_cases(root)
    dataset = next(iter(datasets))
    return dataset, datasets[dataset][0]


def model_contrasts(bundle, available, preferred: list[str]) -> list[str] | None:
    """The contrasts a model gets in the benchmark: the preferred ones it can use, plus any it requires."""
    usable = [c for c in CONTRASTS if c in bundle.contrasts and c in available]
    chosen = [c for c in preferred if c in usable] or usable[:1]
    chosen = list(dict.fromkeys([*chosen, *bundle.required_contrasts]))
    return [c for c in CONTRASTS if c in chosen] if set(chosen) <= set(available) else None


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            # other work on the machine inflates every timing: keep the context with the figures
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}
    try:
        import torch

        info["torch"] = torch.__version__
        from ..device import available_devices

        devices = available_devices()
        info["gpu"] = (torch.cuda.get_device_name(0) if devices[0].startswith("cuda") else
                       "Apple-silicon GPU (MPS)" if devices[0] == "mps" else None)
    except ImportError:
        info["torch"] = None
    return info


def machine_line(info: dict) -> str:
    return (f"Machine: {info['cpu_count']} CPU cores ({info['cpu']}), GPU: {info.get('gpu') or 'none'}, "
            f"Python {info['python']}, torch {info.get('torch')}; load average at the end "
            f"{info['load_average_1_5_15_min'][0]:g} (1 min).")


def bench_table(rows: list[dict]) -> str:
    stages = list(dict.fromkeys(s for row in rows for s in row.get("stages_s", {})))  # run order
    headers = ["model", "case", "device", "detect s", *[f"{s} s" for s in stages], "peak RSS MB",
               "GPU peak MB", "rethreshold ms", "vol/min"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['case']} | {row['device']} | failed: {row['error']} |"
                         + " – |" * (len(headers) - 4))
            continue
        stage_values = [f"{row['stages_s'][s]:.2f}" if s in row["stages_s"] else "–" for s in stages]
        gpu = f"{row['gpu_peak_mb']:.0f}" if row.get("gpu_peak_mb") is not None else "–"
        ran = row["device"] if row.get("ran_on", row["device"]) == row["device"] else f"{row['device']} → {row['ran_on']}"
        lines.append("| " + " | ".join([
            row["model"], row["case"], ran, f"{row['detect_s']:.2f}", *stage_values,
            f"{row['peak_rss_mb']:.0f}", gpu, f"{row['rethreshold_ms_median']:.1f}",
            f"{row['volumes_per_minute']:.1f}" if row.get("volumes_per_minute") else "–"]) + " |")
    return "\n".join(lines)


def worker_main(argv: list[str]) -> int:
    spec_path, result_path = argv
    result = run_worker(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python -m UADBrainLib.evaluation.benchmark --worker SPEC.json RESULT.json (run by 'uadbrain bench')")
