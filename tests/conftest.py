from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_CSV = REPO_ROOT.parent / "shared" / "data" / "preference_pairs.csv"


@pytest.fixture(scope="session")
def data_csv() -> Path:
    assert DATA_CSV.is_file(), f"{DATA_CSV} is missing: the tests use the real preference data in ../shared/data"
    return DATA_CSV
