"""zmqproc against the tools people would otherwise pick (issue 6), all measured in this one run on 127.0.0.1.

    .venv/bin/pip install -e '.[bench]' && flock /tmp/zmqproc-bench.lock .venv/bin/python bench/peers.py [--seconds 2 --repeat 3]

Workload: echo (identity) of a BGR uint8 frame, 1080p, VGA and 64x64, sequential and 8 in flight; round trips/s.
Peers, each a separate server process started here:
- raw pyzmq: zero-copy DEALER/ROUTER echo (harness.raw_echo_server), one DEALER; the practical limit;
- zmqproc: ``Client.process(image, "identity")`` / ``Client.submit`` against a real server (default settings, 2 workers);
- bare DEALER: the same zmqproc server driven by a bare pyzmq DEALER sending hand-built requests, pipelined like raw
  pyzmq: what the server allows with no client library at all (so zmqproc / bare DEALER is the client's share);
- imagezmq: ``ImageSender.send_image`` (REQ) to an ``ImageHub`` that answers ``recv_image`` with ``send_reply(image)``;
  REQ/REP is lockstep, so 8 in flight = 8 senders in 8 threads;
- HTTP: FastAPI on uvicorn (httptools, uvloop), POST of the raw bytes (``application/octet-stream``, shape and dtype in
  headers), a ``requests.Session``; 8 in flight = 8 threads with a Session each.
Prints the table with ratios to zmqproc, writes docs/peers.png and the "## Peers" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, free_port, inflight_rate, process, rate, raw_echo_server, write_section, zmqproc_server  # noqa: E402
from zmqproc import Client  # noqa: E402

PEERS = ("raw pyzmq", "zmqproc", "bare DEALER", "imagezmq", "FastAPI")
SIZES = {"1080p": (1080, 1920, 3), "VGA": (480, 640, 3), "64x64": (64, 64, 3)}
INFLIGHT = 8
RoundTrip = Callable[[], np.ndarray]


# ---- peer servers (separate processes) ------------------------------------------------------------------------------


@contextmanager
def imagezmq_server() -> Iterator[str]:
    port = free_port()
    with process([sys.executable, "bench/peer_servers.py", "imagezmq", f"tcp://127.0.0.1:{port}"], port):
        yield f"tcp://127.0.0.1:{port}"


@contextmanager
def http_server() -> Iterator[str]:
    port = free_port()
    with process([sys.executable, "bench/peer_servers.py", "http", str(port)], port):
        yield f"http://127.0.0.1:{port}/echo"


# ---- clients: each peer's round trip, and how it keeps 8 requests in flight -----------------------------------------


def echoed(sock: zmq.Socket) -> np.ndarray:
    """The image of one reply from the raw echo or the zmqproc server (a header naming its shape, then the pixels)."""
    frames = sock.recv_multipart(copy=False)
    shape = msgpack.unpackb(frames[0].bytes)["image"]["shape"]
    return np.frombuffer(frames[1].buffer, dtype=np.uint8).reshape(shape)


def raw_pyzmq(endpoint: str, image: np.ndarray, inflight: int, seconds: float) -> float:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    header = msgpack.packb({"v": 1, "id": "x", "kind": "process", "image": {"shape": list(image.shape)}})

    def send() -> None:
        sock.send_multipart([header, image], copy=False)

    try:
        return pipelined(send, lambda: echoed(sock), image, inflight, seconds)
    finally:
        sock.close()


def bare_dealer(endpoint: str, image: np.ndarray, inflight: int, seconds: float) -> float:
    """Hand-built zmqproc requests from a bare DEALER (within the server's grant: 8 in flight fit a default share)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    ids = iter(range(1 << 62))
    fields = {"v": 1, "kind": "process", "pipeline": [{"op": "identity"}]}
    fields["image"] = {"format": "raw", "dtype": "uint8", "shape": list(image.shape)}

    def send() -> None:
        sock.send_multipart([msgpack.packb({**fields, "id": f"r{next(ids)}"}), image], copy=False)

    try:
        return pipelined(send, lambda: echoed(sock), image, inflight, seconds)
    finally:
        sock.close()


def zmqproc(endpoint: str, image: np.ndarray, inflight: int, seconds: float) -> float:
    with Client(endpoint, timeout=30) as client:
        if inflight == 1:
            return checked_rate(lambda: client.process(image, "identity"), image, seconds)
        return inflight_rate(lambda: client.submit(image, "identity"), inflight, seconds, check=lambda out: check(out, image))


def imagezmq_peer(endpoint: str, image: np.ndarray, inflight: int, seconds: float) -> float:
    import imagezmq

    def connect() -> tuple[RoundTrip, Callable[[], None]]:
        sender = imagezmq.ImageSender(connect_to=endpoint)
        reply = lambda: np.frombuffer(sender.send_image("frame", image), dtype=image.dtype).reshape(image.shape)  # noqa: E731
        return reply, sender.close

    return threaded(connect, image, inflight, seconds)


def http_peer(url: str, image: np.ndarray, inflight: int, seconds: float) -> float:
    import requests

    headers = {"content-type": "application/octet-stream", "x-shape": ",".join(map(str, image.shape)), "x-dtype": str(image.dtype)}

    def connect() -> tuple[RoundTrip, Callable[[], None]]:
        session = requests.Session()

        def round_trip() -> np.ndarray:
            response = session.post(url, data=image.tobytes(), headers=headers)
            response.raise_for_status()
            shape = tuple(int(n) for n in response.headers["x-shape"].split(","))
            return np.frombuffer(response.content, dtype=response.headers["x-dtype"]).reshape(shape)

        return round_trip, session.close

    return threaded(connect, image, inflight, seconds)


CLIENTS = {"raw pyzmq": raw_pyzmq, "zmqproc": zmqproc, "bare DEALER": bare_dealer, "imagezmq": imagezmq_peer, "FastAPI": http_peer}


# ---- drivers -------------------------------------------------------------------------------------------------------


def check(reply: np.ndarray, image: np.ndarray) -> None:
    if not np.array_equal(reply, image):
        raise AssertionError("the echo did not return the image")


def checked_rate(round_trip: RoundTrip, image: np.ndarray, seconds: float) -> float:
    check(round_trip(), image)
    return rate(round_trip, seconds)


def pipelined(send: Callable[[], None], receive: RoundTrip, image: np.ndarray, inflight: int, seconds: float) -> float:
    """One socket with ``inflight`` requests outstanding: a reply is answered by the next request."""
    send()
    check(receive(), image)
    for _ in range(inflight):
        send()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        receive()
        count += 1
        send()
    for _ in range(inflight):
        receive()
    return count / elapsed


def threaded(connect: Callable[[], tuple[RoundTrip, Callable[[], None]]], image: np.ndarray, inflight: int, seconds: float) -> float:
    """Lockstep clients: ``inflight`` threads, each with its own connection, calling its round trip in a loop."""
    if inflight == 1:
        round_trip, close = connect()
        try:
            return checked_rate(round_trip, image, seconds)
        finally:
            close()
    counts = [0] * inflight
    start_line = threading.Barrier(inflight + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        round_trip, close = connect()
        try:
            check(round_trip(), image)
            start_line.wait()
            while not stop.is_set():
                round_trip()
                counts[i] += 1
        finally:
            close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(inflight)]
    for t in threads:
        t.start()
    start_line.wait(timeout=30)
    start = time.perf_counter()
    time.sleep(seconds)
    total = sum(counts)
    elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    return total / elapsed


# ---- report --------------------------------------------------------------------------------------------------------


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: round trips/s per peer, then zmqproc's ratio to each."""
    others = [p for p in PEERS if p != "zmqproc"]
    head = "| workload | " + " | ".join(PEERS) + " | " + " | ".join(f"zmqproc / {p}" for p in others) + " |"
    lines = [head, "|---" * (1 + len(PEERS) + len(others)) + "|"]
    for workload, row in results.items():
        rates = " | ".join(f"{row[p]:.0f}" if row[p] >= 10 else f"{row[p]:.1f}" for p in PEERS)
        ratios = " | ".join(f"{row['zmqproc'] / row[p]:.2f}×" for p in others)
        lines.append(f"| {workload} | {rates} | {ratios} |")
    return "\n".join(lines)


def chart(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results)
    x = np.arange(len(workloads))
    width = 0.8 / len(PEERS)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, peer in enumerate(PEERS):
        ax.bar(x + (i - (len(PEERS) - 1) / 2) * width, [results[w][peer] for w in workloads], width, label=peer)
    ax.set_xticks(x, workloads, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("round trips/s (log scale)")
    ax.set_title("Echo of a BGR uint8 frame on 127.0.0.1 (one run, 2 cores)")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def section(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    izmq = [row["imagezmq"] / row["raw pyzmq"] for row in results.values()]
    low, high = min(izmq), max(izmq)
    goals = []
    for workload, row in results.items():
        ratio, cap = row["zmqproc"] / row["imagezmq"], row["bare DEALER"] / row["imagezmq"]
        met = "met" if ratio >= 1.0 else "MISSED"
        goals.append(f"| {workload} | {ratio:.2f}× {met} | {cap:.2f}× | {row['zmqproc'] / row['bare DEALER']:.2f}× |")
    rows = "\n".join(goals)
    return f"""## Peers

`make bench-peers` (part of `make bench`; it installs the `bench` extra), or
`flock /tmp/zmqproc-test.lock flock /tmp/zmqproc-bench.lock .venv/bin/python bench/peers.py --seconds {args.seconds:g}
--repeat {args.repeat}`.
Echo (identity) of a random BGR uint8 frame, round trips/s, each figure the best of {args.repeat} rounds of {args.seconds:g} s
in which the peers take turns; every server a separate process on 127.0.0.1, all measured in one run
({datetime.now(UTC):%Y-%m-%d %H:%M} UTC) on the 2-core machine (client and server share its two cores): the figures
are noisy (±30 % between runs is common); compare within a row. Every client checks that the echo equals the image.

- raw pyzmq: zero-copy DEALER/ROUTER echo (`bench/harness.py`), one DEALER; the practical limit.
- zmqproc: `Client.process(image, "identity")`, and `Client.submit` with 8 futures outstanding
  (`concurrent.futures.wait(FIRST_COMPLETED)`, `bench/harness.py`); the server with default settings (2 workers).
- bare DEALER: the same zmqproc server, driven by a bare pyzmq DEALER with hand-built requests, pipelined like raw pyzmq:
  what the server allows with no client library at all.
- imagezmq: `ImageSender.send_image` (REQ) to an `ImageHub` (REP) that answers `recv_image` with `send_reply(image)`: the
  reply is imagezmq's own plain reply frame carrying the pixels (the sender knows the shape it sent). REQ/REP is lockstep, so
  8 in flight = 8 senders in 8 threads against the one hub.
- FastAPI: uvicorn (httptools, uvloop), `POST` with an `application/octet-stream` body (`image.tobytes()`), shape and dtype
  in headers both ways, `requests.Session`; 8 in flight = 8 threads with a Session each.

{table(results)}

The goal of issue 11, at least 1.0× imagezmq in every row, and what stands in its way: "server cap" is the bare DEALER
against imagezmq, the most any client could reach with this server; "client's share" is zmqproc against the bare
DEALER (1.00× would be a client that costs nothing). See Core for where the microseconds go.

| workload | zmqproc / imagezmq | server cap (bare DEALER / imagezmq) | client's share (zmqproc / bare DEALER) |
|---|---|---|---|
{rows}

imagezmq is a thin layer over pyzmq REQ/REP (a JSON metadata frame, the pixels zero-copy out, the reply copied once into
bytes): it ran at {low:.2f}-{high:.2f}× raw pyzmq here.

![peers](peers.png)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0, help="length of one measurement")
    p.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the best of its rounds")
    p.add_argument("--no-docs", action="store_true", help="print only; do not write docs/")
    args = p.parse_args()
    missing = [name for name in ("imagezmq", "fastapi", "uvicorn", "requests", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"bench/peers.py needs the bench extras ({', '.join(missing)} missing): .venv/bin/pip install -e '.[bench]'")
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, shape, dtype=np.uint8) for name, shape in SIZES.items()}
    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        endpoints = {
            "raw pyzmq": stack.enter_context(raw_echo_server()),
            "zmqproc": (zmqproc_endpoint := stack.enter_context(zmqproc_server(2))),
            "bare DEALER": zmqproc_endpoint,
            "imagezmq": stack.enter_context(imagezmq_server()),
            "FastAPI": stack.enter_context(http_server()),
        }
        for inflight in (1, INFLIGHT):
            for size, image in images.items():
                workload = f"{size}, {'sequential' if inflight == 1 else f'{inflight} in flight'}"
                row = results[workload] = dict.fromkeys(PEERS, 0.0)
                for _ in range(args.repeat):  # peers take turns in every round, so a burst of load hits them alike
                    for peer in PEERS:
                        row[peer] = max(row[peer], CLIENTS[peer](endpoints[peer], image, inflight, args.seconds))
                print(f"{workload:<22} " + "  ".join(f"{peer} {row[peer]:8.1f}/s" for peer in PEERS), flush=True)
    print()
    print(table(results))
    if not args.no_docs:
        chart(results, ROOT / "docs" / "peers.png")
        write_section(ROOT / "docs" / "benchmarks.md", section(results, args))
        print("\nwrote docs/peers.png and the '## Peers' section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
