"""Voxel-wise statistical normative model (in the spirit of Saase et al. 2020).

A healthy cohort — synthetic brains by default, a site's own healthy scans with ``uadbrain train
--model normative --data healthy/`` — is registered to the bundled ICBM152 template
(``template.py``); per template voxel and contrast the cohort's robust mean (median)
and spread (MAD) of the normalised intensity are kept (``training/tasks/normative.py``). A scan is
registered the same way, the two maps are brought onto its own grid, and each voxel's score is its
z-score ``(intensity − median) / spread`` in the direction lesions take on the contrast. Nothing
is interpolated in the scan itself, so a small lesion keeps its resolution.

The registration is affine: where brains differ in shape (ventricles, sulci) the cohort's spread
is wide and the model is less sensitive; in deep white matter it is narrow.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...bundle import sha256_of
from ...errors import ModelError
from ...template import TEMPLATE_PATH, from_template, register_brain, template_image
from .base import AnomalyModel, ModelOutput
from .thresholding import DEFAULT_DIRECTIONS, directional_score

ARCHITECTURE = "uadbrain.VoxelNormative"
BOX_MARGIN_VOXELS = 4  # kept around the template's brain: registered brains reach a little beyond it


@lru_cache(maxsize=1)
def template_sha256() -> str:
    return sha256_of(TEMPLATE_PATH)


def template_box() -> tuple[list[int], list[int]]:
    """``(start, size)`` in template index order ``[i, j, k]`` of the box the statistics cover."""
    import SimpleITK as sitk

    from ...template import TEMPLATE_BRAIN_THRESHOLD

    brain = sitk.GetArrayViewFromImage(template_image()) > TEMPLATE_BRAIN_THRESHOLD
    shape = brain.shape
    start, stop = [], []
    for axis in range(3):  # array axis 2 is index i
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        start.append(max(int(present[0]) - BOX_MARGIN_VOXELS, 0))
        stop.append(min(int(present[-1]) + 1 + BOX_MARGIN_VOXELS, shape[axis]))
    return start[::-1], [b - a for a, b in zip(start, stop)][::-1]


def network_spec(age_range=None, cohort_ages=None) -> dict:
    """The bundle's ``network`` block: the template frame the statistics live in, and for a model
    conditioned on age (``age_range`` and the fitted cohort's ``cohort_ages``) the range, the
    cohort's mean age (the statistics' reference age) and its SD."""
    start, size = template_box()
    spec = {"architecture": ARCHITECTURE, "template": TEMPLATE_PATH.name, "template_sha256": template_sha256(),
            "box_start": start, "box_size": size}
    if age_range:
        if cohort_ages is None:
            raise ValueError("a model conditioned on age is described once its cohort's ages are known")
        ages = np.asarray(cohort_ages, np.float64)
        spec["conditioning"] = {"age": {"range": [float(a) for a in age_range], "reference": round(float(ages.mean()), 2),
                                        "sd": round(float(ages.std()), 2)}}
    return spec


def age_conditioning(network: dict) -> dict | None:
    """``{"range", "reference", "sd"}`` (years) of a model conditioned on age, else None."""
    return network.get("conditioning", {}).get("age")


def scored_age(conditioning: dict, age: float) -> float:
    """The age a conditioned model scores at: the subject's, within the range it was fitted on."""
    return float(np.clip(age, *conditioning["range"]))


def age_warning(network: dict, age: float | None, name: str) -> str | None:
    """What the report says when a model conditioned on age gets no age or one outside its cohort's."""
    conditioning = age_conditioning(network)
    if conditioning is None:
        return None
    low, high = conditioning["range"]
    if age is None:
        return (f"no age given: model '{name}' scored the scan against healthy brains of all ages "
                f"{low:g}-{high:g} years, so it is less sensitive and atrophy of ageing may be flagged — "
                "give the subject's age (--age).")
    if not low <= age <= high:
        return (f"age {age:g} is outside the {low:g}-{high:g} years model '{name}' was fitted on: "
                f"scored as {scored_age(conditioning, age):g} years.")
    return None


def box_slices(network: dict) -> tuple[slice, slice, slice]:
    """The statistics' box as slices of a template array (``[k, j, i]``)."""
    start, size = network["box_start"], network["box_size"]
    return tuple(slice(a, a + n) for a, n in zip(start[::-1], size[::-1]))


def normative_scores(images: dict[str, np.ndarray], mask: np.ndarray, spacing, statistics: dict[str, np.ndarray],
                     network: dict, directions: dict[str, str], age: float | None = None) -> dict[str, np.ndarray]:
    """Each contrast's z-score map against the cohort statistics (``<contrast>.median`` and
    ``<contrast>.spread`` on the template box, and ``<contrast>.age_slope`` for a model conditioned
    on age), on the scan's own grid. A conditioned model's median moves to ``age`` (clamped to the
    cohort's range); without an age the spread widens by the cohort's spread of ages."""
    transform = register_brain(mask, spacing)
    conditioning = age_conditioning(network)

    def on_scan(name: str, contrast: str) -> np.ndarray:
        return from_template(statistics[f"{contrast}.{name}"], mask.shape, spacing, transform, network["box_start"])

    maps = {}
    for contrast, image in images.items():
        median, spread = on_scan("median", contrast), on_scan("spread", contrast)
        if conditioning:
            slope = on_scan("age_slope", contrast)
            if age is None:
                spread = np.sqrt(spread ** 2 + (slope * conditioning["sd"]) ** 2)
            else:
                median = median + slope * (scored_age(conditioning, age) - conditioning["reference"])
        z = np.where(mask, (image - median) / spread, 0.0)
        maps[contrast] = directional_score(z, directions[contrast]).astype(np.float32)
    return maps


def check_template(bundle) -> None:
    """Refuse a bundle whose statistics were fitted in another template than the installed one."""
    network = bundle.metadata["network"]
    if network.get("template_sha256") != template_sha256():
        raise ModelError(f"model '{bundle.name}': its statistics live in another template than the one "
                         f"installed ({network.get('template')}) — update UADBrain or refit the model.")


class VoxelNormativeModel(AnomalyModel):
    def __init__(self, bundle, device: str = "cpu"):
        super().__init__(bundle, device)
        import torch

        check_template(bundle)
        self.network = bundle.metadata["network"]
        self.conditioning = ("age",) if age_conditioning(self.network) else ()
        state = torch.load(bundle.verified_weights_path(), map_location="cpu", weights_only=True)
        self.statistics = {key: value.float().numpy() for key, value in state.items()}
        missing = [f"{c}.age_slope" for c in bundle.contrasts if f"{c}.age_slope" not in self.statistics]
        if self.conditioning and missing:
            raise ModelError(f"model '{bundle.name}' is conditioned on age but its weights lack {missing[0]} — "
                             "refit it with uadbrain train --model normative --age-range.")

    def subject_warnings(self, age):
        warning = age_warning(self.network, age, self.bundle.name)
        return [warning] if warning else super().subject_warnings(age)

    def predict(self, images, brain_mask, spacing, progress=None, is_cancelled=None, age=None):
        if is_cancelled and is_cancelled():
            return ModelOutput(contrast_maps={})
        if progress:
            progress(0.1, "registering to the template")
        directions = {**DEFAULT_DIRECTIONS, **self.bundle.metadata.get("scoring", {}).get("direction", {})}
        maps = normative_scores(images, brain_mask, spacing, self.statistics, self.network, directions, age)
        if progress:
            progress(1.0, "normative z-scores")
        return ModelOutput(contrast_maps=maps)
