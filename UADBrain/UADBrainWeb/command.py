"""``uadbrain serve``: start the web app (needs ``pip install ".[web]"``); registered with the
``uadbrain`` command through the ``uadbrain.commands`` entry point (pyproject.toml)."""

from __future__ import annotations

from UADBrainLib.errors import UADBrainError


def add_parser(subparsers) -> None:
    from UADBrainWeb.app import add_arguments

    parser = subparsers.add_parser("serve", help="start the web app in the browser (needs the web extra)",
                                   description="Serve the UADBrain web app (trame-slicer). Local only by "
                                               "default; binding another address is printed as a warning.")
    add_arguments(parser)
    parser.set_defaults(func=run_serve)


def run_serve(args) -> int:
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        raise UADBrainError("the web app needs its extra packages — install them as README's "
                            "'Web app' section says (pip install -e \".[web]\" and slicer-layer-dm).") from None
    from UADBrainWeb.app import run

    return run(args)
