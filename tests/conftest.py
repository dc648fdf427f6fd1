"""Shared test fixtures: quiet TensorFlow, the shared data folder, small synthetic signals."""
from pathlib import Path

import pytest

from pipeline.quiet import quiet_tensorflow

quiet_tensorflow()

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real recordings beside the repository; tests that need them skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (../shared/data is absent)")
    return SHARED_DATA
