# arena-pref developer entry points. `make demo` runs the main job end to end; `make test` runs the tests.
SHELL := /bin/bash
PY_WORKER := .venv-worker/bin/python

.PHONY: setup demo test lint bench up down status container-check

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	scripts/test.sh

lint: setup
	$(PY_WORKER) -m ruff check .

bench: setup
	PYTHONPATH=. $(PY_WORKER) scripts/bench_judge.py --pairs 24

up: setup
	scripts/stack.sh up

down:
	scripts/stack.sh down

status:
	scripts/stack.sh status

# Builds the compose images with buildah on a debootstrap base and smoke-tests them (root; ~6 min cold, see docs/containers.md).
container-check:
	scripts/container_check.sh
