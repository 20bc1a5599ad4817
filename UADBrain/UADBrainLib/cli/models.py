"""``uadbrain models``: the bundled models."""

from __future__ import annotations

from ..bundle import ANOMALY_TASK, BUNDLED_MODELS_DIR, find_bundle, list_bundled, read_bundle


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the bundled models")
    parser.set_defaults(func=run_models)


def run_models(args) -> int:
    for index, name in enumerate(list_bundled()):
        bundle = find_bundle(name)
        marker = " (default)" if index == 0 else ""
        print(f"{name}{marker}: {bundle.summary()}")
        print(f"    {bundle.metadata.get('description', '')}")
    helpers = [read_bundle(path) for path in sorted(BUNDLED_MODELS_DIR.iterdir())
               if (path / "metadata.json").is_file() and path.name not in list_bundled()]
    helpers = [bundle for bundle in helpers if bundle.metadata.get("task", ANOMALY_TASK) != ANOMALY_TASK]
    if helpers:
        print("\nhelper models detect runs by itself:")
        for bundle in helpers:
            print(f"{bundle.name} ({bundle.metadata['task'].replace('_', ' ')}): {bundle.metadata.get('title', '')}")
    return 0
