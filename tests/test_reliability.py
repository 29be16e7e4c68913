"""Reliability against real server processes: restarts, dead and hung servers, overload.

Every request ends with a result or a clear error by its deadline; none hangs,
none is silently lost. Figures are printed (run with -s) for docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import wait

import msgpack
import numpy as np
import pytest
import zmq

from tests.conftest import ServerProcess, free_port, wait_until
from zmqproc import Client

WORK = "gaussian_blur:ksize=31"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (OSError, RuntimeError):
                return

    def __enter__(self) -> PeakRss:
        self.peak = rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def outcome(future) -> str:
    error = future.exception(timeout=0)
    return "ok" if error is None else type(error).__name__


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_sigkill_and_restart_with_200_in_flight(image):
    port = free_port()
    args = ("--workers", "2")  # default limits: the client keeps within the server's credit
    first = ServerProcess(*args, port=port)
    second = None
    try:
        with Client(first.endpoint, timeout=30) as client:
            client.ping()
            futures = [client.submit(image, WORK) for _ in range(200)]
            wait_until(lambda: any(f.done() for f in futures), what="a first answer")
            first.stop(signal.SIGKILL)
            answered_before = sum(f.done() for f in futures)
            wait_until(lambda: not client.connected, what="the client seeing the disconnect")
            second = ServerProcess(*args, port=port)
            started = time.monotonic()
            done, not_done = wait(futures, timeout=40)
            outcomes = [outcome(f) for f in futures]
            print(
                f"\nrestart: {answered_before} answered before SIGKILL, {client.resent} resent, "
                f"{outcomes.count('ok')}/200 ok, all ended {time.monotonic() - started:.1f} s after the restart"
            )
            assert not not_done, "no request hangs"
            assert client.resent > 0, "what the killed server held is sent again"
            assert outcomes.count("ok") == 200, outcomes
            assert client.epoch == second.epoch != first.epoch
    finally:
        first.stop()
        if second:
            second.stop()


def test_dead_server_work_moves_to_the_live_one(start_server, image):
    a = start_server("--workers", "1", "--max-queue", "256", "--max-client-queue", "256")
    b = start_server("--workers", "1", "--max-queue", "256", "--max-client-queue", "256")
    with Client([a.endpoint, b.endpoint], timeout=30) as client:
        wait_until(lambda: len(client.connected) == 2, what="both connections up")
        futures = [client.submit(image, WORK) for _ in range(200)]
        wait_until(lambda: any(f.done() for f in futures), what="a first answer")
        a.stop(signal.SIGKILL)
        answered_before = sum(f.done() for f in futures)
        done, not_done = wait(futures, timeout=40)
        assert not not_done
        assert [outcome(f) for f in futures] == ["ok"] * 200
        assert answered_before == 200 or client.resent > 0
        print(f"\nfailover: {answered_before} answered before SIGKILL, {client.resent} resent to the live server, 200/200 ok")


def test_hung_server_is_noticed_by_the_liveness_ping(start_server, image):
    a = start_server("--workers", "1", "--max-queue", "128", "--max-client-queue", "128")
    b = start_server("--workers", "1", "--max-queue", "128", "--max-client-queue", "128")
    with Client([a.endpoint, b.endpoint], timeout=30) as client:
        wait_until(lambda: len(client.connected) == 2, what="both connections up")
        os.kill(a.proc.pid, signal.SIGSTOP)  # the TCP connection stays up; only the app-level ping can tell
        try:
            futures = [client.submit(image, WORK) for _ in range(40)]
            started = time.monotonic()
            done, not_done = wait(futures, timeout=25)
            assert not not_done and all(f.exception() is None for f in futures)
            print(f"\nhung server: 40/40 ok in {time.monotonic() - started:.1f} s, {client.resent} moved to the live server")
            assert client.resent > 0
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)


def test_overload_busy_at_once_polite_client_served_memory_bounded(start_server, image):
    """A raw client that ignores its credit floods the server; a polite client beside it is served at once."""
    srv = start_server("--workers", "1", "--max-queue", "8")
    payload_mib = image.nbytes / 2**20
    header = msgpack.packb(
        {
            "v": 1,
            "kind": "process",
            "pipeline": [{"op": "gaussian_blur", "params": {"ksize": 31}}],
            "image": {"format": "raw", "dtype": "uint8", "shape": list(image.shape)},
        }
    )
    flood = zmq.Context.instance().socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(srv.endpoint)
    try:
        with Client(srv.endpoint, timeout=60) as polite, PeakRss(srv.proc.pid) as rss:
            baseline = rss.peak
            polite.ping()
            sent = time.monotonic()
            for i in range(400):  # ~10x what the server grants, at once
                head = msgpack.unpackb(header)
                flood.send_multipart([msgpack.packb({**head, "id": f"f{i}"}), image], copy=False)
            codes: dict[str, str] = {}
            ended: dict[str, float] = {}

            def drain() -> None:
                while len(codes) < 400 and flood.poll(30_000):
                    reply = msgpack.unpackb(flood.recv_multipart()[0])
                    codes[reply["id"]] = reply["status"] if reply["status"] == "ok" else reply["error"]["code"]
                    ended[reply["id"]] = time.monotonic() - sent

            reader = threading.Thread(target=drain)
            reader.start()
            polite_ok, latencies = 0, []
            for _ in range(10):
                started = time.monotonic()
                polite.process(image, WORK)
                polite_ok += 1
                latencies.append(time.monotonic() - started)
            reader.join(timeout=90)
    finally:
        flood.close()
    outcomes = list(codes.values())
    busy = outcomes.count("busy")
    last_busy = max(t for i, t in ended.items() if codes[i] == "busy")
    last_ok = max(t for i, t in ended.items() if codes[i] == "ok")
    print(
        f"\noverload: flood {outcomes.count('ok')} ok, {busy} busy of 400 (last busy after {last_busy * 1000:.0f} ms, "
        f"last ok after {last_ok * 1000:.0f} ms); polite {polite_ok}/10 ok, "
        f"worst latency {max(latencies) * 1000:.0f} ms; server RSS {baseline:.0f} -> peak {rss.peak:.0f} MiB"
    )
    assert busy >= 300 and outcomes.count("ok") + busy == 400, "busy is an answer, nothing is lost"
    assert last_busy < last_ok, "busy is answered at once, not after the queued work"
    assert polite_ok == 10, "the flood does not lock out another client"
    # what the flooder is granted (under 9 requests), plus images being processed, plus their replies: a bound
    assert rss.peak - baseline < 9 * payload_mib * 4 + 64, "memory stays bounded under overload"
