"""Does conditioning on age keep healthy ageing from being flagged? Measured on synthetic brains.

    python docs/tools/age_check.py --label-maps ../shared/data/label_maps/synthseg \
        --lesion-masks ../shared/data/eval/ms_lesjak2017/masks_only --out docs/results/age

Brains of the held-out label maps (which no bundle trained on) are drawn young and old (the
generator's atrophy of that age), MS-like lesions inserted, and each contrast scored by the
unconditioned normative model, by the age-conditioned one given the age, and by the conditioned one
without it. Per age and contrast: pooled AUPRC of the lesions and the volume flagged outside them at
the calibrated threshold (false positives, mL per brain). Writes ``age_check.md`` and ``.json``.
Maintainers only.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "UADBrain"))

from UADBrainLib.evaluation.evaluate import read_truth, score_case  # noqa: E402
from UADBrainLib.inference.models import load_model  # noqa: E402
from UADBrainLib.inference.options import DetectOptions  # noqa: E402
from UADBrainLib.inference.pipeline import detect  # noqa: E402
from UADBrainLib.metrics import RankingCurve  # noqa: E402
from UADBrainLib.bundle import find_bundle  # noqa: E402
from UADBrainLib.synthesis.anomalies import LesionShapes, insert_anomalies  # noqa: E402
from UADBrainLib.synthesis.brains import find_label_maps, load_label_map, synthesize  # noqa: E402
from UADBrainLib.synthesis.validation_set import ANOMALY_TYPES, DEFAULT_HELD_OUT_MAPS  # noqa: E402

SETTINGS = (("normative", False), ("normative-age", True), ("normative-age", False))  # (model, given the age)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-maps", required=True)
    parser.add_argument("--lesion-masks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ages", type=float, nargs="+", default=[30.0, 80.0])
    parser.add_argument("--cases", type=int, default=3, help="brains per age")
    parser.add_argument("--contrasts", nargs="+", default=["t1", "t2", "flair"])
    args = parser.parse_args()

    held_out = find_label_maps(args.label_maps)[-DEFAULT_HELD_OUT_MAPS:]
    shapes = LesionShapes.from_folder(args.lesion_masks)
    models = {name: load_model(find_bundle(name)) for name in {name for name, _ in SETTINGS}}
    pooled, false_positive_ml = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for age in args.ages:
            for case in range(args.cases):
                rng = np.random.default_rng([8_000_000, case])  # the same brain and lesions at every age
                brain = synthesize(load_label_map(held_out[case % len(held_out)]), args.contrasts, 1.0, True, rng, age=age)
                inserted = insert_anomalies(brain.images, brain.brain_mask, brain.spacing, rng, labels=brain.labels,
                                            config=ANOMALY_TYPES["ms"], lesion_shapes=shapes)
                truth_path = Path(scratch) / "truth.nii.gz"
                sitk.WriteImage(brain.as_image(inserted.mask), str(truth_path))
                for contrast in args.contrasts:
                    image = brain.as_image(inserted.images[contrast])
                    for name, given in SETTINGS:
                        options = DetectOptions(device="cpu", age=age if given else None)
                        result = detect({contrast: image}, model=models[name], options=options, mask=brain.mask_image())
                        row, scores, labels, _ = score_case(result, read_truth(truth_path, image), None)
                        key = (age, contrast, name, given)
                        pooled.setdefault(key, ([], []))
                        pooled[key][0].append(scores)
                        pooled[key][1].append(labels)
                        voxel_ml = float(np.prod(result.anomaly_map.GetSpacing())) / 1000.0
                        false_positive_ml.setdefault(key, []).append(
                            (row["flagged_voxels"] - row["true_positive_voxels"]) * voxel_ml)
                print(f"age {age:g} case {case} done", flush=True)

    rows = []
    for key, (scores, labels) in pooled.items():
        age, contrast, name, given = key
        curve = RankingCurve.from_scores(np.concatenate(scores), np.concatenate(labels))
        rows.append({"age": age, "contrast": contrast, "model": name, "age_given": given,
                     "auprc": round(curve.average_precision(), 3),
                     "false_positive_ml": round(float(np.mean(false_positive_ml[key])), 1)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "age_check.json").write_text(json.dumps({"ages": args.ages, "cases_per_age": args.cases,
                                                    "rows": rows}, indent=2) + "\n", encoding="utf-8")
    lines = ["| age | contrast | " + " | ".join(f"{n}{' (age given)' if g else (' (no age)' if n != 'normative' else '')}"
                                                for n, g in SETTINGS) + " |",
             "|---|---|" + "---|" * len(SETTINGS)]
    for age in args.ages:
        for contrast in args.contrasts:
            cells = [next(f"{r['auprc']:.3f} / {r['false_positive_ml']:.1f} mL" for r in rows
                          if (r["age"], r["contrast"], r["model"], r["age_given"]) == (age, contrast, n, g))
                     for n, g in SETTINGS]
            lines.append(f"| {age:g} | {contrast} | " + " | ".join(cells) + " |")
    (out / "age_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
