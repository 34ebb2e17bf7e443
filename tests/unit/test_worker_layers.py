"""Worker layers point one way, jobs → predictor → judge → common, with reports beside: a lower layer never imports
a higher one, and neither the predictor nor the judge imports reports.

Imports inside functions count too: a lazy import still ties the layers together.
"""

import ast

import pytest

from shared.settings import REPO_ROOT

# Each folder under workers/, and the workers modules it must never import (they sit above it).
ABOVE_JUDGE = ("workers.predictor", "workers.reports", "workers.jobs", "workers.training", "workers.synth")
FORBIDDEN = {
    "common": ("workers.judge", *ABOVE_JUDGE),
    "judge": ABOVE_JUDGE,
    # Reports read what the predictor wrote; a predictor that imported them would drag figures into every predict.
    "predictor": ("workers.reports", "workers.jobs", "workers.training", "workers.synth"),
    "reports": ("workers.jobs", "workers.training", "workers.synth"),
}


def imported_modules(source: str, package: str):
    """(line, module) for every import in a module's source, relative imports resolved against its package."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from workers import reports`
                yield node.lineno, f"{module}.{alias.name}"


def package_of(path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).parts[:-1])


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer):
    folder = REPO_ROOT / "workers" / layer
    paths = sorted(folder.rglob("*.py"))
    assert paths, f"no modules under {folder}"
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in paths
        for line, module in imported_modules(path.read_text(), package_of(path))
        if any(module == above or module.startswith(above + ".") for above in FORBIDDEN[layer])
    ]
    rule = "layers go jobs → predictor → judge → common (reports beside), never back"
    assert not offenders, f"{rule}:\n" + "\n".join(offenders)


def test_the_guard_sees_lazy_and_relative_imports():
    source = "def f():\n    from ..reports import evaluate\n    from workers import jobs\n"
    found = list(imported_modules(source, "workers.judge"))
    assert (2, "workers.reports") in found and (3, "workers.jobs") in found


def test_every_workers_package_has_a_place_in_the_layers():
    """A new package under workers/ has to be placed in the layers here, or this guard would not see it."""
    placed = {*FORBIDDEN, "jobs", "training", "synth", "cli", "sweeper"}
    packages = {path.parent.name for path in (REPO_ROOT / "workers").glob("*/__init__.py")}
    assert packages <= placed, f"packages the layer guard does not know: {sorted(packages - placed)}"
    assert not (REPO_ROOT / "workers" / "stacking").exists(), "workers/stacking was split into predictor/ and reports/"
