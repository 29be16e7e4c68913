"""Reliability against real server processes: bursts, restarts, dead, hung and poisoned servers, overload.

Every request ends with a result or a clear error by its deadline; none hangs, none is silently lost. Default server
settings unless a test says otherwise. Figures are printed (run with -s) for docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import wait

import msgpack
import numpy as np
import pytest
import zmq

from tests.conftest import ServerProcess, free_port, wait_until
from zmqproc import Client, ConnectionLost, ServerCrashed

WORK = "gaussian_blur:ksize=31"
POISON_SERVER = "tests/server_with_poison_op.py"


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


def ended(futures: list, timeout: float) -> list[str]:
    """Wait for every future (failing the test if one hangs); their outcomes."""
    done, not_done = wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} requests hang"
    return [outcome(f) for f in futures]


def test_bursts_of_500_and_5000_vga_requests_at_once_all_ok(start_server, image):
    """A batch loop `[c.submit(img) for img in images]` against a default server: the work waits in the client, not as busy."""
    srv = start_server()  # default settings: 2 workers on this machine, --max-queue 64
    with Client(srv.endpoint, timeout=120) as client:
        for n in (500, 5000):
            outcomes: Counter[str] = Counter()  # counted as they end, not held: 5000 VGA results would be 4.6 GB
            started = time.monotonic()
            count = lambda f, seen=outcomes: seen.update([outcome(f)])  # noqa: E731
            for _ in range(n):
                client.submit(image, "gaussian_blur:ksize=5").add_done_callback(count)
            wait_until(lambda n=n, seen=outcomes: seen.total() == n, 120, f"{n} requests ending")
            print(f"\nburst of {n} VGA blurs at once: {outcomes['ok']}/{n} ok in {time.monotonic() - started:.1f} s")
            assert outcomes["ok"] == n, outcomes
        stats = client.stats()
    assert "busy" not in stats["errors"], "a polite client is never answered busy"


def test_sigkill_and_restart_with_200_in_flight(image):
    port = free_port()
    first = ServerProcess(port=port)  # default settings
    second = None
    try:
        with Client(first.endpoint, timeout=30) as client:
            client.ping()
            futures = [client.submit(image, WORK) for _ in range(200)]
            wait_until(lambda: any(f.done() for f in futures), what="a first answer")
            first.stop(signal.SIGKILL)
            answered_before = sum(f.done() for f in futures)
            wait_until(lambda: not client.connected, what="the client seeing the disconnect")
            second = ServerProcess(port=port)
            started = time.monotonic()
            outcomes = ended(futures, 40)
            print(
                f"\nSIGKILL + restart: {answered_before} answered before, {client.resent} resent, "
                f"{outcomes.count('ok')}/200 ok, all ended {time.monotonic() - started:.1f} s after the restart"
            )
            assert outcomes.count("ok") == 200, Counter(outcomes)
            assert client.resent > 0, "what the killed server held is sent again"
            assert client.epoch == second.epoch != first.epoch
    finally:
        first.stop()
        if second:
            second.stop()


def test_sigterm_and_restart_with_300_in_flight(image):
    """A graceful restart (docker restart): queued work is answered busy + shutting_down and sent to the next instance."""
    port = free_port()
    first = ServerProcess(port=port)
    second = None
    try:
        with Client(first.endpoint, timeout=30) as client:
            client.ping()
            futures = [client.submit(image, WORK) for _ in range(300)]
            wait_until(lambda: any(f.done() for f in futures), what="a first answer")
            assert first.stop(signal.SIGTERM) == 0
            answered_before = sum(f.done() for f in futures)
            second = ServerProcess(port=port)
            started = time.monotonic()
            outcomes = ended(futures, 40)
            print(
                f"\nSIGTERM + restart: {answered_before} answered by the first instance, {client.resent} resent, "
                f"{outcomes.count('ok')}/300 ok, all ended {time.monotonic() - started:.1f} s after the restart"
            )
            assert outcomes.count("ok") == 300, Counter(outcomes)
            assert client.epoch == second.epoch
    finally:
        first.stop()
        if second:
            second.stop()


def test_the_only_server_gone_for_good_fails_pending_work_within_the_grace(start_server, image):
    srv = start_server()
    with Client(srv.endpoint, timeout=30) as client:
        futures = [client.submit(image, WORK) for _ in range(20)]
        wait_until(lambda: any(f.done() for f in futures), what="a first answer")
        srv.stop(signal.SIGKILL)
        gone = time.monotonic()
        outcomes = ended(futures, 10)
        took = time.monotonic() - gone
        late = client.submit(image, WORK)
        error = late.exception(timeout=2)
    failed = [f.exception() for f in futures if f.exception() is not None]
    print(f"\nthe only server SIGKILLed: {len(failed)} pending failed {took:.1f} s later (grace 3 s, timeout 30 s): {failed[0]}")
    assert set(outcomes) <= {"ok", "ConnectionLost"} and failed, Counter(outcomes)
    assert took < 3.0 + 1.5, "within the grace, not at the 30 s deadline"
    assert all(srv.endpoint in str(e) for e in failed)
    assert isinstance(error, ConnectionLost), "new work fails at once"


def test_two_servers_one_sigkilled_all_ok(start_server, image):
    a, b = start_server(), start_server()  # default settings
    with Client([a.endpoint, b.endpoint], timeout=30) as client:
        wait_until(lambda: len(client.connected) == 2, what="both connections up")
        futures = [client.submit(image, WORK) for _ in range(200)]
        wait_until(lambda: any(f.done() for f in futures), what="a first answer")
        a.stop(signal.SIGKILL)
        answered_before = sum(f.done() for f in futures)
        outcomes = ended(futures, 40)
        print(f"\nfailover: {answered_before} answered before SIGKILL, {client.resent} resent to the live server, 200/200 ok")
        assert outcomes == ["ok"] * 200, Counter(outcomes)
        assert answered_before == 200 or client.resent > 0


def test_a_request_that_kills_its_server_fails_with_server_crashed_after_two_deaths(image):
    """A poison request is resent once after the first crash, then given up; the work beside it is served; no third death."""
    port = free_port()
    servers = [ServerProcess(script=POISON_SERVER, port=port)]
    try:
        with Client(servers[0].endpoint, timeout=60) as client:
            client.ping()
            poison = client.submit(image, "kill_server")
            innocent = [client.submit(image, WORK) for _ in range(10)]
            while not all(f.done() for f in [poison, *innocent]) and len(servers) <= 3:
                if servers[-1].proc.poll() is not None:  # it died: restart it on the same port, as a supervisor would
                    servers.append(ServerProcess(script=POISON_SERVER, port=port))
                time.sleep(0.02)
            outcomes = ended(innocent, 30)
            deaths = sum(s.proc.poll() is not None for s in servers)
            print(f"\npoison: {type(poison.exception()).__name__} after {deaths} server deaths; beside it {Counter(outcomes)}")
            assert isinstance(poison.exception(), ServerCrashed)
            assert deaths == 2 and servers[-1].proc.poll() is None, "the poison was not sent a third time"
            assert outcomes == ["ok"] * 10
    finally:
        for server in servers:
            server.stop()


def test_hung_server_is_noticed_by_the_liveness_ping(start_server, image):
    a, b = start_server(), start_server()
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
