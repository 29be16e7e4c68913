"""A flood of random and mutated messages at a real server process: it stays up, answers each one, and its memory stays bounded.

Messages (seeded, so a failure can be replayed): random frames, garbage msgpack,
valid requests of every kind, valid requests with one key deleted or retyped,
truncated headers, huge declared shapes, encoded files claiming huge sizes,
payloads over the frame limit, wrong frame counts. Every message under libzmq's
ZMQ_MAXMSGSIZE reaches the server application and must get exactly one reply;
one frame over it is cut by libzmq (the peer is disconnected) and gets none.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from typing import Any

import msgpack
import zmq

from tests.hostile import tiff_claiming
from tests.rawwire import RawDealer
from zmqproc.client.threaded import Client
from zmqproc.ops.registry import REGISTRY

SEED = int(os.environ.get("ZMQPROC_FLOOD_SEED", "7"))
MESSAGES = 20_000
SOCKETS = 4
WINDOW = 100  # unanswered messages per socket: the test reads while it sends, so no reply is dropped for a full pipe
WORKERS, MAX_QUEUE = 2, 16
MAX_FRAME_BYTES = 1 << 20
MAX_PIXELS = 250_000
MiB = 1 << 20


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def rss_bound(baseline: int) -> int:
    """Baseline + every queued or running job at the largest allowed size + a fixed margin.

    A queued job holds its payload frame (at most --max-frame-bytes); a running
    one also its decoded image and the output of each step (a 4-channel float32
    image at --max-pixels, counted three times), and its encoded reply. The
    margin covers libzmq's pipes (a window of small messages per socket) and
    Python's allocator not returning freed memory at once.
    """
    per_job = MAX_FRAME_BYTES
    per_running = 3 * MAX_PIXELS * 4 * 4 + MAX_FRAME_BYTES
    return baseline + (MAX_QUEUE + WORKERS) * per_job + WORKERS * per_running + 64 * MiB


TIFF_BOMB = tiff_claiming(30000, 30000)


class Messages:
    """The flood, one message at a time; valid ids are unique so replies can be matched."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.kinds: Counter[str] = Counter()
        self.ops = sorted(REGISTRY)

    def value(self, depth: int = 0) -> Any:
        """A random msgpack value: scalars of every type, nested lists and maps (non-string keys too)."""
        r = self.rng
        choice = r.randrange(9 if depth < 2 else 7)
        if choice == 0:
            return None
        if choice == 1:
            return r.random() < 0.5
        if choice == 2:
            return r.randint(-(2**63), 2**64 - 1)
        if choice == 3:
            return r.choice([r.uniform(-1e9, 1e9), float("nan"), float("inf"), -0.0])
        if choice == 4:
            return "".join(chr(r.randint(0, 0x2FF)) for _ in range(r.randrange(12)))
        if choice == 5:
            return r.randbytes(r.randrange(16))
        if choice == 6:
            return r.randint(-5, 5)
        if choice == 7:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {(r.randrange(9) if r.random() < 0.2 else f"k{r.randrange(9)}"): self.value(depth + 1) for _ in range(r.randrange(4))}

    def valid(self) -> tuple[dict[str, Any], list[bytes]]:
        r = self.rng
        self.n += 1
        kind = r.choice(["ping", "ops", "stats", "cancel", "process", "process", "process"])
        header: dict[str, Any] = {"v": 1, "id": f"m{self.n}", "kind": kind}
        if kind == "cancel":
            header["target"] = f"m{r.randrange(1, self.n + 1)}"
        if kind != "process":
            return header, []
        h, w, c = r.randint(1, 24), r.randint(1, 24), r.choice([1, 3, 4])
        names = ["identity", "invert", "grayscale", "flip", "gaussian_blur", "threshold"]
        steps = [{"op": r.choice(names)} for _ in range(r.randint(1, 3))]
        header.update(pipeline=steps, image={"format": "raw", "dtype": "uint8", "shape": [h, w, c]})
        if r.random() < 0.3:
            header["reply_format"] = r.choice(["raw", "png", "jpeg", "webp"])
        return header, [r.randbytes(h * w * c)]

    def next(self) -> tuple[str, list[bytes]]:
        r = self.rng
        kind = r.choice(
            ["random", "garbage_msgpack", "valid", "mutated", "truncated", "huge_shape", "bomb", "over_frame_limit", "frame_count"]
        )
        if kind == "over_frame_limit" and r.random() > 0.02:  # 1.5 MiB each: a few, not thousands
            kind = "valid"
        self.kinds[kind] += 1
        if kind == "random":
            return kind, [r.randbytes(r.randrange(200)) for _ in range(r.randint(1, 3))]
        if kind == "garbage_msgpack":
            return kind, [msgpack.packb(self.value(), use_bin_type=True)] + [r.randbytes(8)] * r.randrange(2)
        header, payload = self.valid()
        if kind == "mutated":
            key = r.choice(list(header))
            if r.random() < 0.3:
                del header[key]
            else:
                header[key] = self.value()
            if "image" in header and isinstance(header["image"], dict) and r.random() < 0.5:
                header["image"][r.choice(["format", "dtype", "shape", "x"])] = self.value()
        elif kind == "huge_shape":
            header.update(kind="process", pipeline=[{"op": "identity"}])
            header["image"] = {"format": "raw", "dtype": r.choice(["uint8", "float32"]), "shape": [r.randint(10**4, 2**40), 10**5, 3]}
            payload = [r.randbytes(64)]
        elif kind == "bomb" and r.random() < 0.1:  # TIFF: sized by OpenCV's own limit, in a worker
            header.update(kind="process", pipeline=[{"op": "identity"}], image={"format": "tiff"})
            payload = [TIFF_BOMB]
        elif kind == "bomb":  # PNG: sized from its header in the socket loop
            header.update(kind="process", pipeline=[{"op": "identity"}], image={"format": "png"})
            ihdr = struct.pack(">II", r.randint(10**4, 2**31), r.randint(10**4, 2**31)) + bytes([8, 2, 0, 0, 0])
            payload = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + ihdr + r.randbytes(200)]
        elif kind == "over_frame_limit":
            header.update(kind="process", pipeline=[{"op": "identity"}], image={"format": "raw", "dtype": "uint8", "shape": [1024, 1536]})
            payload = [bytes(1536 * 1024)]
        elif kind == "frame_count":
            payload = payload[:0] if payload else [b"x"] * r.randint(1, 3)
        head = msgpack.packb(header, use_bin_type=True)
        if kind == "truncated":
            head = head[: r.randrange(len(head))]
        return kind, [head, *payload]


def test_flood(start_server) -> None:
    srv = start_server(
        "--workers", str(WORKERS), "--max-queue", str(MAX_QUEUE),
        "--max-frame-bytes", str(MAX_FRAME_BYTES), "--max-pixels", str(MAX_PIXELS),
    )  # fmt: skip
    pid = srv.proc.pid
    with Client(srv.endpoint, timeout=10) as client:
        client.ping()
    baseline = rss_bytes(pid)
    bound = rss_bound(baseline)

    ctx = zmq.Context.instance()
    socks = []
    for _ in range(SOCKETS):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(srv.endpoint)
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)

    messages = Messages(SEED)
    sent = [0] * SOCKETS
    answered = [0] * SOCKETS
    reply_ids: Counter[Any] = Counter()
    codes: Counter[str] = Counter()
    peak = baseline
    started = time.monotonic()
    last_reply = started
    total = 0
    while total < MESSAGES or sum(answered) < total:
        for i, s in enumerate(socks):
            while total < MESSAGES and sent[i] - answered[i] < WINDOW:
                _, frames = messages.next()
                s.send_multipart(frames)
                sent[i] += 1
                total += 1
        for s, _ in poller.poll(200):
            i = socks.index(s)
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                answered[i] += 1
                last_reply = time.monotonic()
                header = msgpack.unpackb(frames[0])
                reply_ids[header["id"]] += 1
                codes[header["status"] if header["status"] == "ok" else header["error"]["code"]] += 1
        peak = max(peak, rss_bytes(pid))
        assert srv.proc.poll() is None, "the server died:\n" + srv.output()[-3000:]
        assert time.monotonic() - last_reply < 15, f"no reply for 15 s: {sum(answered)} of {total} answered"
    elapsed = time.monotonic() - started

    # one frame over ZMQ_MAXMSGSIZE (2 x the frame limit): libzmq drops the connection, the application never sees it
    cut = ctx.socket(zmq.DEALER)
    cut.setsockopt(zmq.LINGER, 0)
    cut.connect(srv.endpoint)
    cut.send_multipart([msgpack.packb({"v": 1, "id": "cut", "kind": "ping"}), bytes(2 * MAX_FRAME_BYTES + 1)])
    assert cut.poll(1000) == 0, "a frame over ZMQ_MAXMSGSIZE must not be answered"
    cut.close()
    for s in socks:
        s.close()

    with Client(srv.endpoint, timeout=10) as client:
        assert client.ping() < 10
        stats = client.stats()
    peak = max(peak, rss_bytes(pid))
    duplicated = {k: n for k, n in reply_ids.items() if k is not None and n > 1}
    print(
        f"\nflood: {total} messages ({dict(messages.kinds)}) in {elapsed:.1f} s, {sum(answered)} replies {dict(codes)};"
        f" server saw {stats['requests']} requests, dropped {stats['dropped_replies']} replies;"
        f" RSS baseline {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB"
    )
    assert sum(answered) == total and sent == answered, "every message must get exactly one reply"
    assert not duplicated, f"ids answered more than once: {list(duplicated)[:5]}"
    assert stats["dropped_replies"] == 0
    assert stats["requests"] == total + 5  # the flood, two pings, two clients' hello pings and this stats request; not the cut frame
    assert "internal" not in stats["errors"], "an input reached an unexpected exception:\n" + srv.output()[-3000:]
    assert codes["ok"] > 0 and codes["bad_request"] > 0 and codes["too_large"] > 0
    assert peak <= bound, f"peak RSS {peak / MiB:.1f} MiB over the bound {bound / MiB:.1f} MiB"
    assert "Traceback" not in srv.output()


def test_tiff_bomb_meets_opencvs_pixel_limit(start_server) -> None:
    """--max-pixels also sets OPENCV_IO_MAX_IMAGE_PIXELS: a TIFF claiming 30000x30000 is too_large, not an internal error."""
    srv = start_server("--workers", "1", "--max-pixels", str(MAX_PIXELS))
    dealer = RawDealer(srv.endpoint)
    try:
        header = {"v": 1, "id": "t1", "kind": "process", "pipeline": [{"op": "identity"}], "image": {"format": "tiff"}}
        reply, _ = dealer.call(header, TIFF_BOMB)
        assert reply["id"] == "t1" and reply["status"] == "error"
        assert reply["error"]["code"] == "too_large", reply
        ok, _ = dealer.call({**header, "id": "t2"}, tiff_claiming(4, 4))
        assert ok["status"] == "ok"
    finally:
        dealer.close()
    assert "Traceback" not in srv.output()
