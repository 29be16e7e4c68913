"""Shared by the benchmarks: start servers as real processes, count round trips, print ratios."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

RAW_ECHO_SERVER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.bind(sys.argv[1])
while True:
    s.send_multipart(s.recv_multipart(copy=False), copy=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def wait_for_path(path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on ipc://{path}")
        time.sleep(0.05)


@contextmanager
def process(args: list[str], port: int | str, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (a server on a tcp ``port`` of ``host``, or an ipc socket path) for the duration of the block."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(port) if isinstance(port, str) else wait_for_port(port, host=host)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def raw_echo_server() -> Iterator[str]:
    port = free_port()
    with process([sys.executable, "-c", RAW_ECHO_SERVER, f"tcp://127.0.0.1:{port}"], port):
        yield f"tcp://127.0.0.1:{port}"


@contextmanager
def zmqproc_server_process(workers: int = os.cpu_count() or 1, *extra: str, ipc: bool = False) -> Iterator[tuple[str, int]]:
    """A real server process on a free tcp port of 127.0.0.1, or on an ipc socket: (endpoint, pid)."""
    port = free_port()
    where: int | str = f"/tmp/zmqproc-bench-{port}.sock" if ipc else port
    endpoint = f"ipc://{where}" if ipc else f"tcp://127.0.0.1:{port}"
    args = [sys.executable, "server_main.py", "--bind", endpoint, "--workers", str(workers), "--log-level", "warning"]
    with process([*args, *extra], where) as proc:
        yield endpoint, proc.pid


@contextmanager
def zmqproc_server(workers: int = os.cpu_count() or 1, *extra: str, ipc: bool = False) -> Iterator[str]:
    """A real server process on a free tcp port of 127.0.0.1, or on an ipc socket."""
    with zmqproc_server_process(workers, *extra, ipc=ipc) as (endpoint, _):
        yield endpoint


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid``, or by this process."""
    if pid is None:
        return sum(os.times()[:2])
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by process ``pid`` and its living descendants (a server's forkserver and workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(child) for child in children.read().split()]
        except OSError:  # it ended meanwhile
            continue
    return total


def write_section(path: Path, section: str) -> None:
    """Replace the section of ``path`` that has ``section``'s heading (its first line), up to the next "## " heading; or
    append it."""
    heading = section.split("\n", 1)[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(f"\n{heading}\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end >= 0 else "")
    path.write_text(text)


def rate(round_trip: Callable[[], object], seconds: float, warmup: int = 20) -> float:
    """Round trips per second of ``round_trip`` called in a loop for ``seconds``."""
    for _ in range(warmup):
        round_trip()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        round_trip()
        n += 1
    return n / elapsed


def inflight_rate(submit: Callable[[], Future[Any]], inflight: int, seconds: float, check: Callable[[Any], None] | None = None) -> float:
    """Completions per second with ``inflight`` futures from ``submit()`` always outstanding (``check``: the first result)."""
    futures = {submit() for _ in range(inflight)}
    if check is not None:
        check(next(iter(wait(futures, return_when=FIRST_COMPLETED).done)).result())
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done, futures = wait(futures, return_when=FIRST_COMPLETED)
        for future in done:
            future.result()
            count += 1
            futures.add(submit())
    wait(futures)
    return count / elapsed


def best_of(times: int, measure: Callable[[], float]) -> float:
    """The best of a few runs: the least disturbed by other work on the machine."""
    return max(measure() for _ in range(times))
