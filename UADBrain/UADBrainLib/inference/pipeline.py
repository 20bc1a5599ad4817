"""The one pipeline: ``detect(images, model, options) -> Result``.

The CLI, the Slicer module, the web app, evaluation, calibration and the tests all call it. This
module orchestrates; each stage lives in its own module.

Stages: load and validate → brain mask → canonical model grid → bias correction → normalisation
(``preparation.py``) → model → the 1 mm working grid → calibrated fusion → filters in millimetres,
carried back to the native grid and thresholded there (``postprocessing.py``, threshold policy in
``thresholds.py``). Every output is on the exact native
grid (origin, spacing, direction) of the reference input: the first given contrast in the order
flair, t1, t2, t1c.
"""

from __future__ import annotations

import ctypes
import functools
import time
from typing import Callable, Mapping

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..bundle import Bundle, find_bundle
from ..device import DeviceChoice, choose_device
from ..errors import Cancelled, ModelError
from ..geometry import array_to_image, resample_like
from ..preprocessing import normalise
from . import calibration as calib
from .device_memory import add_device_note, collecting_device_notes, cpu_fallback_note, release_cached_memory
from .input_check import check_inputs
from .models import AnomalyModel, load_model
from .models.ensemble import runs_a_network
from .options import DetectOptions
from .postprocessing import WORKING_SPACING_MM, PostProcessor, working_grid
from .preparation import load_scan, prepare_scan
from .result import Result
from .thresholds import otsu_fallback_warning, resolve_threshold

# progress(fraction of the whole run in [0, 1], stage name)
Progress = Callable[[float, str], None]
# share of the progress bar per stage, in order
STAGES = {"load": 0.05, "brain mask": 0.15, "resample": 0.10, "bias correction": 0.10,
          "normalise": 0.02, "model": 0.45, "resample back": 0.08, "post-process": 0.05}


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        return None


def _return_freed_memory() -> None:
    """Hand the memory a stage freed back to the system: glibc keeps the many mid-size blocks that
    PyTorch and ITK free in its arenas (~100–150 MB of a 0.5 mm head's peak)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _Run:
    """Progress reporting, cancellation and timing of one detect() call."""

    def __init__(self, progress: Progress | None, cancel):
        self.progress = progress
        self.cancel = cancel
        self.timings: dict[str, float] = {}
        self.done = 0.0
        self._stage = None
        self._started = 0.0

    def stage(self, name: str):
        self._close()
        _return_freed_memory()
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled by the user.")
        self._stage, self._started = name, time.perf_counter()
        self.report(0.0)
        return self

    def report(self, within: float, message: str | None = None):
        if self.progress:
            self.progress(min(self.done + STAGES[self._stage] * within, 1.0), message or self._stage)

    def is_cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def again_from(self, stage: str, failed_attempt: str) -> None:
        """Report progress from ``stage`` on again (a run that starts over on another device); the
        time the stages from ``stage`` on took so far is kept as one entry, ``failed_attempt``."""
        self._close()
        again = list(STAGES)[list(STAGES).index(stage):]
        self.timings[failed_attempt] = round(sum(self.timings.pop(name, 0.0) for name in again), 4)
        self.done = sum(share for name, share in STAGES.items() if name not in again)

    def _close(self):
        if self._stage is not None:
            self.timings[self._stage] = round(time.perf_counter() - self._started, 4)
            self.done += STAGES[self._stage]
            self._stage = None

    def finish(self):
        self._close()
        if self.progress:
            self.progress(1.0, "done")


def resolve_model(model: AnomalyModel | Bundle, contrasts: list[str], device: str) -> AnomalyModel:
    bundle = model.bundle if isinstance(model, AnomalyModel) else model
    unsupported = [c for c in contrasts if c not in bundle.contrasts]
    if unsupported:
        raise ModelError(f"model '{bundle.name}' does not use {', '.join(unsupported)} (it uses "
                         f"{', '.join(bundle.contrasts)}) — leave those out or choose another model.")
    missing = [c for c in bundle.required_contrasts if c not in contrasts]
    if missing:
        raise ModelError(f"model '{bundle.name}' needs {', '.join(missing)} — add it or choose "
                         "another model.")
    return model if isinstance(model, AnomalyModel) else load_model(bundle, device)


def detect(images: Mapping[str, object], model=None, options: DetectOptions | None = None,
           mask=None, progress: Progress | None = None, cancel=None) -> Result:
    """Detect anomalies in co-registered brain MRI volumes.

    ``images``: contrast name → file path or SimpleITK image. ``model``: bundled model name,
    bundle folder, :class:`Bundle`, an already loaded :class:`AnomalyModel` (batch runs), or None
    for the default model that handles the given contrasts. ``mask``: optional brain mask (path or
    image). ``cancel``: anything with ``is_set()`` (a ``threading.Event``). Inputs are never modified.
    """
    return _detect(images, model, _options(options), mask, progress, cancel, calibrated=True)


def detect_raw_scores(images: Mapping[str, object], model=None, options: DetectOptions | None = None,
                      mask=None) -> Result:
    """``detect`` without the healthy calibration, for computing one (``uadbrain calibrate``):
    every given contrast is scored (lead contrasts do not set the others aside) and the raw
    channel scores are fused."""
    return _detect(images, model, _options(options), mask, None, None, calibrated=False)


def _options(options) -> DetectOptions:
    """The run's options: a DetectOptions, a dict of its fields, or None for the defaults."""
    if options is None:
        return DetectOptions()
    return options if isinstance(options, DetectOptions) else DetectOptions.from_dict(options)


def _detect(images, model, options: DetectOptions, mask, progress, cancel, calibrated: bool) -> Result:
    run = _Run(progress, cancel)

    run.stage("load")
    given, given_mask = load_scan(images, mask)
    bundle = model.bundle if isinstance(model, AnomalyModel) else (
        model if isinstance(model, Bundle) else find_bundle(model, list(given)))
    scored = calib.scored_contrasts(given, bundle.lead_contrasts) if calibrated else list(given)
    inputs = {name: given[name] for name in scored}
    set_aside = [name for name in given if name not in inputs]
    # models without a network run on the CPU; only they skip importing torch to probe for a GPU
    needs_device = options.device != "auto" or runs_a_network(bundle, inputs)
    if isinstance(model, AnomalyModel) and options.device == "auto":
        choice = DeviceChoice(model.device)  # the caller chose the device by loading the model there
    else:
        choice = choose_device(options.device) if needs_device else DeviceChoice("cpu")
    loaded = model if isinstance(model, AnomalyModel) and model.device == choice.device else bundle
    with collecting_device_notes() as device_notes:
        try:
            result = _detect_on(choice.device, run, loaded, bundle, given, given_mask, inputs, options, calibrated)
        except Exception as error:
            fallback = cpu_fallback_note(error, choice.device, chosen_by_auto=options.device == "auto")
            if fallback is None:
                raise
        else:
            fallback = None
        if fallback:  # out of the except block: the failed attempt's frames (its GPU tensors) are gone
            release_cached_memory(choice.device)
            add_device_note(fallback)
            run.again_from("brain mask", failed_attempt=f"{choice.device} attempt")
            result = _detect_on("cpu", run, bundle, bundle, given, given_mask, inputs, options, calibrated)
    report = result.report
    report["device_requested"] = options.device
    unused_gpu = [f"ran on the CPU: {choice.note}"] if choice.note else []
    report["warnings"] = [*unused_gpu, *device_notes, *report["warnings"]]
    if set_aside:
        report["warnings"].append(
            f"{', '.join(set_aside)} not scored: model '{bundle.name}' scores {'+'.join(inputs)} alone when given "
            "(adding other contrasts lowered its accuracy on the evaluation scans; its model card has the figures) "
            "— choose another model to fuse every contrast.")
    return result


def _detect_on(device: str, run: _Run, model, bundle: Bundle, given: dict, given_mask, inputs: dict,
               options: DetectOptions, calibrated: bool) -> Result:
    """The run from the brain mask on, on ``device`` (``model``: loaded there, or its bundle)."""
    anomaly_model = resolve_model(model, list(inputs), device)
    # an ensemble may hand all given contrasts to one member: its settings and calibration then apply.
    # Not when computing a calibration: the ensemble's own tables hold its own units (a member's
    # calibrated surprise), which fusing contrasts reads, whatever contrasts a calibration is given
    scorer = anomaly_model.for_contrasts(list(inputs)) if calibrated else anomaly_model
    settings = scorer.bundle
    reference_name = next(iter(inputs))

    preprocessing = settings.preprocessing
    bias = preprocessing.get("bias_correction", False) if options.bias_correction is None else options.bias_correction
    # a model without a spacing of its own runs on the working grid's, whatever the acquisition's
    spacing = settings.spacing_mm or [WORKING_SPACING_MM] * 3
    scan = prepare_scan(inputs, given_mask, spacing, options.brain_mask_method, bias, device, stage=run.stage)
    grid, model_mask, native_mask = scan.grid, scan.mask, scan.native_mask

    run.stage("normalise")
    method = preprocessing.get("normalisation", "robust_z")
    arrays, input_check = _normalised_and_checked(scan, given, method, options.check_contrast, device)
    mask_method, brain_volume_ml = scan.mask_method, scan.brain_volume_ml
    del scan  # its raw copies on the model grid are not needed again (a 0.5 mm run is held to 2 GB)

    run.stage("model")
    subject = {"age": options.age} if "age" in scorer.conditioning else {}
    output = scorer.predict(arrays, model_mask, grid.GetSpacing(),
                            progress=lambda f, m: run.report(f, m), is_cancelled=run.is_cancelled, **subject)
    preprocessed = ({name: array_to_image(array, grid) for name, array in arrays.items()}
                    if options.keep_preprocessed else {})
    del arrays

    run.stage("resample back")
    # channels are fused and filtered on the 1 mm working grid, then carried back (postprocessing.py)
    work_grid = working_grid(native_mask)
    channel_maps = {name: resample_like(array_to_image(np.where(model_mask, channel, 0.0).astype(np.float32), grid),
                                        work_grid)
                    for name, channel in output.contrast_maps.items()}
    calibration = settings.calibration if calibrated else None
    fused = calib.fuse({name: sitk.GetArrayViewFromImage(image) for name, image in channel_maps.items()},
                       calibration, settings.contrast_fusion)
    reference = given[reference_name]
    reconstructions = {name: resample_like(array_to_image(array.astype(np.float32), grid), reference)
                       for name, array in output.reconstructions.items()}
    channels = list(output.contrast_maps)
    del output

    run.stage("post-process")
    median, min_size, erosion, fpr = options.postprocessing(settings.postprocessing)
    postprocessor = PostProcessor(array_to_image(fused, work_grid), native_mask)
    threshold, threshold_method = resolve_threshold(options.threshold, postprocessor, calibration,
                                                    channels, median, erosion, fpr)
    segmentation = postprocessor.segment(threshold, median, min_size, erosion)
    volume_score = postprocessor.volume_score(calib.VOLUME_SCORE_MEDIAN)
    run.finish()
    warnings = list(input_check.warnings)
    warnings += scorer.subject_warnings(options.age)
    warnings += otsu_fallback_warning(options.threshold, threshold_method, calibration, channels)

    report = {
        "uadbrain_version": __version__,
        "inputs": {name: _describe(image) for name, image in given.items()},
        "scored_contrasts": list(inputs),
        "reference_contrast": reference_name,
        "brain_mask_method": mask_method,
        "brain_volume_ml": round(brain_volume_ml, 1),
        "model_version": bundle.metadata.get("version"),
        "scored_by": f"{settings.name} {settings.metadata.get('version')}",
        "model_spacing_mm": list(grid.GetSpacing()),
        "normalisation": method,
        "bias_correction": bool(bias),
        "device": device,
        "age": options.age,
        "conditioned_on": list(scorer.conditioning),
        "timings_s": run.timings,
        "input_check": input_check.report,
        "warnings": warnings,
    }
    return Result(
        anomaly_map=postprocessor.anomaly_map(median), brain_mask=native_mask, labels_array=segmentation.labels,
        lesions=segmentation.lesions, threshold=threshold, threshold_method=threshold_method,
        median=median, min_size_mm3=min_size, erosion_mm=erosion, fpr=fpr,
        volume_score=volume_score,
        volume_percentile=calib.volume_percentile(calibration, channels, volume_score),
        model_name=bundle.name, channels=channels, inputs=given,
        channel_maps=channel_maps,
        reconstructions=reconstructions,
        preprocessed=preprocessed,
        report=report, calibration=calibration, postprocessor=postprocessor)


def _normalised_and_checked(scan, given: dict, method: str, check_contrast, device: str):
    """The scored inputs' normalised arrays on the model grid, and the input check of every given
    input (those the model sets aside too: a swapped pair is wrong whichever one is scored)."""
    arrays = {name: normalise(sitk.GetArrayFromImage(image), scan.mask, method) for name, image in scan.images.items()}
    checked = {name: scan.images[name] if name in scan.images else resample_like(given[name], scan.grid)
               for name in given}
    input_check = check_inputs({name: sitk.GetArrayViewFromImage(image) for name, image in checked.items()},
                               scan.mask, scan.grid.GetSpacing(), check_contrast, device)
    return arrays, input_check


def _describe(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
            "origin_lps_mm": [round(o, 3) for o in image.GetOrigin()],
            "direction": [round(d, 5) for d in image.GetDirection()]}
