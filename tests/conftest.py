import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# CI and fresh clones lay shared/ beside the project
SHARED_TRACES = Path(os.environ.get("VMEMLAB_SHARED_TRACES", ROOT.parent / "shared" / "traces"))


@pytest.fixture
def data_dir() -> Path:
    return DATA
