#!/usr/bin/env bash
# Builds the compose images with buildah on a local debootstrap base, starts the stack from them, runs the REST smoke test.
#
# For machines without a Docker engine or a reachable container registry (`make container-check`):
#   1. a bookworm root filesystem (debootstrap, cached in CACHE_DIR) imported as arena-pref-bookworm:local, and
#      on it arena-pref-python:3.11-local, a stand-in for python:3.11-slim (scripts/containers/);
#   2. the images compose names (arena-pref-api, arena-pref-proxy, arena-pref-worker-cpu, arena-pref-worker-gpu) built
#      from the compose Dockerfiles, unchanged, with `buildah bud --build-arg BASE_IMAGE=...`;
#   3. redis-server (from the bookworm image), the gateway, the proxy in front of it, one CPU worker and Flower started
#      from those images with `buildah run --network host`, one shared volume folder, the start scripts compose uses;
#      then scripts/container_smoke.py through the proxy; then everything it started is stopped (by pid) and its
#      containers removed.
#
# Settings (environment): CHECK_API_PORT=18000 (the proxy) CHECK_API_INTERNAL_PORT=18001 (the gateway behind it)
# CHECK_FLOWER_PORT=15555 CHECK_REDIS_PORT=16379 (clear of a dev stack on 8000/8001/5555/6379); CHECK_GPU_IMAGE=1 (0: skip building the multi-GB GPU image); LOCAL_WHEELS_DIR=/opt/wheels
# (a folder holding a torch 2.13.0+cpu wheel, used instead of the PyTorch CPU index when present);
# EXTRA_CA_DIR=/usr/local/share/ca-certificates (*.crt the local base trusts); CACHE_DIR=var/containers;
# CONTAINER_CHECK_DATA (a Kaggle arena CSV for the smoke test; default ../shared/data/preference_pairs.csv if
# present, else built-in rows); CHECK_REBUILD_BASE=1 (redo debootstrap and the base).
# Needs root, buildah, podman (for `podman import`) and debootstrap; as root it installs them with apt-get.
set -euo pipefail
ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$ROOT"
CACHE_DIR="${CACHE_DIR:-$ROOT/var/containers}"
API_PORT="${CHECK_API_PORT:-18000}"
API_INTERNAL_PORT="${CHECK_API_INTERNAL_PORT:-18001}"
FLOWER_PORT="${CHECK_FLOWER_PORT:-15555}"
REDIS_PORT="${CHECK_REDIS_PORT:-16379}"
BUILD_GPU="${CHECK_GPU_IMAGE:-1}"
LOCAL_WHEELS_DIR="${LOCAL_WHEELS_DIR:-/opt/wheels}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS_IMAGE=localhost/arena-pref-bookworm:local
BASE_IMAGE=localhost/arena-pref-python:3.11-local
# The names docker-compose.yml gives the images (tests/api/test_container_check.py keeps them in step).
API_IMAGE=arena-pref-api
PROXY_IMAGE=arena-pref-proxy
CPU_IMAGE=arena-pref-worker-cpu
GPU_IMAGE=arena-pref-worker-gpu
ROOTFS_PACKAGES=ca-certificates,netbase,tzdata,python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,redis-server
RUN_DIR="$CACHE_DIR/run"
STARTED_PIDS=()
CONTAINERS=()
T0=$SECONDS

say() { echo "container-check [$(( SECONDS - T0 ))s]: $*" >&2; }

timed() {  # label, command...: runs the command, prints how long it took
  local label="$1" start=$SECONDS; shift
  "$@"
  say "$label: $(( SECONDS - start ))s"
}

cleanup() {
  local status=$? pid container
  trap - EXIT INT TERM
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  done
  [ ${#STARTED_PIDS[@]} -eq 0 ] || say "stopped pids ${STARTED_PIDS[*]}"
  for container in "${CONTAINERS[@]}"; do
    buildah rm "$container" >/dev/null 2>&1 || true
  done
  [ ${#CONTAINERS[@]} -eq 0 ] || say "removed containers ${CONTAINERS[*]}"
  if [ "$status" -eq 0 ]; then say "GREEN in $(( SECONDS - T0 ))s"; else say "FAILED (exit $status); logs in $RUN_DIR"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v runc >/dev/null || missing+=(runc)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ]; then
    say "missing ${missing[*]}: as root, apt-get install -y buildah podman debootstrap runc"
    exit 2
  fi
  say "installing ${missing[*]} (apt-get install -y buildah podman debootstrap runc)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah podman debootstrap runc >/dev/null
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# A bookworm root filesystem as an image: debootstrap once into CACHE_DIR, then `podman import` of its tarball.
make_rootfs_image() {
  local rootfs="$CACHE_DIR/rootfs-bookworm"
  if [ "${CHECK_REBUILD_BASE:-0}" = 1 ]; then rm -rf "$rootfs"; fi
  if [ ! -f "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    say "debootstrap bookworm into $rootfs"
    debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$rootfs" "$DEBIAN_MIRROR" \
      >"$CACHE_DIR/debootstrap.log" 2>&1 || { say "debootstrap failed: see $CACHE_DIR/debootstrap.log"; exit 1; }
    # As in the slim images: no package caches or indexes (apt-get update first to install more).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.complete"
  fi
  tar --numeric-owner --exclude=./.complete -C "$rootfs" -cf - . | podman import --quiet - "$ROOTFS_IMAGE" >/dev/null
}

make_base_image() {
  local context="$CACHE_DIR/base-context"
  rm -rf "$context" && mkdir -p "$context/certs"
  cp scripts/containers/python-base.Containerfile "$context/Containerfile"
  if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then cp "$EXTRA_CA_DIR"/*.crt "$context/certs/"; fi
  buildah bud --isolation chroot --layers --build-arg ROOTFS_IMAGE="$ROOTFS_IMAGE" \
    -f "$context/Containerfile" -t "$BASE_IMAGE" "$context" >"$CACHE_DIR/build-base.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/build-base.log" >&2; say "building $BASE_IMAGE failed: see $CACHE_DIR/build-base.log"; exit 1; }
}

build() {  # image, dockerfile, extra buildah arguments...
  local image="$1" dockerfile="$2"; shift 2
  buildah bud --isolation chroot --layers --build-arg BASE_IMAGE="$BASE_IMAGE" "$@" \
    -f "$dockerfile" -t "$image" . >"$CACHE_DIR/build-$image.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/build-$image.log" >&2; say "building $image failed: see $CACHE_DIR/build-$image.log"; exit 1; }
}

image_size() { buildah images --format '{{.Size}}' "$1" | head -1; }

# Start `buildah run` of a fresh container from IMAGE in its own session (so cleanup stops its whole tree).
start() {  # name, image, buildah-run options..., --, command...
  local name="$1" image="$2" container options=(); shift 2
  while [ "$1" != -- ]; do options+=("$1"); shift; done
  container="arena-check-$name-$$"
  buildah rm "$container" >/dev/null 2>&1 || true
  buildah from --quiet --name "$container" "$image" >/dev/null
  CONTAINERS+=("$container")
  setsid buildah run --isolation chroot --network host "${options[@]}" "$container" "$@" \
    >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  STARTED_PIDS+=("$!")
  say "started $name from $image (pid $!, log $RUN_DIR/$name.log)"
}

# Triton compiles a small C extension (its CUDA driver stub) with the image's compiler at the first kernel launch:
# build the same kind of file in the image, which needs no GPU.
check_c_extension_builds() {  # image
  local container="arena-check-cc-$$"
  buildah rm "$container" >/dev/null 2>&1 || true
  buildah from --quiet --name "$container" "$1" >/dev/null
  CONTAINERS+=("$container")
  # shellcheck disable=SC2016  # expanded inside the container
  buildah run --isolation chroot "$container" sh -c \
    'include="$(python -c "import sysconfig; print(sysconfig.get_paths()[\"include\"])")" &&
     printf "#include <Python.h>\nint stub(void) { return 0; }\n" >/tmp/stub.c &&
     gcc -shared -fPIC -I"$include" /tmp/stub.c -o /tmp/stub.so' \
    || { say "$1 cannot build a C extension: Triton needs gcc, libc6-dev and Python.h at run time"; exit 1; }
}

redis_answers() {  # bash's /dev/tcp: no redis-cli needed on the host
  (
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3
    [[ "$reply" == +PONG* ]]
  ) 2>/dev/null
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

smoke_data() {
  if [ -n "${CONTAINER_CHECK_DATA:-}" ]; then echo "$CONTAINER_CHECK_DATA"
  elif [ -f "$ROOT/../shared/data/preference_pairs.csv" ]; then echo "$ROOT/../shared/data/preference_pairs.csv"
  fi
}

main() {
  [ "$(id -u)" -eq 0 ] || { say "run as root (buildah with chroot isolation, debootstrap)"; exit 2; }
  require_tools
  command -v python3 >/dev/null || { say "python3 is needed on the host for the smoke test"; exit 2; }
  for port in "$API_PORT" "$API_INTERNAL_PORT" "$FLOWER_PORT" "$REDIS_PORT"; do
    if port_taken "$port"; then
      say "port $port is taken; set CHECK_API_PORT / CHECK_API_INTERNAL_PORT / CHECK_FLOWER_PORT / CHECK_REDIS_PORT"
      exit 1
    fi
  done
  mkdir -p "$CACHE_DIR"
  say "disk before: $(df -h --output=avail "$CACHE_DIR" | tail -1 | tr -d ' ') free"

  if [ "${CHECK_REBUILD_BASE:-0}" = 1 ] || ! image_exists "$ROOTFS_IMAGE"; then
    timed "rootfs image $ROOTFS_IMAGE" make_rootfs_image
  else
    say "rootfs image $ROOTFS_IMAGE: cached"
  fi
  timed "base image $BASE_IMAGE ($(image_size "$ROOTFS_IMAGE") rootfs)" make_base_image

  timed "built $API_IMAGE" build "$API_IMAGE" compose/Dockerfile.api
  timed "built $PROXY_IMAGE" build "$PROXY_IMAGE" compose/Dockerfile.proxy
  local torch_args=()
  if compgen -G "$LOCAL_WHEELS_DIR/torch-2.13.0+cpu-*.whl" >/dev/null; then
    # download.pytorch.org may be unreachable: the CPU wheel comes from the local folder, the rest from PyPI.
    torch_args=(--volume "$LOCAL_WHEELS_DIR:/wheels:ro" --build-arg WHEELS_DIR=/wheels
      --build-arg TORCH_INDEX_URL=https://pypi.org/simple)
    say "torch 2.13.0+cpu from $LOCAL_WHEELS_DIR (mounted at /wheels for the build)"
  fi
  timed "built $CPU_IMAGE" build "$CPU_IMAGE" compose/Dockerfile.worker-cpu "${torch_args[@]}"
  if [ "$BUILD_GPU" = 1 ]; then
    timed "built $GPU_IMAGE" build "$GPU_IMAGE" compose/Dockerfile.worker-gpu
    timed "$GPU_IMAGE builds a C extension" check_c_extension_builds "$GPU_IMAGE"
  else
    say "$GPU_IMAGE: skipped (CHECK_GPU_IMAGE=0)"
  fi
  buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E "arena-pref-(api|proxy|worker-cpu|worker-gpu|python)" >&2 || true

  rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR/shared" "$RUN_DIR/redis-data"
  chown 1000 "$RUN_DIR/shared"  # the images run as user arena (uid 1000), as under compose
  local api_key
  api_key="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
  local redis_url="redis://127.0.0.1:$REDIS_PORT/0"
  local shared_env=(-e "REDIS_URL=$redis_url" -e SHARED_DIR=/shared -v "$RUN_DIR/shared:/shared")

  # compose runs redis:7.4-alpine; here Debian's redis-server from the bookworm image, with compose's options.
  start redis "$ROOTFS_IMAGE" -v "$RUN_DIR/redis-data:/data" -- \
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir /data --appendonly yes --appendfsync everysec
  for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
  redis_answers || { say "redis did not answer on $REDIS_PORT"; exit 1; }
  local data worker_data=()
  data="$(smoke_data)"
  # As compose does: the labelled CSV mounted at /data, the worker fits the default predictor on it at first start.
  [ -z "$data" ] || worker_data=(-v "$(dirname "$(readlink -f "$data")"):/data:ro" -e "DEFAULT_TRAIN_CSV=/data/$(basename "$data")")
  start worker-cpu "$CPU_IMAGE" "${shared_env[@]}" "${worker_data[@]}" -e CUDA_VISIBLE_DEVICES= -- \
    /app/compose/start-worker.sh cpu
  start api "$API_IMAGE" "${shared_env[@]}" -e "API_KEY=$api_key" -e FALLBACK_QUEUE=cpu \
    -e LISTEN_HOST=127.0.0.1 -e "LISTEN_PORT=$API_INTERNAL_PORT" -- /app/compose/start-api.sh
  # As in compose, clients reach the gateway through the proxy only (here on the host's network).
  start proxy "$PROXY_IMAGE" -e LISTEN_HOST=127.0.0.1 -e "LISTEN_PORT=$API_PORT" \
    -e "PROXY_UPSTREAM=127.0.0.1:$API_INTERNAL_PORT" -- /app/compose/start-proxy.sh
  start flower "$API_IMAGE" -e "REDIS_URL=$redis_url" -e LISTEN_HOST=127.0.0.1 -e "LISTEN_PORT=$FLOWER_PORT" -- \
    /app/compose/start-flower.sh

  local smoke_args=()
  [ -z "$data" ] || smoke_args=(--data "$data")
  say "smoke test (data: ${data:-built-in rows})"
  API_KEY="$api_key" timed "smoke test" python3 scripts/container_smoke.py \
    --url "http://127.0.0.1:$API_PORT" --flower-url "http://127.0.0.1:$FLOWER_PORT" "${smoke_args[@]}"
  say "disk after: $(df -h --output=avail "$CACHE_DIR" | tail -1 | tr -d ' ') free"
}

main "$@"
