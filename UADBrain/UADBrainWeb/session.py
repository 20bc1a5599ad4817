"""The app's behaviour: page state, user actions, and the analysis runs behind them.

Threading: every MRML/VTK call happens on the event-loop thread, which also renders the views;
only the engine's model run (``adapter.run_engine``, no MRML) goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from trame.app.file_upload import ClientFile
from trame_server.utils.asynchronous import create_task

from . import adapter
from .viewer import Viewer

logger = logging.getLogger(__name__)

SET_POLL_S = 0.2  # how often a run over every subject is polled
# names that state no contrast in a word of their own ("flair2", "t1gd"): most specific first
CONTRAST_NAME_PATTERNS = [
    ("flair", r"flair"),
    ("t1c", r"t1c|t1ce|t1gd|t1post|t1_?gd|t1.?contrast"),
    ("t2", r"t2"),
    ("t1", r"t1"),
]


class UserError(Exception):
    """A problem the user can fix; its message is shown as is."""


def user_message(error: BaseException) -> str:
    """One readable line for the page; details of unexpected errors go to the server log only."""
    from UADBrainLib.errors import UADBrainError, first_line

    if isinstance(error, (UserError, UADBrainError)):
        return str(error)
    logger.error("unexpected error", exc_info=error)
    return (f"Unexpected error ({type(error).__name__}: {first_line(str(error))[:200]}). "
            "The server is still running; its log has details.")


def guess_contrast(file_name: str, taken: set[str]) -> str:
    """The contrast a file's name states — in a word of its own, as "Run every subject" reads it
    when grouping files (``cohort.split_contrast``), else anywhere in the name — or the first
    contrast not yet taken."""
    from UADBrainLib.cohort import contrast_from_name

    stated = contrast_from_name(file_name)
    if stated:
        return stated
    name = file_name.lower()
    for contrast, pattern in CONTRAST_NAME_PATTERNS:
        if re.search(pattern, name):
            return contrast
    return next((c for c in adapter.CONTRASTS if c not in taken), adapter.CONTRASTS[0])


class Session:
    def __init__(self, server, slicer_app):
        self.server = server
        self.state = server.state
        self.scene = slicer_app.scene
        self.io = slicer_app.io_manager
        self.viewer = Viewer(slicer_app)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="uadbrain-web-"))
        self.volume_nodes: dict[str, object] = {}
        self.cancel_event = threading.Event()
        self.logic = adapter.create_logic(self.scene)
        self.outputs = None
        self.set_runs = None  # the run over every subject in progress
        self.set_outcomes: list = []  # its outcome per subject, once finished
        self.applied: adapter.PostProcessing | None = None
        self.rethreshold_task = None
        self._initialise_state()
        self._bind()

    # ----- state -----
    def _initialise_state(self) -> None:
        models = adapter.available_models()
        self.state.update({
            "trame__title": "UADBrain",
            "contrasts": list(adapter.CONTRASTS),
            "models": models,
            "devices": adapter.usable_devices(),
            "brain_mask_methods": list(adapter.BRAIN_MASK_METHODS),
            "brain_mask_method": adapter.DEFAULTS.brain_mask_method,
            "age": adapter.DEFAULTS.age,  # years; empty: not given
            "medians": list(adapter.MEDIAN_CHOICES),
            "model": models[0] if models else None,
            "device": "auto",
            "volumes": [],
            "running": False,
            "progress": 0,
            "stage": "",
            "ran_on": "",  # the device the last run used
            "set_rows": [],  # the last run over every subject: one row per subject
            "shown_set": "",  # the subject whose result the views show
            "has_result": False,
            "threshold": 0.5,
            "threshold_min": 0.0,
            "threshold_max": 1.0,
            "threshold_step": 0.005,
            # the engine's defaults (None: the model's own, shown once a run used them)
            "median": adapter.DEFAULTS.median,
            "min_size_mm3": adapter.DEFAULTS.min_size_mm3,
            "fpr": adapter.DEFAULTS.fpr,
            "erosion_mm": adapter.DEFAULTS.erosion_mm,
            "lesions": [],
            "summary": "No result yet: load a volume and press Run.",
            "error_message": "",
            "run_warnings": [],
        })

    def _bind(self) -> None:
        ctrl = self.server.controller
        ctrl.load_example = self._guarded(self.load_example)
        ctrl.set_contrast = self._guarded(self.set_contrast)
        ctrl.remove_volume = self._guarded(self.remove_volume)
        ctrl.set_subject = self._guarded(self.set_subject)
        ctrl.run = self.start_run
        ctrl.run_sets = self.start_set_runs
        ctrl.show_set = self._guarded(self.show_set)
        ctrl.cancel = self.cancel
        ctrl.jump_to_lesion = self._guarded(self.jump_to_lesion)
        ctrl.dismiss_error = lambda: self.state.update({"error_message": ""})
        self.state.change("upload_files")(self._guarded(self.on_upload))
        self.state.change("threshold", "median", "min_size_mm3", "fpr", "erosion_mm")(
            lambda **_: self.request_rethreshold())
        self.download_trigger = self.server.trigger_name(self.download)

    def _guarded(self, action):
        def guarded(*args, **kwargs):
            try:
                action(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message in the page
                self.state.error_message = user_message(error)
        return guarded

    def _show_error(self, error: BaseException) -> None:
        with self.state:
            self.state.error_message = user_message(error)

    # ----- inputs -----
    def on_upload(self, upload_files=None, **_):
        if not upload_files:
            return
        paths = []
        for file in upload_files:
            client_file = ClientFile(file)
            path = self.upload_dir / Path(client_file.name).name
            path.write_bytes(client_file.content)
            paths.append(path)
        self.state.upload_files = None
        self.add_volumes(paths)

    def load_example(self):
        self.clear_volumes()
        example = adapter.write_example_volumes(self.upload_dir)
        self.add_volumes(example.values(), contrasts=list(example))

    def add_volumes(self, paths, contrasts=None) -> None:
        volumes = list(self.state.volumes)
        for index, path in enumerate(paths):
            taken = {volume["contrast"] for volume in volumes}
            contrast = contrasts[index] if contrasts else guess_contrast(Path(path).name, taken)
            node = self._read_volume(Path(path))
            self.volume_nodes[node.GetID()] = node
            volumes.append({"id": node.GetID(), "name": Path(path).name, "contrast": contrast,
                            "subject": adapter.subject_of(Path(path).name)})
        self.state.volumes = volumes
        self.state.error_message = ""
        self._show_background()

    def _read_volume(self, path: Path):
        loaded = self.io.load_volumes([str(path)])
        image = loaded[0].GetImageData() if loaded else None
        if image is None or image.GetNumberOfScalarComponents() != 1:
            for node in loaded:
                self.scene.RemoveNode(node)
        if image is None:
            raise UserError(f"Could not read '{path.name}' as an image volume — upload a NIfTI "
                            "(.nii, .nii.gz), NRRD (.nrrd) or MetaImage (.mha) file.")
        if image.GetNumberOfScalarComponents() != 1:
            raise UserError(f"'{path.name}' is not a single-channel (grey-scale) volume — upload one MRI contrast per file.")
        return loaded[0]

    def set_contrast(self, volume_id: str, contrast: str) -> None:
        self.state.volumes = [
            {**volume, "contrast": contrast} if volume["id"] == volume_id else volume
            for volume in self.state.volumes
        ]

    def set_subject(self, volume_id: str, subject: str) -> None:
        """The subject a volume belongs to for "Run every subject"; empty: the one its name states."""
        self.state.volumes = [
            {**volume, "subject": (subject or "").strip() or adapter.subject_of(volume["name"])}
            if volume["id"] == volume_id else volume
            for volume in self.state.volumes
        ]

    def remove_volume(self, volume_id: str) -> None:
        self.state.volumes = [volume for volume in self.state.volumes if volume["id"] != volume_id]
        self.scene.RemoveNode(self.volume_nodes.pop(volume_id))
        self._show_background()

    def clear_volumes(self) -> None:
        for volume_id in list(self.volume_nodes):
            self.scene.RemoveNode(self.volume_nodes.pop(volume_id))
        self.state.volumes = []

    def _show_background(self) -> None:
        self._forget_result()
        volumes = self.state.volumes
        shown = next((v for v in volumes if v["contrast"] == "flair"), volumes[0] if volumes else None)
        self.viewer.show_background(self.volume_nodes[shown["id"]] if shown else None)

    def _forget_result(self) -> None:
        made = [self.outputs, *(outcome.outputs for outcome in self.set_outcomes)]
        for outputs in {id(o): o for o in made if o is not None}.values():  # the shown one is also a set's
            adapter.remove_outputs(self.logic, outputs)
        self.outputs = self.applied = None
        self.set_outcomes = []
        self.state.update({"has_result": False, "lesions": [], "progress": 0, "stage": "", "ran_on": "",
                           "run_warnings": [], "summary": "No result yet: press Run.", "set_rows": [],
                           "shown_set": ""})

    def _input_volumes(self) -> dict[str, object]:
        """Contrast → volume node (FLAIR first: the reference the outputs are shown with),
        refusing what the Logic cannot take."""
        volumes = self.state.volumes
        if not volumes:
            raise UserError("No input volume — upload a volume or load the example first.")
        by_contrast: dict[str, object] = {}
        for volume in volumes:
            if volume["contrast"] not in adapter.CONTRASTS:
                raise UserError(f"Unsupported contrast '{volume['contrast']}' for {volume['name']} — "
                                f"choose one of {', '.join(adapter.CONTRASTS)}.")
            if volume["contrast"] in by_contrast:
                raise UserError(f"Two volumes are marked {volume['contrast'].upper()} — give each volume its own contrast.")
            by_contrast[volume["contrast"]] = self.volume_nodes[volume["id"]]
        return dict(sorted(by_contrast.items(), key=lambda item: item[0] != "flair"))

    # ----- run -----
    def start_run(self) -> None:
        # Returns nothing on purpose: wslink awaits a returned task before it reads the next
        # message from the page, which would hold back Cancel until the run ends.
        create_task(self.run())

    async def run(self) -> None:
        self.cancel_event = threading.Event()
        try:
            with self.state:
                self._forget_result()
                # the automatic threshold; what the page leaves empty is the model's default
                request = adapter.start_run(self.logic, self._input_volumes(), self.state.model, self._run_options())
                self.state.update({"running": True, "error_message": "", "stage": "starting"})
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, adapter.run_engine, self.logic, request,
                                                self._progress_reporter(loop), self.cancel_event)
            with self.state:
                self.outputs = adapter.finish_run(self.logic, request, result)
                self._show_run_result()
        except Exception as error:  # noqa: BLE001 - shown in the page, the server keeps serving
            self._show_error(error)
            with self.state:
                self.state.stage = "cancelled" if self.cancel_event.is_set() else "failed"
        finally:
            with self.state:
                self.state.running = False

    def _run_options(self):
        """The run's options as the page sets them; the automatic threshold (what the page leaves
        empty is the model's default)."""
        return adapter.run_options(self.state.device, self._post_processing(threshold=None),
                                   self.state.brain_mask_method, _number(self.state.age, "The age", "years"))

    def start_set_runs(self) -> None:
        create_task(self.run_sets())  # returns nothing: see start_run

    async def run_sets(self) -> None:
        """The model on every subject's volumes in turn, each in a background process."""
        try:
            with self.state:
                self._forget_result()
                sets = adapter.volume_sets(self.state.volumes, self.volume_nodes)
                self.set_runs = adapter.start_set_runs(self.logic, sets, self.state.model, self._run_options())
                self.state.update({"running": True, "error_message": "", "stage": "starting"})
            while True:
                with self.state:  # poll creates each finished set's nodes: on the loop thread
                    status = self.set_runs.poll()
                    self.state.update({"progress": round(100 * status.fraction, 1), "stage": status.stage,
                                       "set_rows": adapter.set_rows(self.set_runs, status)})
                if status.finished:
                    break
                await asyncio.sleep(SET_POLL_S)
            self._end_set_runs()
            shown = next((row["index"] for row in self.state.set_rows if row["ok"]), None)
            if shown is not None:
                with self.state:
                    self.show_set(shown)
        except Exception as error:  # noqa: BLE001 - shown in the page, the server keeps serving
            self._show_error(error)
            with self.state:
                self.state.stage = "failed"
        finally:
            self._end_set_runs()
            with self.state:
                self.state.running = False

    def _end_set_runs(self) -> None:
        """Keep what the sets made (their nodes go when the result is forgotten); stop what still runs."""
        if self.set_runs is not None:
            self.set_runs.cancel()  # nothing to stop once finished; after a failure, the set in progress
            self.set_outcomes = list(self.set_runs.outcomes)
            self.set_runs = None

    def show_set(self, index: int) -> None:
        """The result of one subject of the last run over every subject, in the views and the table."""
        self.outputs = self.set_outcomes[index].outputs
        adapter.show_outputs(self.logic, self.outputs)
        stage = self.state.stage  # the list's outcome stays on show
        self._show_run_result()
        self.state.update({"shown_set": self.set_outcomes[index].name, "stage": stage})

    def cancel(self) -> None:
        if not self.state.running:
            return
        self.state.stage = "cancelling"
        if self.set_runs is not None:
            self.set_runs.cancel()
        else:
            self.cancel_event.set()

    def _progress_reporter(self, loop):
        def report(fraction, stage):
            loop.call_soon_threadsafe(self._set_progress, fraction, stage)
        return report

    def _set_progress(self, fraction, stage) -> None:
        with self.state:
            self.state.progress = round(100 * float(fraction), 1)
            self.state.stage = str(stage)

    def _show_run_result(self) -> None:
        result, slider = self.outputs.result, adapter.slider(self.logic, self.outputs)
        self.state.update({"has_result": True, "threshold_min": slider.minimum, "threshold_max": slider.maximum,
                           "threshold_step": slider.step, "threshold": adapter.threshold_of(self.outputs),
                           "median": result.median, "min_size_mm3": result.min_size_mm3, "fpr": result.fpr,
                           "erosion_mm": result.erosion_mm,
                           "run_warnings": list(self.outputs.result.report.get("warnings", [])),
                           "progress": 100, "stage": "done", "ran_on": result.report["device"]})
        self.applied = self._post_processing()
        self._show_lesions()

    def _show_lesions(self) -> None:
        self.state.lesions = adapter.lesion_rows(self.outputs)
        self.state.summary = adapter.readout(self.logic, self.outputs)

    # ----- post-processing -----
    def _post_processing(self, threshold="from state") -> adapter.PostProcessing:
        min_size = _number(self.state.min_size_mm3, "Minimum lesion size", "mm³")
        erosion = _number(self.state.erosion_mm, "Brain-mask erosion", "mm")
        fpr = _number(self.state.fpr, "The healthy false-positive rate", "")
        if fpr is not None and not 0 < fpr < 1:
            raise UserError("The healthy false-positive rate must be a fraction between 0 and 1, e.g. 0.01.")
        if threshold == "from state":
            threshold = float(self.state.threshold)
        median = None if self.state.median is None else int(self.state.median)
        return adapter.PostProcessing(threshold, median, min_size, fpr, erosion)

    def request_rethreshold(self) -> None:
        """Apply the newest slider/median/size values once the loop is free; values that arrive
        while a re-threshold runs coalesce into the next one."""
        if self.outputs is None or self.state.running:
            return
        if self.rethreshold_task is None or self.rethreshold_task.done():
            self.rethreshold_task = create_task(self._apply_latest_post_processing())

    async def _apply_latest_post_processing(self) -> None:
        try:
            await asyncio.sleep(0)  # let pending slider messages update the state first
            while self.outputs is not None and (wanted := self._post_processing()) != self.applied:
                with self.state:
                    if wanted.fpr != self.applied.fpr and self.outputs.result.calibration is not None:
                        # a new false-positive rate means a new calibrated threshold, not the slider's
                        wanted = replace(wanted, threshold="calibrated")
                    adapter.rethreshold(self.logic, self.outputs, wanted)
                    threshold = adapter.threshold_of(self.outputs)
                    self.state.update({"threshold": threshold,
                                       "threshold_min": min(self.state.threshold_min, threshold),
                                       "threshold_max": max(self.state.threshold_max, threshold)})
                    self.applied = self._post_processing()
                    self._show_lesions()
                await asyncio.sleep(0)
        except Exception as error:  # noqa: BLE001
            self._show_error(error)

    # ----- lesions and downloads -----
    def jump_to_lesion(self, index: int) -> None:
        adapter.jump_to_lesion(self.logic, self.outputs, index)

    async def download(self, kind: str):
        try:
            if self.outputs is None:
                raise UserError("Nothing to download yet — run the analysis first.")
            folder = Path(tempfile.mkdtemp(dir=self.upload_dir, prefix="export-"))
            paths = adapter.export(self.logic, self.outputs, folder)
            if kind not in paths:
                raise UserError(f"The analysis did not produce a {adapter.DOWNLOAD_FILE_NAMES[kind]} file.")
            return self.server.protocol.addAttachment(paths[kind].read_bytes())
        except Exception as error:  # noqa: BLE001
            self._show_error(error)
            return None


def _number(value, what: str, unit: str) -> float | None:
    """A non-negative number typed in the page; empty is None (the model's default)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number{' of ' + unit if unit else ''}.") from None
    if number < 0:
        raise UserError(f"{what} cannot be negative.")
    return number
