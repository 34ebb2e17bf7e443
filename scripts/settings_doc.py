"""Write docs/settings.md from the Settings fields (name, default, meaning); `--check` fails when it is stale.

PYTHONPATH=. .venv-api/bin/python scripts/settings_doc.py          # rewrite docs/settings.md
PYTHONPATH=. .venv-api/bin/python scripts/settings_doc.py --check  # exit 1 if it differs
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared.settings import REPO_ROOT, Settings

DOC_PATH = REPO_ROOT / "docs" / "settings.md"

HEADER = """# Settings

Every setting is an environment variable of the same name (or a line in `.env`), read by the gateway and
the workers alike through one pydantic-settings class, `shared/settings.py`. This page is generated from
that class: edit the field's `description` there and run `scripts/settings_doc.py` (a unit test fails when
this page and the class disagree).

| variable | default | meaning |
|---|---|---|
"""


def _default(field, repo_root: Path = REPO_ROOT) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        # Lexical, never resolve(): where ../shared is a symbolic link, resolving would print the host path
        # it points to, and the page would differ from one checkout to the next.
        try:
            return f"`{value.relative_to(repo_root)}` (in the repository)"
        except ValueError:
            pass
        try:  # beside the repository, e.g. ../shared/data
            return f"`../{value.relative_to(repo_root.parent)}` (beside the repository)"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{value}`"


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {_default(field)} | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC_PATH.is_file() or DOC_PATH.read_text() != text:
            print(f"{DOC_PATH} is stale; run scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
