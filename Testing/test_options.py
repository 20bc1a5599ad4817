"""One options object end to end: ``DetectOptions`` holds every run parameter and its default, and
the CLI, the Slicer panel's parameter node and the web app take their defaults from it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from UADBrainLib.errors import InputError
from UADBrainLib.inference.calibration import DEFAULT_FPR
from UADBrainLib.inference.options import DEFAULTS, DetectOptions

SOURCE = Path(__file__).resolve().parent.parent / "UADBrain"


def test_options_travel_as_json_and_back():
    options = DetectOptions(threshold="otsu", fpr=0.002, median=3, min_size_mm3=7.0, erosion_mm=2.0,
                            device="cpu", check_contrast=False)
    assert DetectOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    with pytest.raises(InputError, match="unknown detect option 'frp'"):
        DetectOptions.from_dict({"frp": 0.01})


def test_the_model_defaults_apply_in_one_place():
    assert DetectOptions().postprocessing({"median": 3, "min_size_mm3": 20.0}) == (3, 20.0, 0.0, DEFAULT_FPR)
    assert DetectOptions().postprocessing({"fpr": 0.002}) == (5, 0.0, 0.0, 0.002)  # the model's operating point
    assert DetectOptions(median=0, erosion_mm=2, fpr=0.05).postprocessing(
        {"median": 3, "erosion_mm": 1.0, "fpr": 0.002}) == (0, 0.0, 2.0, 0.05)


def test_the_cli_gives_the_engine_defaults_and_what_was_typed():
    from UADBrainLib.cli.main import build_parser
    from UADBrainLib.cli.options import detect_options

    parser = build_parser()
    assert detect_options(parser.parse_args(["detect", "--example", "--out", "x"])) == DEFAULTS
    typed = detect_options(parser.parse_args(["detect", "--example", "--out", "x", "--fpr", "0.002",
                                              "--erosion-mm", "3", "--no-contrast-check", "--device", "cpu"]))
    assert typed == DetectOptions(fpr=0.002, erosion_mm=3.0, check_contrast=False, device="cpu")


# Changes the engine's default false-positive rate before anything imports it, in a fresh process,
# and reads what each front end would show: a run leaves the rate to the model (its operating point,
# this default for a model without one); the CLI help and the panel's Tune field show the default.
FOLLOW_THE_DEFAULT = """
import dataclasses, sys, types
sys.path.insert(0, {source!r})
from UADBrainLib.inference import calibration
calibration.DEFAULT_FPR = 0.0421
from UADBrainLib.cli.main import build_parser
from UADBrainLib.cli.options import detect_options
parser = build_parser()
detect_help = parser._subparsers._group_actions[0].choices["detect"].format_help()
cli = detect_options(parser.parse_args(["detect", "--example", "--out", "x"])).fpr
from UADBrainWeb import adapter
web = adapter.PostProcessing(None).options("cpu").fpr
import slicer  # the panel's parameters, with stand-ins for Slicer's parameter node wrapper
wrapper = types.ModuleType("slicer.parameterNodeWrapper")
wrapper.parameterPack = dataclasses.dataclass
wrapper.parameterNodeWrapper = lambda cls: cls
wrapper.Choice = wrapper.Minimum = wrapper.WithinRange = lambda *args: "validator"
sys.modules["slicer.parameterNodeWrapper"] = wrapper
from UADBrainSlicer.parameters import RunOptions
from UADBrainSlicer.texts import HELP_TEXT
print(cli, web, "0.0421" in " ".join(detect_help.split()), RunOptions().fpr, RunOptions().forApply().fpr,
      "operating point" in HELP_TEXT)
"""


def test_a_changed_default_reaches_the_cli_the_web_app_and_the_slicer_panel():
    pytest.importorskip("slicer", reason="the panel's parameters need slicer-core's MRML classes")
    code = FOLLOW_THE_DEFAULT.format(source=str(SOURCE))
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["None", "None", "True", "0.0421", "None", "True"]


def _parameter_defaults(path: Path, class_name: str) -> dict[str, str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {n.target.id: ast.unparse(n.value) for n in cls.body if isinstance(n, ast.AnnAssign) and n.value}


def test_the_slicer_parameter_node_takes_its_defaults_from_the_engine():
    """The panel cannot be imported outside Slicer: its parameter node class is read instead."""
    defaults = _parameter_defaults(SOURCE / "UADBrainSlicer" / "parameters.py", "RunOptions")
    assert defaults["device"] == "DEFAULTS.device"
    for name, key in (("median", "median"), ("minSizeMm3", "min_size_mm3"), ("erosionMm", "erosion_mm"),
                      ("fpr", "fpr")):
        assert f"MODEL_DEFAULT_POSTPROCESSING['{key}']" in defaults[name], (name, defaults[name])


def test_the_web_state_starts_from_the_engine_defaults():
    source = (SOURCE / "UADBrainWeb" / "session.py").read_text(encoding="utf-8")
    for name in ("median", "min_size_mm3", "fpr", "erosion_mm"):
        assert f'"{name}": adapter.DEFAULTS.{name},' in source, name


# Slicer's parameter node wrapper is not in slicer-core: stand-ins that keep the classes' logic
PANEL_PARAMETERS = """
import dataclasses, json, sys, types
sys.path.insert(0, {source!r})
import slicer
wrapper = types.ModuleType("slicer.parameterNodeWrapper")
wrapper.parameterPack = dataclasses.dataclass
wrapper.parameterNodeWrapper = lambda cls: cls
wrapper.Choice = wrapper.Minimum = wrapper.WithinRange = lambda *args: "validator"
sys.modules["slicer.parameterNodeWrapper"] = wrapper
from UADBrainLib.inference.options import DEFAULTS, DetectOptions
from UADBrainSlicer.parameters import RunOptions

class Result:
    median, min_size_mm3, erosion_mm, fpr = 3, 12.0, 2.0, 0.004

options = RunOptions()
checks = {{"apply_defaults": options.forApply() == DEFAULTS}}
options.device, options.fpr = "cpu", 0.002
checks["apply_chosen"] = options.forApply() == DetectOptions(device="cpu")  # the rate is tuned after a run
options.ageYears = 64.0
checks["apply_age"] = options.forApply() == DetectOptions(device="cpu", age=64.0)
options.ageYears = 0.0  # the spin box's "unknown"
options.showResult(Result)
checks["tune_follows_result"] = options.tuneSettings() == RunOptions.resultSettings(Result)
checks["tune_values"] = options.tuneSettings() == {{"median": 3, "minSizeMm3": 12.0, "erosionMm": 2.0, "fpr": 0.004}}
print(json.dumps(checks))
"""


def test_the_slicer_run_options_make_the_engines_options():
    pytest.importorskip("slicer", reason="the panel's parameters need slicer-core's MRML classes")
    completed = subprocess.run([sys.executable, "-c", PANEL_PARAMETERS.format(source=str(SOURCE))],
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout) == {"apply_defaults": True, "apply_chosen": True, "apply_age": True,
                                            "tune_follows_result": True, "tune_values": True}
