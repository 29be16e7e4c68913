"""Where the microseconds of a round trip go (issue 11): the transport, the server, the client library, in one run.

    flock /tmp/zmqproc-test.lock flock /tmp/zmqproc-bench.lock .venv/bin/python bench/round_trip.py [--size 64x64] [--seconds 2]

Identity of a random BGR uint8 frame on 127.0.0.1, server with default settings (2 workers). Sequential:
- raw echo: a bare pyzmq DEALER against a zero-copy ROUTER echo (harness.raw_echo_server): the transport alone;
- bare DEALER: the same DEALER with hand-built requests against the zmqproc server: the transport plus the server;
- Client: ``Client.process``, its round trip split where its socket calls are (pyzmq's ``Socket.send``/``recv`` timed):
  the client before the send, the send calls, wire and server, the client after the reply.
Then 8 in flight (``Client.submit``, futures): round trips/s and each client thread's CPU time per request; and the
session alone (``ClientSession``, no sockets: a request, the fake server's reply, the events), µs per request and reply.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import msgpack
import numpy as np
import zmq
from zmq.sugar.socket import Socket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import best_of, inflight_rate, rate, raw_echo_server, zmqproc_server  # noqa: E402
from zmqproc import Client  # noqa: E402
from zmqproc.client.session import ClientSession  # noqa: E402
from zmqproc.protocol import Credit, encode_reply  # noqa: E402


def bare_rate(endpoint: str, image: np.ndarray, seconds: float) -> float:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    desc = {"format": "raw", "dtype": "uint8", "shape": list(image.shape)}
    header = msgpack.packb({"v": 1, "id": "x", "kind": "process", "pipeline": [{"op": "identity"}], "image": desc})

    def round_trip() -> None:
        sock.send_multipart([header, image], copy=False)
        sock.recv_multipart(copy=False)

    try:
        return best_of(3, lambda: rate(round_trip, seconds))
    finally:
        sock.close()


def client_phases(client: Client, image: np.ndarray, n: int) -> dict[str, float]:
    """Mean µs of each part of ``client.process``, found by timing pyzmq's send and recv calls."""
    marks: dict[str, float] = {}
    send, recv = Socket.send, Socket.recv

    def timed_send(self: Socket, *args: object, **kwargs: object) -> object:
        marks.setdefault("send0", time.perf_counter())
        out = send(self, *args, **kwargs)  # type: ignore[arg-type]
        marks["send1"] = time.perf_counter()
        return out

    def timed_recv(self: Socket, *args: object, **kwargs: object) -> object:
        out = recv(self, *args, **kwargs)  # type: ignore[arg-type]
        marks.setdefault("recv0", time.perf_counter())
        return out

    Socket.send, Socket.recv = timed_send, timed_recv  # type: ignore[method-assign]
    try:
        total: dict[str, float] = defaultdict(float)
        for _ in range(n):
            marks.clear()
            started = time.perf_counter()
            client.process(image, "identity")
            ended = time.perf_counter()
            total["client, before the send"] += marks["send0"] - started
            total["the send calls"] += marks["send1"] - marks["send0"]
            total["wire and server"] += marks["recv0"] - marks["send1"]
            total["client, after the reply"] += ended - marks["recv0"]
            total["round trip"] += ended - started
        return {part: seconds / n * 1e6 for part, seconds in total.items()}
    finally:
        Socket.send, Socket.recv = send, recv  # type: ignore[method-assign]


def session_alone(image: np.ndarray, n: int = 20000) -> float:
    """µs of ClientSession work for one process request and its reply, without sockets (the reply built beforehand)."""
    session = ClientSession(["tcp://127.0.0.1:1"])
    session.connected(0, 0.0)
    session.tick(0.0)
    (hello,) = session.sends(0.0)
    credit = Credit(1, 32, 1 << 30)
    session.receive(0, encode_reply(msgpack.unpackb(hello.frames[0])["id"], "E", {"time": 0.0}, credit=credit), 0.0)
    desc = {"image": {"format": "raw", "dtype": "uint8", "shape": list(image.shape)}, "server_ms": 0.1}
    payload = memoryview(image).cast("B")
    started = time.perf_counter()
    for _ in range(n):
        now = time.monotonic()
        request_id = session.submit_process(image, "identity", 10.0, now)
        session.tick(now)
        session.sends(now)
        session.receive(0, [encode_reply(request_id, "E", desc, None, credit)[0], payload], now)
        session.tick(now)
        session.events()
        session.next_wakeup()
    return (time.perf_counter() - started) / n * 1e6


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by name."""
    out: dict[str, float] = defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
        with open(f"{task}/comm") as comm, open(f"{task}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            out[comm.read().strip()] += (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="64x64", help="WxH of the frame (default %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    with raw_echo_server() as endpoint:
        echo = bare_rate(endpoint, image, args.seconds)
    with zmqproc_server(2) as endpoint:
        bare = bare_rate(endpoint, image, args.seconds)
        with Client(endpoint, timeout=30) as client:
            phases = client_phases(client, image, max(1000, int(args.seconds * 2000)))
            inflight_rate(lambda: client.submit(image, "identity"), 8, 0.5)
            before, started = thread_cpu(), time.perf_counter()
            per_second = inflight_rate(lambda: client.submit(image, "identity"), 8, args.seconds)
            requests = per_second * (time.perf_counter() - started)
            after = thread_cpu()
    us = lambda per_second: 1e6 / per_second  # noqa: E731
    print(f"{args.size} identity, sequential round trips:")
    print(f"  raw echo           {echo:7.0f}/s  {us(echo):5.0f} µs  (the transport)")
    print(f"  bare DEALER        {bare:7.0f}/s  {us(bare):5.0f} µs  (+{us(bare) - us(echo):.0f} µs: the zmqproc server)")
    client_us = phases["round trip"]
    print(f"  Client.process     {1e6 / client_us:7.0f}/s  {client_us:5.0f} µs  (+{client_us - us(bare):.0f} µs: the client library)")
    for part in ("client, before the send", "the send calls", "wire and server", "client, after the reply"):
        print(f"    {part:<26} {phases[part]:5.0f} µs")
    print(f"  Client / raw echo {us(echo) / client_us:.2f}x, Client / bare DEALER {us(bare) / client_us:.2f}x")
    print(f"{args.size} identity, 8 futures in flight: {per_second:.0f}/s; CPU per request by thread:")
    for name in sorted(after):
        spent = (after[name] - before.get(name, 0.0)) / requests * 1e6
        if spent >= 1:
            print(f"    {name:<26} {spent:5.0f} µs")
    print(f"the session alone (no sockets; the fake reply's encoding included): {session_alone(image):.1f} µs a request and reply")


if __name__ == "__main__":
    main()
