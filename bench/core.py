"""Core figures (issue 2): zmqproc against raw pyzmq zero-copy echo, and 2 workers against 1.

    .venv/bin/python bench/core.py [--seconds 3]

Each ratio is taken from numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import best_of, cpu_seconds, inflight_rate, rate, raw_echo_server, zmqproc_server, zmqproc_server_process  # noqa: E402
from zmqproc import Client  # noqa: E402


def raw_echo_rate(endpoint: str, image: np.ndarray, seconds: float) -> float:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    header = msgpack.packb({"v": 1, "id": "x", "kind": "process"})

    def round_trip() -> None:
        sock.send_multipart([header, image], copy=False)
        sock.recv_multipart(copy=False)

    try:
        return rate(round_trip, seconds)
    finally:
        sock.close()


def zmqproc_rate(endpoint: str, image: np.ndarray, seconds: float) -> float:
    with Client(endpoint) as client:
        return rate(lambda: client.process(image, "identity"), seconds)


def client_inflight_rate(endpoint: str, image: np.ndarray, pipeline: str, inflight: int, seconds: float) -> float:
    """Requests/s with ``inflight`` requests always outstanding."""
    with Client(endpoint, timeout=60) as client:
        return inflight_rate(lambda: client.submit(image, pipeline), inflight, seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per figure")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    hd = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    tiny = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rows = []
    for label, image, goal in (("1080p BGR identity", hd, 0.85), ("64x64 BGR identity", tiny, 0.7)):
        with raw_echo_server() as ep:
            raw = best_of(args.repeat, lambda ep=ep, image=image: raw_echo_rate(ep, image, args.seconds))
        with zmqproc_server() as ep:
            ours = best_of(args.repeat, lambda ep=ep, image=image: zmqproc_rate(ep, image, args.seconds))
        rows.append((label, f"raw pyzmq echo {raw:.0f}/s", f"zmqproc {ours:.0f}/s", ours / raw, goal))
    blur = "gaussian_blur:ksize=15"
    cpu_rows = []
    for ipc in (False, True):
        results = {}
        for workers in (1, 2):
            with zmqproc_server_process(workers, ipc=ipc) as (ep, pid):
                results[workers] = best_of(args.repeat, lambda ep=ep: client_inflight_rate(ep, hd, blur, 8, args.seconds))
                server0, client0, t0 = cpu_seconds(pid), cpu_seconds(), time.perf_counter()
                per_second = client_inflight_rate(ep, hd, blur, 8, args.seconds)
                elapsed = time.perf_counter() - t0
                server_cpu, client_cpu = cpu_seconds(pid) - server0, cpu_seconds() - client0
                n = per_second * elapsed
                cpu_rows.append((ipc, workers, 1000 * server_cpu / n, 1000 * client_cpu / n, (server_cpu + client_cpu) / elapsed))
        label = f"1080p gaussian_blur k15, 8 in flight, {'ipc' if ipc else 'tcp'}"
        rows.append((label, f"1 worker {results[1]:.1f}/s", f"2 workers {results[2]:.1f}/s", results[2] / results[1], 1.7))
    print(f"{'workload':<44} {'baseline':<24} {'measured':<24} {'ratio':>6}  goal")
    for label, base, ours, ratio, goal in rows:
        print(f"{label:<44} {base:<24} {ours:<24} {ratio:6.2f}  >= {goal} {'met' if ratio >= goal else 'MISSED'}")
    print(f"\nwhere the CPU goes ({os.cpu_count()} cores; server and client on this machine):")
    for ipc, workers, server_ms, client_ms, cores in cpu_rows:
        print(
            f"  {'ipc' if ipc else 'tcp'}, {workers} worker(s): server {server_ms:.2f} ms CPU/request (blur, decode, transport), "
            f"client {client_ms:.2f} ms CPU/request, {cores:.2f} cores busy"
        )


if __name__ == "__main__":
    main()
