"""``uadbrain serve``: the UADBrain web front end on trame-slicer."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def build_app(server=None):
    """Create the trame server, the Slicer scene with its views, the page and its behaviour."""
    from trame.app import get_server
    from trame_slicer.core import LayoutManager, SlicerApp
    from trame_slicer.rca_view import register_rca_factories

    from .session import Session
    from .ui import build_ui
    from .viewer import LAYOUT_ID, three_slice_layout

    server = get_server(server, client_type="vue3")
    slicer_app = SlicerApp()
    register_rca_factories(slicer_app.view_manager, server)
    layout_manager = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
    layout_manager.register_layout(LAYOUT_ID, three_slice_layout())
    session = Session(server, slicer_app)
    build_ui(server, layout_manager, session.download_trigger)
    layout_manager.set_layout(LAYOUT_ID)
    return server, session


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False) -> None:
    if not is_loopback(host):
        print(f"WARNING: serving on {host}:{port} makes the app and the images you upload reachable "
              "from other machines; it has no authentication.", file=sys.stderr)
    # Headless servers have no X display: render off screen with EGL unless told otherwise.
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    server, _session = build_app()
    server.start(host=host, port=port, open_browser=open_browser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s, local only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument("--open-browser", action="store_true", help="open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    from UADBrainLib.device import allow_mps_operator_fallback

    allow_mps_operator_fallback()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("UADBrainWeb").setLevel(logging.INFO)
    serve(args.host, args.port, args.open_browser)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uadbrain serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
