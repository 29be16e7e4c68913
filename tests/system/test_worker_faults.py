"""Worker faults against a real server with default settings: a fault costs at most the job, never the server.

The reproducer of issue 18 (a truncated PNG, then a large one), SIGKILLs of random workers at random moments under a
mixed load of two credit-following clients, and a server killed mid-job leaving no worker behind.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import load_image, load_script, wait_until
from tests.procfs import alive, children_of, descendants
from tests.rawwire import RawDealer, process_header, server_stats

FORMATS = {
    "png": (".png", []),
    "jpeg": (".jpg", []),
    "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy: OpenCV's lossless default takes seconds at 12 MP
    "bmp": (".bmp", []),
    "tiff": (".tiff", []),
}
SIZES = [(64, 64), (480, 640), (1080, 1920), (3000, 4000)]  # up to 12 MP


def header(request_id: str, image: dict, op: str = "identity") -> dict:
    return process_header(request_id, [], [{"op": op}], image=image, reply_format="raw")


def children(pid: int) -> list[int]:
    return children_of().get(pid, [])


def workers(server_pid: int) -> list[int]:
    """The worker processes: the children of the server's forkserver."""
    for child in children(server_pid):
        try:
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return children(child)
        except OSError:
            continue
    return []


def open_files(pid: int) -> list[str]:
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return links


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_truncated_png_and_then_a_large_one_the_reproducer(start_server):
    server = start_server()  # default settings
    small = cv2.imencode(".png", load_image("astronaut.png")[:64, :64])[1].tobytes()
    large = cv2.imencode(".png", cv2.resize(load_image("astronaut.png"), (4000, 3000)))[1].tobytes()
    dealer = RawDealer(server.endpoint, timeout_ms=30000)
    try:
        for request_id, data, expected in (("1", small, "ok"), ("2", small[: len(small) // 2], "decode_failed"), ("3", large, "ok")):
            reply, frames = dealer.call(header(request_id, {"format": "png"}), data)
            assert (reply["id"], reply["status"] if reply["status"] == "ok" else reply["error"]["code"]) == (request_id, expected)
        assert reply["image"]["shape"] == [3000, 4000, 3] and len(frames[0]) == 36_000_000
    finally:
        dealer.close()
    stats = server_stats(server.endpoint)
    assert server.proc.poll() is None and stats["workers_died"] == 0


@pytest.fixture(scope="module")
def corpus() -> list[tuple[dict, bytes]]:
    """Every accepted format at sizes from 64x64 to 12 MP (the largest less often: they are slow to decode)."""
    source = load_image("astronaut.png")
    items = []
    for height, width in SIZES:
        image = cv2.resize(source, (width, height))
        items.append(({"format": "raw", "dtype": "uint8", "shape": [height, width, 3]}, image.tobytes()))
        for fmt, (ext, params) in FORMATS.items():
            items.append(({"format": fmt}, cv2.imencode(ext, image, params)[1].tobytes()))
    return items


class Load(threading.Thread):
    """One client keeping ``in_flight`` requests outstanding (within its credit) until told to stop; every reply kept."""

    def __init__(self, endpoint: str, name: str, corpus: list[tuple[dict, bytes]], in_flight: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.name, self.corpus, self.in_flight = endpoint, name, corpus, in_flight
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.sent: list[str] = []
        self.replies: list[dict] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        dealer = load_script("fuzz").PoliteDealer(self.endpoint, timeout_ms=60000)
        try:
            while not self.stop.is_set() or dealer.outstanding:
                while not self.stop.is_set() and len(dealer.outstanding) < self.in_flight:
                    image, data = self.corpus[self.rng.randrange(len(self.corpus))]
                    if not dealer.fits(len(data)):
                        break
                    request_id = f"{self.name}-{len(self.sent)}"
                    dealer.submit(header(request_id, image, self.rng.choice(["identity", "invert"])), data)
                    self.sent.append(request_id)
                if dealer.outstanding:
                    self.replies.append(dealer.recv())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            dealer.close()


def settle(server_pid: int, endpoint: str) -> tuple[Counter[str], float]:
    """Kill the idle workers (so no worker's cached segments count), wait for their replacements; the loop's fds and RSS."""
    died = server_stats(endpoint)["workers_died"]
    old = workers(server_pid)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: server_stats(endpoint)["workers_died"] >= died + len(old), 10, "the killed idle workers reported")
    wait_until(lambda: len(set(workers(server_pid)) - set(old)) == len(old), 10, "the replacements started")
    time.sleep(0.5)
    server_stats(endpoint)
    return descriptors(server_pid), rss_mib(server_pid)


def descriptors(pid: int) -> Counter[str]:
    """A process's open descriptors by kind; TCP sockets left out (libzmq closes its clients' connections in its own time)."""
    tcp = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        tcp |= {line.split()[9] for line in Path(table).read_text().splitlines()[1:]}
    kinds: Counter[str] = Counter()
    for link in open_files(pid):
        if link.startswith("socket:[") and link[8:-1] in tcp:
            continue
        kinds["memfd" if link.startswith("/memfd:") else link.split(":")[0] if ":" in link else "file"] += 1
    return kinds


def test_random_worker_sigkills_under_mixed_load_cost_the_server_nothing(start_server, corpus):
    server = start_server()  # default settings: one worker per core
    pid = server.proc.pid
    warm = Load(server.endpoint, "warm", corpus, 4, seed=0)
    warm.start()
    time.sleep(3)
    warm.stop.set()
    warm.join(60)
    assert warm.error is None and {r["status"] for r in warm.replies} == {"ok"}
    fds_before, rss_before = settle(pid, server.endpoint)

    clients = [Load(server.endpoint, f"c{i}", corpus, 4, seed=i + 1) for i in range(2)]  # 8 in flight
    for client in clients:
        client.start()
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 180
    while kills < 300 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0, 0.08))
        pids = workers(pid)
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    for client in clients:
        client.stop.set()
    for client in clients:
        client.join(120)
    assert server.proc.poll() is None, "the server process survived every kill"
    assert kills >= 300

    codes: Counter[str] = Counter()
    for client in clients:
        assert client.error is None and not client.is_alive()
        ids = [r["id"] for r in client.replies]
        assert sorted(ids) == sorted(client.sent) and len(set(ids)) == len(ids), "exactly one reply per request"
        for reply in client.replies:
            code = reply["status"] if reply["status"] == "ok" else reply["error"]["code"]
            codes[code] += 1
            if code != "ok":
                assert code == "internal" and "died 2 times" in reply["error"]["message"], reply
    stats = server_stats(server.endpoint)
    print(f"\n{kills} kills: {dict(codes)}; restarted {stats['restarted_jobs']}, workers died {stats['workers_died']}")
    assert codes["ok"] > codes["internal"] and stats["restarted_jobs"] > 0

    fds_after, rss_after = settle(pid, server.endpoint)
    print(f"descriptors {dict(fds_before)} -> {dict(fds_after)}; RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert fds_after == fds_before, "no descriptor or memfd leaked"
    assert rss_after < rss_before + 32, f"RSS back to its baseline ({rss_before:.0f} MiB before, {rss_after:.0f} MiB after)"


def test_a_server_killed_mid_job_leaves_no_worker_behind(start_server):
    server = start_server("--workers", "2")
    busy = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    dealer = RawDealer(server.endpoint)
    try:
        for i in range(2):  # a long job on each worker
            dealer.send(process_header(f"slow{i}", [2000, 2000, 3], [{"op": "denoise", "params": {"search_window": 35}}]), busy.tobytes())
        wait_until(lambda: server_stats(server.endpoint)["running"] == 2, 10, "both jobs running")
        family = [server.proc.pid, *descendants(server.proc.pid)]
        assert len(workers(server.proc.pid)) == 2 and len(family) >= 4
        server.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: not any(alive(p) for p in family), 5, "the forkserver and the workers exiting")
        assert time.monotonic() - killed < 1.0, "within a second"
    finally:
        dealer.close()
