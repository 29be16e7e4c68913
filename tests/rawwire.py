"""A raw pyzmq DEALER speaking the wire contract by hand, for tests that check the server's answers."""

from __future__ import annotations

from typing import Any

import msgpack
import zmq


class RawDealer:
    def __init__(self, endpoint: str, timeout_ms: int = 10000) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.sock.connect(endpoint)

    def send(self, header: Any, *payload: bytes, raw_header: bytes | None = None) -> None:
        head = raw_header if raw_header is not None else msgpack.packb(header)
        self.sock.send_multipart([head, *payload])

    def recv(self) -> tuple[dict[str, Any], list[bytes]]:
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[0]), frames[1:]

    def call(self, header: Any, *payload: bytes, raw_header: bytes | None = None) -> tuple[dict[str, Any], list[bytes]]:
        self.send(header, *payload, raw_header=raw_header)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def server_stats(endpoint: str) -> dict[str, Any]:
    """The server's ``stats`` reply, asked on a connection of its own."""
    dealer = RawDealer(endpoint)
    try:
        return dealer.call({"v": 1, "id": "stats", "kind": "stats"})[0]
    finally:
        dealer.close()


def holds(endpoint: str, running: int, queued: int) -> bool:
    """The server has ``running + queued`` requests in flight, ``queued`` of them still in its queue."""
    stats = server_stats(endpoint)
    return stats["in_flight"] == running + queued and stats["queue_length"] == queued


def process_header(request_id: str, shape: list[int], pipeline: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "id": request_id,
        "kind": "process",
        "pipeline": pipeline or [{"op": "identity"}],
        "image": {"format": "raw", "dtype": "uint8", "shape": shape},
        **extra,
    }
