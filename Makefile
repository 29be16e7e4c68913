# zmqproc: `make run` starts a local server and the viewer; `make test` installs and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5555
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install test run run-server lint bench bench-peers bench-ssh clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[gui,dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

run: install
	BIN=$(BIN) HOST=$(HOST) PORT=$(PORT) WORKERS=$(WORKERS) scripts/run_local.sh

run-server: install
	$(BIN)/python server_main.py --bind tcp://$(HOST):$(PORT) --workers $(WORKERS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy zmqproc

bench: install bench-peers
	$(BIN)/python bench/core.py

bench-peers: install  # raw pyzmq, zmqproc, imagezmq, FastAPI in one run; writes docs/peers.png and "## Peers" in docs/benchmarks.md
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/peers.py

bench-ssh: install  # needs root and openssh-server (an sshd is started on a loopback port)
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/ssh.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
