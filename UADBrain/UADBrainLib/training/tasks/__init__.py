"""What each learned family trains on: networks, batches, loss, validation, bundle metadata.

A :class:`TrainingTask` plugs one family into the generic loop of ``train.py``; a new family adds
its task to :data:`TASKS`. Every anomaly family is validated the same way: on held-out
validation brains with synthetic anomalies inserted in 3D (``synthesis/anomalies.py``) before
normalisation, scored exactly as at inference, by the mean AUPRC over contrasts. The segmenter
never trains on the anomaly kinds it is validated on (Baugh et al. 2023).
"""

from __future__ import annotations

from .base import TrainingTask
from .diffusion import ConditionedDiffusionTask, DiffusionTask, PatchedDiffusionTask
from .features import GaussianFeatureTask, PatchCoreTask, StudentTeacherTask
from .normative import NormativeTask
from .reconstruction import ContextVAETask, DenoisingTask, FAnoGANTask, SkipAutoencoderTask, VariationalTask
from .segmenter import LearnedHybridTask, SegmenterTask

TASKS: dict[str, type[TrainingTask]] = {"dae": DenoisingTask, "vae": VariationalTask,
                                         "cevae": ContextVAETask, "skip-ae": SkipAutoencoderTask,
                                         "fanogan": FAnoGANTask, "diffusion": DiffusionTask,
                                         "pddpm": PatchedDiffusionTask, "cddpm": ConditionedDiffusionTask,
                                         "segmenter": SegmenterTask, "normative": NormativeTask,
                                         "patchcore": PatchCoreTask, "padim": GaussianFeatureTask,
                                         "stfpm": StudentTeacherTask, "learned-hybrid": LearnedHybridTask}


def make_task(config) -> TrainingTask:
    return TASKS[config.model](config)
