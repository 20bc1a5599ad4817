"""The bundled example: one synthetic brain with one inserted lesion, made without external data.

``Resources/Example/example_labels.nii.gz`` is one SynthSeg training label map (Apache-2.0, see the
NOTICE beside it) reduced to the compact :class:`~UADBrainLib.synthesis.brains.Tissue` labels at 1.5 mm.
From it :func:`make_example` draws a realistic head-sized synthetic scan in a few contrasts, inserts
one white-matter lesion (bright on FLAIR and T2, dark on T1) and returns SimpleITK images, so the
tests work on a fresh clone. Its default draw is also stored as volumes (:func:`write_example_volumes`,
read by ``inference/bundled_example.py``),
which the CLI, the Slicer module and the web app load without PyTorch.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..inference.bundled_example import EXAMPLE_VOLUMES, STORED_INTENSITY_SCALE, example_volume_path
from ..resources import EXAMPLE_DIR
from .anomalies import AnomalyConfig, insert_anomalies
from .brains import N_TISSUES, LabelMap, prepare_label_map, synthesize

EXAMPLE_LABELS = EXAMPLE_DIR / "example_labels.nii.gz"
EXAMPLE_SPACING_MM = 1.5
# one well-visible lesion in white matter
EXAMPLE_LESION = AnomalyConfig(shapes=("blob",), appearances=("lesion",), count=(1, 1),
                               diameter_mm=(16.0, 22.0), contrast=(0.8, 1.0),
                               edge_blur_voxels=(0.3, 0.6), white_matter_probability=1.0)


def example_label_map_paths() -> list[Path]:
    """The bundled label map file(s), for commands that take label map paths."""
    if not EXAMPLE_LABELS.is_file():
        raise InputError(f"the bundled example label map is missing ({EXAMPLE_LABELS}) — "
                         "reinstall UADBrain")
    return [EXAMPLE_LABELS]


@functools.lru_cache(maxsize=1)
def load_example_labels() -> LabelMap:
    """The bundled label map, prepared for :func:`~UADBrainLib.synthesis.synthesize`."""
    path = example_label_map_paths()[0]
    return prepare_label_map(sitk.ReadImage(str(path)), compact=True, name=path.name)


def make_example(seed: int = 0, contrasts: Sequence[str] = ("flair", "t1", "t2"),
                 spacing: float = 2.0, skull_strip: bool = True) -> dict[str, sitk.Image]:
    """A synthetic scan with one lesion: ``{contrast: image, "lesion": mask, "brain_mask": mask}``.

    Images are float32 on a canonical grid at ``spacing`` mm; masks are uint8 on the same grid.
    Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    brain = synthesize(load_example_labels(), contrasts, spacing, skull_strip, rng)
    lesion = insert_anomalies(brain.images, brain.brain_mask, brain.spacing, rng,
                              labels=brain.labels, config=EXAMPLE_LESION)
    example = {contrast: brain.as_image(lesion.images[contrast]) for contrast in contrasts}
    example["lesion"] = brain.as_image(lesion.mask)
    example["brain_mask"] = brain.mask_image()
    return example


def build_example_labels(source: str | Path, destination: str | Path = EXAMPLE_LABELS,
                         spacing: float = EXAMPLE_SPACING_MM) -> Path:
    """Maintainers only: how the bundled file was made from a SynthSeg training label map.

    The map is compacted at its own 1 mm, then each tissue's fraction is smoothed and resampled
    to ``spacing`` and the most likely tissue kept, which preserves thin cortex and sulci better
    than nearest-neighbour downsampling.
    """
    fine = prepare_label_map(sitk.ReadImage(str(source)), name=Path(source).name)
    image = fine.to_image()
    size = [int(np.ceil(n * fine.spacing / spacing)) for n in image.GetSize()]
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin([o - fine.spacing / 2 + spacing / 2 for o in image.GetOrigin()])
    best = np.zeros(size[::-1], np.float32)
    labels = np.zeros(size[::-1], np.uint8)
    for tissue in range(N_TISSUES):
        fraction = sitk.Cast(image == tissue, sitk.sitkFloat32)
        fraction = sitk.SmoothingRecursiveGaussian(fraction, spacing / 2.5)
        fraction = sitk.GetArrayFromImage(sitk.Resample(fraction, reference, sitk.Transform(),
                                                        sitk.sitkLinear, 0.0))
        better = fraction > best
        labels[better], best[better] = tissue, fraction[better]
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(reference)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(result, str(destination), useCompression=True)
    return destination


def write_example_volumes(folder: Path = EXAMPLE_DIR) -> list[Path]:
    """Maintainers only: store :func:`make_example`'s default draw for
    :func:`~UADBrainLib.inference.bundled_example.load_example`."""
    example = make_example()
    paths = []
    for name in EXAMPLE_VOLUMES:
        image = example[name]
        if name not in ("lesion", "brain_mask"):
            stored = sitk.GetImageFromArray(
                np.round(sitk.GetArrayFromImage(image) * STORED_INTENSITY_SCALE).astype(np.int16))
            stored.CopyInformation(image)
            image = stored
        paths.append(example_volume_path(name, folder))
        sitk.WriteImage(image, str(paths[-1]), useCompression=True)
    return paths
