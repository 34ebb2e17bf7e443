# arena-pref developer entry points. `make demo` runs the main job end to end; `make test` runs the tests.
SHELL := /bin/bash
PY_WORKER := .venv-worker/bin/python

.PHONY: setup demo test lint bench bench-predict up down status container-check

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	scripts/test.sh

lint: setup
	$(PY_WORKER) -m ruff check .

# The judge's engines side by side (vLLM prefix cache on/off, transformers, naive loop), best of 2 repeats each:
# 4-8 minutes on 2 cores.
# Figures you keep: run it alone (flock /tmp/arena-cpu.lock make bench on a shared machine). BENCH_ARGS=--device cuda on a GPU.
bench: setup
	PYTHONPATH=. $(PY_WORKER) scripts/bench/bench_judge.py --pairs 12 --long-pairs 3 $(BENCH_ARGS)

# The default predict path: rows/s and peak RSS of `arena predict`, the encoder's FLOP/s against the matmul peak (~4 min).
bench-predict: setup
	PYTHONPATH=. $(PY_WORKER) scripts/bench/bench_predict.py --rows 1600 --with-cache

up: setup
	scripts/stack.sh up

down:
	scripts/stack.sh down

status:
	scripts/stack.sh status

# Builds the compose images with buildah on a debootstrap base and smoke-tests them (root; ~6 min cold, see docs/containers.md).
container-check:
	scripts/container_check.sh
