# arena-pref developer entry points. `make demo` runs the main job end to end; `make test` runs the tests.
SHELL := /bin/bash
PY_WORKER := .venv-worker/bin/python
PY_API := .venv-api/bin/python
DATA ?= ../shared/data/preference_pairs.csv
DEMO_DIR ?= var/demo
DEMO_ROWS ?= 40

.PHONY: setup demo test test-unit lint bench

setup:
	scripts/setup.sh

demo: setup
	scripts/demo.sh

test: setup
	PYTHONPATH=. $(PY_WORKER) -m pytest tests -q

lint: setup
	$(PY_WORKER) -m ruff check .

bench: setup
	PYTHONPATH=. $(PY_WORKER) scripts/bench_judge.py --pairs 24
