"""Measure a brain-extraction bundle: held-out synthetic heads (Dice, surface distance on the native
grid), the raw IXI heads (brain volume), the skull-stripped BraTS and MS scans (Dice, share of the
brain kept), the time for a 1 mm head; overlay pictures of each go to --look.

Run from the repository root with the evaluation data at ../shared/data (the figures in
UADBrain/Resources/Models/brainmask/README.md)::

    python docs/tools/eval_brainmask.py --bundle UADBrain/Resources/Models/brainmask \
        --parts synth,ixi,brats,ms,time,atlas --synth-count 6 --json brainmask_eval.json

``--checkpoint`` measures a training checkpoint with the bundle's metadata instead.
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from UADBrainLib.bundle import read_bundle, sha256_of, write_metadata
from UADBrainLib.cli.brainmask import render_mask_overlay
from UADBrainLib.inference.brainmask_net import BrainMaskModel
from UADBrainLib.preprocessing import atlas_brain_mask, nonzero_brain_mask
from UADBrainLib.training.brainmask import dice, mean_surface_distance_mm

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LOOK = Path("brainmask_look")
ORIENTATIONS = ["LPS", "RAS", "LIP", "PIR", "ASL", "RPI"]


def arr(image):
    return sitk.GetArrayFromImage(image) > 0


def spacing_kji(image):
    return tuple(image.GetSpacing()[::-1])


def bundle_from_checkpoint(bundle_dir: Path, checkpoint: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.save(state["network"], out / "weights.pt")
    metadata = json.loads((bundle_dir / "metadata.json").read_text())
    metadata["weights"] = {"file": "weights.pt", "sha256": sha256_of(out / "weights.pt")}
    metadata["training"] = {"step": state["step"]}
    write_metadata(out, metadata)
    return out


def learned(model, image):
    started = time.perf_counter()
    mask = model.mask(image)
    return mask, time.perf_counter() - started


def synth_part(model, tag, count, spacing, with_atlas):
    from UADBrainLib.synthesis.brains import SynthesisConfig, Synthesizer

    paths = sorted((DATA / "label_maps" / "synthseg").glob("*.nii.gz"))[-2:]
    from UADBrainLib.training.brainmask import SYNTHESIS_OVERRIDES
    synth = Synthesizer(paths, SynthesisConfig(**SYNTHESIS_OVERRIDES))
    rng = np.random.default_rng(777)
    contrasts = ["t1", "t2", "flair", "t1c", "random"]
    rows = []
    for n in range(count):
        contrast = contrasts[n % len(contrasts)]
        fov = [float(rng.choice([192, 224, 256])) for _ in range(3)]
        head = synth.sample(rng, contrasts=(contrast,), spacing=spacing, skull_strip=False,
                            field_of_view_mm=fov)
        orientation = ORIENTATIONS[n % len(ORIENTATIONS)]
        image = sitk.DICOMOrient(head.image(contrast), orientation)
        truth = sitk.DICOMOrient(head.mask_image(), orientation)
        mask, seconds = learned(model, image)
        row = {"n": n, "contrast": contrast, "orientation": orientation, "fov": fov,
               "thick": head.parameters["acquisition"][contrast].get("thick_slices"),
               "dice": dice(arr(mask), arr(truth)),
               "msd_mm": mean_surface_distance_mm(arr(mask), arr(truth), spacing_kji(image)),
               "volume_ratio": float(arr(mask).sum() / arr(truth).sum()),
               "seconds": seconds}
        if with_atlas:
            atlas = atlas_brain_mask(image)
            row["atlas_dice"] = dice(arr(atlas), arr(truth))
            row["atlas_msd_mm"] = mean_surface_distance_mm(arr(atlas), arr(truth), spacing_kji(image))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if n < 5:
            render_mask_overlay(image, mask, LOOK / f"{tag}_synth{n}_{contrast}.png",
                                f"synthetic {contrast} {orientation} dice {row['dice']:.3f}")
    summary = {"dice_mean": np.mean([r["dice"] for r in rows]), "dice_min": np.min([r["dice"] for r in rows]),
               "msd_mean_mm": np.mean([r["msd_mm"] for r in rows]),
               "volume_ratio_mean": np.mean([r["volume_ratio"] for r in rows]),
               "seconds_mean": np.mean([r["seconds"] for r in rows])}
    for c in contrasts:
        summary[f"dice_{c}"] = np.mean([r["dice"] for r in rows if r["contrast"] == c])
    if with_atlas:
        summary["atlas_dice_mean"] = np.mean([r["atlas_dice"] for r in rows])
        summary["atlas_msd_mean_mm"] = np.mean([r["atlas_msd_mm"] for r in rows])
    return summary


def ixi_part(model, tag, with_atlas):
    out = {}
    for path in sorted((DATA / "healthy" / "ixi_small").glob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        mask, seconds = learned(model, image)
        volume = arr(mask).sum() * np.prod(mask.GetSpacing()) / 1000
        entry = {"learned_ml": round(float(volume), 1), "seconds": round(seconds, 2)}
        render_mask_overlay(image, mask, LOOK / f"{tag}_ixi_{path.name[:6]}_learned.png",
                            f"{path.name} learned {volume:.0f} mL")
        if with_atlas:
            atlas = atlas_brain_mask(image)
            entry["atlas_ml"] = round(float(arr(atlas).sum() * np.prod(atlas.GetSpacing()) / 1000), 1)
            entry["dice_learned_vs_atlas"] = dice(arr(mask), arr(atlas))
            render_mask_overlay(image, atlas, LOOK / f"{tag}_ixi_{path.name[:6]}_atlas.png",
                                f"{path.name} atlas {entry['atlas_ml']:.0f} mL")
        out[path.name] = entry
        print(path.name, entry, flush=True)
    return out


def stripped_part(model, tag, cases):
    out = {}
    for name, image_path, truth_path in cases:
        image = sitk.ReadImage(str(image_path))
        truth = arr(sitk.ReadImage(str(truth_path))) if truth_path else arr(nonzero_brain_mask(image))
        mask, seconds = learned(model, image)
        m = arr(mask)
        entry = {"dice": dice(m, truth), "kept": float((m & truth).sum() / truth.sum()),
                 "msd_mm": mean_surface_distance_mm(m, truth, spacing_kji(image)),
                 "seconds": round(seconds, 2)}
        out[name] = entry
        print(name, entry, flush=True)
        render_mask_overlay(image, mask, LOOK / f"{tag}_{name.replace('/', '_')}.png",
                            f"{name} dice {entry['dice']:.3f} kept {entry['kept']:.3f}")
    return out


def brats_cases():
    for p in sorted((DATA / "eval" / "brats2015").glob("pat*")):
        for c in ("flair", "t1c"):
            yield f"brats/{p.name}/{c}", p / f"{c}.nii.gz", p / "brainmask.nii.gz"


def ms_cases():
    for p in sorted((DATA / "eval" / "ms_lesjak2017").glob("patient*")):
        if not p.is_dir():
            continue
        for c in ("flair", "t1", "t2", "t1post"):
            yield f"ms/{p.name}/{c}", p / f"{c}.nii.gz", None


def time_part(model):
    """Learned mask of a 1 mm head: IXI resampled to 1 mm (240x240x180), with 2 threads."""
    torch.set_num_threads(2)
    path = sorted((DATA / "healthy" / "ixi_small").glob("*.nii.gz"))[0]
    image = sitk.ReadImage(str(path))
    reference = sitk.Image([240, 240, 180], sitk.sitkFloat32)
    reference.SetSpacing((1.0, 1.0, 1.0))
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, -0.25)))
    fine = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    times = []
    for _ in range(3):
        _, seconds = learned(model, fine)
        times.append(round(seconds, 2))
    torch.set_num_threads(1)
    return {"ixi_1mm_240x240x180_seconds": times}


def main():
    global LOOK
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--parts", default="synth,ixi,brats,ms")
    parser.add_argument("--synth-count", type=int, default=10)
    parser.add_argument("--synth-spacing", type=float, default=1.0)
    parser.add_argument("--tag", default="eval")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--look", type=Path, default=LOOK, help="folder for the overlay pictures")
    args = parser.parse_args()
    LOOK = args.look
    torch.set_num_threads(1)
    LOOK.mkdir(parents=True, exist_ok=True)
    bundle_dir = args.bundle
    if args.checkpoint:
        bundle_dir = bundle_from_checkpoint(args.bundle, args.checkpoint, Path("/tmp/brainmask_ckpt_bundle"))
    model = BrainMaskModel(read_bundle(bundle_dir))
    parts = args.parts.split(",")
    results = {}
    if "synth" in parts:
        results["synthetic"] = synth_part(model, args.tag, args.synth_count, args.synth_spacing, "atlas" in parts)
        print("synthetic", results["synthetic"], flush=True)
    if "ixi" in parts:
        results["ixi"] = ixi_part(model, args.tag, "atlas" in parts)
    if "brats" in parts:
        results["brats"] = stripped_part(model, args.tag, brats_cases())
    if "ms" in parts:
        results["ms"] = stripped_part(model, args.tag, ms_cases())
    if "time" in parts:
        results["time"] = time_part(model)
        print(results["time"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
