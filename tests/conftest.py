"""Shared fixtures: real server processes on 127.0.0.1, sample photos, required-part checks, waits on conditions."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from zmqproc import samples

ROOT = Path(__file__).resolve().parent.parent
IMAGES = samples.FOLDER  # the photos the package ships (zmqproc/samples, licenses beside them)

# Fixture modules of the other areas (sshd, docker, qt) register themselves here.
pytest_plugins: list[str] = ["tests.fixtures.sshd", "tests.fixtures.qt", "tests.fixtures.docker", "tests.fixtures.curve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Parts a newcomer's machine may lack: the group's tests skip there (one summary line says how to run them);
# with the group's variable set to 1 (CI) a missing part fails instead.
GROUPS = {
    "sshd": ("ZMQPROC_REQUIRE_SSHD", "as root with Debian's openssh-server and openssh-client"),
    "docker": ("ZMQPROC_REQUIRE_DOCKER", "with a running Docker engine (and docker-compose for the replicas test)"),
    "namespaces": ("ZMQPROC_REQUIRE_NAMESPACES", "as root with util-linux's unshare (a private /etc/hosts for DNS discovery)"),
}


def require_or_skip(group: str, reason: str) -> None:
    """Fail when the group's ZMQPROC_REQUIRE_* variable is 1 (CI: nothing is skipped silently), else skip."""
    env_var = GROUPS[group][0]
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{reason} ({env_var}=1)")
    pytest.skip(f"[{group}] {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line naming the groups that were skipped and how to run them."""
    counts: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        group = reason.removeprefix("Skipped: ").partition("]")[0].removeprefix("[")
        counts[group if group in GROUPS else "other"] += 1
    if counts:
        parts = [
            f"{n} {g} tests (run them {GROUPS[g][1]}; {GROUPS[g][0]}=1 fails instead of skipping)" for g, n in counts.items() if g in GROUPS
        ]
        parts += [f"{counts['other']} others (see -rs)"] if counts["other"] else []
        terminalreporter.write_line("skipped: " + "; ".join(parts), yellow=True)


def load_script(name: str) -> Any:
    """A script of scripts/ as a module (they are not a package: they stand alone, without zmqproc)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


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
    """A shipped sample photo by file name (``astronaut.png``)."""
    image = cv2.imread(str(IMAGES / name), flags)
    assert image is not None, f"missing sample image {name}"
    return image


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return load_image("astronaut.png")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return load_image("coffee.png")
