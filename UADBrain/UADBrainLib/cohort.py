"""Finding scans on disk: the folder and CSV conventions of ``evaluate``, ``detect --batch``.

A *scan folder* holds one subject's co-registered volumes named by contrast,
``<contrast>.<ext>`` with contrast ``flair``, ``t1``, ``t2`` or ``t1c`` (``t1post``, ``t1ce``,
``t1gd`` are read as ``t1c``) and ext one of NIfTI/NRRD/MHA, or a DICOM series in a subfolder
named by its contrast (``flair/``); optionally a brain mask
``brainmask.<ext>`` (or ``mask.<ext>``) and, for evaluation, a ground-truth lesion mask
``seg.<ext>``, ``lesions.<ext>`` or ``gt.<ext>`` (anomaly = label > 0).

A *cohort* (``detect --batch``, ``evaluate --healthy``) is a folder of scan folders and/or plain
image files (one scan each, its contrast given, or read from a name token such as ``_T1``), or a
CSV file with a column per contrast plus optional ``mask`` and ``id`` columns.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from .bundle import CONTRASTS
from .errors import InputError
from .io import IMAGE_SUFFIXES, image_path_suffix

CONTRAST_ALIASES = {"flair": "flair", "t1": "t1", "t2": "t2", "t1c": "t1c",
                    "t1post": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1w": "t1", "t2w": "t2"}
CONTRAST_AGENT_WORDS = {"gd", "gad", "ce", "post", "contrast", "km"}  # beside "t1" in a name: a contrast-enhanced T1
TRUTH_NAMES = ("seg", "lesions", "gt")
MASK_NAMES = ("brainmask", "mask")
CSV_COLUMNS = (*CONTRASTS, "mask", "id")


@dataclass
class Scan:
    id: str
    images: dict[str, Path] = field(default_factory=dict)  # contrast → file
    mask: Path | None = None
    truth: Path | None = None
    problem: str | None = None  # why it cannot be run (reported, never silently dropped)
    age: str | None = None  # the CSV's or BIDS participants' age as written (years), checked when the scan runs
    sex: str | None = None  # BIDS participants' sex as written: reported, no model is conditioned on it
    subject: str | None = None  # BIDS entities: the scan's outputs are named by them (a derivatives dataset)
    session: str | None = None


def _named_files(folder: Path) -> dict[str, Path]:
    """Image files in ``folder`` keyed by their lower-case name without the image suffix, and
    subfolders named by a contrast (a DICOM series each)."""
    named = {}
    for path in sorted(folder.iterdir()):
        suffix = image_path_suffix(path)
        if suffix and path.is_file():
            named.setdefault(path.name[: -len(suffix)].lower(), path)
        elif path.is_dir() and path.name.lower() in CONTRAST_ALIASES:
            named.setdefault(path.name.lower(), path)
    return named


def read_scan_folder(folder) -> Scan:
    """The scan in a folder that follows the ``<contrast>.<ext>`` convention."""
    folder = Path(folder)
    named = _named_files(folder)
    scan = Scan(id=folder.name)
    for name, path in named.items():
        contrast = CONTRAST_ALIASES.get(name)
        if contrast and contrast not in scan.images:
            scan.images[contrast] = path
    scan.images = {c: scan.images[c] for c in CONTRASTS if c in scan.images}
    scan.mask = next((named[n] for n in MASK_NAMES if n in named), None)
    scan.truth = next((named[n] for n in TRUTH_NAMES if n in named), None)
    if not scan.images:
        scan.problem = (f"no image named by contrast ({', '.join(CONTRASTS)}, e.g. flair.nii.gz) "
                        "in this folder")
    return scan


def contrast_from_name(path) -> str | None:
    """The contrast a file name states in one of its tokens (``IXI012_T1.nii.gz`` → ``t1``)."""
    return split_contrast(Path(path).name[: -len(image_path_suffix(path)) or None])[0]


def split_contrast(name: str) -> tuple[str | None, str]:
    """The contrast a name states, and its other tokens, lower-case: what names the subject
    (``case2_T1`` → ``("t1", "case2")``, ``3: AX T2 FLAIR`` → ``("flair", "3 ax")``, ``T1 POST GAD``
    → ``("t1c", "")``); ``(None, name)`` when it states none or several."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    found = {CONTRAST_ALIASES[t] for t in tokens if t in CONTRAST_ALIASES}
    if found == {"t2", "flair"}:  # "AX T2 FLAIR": a FLAIR is T2-weighted
        found = {"flair"}
    named = set(CONTRAST_ALIASES)
    if found == {"t1"} and CONTRAST_AGENT_WORDS & set(tokens):  # "T1 GD", "T1_post_contrast"
        found, named = {"t1c"}, named | CONTRAST_AGENT_WORDS
    if len(found) != 1:
        return None, name
    return found.pop(), " ".join(t for t in tokens if t not in named)


def is_case_folder(folder: Path) -> bool:
    """A folder with a ground truth and at least one contrast image."""
    scan = read_scan_folder(folder)
    return scan.truth is not None and bool(scan.images)


def find_cases(root) -> dict[str, list[Scan]]:
    """Evaluation cases under ``root``, grouped into data sets.

    ``root`` may be one case folder, a data set (a folder of case folders, e.g. ``brats2015``),
    or a folder of data sets (e.g. ``eval`` holding ``brats2015`` and ``ms_lesjak2017``); folders
    that hold no case (like ``masks_only``) are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"cases: '{root}' is not a folder — give a folder of case folders.")
    if is_case_folder(root):
        return {root.parent.name or root.name: [read_scan_folder(root)]}
    datasets: dict[str, list[Scan]] = {}
    direct = [read_scan_folder(f) for f in sorted(root.iterdir()) if f.is_dir() and is_case_folder(f)]
    if direct:
        datasets[root.name] = direct
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not is_case_folder(folder):
            cases = [read_scan_folder(f) for f in sorted(folder.iterdir())
                     if f.is_dir() and is_case_folder(f)]
            if cases:
                datasets[folder.name] = cases
    if not datasets:
        raise InputError(f"cases: no case folder under '{root}' — each case needs "
                         "<contrast>.nii.gz images and a ground truth seg/lesions/gt.nii.gz.")
    return datasets


def scans_in_folder(folder, contrast: str | None = None, exclude=()) -> list[Scan]:
    """Scans of a cohort folder: each subfolder is a scan folder; each image file is one scan.

    ``contrast`` names the contrast of plain image files; None reads it from the file name.
    Folders in ``exclude`` (e.g. the output folder) are skipped.
    """
    folder = Path(folder)
    excluded = {Path(e).resolve() for e in exclude}
    scans = []
    for path in sorted(folder.iterdir()):
        if path.resolve() in excluded or path.name.startswith("."):
            continue
        if path.is_dir():
            scans.append(read_scan_folder(path))
        elif image_path_suffix(path):
            stem = path.name[: -len(image_path_suffix(path))]
            scan_contrast = contrast or contrast_from_name(path)
            if scan_contrast is None:
                scans.append(Scan(id=stem, problem="the contrast is not in the file name — give "
                                                   "--contrast, or use one folder per scan"))
            else:
                scans.append(Scan(id=stem, images={scan_contrast: path}))
    if not scans:
        raise InputError(f"'{folder}' holds no scan (no subfolder, no {', '.join(IMAGE_SUFFIXES)} "
                         "file) — give a folder of scans or a CSV file.")
    return scans


def scans_from_csv(path) -> list[Scan]:
    """Scans listed in a CSV with columns among flair, t1, t2, t1c, mask, id (paths relative to the
    CSV) and age (years, used by models conditioned on age)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read the scan list '{path}' ({error}) — give a CSV file.") from None
    contrast_columns = [CONTRAST_ALIASES[c] for c in columns if c in CONTRAST_ALIASES]
    if not rows or not contrast_columns:
        raise InputError(f"'{path}' lists no scans — it needs a header with at least one of "
                         f"{', '.join(CONTRASTS)} (optional: mask, id, age) and a row per scan.")
    scans = []
    for number, raw in enumerate(rows, start=1):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        images = {CONTRAST_ALIASES[c]: _relative_to(path, v) for c, v in row.items()
                  if c in CONTRAST_ALIASES and v}
        first = next(iter(images.values()), None)
        scan_id = row.get("id") or (first.name[: -len(image_path_suffix(first)) or None]
                                    if first else f"row{number}")
        scan = Scan(id=scan_id, images={c: images[c] for c in CONTRASTS if c in images},
                    mask=_relative_to(path, row["mask"]) if row.get("mask") else None)
        if not images:
            scan.problem = f"row {number} names no image"
        scan.age = row.get("age") or None
        scans.append(scan)
    return scans


def _relative_to(csv_path: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else csv_path.parent / candidate


def safe_id(scan_id: str) -> str:
    """A scan id usable as a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", scan_id).strip("._")
    return cleaned or "scan"


FINGERPRINT_BYTES = 1 << 16  # hashed from each end of a file: headers and the last slices


def content_fingerprint(path) -> str:
    """What an input file (or DICOM folder) holds, cheaply: size, modification time and a hash of
    its first and last 64 KiB per file. A rerun of a cohort recomputes a scan whose input changed
    even where its path did not."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return "missing"  # detect says so in its own words
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        status = file.stat()
        digest.update(f"{file.name}:{status.st_size}:{status.st_mtime_ns}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if status.st_size > 2 * FINGERPRINT_BYTES:
                handle.seek(-FINGERPRINT_BYTES, 2)
                digest.update(handle.read())
    return digest.hexdigest()[:32]
