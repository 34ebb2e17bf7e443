"""Worker layers point one way, jobs → stacking → judge → common: a lower layer never imports a higher one.

Imports inside functions count too: a lazy import still ties the layers together.
"""

import ast

import pytest

from shared.settings import REPO_ROOT

# Each folder under workers/, and the workers modules it must never import (they sit above it).
FORBIDDEN = {
    "common": ("workers.judge", "workers.predictor", "workers.stacking", "workers.jobs", "workers.training",
               "workers.synth"),
    "judge": ("workers.predictor", "workers.stacking", "workers.jobs", "workers.training", "workers.synth"),
    "predictor": ("workers.stacking", "workers.jobs"),
    "stacking": ("workers.jobs",),
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
            for alias in node.names:  # `from workers import stacking`
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
    assert not offenders, "layers go jobs → stacking → judge → common, never back:\n" + "\n".join(offenders)


def test_the_guard_sees_lazy_and_relative_imports():
    source = "def f():\n    from ..stacking import calibration\n    from workers import jobs\n"
    found = list(imported_modules(source, "workers.judge"))
    assert (2, "workers.stacking") in found and (3, "workers.jobs") in found
