"""Tiny Kaggle arena CSVs built in code, so tests need no external data."""

from __future__ import annotations

import csv
import io
import json

COLUMNS = ["id", "model_a", "model_b", "prompt", "response_a", "response_b"]
LABELS = ["winner_model_a", "winner_model_b", "winner_tie"]

PROMPTS = [
    ("What is the capital of France?", "Paris is the capital of France.", "I think it might be Lyon."),
    ("Name a prime number.", "7 is a prime number.", "Seven."),
    ("Say hello in Spanish.", "Hola.", "Hello in Spanish is 'hola', as in 'Hola, amigo'."),
    ("What is 2 + 2?", "5", "2 + 2 = 4."),
    ("Give me a colour.", "Blue.", "Green, like grass."),
    ("Translate 'cat' to German.", "Katze.", "Hund."),
    ("Is water wet?", "Yes, in everyday language water makes things wet.", "No."),
    (
        "Write a haiku about rain.",
        "Rain taps on the roof / soft drums in the quiet night / the garden drinks deep",
        "Rain is wet.",
    ),
]


def arena_csv(
    rows: int = 3, *, labelled: bool = True, start_id: int = 1000, models: tuple[str, ...] | None = None
) -> bytes:
    """`rows` rows cycling through PROMPTS, ids start_id, start_id+1, …; labels rotate A, B, tie. With `models`,
    row i is a battle of models[i % n] against models[(i + 1) % n] (else the model columns are empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS + (LABELS if labelled else []))
    for index in range(rows):
        prompt, response_a, response_b = PROMPTS[index % len(PROMPTS)]
        model_a, model_b = (models[index % len(models)], models[(index + 1) % len(models)]) if models else ("", "")
        row = [str(start_id + index), model_a, model_b, json.dumps([prompt]), json.dumps([response_a]),
               json.dumps([response_b])]  # fmt: skip
        if labelled:
            row += ["1" if index % 3 == column else "0" for column in range(3)]
        writer.writerow(row)
    return buffer.getvalue().encode()
