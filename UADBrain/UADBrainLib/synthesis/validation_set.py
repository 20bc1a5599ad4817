"""Synthetic validation cases that no real evaluation scan has seen: anomalies by type, at clinical grids.

Six real evaluation scans cannot choose a method. Methods are chosen on these instead: synthetic
brains drawn from label maps that training held out (by default the last four of the SynthSeg
maps, which no bundled model trained on), each with anomalies of one *type* inserted in 3D, written
as evaluation case folders (``<type>_<acquisition>/case_NNN/{flair,t1,t2,t1c,brainmask,seg}.nii.gz``)
that ``uadbrain evaluate --cases`` reads like the real ones. Types:

- ``ms``: 3–12 small white-matter lesions, 3–15 mm, outlined by real MS lesion shapes (the 27
  masks-only Lesjak 2017 masks: shapes only, no image) and periventricular caps, as bright against
  white matter as conventional scans show MS lesions (FLAIR ×1.15–1.7, T2 ×1.35–2.4, T1 ×0.65–1.0);
- ``tumour``: one mass of 20–60 mm with a rim and a core (FLAIR/T2-bright, T1-dark, T1c rim);
- ``bright``, ``dark``, ``subtle``, ``texture``: 1–3 blobs or ellipsoids of 5–30 mm brighter,
  darker, slightly changed or re-textured on every contrast.

Acquisitions: ``1`` (1 mm isotropic, as synthesised) and any voxel size such as ``0.45x0.45x5``
(thick 2D slices), re-acquired with each voxel's slice profile (``evaluation/acquisition.py``); the
truth and the brain mask are carried as partial-volume fractions kept at ≥ 50 %, so small lesions
that a 5 mm slice loses are not counted as missed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..bundle import CONTRASTS
from ..errors import InputError
from ..io import write_image
from .anomalies import AnomalyConfig, LesionShapes, insert_anomalies
from .brains import find_label_maps, load_label_map, synthesize

DEFAULT_HELD_OUT_MAPS = 4  # the bundles train on the SynthSeg maps before these (metadata "data")
SYNTHESIS_SPACING_MM = 1.0
ANOMALY_TYPES = {
    "ms": AnomalyConfig(shapes=("ms_lesion", "periventricular"), appearances=("ms",), count=(3, 12),
                        diameter_mm=(3.0, 15.0), edge_blur_voxels=(0.3, 1.0),
                        white_matter_probability=1.0),
    "tumour": AnomalyConfig(shapes=("blob",), appearances=("tumour",), count=(1, 1), diameter_mm=(20.0, 60.0)),
    "bright": AnomalyConfig(shapes=("blob", "ellipsoid"), appearances=("brighter",), count=(1, 3),
                            diameter_mm=(5.0, 30.0)),
    "dark": AnomalyConfig(shapes=("blob", "ellipsoid"), appearances=("darker",), count=(1, 3), diameter_mm=(5.0, 30.0)),
    "subtle": AnomalyConfig(shapes=("blob", "ellipsoid"), appearances=("subtle",), count=(1, 3),
                            diameter_mm=(5.0, 30.0)),
    "texture": AnomalyConfig(shapes=("blob", "ellipsoid"), appearances=("texture",), count=(1, 3),
                             diameter_mm=(5.0, 30.0)),
}
# MS lesions without the real shapes: periventricular caps and small blobs only
MS_WITHOUT_SHAPES = dataclasses.replace(ANOMALY_TYPES["ms"], shapes=("periventricular", "blob"))


def acquisition_name(spacing: Sequence[float]) -> str:
    return f"{spacing[0]:g}mm" if len(set(spacing)) == 1 else "x".join(f"{s:g}" for s in spacing) + "mm"


def write_validation_set(label_maps: Path, out: Path, types: Sequence[str] = tuple(ANOMALY_TYPES),
                         cases_per_type: int = 4, acquisitions: Sequence[Sequence[float]] = ((1.0, 1.0, 1.0),),
                         contrasts: Sequence[str] = CONTRASTS, held_out_maps: int = DEFAULT_HELD_OUT_MAPS,
                         lesion_masks: Path | None = None, seed: int = 7_000_000,
                         log: Callable[[str], None] = print) -> list[Path]:
    """Write the cases and a ``validation_set.json`` that records how they were made; returns the
    dataset folders (one per type and acquisition)."""
    from ..evaluation.acquisition import simulate_acquisition

    unknown = [t for t in types if t not in ANOMALY_TYPES]
    if unknown:
        raise InputError(f"unknown anomaly type '{unknown[0]}' — use {', '.join(ANOMALY_TYPES)}.")
    paths = find_label_maps(label_maps)
    if not 0 < held_out_maps < len(paths) + 1:
        raise InputError(f"--held-out-maps must be between 1 and {len(paths)}, got {held_out_maps}.")
    held_out = paths[-held_out_maps:]
    shapes = LesionShapes.from_folder(lesion_masks) if lesion_masks else None
    out = Path(out)
    folders = {}
    for kind in types:
        config = ANOMALY_TYPES[kind] if kind != "ms" or shapes is not None else MS_WITHOUT_SHAPES
        for case in range(cases_per_type):
            rng = np.random.default_rng([seed, list(ANOMALY_TYPES).index(kind), case])  # the same case whatever else is asked
            label_map = load_label_map(held_out[case % len(held_out)])
            brain = synthesize(label_map, contrasts, SYNTHESIS_SPACING_MM, True, rng)
            inserted = insert_anomalies(brain.images, brain.brain_mask, brain.spacing, rng, labels=brain.labels,
                                        config=config, lesion_shapes=shapes)
            volumes = {contrast: brain.as_image(inserted.images[contrast]) for contrast in contrasts}
            truth, mask = brain.as_image(inserted.mask), brain.mask_image()
            for spacing in acquisitions:
                folder = out / f"{kind}_{acquisition_name(spacing)}" / f"case_{case:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                isotropic = np.allclose(spacing, SYNTHESIS_SPACING_MM)
                for contrast, image in volumes.items():
                    write_image(image if isotropic else simulate_acquisition(image, spacing), folder / f"{contrast}.nii.gz")
                for name, label in (("brainmask", mask), ("seg", truth)):
                    write_image(label if isotropic else simulate_acquisition(label, spacing, is_label=True),
                                folder / f"{name}.nii.gz")
                folders.setdefault(folder.parent, None)
            log(f"{kind} case {case}: {label_map.name}, {len(inserted.anomalies)} anomalies, "
                f"{sum(a.volume_ml for a in inserted.anomalies):.2f} mL")
    record = {"label_maps_held_out": [p.name for p in held_out], "types": list(types),
              "cases_per_type": cases_per_type, "acquisitions_mm": [list(map(float, s)) for s in acquisitions],
              "contrasts": list(contrasts), "lesion_masks": str(lesion_masks) if lesion_masks else None,
              "seed": seed, "anomalies": {kind: dataclasses.asdict(ANOMALY_TYPES[kind]) for kind in types}}
    (out / "validation_set.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return list(folders)
