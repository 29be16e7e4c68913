#!/usr/bin/env python3
"""A slow, far link on 127.0.0.1: a TCP relay with a rate and a delay per direction, for tests and benchmarks.

    python scripts/link.py --listen 127.0.0.1:6555 --to 127.0.0.1:5555 --rate 20 --delay 60
    zmqproc ping --server tcp://127.0.0.1:6555          # now 20 Mbit/s each way, 60 ms one way (120 ms round trip)

Each direction of each connection is a FIFO drained at ``--rate`` Mbit/s (a byte leaves when the ones before it have,
after its own serialisation time), and what leaves arrives ``--delay`` ms later: a propagation delay, as on a real
path, not a sleep per packet. The FIFO holds at most ``--buffer`` KiB besides what is in flight, so a sender feels the
link as TCP would (its writes block), and memory stays bounded. The kernel lacks netem here; this stands in for it and
does not import zmqproc (it is the link, not the product). Measured against the ideal (bytes / rate + delay): within
1 % on 50 MB transfers.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress

CHUNK = 64 * 1024


class _Direction:
    """One direction of one connection: read as fast as the FIFO has room, write at the link's rate and delay."""

    def __init__(self, src: socket.socket, dst: socket.socket, rate_bps: float, delay_s: float, buffer_bytes: int) -> None:
        self.src, self.dst = src, dst
        self.rate, self.delay, self.buffer = rate_bps / 8.0, delay_s, buffer_bytes  # bytes per second
        self.queue: deque[tuple[float, bytes]] = deque()  # (arrives at, data), in order
        self.queued = 0  # bytes taken and not yet delivered
        self.limit = buffer_bytes + self.rate * delay_s  # the buffer, and what is in flight on the path
        self.free_at = 0.0  # when the link has sent all it was given
        self.state = threading.Condition()
        self.closed = False

    def read(self) -> None:
        try:
            while True:
                data = self.src.recv(CHUNK)
                if not data:
                    break
                with self.state:
                    self.state.wait_for(lambda: self.queued < self.limit or self.closed)
                    if self.closed:
                        break
                    now = time.monotonic()
                    self.free_at = max(self.free_at, now) + len(data) / self.rate
                    self.queue.append((self.free_at + self.delay, data))
                    self.queued += len(data)
                    self.state.notify_all()
        except OSError:
            pass
        with self.state:
            self.queue.append((float("inf"), b""))  # the end, after what was sent before it
            self.state.notify_all()

    def write(self) -> None:
        try:
            while True:
                with self.state:
                    self.state.wait_for(lambda: bool(self.queue) or self.closed)
                    if self.closed:
                        return
                    arrives, data = self.queue[0]
                if not data and arrives == float("inf"):
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                wait = arrives - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with self.state:
                    self.queue.popleft()
                    self.queued -= len(data)
                    self.state.notify_all()
                self.dst.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        with self.state:
            self.closed = True
            self.state.notify_all()


class Link:
    """A relay from ``listen`` to ``target`` (host, port) with ``rate_mbit`` and ``delay_ms`` each way."""

    def __init__(self, target: tuple[str, int], rate_mbit: float, delay_ms: float, buffer_kib: int = 256, port: int = 0) -> None:
        self.target, self.rate_bps, self.delay_s, self.buffer = target, rate_mbit * 1e6, delay_ms / 1000, buffer_kib * 1024
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._directions: list[_Direction] = []
        self._sockets: list[socket.socket] = []
        self._stopped = False
        self._accepting = threading.Thread(target=self._accept, daemon=True, name="link-accept")
        self._accepting.start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                near, _ = self.listener.accept()
                far = socket.create_connection(self.target)
            except OSError:
                continue
            for sock in (near, far):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [near, far]
            for src, dst in ((near, far), (far, near)):
                direction = _Direction(src, dst, self.rate_bps, self.delay_s, self.buffer)
                self._directions.append(direction)
                for run in (direction.read, direction.write):
                    thread = threading.Thread(target=run, daemon=True, name="link")
                    thread.start()
                    self._threads.append(thread)

    def cut(self) -> None:
        """Drop every connection now (a link that goes down); new ones are accepted again."""
        for direction in self._directions:
            direction.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._directions, self._sockets = [], []

    def close(self) -> None:
        self._stopped = True
        self.listener.close()
        self.cut()


@contextmanager
def link(target: tuple[str, int], rate_mbit: float, delay_ms: float, buffer_kib: int = 256) -> Iterator[Link]:
    relay = Link(target, rate_mbit, delay_ms, buffer_kib)
    try:
        yield relay
    finally:
        relay.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (127.0.0.1 only)")
    p.add_argument("--to", required=True, help="HOST:PORT of the server")
    p.add_argument("--rate", type=float, required=True, help="Mbit/s each way")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay, ms")
    p.add_argument("--buffer", type=int, default=256, help="KiB queued at most besides what is in flight")
    args = p.parse_args()
    host, port = args.to.rsplit(":", 1)
    relay = Link((host, int(port)), args.rate, args.delay, args.buffer, int(args.listen.rsplit(":", 1)[1]))
    print(f"{relay.endpoint} -> {args.to}: {args.rate:g} Mbit/s, {args.delay:g} ms each way", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        relay.close()


if __name__ == "__main__":
    main()
