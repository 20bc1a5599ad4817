"""A BIDS dataset as a cohort: one scan per subject and session (``detect --bids``).

Read with pybids, the BIDS community's maintained library: it knows the entities, the inheritance
of sidecars and derivatives datasets, so a brain mask that another pipeline left in
``derivatives/`` (``desc-brain_mask`` in the scan's own space) is found as the standard defines it.
(A lighter reader would save its install — pandas, SQLAlchemy — but not the rules it implements.)

Per session: ``FLAIR`` → flair, ``T2w`` → t2, ``T1w`` → t1, and ``T1w`` with a ``ce-`` entity
→ t1c. Ages and sexes come from ``participants.tsv`` and, when it has an age column,
``sub-X_sessions.tsv`` (the age at that session). A session whose inputs cannot be used (none of
these images, two of the same kind) is a scan with a problem: reported, never dropped.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from pathlib import Path

from ..cohort import Scan
from ..errors import InputError

SUFFIX_CONTRASTS = {"FLAIR": "flair", "T2w": "t2", "T1w": "t1"}
IMAGE_EXTENSIONS = [".nii.gz", ".nii"]
NATIVE_SPACES = (None, "orig", "individual", "T1w")  # a mask in one of these lies on the scan's grid
DISTINGUISHING_ENTITIES = ("acquisition", "ceagent", "reconstruction", "echo", "part", "chunk", "task")
UNKNOWN = {"", "n/a", "na", "nan"}


def bare_label(label: str, key: str) -> str:
    """'sub-01' or '01' → '01' (BIDS apps take labels with or without their prefix)."""
    return label[len(key) + 1:] if label.startswith(f"{key}-") else label


def read_table(path: Path, key: str) -> dict[str, dict[str, str]]:
    """A BIDS .tsv as {row's ``key`` column: {column: value}}; missing file → empty."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:  # a byte-order mark from a spreadsheet
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row[key]: {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            for row in rows if row.get(key)}


def known(value: str | None) -> str | None:
    """A table value, None where BIDS writes n/a; an age given as '89+' (de-identified) reads as 89."""
    if value is None or value.strip().lower() in UNKNOWN:
        return None
    return value.strip().rstrip("+")


def derivative_folders(root: Path, exclude: Path | None) -> list[Path]:
    """Derivatives datasets under ``root/derivatives`` (a description file each), except ``exclude``."""
    folder = root / "derivatives"
    if not folder.is_dir():
        return []
    excluded = exclude.resolve() if exclude else None
    return [path for path in sorted(folder.iterdir())
            if (path / "dataset_description.json").is_file() and path.resolve() != excluded]


def open_layout(root: Path, out_dir: Path | None):
    try:
        from bids import BIDSLayout, BIDSLayoutIndexer
    except ImportError:
        raise InputError('--bids needs pybids — pip install "uadbrain[cohort]".') from None
    if not (root / "dataset_description.json").is_file():
        raise InputError(f"--bids: '{root}' has no dataset_description.json — give the root folder of a "
                         "BIDS dataset.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pybids' notes on the dataset's own BIDS conformance
        # file names carry every entity used here: the sidecars' metadata is not indexed (a large
        # dataset indexes many times faster)
        layout = BIDSLayout(root, validate=False, indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
        for folder in derivative_folders(root, out_dir):
            try:
                layout.add_derivatives(folder, validate=False,
                                       indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
            except Exception:  # noqa: BLE001 - a derivatives folder pybids cannot read holds no mask for us
                continue
    return layout


def scans_from_bids(root, participant_labels=None, sessions=None, out_dir=None) -> list[Scan]:
    """The scans of a BIDS dataset, one per subject (and session), in subject/session order."""
    root = Path(root).absolute()  # not resolved: the files of an annexed dataset are links
    if not root.is_dir():
        raise InputError(f"--bids: '{root}' is not a folder — give the root folder of a BIDS dataset.")
    layout = open_layout(root, Path(out_dir) if out_dir else None)
    subjects = layout.get_subjects()
    if participant_labels:
        wanted = [bare_label(label, "sub") for label in participant_labels]
        missing = sorted(set(wanted) - set(subjects))
        if missing:
            raise InputError(f"--participant-label: no subject {', '.join(missing)} in '{root}' — "
                             f"it has {', '.join(sorted(subjects)[:10]) or 'none'}{' …' if len(subjects) > 10 else ''}.")
        subjects = [s for s in subjects if s in wanted]
    wanted_sessions = {bare_label(label, "ses") for label in sessions} if sessions else None
    participants = read_table(root / "participants.tsv", "participant_id")
    scans = []
    for subject in sorted(subjects):
        subject_sessions = sorted(layout.get_sessions(subject=subject)) or [None]
        if wanted_sessions is not None:
            subject_sessions = [s for s in subject_sessions if s in wanted_sessions]
        session_table = read_table(root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv", "session_id")
        for session in subject_sessions:
            scan = session_scan(layout, subject, session)
            person = participants.get(f"sub-{subject}", {})
            scan.age = known(session_table.get(f"ses-{session}", {}).get("age")) or known(person.get("age"))
            scan.sex = known(person.get("sex"))
            scans.append(scan)
    if not scans:
        raise InputError(f"--bids: no subject{' in the sessions asked for' if sessions else ''} in '{root}'.")
    return scans


def session_scan(layout, subject: str, session: str | None) -> Scan:
    """One subject's (session's) anatomical images and brain mask."""
    scope = {"subject": subject, **({"session": session} if session else {})}
    scan = Scan(id=f"sub-{subject}" + (f"_ses-{session}" if session else ""), subject=subject, session=session)
    found: dict[str, list] = defaultdict(list)
    for file in layout.get(**scope, scope="raw", datatype="anat", suffix=list(SUFFIX_CONTRASTS),
                           extension=IMAGE_EXTENSIONS):
        contrast = SUFFIX_CONTRASTS[file.entities["suffix"]]
        if contrast == "t1" and file.entities.get("ceagent"):
            contrast = "t1c"
        found[contrast].append(file)
    for contrast, files in found.items():
        chosen = latest_run(files)
        if chosen is None:
            names = ", ".join(Path(f.path).name for f in files)
            scan.problem = (f"{len(files)} {contrast} images ({names}) — keep one per session in the dataset, "
                            "or run the others as a CSV cohort (detect --batch)")
            return scan
        scan.images[contrast] = Path(chosen.path)
    scan.images = {c: scan.images[c] for c in ("flair", "t1", "t2", "t1c") if c in scan.images}
    if not scan.images:
        scan.problem = "no FLAIR, T1w or T2w image in its anat folder"
        return scan
    # 'desc' is an entity pybids knows only once a derivatives dataset is added: allowed as a filter
    masks = [f for f in layout.get(**scope, scope="derivatives", datatype="anat", suffix="mask", desc="brain",
                                   extension=IMAGE_EXTENSIONS, invalid_filters="allow")
             if f.entities.get("space") in NATIVE_SPACES]
    scan.mask = Path(masks[0].path) if len(masks) == 1 else None  # several candidates: let detect extract one
    return scan


def latest_run(files: list):
    """One image of a kind: the only one, or the last run of one acquisition; None when they differ
    by more than their run (2D and 3D acquisitions, say), which is the user's choice."""
    if len(files) == 1:
        return files[0]
    kinds = {tuple(f.entities.get(k) for k in DISTINGUISHING_ENTITIES) for f in files}
    if len(kinds) > 1:
        return None
    return max(files, key=lambda f: int(f.entities.get("run") or 0))
