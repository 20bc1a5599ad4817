"""``uadbrain brainmask``: the brain mask of one scan (raw head or skull-stripped), on its own grid."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..bundle import CONTRASTS
from ..device import resolve_device
from .options import add_device_argument
from ..errors import InputError
from ..inference.brain_extraction import BRAIN_MASK_METHODS, brain_mask_for
from ..inference.result_files import can_create_in, nearest_existing

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "brainmask", help="brain mask of a scan (any contrast, raw head or skull-stripped)",
        description="Writes the brain mask (brain tissue + CSF inside the skull) of one MRI volume "
                    "on the input's exact grid. Raw heads of any contrast go through the learned "
                    "brain extractor; skull-stripped scans keep their nonzero region (method auto).")
    parser.add_argument("--image", required=True, metavar="FILE",
                        help="MRI volume (NIfTI, NRRD, MHA or DICOM folder), any contrast")
    parser.add_argument("--out", required=True, type=Path, metavar="MASK",
                        help="output mask file (.nii.gz, .nii, .nrrd or .mha)")
    parser.add_argument("--method", choices=BRAIN_MASK_METHODS, default="auto",
                        help="auto (nonzero region of a skull-stripped scan, else the best installed "
                             "extractor for the contrast), deepbet, hd-bet-fast, hd-bet (5 folds, for a "
                             "GPU), learned, nonzero, atlas; deepbet and HD-BET come with "
                             'pip install "uadbrain[brainmask]"')
    parser.add_argument("--contrast", choices=CONTRASTS, metavar="{" + ",".join(CONTRASTS) + "}",
                        help="the image's contrast, for auto's choice of extractor (default: unknown)")
    parser.add_argument("--probability", type=Path, metavar="FILE",
                        help="also write the brain probability of the learned model (float, input grid)")
    parser.add_argument("--overlay", type=Path, metavar="PNG",
                        help="also write a picture of three slices with the mask outline")
    add_device_argument(parser)
    parser.set_defaults(func=run_brainmask)


def run_brainmask(args) -> int:
    from ..io import read_image, write_image
    from ..preprocessing import check_mask_volume

    for path in (args.out, args.probability):
        if path is not None and not str(path).lower().endswith(MASK_SUFFIXES):
            raise InputError(f"'{path}': unknown output format — end the name with "
                             f"{', '.join(MASK_SUFFIXES)}.")
    if args.overlay is not None and args.overlay.suffix.lower() != ".png":
        raise InputError(f"'{args.overlay}': the overlay is a picture — end the name with .png.")
    targets = [path for path in (args.out, args.probability, args.overlay) if path is not None]
    for path in targets:
        check_output_file(path, args.image)
    image = read_image(args.image, "image")
    device = resolve_device(args.device)
    started = time.perf_counter()
    mask, path_taken = brain_mask_for(image, None, args.method, device, args.contrast)
    seconds = time.perf_counter() - started
    volume_ml = check_mask_volume(mask)
    writers = {args.out: lambda staged: write_image(mask, staged)}
    if args.probability is not None:
        from ..inference.brainmask_net import load_brainmask_model

        probability = load_brainmask_model(device=device).probability(image)
        writers[args.probability] = lambda staged: write_image(probability, staged)
    if args.overlay is not None:
        title = f"{Path(args.image).name}: {path_taken}, {volume_ml:.0f} mL"
        writers[args.overlay] = lambda staged: render_mask_overlay(image, mask, staged, title)
    write_all_or_nothing(writers)
    print(f"brain mask: {path_taken}, {volume_ml:.1f} mL, {seconds:.1f} s; wrote "
          f"{', '.join(str(p) for p in writers)}")
    return 0


def check_output_file(path: Path, image_path) -> None:
    """Refuse, before any work, an output file that cannot be written or would replace the input."""
    if path.exists() and path.is_dir():
        raise InputError(f"'{path}' is a folder — give a file name for the output.")
    if path.absolute().resolve() == Path(image_path).absolute().resolve():
        raise InputError(f"'{path}' is the input image — give another name for the output.")
    existing = nearest_existing(path.absolute().parent)
    if not can_create_in(existing):
        raise InputError(f"'{path}' cannot be written ('{existing}' is not a writable folder) — choose another "
                         "output path.")


def write_all_or_nothing(writers: dict) -> None:
    """Each ``writer(staged_path)`` writes beside its target; the files are renamed into place only
    when every one succeeded, and a failure leaves none of them behind."""
    staged = {}
    try:
        for target, writer in writers.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged[target] = target.with_name(f".{target.name}.uadbrain-partial{''.join(target.suffixes)}")
            writer(staged[target])
        for target, path in staged.items():
            path.replace(target)
    except (OSError, RuntimeError) as error:  # RuntimeError: ITK's writers
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[-1][:80]
        raise InputError(f"cannot write '{target}' ({reason}) — choose another output path.") from None
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def render_mask_overlay(image: sitk.Image, mask: sitk.Image, path, title: str = "") -> None:
    """Axial, coronal and sagittal slices through the mask's centre with its outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..geometry import to_canonical

    volume = sitk.GetArrayFromImage(to_canonical(image))
    labels = sitk.GetArrayFromImage(to_canonical(mask, is_label=True)) > 0
    spacing = to_canonical(image).GetSpacing()  # (L, P, S)
    centre = np.argwhere(labels).mean(axis=0).round().astype(int) if labels.any() else \
        np.array(volume.shape) // 2
    k, j, i = centre
    planes = [(volume[k], labels[k], spacing[1] / spacing[0]),
              (volume[::-1, j], labels[::-1, j], spacing[2] / spacing[0]),
              (volume[::-1, :, i], labels[::-1, :, i], spacing[2] / spacing[1])]
    low, high = np.percentile(volume, [0.5, 99.5])
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, (picture, outline, aspect) in zip(axes, planes):
        axis.imshow(picture, cmap="gray", vmin=low, vmax=high, aspect=aspect)
        if outline.any():
            axis.contour(outline, levels=[0.5], colors="r", linewidths=0.8)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
