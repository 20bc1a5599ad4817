"""Shared test fixtures: the engine on sys.path, the optional shared data folder."""

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
