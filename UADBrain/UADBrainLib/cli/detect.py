"""``uadbrain detect``: one scan, the bundled example, or a cohort (``--batch``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..bundle import CONTRASTS
from ..errors import UADBrainError
from .options import add_detect_options, detect_options

EXAMPLE_OUTPUTS = ("example_flair.nii.gz", "example_lesion.nii.gz")  # the example's input and truth


class StageProgress:
    """A tqdm progress bar that shows the current pipeline stage."""

    def __init__(self, description: str = "detect", disable: bool = False):
        from tqdm import tqdm

        self.description = description
        self.bar = tqdm(total=100, desc=description, disable=disable,
                        bar_format="{desc:<32} {percentage:3.0f}%|{bar}| [{elapsed}]")

    def __call__(self, fraction: float, stage: str) -> None:
        # the engine's "done" comes before the outputs are written: say what is still going on
        stage = "writing outputs" if stage == "done" else stage
        self.bar.set_description_str(f"{self.description}: {stage}", refresh=False)
        self.bar.update(round(fraction * 100) - self.bar.n)

    def close(self, finished: bool = False) -> None:
        if finished:
            self.bar.set_description_str(f"{self.description}: done", refresh=True)
        self.bar.close()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="detect anomalies in one scan (or a bundled example)",
                                   description="Detect anomalies in co-registered brain MRI volumes of one "
                                               "subject; writes anomaly_map.nii.gz, segmentation.nii.gz, "
                                               "lesions.csv, report.json and overview.png to --out.")
    for contrast in CONTRASTS:
        parser.add_argument(f"--{contrast}", metavar="FILE",
                            help=f"{contrast.upper()} volume (NIfTI, NRRD, MHA or DICOM folder)")
    parser.add_argument("--mask", metavar="FILE", help="brain mask (nonzero = brain), optional")
    parser.add_argument("--example", action="store_true",
                        help="run on the bundled synthetic example (a brain with one inserted lesion)")
    parser.add_argument("--batch", metavar="FOLDER_OR_CSV",
                        help="run a cohort with one model load: a folder of scan folders (<contrast>.nii.gz) "
                             "and/or image files, or a CSV with columns flair,t1,t2,t1c,mask,id; one output "
                             "folder per scan and summary.csv in --out; a rerun resumes")
    parser.add_argument("--contrast", choices=CONTRASTS,
                        help="with --batch: the contrast of plain image files (default: read from the file name)")
    cohort = parser.add_argument_group("cohorts (--batch, --bids)")
    cohort.add_argument("--bids", metavar="DATASET",
                        help="run every subject/session of a BIDS dataset (FLAIR, T1w, T2w, T1w with ce-; a "
                             "desc-brain_mask in its derivatives; ages from participants.tsv); --out becomes a "
                             "BIDS derivatives dataset")
    cohort.add_argument("--participant-label", nargs="+", metavar="LABEL", help="with --bids: only these subjects")
    cohort.add_argument("--session", nargs="+", metavar="LABEL", help="with --bids: only these sessions")
    cohort.add_argument("--workers", type=int, default=1,
                        help="scans run at once on this machine, each worker a process that loads the model "
                             "once (Dask LocalCluster; default 1: in this process)")
    cohort.add_argument("--scheduler", default="local", metavar="local|ADDRESS",
                        help="local (default), or the address of a running Dask scheduler (tcp://HOST:8786, "
                             "e.g. started by dask-jobqueue on SLURM/PBS) whose workers run the scans")
    cohort.add_argument("--part", metavar="K/N",
                        help="run only part K of N of the cohort (job arrays: every N-th scan by id); each part "
                             "writes summary.part-K-of-N.csv; rerun without --part to gather them")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write segmentation.dcm, a DICOM Segmentation referencing the input's DICOM "
                             "series (needs a DICOM folder input; pip install \"uadbrain[cohort]\")")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_detect_options(parser)
    parser.set_defaults(func=run_detect)


def run_detect(args) -> int:
    from ..inference.dicom_seg import dicom_series_input
    from ..inference.pipeline import detect
    from ..inference.result_files import DICOM_SEG_FILE, check_output_folder, write_result

    images = {c: getattr(args, c) for c in CONTRASTS if getattr(args, c)}
    if args.batch and args.bids:
        raise UADBrainError("give --batch or --bids, not both.")
    if args.batch or args.bids:
        if images or args.mask or args.example:
            raise UADBrainError("a cohort takes its scans from the folder, CSV or BIDS dataset; leave out "
                                "--example, --mask and the contrast files.")
        if (args.participant_label or args.session) and not args.bids:
            raise UADBrainError("--participant-label and --session select from a BIDS dataset; give --bids.")
        from .batch import run_batch

        return run_batch(args)
    cohort_only = [name for name, given in (("--workers", args.workers != 1), ("--scheduler", args.scheduler != "local"),
                                            ("--part", args.part), ("--participant-label", args.participant_label),
                                            ("--session", args.session)) if given]
    if cohort_only:
        raise UADBrainError(f"{', '.join(cohort_only)} run a cohort; give --batch or --bids.")
    mask = args.mask
    extra = {}
    example = None
    if args.example:
        if images:
            raise UADBrainError("--example runs on the bundled example; leave out the contrast files.")
        from ..inference.bundled_example import load_example

        example = load_example()
        images = {"flair": example["flair"]}
        extra = {"example": {"inputs": ["example_flair.nii.gz"], "ground_truth": "example_lesion.nii.gz"}}
    if not images:
        raise UADBrainError("no input — give at least one of --flair, --t1, --t2, --t1c (or --example).")
    if args.dicom_seg and dicom_series_input(images) is None:
        raise UADBrainError("--dicom-seg references a DICOM series: give a contrast as a folder of DICOM files.")
    check_output_folder(args.out, [p for p in [*images.values(), mask] if isinstance(p, (str, Path))],
                        (*(EXAMPLE_OUTPUTS if example is not None else ()), *((DICOM_SEG_FILE,) if args.dicom_seg else ())))
    progress = StageProgress(disable=args.quiet)
    finished = False
    try:
        result = detect(images, model=args.model, options=detect_options(args), mask=mask, progress=progress)
        series = dicom_series_input(images, result.report.get("reference_contrast")) if args.dicom_seg else None
        written = write_result(result, args.out, extra_report=extra, dicom_seg_series=series)
        if example is not None:  # the example's input and truth, to view beside the outputs
            from ..io import write_image

            for name, file_name in zip(("flair", "lesion"), EXAMPLE_OUTPUTS):
                write_image(example[name], args.out / file_name)
        finished = True
    finally:
        progress.close(finished)
    for warning in result.report.get("warnings", []):
        print(f"uadbrain: warning: {warning}", file=sys.stderr)
    print(f"{result.lesion_count} lesion(s), {result.flagged_volume_ml:.2f} mL flagged "
          f"(threshold {result.threshold:.3g}, {result.threshold_method}; model {result.model_name}; "
          f"brain mask: {result.report['brain_mask_method']})")
    for lesion in result.lesions[:5]:
        x, y, z = lesion.centroid_ras
        print(f"  lesion {lesion.label}: {lesion.volume_ml:.2f} mL, max score {lesion.max_score:.3g}, "
              f"centre RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm")
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    if args.dicom_seg and DICOM_SEG_FILE not in {path.name for path in written}:
        print(f"uadbrain: DICOM SEG {json.loads((args.out / 'report.json').read_text())['dicom_seg']}", file=sys.stderr)
        return 1
    return 0
