"""``uadbrain models``: the bundled models."""

from __future__ import annotations

from ..bundle import find_bundle, list_bundled


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the bundled models")
    parser.set_defaults(func=run_models)


def run_models(args) -> int:
    for index, name in enumerate(list_bundled()):
        bundle = find_bundle(name)
        marker = " (default)" if index == 0 else ""
        print(f"{name}{marker}: {bundle.summary()}")
        print(f"    {bundle.metadata.get('description', '')}")
    return 0
