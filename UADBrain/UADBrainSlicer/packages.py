"""Installing what a model needs into Slicer's own Python, with the user's consent."""

import shutil

import slicer

from UADBrainMRML.dependencies import TORCH, DependencyError, missing_modules, pip_requirement


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


def installTorch() -> None:
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise DependencyError("PyTorch is installed through Slicer's PyTorch extension, which is missing — install "
                              "'PyTorch' in View > Extensions Manager, restart Slicer and try again.") from None
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
        raise DependencyError("PyTorch was not installed — install it from the PyTorch Utils module and try again.")
