"""Installing what a model needs into Slicer's own Python, with the user's consent."""

import shutil

import slicer

from UADBrainMRML.dependencies import (TORCH, DependencyError, brain_extractor_modules, missing_modules, pip_requirement,
                                       required_modules)


def pythonSlicerExecutable() -> str:
    """Slicer's own Python interpreter (a launcher on Slicer's PATH), which runs the engine in the background."""
    executable = shutil.which("PythonSlicer")
    if not executable:
        raise DependencyError("PythonSlicer was not found on the PATH of this Slicer — reinstall Slicer.")
    return executable


def ensurePythonPackages(modules, purpose: str) -> bool:
    """Install what is missing of ``modules`` into Slicer's Python if the user agrees; False if not."""
    missing = missing_modules(modules)
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"{purpose} needs the Python packages {', '.join(missing)}, which this Slicer does not have yet.\n\n"
            "Download and install them now? This can take several minutes.", "UADBrain: install Python packages"):
        return False
    # PyTorch (listed first) through the PyTorch extension, which picks the build for this GPU driver
    if TORCH in missing:
        installTorch()
    for module in missing:
        if module != TORCH:
            slicer.util.pip_install(pip_requirement(module))
    return True


def ensureRunPackages(runs, brainMaskMethod: str | None, purpose: str) -> bool:
    """What each ``(bundle, contrasts)`` of ``runs`` needs, and the brain extractor of
    ``brainMaskMethod`` (None: a brain mask is given), installed with the user's consent."""
    needed = [module for bundle, contrasts in runs for module in required_modules(bundle, contrasts)]
    if brainMaskMethod is not None:
        needed += brain_extractor_modules(brainMaskMethod)
    return ensurePythonPackages(list(dict.fromkeys(needed)), purpose)


def installTorch() -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise DependencyError("PyTorch is installed through Slicer's PyTorch extension, which is missing — install "
                              "'PyTorch' in View > Extensions Manager, restart Slicer and try again.") from None
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
        raise DependencyError("PyTorch was not installed — install it from the PyTorch Utils module and try again.")
