"""The gateway imports only api/ and shared/: its image ships without workers/, torch or vLLM."""

import ast
import subprocess
import sys

from shared.settings import REPO_ROOT

FORBIDDEN = ("workers", "torch", "vllm", "transformers", "peft", "lightgbm", "sklearn")


def test_the_gateway_app_imports_no_worker_code():
    code = (
        "import sys\n"
        "import api.main, api.routes.main, shared.arena_csv, shared.dataset_store, shared.adapter_store, "
        "shared.celery_client\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_no_module_under_api_or_shared_names_workers():
    offenders = []
    for folder in ("api", "shared"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "workers":
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
                if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "workers" for alias in node.names):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not offenders
