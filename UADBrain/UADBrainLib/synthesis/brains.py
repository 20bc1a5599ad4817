"""Synthetic healthy brain MRI from anatomical label maps (the SynthSeg idea).

A whole-head label map (FreeSurfer/SynthSeg labels, or this module's compact :class:`Tissue`
labels) becomes an unlimited stream of synthetic *healthy* scans of a chosen contrast
(``flair``, ``t1``, ``t2``, ``t1c`` or ``random`` per-tissue contrast), whole-head or skull-stripped,
each with its exact brain mask and tissue labels, on a canonical identity-direction grid
(arrays ``[S, P, L]``) at any isotropic spacing.

Typical use::

    synth = Synthesizer.from_folder("../shared/data/label_maps/synthseg")
    brain = synth.sample(seed=7, contrasts=("flair", "t2"), spacing=2.0, skull_strip=True)
    brain.images["flair"]          # float32 [S, P, L], roughly brain-median 1
    brain.brain_mask               # uint8: brain tissue, ventricles, sulcal CSF (see below)
    brain.image("flair")           # the same as a SimpleITK image with geometry

Pipeline of one sample (all randomness from one ``np.random.Generator``, so a seed fixes it):

1. *Anatomy*: ventricles grow into neighbouring tissue (0-3 mm), CSF eats into the cortex or the
   cortex fills part of the sulcal CSF (-1 to +0.2 mm), white matter takes the inner cortex
   (0.2-1.2 mm): sub-voxel thresholds on cached distance maps, so ventricle size, sulcal CSF and
   grey/white proportions vary continuously.
2. *Intensities*: per-tissue means from contrast priors calibrated on real scans, with a random
   overall contrast strength and per-tissue jitter; smooth multi-scale texture inside tissues;
   periventricular rims and frontal/occipital caps (bright on FLAIR/T2, as in healthy ageing).
   Partial volume is exact: the fine label image is box-averaged to the working grid.
3. *Deformation*: random rotation, per-axis scaling, shear, shift and a smooth elastic field, one
   draw shared by all requested contrasts (same anatomy), applied by trilinear resampling.
4. *Acquisition*: per contrast, an optional thick-slice acquisition (mostly axial), a light blur,
   a smooth multiplicative bias field and Rician noise.

The brain mask is the evaluation masks' convention measured on the real scans: brain tissue,
ventricles, sulcal and cisternal CSF and a thin (1 mm) CSF layer, cut at the foramen magnum — not
all CSF inside the skull, whose 30 % share in the SynthSeg maps would lower every brain median.

Speed, one CPU core (``torch.set_num_threads(1)``, OMP_NUM_THREADS=1), label maps cached, default
field of view 192 x 224 x 192 mm, CPU time per volume measured on a shared machine:
2 mm FLAIR 0.26 s (~230 volumes/min), 2 mm FLAIR+T1+T2 0.44 s (~135/min), 2 mm whole head
0.27 s, 1 mm FLAIR 1.9 s (~30/min). Preparing a 256^3 SynthSeg map (once per process) ~5 s.

Label groups of the SynthSeg training maps (found by looking at them; FreeSurfer numbers for the
brain): 502 extra-cranial vessels (carotid/jugular), 506 eyeballs, 507 head and neck soft tissue
(muscle, fat), 508 extra-ocular muscles, 509 nasal and sinus mucosa, 511 skin/scalp, 512 spinal
cord, 514 dural venous sinuses, 515 skull (cortical bone), 516 spongy bone and marrow (diploe,
skull base, vertebrae, mandible), 530 optic nerves; 85 optic chiasm, 136/137 and 163/164 left and
right choroid plexus, 25/57 periventricular white matter (caps at the ventricle horns), 30/62
vessels, 72 cavum septi pellucidi. Label 0 inside the head is air (sinuses, airway).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import InputError
from ..geometry import to_canonical

CONTRASTS = ("flair", "t1", "t2", "t1c")
RANDOM_CONTRAST = "random"
DEFAULT_FIELD_OF_VIEW_MM = (192.0, 224.0, 192.0)  # (S, P, L): a brain with its scalp, not the neck


class Tissue(enum.IntEnum):
    """Compact tissue labels used by the generator (uint8)."""

    BACKGROUND = 0  # air, outside and inside the head
    CEREBRAL_WM = 1
    CORTEX = 2
    VENTRICLE = 3
    CSF = 4  # sulcal and cisternal CSF, and a thin layer around the brain
    CEREBELLAR_WM = 5
    CEREBELLAR_CORTEX = 6
    THALAMUS = 7
    CAUDATE = 8
    PUTAMEN = 9
    PALLIDUM = 10
    BRAINSTEM = 11
    HIPPOCAMPUS_AMYGDALA = 12
    ACCUMBENS = 13
    VENTRAL_DC = 14
    CHOROID_PLEXUS = 15
    BRAIN_VESSEL = 16
    PERIVENTRICULAR_WM = 17  # caps/rims at the ventricle horns (normal in ageing)
    OUTER_CSF = 18  # CSF and meninges farther than a margin from the brain: outside the mask
    SPINAL_CSF = 19  # CSF below the brain mask's inferior cut
    SPINAL_CORD = 20  # cord, and brainstem below the cut
    SKULL = 21
    MARROW = 22
    SOFT_TISSUE = 23
    SKIN = 24
    EYE = 25
    EYE_MUSCLE = 26
    OPTIC_NERVE = 27
    MUCOSA = 28
    VESSEL = 29
    VENOUS_SINUS = 30


N_TISSUES = len(Tissue)
BRAIN_TISSUES = frozenset(t for t in Tissue if 1 <= t <= 17)
WHITE_MATTER_TISSUES = frozenset({Tissue.CEREBRAL_WM, Tissue.PERIVENTRICULAR_WM})

# FreeSurfer / SynthSeg label -> compact tissue. Left and right are merged.
FREESURFER_TO_TISSUE = {
    0: Tissue.BACKGROUND,
    2: Tissue.CEREBRAL_WM, 41: Tissue.CEREBRAL_WM, 77: Tissue.CEREBRAL_WM, 85: Tissue.CEREBRAL_WM,
    3: Tissue.CORTEX, 42: Tissue.CORTEX,
    4: Tissue.VENTRICLE, 5: Tissue.VENTRICLE, 14: Tissue.VENTRICLE, 15: Tissue.VENTRICLE,
    43: Tissue.VENTRICLE, 44: Tissue.VENTRICLE, 72: Tissue.VENTRICLE,
    24: Tissue.CSF,
    7: Tissue.CEREBELLAR_WM, 46: Tissue.CEREBELLAR_WM,
    8: Tissue.CEREBELLAR_CORTEX, 47: Tissue.CEREBELLAR_CORTEX,
    10: Tissue.THALAMUS, 49: Tissue.THALAMUS,
    11: Tissue.CAUDATE, 50: Tissue.CAUDATE,
    12: Tissue.PUTAMEN, 51: Tissue.PUTAMEN,
    13: Tissue.PALLIDUM, 52: Tissue.PALLIDUM,
    16: Tissue.BRAINSTEM,
    17: Tissue.HIPPOCAMPUS_AMYGDALA, 18: Tissue.HIPPOCAMPUS_AMYGDALA,
    53: Tissue.HIPPOCAMPUS_AMYGDALA, 54: Tissue.HIPPOCAMPUS_AMYGDALA,
    26: Tissue.ACCUMBENS, 58: Tissue.ACCUMBENS,
    28: Tissue.VENTRAL_DC, 60: Tissue.VENTRAL_DC,
    31: Tissue.CHOROID_PLEXUS, 63: Tissue.CHOROID_PLEXUS,
    136: Tissue.CHOROID_PLEXUS, 137: Tissue.CHOROID_PLEXUS,
    163: Tissue.CHOROID_PLEXUS, 164: Tissue.CHOROID_PLEXUS,
    30: Tissue.BRAIN_VESSEL, 62: Tissue.BRAIN_VESSEL,
    25: Tissue.PERIVENTRICULAR_WM, 57: Tissue.PERIVENTRICULAR_WM,
    502: Tissue.VESSEL,
    506: Tissue.EYE,
    507: Tissue.SOFT_TISSUE,
    508: Tissue.EYE_MUSCLE,
    509: Tissue.MUCOSA,
    511: Tissue.SKIN,
    512: Tissue.SPINAL_CORD,
    514: Tissue.VENOUS_SINUS,
    515: Tissue.SKULL,
    516: Tissue.MARROW,
    530: Tissue.OPTIC_NERVE,
}

# --------------------------------------------------------------------------------------------
# Contrast priors: mean intensity relative to cerebral white matter, calibrated on healthy-looking
# tissue of the evaluation scans (ratios to the brain median: FLAIR CSF 0.2-0.45, GM 1.01-1.15,
# WM 0.91-0.99; T1 CSF 0.15, GM 0.68-0.87, WM 1.23-1.31; T2 CSF 2.7-3.0, GM 1.17-1.39,
# WM 0.81-0.86; T1c CSF 0.15-0.44, GM 0.75-0.91, WM 1.12-1.22). Extra-cerebral values follow
# textbook appearance (fat bright on T1, fluid bright on T2, bone and flowing blood dark).
# --------------------------------------------------------------------------------------------
T = Tissue
_PRIORS = {
    #                         flair  t1    t2    t1c
    T.BACKGROUND:           (0.0,  0.0,  0.0,  0.0),
    T.CEREBRAL_WM:          (1.0,  1.0,  1.0,  1.0),
    T.CORTEX:               (1.28, 0.62, 1.45, 0.76),
    T.VENTRICLE:            (0.22, 0.09, 4.00, 0.12),
    T.CSF:                  (0.30, 0.10, 4.00, 0.15),
    T.CEREBELLAR_WM:        (0.98, 0.96, 1.02, 0.96),
    T.CEREBELLAR_CORTEX:    (1.15, 0.66, 1.38, 0.74),
    T.THALAMUS:             (1.06, 0.84, 1.22, 0.86),
    T.CAUDATE:              (1.14, 0.72, 1.35, 0.76),
    T.PUTAMEN:              (1.08, 0.78, 1.28, 0.80),
    T.PALLIDUM:             (0.96, 0.90, 0.98, 0.90),
    T.BRAINSTEM:            (1.04, 0.90, 1.15, 0.90),
    T.HIPPOCAMPUS_AMYGDALA: (1.22, 0.64, 1.50, 0.72),
    T.ACCUMBENS:            (1.12, 0.72, 1.35, 0.76),
    T.VENTRAL_DC:           (1.02, 0.88, 1.10, 0.88),
    T.CHOROID_PLEXUS:       (0.90, 0.62, 1.80, 1.40),
    T.BRAIN_VESSEL:         (0.50, 0.40, 0.45, 1.30),
    T.PERIVENTRICULAR_WM:   (1.25, 0.94, 1.30, 0.94),
    T.OUTER_CSF:            (0.30, 0.10, 4.00, 0.15),
    T.SPINAL_CSF:           (0.30, 0.10, 4.00, 0.15),
    T.SPINAL_CORD:          (1.00, 0.90, 1.10, 0.90),
    T.SKULL:                (0.08, 0.06, 0.08, 0.06),
    T.MARROW:               (1.05, 1.15, 1.20, 1.15),
    T.SOFT_TISSUE:          (0.80, 0.80, 0.95, 0.90),
    T.SKIN:                 (1.10, 1.20, 1.30, 1.25),
    T.EYE:                  (0.25, 0.10, 3.80, 0.12),
    T.EYE_MUSCLE:           (0.70, 0.60, 0.70, 0.90),
    T.OPTIC_NERVE:          (0.95, 0.90, 1.10, 0.90),
    T.MUCOSA:               (1.30, 0.50, 2.30, 1.10),
    T.VESSEL:               (0.30, 0.30, 0.30, 1.30),
    T.VENOUS_SINUS:         (0.40, 0.35, 0.40, 1.50),
}
PRIOR_MEANS = {c: np.array([_PRIORS[t][i] for t in Tissue], np.float32)
               for i, c in enumerate(CONTRASTS)}
del T

_FLUIDS = [Tissue.VENTRICLE, Tissue.CSF, Tissue.OUTER_CSF, Tissue.SPINAL_CSF, Tissue.EYE]
_EXTRA_CEREBRAL = [t for t in Tissue if t > Tissue.PERIVENTRICULAR_WM and t not in _FLUIDS]
# sign of the periventricular rim/cap signal per contrast (bright on FLAIR/T2, dim on T1)
_RIM_SIGN = {"flair": 1.0, "t2": 0.8, "t1": -0.25, "t1c": -0.25}
_VENTRICLE_GROWS_INTO = np.isin(np.arange(N_TISSUES), [
    Tissue.CEREBRAL_WM, Tissue.PERIVENTRICULAR_WM, Tissue.CAUDATE, Tissue.THALAMUS,
    Tissue.VENTRAL_DC, Tissue.HIPPOCAMPUS_AMYGDALA, Tissue.ACCUMBENS])
_CORTICES = np.isin(np.arange(N_TISSUES), [Tissue.CORTEX, Tissue.CEREBELLAR_CORTEX])
_SULCAL_CSF = np.arange(N_TISSUES) == Tissue.CSF
_CEREBRAL_CORTEX = np.arange(N_TISSUES) == Tissue.CORTEX
_THICK_SLICE_AXIS_PROBABILITY = (0.6, 0.2, 0.2)  # 2D acquisitions are mostly axial (S, P, L)
_DISTANCE_STEP_MM = 0.1  # distance maps are cached as uint8 in these steps, capped at 25.5 mm


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Ranges of the random draws. Defaults follow healthy adult scans of routine quality."""

    rotation_deg: float = 12.0  # uniform in +-, about each axis
    scaling: tuple[float, float] = (0.88, 1.12)  # global head size factor
    axis_scaling: float = 0.05  # extra +- per axis
    shear: float = 0.03
    shift_mm: float = 8.0
    elastic_mm: tuple[float, float] = (0.0, 3.0)  # displacement sd at the control points
    elastic_spacing_mm: float = 40.0
    ventricle_growth_mm: tuple[float, float] = (0.0, 3.0)  # drawn as lo + (hi-lo) * u**1.5
    # CSF eating into the cortex (> 0, atrophy) or cortex filling part of the sulcal CSF (< 0,
    # younger brains: the SynthSeg maps carry more sulcal CSF than the evaluation scans)
    cortical_atrophy_mm: tuple[float, float] = (-1.0, 0.2)
    white_matter_growth_mm: tuple[float, float] = (0.2, 1.2)
    contrast_strength_sd: float = 0.12  # log-sd of the overall tissue contrast
    tissue_jitter_sd: float = 0.03  # log-sd per brain tissue
    fluid_jitter_sd: float = 0.12
    extra_cerebral_jitter_sd: float = 0.2
    texture_amplitude: tuple[float, float] = (0.02, 0.06)  # brain tissue, relative sd
    extra_cerebral_texture: float = 0.15
    rim_amplitude: tuple[float, float] = (0.05, 0.4)  # thin rim along all ventricles
    cap_amplitude: tuple[float, float] = (0.0, 0.5)  # caps at frontal and occipital horns
    thick_slice_probability: float = 0.25
    slice_thickness_mm: tuple[float, float] = (2.5, 6.0)
    blur_voxels: tuple[float, float] = (0.0, 0.4)  # Gaussian sd, always applied
    bias_sd: tuple[float, float] = (0.0, 0.15)  # log-sd of the bias field (real scans: N4-corrected)
    noise: tuple[float, float] = (0.005, 0.035)  # Rician sd relative to the brain median


# --------------------------------------------------------------------------------------------
# Label maps
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LabelMap:
    """A label map ready for synthesis: compact :class:`Tissue` labels on a canonical grid.

    ``labels`` is uint8 ``[S, P, L]`` with isotropic ``spacing`` (mm) and physical ``origin``
    (LPS, of voxel 0). ``distances`` (to the ``ventricle``, ``csf``, ``cortex`` and
    ``white_matter``; uint8 in 0.1 mm steps, capped at 25.5 mm) are stored only inside ``region``,
    the brain's bounding box, and drive atrophy and periventricular rims.
    """

    labels: np.ndarray
    spacing: float
    origin: np.ndarray
    region: tuple[slice, ...]
    distances: dict[str, np.ndarray]
    name: str = ""

    @property
    def brain_centre(self) -> np.ndarray:
        """Physical (LPS) centre of the brain's bounding box (``region``)."""
        centre_kji = np.array([(s.start + s.stop - 1) / 2.0 for s in self.region])
        return self.origin + self.spacing * centre_kji[::-1]

    def brain_mask(self) -> np.ndarray:
        return _BRAIN_LUT[self.labels]

    def to_image(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.labels)
        image.SetSpacing([self.spacing] * 3)
        image.SetOrigin([float(o) for o in self.origin])
        return image


_BRAIN_LUT = np.isin(np.arange(N_TISSUES), list(BRAIN_TISSUES)).astype(np.uint8)


def compact_labels(freesurfer_labels: np.ndarray) -> np.ndarray:
    """Map FreeSurfer/SynthSeg labels to compact :class:`Tissue` labels (uint8).

    Unknown labels inside the range of brain structures (< 100) become cerebral white matter,
    other unknown labels soft tissue, so that any SynthSeg-style map can be used.
    """
    values = np.clip(np.asarray(freesurfer_labels), 0, None).astype(np.int32)
    top = max(int(values.max()), max(FREESURFER_TO_TISSUE))
    lookup = np.full(top + 1, Tissue.SOFT_TISSUE, np.uint8)
    lookup[:100] = Tissue.CEREBRAL_WM
    for value, tissue in FREESURFER_TO_TISSUE.items():
        lookup[value] = tissue
    return lookup[values]


def _cut_below_cerebellum(labels: np.ndarray) -> np.ndarray:
    """Relabel CSF and brainstem below the lowest cerebellar slice as spinal, outside the mask.

    The evaluation brain masks end at the foramen magnum; the lowest slice holding cerebellum
    is a close and robust proxy in a canonical (axial-slice) array.
    """
    cerebellum = np.isin(labels, [Tissue.CEREBELLAR_CORTEX, Tissue.CEREBELLAR_WM])
    slices = np.flatnonzero(cerebellum.any(axis=(1, 2)))
    if slices.size == 0:
        return labels
    below = labels[:slices[0]]
    below[np.isin(below, [Tissue.CSF, Tissue.VENTRICLE])] = Tissue.SPINAL_CSF
    below[np.isin(below, list(BRAIN_TISSUES))] = Tissue.SPINAL_CORD
    return labels


def _nonzero_box(values: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of the nonzero voxels, grown by ``margin`` (clipped to the array)."""
    slices = []
    for axis in range(values.ndim):
        other = tuple(a for a in range(values.ndim) if a != axis)
        present = np.flatnonzero(np.any(values != 0, axis=other))
        lo, hi = (present[0], present[-1] + 1) if present.size else (0, values.shape[axis])
        slices.append(slice(max(int(lo) - margin, 0), min(int(hi) + margin, values.shape[axis])))
    return tuple(slices)


def _crop_to_head(labels: np.ndarray, spacing: float, neck_mm: float = 60.0):
    """Bounding box of the head (nonzero), the neck cut ``neck_mm`` below the brain."""
    head = list(_nonzero_box(labels))
    lowest_brain = _brain_box(labels, margin_voxels=0)[0].start
    bottom = max(head[0].start, lowest_brain - int(round(neck_mm / spacing)) - 2)
    head[0] = slice(bottom, head[0].stop)
    return tuple(head)


def _brain_box(labels: np.ndarray, margin_voxels: int) -> tuple[slice, ...]:
    """Bounding box of the brain mask labels, grown by a margin."""
    return _nonzero_box(_BRAIN_LUT[labels], margin_voxels)


def _distance_steps(target: np.ndarray, spacing: float) -> np.ndarray:
    """Euclidean distance to ``target`` as uint8 steps of ``_DISTANCE_STEP_MM``, capped."""
    if not target.any():
        return np.full(target.shape, 255, np.uint8)
    distance = ndimage.distance_transform_edt(~target, sampling=spacing)
    return np.minimum(np.round(distance / _DISTANCE_STEP_MM), 255).astype(np.uint8)


def _restrict_mask(labels: np.ndarray, region: tuple[slice, ...], spacing: float,
                   csf_margin_mm: float, envelope_mm: float = 5.0) -> np.ndarray:
    """Keep in the brain mask the main brain, the CSF within its envelope and a thin outer layer.

    The evaluation masks hug the brain: their CSF share (12-19 % of the mask in the MS scans)
    matches sulcal CSF, cisterns, ventricles and a thin outer layer, not the whole intracranial
    space (30 %+ in the SynthSeg maps), and the CSF share sets the brain median used for
    normalisation. The envelope is a morphological closing of the brain tissue by ``envelope_mm``
    (filling sulci, fissures and cisterns); CSF outside it and farther than ``csf_margin_mm`` from
    tissue becomes OUTER_CSF. Brain-labelled islands become soft tissue; enclosed holes are filled.
    """
    sub = labels[region]
    tissue = _BRAIN_LUT[sub].astype(bool) & (sub != Tissue.CSF)
    distance = ndimage.distance_transform_edt(~tissue, sampling=spacing)
    dilated = distance <= envelope_mm
    envelope = ndimage.distance_transform_edt(dilated, sampling=spacing) > envelope_mm
    sub[(sub == Tissue.CSF) & (distance > csf_margin_mm) & ~envelope] = Tissue.OUTER_CSF
    components, count = ndimage.label(_BRAIN_LUT[sub])
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        island = (components != sizes.argmax()) & (components > 0)
        sub[island & (sub == Tissue.CSF)] = Tissue.OUTER_CSF
        sub[island & _BRAIN_LUT[sub].astype(bool)] = Tissue.SOFT_TISSUE
    enclosed = ndimage.binary_fill_holes(_BRAIN_LUT[sub]) & ~_BRAIN_LUT[sub].astype(bool)
    sub[enclosed & (sub == Tissue.OUTER_CSF)] = Tissue.CSF
    sub[enclosed & (sub != Tissue.CSF)] = Tissue.BRAIN_VESSEL  # sinuses, vessels inside
    return labels


def prepare_label_map(image: sitk.Image, compact: bool | None = None, name: str = "",
                      csf_margin_mm: float = 1.0) -> LabelMap:
    """Canonicalise, compact, cut and crop a label map image and cache its distance maps.

    ``compact``: whether the image already holds :class:`Tissue` labels; by default guessed
    (compact maps have no label above ``len(Tissue)``, FreeSurfer whole-head maps do).
    ``csf_margin_mm``: CSF farther than this from brain tissue is left out of the brain mask.
    """
    spacing = np.array(image.GetSpacing())
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        image = to_canonical(image, spacing=[float(spacing.min())] * 3, is_label=True)
    else:
        image = to_canonical(image, is_label=True)
    raw = sitk.GetArrayFromImage(image)
    head = _nonzero_box(raw)  # a cheap first crop before relabelling
    raw = raw[head]
    if compact is None:
        compact = raw.max() < N_TISSUES
    labels = raw.astype(np.uint8) if compact else compact_labels(raw)
    spacing = float(image.GetSpacing()[0])
    if not _BRAIN_LUT[labels].any():
        raise InputError(f"label map {name} holds no brain labels — pass a whole-head "
                         "FreeSurfer/SynthSeg label map or compact Tissue labels")
    labels = _cut_below_cerebellum(labels)
    crop = _crop_to_head(labels, spacing)
    labels = np.ascontiguousarray(labels[crop])
    start = np.array([h.start + c.start for h, c in zip(head, crop)])
    origin = np.array(image.GetOrigin()) + spacing * start[::-1]

    if not compact:
        labels = _restrict_mask(labels, _brain_box(labels, margin_voxels=int(12.0 / spacing)),
                                spacing, csf_margin_mm)
    region = _brain_box(labels, margin_voxels=1)
    local = labels[region]
    targets = {"ventricle": local == Tissue.VENTRICLE,
               "csf": np.isin(local, [Tissue.CSF, Tissue.OUTER_CSF]),
               "cortex": local == Tissue.CORTEX,
               "white_matter": local == Tissue.CEREBRAL_WM}
    return LabelMap(labels=labels, spacing=spacing, origin=origin, region=region,
                    distances={k: _distance_steps(t, spacing) for k, t in targets.items()},
                    name=name)


@functools.lru_cache(maxsize=32)
def load_label_map(path: str | Path, compact: bool | None = None) -> LabelMap:
    """Read and prepare a label map file (cached per path: preparing takes a few seconds)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"label map not found: {path} — check the path")
    return prepare_label_map(sitk.ReadImage(str(path)), compact=compact, name=path.name)


def find_label_maps(folder: str | Path) -> list[Path]:
    """The NIfTI label maps in ``folder``, sorted by name."""
    folder = Path(folder)
    paths = sorted(p for p in folder.glob("*.nii*") if p.is_file())
    if not paths:
        raise InputError(f"no label maps (*.nii, *.nii.gz) in {folder} — pass the folder of "
                         "SynthSeg training label maps")
    return paths


# --------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------

# Healthy ageing for age-conditioned models: between 20 and 90 years the lateral ventricles grow
# to several times their volume and the cortex thins while the sulci widen. The generator's
# assumption, not a fit to data: the mean ventricle growth rises as ((age - 20) / 70) ** 1.5 from
# 0 to 4 mm, the CSF's reach into the cortex linearly from -1 mm (cortex filling sulcal CSF) to
# 0.6 mm, each with a between-subject spread at a given age.
AGE_RANGE_YEARS = (20.0, 90.0)
_AGED_VENTRICLE_MM = (0.0, 4.0)
_AGED_CORTEX_MM = (-1.0, 0.6)
_AGE_SPREAD_MM = {"ventricle": 0.5, "cortex": 0.2}


def _uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi))


def atrophy_of_age(age: float | None, rng: np.random.Generator, config: SynthesisConfig) -> tuple[float, float]:
    """``(ventricle growth, cortical atrophy)`` in mm: drawn from the configured ranges when the
    age is unknown, else around the mean of that age (:data:`AGE_RANGE_YEARS`)."""
    if age is None:
        lo, hi = config.ventricle_growth_mm
        return lo + (hi - lo) * rng.random() ** 1.5, _uniform(rng, config.cortical_atrophy_mm)
    ageing = float(np.clip((age - AGE_RANGE_YEARS[0]) / (AGE_RANGE_YEARS[1] - AGE_RANGE_YEARS[0]), 0.0, 1.0))
    ventricle = _AGED_VENTRICLE_MM[0] + (_AGED_VENTRICLE_MM[1] - _AGED_VENTRICLE_MM[0]) * ageing ** 1.5
    cortex = _AGED_CORTEX_MM[0] + (_AGED_CORTEX_MM[1] - _AGED_CORTEX_MM[0]) * ageing
    return (max(0.0, ventricle + rng.normal(0.0, _AGE_SPREAD_MM["ventricle"])),
            cortex + rng.normal(0.0, _AGE_SPREAD_MM["cortex"]))


def sample_tissue_intensities(contrast: str, rng: np.random.Generator,
                              config: SynthesisConfig = SynthesisConfig()) -> np.ndarray:
    """Mean intensity per :class:`Tissue` (cerebral WM = 1) for one synthetic scan.

    Priors are scaled by one random overall contrast strength (tissue differences from WM grow or
    shrink together, as between scanners) and jittered per tissue. ``random`` draws every tissue
    uniformly, keeping all fluids alike and the white matters alike.
    """
    if contrast == RANDOM_CONTRAST:
        means = rng.uniform(0.05, 2.0, N_TISSUES).astype(np.float32)
        means[_FLUIDS] = means[Tissue.VENTRICLE]
        means[[Tissue.CEREBELLAR_WM, Tissue.SPINAL_CORD, Tissue.OPTIC_NERVE]] = means[
            Tissue.CEREBRAL_WM]
        means[Tissue.BACKGROUND] = 0.0
        return means / means[Tissue.CEREBRAL_WM]
    if contrast not in PRIOR_MEANS:
        raise InputError(f"unknown contrast {contrast!r} — use one of "
                         f"{', '.join(CONTRASTS + (RANDOM_CONTRAST,))}")
    prior = PRIOR_MEANS[contrast]
    strength = np.exp(rng.normal(0.0, config.contrast_strength_sd))
    fluid_strength = np.exp(rng.normal(0.0, config.contrast_strength_sd))
    means = 1.0 + (prior - 1.0) * strength
    means[_FLUIDS] = 1.0 + (prior[_FLUIDS] - 1.0) * fluid_strength
    jitter = np.full(N_TISSUES, config.tissue_jitter_sd)
    jitter[_FLUIDS] = config.fluid_jitter_sd
    jitter[_EXTRA_CEREBRAL] = config.extra_cerebral_jitter_sd
    jitter[Tissue.CEREBRAL_WM] = 0.0
    means = np.clip(means * np.exp(rng.normal(0.0, jitter)), 0.01, None).astype(np.float32)
    means[Tissue.BACKGROUND] = 0.0
    return means


def _smooth_noise(rng: np.random.Generator, shape, cell_voxels: float) -> torch.Tensor:
    """Zero-mean random field varying over ``cell_voxels``: coarse Gaussian noise, upsampled."""
    coarse = [max(2, int(np.ceil(s / cell_voxels)) + 1) for s in shape]
    noise = torch.from_numpy(rng.standard_normal(coarse, dtype=np.float32))
    return F.interpolate(noise[None, None], size=tuple(shape), mode="trilinear",
                         align_corners=True)[0, 0]


def _texture(rng: np.random.Generator, shape, spacing: float) -> torch.Tensor:
    """Multi-scale texture (about unit sd): fields varying over 3, 7 and 16 mm."""
    field = sum(weight * _smooth_noise(rng, shape, cell_mm / spacing)
                for cell_mm, weight in ((3.0, 0.5), (7.0, 0.7), (16.0, 0.6)))
    return field / field.std().clamp_min(1e-6)


# --------------------------------------------------------------------------------------------
# Anatomy: atrophy, partial volume, rims
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Growth:
    """One tissue growing into its neighbours: voxels (flat indices) and the fraction it takes."""

    index: np.ndarray
    fraction: np.ndarray
    tissue: Tissue


def _grow(label_map: LabelMap, distance: str, eligible: np.ndarray, radius_mm: float,
          tissue: Tissue) -> _Growth:
    """Advance the boundary of ``tissue`` by ``radius_mm`` into the eligible labels.

    A voxel whose centre is ``d`` mm from the nearest ``tissue`` voxel centre has its near face at
    ``d - spacing/2``; the front moves from ``spacing/2`` to ``radius + spacing/2``, so the voxel
    is covered by ``clip(1 + (radius - d) / spacing, 0, 1)``: sub-voxel atrophy, continuous in the
    radius, which becomes exact partial volume after box-averaging.
    """
    spacing, steps = label_map.spacing, label_map.distances[distance]
    if radius_mm <= 0:
        return _Growth(np.zeros(0, np.int64), np.zeros(0, np.float32), tissue)
    local = np.flatnonzero(steps.ravel() < (radius_mm + spacing) / _DISTANCE_STEP_MM)
    local = local[eligible[label_map.labels[label_map.region].ravel()[local]]]
    fraction = np.clip(1.0 + (radius_mm - steps.ravel()[local] * _DISTANCE_STEP_MM) / spacing,
                       0.0, 1.0).astype(np.float32)
    keep = fraction > 0
    position = np.unravel_index(local[keep], steps.shape)
    offset = [s.start for s in label_map.region]
    index = np.ravel_multi_index(tuple(p + o for p, o in zip(position, offset)),
                                 label_map.labels.shape)
    return _Growth(index, fraction[keep], tissue)


def _atrophy(label_map: LabelMap, ventricle_mm: float, cortex_mm: float,
             white_matter_mm: float) -> list[_Growth]:
    """Ventricles grow into neighbouring tissue; CSF eats into the cortex (``cortex_mm`` > 0) or
    the cortex fills part of the sulcal CSF (``cortex_mm`` < 0); white matter takes the inner
    part of the cortex (the grey/white boundary of automated segmentations is uncertain)."""
    return [
        _grow(label_map, "ventricle", _VENTRICLE_GROWS_INTO, ventricle_mm, Tissue.VENTRICLE),
        _grow(label_map, "white_matter", _CEREBRAL_CORTEX, white_matter_mm, Tissue.CEREBRAL_WM),
        _grow(label_map, "csf", _CORTICES, cortex_mm, Tissue.CSF) if cortex_mm >= 0 else
        _grow(label_map, "cortex", _SULCAL_CSF, -cortex_mm, Tissue.CORTEX),
    ]


def _relabel(labels: np.ndarray, growths: Sequence[_Growth]) -> np.ndarray:
    """Labels after the growths: a voxel changes when the growing tissue takes half of it."""
    labels = labels.copy()
    for growth in growths:
        labels.ravel()[growth.index[growth.fraction >= 0.5]] = growth.tissue
    return labels


def _intensity(labels: np.ndarray, means: np.ndarray, growths: Sequence[_Growth]) -> np.ndarray:
    """Fine-grid intensity: tissue means, mixed where a growth took part of a voxel."""
    image = means[labels]
    flat = image.ravel()
    for growth in growths:
        current = flat[growth.index]
        flat[growth.index] = current + growth.fraction * (means[growth.tissue] - current)
    return image


def _box_average(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks (partial volume); a last incomplete block is dropped.

    Summing strided slices one axis at a time is several times faster than a 6-D reshape mean.
    """
    values = values.astype(np.float32, copy=False)
    if factor == 1:
        return values
    values = values[tuple(slice(0, s - s % factor) for s in values.shape)]  # whole blocks only
    for axis in range(3):
        index = [slice(None)] * 3
        total = None
        for offset in range(factor):
            index[axis] = slice(offset, None, factor)
            part = values[tuple(index)]
            total = part.copy() if total is None else np.add(total, part, out=total)
        values = total
    return values * np.float32(1.0 / factor ** 3)


def _periventricular_field(label_map: LabelMap, labels: np.ndarray, ventricle_mm: float,
                           rim: float, cap: float, rng: np.random.Generator) -> np.ndarray:
    """Relative signal change in white matter near the ventricles (thin rim + horn caps).

    The rim decays over 1-2.5 mm from every ventricle wall; caps over 3-8 mm and only towards
    the anterior and posterior ends of the ventricular system (frontal and occipital horns).
    """
    field = np.zeros(labels.shape, np.float32)
    region = label_map.region
    distance_steps = label_map.distances["ventricle"]
    near = np.isin(labels[region], list(WHITE_MATTER_TISSUES)) & (distance_steps < 200)
    if not near.any():
        return field
    # distance from the (grown) ventricle wall, the wall being half a voxel from voxel centres
    wall = ventricle_mm + 0.5 * label_map.spacing
    distance = np.maximum(distance_steps[near] * _DISTANCE_STEP_MM - wall, 0.0)
    rim_width = rng.uniform(1.0, 2.5)
    cap_width = rng.uniform(3.0, 8.0)

    ventricle_rows = np.flatnonzero((labels == Tissue.VENTRICLE).any(axis=(0, 2)))
    rows = np.argwhere(near)[:, 1] + region[1].start
    if ventricle_rows.size:
        centre = (ventricle_rows[0] + ventricle_rows[-1]) / 2.0
        half = max((ventricle_rows[-1] - ventricle_rows[0]) / 2.0, 1.0)
        towards_horn = np.clip((np.abs(rows - centre) / half - 0.35) / 0.65, 0.0, 1.0) ** 2
    else:
        towards_horn = np.zeros(rows.shape)
    value = rim * np.exp(-distance / rim_width) + cap * towards_horn * np.exp(-distance / cap_width)
    field[region][near] = value
    field[labels == Tissue.PERIVENTRICULAR_WM] += cap * 0.5
    return field


# --------------------------------------------------------------------------------------------
# Deformation
# --------------------------------------------------------------------------------------------

def _rotation(angles_rad) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_affine(rng: np.random.Generator, config: SynthesisConfig):
    """Linear part (output mm -> source mm, LPS) and shift (mm) of a random head pose/size."""
    angles = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg, 3))
    size = rng.uniform(*config.scaling) * (1 + rng.uniform(-config.axis_scaling,
                                                           config.axis_scaling, 3))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-config.shear, config.shear, 3)
    # source = linear @ output: a larger head in the output samples a smaller source extent
    linear = _rotation(angles) @ shear @ np.diag(1.0 / size)
    shift = rng.uniform(-config.shift_mm, config.shift_mm, 3)
    return linear, shift, {"rotation_deg": np.rad2deg(angles).round(2).tolist(),
                           "scaling": size.round(3).tolist()}


def _source_points(shape, spacing: float, centre: np.ndarray, linear, shift,
                   elastic: torch.Tensor) -> torch.Tensor:
    """Physical source point (LPS mm) of every output voxel, shape [D, H, W, 3] as (x, y, z)."""
    axes = [torch.arange(n, dtype=torch.float32) * spacing - (n - 1) * spacing / 2 for n in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    offsets = torch.stack([xx, yy, zz], dim=-1)  # output mm relative to the grid centre
    matrix = torch.from_numpy(np.asarray(linear, np.float32))
    points = offsets @ matrix.T
    points += torch.from_numpy((centre + shift).astype(np.float32))
    points += elastic.permute(1, 2, 3, 0)
    return points


def _to_grid(points: torch.Tensor, origin: np.ndarray, spacing: float, shape) -> torch.Tensor:
    """Physical points -> ``grid_sample`` coordinates of an array with the given geometry."""
    origin = torch.from_numpy(np.asarray(origin, np.float32))
    size = torch.tensor([shape[2], shape[1], shape[0]], dtype=torch.float32)
    index = (points - origin) / spacing
    return (2.0 * index / (size - 1).clamp_min(1.0) - 1.0)[None]


def _nearest_labels(labels: np.ndarray, points: torch.Tensor, origin: np.ndarray,
                    spacing: float) -> np.ndarray:
    """Labels at physical points (nearest voxel; background outside the array)."""
    index = torch.round((points - torch.from_numpy(np.asarray(origin, np.float32))) / spacing)
    index = index.to(torch.int64)  # (x, y, z) = (L, P, S) order
    size = torch.tensor(labels.shape[::-1])
    inside = ((index >= 0) & (index < size)).all(dim=-1)
    flat = (index[..., 2] * labels.shape[1] + index[..., 1]) * labels.shape[2] + index[..., 0]
    flat = torch.where(inside, flat, torch.zeros_like(flat)).numpy()
    out = np.take(labels.ravel(), flat)
    out[~inside.numpy()] = 0
    return out


# --------------------------------------------------------------------------------------------
# Acquisition
# --------------------------------------------------------------------------------------------

def _thick_slices(image: np.ndarray, axis: int, thickness_voxels: float) -> np.ndarray:
    """Simulate a 2D acquisition: slice profile blur, thick sampling, linear interpolation back."""
    blurred = ndimage.gaussian_filter1d(image, thickness_voxels / 2.355, axis=axis, mode="nearest")
    n = image.shape[axis]
    n_thick = max(2, int(round(n / thickness_voxels)))
    moved = np.ascontiguousarray(np.moveaxis(blurred, axis, -1))
    rows = torch.from_numpy(moved.reshape(1, -1, n))
    low = F.interpolate(rows, size=n_thick, mode="linear", align_corners=True)
    back = F.interpolate(low, size=n, mode="linear", align_corners=True).numpy()
    return np.ascontiguousarray(np.moveaxis(back.reshape(moved.shape), -1, axis))


def _acquire(image: np.ndarray, brain: np.ndarray, spacing: float, rng: np.random.Generator,
             config: SynthesisConfig) -> tuple[np.ndarray, dict]:
    """Resolution loss, bias field and Rician noise for one contrast."""
    params = {}
    if rng.random() < config.thick_slice_probability:
        axis = int(rng.choice(3, p=_THICK_SLICE_AXIS_PROBABILITY))
        thickness = _uniform(rng, config.slice_thickness_mm) / spacing
        if thickness > 1.3:
            image = _thick_slices(image, axis, thickness)
            params["thick_slices"] = {"axis": axis, "thickness_mm": round(thickness * spacing, 2)}
    blur = _uniform(rng, config.blur_voxels)
    if blur > 0.05:
        image = ndimage.gaussian_filter(image, blur, mode="nearest")
    bias_sd = _uniform(rng, config.bias_sd)
    bias = torch.exp(bias_sd * _smooth_noise(rng, image.shape, max(image.shape) / 3.0)).numpy()
    image = image * bias
    reference = float(np.median(image[brain])) if brain.any() else float(image.mean())
    sigma = _uniform(rng, config.noise) * reference
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.sqrt(real * real + imaginary * imaginary)
    params.update(blur_voxels=round(blur, 3), bias_sd=round(bias_sd, 3),
                  noise_sd=round(sigma / max(reference, 1e-6), 4))
    return image.astype(np.float32), params


# --------------------------------------------------------------------------------------------
# Result and entry points
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SyntheticBrain:
    """One synthetic scan: images of one anatomy in several contrasts, with mask and labels.

    Arrays are canonical ``[S, P, L]`` (identity direction), isotropic ``spacing`` mm, voxel 0 at
    physical ``origin`` (LPS). ``images`` are float32, roughly brain-median 1 before bias and
    noise; zero outside the brain when ``skull_stripped``. ``brain_mask`` (uint8) is brain tissue,
    ventricles, sulcal CSF and a thin CSF layer, cut at the foramen magnum. ``labels`` are
    :class:`Tissue` values after atrophy and deformation. ``parameters`` records the draws.
    """

    images: dict[str, np.ndarray]
    brain_mask: np.ndarray
    labels: np.ndarray
    spacing: float
    origin: tuple[float, float, float]
    skull_stripped: bool
    parameters: dict

    def reference(self) -> sitk.Image:
        """An empty image with this scan's geometry."""
        image = sitk.Image([int(s) for s in self.brain_mask.shape[::-1]], sitk.sitkUInt8)
        image.SetSpacing([float(self.spacing)] * 3)
        image.SetOrigin([float(o) for o in self.origin])
        return image

    def as_image(self, array: np.ndarray) -> sitk.Image:
        """An array on this scan's grid (e.g. an anomaly mask) as a SimpleITK image."""
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(self.reference())
        return image

    def image(self, contrast: str) -> sitk.Image:
        return self.as_image(self.images[contrast])

    def mask_image(self) -> sitk.Image:
        return self.as_image(self.brain_mask)

    def labels_image(self) -> sitk.Image:
        return self.as_image(self.labels)

    def skull_strip(self) -> "SyntheticBrain":
        """The same scan with every image zeroed outside the brain mask."""
        mask = self.brain_mask.astype(bool)
        images = {c: np.where(mask, a, np.float32(0)) for c, a in self.images.items()}
        return dataclasses.replace(self, images=images, skull_stripped=True)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected piece (resampling can split off a few partial-volume voxels)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def _output_shape(field_of_view_mm, spacing: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(f / spacing))) for f in field_of_view_mm)


def synthesize(label_map: LabelMap, contrasts: Sequence[str] = ("flair",), spacing: float = 2.0,
               skull_strip: bool = True, seed: int | np.random.Generator | None = None,
               config: SynthesisConfig | None = None,
               field_of_view_mm: Sequence[float] = DEFAULT_FIELD_OF_VIEW_MM, age: float | None = None) -> SyntheticBrain:
    """Draw one synthetic healthy scan of ``label_map`` in each of ``contrasts``.

    All contrasts share anatomy, atrophy and deformation; each has its own intensities, texture,
    resolution, bias and noise. ``seed`` (int or Generator) makes the result reproducible.
    ``field_of_view_mm`` is (S, P, L), centred on the brain (plus a random shift). ``age`` (years)
    sets the atrophy to that age's (:func:`atrophy_of_age`); None draws it from ``config``.
    """
    config = config or SynthesisConfig()
    rng = np.random.default_rng(seed)
    contrasts = tuple(contrasts)
    for contrast in contrasts:
        if contrast not in CONTRASTS and contrast != RANDOM_CONTRAST:
            raise InputError(f"unknown contrast {contrast!r} — use one of "
                             f"{', '.join(CONTRASTS + (RANDOM_CONTRAST,))}")
    if spacing <= 0:
        raise InputError(f"spacing must be positive, got {spacing}")

    ventricle_mm, cortex_mm = atrophy_of_age(age, rng, config)
    white_matter_mm = _uniform(rng, config.white_matter_growth_mm)
    growths = _atrophy(label_map, ventricle_mm, cortex_mm, white_matter_mm)
    labels = _relabel(label_map.labels, growths)
    rim = _uniform(rng, config.rim_amplitude)
    cap = _uniform(rng, config.cap_amplitude)
    periventricular = _periventricular_field(label_map, labels, ventricle_mm, rim, cap, rng)

    # working (source) grid: the label grid box-averaged to about the output spacing
    factor = max(1, int(round(spacing / label_map.spacing)))
    work_spacing = label_map.spacing * factor
    work_origin = label_map.origin + label_map.spacing * (factor - 1) / 2.0
    brain_fraction = _box_average(_BRAIN_LUT[labels], factor)
    work_shape = brain_fraction.shape
    periventricular = _box_average(periventricular, factor)
    amplitude_lut = np.full(N_TISSUES, config.extra_cerebral_texture, np.float32)
    amplitude_lut[list(BRAIN_TISSUES)] = _uniform(rng, config.texture_amplitude)
    amplitude_lut[Tissue.BACKGROUND] = 0.0
    texture_amplitude = torch.from_numpy(_box_average(amplitude_lut[labels], factor))

    channels, intensity_params = [], {}
    for contrast in contrasts:
        means = sample_tissue_intensities(contrast, rng, config)
        clean = torch.from_numpy(_box_average(_intensity(label_map.labels, means, growths), factor))
        textured = clean * (1.0 + texture_amplitude * _texture(rng, work_shape, work_spacing))
        rim_sign = (_RIM_SIGN[contrast] if contrast in _RIM_SIGN
                    else float(rng.uniform(-0.5, 1.0)))
        textured += torch.from_numpy(periventricular) * rim_sign
        channels.append(textured.clamp_min(0.0))
        intensity_params[contrast] = {t.name.lower(): round(float(means[t]), 3)
                                      for t in Tissue if t}
    channels.append(torch.from_numpy(brain_fraction))

    # deformation shared by all contrasts
    shape = _output_shape(field_of_view_mm, spacing)
    linear, shift, pose = _random_affine(rng, config)
    elastic_sd = _uniform(rng, config.elastic_mm)
    elastic = elastic_sd * torch.stack([
        _smooth_noise(rng, shape, config.elastic_spacing_mm / spacing) for _ in range(3)])
    centre = label_map.brain_centre
    points = _source_points(shape, spacing, centre, linear, shift, elastic)
    warped = F.grid_sample(torch.stack(channels)[None], _to_grid(points, work_origin, work_spacing,
                                                                  work_shape),
                           mode="bilinear", padding_mode="zeros", align_corners=True)[0].numpy()
    warped_labels = _nearest_labels(labels, points, label_map.origin, label_map.spacing)
    brain_mask = _largest_component(warped[-1] >= 0.5).astype(np.uint8)

    images, acquisition_params = {}, {}
    for index, contrast in enumerate(contrasts):
        image, acquisition_params[contrast] = _acquire(warped[index], brain_mask.astype(bool),
                                                       spacing, rng, config)
        images[contrast] = image

    origin = centre - (np.array(shape[::-1]) - 1) * spacing / 2.0
    brain = SyntheticBrain(
        images=images, brain_mask=brain_mask, labels=warped_labels, spacing=float(spacing),
        origin=tuple(float(o) for o in origin), skull_stripped=False,
        parameters={"label_map": label_map.name, "age": age, "ventricle_growth_mm": round(ventricle_mm, 2),
                    "cortical_atrophy_mm": round(cortex_mm, 2),
                    "white_matter_growth_mm": round(white_matter_mm, 2), "rim": round(rim, 3),
                    "cap": round(cap, 3), "elastic_mm": round(elastic_sd, 2), **pose,
                    "intensities": intensity_params, "acquisition": acquisition_params})
    return brain.skull_strip() if skull_strip else brain


class Synthesizer:
    """Draws synthetic healthy scans from a set of label maps (loaded lazily and cached).

    ``label_maps``: :class:`LabelMap` objects, SimpleITK label images or file paths.
    """

    def __init__(self, label_maps: Iterable[LabelMap | sitk.Image | str | Path],
                 config: SynthesisConfig | None = None):
        self._sources = list(label_maps)
        if not self._sources:
            raise InputError("no label maps given — pass at least one label map")
        self._prepared: dict[int, LabelMap] = {}
        self.config = config or SynthesisConfig()

    @classmethod
    def from_folder(cls, folder: str | Path, config: SynthesisConfig | None = None):
        return cls(find_label_maps(folder), config)

    def __len__(self) -> int:
        return len(self._sources)

    def label_map(self, index: int) -> LabelMap:
        if index not in self._prepared:
            source = self._sources[index]
            if isinstance(source, LabelMap):
                prepared = source
            elif isinstance(source, sitk.Image):
                prepared = prepare_label_map(source, name=f"label map {index}")
            else:
                prepared = load_label_map(str(source))
            self._prepared[index] = prepared
        return self._prepared[index]

    def sample(self, seed: int | np.random.Generator | None = None,
               contrasts: Sequence[str] = ("flair",), spacing: float = 2.0,
               skull_strip: bool = True, label_map_index: int | None = None,
               field_of_view_mm: Sequence[float] = DEFAULT_FIELD_OF_VIEW_MM, age: float | None = None) -> SyntheticBrain:
        """One synthetic scan from a randomly chosen (or the given) label map, of ``age`` years
        when given."""
        rng = np.random.default_rng(seed)
        index = int(rng.integers(len(self))) if label_map_index is None else label_map_index
        return synthesize(self.label_map(index), contrasts, spacing, skull_strip, rng,
                          self.config, field_of_view_mm, age)
