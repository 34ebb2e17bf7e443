"""The real text encoder on pathological cells (issue 20): each call bounded, every embedding usable.

tests/unit/test_fuzz_cells.py checks that what the encoder reads is cut before tokenizing without changing a token;
this runs the encoder itself on the cells a tokenizer finds hardest.
"""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.model

MIB = 1 << 20
CALL_SECONDS = 5.0
CELLS = {
    "newlines": "\n" * MIB,
    "empty_turns_joined": "\n\n".join([""] * 10_000),
    "spaces": " " * MIB,
    "no_whitespace": "a" * MIB,
    "stars": "*" * MIB,
    "cjk": "\u4e2d" * MIB,
    "combining": "e" + "\u0301" * 200_000,
    "control": "".join(chr(code) for code in range(32)) * (MIB // 32),
    "special_tokens": "[SEP][CLS]" * (MIB // 10),
}


@pytest.fixture(scope="module")
def encoder(model_settings):
    from workers.predictor.sentence_encoder import TextEncoder

    return TextEncoder(model_settings.text_encoder_path)


@pytest.mark.parametrize("name", CELLS)
def test_encoder_reads_a_pathological_cell_in_bounded_time(encoder, name):
    started = time.perf_counter()
    vectors = encoder.encode([CELLS[name], "A short ordinary answer."])
    elapsed = time.perf_counter() - started
    assert elapsed < CALL_SECONDS, f"encoding {name} took {elapsed:.1f}s"
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
