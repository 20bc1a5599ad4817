"""The bundled example as stored volumes: what ``uadbrain detect --example``, the Slicer module and the
web app load. It is the default draw of :func:`UADBrainLib.synthesis.example.make_example` (a
synthetic brain with one inserted lesion), written by ``synthesis.example.write_example_volumes``;
reading it needs neither PyTorch nor the generator.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..resources import EXAMPLE_DIR

EXAMPLE_VOLUMES = ("flair", "t1", "t2", "lesion", "brain_mask")
# images are stored as int16 thousandths of the brain-median-normalised intensity (files < 2 MB)
STORED_INTENSITY_SCALE = 1000.0


def example_volume_path(name: str, folder: Path = EXAMPLE_DIR) -> Path:
    return Path(folder) / f"example_{name}.nii.gz"


def load_example() -> dict[str, sitk.Image]:
    """The stored default example: ``{"flair", "t1", "t2": float32 images, "lesion", "brain_mask"}``."""
    example = {}
    for name in EXAMPLE_VOLUMES:
        path = example_volume_path(name)
        if not path.is_file():
            raise InputError(f"the bundled example volume {path.name} is missing — reinstall UADBrain.")
        image = sitk.ReadImage(str(path))
        if name in ("lesion", "brain_mask"):
            example[name] = sitk.Cast(image, sitk.sitkUInt8)
        else:
            example[name] = sitk.Cast(image, sitk.sitkFloat32) / STORED_INTENSITY_SCALE
    return example
