"""Shared test fixtures: the engine on sys.path, the optional shared data folder, the brain masks
of its raw heads."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "UADBrain"))

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests using it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the evaluation data at {SHARED_DATA} (not part of a fresh clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ixi_heads(shared_data) -> dict:
    """``{path: (brain mask, method)}``: the raw IXI T1 heads with the brain mask that detect's
    automatic path finds for each — found once per test run (half a minute a head on two cores) for
    every test that needs them."""
    import SimpleITK as sitk

    from UADBrainLib.inference.brain_extraction import brain_mask_for

    return {path: brain_mask_for(sitk.ReadImage(str(path)), None, contrast="t1")
            for path in sorted((shared_data / "healthy" / "ixi_small").glob("*_T1.nii.gz"))}
