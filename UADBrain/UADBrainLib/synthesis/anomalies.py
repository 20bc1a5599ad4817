"""Synthetic anomalies inserted into (synthetic or real) healthy brain volumes.

For training and validating a synthetic-anomaly segmenter, and for examples and tests. Each anomaly
draws a *shape* and an *appearance* independently, so that no single kind dominates, and blends
the changed intensities in with a blurred edge. The returned mask is where the blend weight is at
least one half, i.e. where the image changed most.

Shapes (``SHAPES``):

* ``ellipsoid`` — diameters 2-40 mm (log-uniform), random axes and orientation;
* ``blob`` — an ellipsoid whose surface is distorted by smooth noise (tumour-like);
* ``ms_lesion`` — a real lesion outline from a folder of lesion masks (e.g. the consensus masks
  of the Lesjak 2017 MS data), flipped and rescaled; needs :class:`LesionShapes`, otherwise it is
  replaced by a small blob, so nothing here needs data at run time;
* ``periventricular`` — a confluent band of white matter along the ventricles (needs tissue
  labels; otherwise a small blob).

Appearances (``APPEARANCES``): ``brighter``, ``darker``, ``subtle`` (0.1-0.4 contrast either way),
``lesion`` (MS/oedema-like: bright on FLAIR and T2, dark on T1 and T1c, one strength for all),
``ms`` (demyelinating lesion: per-contrast lesion-to-white-matter ratios as seen on conventional
scans, one shared severity), ``texture`` (added
fine-grained variation), ``fpi`` (a patch from elsewhere in the brain blended in), ``constant``
(flat fill plus matching noise) and ``tumour`` (oedema, enhancing rim and necrotic core).

Restrict ``AnomalyConfig.shapes`` / ``.appearances`` to hold kinds out of training and validate on
them. Everything is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..geometry import to_canonical
from .brains import RANDOM_CONTRAST, SyntheticBrain, Tissue

SHAPES = ("ellipsoid", "blob", "ms_lesion", "periventricular")
APPEARANCES = ("brighter", "darker", "subtle", "lesion", "ms", "texture", "fpi", "constant", "tumour")

# sign of the intensity change of MS lesions / oedema per contrast
_LESION_POLARITY = {"flair": 1.0, "t2": 1.0, "t1": -0.6, "t1c": -0.6}
# MS lesion intensity relative to the normal-appearing white matter it replaces, per contrast:
# conventional 1.5-3 T scans show lesions relatively brighter on T2 than on FLAIR (whose dynamic
# range is compressed) and iso- to hypointense on T1 (non-enhancing on T1c). Ranges cover mild to
# marked lesions; one severity is shared so a lesion bright on FLAIR is bright on T2 too.
_MS_LESION_RATIO = {"flair": (1.15, 1.7), "t2": (1.35, 2.4), "t1": (0.65, 1.0), "t1c": (0.65, 1.0)}
_MS_SEVERITY_JITTER = 0.15  # per-contrast spread of the shared severity (fraction of each range)
_WHITE_MATTER = (Tissue.CEREBRAL_WM, Tissue.PERIVENTRICULAR_WM)
_FLUID = (Tissue.VENTRICLE, Tissue.CSF)
# tumour compartments, intensity relative to the brain median: (flair, t1, t2, t1c)
_TUMOUR_RIM = {"flair": (1.2, 1.6), "t1": (0.7, 0.9), "t2": (1.2, 1.6), "t1c": (1.6, 2.6)}
_TUMOUR_CORE = {"flair": (0.4, 1.0), "t1": (0.25, 0.5), "t2": (2.0, 3.0), "t1c": (0.3, 0.5)}
_PLACEMENT_ATTEMPTS = 5  # redraws when a shape falls outside the allowed tissue


@dataclasses.dataclass(frozen=True)
class AnomalyConfig:
    """Which anomalies to draw and their ranges."""

    shapes: tuple[str, ...] = SHAPES
    appearances: tuple[str, ...] = APPEARANCES
    count: tuple[int, int] = (1, 3)  # anomalies per volume, inclusive
    diameter_mm: tuple[float, float] = (2.0, 40.0)
    contrast: tuple[float, float] = (0.25, 1.2)  # relative change for brighter/darker/lesion
    subtle_contrast: tuple[float, float] = (0.1, 0.4)
    edge_blur_voxels: tuple[float, float] = (0.0, 2.0)
    lesion_scale: tuple[float, float] = (0.6, 1.6)
    white_matter_probability: float = 0.5  # ellipsoids and blobs centred in white matter

    def __post_init__(self):
        for name, chosen, known in (("shape", self.shapes, SHAPES),
                                    ("appearance", self.appearances, APPEARANCES)):
            unknown = set(chosen) - set(known)
            if unknown or not chosen:
                raise InputError(f"unknown or no anomaly {name}s {sorted(unknown)} — choose from "
                                 f"{', '.join(known)}")


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """What was inserted: kind, centre voxel ``[S, P, L]`` and size."""

    shape: str
    appearance: str
    centre: tuple[int, int, int]
    volume_ml: float


@dataclasses.dataclass
class AnomalyResult:
    """Images with anomalies (same keys as the input), their union mask (uint8) and the list."""

    images: dict[str, np.ndarray]
    mask: np.ndarray
    anomalies: list[Anomaly]


class LesionShapes:
    """A bank of real lesion outlines (binary crops at 1 mm, canonical ``[S, P, L]``)."""

    def __init__(self, outlines: Sequence[np.ndarray], spacing: float = 1.0):
        self.outlines = [np.asarray(o, bool) for o in outlines if np.any(o)]
        if not self.outlines:
            raise InputError("no lesion outlines given — pass non-empty lesion masks")
        self.spacing = float(spacing)
        self.volumes_mm3 = np.array([o.sum() for o in self.outlines]) * self.spacing ** 3

    @classmethod
    def from_masks(cls, masks: Sequence[sitk.Image], min_voxels: int = 5) -> "LesionShapes":
        """Every connected lesion (26-connectivity) of the given binary mask images."""
        outlines, spacing = [], None
        for mask in masks:
            isotropic_1mm = np.allclose(mask.GetSpacing(), 1.0, atol=1e-3)
            canonical = to_canonical(mask, spacing=None if isotropic_1mm else [1.0] * 3,
                                     is_label=True)
            spacing = canonical.GetSpacing()[0]
            array = sitk.GetArrayFromImage(canonical) > 0
            components, _ = ndimage.label(array, structure=np.ones((3, 3, 3)))
            for label, box in enumerate(ndimage.find_objects(components), start=1):
                outline = components[box] == label
                if outline.sum() >= min_voxels:
                    outlines.append(outline)
        return cls(outlines, spacing or 1.0)

    @classmethod
    def from_folder(cls, folder: str | Path, min_voxels: int = 5) -> "LesionShapes":
        return _lesion_shapes_from_folder(str(Path(folder).resolve()), min_voxels)

    def __len__(self) -> int:
        return len(self.outlines)

    def sample(self, rng: np.random.Generator, spacing: float, scale: float,
               min_voxels: int = 4) -> np.ndarray:
        """One outline, randomly flipped, rescaled by ``scale`` and resampled to ``spacing``.

        Only outlines that still cover ``min_voxels`` at that spacing are drawn (most MS lesions
        vanish at 2 mm otherwise), unless none does.
        """
        large = np.flatnonzero(self.volumes_mm3 * scale ** 3 >= min_voxels * spacing ** 3)
        choices = large if large.size else np.arange(len(self.outlines))
        outline = self.outlines[int(choices[rng.integers(len(choices))])]
        for axis in range(3):
            if rng.random() < 0.5:
                outline = np.flip(outline, axis)
        zoom = self.spacing * scale / spacing
        resampled = ndimage.zoom(np.pad(outline, 1).astype(np.float32), zoom, order=1) >= 0.5
        if not resampled.any():  # smaller than a voxel: keep its centre voxel
            resampled = np.zeros((1, 1, 1), bool)
            resampled[0, 0, 0] = True
        return resampled


@functools.lru_cache(maxsize=4)
def _lesion_shapes_from_folder(folder: str, min_voxels: int) -> LesionShapes:
    paths = sorted(p for p in Path(folder).glob("*.nii*") if p.is_file())
    if not paths:
        raise InputError(f"no lesion masks (*.nii, *.nii.gz) in {folder} — pass a folder of "
                         "binary lesion masks")
    return LesionShapes.from_masks([sitk.ReadImage(str(p)) for p in paths], min_voxels)


# --------------------------------------------------------------------------------------------
# Shapes: boolean arrays in a local box, centred on the box centre
# --------------------------------------------------------------------------------------------

def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_radius(rng: np.random.Generator, diameter_mm: float, spacing: float,
                      margin_voxels: int = 1):
    """Normalised radius (1 on the surface) of a random ellipsoid on a local grid."""
    semi_axes = diameter_mm / 2.0 * rng.uniform(0.55, 1.0, 3)
    semi_axes[rng.integers(3)] = diameter_mm / 2.0
    half = int(np.ceil(semi_axes.max() / spacing)) + margin_voxels
    axis = np.arange(-half, half + 1) * spacing
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    local = points @ _random_rotation(rng)
    return np.sqrt(((local / semi_axes) ** 2).sum(axis=-1))


def _ellipsoid(rng, diameter_mm: float, spacing: float) -> np.ndarray:
    shape = _ellipsoid_radius(rng, diameter_mm, spacing) <= 1.0
    if not shape.any():
        shape[tuple(s // 2 for s in shape.shape)] = True
    return shape


def _blob(rng, diameter_mm: float, spacing: float) -> np.ndarray:
    """A noise-distorted ellipsoid: the level set of radius plus smooth noise, one piece."""
    radius = _ellipsoid_radius(rng, diameter_mm, spacing, margin_voxels=3)
    cell = max(diameter_mm / spacing / 3.0, 1.5)
    noise = ndimage.gaussian_filter(rng.standard_normal(radius.shape), cell / 2.0)
    noise /= max(noise.std(), 1e-6)
    shape = radius + rng.uniform(0.15, 0.4) * noise <= 1.0
    centre = tuple(s // 2 for s in shape.shape)
    shape[centre] = True
    components, _ = ndimage.label(shape)
    return components == components[centre]


def _periventricular(rng, labels: np.ndarray, spacing: float, centre):
    """Confluent band of white matter along the ventricles near ``centre``: (slices, mask)."""
    reach_mm = rng.uniform(8.0, 25.0)
    half = int(np.ceil(reach_mm / spacing)) + 2
    box = tuple(slice(max(c - half, 0), min(c + half + 1, n)) for c, n in zip(centre, labels.shape))
    local = labels[box]
    distance = ndimage.distance_transform_edt(local != Tissue.VENTRICLE, sampling=spacing)
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
    near_centre = np.sqrt((((grid - np.array(centre)) * spacing) ** 2).sum(-1)) <= reach_mm
    noise = ndimage.gaussian_filter(rng.standard_normal(local.shape), 2.0 / spacing + 0.5)
    noise /= max(noise.std(), 1e-6)
    thickness = rng.uniform(2.0, 8.0) * (1.0 + 0.4 * noise)
    return box, near_centre & (distance <= thickness) & np.isin(local, _WHITE_MATTER)


def _paste(volume_shape, box_shape, centre):
    """Slices placing a box centred at ``centre`` into a volume, clipped at the borders."""
    volume_slices, box_slices = [], []
    for size, n, c in zip(volume_shape, box_shape, centre):
        start = c - n // 2
        lo, hi = max(start, 0), min(start + n, size)
        volume_slices.append(slice(lo, max(hi, lo)))
        box_slices.append(slice(lo - start, lo - start + max(hi - lo, 0)))
    return tuple(volume_slices), tuple(box_slices)


# --------------------------------------------------------------------------------------------
# Appearances
# --------------------------------------------------------------------------------------------

class _ImageStats:
    """Brain median and noise sd per contrast, computed once and only when needed."""

    def __init__(self, images: dict[str, np.ndarray], brain: np.ndarray):
        self.images, self.brain = images, brain

    @functools.cached_property
    def median(self) -> dict[str, float]:
        return {c: float(np.median(a[self.brain])) for c, a in self.images.items()}

    @functools.cached_property
    def noise_sd(self) -> dict[str, float]:
        """Robust white-noise sd: median absolute high-pass residual (of a white-noise image,
        ``x - G_1 * x`` keeps 0.895 of the variance)."""
        result = {}
        for contrast, image in self.images.items():
            residual = (image - ndimage.gaussian_filter(image, 1.0))[self.brain]
            mad = np.median(np.abs(residual - np.median(residual)))
            result[contrast] = float(1.4826 * mad / np.sqrt(0.895))
        return result


def _polarity(contrast: str, rng: np.random.Generator) -> float:
    if contrast == RANDOM_CONTRAST or contrast not in _LESION_POLARITY:
        return float(rng.choice([-1.0, 1.0]))
    return _LESION_POLARITY[contrast]


def _noisy_fill(value: float, sd: float, shape, rng: np.random.Generator) -> np.ndarray:
    return np.float32(value) + np.float32(sd) * rng.standard_normal(shape, dtype=np.float32)


def _ms_lesion_ratio(contrast: str, severity: float, rng: np.random.Generator) -> np.float32:
    """Lesion-to-white-matter ratio of an MS lesion of ``severity`` (0-1) on ``contrast``; a
    contrast without published ratios (random training contrasts) gets either polarity."""
    low, high = _MS_LESION_RATIO.get(contrast, (1.15, 2.0))
    level = float(np.clip(severity + rng.normal(0.0, _MS_SEVERITY_JITTER), 0.0, 1.0))
    ratio = low + (high - low) * level
    if contrast not in _MS_LESION_RATIO and rng.uniform() < 0.5:
        ratio = 1.0 / ratio
    return np.float32(ratio)


def _appearance(appearance: str, images: dict[str, np.ndarray], box, shape: np.ndarray,
                stats: _ImageStats, spacing: float, rng: np.random.Generator,
                config: AnomalyConfig) -> dict[str, np.ndarray]:
    """Target intensities inside ``box`` (a tuple of slices) per contrast."""
    local = {c: a[box] for c, a in images.items()}
    if appearance in ("brighter", "darker", "subtle", "lesion"):
        bounds = config.subtle_contrast if appearance == "subtle" else config.contrast
        strength = rng.uniform(*bounds)
        if appearance == "lesion":
            directions = {c: _polarity(c, rng) for c in local}
        else:
            sign = {"brighter": 1.0, "darker": -1.0}.get(appearance) or float(
                rng.choice([-1.0, 1.0]))
            directions = dict.fromkeys(local, sign)
        return {c: a * np.float32(max(1.0 + directions[c] * strength, 0.05))
                for c, a in local.items()}
    if appearance == "ms":
        severity = rng.uniform()
        return {c: a * _ms_lesion_ratio(c, severity, rng) for c, a in local.items()}
    if appearance == "texture":
        targets = {}
        cell = rng.uniform(0.7, 2.0)
        for contrast, image in local.items():
            noise = ndimage.gaussian_filter(rng.standard_normal(image.shape, dtype=np.float32),
                                            cell)
            noise /= max(float(noise.std()), 1e-6)
            gain = np.float32(1.0 + rng.uniform(-0.1, 0.1))
            targets[contrast] = image * gain * (1.0 + np.float32(rng.uniform(0.1, 0.4)) * noise)
        return targets
    if appearance == "fpi":
        source = _patch_source(box, stats.brain, rng)
        alpha = np.float32(rng.uniform(0.5, 1.0))
        return {c: local[c] + alpha * (images[c][source] - local[c]) for c in images}
    if appearance == "constant":
        return {c: _noisy_fill(rng.uniform(0.1, 2.0) * stats.median[c], stats.noise_sd[c],
                               a.shape, rng) for c, a in local.items()}
    if appearance == "tumour":
        return _tumour(local, shape, stats, spacing, rng)
    raise InputError(f"unknown anomaly appearance {appearance!r} — choose from "
                     f"{', '.join(APPEARANCES)}")


def _patch_source(box, brain: np.ndarray, rng: np.random.Generator):
    """Slices of a same-size box elsewhere in the brain, disjoint from ``box`` (the FPI patch)."""
    size = np.array([s.stop - s.start for s in box])
    start = np.array([s.start for s in box])
    centres = np.argwhere(brain)
    for _ in range(50):
        lo = np.clip(centres[rng.integers(len(centres))] - size // 2, 0, np.array(brain.shape) - size)
        if np.any(np.abs(lo - start) >= size):
            break
    return tuple(slice(int(a), int(a + n)) for a, n in zip(lo, size))


def _tumour(local, shape, stats: _ImageStats, spacing, rng) -> dict[str, np.ndarray]:
    """Oedema in the outer band, an enhancing rim inside it, necrosis in the middle."""
    depth = ndimage.distance_transform_edt(shape, sampling=spacing)
    oedema_mm = rng.uniform(0.25, 0.6) * depth.max()
    rim_mm = rng.uniform(1.0, 4.0)
    rim = (depth > oedema_mm) & (depth <= oedema_mm + rim_mm)
    core = depth > oedema_mm + rim_mm
    oedema_strength = rng.uniform(0.3, 0.9)
    targets = {}
    for contrast, image in local.items():
        target = image * np.float32(max(1.0 + _polarity(contrast, rng) * oedema_strength, 0.1))
        for compartment, table in ((rim, _TUMOUR_RIM), (core, _TUMOUR_CORE)):
            if compartment.any():
                value = rng.uniform(*table.get(contrast, (0.2, 2.5))) * stats.median[contrast]
                target[compartment] = _noisy_fill(value, stats.noise_sd[contrast],
                                                  int(compartment.sum()), rng)
        targets[contrast] = target
    return targets


# --------------------------------------------------------------------------------------------
# Insertion
# --------------------------------------------------------------------------------------------

def _draw_diameter(rng: np.random.Generator, bounds) -> float:
    lo, hi = bounds
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


class _Placement:
    """Where anomalies may be centred: inside ``allowed``; in white matter, deep enough for
    their size, when the tissue labels are known."""

    def __init__(self, allowed: np.ndarray, labels: np.ndarray | None, spacing: float):
        self.allowed, self.labels, self.spacing = allowed, labels, spacing
        self.step = 2 if spacing < 1.5 else 1  # depth on a coarser grid: approximate is enough

    @functools.cached_property
    def white_matter_depth_mm(self) -> np.ndarray | None:
        if self.labels is None:
            return None
        coarse = (slice(None, None, self.step),) * 3
        white = self.allowed[coarse] & np.isin(self.labels[coarse], _WHITE_MATTER)
        if not white.any():
            return None
        return ndimage.distance_transform_edt(white, sampling=self.spacing * self.step)

    @functools.cached_property
    def ventricle_wall(self) -> np.ndarray:
        """White matter within about 3 mm of the ventricles (seeds of periventricular bands)."""
        ventricles = self.labels == Tissue.VENTRICLE
        near = ndimage.binary_dilation(ventricles, iterations=max(1, int(round(3.0 / self.spacing))))
        return np.argwhere(near & self.allowed & np.isin(self.labels, _WHITE_MATTER))

    def centre(self, rng: np.random.Generator, white_matter: bool,
               radius_mm: float) -> tuple[int, ...]:
        depth = self.white_matter_depth_mm if white_matter else None
        if depth is not None:
            wanted = min(0.5 * radius_mm, 0.7 * float(depth.max()))
            candidates = np.argwhere(depth >= max(wanted, 1e-3)) * self.step
        else:
            candidates = np.argwhere(self.allowed)
        return tuple(int(c) for c in candidates[rng.integers(len(candidates))])


def _draw_shape(shape_kind: str, volume_shape, placement: _Placement, rng, config,
                lesion_shapes):
    """One anomaly shape: (volume slices, boolean mask over those slices, centre voxel)."""
    labels, spacing = placement.labels, placement.spacing
    if shape_kind == "periventricular" and labels is not None and len(placement.ventricle_wall):
        wall = placement.ventricle_wall
        centre = tuple(int(c) for c in wall[rng.integers(len(wall))])
        box, band = _periventricular(rng, labels, spacing, centre)
        return box, band, centre
    white_matter = (shape_kind in ("ms_lesion", "periventricular")
                    or rng.random() < config.white_matter_probability)
    if shape_kind == "ms_lesion" and lesion_shapes is not None:
        box = lesion_shapes.sample(rng, spacing, rng.uniform(*config.lesion_scale))
    elif shape_kind == "ellipsoid":
        box = _ellipsoid(rng, _draw_diameter(rng, config.diameter_mm), spacing)
    elif shape_kind == "blob":
        box = _blob(rng, _draw_diameter(rng, config.diameter_mm), spacing)
    else:  # lesion-like stand-in when no outlines or labels are available
        box = _blob(rng, _draw_diameter(rng, (config.diameter_mm[0], 12.0)), spacing)
    centre = placement.centre(rng, white_matter, radius_mm=min(box.shape) * spacing / 2.0)
    volume_slices, box_slices = _paste(volume_shape, box.shape, centre)
    return volume_slices, box[box_slices], centre


def _with_margin(box, local: np.ndarray, margin: int, volume_shape):
    """Grow a box by ``margin`` voxels (clipped to the volume), zero-padding its local array."""
    grown = tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n))
                  for b, n in zip(box, volume_shape))
    pad = [(b.start - g.start, g.stop - b.stop) for b, g in zip(box, grown)]
    return grown, np.pad(local, pad)


def insert_anomalies(images: dict[str, np.ndarray], brain_mask: np.ndarray, spacing: float,
                     seed: int | np.random.Generator | None = None,
                     labels: np.ndarray | None = None, config: AnomalyConfig | None = None,
                     lesion_shapes: LesionShapes | None = None) -> AnomalyResult:
    """Insert random anomalies into co-registered ``images`` (contrast -> array ``[S, P, L]``).

    ``brain_mask`` bounds the anomalies; ``labels`` (:class:`Tissue`), when given, put lesion-like
    shapes in white matter and keep anomalies out of CSF. The inputs are not modified.
    """
    config = config or AnomalyConfig()
    rng = np.random.default_rng(seed)
    brain = np.asarray(brain_mask) > 0
    if not brain.any():
        raise InputError("empty brain mask — anomalies need a brain to go into")
    allowed = brain & ~np.isin(labels, _FLUID) if labels is not None else brain
    if not allowed.any():
        allowed = brain
    images = {c: np.array(a, dtype=np.float32, copy=True) for c, a in images.items()}
    stats = _ImageStats(images, brain)
    placement = _Placement(allowed, labels, spacing)
    union = np.zeros(brain.shape, bool)
    inserted = []
    for _ in range(int(rng.integers(config.count[0], config.count[1] + 1))):
        shape_kind = str(rng.choice(config.shapes))
        appearance = str(rng.choice(config.appearances))
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            box, local_shape, centre = _draw_shape(shape_kind, brain.shape, placement, rng,
                                                   config, lesion_shapes)
            local_shape = local_shape & allowed[box]
            if not local_shape.any():
                continue
            blur = rng.uniform(*config.edge_blur_voxels)
            box, local_shape = _with_margin(box, local_shape, int(np.ceil(3 * blur)) + 1,
                                            brain.shape)
            weight = (ndimage.gaussian_filter(local_shape.astype(np.float32), blur)
                      if blur > 0.05 else local_shape.astype(np.float32)) * brain[box]
            changed = weight >= 0.5
            if changed.any():
                break
        else:
            continue  # nothing fits (tiny or empty brain): fewer anomalies than drawn
        # thin fragments that never reach half weight would change the image outside the mask
        weight *= ndimage.binary_dilation(changed, iterations=int(np.ceil(2 * blur)) + 1)
        targets = _appearance(appearance, images, box, local_shape, stats, spacing, rng, config)
        for contrast, image in images.items():
            local = image[box]
            local += weight * (targets[contrast] - local)
            np.clip(local, 0.0, None, out=local)
        union[box] |= changed
        inserted.append(Anomaly(shape_kind, appearance, centre,
                                round(float(changed.sum()) * spacing ** 3 / 1000.0, 4)))
    return AnomalyResult(images=images, mask=union.astype(np.uint8), anomalies=inserted)


def add_anomalies(brain: SyntheticBrain, seed: int | np.random.Generator | None = None,
                  config: AnomalyConfig | None = None,
                  lesion_shapes: LesionShapes | None = None) -> AnomalyResult:
    """:func:`insert_anomalies` on a synthetic brain, using its tissue labels for placement."""
    return insert_anomalies(brain.images, brain.brain_mask, brain.spacing, seed,
                            labels=brain.labels, config=config, lesion_shapes=lesion_shapes)
