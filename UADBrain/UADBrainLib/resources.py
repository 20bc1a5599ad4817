"""Where the bundled resources (models, example) are.

In a source checkout and in Slicer they sit beside the engine, in ``UADBrain/Resources``; a
non-editable pip install copies them into the package as ``UADBrainLib/Resources``.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
RESOURCES_DIR = next((p for p in (_HERE / "Resources", _HERE.parent / "Resources") if p.is_dir()),
                     _HERE.parent / "Resources")
MODELS_DIR = RESOURCES_DIR / "Models"
EXAMPLE_DIR = RESOURCES_DIR / "Example"
