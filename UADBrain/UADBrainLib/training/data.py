"""Healthy training volumes for ``uadbrain train``: synthetic or real, preprocessed as at inference.

A *source* makes :class:`TrainingVolume` objects (normalised canonical arrays at the model spacing
with their brain mask) and healthy calibration cases (SimpleITK images the pipeline runs on).

* :class:`SyntheticSource` draws brains from anatomical label maps (``synthesis/brains.py``); its label
  maps are split into training, validation and calibration maps so that the model is validated and
  calibrated on anatomy it never saw.
* :class:`FolderSource` reads a folder of real healthy scans — or a BIDS dataset — and preprocesses
  them exactly as ``pipeline.detect`` does (brain mask, canonical grid, bias correction,
  normalisation); for a model conditioned on age, each subject's age comes from the folder's
  participants table (BIDS ``participants.tsv``, or a ``participants.csv``).

:class:`VolumePool` keeps a few volumes in memory and replaces the oldest with fresh ones made by
a background process, because making a volume costs more than a training step.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..bundle import CONTRASTS
from ..cohorts.bids import bare_label, known
from ..errors import InputError
from ..preprocessing import robust_statistics

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SPLITS = ("train", "validation", "calibration")
PARTICIPANT_TABLES = {"participants.tsv": "\t", "participants.csv": ","}  # BIDS' table, or a site's CSV
SUBJECT_COLUMNS = ("participant_id", "subject", "id")
MIN_AGED_SUBJECTS = 3  # subjects of the training share an age line is fitted on (of at least two ages)
AGE_STREAM = 0xA6E  # seeds the age draw apart from the brain's other draws


@dataclasses.dataclass
class TrainingVolume:
    """One healthy volume on the model grid: canonical ``[S, P, L]`` arrays at the model spacing.

    ``images`` keep their raw intensities, so that anomalies can be inserted into them the way
    lesions exist in real scans, before normalisation; ``normalisers`` hold each contrast's
    ``(offset, scale)`` from the whole clean volume, ``(raw − offset) / scale`` being exactly what
    ``preprocessing.normalise`` computes for the volume (see :func:`linear_normaliser`).
    """

    images: dict[str, np.ndarray]  # contrast -> raw float32
    mask: np.ndarray  # bool brain mask
    spacing: float
    normalisers: dict[str, tuple[float, float]]
    labels: np.ndarray | None = None  # synthesis tissue labels, when known
    age: float | None = None  # years, for age-conditioned models

    def normalised(self, contrast: str) -> np.ndarray:
        offset, scale = self.normalisers[contrast]
        return ((self.images[contrast] - offset) / scale).astype(np.float32)

    def save(self, path: Path) -> None:
        arrays = {f"image_{c}": a for c, a in self.images.items()}
        arrays.update({f"normaliser_{c}": np.array(v) for c, v in self.normalisers.items()})
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.age is not None:
            arrays["age"] = self.age
        np.savez(path, mask=self.mask, spacing=self.spacing, **arrays)

    @classmethod
    def load(cls, path: Path) -> "TrainingVolume":
        with np.load(path) as data:
            images = {key[6:]: data[key] for key in data.files if key.startswith("image_")}
            normalisers = {key[11:]: tuple(float(v) for v in data[key])
                           for key in data.files if key.startswith("normaliser_")}
            labels = data["labels"] if "labels" in data.files else None
            age = float(data["age"]) if "age" in data.files else None
            return cls(images=images, mask=data["mask"], spacing=float(data["spacing"]),
                       normalisers=normalisers, labels=labels, age=age)


def linear_normaliser(array: np.ndarray, mask: np.ndarray, method: str) -> tuple[float, float]:
    """``(offset, scale)`` with ``(array − offset) / scale == preprocessing.normalise(array, mask, method)``.

    Training cuts slabs from volumes and normalises them with the whole volume's statistics, so
    only the linear normalisations can be trained with.
    """
    if method == "robust_z":
        return robust_statistics(array[mask])
    if method == "none":
        return 0.0, 1.0
    raise InputError(f"training supports the normalisations robust_z and none, not '{method}' — "
                     "choose one of those.")


def training_volume(images: dict[str, np.ndarray], mask: np.ndarray, spacing: float,
                    normalisation: str, labels: np.ndarray | None = None, age: float | None = None) -> TrainingVolume:
    mask = np.asarray(mask).astype(bool)
    images = {c: np.asarray(a, np.float32) for c, a in images.items()}
    return TrainingVolume(images=images, mask=mask, spacing=float(spacing), labels=labels, age=age,
                          normalisers={c: linear_normaliser(a, mask, normalisation) for c, a in images.items()})


@dataclasses.dataclass
class HealthyCase:
    """A healthy scan for calibration: images as the pipeline takes them, and its brain mask."""

    images: dict[str, object]  # contrast -> SimpleITK image or file path
    mask: object | None  # SimpleITK image, path, or None (the pipeline finds the brain)
    name: str
    age: float | None = None  # years, for age-conditioned models


def split_indices(count: int, split: str) -> list[int]:
    """Which of ``count`` items (label maps, subjects) belong to a split.

    With five or more, the last ~10 % (at least one) calibrate, the ~10 % before them validate,
    the rest train; with fewer, every split uses all of them (then only the random draws differ).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'")
    if count < 5:
        return list(range(count))
    held = max(1, round(count * 0.1))
    bounds = {"train": (0, count - 2 * held), "validation": (count - 2 * held, count - held),
              "calibration": (count - held, count)}
    return list(range(*bounds[split]))


class SyntheticSource:
    """Synthetic healthy brains of the given contrasts from one split of a set of label maps."""

    def __init__(self, label_maps: list[str], contrasts: list[str], spacing: float,
                 normalisation: str, split: str = "train", ages: tuple[float, float] | None = None):
        self.label_maps = [str(p) for p in label_maps]
        if not self.label_maps:
            raise InputError("no label maps to synthesise training brains from — give "
                             "--label-maps FOLDER (NIfTI label maps, SynthSeg/FreeSurfer labels).")
        self.contrasts = list(contrasts)
        self.spacing = float(spacing)
        self.normalisation = normalisation
        self.split = split
        self.ages = None if ages is None else tuple(float(a) for a in ages)  # years: each brain one age in it
        self.indices = split_indices(len(self.label_maps), split)
        self._synthesizer = None

    @property
    def key(self) -> str:
        """Names the kind of volume this source makes (for caching volumes on disk), including a
        digest of the generator's code and the label maps, so that a changed generator is not
        served stale volumes."""
        from ..synthesis import brains

        digest = hashlib.sha1(Path(brains.__file__).read_bytes())
        for path in self.label_maps:
            digest.update(path.encode())
        ages = f"-age{self.ages[0]:g}-{self.ages[1]:g}" if self.ages else ""
        return (f"synth-{self.split}-{'-'.join(self.contrasts)}-{self.spacing:g}mm-{self.normalisation}{ages}-"
                f"{digest.hexdigest()[:10]}")

    def describe(self) -> str:
        names = [Path(self.label_maps[i]).name for i in self.indices]
        ages = f", ages {self.ages[0]:g}-{self.ages[1]:g} years" if self.ages else ""
        return (f"synthetic healthy brains ({', '.join(self.contrasts)}{ages}) from {len(names)} label "
                f"map(s): {', '.join(names)}")

    @property
    def synthesizer(self):
        if self._synthesizer is None:
            from ..synthesis.brains import Synthesizer

            self._synthesizer = Synthesizer([self.label_maps[i] for i in self.indices])
        return self._synthesizer

    def __getstate__(self):  # the synthesizer's caches stay in the process that built them
        return {**self.__dict__, "_synthesizer": None}

    def age(self, seed: int) -> float | None:
        """The age of brain ``seed``: uniform in the source's ages (its own draw, so that the
        brain's other draws are those of an unconditioned source)."""
        if self.ages is None:
            return None
        return round(float(np.random.default_rng([seed, AGE_STREAM]).uniform(*self.ages)), 1)

    def sample(self, seed: int, spacing: float | None = None):
        return self.synthesizer.sample(seed=seed, contrasts=self.contrasts,
                                       spacing=self.spacing if spacing is None else spacing,
                                       skull_strip=True, age=self.age(seed))

    def volume(self, seed: int) -> TrainingVolume:
        brain = self.sample(seed)
        return training_volume(brain.images, brain.brain_mask, brain.spacing, self.normalisation,
                               labels=brain.labels, age=brain.parameters["age"])

    def healthy_case(self, seed: int, spacing: float = 1.0) -> HealthyCase:
        brain = self.sample(seed, spacing)
        return HealthyCase(images={c: brain.image(c) for c in self.contrasts}, mask=brain.mask_image(),
                           name=f"synthetic-{seed}", age=brain.parameters["age"])


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def find_subjects(folder, contrasts: list[str], with_ages: bool = False) -> list[dict]:
    """Healthy subjects in a folder: ``[{"name", "images": {contrast: path}, "mask": path|None,
    "age": str|None}]`` (the age as the participants table writes it, with ``with_ages``).

    A BIDS dataset (its ``dataset_description.json``): each subject and session with all the
    contrasts, read as ``detect --bids`` reads it (ages from ``participants.tsv`` and the sessions
    tables). Otherwise one sub-folder per subject holding ``<contrast>.nii.gz`` (and optionally
    ``brainmask.nii.gz``), or image files directly in the folder named ``<subject>_<contrast>``
    (any case, e.g. ``IXI012-HH-1211_T1.nii.gz``); with a single contrast, any image file is a
    subject. Ages come from ``participants.tsv`` or ``participants.csv`` in the folder (a
    ``participant_id`` column, ``sub-`` optional, and ``age``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"training data folder '{folder}' does not exist — give a folder of healthy "
                         "scans, or 'synthetic'.")
    if (folder / "dataset_description.json").is_file():
        return bids_subjects(folder, contrasts)
    subjects = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = {_stem(p).lower(): p for p in _image_files(sub)}
        if all(c in files for c in contrasts):
            subjects.append({"name": sub.name, "images": {c: files[c] for c in contrasts},
                             "mask": files.get("brainmask") or files.get("mask")})
    grouped: dict[str, dict] = {}
    for path in _image_files(folder):
        match = re.match(r"(.+)[_-]([A-Za-z0-9]+)$", _stem(path))
        contrast = match.group(2).lower() if match else None
        if contrast in CONTRASTS:
            grouped.setdefault(match.group(1), {})[contrast] = path
        elif len(contrasts) == 1:
            grouped.setdefault(_stem(path), {})[contrasts[0]] = path
    for name, files in sorted(grouped.items()):
        if all(c in files for c in contrasts):
            subjects.append({"name": name, "images": {c: files[c] for c in contrasts}, "mask": None})
    if not subjects:
        raise InputError(f"no subject in '{folder}' has all of {', '.join(contrasts)} — name files "
                         "<subject>_<contrast>.nii.gz, or use one sub-folder per subject with "
                         "<contrast>.nii.gz inside.")
    ages = participant_ages(folder) if with_ages else {}
    return [{**subject, "age": ages.get(bare_label(subject["name"], "sub"))} for subject in subjects]


@lru_cache(maxsize=2)
def _bids_scans(root: Path) -> tuple:
    """The dataset's scans, indexed once per process (each split's source asks for them)."""
    from ..cohorts.bids import scans_from_bids

    return tuple(scans_from_bids(root))


def bids_subjects(root: Path, contrasts: list[str]) -> list[dict]:
    """The sessions of a BIDS dataset that hold every one of ``contrasts``, as training subjects."""
    subjects = [{"name": scan.id, "images": {c: scan.images[c] for c in contrasts}, "mask": scan.mask,
                 "age": scan.age, "person": scan.subject}
                for scan in _bids_scans(root.absolute()) if not unusable_session(scan, contrasts)]
    if not subjects:
        raise InputError(f"no subject or session of the BIDS dataset '{root}' has all of {', '.join(contrasts)}.")
    return subjects


def unusable_session(scan, contrasts: list[str]) -> str | None:
    """Why a BIDS session cannot be trained on (its problem, or a contrast it lacks), else None."""
    missing = [c for c in contrasts if c not in scan.images]
    return scan.problem or (f"no {', '.join(missing)}" if missing else None)


def subjects_of_split(subjects: list[dict], split: str) -> list[dict]:
    """One split of the subjects, split by person: the sessions of one person (a BIDS subject's)
    stay in one split, so a person is never fitted on and then calibrated or validated on."""
    people = list(dict.fromkeys(subject.get("person", subject["name"]) for subject in subjects))
    chosen = {people[i] for i in split_indices(len(people), split)}
    return [subject for subject in subjects if subject.get("person", subject["name"]) in chosen]


def participant_ages(folder: Path) -> dict[str, str]:
    """``{subject label without 'sub-': age as written}`` from the folder's participants table
    (empty without one)."""
    for name, delimiter in PARTICIPANT_TABLES.items():
        path = folder / name
        if path.is_file():
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle, delimiter=delimiter)
                # cells beyond the header's columns (a trailing delimiter) have no name: dropped
                rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                        for row in reader]
                columns = [name.strip().lower() for name in reader.fieldnames or []]
            column = next((c for c in SUBJECT_COLUMNS if c in columns), None)
            if column is None or "age" not in columns:
                raise InputError(f"'{path}' needs a participant_id and an age column (one row per subject) "
                                 "— add them, or remove the file.")
            return {bare_label(row[column], "sub"): known(row["age"]) for row in rows if row[column]}
    return {}


def subjects_of_ages(subjects: list[dict], ages: tuple[float, float], folder: Path) -> tuple[list[dict], list[str]]:
    """The subjects whose age lies in ``ages`` (their age a number), and why each other was left out."""
    from ..inference.options import check_age

    kept, left_out = [], []
    for subject in subjects:
        if subject["age"] is None:
            left_out.append(f"{subject['name']} (no age in the participants table)")
            continue
        try:
            age = check_age(subject["age"])
        except InputError:
            raise InputError(f"the age of subject {subject['name']} in '{folder}' reads '{subject['age']}' — "
                             "write years as a number (or n/a).") from None
        if ages[0] <= age <= ages[1]:
            kept.append({**subject, "age": age})
        else:
            left_out.append(f"{subject['name']} ({age:g} years, outside --age-range)")
    fitted = subjects_of_split(kept, "train")  # the share the age line is fitted on
    if len(fitted) < MIN_AGED_SUBJECTS or len({s["age"] for s in fitted}) < 2:
        raise InputError(f"{len(kept)} subject(s) of '{folder}' have an age within {ages[0]:g}-{ages[1]:g} years, "
                         f"{len(fitted)} of them to fit on ({len({s['age'] for s in fitted})} different age(s)) — a "
                         f"model conditioned on age needs at least {MIN_AGED_SUBJECTS} of different ages there "
                         "(their ages in participants.tsv or participants.csv: participant_id, age).")
    return kept, left_out


def preprocess_case(images: dict, preprocessing: dict, mask=None, device: str = "cpu",
                    age: float | None = None) -> TrainingVolume:
    """Real scans of one subject → the model-grid arrays ``pipeline.detect`` would normalise
    (``inference.preparation``, the same code detect runs)."""
    from ..inference.preparation import load_scan, prepare_scan

    scan = prepare_scan(*load_scan(images, mask), preprocessing.get("spacing_mm"), "auto",
                        preprocessing.get("bias_correction", False), device)
    arrays = {c: sitk.GetArrayFromImage(image) for c, image in scan.images.items()}
    return training_volume(arrays, scan.mask, scan.grid.GetSpacing()[0], preprocessing.get("normalisation", "robust_z"),
                           age=age)


class FolderSource:
    """Real healthy scans from a folder, one split of its subjects, preprocessed as at inference.
    With ``ages`` (years, for a model conditioned on age) only the subjects whose age the
    participants table gives in that range. ``left_out``: the subjects (or BIDS sessions) not
    used, each with its reason."""

    def __init__(self, folder, contrasts: list[str], preprocessing: dict, split: str = "train",
                 device: str = "cpu", ages: tuple[float, float] | None = None):
        self.folder = Path(folder)
        self.contrasts = list(contrasts)
        self.preprocessing = dict(preprocessing)
        self.split = split
        self.device = device
        self.ages = None if ages is None else tuple(float(a) for a in ages)
        subjects = find_subjects(self.folder, self.contrasts, with_ages=self.ages is not None)
        self.left_out: list[str] = []
        if (self.folder / "dataset_description.json").is_file():
            self.left_out = [f"{scan.id} ({reason})" for scan in _bids_scans(self.folder.absolute())
                             if (reason := unusable_session(scan, self.contrasts))]
        if self.ages is None:
            subjects = [{**subject, "age": None} for subject in subjects]
        else:
            subjects, without_age = subjects_of_ages(subjects, self.ages, self.folder)
            self.left_out += without_age
        self.subjects = subjects_of_split(subjects, split)

    @property
    def key(self) -> str:
        spacing = self.preprocessing.get("spacing_mm")
        ages = f"-age{self.ages[0]:g}-{self.ages[1]:g}" if self.ages else ""
        return f"folder-{self.folder.name}-{self.split}-{'-'.join(self.contrasts)}-{spacing}mm{ages}"

    def describe(self) -> str:
        ages = ""
        if self.ages:
            years = [s["age"] for s in self.subjects]
            ages = f", aged {min(years):g}-{max(years):g} years"
        return f"{len(self.subjects)} real healthy subject(s) from {self.folder}{ages}"

    def volume(self, seed: int) -> TrainingVolume:
        subject = self.subjects[seed % len(self.subjects)]
        return preprocess_case(subject["images"], self.preprocessing, subject["mask"], self.device, subject["age"])

    def healthy_case(self, seed: int, spacing: float = 1.0) -> HealthyCase:
        subject = self.subjects[seed % len(self.subjects)]
        return HealthyCase(images=dict(subject["images"]), mask=subject["mask"], name=subject["name"],
                           age=subject["age"])


_worker_source = None


def _init_worker(source, threads: int) -> None:
    global _worker_source
    import torch

    torch.set_num_threads(threads)
    _worker_source = source


def _make_in_worker(seed: int) -> TrainingVolume:
    return _worker_source.volume(seed)


class VolumePool:
    """A rotating set of training volumes, refreshed by a background process.

    ``seeds`` is the stream of volume seeds (deterministic for a training seed). With ``cache_dir``
    volumes are kept on disk by source and seed, so repeated runs reuse them.
    """

    def __init__(self, source, size: int, first_seed: int, cache_dir: Path | None = None,
                 background: bool = True, worker_threads: int = 1):
        self.source = source
        self.size = size
        self.next_seed = first_seed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.volumes: list[TrainingVolume] = []
        self._executor = (ProcessPoolExecutor(1, initializer=_init_worker, initargs=(source, worker_threads))
                          if background else None)
        self._pending = []
        while len(self.volumes) < size:
            self.volumes.append(self._make(self._take_seed()))

    def _take_seed(self) -> int:
        seed = self.next_seed
        self.next_seed += 1
        return seed

    def _cache_path(self, seed: int) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.source.key / f"{seed}.npz"

    def _make(self, seed: int) -> TrainingVolume:
        path = self._cache_path(seed)
        if path is not None and path.is_file():
            return TrainingVolume.load(path)
        volume = self.source.volume(seed)
        self._store(seed, volume)
        return volume

    def _store(self, seed: int, volume: TrainingVolume) -> None:
        path = self._cache_path(seed)
        if path is not None and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp.npz")
            volume.save(temporary)
            temporary.replace(path)

    def refresh(self) -> int:
        """Swap finished background volumes in for the oldest ones; keep one job queued.

        Returns how many volumes were replaced.
        """
        replaced = 0
        for seed, future in [job for job in self._pending if job[1].done()]:
            self._pending.remove((seed, future))
            volume = future.result()
            self._store(seed, volume)
            self.volumes.pop(0)
            self.volumes.append(volume)
            replaced += 1
        if not self._pending:
            seed = self._take_seed()
            path = self._cache_path(seed)
            if path is not None and path.is_file():
                self.volumes.pop(0)
                self.volumes.append(TrainingVolume.load(path))
                replaced += 1
            elif self._executor is not None:
                self._pending.append((seed, self._executor.submit(_make_in_worker, seed)))
            else:
                self.volumes.pop(0)
                self.volumes.append(self._make(seed))
                replaced += 1
        return replaced

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class SlabBatch:
    """Slabs of ``2·context + 1`` axial slices cut from training volumes, ``[n, D, H, W]``."""

    images: np.ndarray  # raw intensities (0 outside the brain and the volume)
    masks: np.ndarray  # bool
    contrasts: list[str]  # the contrast of each slab
    normalisers: np.ndarray  # [n, 2]: offset and scale of each slab's volume and contrast
    spacing: float
    labels: np.ndarray | None = None  # tissue labels, when every volume has them

    def prepared(self, images: np.ndarray | None = None) -> np.ndarray:
        """Network intensities of ``images`` (default: this batch's): normalised, clipped, masked."""
        from ..inference.models.networks import prepare

        images = self.images if images is None else images
        offsets, scales = self.normalisers[:, 0, None, None, None], self.normalisers[:, 1, None, None, None]
        return prepare((images - offsets) / scales, self.masks)


def _window(centre: int, size: int, length: int) -> tuple[slice, tuple[int, int]]:
    """A ``size`` window around ``centre`` on an axis of ``length``: the slice and the padding."""
    lo = centre - size // 2
    hi = lo + size
    before, after = max(0, -lo), max(0, hi - length)
    return slice(lo + before, hi - after), (before, after)


def sample_slabs(volumes: list[TrainingVolume], count: int, patch: int, context: int,
                 rng: np.random.Generator, contrasts: list[str] | None = None,
                 min_brain_fraction: float = 0.2) -> SlabBatch:
    """``count`` random slabs: volume, contrast and slice drawn at random, in-plane window of
    ``patch`` pixels around the brain (jittered), randomly mirrored left-right.

    Slices whose brain area is below ``min_brain_fraction`` of the volume's largest are skipped.
    """
    from ..inference.models.networks import context_indices

    images, masks, labels, chosen, normalisers = [], [], [], [], []
    with_labels = all(v.labels is not None for v in volumes)
    for _ in range(count):
        volume = volumes[int(rng.integers(len(volumes)))]
        available = [c for c in (contrasts or list(volume.images)) if c in volume.images]
        contrast = available[int(rng.integers(len(available)))]
        area = volume.mask.sum(axis=(1, 2))
        candidates = np.flatnonzero(area >= min_brain_fraction * area.max())
        centre = int(candidates[rng.integers(candidates.size)])
        depth = context_indices(np.array([centre]), context, volume.mask.shape[0])[0]
        in_plane = volume.mask[centre]
        rows, columns = np.flatnonzero(in_plane.any(axis=1)), np.flatnonzero(in_plane.any(axis=0))
        jitter = rng.integers(-patch // 8, patch // 8 + 1, size=2)
        row_window, row_pad = _window((rows[0] + rows[-1]) // 2 + int(jitter[0]), patch, in_plane.shape[0])
        column_window, column_pad = _window((columns[0] + columns[-1]) // 2 + int(jitter[1]), patch,
                                            in_plane.shape[1])
        pad = [(0, 0), row_pad, column_pad]
        cut = lambda array: np.pad(array[depth][:, row_window, column_window], pad)  # noqa: E731
        mask = cut(volume.mask)
        flip = (slice(None), slice(None), slice(None, None, -1) if rng.random() < 0.5 else slice(None))
        masks.append(mask[flip])
        images.append(np.where(mask, cut(volume.images[contrast]), 0.0)[flip])
        if with_labels:
            labels.append(cut(volume.labels)[flip])
        chosen.append(contrast)
        normalisers.append(volume.normalisers[contrast])
    stack = lambda arrays: np.ascontiguousarray(np.stack(arrays))  # noqa: E731
    return SlabBatch(images=stack(images).astype(np.float32), masks=stack(masks), contrasts=chosen,
                     normalisers=np.array(normalisers, np.float32), spacing=volumes[0].spacing,
                     labels=stack(labels) if with_labels else None)
