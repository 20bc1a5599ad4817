"""UADBrain engine: unsupervised anomaly detection in brain MRI, without Slicer.

>>> from UADBrainLib import detect
>>> result = detect({"flair": "flair.nii.gz"})
>>> result.lesions[0].volume_ml, result.rethreshold(4.0).lesion_count

The public names are imported on first use, so that ``import UADBrainLib.errors`` (the Slicer
panel, the web app) does not load the pipeline.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {"detect": "inference.pipeline", "DetectOptions": "inference.options", "Result": "inference.result",
           "UADBrainError": "errors"}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
