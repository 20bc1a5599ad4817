"""Catch a wrong contrast or a non-brain image before the anomaly model runs.

A T1 given as ``--flair``, or FLAIR and T2 swapped, makes any anomaly model flag half the brain.
A tiny 3D CNN (the ``input-check`` bundle, trained on synthetic brains only by
``training/input_check.py``) looks at each input brain-masked, normalised with
``preprocessing.normalise(..., "robust_z")`` and reduced to a coarse canonical grid
(:data:`GRID_SPACING_MM`, :data:`GRID_SHAPE` around the brain), and gives the probability of each
class in :data:`CLASSES`; ``other`` means "not a brain MRI of a known contrast" (phantoms,
non-brain images, CT, badly corrupted or mis-scaled volumes).

Decision rule, per given contrast. T1 and T1c are one *group* (they differ only by enhancement,
which a healthy-looking brain may not show), so the groups are FLAIR, T2, T1 (t1 + t1c) and other:

* **error** — another contrast group is seen beyond doubt: p(that group) ≥ :data:`REFUSE`
  (0.98) and p(the given group) ≤ :data:`REFUSE_GIVEN` (0.01; 0.001 for a T1-weighted image
  seen as FLAIR, :data:`UNRELIABLE_CONFUSIONS`); or two inputs each look most like the other's
  contrast (p ≥ :data:`SWAP_SEEN`, p(given) ≤ :data:`IMPLAUSIBLE` for both): a swap, which two
  images agreeing on makes beyond doubt. Raises :class:`InputError`.
  Measured on the 26 real scans of ``../shared/data`` and their 0.45×0.45×5 mm versions (52
  images, none trained on; ``python -m UADBrainLib.training.input_check``): the network takes
  real T1 and T1c for FLAIR-like (p of their own group down to 0.0105), so that confusion needs
  ten times more certainty; real FLAIR and T2 keep p ≥ 0.07 of their own group; every FLAIR/T2
  pair swapped (8 of 8) is refused.
* **warning** — another contrast group is seen with p ≥ :data:`CONFIDENT` (0.9) and the given
  one has p ≤ :data:`IMPLAUSIBLE` (0.05), or p(other) ≥ :data:`CONFIDENT` (the image does not
  look like a brain MRI): the run goes on, with a warning in ``result.report["warnings"]``.
  (Real scans reach the warning level: one BraTS T1c looks 93 % FLAIR-like to the network.)
* otherwise nothing. A false alarm blocks a clinician, so refusing needs near-certainty.

Before the network, two measurements refuse images that are no MRI of a brain, whatever the
network says (:func:`implausible`): no spatial structure in the brain (voxels
:data:`STRUCTURE_LAG_MM` apart uncorrelated along some axis: noise), or a background brighter
than the brain (air is the darkest thing in an MRI magnitude image: inverted intensities). Both
sit far from every real scan in ``../shared/data`` at any acquisition grid
(``docs/tools/plausibility.py`` measures the margins).

The check is skipped, with a report warning and never an error, when turned off
(``DetectOptions.check_contrast``, ``--no-contrast-check``), when the bundle is missing or corrupt,
or when torch is not installed.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..bundle import Bundle, load_task_model
from ..errors import InputError, ModelError
from ..preprocessing import normalise

INPUT_CHECK_BUNDLE = "input-check"
TASK = "input_check"  # metadata "task" of this bundle (not an anomaly model)
CLASSES = ("flair", "t1", "t2", "t1c", "other")
GROUP_OF = {"flair": "flair", "t1": "t1", "t1c": "t1", "t2": "t2", "other": "other"}
GROUP_NAMES = {"flair": "FLAIR", "t1": "T1-weighted", "t2": "T2-weighted"}
CONTRAST_NAMES = {"flair": "FLAIR", "t1": "T1", "t1c": "T1c", "t2": "T2"}
CONFIDENT = 0.9
IMPLAUSIBLE = 0.05
REFUSE = 0.98
REFUSE_GIVEN = 0.01
# (given group, seen group) → the given group's p to refuse at, where real scans fool the network
UNRELIABLE_CONFUSIONS = {("t1", "flair"): 0.001}
SWAP_SEEN = 0.5
GRID_SPACING_MM = 3.0
GRID_SHAPE = (56, 68, 56)  # canonical [S, P, L]: 168 x 204 x 168 mm around the brain
CLIP_Z = (-10.0, 25.0)  # robust z-scores beyond these carry no contrast information
INPUT_SCALE = 5.0
OFF_HINT = "or turn the contrast check off (--no-contrast-check)"
STRUCTURE_LAG_MM = 3.0  # beyond any interpolation kernel of a ≤ 3 mm grid: noise pairs are independent
MIN_STRUCTURE = 0.1  # real scans ≥ 0.45 (docs/tools/plausibility.py); i.i.d. noise ≈ 0
BACKGROUND_MARGIN_MM = 6.0  # background = farther than this from the brain (skull, scalp, air)
# refused when the background's median is brighter than this share of the brain: not 0.99 (an
# inverted brain's edge can hold a few voxels brighter than its background) nor 0.5 (a z-scored scan
# with a zero background puts it at the brain's median)
MAX_BRAIN_DARKER = 0.9
MIN_BACKGROUND_FRACTION = 0.05  # of the grid: a volume cropped to the brain has no background to judge


# --------------------------------------------------------------------------- plausibility

def spatial_structure(array: np.ndarray, mask: np.ndarray, spacing, lag_mm: float = STRUCTURE_LAG_MM) -> float:
    """The smallest, over the three axes, correlation between brain voxels ``lag_mm`` apart.

    Tissue makes neighbouring voxels alike (real scans ≥ 0.45 at 3 mm); noise does not (≈ 0).
    ``array`` is a canonical ``[S, P, L]`` image, ``spacing`` in SimpleITK order (L, P, S).
    """
    brain = np.asarray(mask, bool)
    inside = np.asarray(array, np.float32)[brain]
    if inside.size < 2:
        return 1.0
    low, high = np.percentile(inside, [0.5, 99.5])  # a few extreme voxels must not decide
    values = np.clip(np.asarray(array, np.float32), low, high)
    correlations = []
    for axis, step_mm in enumerate(np.asarray(spacing, float)[::-1]):
        step = max(1, int(round(lag_mm / step_mm)))
        if step >= brain.shape[axis]:
            continue
        first = tuple(slice(0, -step) if a == axis else slice(None) for a in range(3))
        second = tuple(slice(step, None) if a == axis else slice(None) for a in range(3))
        pairs = brain[first] & brain[second]
        if pairs.sum() < 100:
            continue
        x, y = values[first][pairs], values[second][pairs]
        spread = float(x.std() * y.std())
        correlations.append(float(np.mean((x - x.mean()) * (y - y.mean()))) / spread if spread > 0 else 0.0)
    return min(correlations) if correlations else 1.0


def brain_darker_than_background(array: np.ndarray, mask: np.ndarray, spacing,
                                 margin_mm: float = BACKGROUND_MARGIN_MM) -> float | None:
    """The share of brain voxels darker than the background's median (real scans ≈ 0, inverted
    ones ≈ 1), or None when less than :data:`MIN_BACKGROUND_FRACTION` of the grid lies farther
    than ``margin_mm`` from the brain.

    Brain voxels within 1 % of the brain's intensity range of the background's value are left out:
    they are the partial-volume rim that a resampled skull-stripped scan adds to its brain.
    """
    brain = np.asarray(mask, bool)
    if not brain.any():
        return None
    near = ndimage.distance_transform_edt(~brain[::2, ::2, ::2], sampling=2 * np.asarray(spacing, float)[::-1])
    background = np.zeros_like(brain)
    background[::2, ::2, ::2] = near > margin_mm  # every 8th voxel: enough for a median
    if background.sum() * 8 < MIN_BACKGROUND_FRACTION * brain.size:
        return None
    values = np.asarray(array, np.float32)
    level, inside = float(np.median(values[background])), values[brain]
    low, high = np.percentile(inside, [1, 99])
    unlike_background = inside[np.abs(inside - level) > 0.01 * (high - low)]
    return float(np.mean(unlike_background < level)) if unlike_background.size else None


def implausible(name: str, array: np.ndarray, mask: np.ndarray, spacing) -> str | None:
    """Why ``array`` cannot be an MRI of a brain (a refusal message), or None."""
    structure = spatial_structure(array, mask, spacing)
    if structure < MIN_STRUCTURE:
        return (f"{name}: the image has no structure inside the brain (voxels {STRUCTURE_LAG_MM:g} mm apart are "
                f"unrelated: correlation {structure:.2f}) — it looks like noise, not an MRI; check the file, {OFF_HINT}.")
    darker = brain_darker_than_background(array, mask, spacing)
    if darker is not None and darker >= MAX_BRAIN_DARKER:
        return (f"{name}: the background is brighter than {darker:.0%} of the brain (air is the darkest part "
                f"of an MRI) — the intensities look inverted; give the image as the scanner wrote it, {OFF_HINT}.")
    return None


# --------------------------------------------------------------------------- network input

def network_input(array: np.ndarray, mask: np.ndarray, spacing, grid_spacing_mm: float = GRID_SPACING_MM,
                  grid_shape=GRID_SHAPE) -> np.ndarray:
    """Two channels on the coarse grid: the robust-z image inside the brain, and the brain fraction.

    ``array`` is a canonical ``[S, P, L]`` image already normalised with ``robust_z``; ``mask``
    its brain mask; ``spacing`` in SimpleITK order (L, P, S). Voxels are averaged inside the brain
    only (a brain-weighted mean), so the brain edge does not blend with the background. Whatever
    the input spacing, the result has about the resolution of a box average over the coarse voxel
    (integer box averaging, then a Gaussian for the rest), so 1 mm scans and 2-3 mm training
    volumes look alike. Training and inference both call this function.
    """
    brain = np.asarray(mask, bool)
    values = np.where(brain, np.clip(array, *CLIP_Z), 0.0).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    weight = sitk.GetImageFromArray(brain.astype(np.float32))
    for volume in (image, weight):
        volume.SetSpacing([float(s) for s in spacing])
    shrink = [max(1, int(grid_spacing_mm / s + 1e-3)) for s in spacing]
    if max(shrink) > 1:
        image, weight = sitk.BinShrink(image, shrink), sitk.BinShrink(weight, shrink)
    # Gaussian with the variance a box of the coarse width adds beyond the current voxel's
    sigma = np.sqrt(np.clip(grid_spacing_mm ** 2 - np.array(image.GetSpacing()) ** 2, 0.0, None) / 12.0)
    for axis in np.flatnonzero(sigma > 0.05):  # one axis at a time: some may need none
        image, weight = (sitk.RecursiveGaussian(volume, float(sigma[axis]), False,
                                                sitk.RecursiveGaussianImageFilter.ZeroOrder, int(axis))
                         for volume in (image, weight))
    # physical centre of the brain (origin 0), in (L, P, S) order
    centre = np.array(ndimage.center_of_mass(brain))[::-1] * np.array(spacing, float)
    size = np.array(grid_shape[::-1])
    reference = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    reference.SetSpacing([float(grid_spacing_mm)] * 3)
    reference.SetOrigin([float(c) for c in centre - (size - 1) / 2.0 * grid_spacing_mm])
    total = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0))
    fraction = sitk.GetArrayFromImage(sitk.Resample(weight, reference, sitk.Transform(), sitk.sitkLinear, 0.0))
    inside = fraction >= 0.5
    mean = np.where(inside, total / np.maximum(fraction, 1e-6), 0.0)
    return np.stack([mean / INPUT_SCALE, np.clip(fraction, 0.0, 1.0)]).astype(np.float32)


def prepare(array: np.ndarray, mask: np.ndarray, spacing, grid_spacing_mm: float = GRID_SPACING_MM,
            grid_shape=GRID_SHAPE) -> np.ndarray:
    """A raw (un-normalised) canonical image → network input: robust z inside ``mask``, coarse grid."""
    brain = np.asarray(mask, bool)
    return network_input(normalise(np.asarray(array, np.float32), brain, "robust_z"), brain, spacing,
                         grid_spacing_mm, grid_shape)


# --------------------------------------------------------------------------- network

def build_network(network: dict):
    """The small 3D CNN named in the bundle's ``network`` entry (plain torch)."""
    from torch import nn

    if network.get("name") != "ContrastNet":
        raise ModelError(f"input-check network '{network.get('name')}' is not supported by this "
                         "version of UADBrain — update UADBrain or retrain the model.")
    a, b, c, d = network["channels"]

    def block(cin, cout, stride):
        return [nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

    layers = (block(network.get("in_channels", 2), a, 2) + block(a, b, 2) + block(b, b, 1)
              + block(b, c, 2) + block(c, c, 1) + block(c, d, 2) + block(d, d, 1))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(network.get("dropout", 0.2)),
                         nn.Linear(d, len(network.get("classes", CLASSES))))


class ContrastChecker:
    """A loaded input-check bundle: class probabilities of prepared inputs."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        bundle.require_task(TASK, "an input-check model", INPUT_CHECK_BUNDLE)
        self.bundle = bundle
        self.device = device
        self.classes = tuple(bundle.metadata["network"].get("classes", CLASSES))
        grid = bundle.preprocessing
        self.grid = (float(grid.get("grid_spacing_mm", GRID_SPACING_MM)), tuple(grid.get("grid_shape", GRID_SHAPE)))
        self.network = bundle.load_weights_into(build_network(bundle.metadata["network"]), device)
        # confidence calibrated on real scans the network never saw (training/input_check.py)
        self.temperature = float((bundle.metadata.get("calibration") or {}).get("temperature", 1.0))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The network's raw outputs ``[n, classes]`` for network inputs ``[n, 2, S, P, L]``."""
        import torch

        with torch.inference_mode():
            return self.network(torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)).float().cpu().numpy()

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[n, classes]``: softmax of the logits over the temperature."""
        return softmax(self.logits(inputs) / self.temperature)

    def prepared(self, images: dict[str, np.ndarray], mask: np.ndarray, spacing) -> np.ndarray:
        return np.stack([prepare(images[name], mask, spacing, *self.grid) for name in images])

    def predict(self, images: dict[str, np.ndarray], mask: np.ndarray, spacing) -> dict[str, dict[str, float]]:
        """Class probabilities of each raw canonical image (contrast name → {class: p})."""
        rows = self.probabilities(self.prepared(images, mask, spacing))
        return {name: dict(zip(self.classes, map(float, row))) for name, row in zip(images, rows)}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load_checker(bundle: Bundle | str | None = None, device: str = "cpu") -> ContrastChecker:
    """The input-check model (default: the bundled one), loaded once per bundle and device."""
    return load_task_model(ContrastChecker, bundle, INPUT_CHECK_BUNDLE, device)


# --------------------------------------------------------------------------- decision

def group_probabilities(probabilities: dict[str, float]) -> dict[str, float]:
    groups = dict.fromkeys(dict.fromkeys(GROUP_OF.values()), 0.0)
    for name, p in probabilities.items():
        groups[GROUP_OF[name]] += p
    return groups


def mismatch(contrast: str, probabilities: dict[str, float], confident: float = CONFIDENT,
             implausible: float = IMPLAUSIBLE) -> tuple[str, float] | None:
    """The contrast group the image confidently looks like instead of ``contrast``, with its p."""
    groups = group_probabilities(probabilities)
    given = GROUP_OF[contrast]
    if groups[given] > implausible:
        return None
    seen, p = max(((g, p) for g, p in groups.items() if g not in (given, "other")), key=lambda item: item[1])
    return (seen, p) if p >= confident else None


def looks_like_no_brain(probabilities: dict[str, float]) -> bool:
    return probabilities.get("other", 0.0) >= CONFIDENT


def decide(predictions: dict[str, dict[str, float]]) -> list[str]:
    """Apply the decision rule: raise :class:`InputError` on a wrong contrast; return warnings."""
    swapped = {name: found for name in predictions if (found := mismatch(name, predictions[name], SWAP_SEEN))}
    for name, (seen, p) in swapped.items():
        partner = next((other for other, (other_seen, _) in swapped.items()
                        if other != name and other_seen == GROUP_OF[name] and seen == GROUP_OF[other]), None)
        if partner is not None:
            partner_p = swapped[partner][1]
            raise InputError(f"{name} and {partner} look swapped: the {name} image looks like a "
                             f"{GROUP_NAMES[seen]} scan ({p:.0%}) and the {partner} image like a "
                             f"{GROUP_NAMES[GROUP_OF[name]]} scan ({partner_p:.0%}) — swap the two "
                             f"files, {OFF_HINT}.")
    for name in predictions:
        found = mismatch(name, predictions[name], REFUSE, REFUSE_GIVEN)
        if found and group_probabilities(predictions[name])[GROUP_OF[name]] <= UNRELIABLE_CONFUSIONS.get(
                (GROUP_OF[name], found[0]), REFUSE_GIVEN):
            seen, p = found
            raise InputError(f"{name}: this image looks like a {GROUP_NAMES[seen]} scan ({p:.0%}), not "
                             f"{CONTRAST_NAMES[name]} — check which file goes with which contrast, {OFF_HINT}.")
    wrong = {name: found for name in predictions if (found := mismatch(name, predictions[name]))}
    warnings = [f"{name}: this image looks rather like a {GROUP_NAMES[seen]} scan ({p:.0%}) than "
                f"{CONTRAST_NAMES[name]} (input check) — check which file goes with which contrast; "
                "if it is right, the anomaly map may still be unreliable."
                for name, (seen, p) in wrong.items()]
    return warnings + [f"{name}: this image does not look like a brain MRI (input check: "
                       f"{probabilities['other']:.0%} 'other') — check the file and the brain mask; the "
                       "anomaly map is unreliable."
                       for name, probabilities in predictions.items() if looks_like_no_brain(probabilities)]


@dataclasses.dataclass
class InputCheck:
    """The check's outcome: ``report`` goes to ``result.report["input_check"]``."""

    report: dict
    warnings: list[str]


def check_inputs(images: dict[str, np.ndarray], mask: np.ndarray, spacing, enabled: bool = True,
                 device: str = "cpu", bundle: Bundle | str | None = None) -> InputCheck:
    """Run the contrast check on raw canonical images sharing one grid and brain ``mask``.

    Raises :class:`InputError` when an input confidently looks like another contrast; see the
    module docstring for the rule.
    """
    if not enabled:
        return InputCheck({"skipped": "turned off"}, [])
    started = time.perf_counter()
    for name, array in images.items():
        reason = implausible(name, array, mask, spacing)
        if reason is not None:
            raise InputError(reason)
    try:
        checker = load_checker(bundle, device)
    except ImportError:
        return _skipped("torch is not installed")
    except ModelError as error:
        return _skipped(f"its model could not be loaded ({error})")
    predictions = checker.predict(images, mask, spacing)
    report = {"model_version": checker.bundle.metadata.get("version"),
              "rule": f"error when another contrast group has p >= {REFUSE} and the given one p <= "
                      f"{REFUSE_GIVEN} ({UNRELIABLE_CONFUSIONS} for given/seen groups the network confuses on "
                      "real scans), or two inputs look swapped (each most like the other's contrast, p >= "
                      f"{SWAP_SEEN}, its own p <= {IMPLAUSIBLE}); warning when another group has p >= "
                      f"{CONFIDENT} and the given one p <= {IMPLAUSIBLE}, or p(other) >= {CONFIDENT} "
                      "(t1 and t1c are one group)",
              "probabilities": {name: {c: round(p, 4) for c, p in probs.items()}
                                for name, probs in predictions.items()},
              "predicted": {name: max(probs, key=probs.get) for name, probs in predictions.items()}}
    warnings = decide(predictions)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return InputCheck(report, warnings)


def _skipped(reason: str) -> InputCheck:
    return InputCheck({"skipped": reason}, [f"the contrast check was skipped: {reason}."])


def check_scan(images: dict, mask=None, brain_mask_method: str = "auto", device: str = "cpu",
               bundle: Bundle | str | None = None) -> dict[str, dict[str, float]]:
    """Class probabilities for one scan's co-registered files or images, prepared as ``detect``
    prepares them (validated, canonical grid at the reference's spacing, brain mask), without
    running an anomaly model."""
    from .preparation import load_scan, prepare_scan

    scan = prepare_scan(*load_scan(images, mask), brain_mask_method=brain_mask_method, device=device)
    arrays = {name: sitk.GetArrayFromImage(image) for name, image in scan.images.items()}
    return load_checker(bundle, device).predict(arrays, scan.mask, scan.grid.GetSpacing())
