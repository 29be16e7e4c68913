"""Payloads in parts against a real server process, spoken by hand with pyzmq (docs/protocol.md, "Payloads in parts").

The socket loop moves the parts; a worker's output segment holding a result in parts must not take another result
until the core lets it go (a reused segment would change the bytes a later fetch sends).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from tests.rawwire import RawDealer, process_header, server_stats
from zmqproc.protocol import PART_BYTES

INVERT = [{"op": "invert"}]
SMOOTH = [{"op": "bilateral_filter", "params": {"d": 3}}]  # a heavy op: a worker's job, its result in a shared segment


@pytest.fixture
def one_worker(start_server):
    return start_server("--workers", "1")


@pytest.fixture
def raw(one_worker):
    dealer = RawDealer(one_worker.endpoint, timeout_ms=30_000)
    yield dealer
    dealer.close()


def send_parts(raw: RawDealer, target: str, payload: bytes) -> None:
    for offset in range(0, len(payload), PART_BYTES):
        raw.send(
            {"v": 1, "id": f"{target}@{offset}", "kind": "part", "target": target, "offset": offset}, payload[offset : offset + PART_BYTES]
        )


def fetch(raw: RawDealer, target: str, offset: int, length: int) -> bytes:
    header, frames = raw.call({"v": 1, "id": f"f{offset}", "kind": "fetch", "target": target, "offset": offset, "length": length})
    assert header["status"] == "ok", header
    return frames[0]


def fetch_rest(raw: RawDealer, target: str, total: int) -> bytes:
    return b"".join(fetch(raw, target, offset, min(PART_BYTES, total - offset)) for offset in range(PART_BYTES, total, PART_BYTES))


def collect(raw: RawDealer, count: int) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
    replies = {}
    for _ in range(count):
        header, frames = raw.recv()
        replies[header["id"]] = (header, frames)
    return replies


def test_a_12_mp_image_goes_up_and_comes_back_in_parts_byte_exact(raw, one_worker):
    image = np.random.default_rng(12).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)  # 12 MP, 36 MB
    payload = image.tobytes()
    whole, frames = raw.call(process_header("whole", list(image.shape), SMOOTH), payload)
    assert whole["status"] == "ok" and "parts" not in whole
    expected = frames[0]
    assert whole["credit"]["part_bytes"] == PART_BYTES

    raw.send(process_header("parted", list(image.shape), SMOOTH, parts={"up": len(payload), "down": True}))
    send_parts(raw, "parted", payload)
    raw.send({"v": 1, "id": "ping", "kind": "ping"})  # behind the parts, not behind one 36 MB message
    count = -(-len(payload) // PART_BYTES)
    replies = collect(raw, count + 2)
    received = [replies[f"parted@{offset}"][0]["received"] for offset in range(0, len(payload), PART_BYTES)]
    assert received == [min(len(payload), offset + PART_BYTES) for offset in range(0, len(payload), PART_BYTES)]
    assert replies["ping"][0]["status"] == "ok"
    header, first = replies["parted"]
    assert header["status"] == "ok" and header["parts"] == {"bytes": len(expected)} and header["image"] == whole["image"]
    assert len(first[0]) == PART_BYTES
    stats = server_stats(one_worker.endpoint)
    assert stats["held_results"] == 1 and stats["memory"]["held_result_bytes"] == len(expected)
    assert first[0] + fetch_rest(raw, "parted", len(expected)) == expected
    stats = server_stats(one_worker.endpoint)
    assert stats["held_results"] == 0 and stats["uploads"] == 0 and stats["errors"] == {}


def test_a_result_held_for_fetches_keeps_its_bytes_while_the_worker_makes_others(raw):
    shape = [800, 1000, 3]  # 2.4 MB results: their segments are kept for the worker's next results
    blur = SMOOTH  # smoothing one grey leaves that grey: each result is its own image
    images = [np.full(shape, 10 * i, np.uint8) for i in range(4)]
    header, first = raw.call(process_header("held", shape, blur, parts={"down": True}), images[0].tobytes())
    assert header["parts"] == {"bytes": images[0].nbytes}
    for i, image in enumerate(images[1:], 1):  # the only worker makes more results of the same size meanwhile
        other, frames = raw.call(process_header(f"other{i}", shape, blur), image.tobytes())
        assert other["status"] == "ok" and frames[0] == image.tobytes()
    assert first[0] + fetch_rest(raw, "held", images[0].nbytes) == images[0].tobytes()


def test_cancel_and_errors_of_parts_on_the_wire(raw, one_worker):
    shape = [1000, 1000, 3]
    header, _ = raw.call({"v": 1, "id": "x", "kind": "part", "target": "nobody", "offset": 0}, b"abc")
    assert header["status"] == "error" and header["error"]["code"] == "bad_request"
    raw.send(process_header("up", shape, INVERT, parts={"up": 3_000_000}))
    header, _ = raw.call({"v": 1, "id": "p0", "kind": "part", "target": "up", "offset": 0}, bytes(PART_BYTES))
    assert header["received"] == PART_BYTES
    assert server_stats(one_worker.endpoint)["memory"]["upload_bytes"] == 3_000_000
    raw.send({"v": 1, "id": "c", "kind": "cancel", "target": "up"})
    replies = collect(raw, 2)
    assert replies["up"][0]["error"]["code"] == "cancelled" and replies["c"][0]["cancelled"] is True
    stats = server_stats(one_worker.endpoint)
    assert stats["uploads"] == 0 and stats["memory"]["upload_bytes"] == 0
    raw.send(process_header("up2", shape, INVERT, parts={"up": 3_000_000}))
    raw.send({"v": 1, "id": "p1", "kind": "part", "target": "up2", "offset": 5}, b"abc")  # the wrong offset ends the upload
    replies = collect(raw, 2)
    assert replies["p1"][0]["error"]["code"] == replies["up2"][0]["error"]["code"] == "bad_request"
    packed = msgpack.packb({"v": 1, "id": "big", "kind": "part", "target": "up2", "offset": 0})
    header, _ = raw.call(None, bytes(PART_BYTES + 1), raw_header=packed)
    assert header["error"]["code"] == "bad_request", "a part over part_bytes"
