"""UADBrain engine: unsupervised anomaly detection in brain MRI, without Slicer.

>>> from UADBrainLib import detect
>>> result = detect({"flair": "flair.nii.gz"})
>>> result.lesions[0].volume_ml, result.rethreshold(4.0).lesion_count
"""

__version__ = "0.1.0"

from .errors import UADBrainError  # noqa: E402
from .inference.options import DetectOptions  # noqa: E402
from .inference.pipeline import detect  # noqa: E402
from .inference.result import Result  # noqa: E402

__all__ = ["__version__", "detect", "DetectOptions", "Result", "UADBrainError"]
