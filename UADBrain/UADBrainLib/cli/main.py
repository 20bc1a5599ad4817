"""The ``uadbrain`` command.

Subcommands live in their own modules, each exposing ``add_parser(subparsers)`` that registers
its arguments and sets ``func(args) -> int``: :data:`COMMAND_MODULES` here, and other packages'
through the :data:`COMMAND_ENTRY_POINTS` group.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from importlib.metadata import entry_points

from .. import __version__
from ..device import allow_mps_operator_fallback
from ..errors import UADBrainError

# the modules of this package that add a subcommand, in the order --help lists them
COMMAND_MODULES = ("detect", "models", "brainmask", "train", "rescore", "calibrate", "evaluate", "validation-set", "grids",
                   "bench")
# commands of other packages (the web app's ``serve``) register under this entry-point group, so
# that the engine never imports a front end
COMMAND_ENTRY_POINTS = "uadbrain.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uadbrain", description="Unsupervised anomaly detection in brain MRI.")
    parser.add_argument("--version", action="version", version=f"uadbrain {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{module_name.replace('-', '_')}").add_parser(subparsers)
    for entry_point in entry_points(group=COMMAND_ENTRY_POINTS):
        entry_point.load()(subparsers)
    return parser


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that unfinished outputs are cleaned up on the way out."""


def _stop(signal_number, frame):
    raise Stopped()


def main(argv=None) -> int:
    allow_mps_operator_fallback()
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    try:
        return args.func(args)
    except UADBrainError as error:
        print(f"uadbrain: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Stopped)
        print(f"uadbrain: stopped ({'SIGTERM' if terminated else 'interrupted'}); no partial output was left",
              file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
