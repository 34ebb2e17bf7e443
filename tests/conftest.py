from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_CSV = REPO_ROOT.parent / "shared" / "data" / "preference_pairs.csv"
DATA_CSV = Path(os.environ.get("ARENA_DATA_CSV", DEFAULT_DATA_CSV))


@pytest.fixture(scope="session")
def data_csv() -> Path:
    assert DATA_CSV.is_file(), (
        f"{DATA_CSV} is missing: the tests use the real preference data in ../shared/data (or set ARENA_DATA_CSV)"
    )
    return DATA_CSV
