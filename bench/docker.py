"""What Docker costs (issue 5): identity round trips/s to a local server process vs the container's published port.

    make docker-build && flock /tmp/zmqproc-bench.lock .venv/bin/python bench/docker.py [--image zmqproc-server]

Baseline: ``server_main.py`` as a process on 127.0.0.1. Against it: the image run with ``-p 127.0.0.1:PORT:5555``
(through docker-proxy, Docker's userland relay for loopback), and with ``--network host`` bound to the host's 127.0.0.1
(no relay); same worker count, same Client.
The three take turns in every round and each figure is the best of the rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import free_port, rate, zmqproc_server  # noqa: E402
from zmqproc import Client  # noqa: E402

WORKERS = 2
SIZES = {"1080p": (1080, 1920, 3), "VGA": (480, 640, 3), "64x64": (64, 64, 3)}


@contextmanager
def container(image: str, host_network: bool = False) -> Iterator[str]:
    """Published port (docker-proxy), or ``--network host`` with the server bound to the host's 127.0.0.1."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    where = ["--network", "host"] if host_network else ["-p", f"127.0.0.1:{port}:5555"]
    bind = ["--bind", endpoint] if host_network else []
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", *where, image, *bind, "--workers", str(WORKERS), "--log-level", "warning"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        with Client(endpoint, timeout=5) as probe:  # docker-proxy accepts before the server listens: wait for a reply
            deadline = time.monotonic() + 30
            while True:
                try:
                    probe.ping(timeout=0.5)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        yield endpoint
    finally:
        subprocess.run(["docker", "stop", cid], capture_output=True)


def measure(endpoint: str, image: np.ndarray, in_flight: int, seconds: float) -> float:
    with Client(endpoint, timeout=60) as client:
        if in_flight == 1:

            def one() -> None:
                assert client.process(image, "identity").shape == image.shape

            return rate(one, seconds)

        def batch() -> None:
            futures = [client.submit(image, "identity") for _ in range(in_flight)]
            assert all(f.result().shape == image.shape for f in futures)

        return rate(batch, seconds, warmup=3) * in_flight


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="zmqproc-server")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    ways: dict[str, Callable[[], AbstractContextManager[str]]] = {
        "process": lambda: zmqproc_server(WORKERS),
        "container": lambda: container(args.image),
        "host network": lambda: container(args.image, host_network=True),
    }
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, shape, dtype=np.uint8) for name, shape in SIZES.items()}
    best: dict[tuple[str, str, int], float] = {}
    for _ in range(args.repeat):
        for way, start in ways.items():
            with start() as endpoint:
                for name, image in images.items():
                    for in_flight in (1, 8):
                        key = (way, name, in_flight)
                        best[key] = max(best.get(key, 0.0), measure(endpoint, image, in_flight, args.seconds))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"identity round trips/s, best of {args.repeat} rounds of {args.seconds:g} s, {WORKERS} workers, {when}\n")
    print("| workload | process (baseline) | container -p 127.0.0.1:P:5555 | container --network host | -p / process | host / process |")
    print("|---|---|---|---|---|---|")
    for name in SIZES:
        for in_flight in (1, 8):
            base, published, host = (best[(way, name, in_flight)] for way in ways)
            label = "sequential" if in_flight == 1 else f"{in_flight} in flight"
            print(f"| {name}, {label} | {base:.0f} | {published:.0f} | {host:.0f} | {published / base:.2f}× | {host / base:.2f}× |")


if __name__ == "__main__":
    main()
