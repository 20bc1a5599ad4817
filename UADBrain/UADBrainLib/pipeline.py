"""The one pipeline: ``detect(images, model, options) -> Result``.

The CLI, the Slicer module, the web app, evaluation, calibration and the tests all call it.

Stages: load and validate → canonical model grid → brain mask → bias correction → normalisation
→ model → back to the native grid → calibrated fusion → post-processing. Every output is on the
exact native grid (origin, spacing, direction) of the reference input: the first given contrast in
the order flair, t1, t2, t1c.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import SimpleITK as sitk

from . import __version__, calibration as calib
from .brain_extraction import BRAIN_MASK_METHODS, brain_mask_for
from .bundle import CONTRASTS, Bundle, find_bundle
from .device import resolve_device
from .errors import Cancelled, InputError, ModelError
from .geometry import array_to_image, overlap_fraction, resample_like, to_canonical
from .input_check import check_inputs
from .io import read_image, read_mask, validate_image
from .models import AnomalyModel, load_model
from .models.ensemble import runs_a_network
from .postprocessing import Lesion, PostProcessor
from .preprocessing import check_mask_volume, n4_bias_correction, normalise

# progress(fraction of the whole run in [0, 1], stage name)
Progress = Callable[[float, str], None]
MIN_OVERLAP = 0.5
# share of the progress bar per stage, in order
STAGES = {"load": 0.05, "resample": 0.10, "brain mask": 0.15, "bias correction": 0.10,
          "normalise": 0.02, "model": 0.45, "resample back": 0.08, "post-process": 0.05}


MAX_CALIBRATED_FLAGGED_FRACTION = 0.3  # of the brain; beyond it the automatic threshold is Otsu's


@dataclass
class DetectOptions:
    threshold: float | str | None = None  # number, "calibrated", "otsu"; None: calibrated if possible
    fpr: float = calib.DEFAULT_FPR  # healthy voxel false-positive rate of the calibrated threshold
    median: int | None = None  # voxels, 0/3/5/7; None: the model's default
    min_size_mm3: float | None = None  # None: the model's default
    erosion_mm: float | None = None  # erode the brain mask before thresholding; None: model default
    brain_mask_method: str = "auto"  # see brain_extraction.BRAIN_MASK_METHODS
    bias_correction: bool | None = None  # None: as the model expects
    device: str = "auto"
    keep_preprocessed: bool = False  # keep the normalised model-grid images in the result
    check_contrast: bool = True  # refuse an input that looks like another contrast (input_check.py)
    calibrated: bool = True  # False: fuse raw channel scores (used to compute a calibration)
    score_every_contrast: bool = False  # True: ignore the model's lead contrasts (calibration)


@dataclass
class Result:
    """Everything a run produced, on the reference input's native grid."""

    anomaly_map: sitk.Image
    brain_mask: sitk.Image
    labels_array: np.ndarray  # int32, lesion i = label i, 1 = most anomalous
    lesions: list[Lesion]
    threshold: float
    threshold_method: str
    median: int
    min_size_mm3: float
    erosion_mm: float
    fpr: float
    volume_score: float
    volume_percentile: float | None
    model_name: str
    channels: list[str]
    inputs: dict[str, sitk.Image] = field(default_factory=dict)  # validated inputs, reference first
    channel_maps: dict[str, sitk.Image] = field(default_factory=dict)
    reconstructions: dict[str, sitk.Image] = field(default_factory=dict)
    preprocessed: dict[str, sitk.Image] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    calibration: dict | None = field(default=None, repr=False)
    postprocessor: PostProcessor | None = field(default=None, repr=False)

    @cached_property
    def lesion_labels(self) -> sitk.Image:
        return array_to_image(self.labels_array, self.anomaly_map)

    @cached_property
    def segmentation(self) -> sitk.Image:
        return array_to_image((self.labels_array > 0).astype(np.uint8), self.anomaly_map)

    @property
    def flagged_volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def lesion_count(self) -> int:
        return len(self.lesions)

    def rethreshold(self, threshold: float | str | None = None, median: int | None = None,
                    min_size_mm3: float | None = None, erosion_mm: float | None = None,
                    fpr: float | None = None) -> "Result":
        """A new Result with the segmentation recomputed from the cached map (no model rerun).

        Arguments left as None keep this result's values; ``threshold`` None keeps the number if
        it was manual, else re-resolves the same method (calibrated/otsu) for the new settings.
        """
        median = self.median if median is None else int(median)
        min_size_mm3 = self.min_size_mm3 if min_size_mm3 is None else float(min_size_mm3)
        erosion_mm = self.erosion_mm if erosion_mm is None else float(erosion_mm)
        fpr = self.fpr if fpr is None else float(fpr)
        if threshold is None:
            threshold = self.threshold if self.threshold_method == "manual" else self.threshold_method
        value, method = resolve_threshold(threshold, self.postprocessor, self.calibration,
                                          self.channels, median, erosion_mm, fpr)
        segmentation = self.postprocessor.segment(value, median, min_size_mm3, erosion_mm)
        return replace(self, labels_array=segmentation.labels, lesions=segmentation.lesions,
                       threshold=value, threshold_method=method, median=median,
                       min_size_mm3=min_size_mm3, erosion_mm=erosion_mm, fpr=fpr)

    def summary(self) -> dict:
        """The run as JSON-ready values (report.json)."""
        return {
            **self.report,
            "model": self.model_name,
            "channels": self.channels,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "fpr": self.fpr if self.threshold_method == "calibrated" else None,
            "median": self.median,
            "min_size_mm3": self.min_size_mm3,
            "erosion_mm": self.erosion_mm,
            "volume_score": self.volume_score,
            "volume_percentile_among_healthy": self.volume_percentile,
            "flagged_volume_ml": self.flagged_volume_ml,
            "lesion_count": self.lesion_count,
            "lesions": [lesion.as_row() for lesion in self.lesions],
        }


def resolve_threshold(spec, postprocessor: PostProcessor, calibration: dict | None, channels,
                      median: int, erosion_mm: float, fpr: float) -> tuple[float, str]:
    """A threshold value and how it was chosen: ``manual``, ``calibrated`` or ``otsu``.

    ``spec`` None is automatic: the calibrated threshold when the model has one for these
    channels and it flags a plausible part of the brain, else Otsu.
    """
    if spec is None:
        key = calib.channel_set_key(channels)
        if key in (calibration or {}).get("fused", {}):
            value = calib.calibrated_threshold(calibration, channels, median, fpr)
            if calibration_fits(postprocessor, value, median, erosion_mm):
                return value, "calibrated"
        spec = "otsu"
    if isinstance(spec, str):
        method = spec.lower()
        if method in ("calibrated", "auto"):
            return calib.calibrated_threshold(calibration, channels, median, fpr), "calibrated"
        if method == "otsu":
            return postprocessor.otsu(median, erosion_mm), "otsu"
        try:
            spec = float(spec)
        except ValueError:
            raise InputError(f"threshold '{spec}' is not understood — give a number, 'calibrated' "
                             "or 'otsu'.") from None
    value = float(spec)
    if not np.isfinite(value):
        raise InputError("the threshold must be a finite number.")
    return value, "manual"


def calibration_fits(postprocessor: PostProcessor, threshold: float, median: int, erosion_mm: float) -> bool:
    """Whether a calibrated threshold flags at most :data:`MAX_CALIBRATED_FLAGGED_FRACTION` of the
    brain. A healthy calibration (made on synthetic brains) can miss a real scanner's appearance
    so widely that its threshold flags nearly the whole brain; no lesion load looks like that."""
    scores = postprocessor.brain_scores(median, erosion_mm)
    return scores.size == 0 or float(np.mean(scores > threshold)) <= MAX_CALIBRATED_FLAGGED_FRACTION


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

    def _close(self):
        if self._stage is not None:
            self.timings[self._stage] = round(time.perf_counter() - self._started, 4)
            self.done += STAGES[self._stage]
            self._stage = None

    def finish(self):
        self._close()
        if self.progress:
            self.progress(1.0, "done")


def load_inputs(images: Mapping[str, object]) -> dict[str, sitk.Image]:
    """Validated float32 images keyed by contrast, in the canonical contrast order."""
    if not images:
        raise InputError(f"no input image — give at least one of: {', '.join(CONTRASTS)}.")
    unknown = [c for c in images if c not in CONTRASTS]
    if unknown:
        raise InputError(f"unknown contrast '{unknown[0]}' — use {', '.join(CONTRASTS)}.")
    loaded = {}
    for contrast in CONTRASTS:
        if contrast not in images:
            continue
        value = images[contrast]
        if isinstance(value, sitk.Image):
            loaded[contrast] = validate_image(value, contrast)
        elif isinstance(value, (str, Path)):
            loaded[contrast] = read_image(value, contrast)
        else:
            raise InputError(f"{contrast}: expected a file path or a SimpleITK image, got "
                             f"{type(value).__name__}.")
    return loaded


def check_overlap(images: dict[str, sitk.Image], mask: sitk.Image | None = None) -> None:
    reference_name, reference = next(iter(images.items()))
    others = [(name, image) for name, image in images.items() if name != reference_name]
    if mask is not None:
        others.append(("mask", mask))
    for name, image in others:
        fraction = overlap_fraction(reference, image)
        if fraction < MIN_OVERLAP:
            raise InputError(f"{name} and {reference_name} do not overlap in space ({fraction:.0%} of "
                             "the smaller volume) — the inputs must be co-registered scans of the same "
                             "subject; register them first.")


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
    options = options or DetectOptions()
    run = _Run(progress, cancel)

    run.stage("load")
    given = load_inputs(images)
    given_mask = (read_mask(mask) if isinstance(mask, (str, Path))
                  else sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8) if mask is not None else None)
    check_overlap(given, given_mask)
    bundle = model.bundle if isinstance(model, AnomalyModel) else (
        model if isinstance(model, Bundle) else find_bundle(model, list(given)))
    scored = list(given) if options.score_every_contrast else calib.scored_contrasts(given, bundle.lead_contrasts)
    inputs = {name: given[name] for name in scored}
    set_aside = [name for name in given if name not in inputs]
    # models without a network run on the CPU; only they skip importing torch to probe for CUDA
    needs_device = options.device != "auto" or runs_a_network(bundle, inputs)
    device = resolve_device(options.device) if needs_device else "cpu"
    anomaly_model = resolve_model(model if isinstance(model, AnomalyModel) else bundle, list(inputs), device)
    # an ensemble may hand all given contrasts to one member: its settings and calibration then apply
    scorer = anomaly_model.for_contrasts(list(inputs))
    settings = scorer.bundle
    reference_name, reference = next(iter(inputs.items()))

    run.stage("brain mask")
    native_mask, mask_method = brain_mask_for(reference, given_mask, options.brain_mask_method, device)
    brain_volume_ml = check_mask_volume(native_mask)

    run.stage("resample")
    preprocessing = settings.preprocessing
    grid = to_canonical(reference, preprocessing.get("spacing_mm"))
    model_images = {name: resample_like(to_canonical(image), grid) for name, image in inputs.items()}
    model_mask_image = resample_like(native_mask, grid, is_label=True)
    model_mask = sitk.GetArrayFromImage(model_mask_image) > 0

    bias = preprocessing.get("bias_correction", False) if options.bias_correction is None else options.bias_correction
    if bias:
        run.stage("bias correction")
        model_images = {name: n4_bias_correction(image, model_mask_image) for name, image in model_images.items()}

    run.stage("normalise")
    method = preprocessing.get("normalisation", "robust_z")
    arrays = {name: normalise(sitk.GetArrayFromImage(image), model_mask, method)
              for name, image in model_images.items()}
    # inputs the model sets aside are checked too: a swapped pair is wrong whichever one is scored
    checked = {name: model_images[name] if name in model_images else resample_like(to_canonical(given[name]), grid)
               for name in given}
    input_check = check_inputs({name: sitk.GetArrayViewFromImage(image) for name, image in checked.items()},
                               model_mask, grid.GetSpacing(), options.check_contrast, device)

    run.stage("model")
    output = scorer.predict(arrays, model_mask, grid.GetSpacing(),
                            progress=lambda f, m: run.report(f, m), is_cancelled=run.is_cancelled)

    run.stage("resample back")
    native_brain = sitk.GetArrayViewFromImage(native_mask) > 0
    channel_maps = {}
    for name, channel in output.contrast_maps.items():
        channel = np.where(model_mask, channel, 0.0).astype(np.float32)
        native = sitk.GetArrayFromImage(resample_like(array_to_image(channel, grid), reference))
        channel_maps[name] = np.where(native_brain, native, 0.0).astype(np.float32)
    calibration = settings.calibration if options.calibrated else None
    fused = calib.fuse(channel_maps, calibration, settings.contrast_fusion)
    fused = np.where(native_brain, fused, 0.0).astype(np.float32)
    anomaly_map = array_to_image(fused, reference)
    reconstructions = {name: resample_like(array_to_image(array.astype(np.float32), grid), reference)
                       for name, array in output.reconstructions.items()}

    run.stage("post-process")
    post_defaults = settings.postprocessing
    median = int(post_defaults.get("median", 5) if options.median is None else options.median)
    min_size = float(post_defaults.get("min_size_mm3", 0.0) if options.min_size_mm3 is None else options.min_size_mm3)
    erosion = float(post_defaults.get("erosion_mm", 0.0) if options.erosion_mm is None else options.erosion_mm)
    postprocessor = PostProcessor(anomaly_map, native_mask)
    channels = list(output.contrast_maps)
    threshold, threshold_method = resolve_threshold(options.threshold, postprocessor, calibration,
                                                    channels, median, erosion, options.fpr)
    segmentation = postprocessor.segment(threshold, median, min_size, erosion)
    volume_score = postprocessor.volume_score(calib.VOLUME_SCORE_MEDIAN)
    run.finish()
    warnings = list(input_check.warnings)
    if set_aside:
        warnings.append(f"{', '.join(set_aside)} not scored: model '{bundle.name}' scores "
                        f"{'+'.join(inputs)} alone when given (adding other contrasts lowered its accuracy "
                        "on the evaluation scans; its model card has the figures) — choose another model "
                        "to fuse every contrast.")
    calibrated_here = calib.channel_set_key(channels) in (calibration or {}).get("fused", {})
    if options.threshold is None and threshold_method == "otsu" and calibrated_here:
        warnings.append(f"the model's healthy calibration would flag more than "
                        f"{MAX_CALIBRATED_FLAGGED_FRACTION:.0%} of the brain on this scan (it does not fit "
                        "this scanner's images); Otsu's threshold is used instead — tune it with the slider.")

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
        "timings_s": run.timings,
        "input_check": input_check.report,
        "warnings": warnings,
    }
    return Result(
        anomaly_map=anomaly_map, brain_mask=native_mask, labels_array=segmentation.labels,
        lesions=segmentation.lesions, threshold=threshold, threshold_method=threshold_method,
        median=median, min_size_mm3=min_size, erosion_mm=erosion, fpr=options.fpr,
        volume_score=volume_score,
        volume_percentile=calib.volume_percentile(calibration, channels, volume_score),
        model_name=bundle.name, channels=channels, inputs=given,
        channel_maps={name: array_to_image(array, reference) for name, array in channel_maps.items()},
        reconstructions=reconstructions,
        preprocessed=({name: array_to_image(array, grid) for name, array in arrays.items()}
                      if options.keep_preprocessed else {}),
        report=report, calibration=calibration, postprocessor=postprocessor)


def _describe(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "spacing_mm": [round(s, 4) for s in image.GetSpacing()],
            "origin_lps_mm": [round(o, 3) for o in image.GetOrigin()],
            "direction": [round(d, 5) for d in image.GetDirection()]}


__all__ = ["detect", "DetectOptions", "Result", "resolve_threshold", "BRAIN_MASK_METHODS"]
