"""Many volume sets in one go: the scene's volumes grouped per subject, run one after another.

A set is a subject's co-registered contrasts. Volumes loaded from DICOM sit under a study in the
subject hierarchy: that study is their set. Other volumes are grouped by name: the words that
name the contrast (``FLAIR``, ``T1``/``T1w``, ``T2``/``T2w``, ``T1c``/``T1ce``/``T1 Gd``) taken
out, the rest names the subject (``case2_T1`` and ``case2_FLAIR`` are one set; ``FLAIR`` and ``T1``
alone are one unnamed set). The panel lists the sets for the user to pick from.

:class:`VolumeSetRuns` runs the chosen model on each set in a background process (one at a time:
a model's memory once), polled from the main thread like one run; each set's outputs are created
as it finishes, beside its own volumes and named after them. A set that fails is reported and the
list goes on; cancelling stops the set running and skips the rest, keeping what finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import slicer

from UADBrainLib.bundle import CONTRASTS
from UADBrainLib.cohort import split_contrast
from UADBrainLib.errors import UADBrainError, first_line

from .hierarchy import ROLE_ATTRIBUTE


@dataclass
class VolumeSet:
    name: str
    volumes: dict = field(default_factory=dict)  # contrast → volume node, in the engine's contrast order
    problem: str | None = None  # why the set cannot run as grouped (two volumes of one contrast)


UNNAMED_SET = "(no subject name)"  # the set of volumes whose names state a contrast only


@dataclass
class SetOutcome:
    name: str
    outputs: object = None  # Outputs when it ran
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    device: str | None = None  # what it ran on

    @property
    def summary(self) -> str:
        """One line for a list of sets: what was found, or why the set failed."""
        if self.error:
            return f"failed — {self.error}"
        result = self.outputs.result
        return f"{result.lesion_count} lesions, {result.flagged_volume_ml:.1f} mL (on {self.device})"


@dataclass
class RunsStatus:
    fraction: float  # of the whole list
    stage: str
    finished: bool
    outcomes: list[SetOutcome]


def _study_of(hierarchy, node) -> str | None:
    """``Patient / Study`` when the node sits under a study (a DICOM series), else None."""
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        return None
    parent = hierarchy.GetItemParent(item)
    if parent and hierarchy.GetItemLevel(parent) == "Study":
        patient = hierarchy.GetItemParent(parent)
        names = [hierarchy.GetItemName(i) for i in (patient, parent) if i and i != hierarchy.GetSceneItemID()]
        return " / ".join(names)
    return None


def volume_sets(scene) -> list[VolumeSet]:
    """The scene's input volumes as sets, in the order they were loaded; this module's outputs and
    volumes whose name states no contrast are left out."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    entries = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.IsA("vtkMRMLLabelMapVolumeNode") or node.GetAttribute(ROLE_ATTRIBUTE):
            continue
        contrast, rest = split_contrast(node.GetName())
        if contrast is not None:
            study = _study_of(hierarchy, node)
            entries.append((study or rest or UNNAMED_SET, contrast, node, "loaded from one DICOM study" if study
                            else "named alike"))
    return group_into_sets(entries)


def group_into_sets(entries, remedy: str = "choose them in the Inputs section and press Apply") -> list[VolumeSet]:
    """``(set name, contrast, volume node, how they came together)`` entries as sets, in
    first-seen order; a set given two volumes of one contrast says so (:attr:`VolumeSet.problem`)
    and what to do (``remedy``: the front end's way to part them)."""
    sets: dict[str, VolumeSet] = {}
    for name, contrast, node, grouped_by in entries:
        volume_set = sets.setdefault(name, VolumeSet(name))
        if contrast in volume_set.volumes:
            volume_set.problem = (f"two {contrast.upper()} volumes {grouped_by} ('{volume_set.volumes[contrast].GetName()}'"
                                  f", '{node.GetName()}') — {remedy}.")
        else:
            volume_set.volumes[contrast] = node
    for volume_set in sets.values():
        volume_set.volumes = {c: volume_set.volumes[c] for c in CONTRASTS if c in volume_set.volumes}
    return list(sets.values())


def user_message(error: BaseException) -> str:
    """One line for a list or a page: the engine's own message, or the error's first line."""
    if isinstance(error, UADBrainError):
        return str(error)
    return f"{type(error).__name__}: {first_line(str(error))}"


class VolumeSetRuns:
    """The model on each set in turn, in a background process; call :meth:`poll` from the main
    thread (it creates each finished set's outputs) until ``finished``."""

    def __init__(self, logic, sets: list[VolumeSet], modelName=None, options=None, pythonExecutable=None,
                 environment=None, replaceExisting: bool = False):
        self.logic, self.sets, self.modelName, self.options = logic, list(sets), modelName, options
        self.python, self.environment, self.replaceExisting = pythonExecutable, environment, replaceExisting
        self.outcomes: list[SetOutcome] = []
        self._job = self._request = None
        self._cancelled = False

    @property
    def current(self) -> VolumeSet | None:
        return self.sets[len(self.outcomes)] if len(self.outcomes) < len(self.sets) else None

    def poll(self) -> RunsStatus:
        while self._job is None and self.current is not None and not self._cancelled:
            self._start(self.current)
        if self._job is not None:
            status = self._job.poll()
            if status.finished:
                self._finish(self.current)
                return self.poll()
            done = (len(self.outcomes) + status.fraction) / len(self.sets)
            return RunsStatus(done, f"{len(self.outcomes) + 1}/{len(self.sets)} {self.current.name}: {status.stage}",
                              False, self.outcomes)
        failed = sum(outcome.error is not None for outcome in self.outcomes)
        stage = "cancelled" if self._cancelled else "done"
        return RunsStatus(1.0, f"{stage}: {len(self.outcomes) - failed} of {len(self.sets)} sets ran"
                               f"{f', {failed} failed' if failed else ''}", True, self.outcomes)

    def cancel(self) -> None:
        """Stop the set running (its scene stays as it was) and skip the rest."""
        self._cancelled = True
        if self._job is not None:
            self._job.cancel()
            self._job.cleanup()
            self._job = self._request = None

    def _start(self, volume_set: VolumeSet) -> None:
        if volume_set.problem:
            self.outcomes.append(SetOutcome(volume_set.name, error=volume_set.problem))
            return
        if not all(self.logic.scene.IsNodePresent(node) for node in volume_set.volumes.values()):
            self.outcomes.append(SetOutcome(volume_set.name, error="a volume of this set was removed from the scene."))
            return
        try:
            self._request = self.logic.makeRequest(volume_set.volumes, self.modelName, None, self.options)
            self._job = self.logic.startBackground(self._request, self.python, self.environment)
        except Exception as error:  # noqa: BLE001 - a set that cannot start is reported, the list goes on
            self.outcomes.append(SetOutcome(volume_set.name, error=user_message(error)))
            self._job = self._request = None

    def _finish(self, volume_set: VolumeSet) -> None:
        job, request = self._job, self._request
        self._job = self._request = None
        try:
            result = job.result()
            outputs = self.logic.createOutputs(request, result, self.replaceExisting)
            # what the list keeps of each set: its nodes and what tunes them, not the engine's intermediate maps
            result.channel_maps, result.reconstructions, result.preprocessed = {}, {}, {}
            self.outcomes.append(SetOutcome(volume_set.name, outputs, warnings=list(result.report.get("warnings", [])),
                                            device=result.report.get("device")))
        except Exception as error:  # noqa: BLE001 - reported in the list, the next set runs
            self.outcomes.append(SetOutcome(volume_set.name, error=user_message(error)))
        finally:
            job.cleanup()
