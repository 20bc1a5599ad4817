"""UADBrain web front end (trame-slicer). Start it with ``uadbrain serve`` or ``python -m UADBrainWeb``."""

from .app import DEFAULT_HOST, DEFAULT_PORT, main, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "main", "serve"]
