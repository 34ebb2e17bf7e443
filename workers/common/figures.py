"""What every figure the workers draw shares: user text shown as text (never TeX), labels cut to a size, one save.

Model names, sources and titles come from users' files. matplotlib reads a string with two unescaped `$` as
mathtext (and with text.usetex as LaTeX): a name such as `$\\notacommand$` fails the whole figure. Every `$` is
escaped (`\\$` shows a dollar sign and starts no math), and usetex is off while a figure is drawn and saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LABEL_CHARS = 48  # a tick label or legend entry longer than this is cut: the CSV and JSON keep the whole name


def figure_text(text: object, *, limit: int | None = LABEL_CHARS) -> str:
    """`text` as matplotlib shows it literally: `$` escaped, cut to `limit` characters (None: whole)."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


@contextmanager
def new_figure(*, figsize: tuple[float, float]) -> Iterator[tuple[object, object]]:
    """A (figure, axis) on the Agg backend with usetex off, closed when the block ends (also on an error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.usetex": False}):
        figure, axis = plt.subplots(figsize=figsize)
        try:
            yield figure, axis
        finally:
            plt.close(figure)


def save_png(figure, path: Path, *, dpi: int = 110) -> Path:
    """Write `figure` as a PNG, atomically (inside new_figure's block)."""
    from shared.storage import atomic_writer

    with atomic_writer(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return Path(path)
