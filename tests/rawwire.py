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


class PoliteDealer(RawDealer):
    """A raw DEALER that follows the credit contract (docs/protocol.md, Flow control), so a healthy server never says busy."""

    def __init__(self, endpoint: str, timeout_ms: int = 60000) -> None:
        super().__init__(endpoint, timeout_ms)
        self.outstanding: dict[str, int] = {}  # request id -> payload bytes
        self.grant: dict[str, int] = {"seq": 0, "requests": 1, "bytes": 0}  # unknown until the first reply: one at a time
        self.call({"v": 1, "id": "credit?", "kind": "ping"})

    def fits(self, nbytes: int) -> bool:
        if not self.outstanding:
            return True
        return len(self.outstanding) < self.grant["requests"] and sum(self.outstanding.values()) + nbytes <= self.grant["bytes"]

    def submit(self, header: dict[str, Any], payload: bytes) -> None:
        self.send({**header, "credit_seq": self.grant["seq"]}, payload)
        self.outstanding[header["id"]] = len(payload)

    def recv(self) -> tuple[dict[str, Any], list[bytes]]:
        header, frames = super().recv()
        self.grant = header.get("credit", self.grant)
        self.outstanding.pop(header["id"], None)
        return header, frames
