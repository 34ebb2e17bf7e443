"""The compose `monitoring` profile: Prometheus's config is valid (promtool, where installed), it scrapes the
gateway, the workers and Flower, and every metric the Grafana dashboard asks for is one the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from shared.settings import REPO_ROOT

COMPOSE_DIR = REPO_ROOT / "compose"


def test_prometheus_scrapes_the_gateway_the_workers_and_flower():
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["arena-gateway"] == ["api:8000"] and "worker-cpu:9101" in targets["arena-workers"]
    assert targets["flower"] == ["flower:5555"]
    services = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"] == services["grafana"]["profiles"]


def test_promtool_accepts_the_config(tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    secrets = tmp_path / "arena"
    secrets.mkdir()
    text = (COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text().replace("@FLOWER_USER@", "admin")
    text = text.replace("/tmp/arena/", f"{secrets}/")
    for name in ("api_key", "flower_password"):
        (secrets / name).write_text("x")
    (secrets / "prometheus.yml").write_text(text)
    checked = subprocess.run(["promtool", "check", "config", str(secrets / "prometheus.yml")], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_asks_only_for_exported_metrics():
    dashboard = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "arena.json").read_text())
    asked = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\barena_[a-z_]+", target["expr"])
    }
    exported = (REPO_ROOT / "api" / "metrics.py").read_text() + (
        REPO_ROOT / "workers" / "common" / "metrics.py"
    ).read_text()
    missing = {name for name in asked if f'"{name}"' not in exported}
    assert not missing, missing
