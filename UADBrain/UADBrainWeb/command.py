"""``uadbrain serve``: start the web app (needs ``pip install ".[web]"``); registered with the
``uadbrain`` command through the ``uadbrain.commands`` entry point (pyproject.toml)."""

from __future__ import annotations

import importlib.util

from UADBrainLib.errors import UADBrainError


def add_parser(subparsers) -> None:
    from UADBrainWeb.app import add_arguments

    parser = subparsers.add_parser("serve", help="start the web app in the browser (needs the web extra)",
                                   description="Serve the UADBrain web app (trame-slicer). Local only by "
                                               "default; binding another address is printed as a warning.")
    add_arguments(parser)
    parser.set_defaults(func=run_serve)


# import name → what to install; trame-slicer imports slicer-layer-dm only when it draws a view
WEB_PACKAGES = {"trame_slicer": 'pip install ".[web]"',
                "slicer_layer_dm": "pip install --no-deps slicer-layer-dm==2.0.0"}


def run_serve(args) -> int:
    missing = [install for module, install in WEB_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UADBrainError(f"the web app needs packages that are not installed — run: {'; '.join(missing)} "
                            "(README, 'Web app').")
    from UADBrainWeb.app import run

    return run(args)
