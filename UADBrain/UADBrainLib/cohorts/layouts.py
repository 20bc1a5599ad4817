"""Where a cohort's outputs go: a folder per scan, or a BIDS derivatives dataset.

Both write a scan's outputs whole or not at all, and say whether a scan already has complete
outputs made with given settings (the ``batch`` entry of its report), which is how a rerun resumes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..cohort import Scan
from ..inference.dicom_seg import dicom_series_input
from ..inference.result_files import DICOM_SEG_FILE, OUTPUT_FILES, check_output_folder, write_result
from ..io import write_text_atomically

NO_DICOM_INPUT = "not written: no input of this scan is a DICOM series"


def matching_report(report_path: Path, files: list[Path], settings: dict) -> dict | None:
    """The report at ``report_path`` when every file of the scan is there and the report was made
    with ``settings``; else None."""
    if not all(path.is_file() for path in files):
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if report.get("batch") == json.loads(json.dumps(settings)) else None


def scan_inputs(scan: Scan) -> list[Path]:
    return [*scan.images.values(), *([scan.mask] if scan.mask else [])]


def dicom_seg_series(result, scan: Scan, extra: dict) -> Path | None:
    """The series a scan's DICOM SEG references; without one, the report says why none was written."""
    series = dicom_series_input(scan.images, result.report.get("reference_contrast"))
    if series is None:
        extra["dicom_seg"] = NO_DICOM_INPUT
    return series


class ScanFolders:
    """``OUT/<scan id>/`` holding the files of ``uadbrain detect`` (folder and CSV cohorts)."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)

    def prepare(self, bundle) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def output_of(self, scan: Scan) -> str:
        return scan.id

    def overview_of(self, scan_id: str) -> Path:
        return self.out_dir / scan_id / "overview.png"

    def completed_report(self, scan: Scan, settings: dict) -> dict | None:
        folder = self.out_dir / scan.id
        report = matching_report(folder / "report.json", [folder / name for name in OUTPUT_FILES], settings)
        if report is None or not settings.get("dicom_seg") or report.get("dicom_seg") == NO_DICOM_INPUT:
            return report
        return report if (folder / DICOM_SEG_FILE).is_file() else None  # asked for, and a DICOM input had one

    def check(self, scan: Scan) -> None:
        check_output_folder(self.out_dir / scan.id, scan_inputs(scan), (DICOM_SEG_FILE,))

    def write(self, result, scan: Scan, extra: dict, dicom_seg: bool = False) -> None:
        extra = dict(extra)
        series = dicom_seg_series(result, scan, extra) if dicom_seg else None
        write_result(result, self.out_dir / scan.id, extra_report=extra, replace_folder=True,
                     dicom_seg_series=series)


BIDS_VERSION = "1.10.0"
STAGING_PREFIX = ".uadbrain-partial-"
STALE_STAGING_S = 6 * 3600  # older staging folders are left by killed runs; younger may be another writer's
# files of this dataset that the BIDS specification does not name; listed in .bidsignore as it allows
BIDS_IGNORED = ("*_map.nii.gz", "*_map.json", "*_lesions.tsv", "*_lesions.json", "figures/", "summary*.csv",
                "cohort_report*.html")
LESION_COLUMN_DESCRIPTIONS = {
    "label": ("The lesion's value in the dseg image; 1 = the most anomalous lesion", None),
    "voxels": ("Voxels of the lesion on the scan's own grid", None),
    "volume_ml": ("Lesion volume", "mL"),
    "max_score": ("Highest anomaly score in the lesion (units of the map, see its sidecar)", None),
    "mean_score": ("Mean anomaly score in the lesion", None),
    **{f"centroid_ras_{axis}": (f"Lesion centre, RAS world coordinate {axis}", "mm") for axis in "xyz"},
    **{f"centroid_ijk_{axis}": (f"Lesion centre, voxel index {axis} (0-based)", None) for axis in "ijk"},
    **{f"bbox_ijk_{end}_{axis}": (f"Bounding box, {end}imum voxel index {axis} (0-based, inclusive)", None)
       for end in ("min", "max") for axis in "ijk"},
}


class BIDSDerivatives:
    """``OUT/`` as a BIDS derivatives dataset, each scan's files in ``sub-X/[ses-Y/]anat/``::

        sub-X_ses-Y_space-orig_desc-anomaly_map.nii.gz   the anomaly map, on the scan's own grid
        sub-X_ses-Y_space-orig_desc-anomaly_map.json     its sidecar: the run report, Sources, units
        sub-X_ses-Y_space-orig_desc-anomaly_dseg.nii.gz  lesions, 1 = the most anomalous (+ .tsv lookup)
        sub-X_ses-Y_space-orig_desc-anomaly_lesions.tsv  a row per lesion (+ .json: the columns)
        sub-X/figures/sub-X_ses-Y_desc-anomaly_overview.png

    The map's sidecar is moved in last: a scan whose sidecar is there is complete.
    """

    def __init__(self, out_dir, source_root):
        self.out_dir = Path(out_dir)
        self.source_root = Path(source_root).absolute()  # not resolved: annexed files are links

    def prepare(self, bundle) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        description = {
            "Name": "UADBrain unsupervised anomaly detection",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {"Name": "UADBrain", "Version": __version__,
                 "Description": "Unsupervised anomaly detection in brain MRI (uadbrain detect --bids)",
                 "CodeURL": "https://github.com/uadbrain/UADBrain"},
                {"Name": f"UADBrain model {bundle.name}", "Version": str(bundle.metadata.get("version", "")),
                 "Description": "the model bundle that made the maps"}],
            "SourceDatasets": [{"URL": self.source_root.as_uri()}],
            "DatasetLinks": {"raw": self.source_root.as_uri()},
        }
        write_text_atomically(self.out_dir / "dataset_description.json", json.dumps(description, indent=2) + "\n")
        write_text_atomically(self.out_dir / ".bidsignore", "\n".join(BIDS_IGNORED) + "\n")

    @staticmethod
    def prefix(scan: Scan) -> str:
        return f"sub-{scan.subject}" + (f"_ses-{scan.session}" if scan.session else "")

    def anat_dir(self, scan: Scan) -> Path:
        folder = self.out_dir / f"sub-{scan.subject}"
        return (folder / f"ses-{scan.session}" if scan.session else folder) / "anat"

    def files(self, scan: Scan) -> dict[str, Path]:
        """Each output's path, by the name ``uadbrain detect`` gives it (plus the BIDS-only files)."""
        stem = self.anat_dir(scan) / f"{self.prefix(scan)}_space-orig_desc-anomaly"
        return {"anomaly_map.nii.gz": Path(f"{stem}_map.nii.gz"),
                "segmentation.nii.gz": Path(f"{stem}_dseg.nii.gz"),
                "dseg.tsv": Path(f"{stem}_dseg.tsv"),
                "lesions.tsv": Path(f"{stem}_lesions.tsv"),
                "lesions.json": Path(f"{stem}_lesions.json"),
                "overview.png": self.out_dir / f"sub-{scan.subject}" / "figures" /
                f"{self.prefix(scan)}_desc-anomaly_overview.png",
                "report.json": Path(f"{stem}_map.json")}  # last: marks the scan complete

    def output_of(self, scan: Scan) -> str:
        return str(self.anat_dir(scan).relative_to(self.out_dir))

    def overview_of(self, scan_id: str) -> Path:
        subject = scan_id.split("_ses-")[0]
        return self.out_dir / subject / "figures" / f"{scan_id}_desc-anomaly_overview.png"

    def completed_report(self, scan: Scan, settings: dict) -> dict | None:
        files = self.files(scan)
        return matching_report(files["report.json"], list(files.values()), settings)

    def check(self, scan: Scan) -> None:
        check_output_folder(self.anat_dir(scan))

    def sources(self, scan: Scan) -> list[str]:
        """The inputs as BIDS URIs into the raw dataset (``DatasetLinks`` names it)."""
        sources = []
        for path in scan_inputs(scan):
            relative = Path(os.path.relpath(Path(path).absolute(), self.source_root))
            sources.append(Path(path).absolute().as_uri() if relative.parts[0] == ".."
                           else f"bids:raw:{relative.as_posix()}")  # a mask from elsewhere: its own URI
        return sources

    def write(self, result, scan: Scan, extra: dict, dicom_seg: bool = False) -> None:
        for stale in self.out_dir.glob(f"{STAGING_PREFIX}{self.prefix(scan)}-*"):
            if time.time() - stale.stat().st_mtime > STALE_STAGING_S:  # a killed run's, not a live writer's
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.prefix(scan)}-", dir=self.out_dir))
        try:
            sidecar = {"Description": "Anomaly score per voxel: what the normative model cannot explain",
                       "Sources": self.sources(scan), **extra}
            write_result(result, staging / "scan", extra_report=sidecar)
            written = staging / "scan"
            _csv_to_tsv(written / "lesions.csv", written / "lesions.tsv")
            with open(written / "dseg.tsv", "w", newline="", encoding="utf-8") as handle:
                handle.write("index\tname\n" + "".join(f"{lesion.label}\tlesion {lesion.label}\n"
                                                        for lesion in result.lesions))
            columns = {name: {"Description": text, **({"Units": units} if units else {})}
                       for name, (text, units) in LESION_COLUMN_DESCRIPTIONS.items()}
            (written / "lesions.json").write_text(json.dumps(columns, indent=2) + "\n", encoding="utf-8")
            files = self.files(scan)
            files["report.json"].unlink(missing_ok=True)  # the scan reads incomplete until the end
            for name, target in files.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(written / name, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _csv_to_tsv(source: Path, target: Path) -> None:
    with open(source, newline="", encoding="utf-8") as reading, \
            open(target, "w", newline="", encoding="utf-8") as writing:
        csv.writer(writing, delimiter="\t", lineterminator="\n").writerows(csv.reader(reading))
