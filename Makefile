# zmqproc: `make run` starts a local server and the viewer; `make test` installs and runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5555
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
# Docker: the image's tag, its base (default: the Dockerfile's python:3.11-slim-bookworm; .ci/run exports a local one)
# and the platform `make wheels` downloads for (the base's Python and CPU).
IMAGE ?= zmqproc-server
BASE_IMAGE ?= $(ZMQPROC_BASE_IMAGE)
IMAGE_PYTHON ?= 3.11
WHEEL_ARCH ?= $(shell uname -m)
# DOCKER_NETWORK=host: no docker-proxy relay (about twice the round trips/s for VGA and 1080p, bench/docker.py);
# the server then binds $(HOST):$(PORT) itself. Default: the port published on $(HOST):$(PORT).
DOCKER_NETWORK ?=
RUN_WHERE = $(if $(filter host,$(DOCKER_NETWORK)),--network host -e ZMQPROC_HEALTH_ENDPOINT=tcp://$(HOST):$(PORT) $(IMAGE) \
  --bind tcp://$(HOST):$(PORT),-p $(HOST):$(PORT):5555 $(IMAGE))
# The container's limits and hardening (docker/compose.yaml says the same in its own words; tests/fixtures/docker.py reads
# these with `make docker-run-flags`): read-only root with a small /tmp (the workers' forkserver socket), no capabilities,
# no privilege gain, bounded processes and logs, and a memory limit the server sizes its budget from (80 %: 819 MiB of 1g).
MEMORY ?= 1g
DOCKER_RUN_FLAGS = --read-only --tmpfs /tmp:rw,nosuid,nodev,noexec,size=16m --cap-drop ALL \
  --security-opt no-new-privileges --pids-limit 128 --memory $(MEMORY) --memory-swap $(MEMORY) \
  --log-driver json-file --log-opt max-size=10m --log-opt max-file=3

.PHONY: install test run run-server run-server-local lint wheel-check bench bench-peers bench-streams bench-tiles bench-link bench-scaling bench-ssh bench-docker clean wheels docker-build docker-test \
  docker-run-flags fuzz soak

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

# OPS=DIR: serve the plugin ops in DIR too (mounted read-only at /ops; docs/plugins.md)
OPS ?=
RUN_OPS = $(if $(OPS),-v $(abspath $(OPS)):/ops:ro -e ZMQPROC_OPS=/ops)

run-server: docker-build  # the server in Docker, in the foreground, published on $(HOST):$(PORT) only; Ctrl-C stops it
	docker run --rm --init --name zmqproc-server-$(PORT) $(DOCKER_RUN_FLAGS) $(RUN_OPS) $(RUN_WHERE) --workers $(WORKERS)

docker-run-flags:  # the hardening and limits `make run-server` gives the container, one line
	@echo $(DOCKER_RUN_FLAGS)

run-server-local: install
	$(BIN)/python server_main.py --bind tcp://$(HOST):$(PORT) --workers $(WORKERS) $(if $(OPS),--ops $(OPS))

wheels: wheelhouse/requirements.txt  # the image's dependencies as wheels, for offline builds (docker/Dockerfile uses them)

wheelhouse/requirements.txt: pyproject.toml docker/requirements.py | install
	mkdir -p wheelhouse
	$(BIN)/python docker/requirements.py > $@.tmp
	$(BIN)/python -m pip download --quiet --only-binary :all: --python-version $(IMAGE_PYTHON) --implementation cp \
	  --platform manylinux_2_28_$(WHEEL_ARCH) --platform manylinux2014_$(WHEEL_ARCH) -d wheelhouse -r $@.tmp
	mv $@.tmp $@

docker-build:  # cached layers: a no-op when nothing changed; only the small package layer when only zmqproc/ changed
	docker build -f docker/Dockerfile $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) -t $(IMAGE) .

docker-test: install  # the docker-marked tests (they run `make wheels` and build the image themselves)
	ZMQPROC_REQUIRE_DOCKER=1 $(BIN)/python -m pytest -q -m docker

lint: install  # style, types, and the wings' import contracts (pyproject.toml, [tool.importlinter])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy zmqproc
	$(BIN)/lint-imports

WHEEL_CHECK := build/wheel-check
wheel-check: install  # `pip wheel .` as a user runs it, installed with its real dependencies into a fresh venv, then tested there
	rm -rf $(WHEEL_CHECK)
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(WHEEL_CHECK)/dist .
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet "$$(ls $(WHEEL_CHECK)/dist/zmqproc-*.whl)[gui]"
	ZMQPROC_WHEEL_VENV=$(WHEEL_CHECK)/venv $(BIN)/python -m pytest -q -p no:cacheprovider tests/system/test_wheel.py

bench: install bench-peers
	$(BIN)/python bench/core.py

bench-peers: install  # raw pyzmq, zmqproc, imagezmq, FastAPI in one run; writes docs/peers.png and "## Peers" in docs/benchmarks.md
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/peers.py

bench-streams: install  # frames through Client.map, imagezmq and NetGear in one run; writes "## Streams" in docs/benchmarks.md
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/streams.py --write

bench-tiles: install  # a 100 Mpx image whole and as tiles, the viewer's first tile, 400 Mpx, imaging-server-kit; writes "## Tiles" in docs/benchmarks.md
	$(BIN)/python -m pip install --quiet imaging-server-kit
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/tiles.py --write

bench-link: install  # each way of sending a 12 MP and a 1080p photo over 1 Gbit/s, 100 Mbit/s and 20 Mbit/s emulated links, and auto; writes "## Links" in docs/benchmarks.md
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/link.py --write

bench-scaling: install  # needs root and unshare: 1, 2, 3 one-worker servers found by one DNS name, one client; writes "## Scaling" in docs/benchmarks.md
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/scaling.py --write

bench-ssh: install  # needs root and openssh-server (an sshd is started on a loopback port)
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/ssh.py

bench-docker: install docker-build  # a server process vs the container (published port, host network)
	flock /tmp/zmqproc-bench.lock $(BIN)/python bench/docker.py --image $(IMAGE)

SECONDS ?= 600
fuzz: install  # mutated files of every format among valid 12 MP ones, 8 in flight, at a server with --max-memory 600M --job-timeout 5
	flock /tmp/zmqproc-bench.lock $(BIN)/python scripts/fuzz.py --spawn --seconds $(SECONDS) --seed $${SEED:-0} \
	  --max-tree-mib 700 --max-ping-ms 100

soak: install  # the same mix at a server with default settings; its RSS, descriptors and threads printed every 5 s
	flock /tmp/zmqproc-bench.lock $(BIN)/python scripts/fuzz.py --spawn --server-args "" --seconds $(SECONDS) --sample-s 5 \
	  --json build/soak.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
