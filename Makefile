# dnntrick: `make setup` once, then `make test`. See README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup test test-fast lint format bench bench-peers docs clean

## setup: create .venv, install dnntrick with its dev and ray extras, make Fashion-MNIST available
setup:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[dev,ray]'
	$(BIN)/dnntrick data fetch fashion-mnist

## test: the whole suite (real-data tests included; a few minutes on 2 cores).
## One torch thread per process: the suite starts subprocesses, Ray and gloo ranks of its own,
## and OpenMP's spinning threads slow to a crawl when they outnumber the cores.
test:
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

## test-fast: the suite without the slow and integration tests (under a minute)
test-fast:
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow and not integration"

## lint: ruff (lint + format check) and mypy
lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: speed against plain PyTorch loops (not part of the tests)
bench:
	$(BIN)/python -m bench

## bench-peers: the same 3-epoch run in plain PyTorch, Lightning and Keras 3 (bench/peers.py).
## The peers live in their own venv, made here when missing; TensorFlow only where it installs.
PEERS_VENV ?= .venv-peers
PEERS_ARGS ?=
bench-peers: $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.peers --peers-python $(PEERS_VENV)/bin/python $(PEERS_ARGS)

# the stamp is written last, so an install cut short is taken up again on the next run
$(PEERS_VENV)/.installed:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 \
	  lightning 'keras>=3,<4'
	$(PEERS_VENV)/bin/python -m pip install --quiet tensorflow-cpu \
	  > $(PEERS_VENV)/tensorflow-install.log 2>&1 \
	  || echo "tensorflow: not installed (see $(PEERS_VENV)/tensorflow-install.log)"
	touch $@

## docs: regenerate docs/spec.md from the spec's field descriptions (a test fails when it is stale)
docs:
	$(BIN)/python -m dnntrick.spec.reference --write

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
