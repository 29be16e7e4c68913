"""Shared fixtures: real server processes on 127.0.0.1, sample photos, required-part checks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT.parent / "shared" / "data" / "images"

# Fixture modules of the other areas (sshd, docker, qt) register themselves here.
pytest_plugins: list[str] = ["tests.fixtures.sshd", "tests.fixtures.qt", "tests.fixtures.docker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_or_skip(env_var: str, reason: str) -> None:
    """Fail when ``env_var`` is 1 (CI: nothing is skipped silently), else skip."""
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{reason} ({env_var}=1)")
    pytest.skip(reason)


class ServerProcess:
    """A real ``server_main.py`` process; ``endpoint`` and ``epoch`` are read from its log."""

    def __init__(self, *args: str, script: str = "server_main.py", port: int | None = None) -> None:
        self.endpoint = f"tcp://127.0.0.1:{port or free_port()}"
        cmd = [sys.executable, script, "--bind", self.endpoint, "--log-level", "info", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(20) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.output())

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            match = re.search(r"listening on .*epoch (\w+)", line)
            if match:
                self.epoch = match.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait; the exit code (killed after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code

    def output(self) -> str:
        return "".join(self.log)


@pytest.fixture
def start_server() -> Iterator:
    """Factory: ``start_server("--workers", "1")`` -> ServerProcess, stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, script: str = "server_main.py") -> ServerProcess:
        server = ServerProcess(*args, script=script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One shared server with 2 workers for tests that do not change its state."""
    proc = ServerProcess("--workers", "2")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def endpoint(server: ServerProcess) -> str:
    return server.endpoint


def load_image(name: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name), flags)
    assert image is not None, f"missing sample image {name}"
    return image


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return load_image("astronaut.png")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return load_image("coffee.png")
