#!/usr/bin/env python3
"""Fuzz and soak a zmqproc server with broken image files of our own making (raw pyzmq: it never imports zmqproc).

    python scripts/fuzz.py --endpoint tcp://127.0.0.1:5555 --count 300 --seed 1
    python scripts/fuzz.py --spawn --seconds 600                      # start a server (--max-memory 600M --job-timeout 5)
    python scripts/fuzz.py --spawn --server-args "" --seconds 600 --sample-s 5   # the soak: default settings, flat lines?

A seeded mutator (byte flips, truncations, chunk/marker/tag edits, size fields inflated) works on the shipped samples
encoded in every accepted format; every ``--large-every``-th request is a valid 12 MP image instead. ``--in-flight``
requests stay outstanding, within the server's credit (docs/protocol.md, Flow control), so a healthy server never says
``busy``. A pinger on its own connection measures the loop's latency throughout; with ``--pid`` (implied by
``--spawn``) the server's process tree is sampled: its memory (PSS, so shared pages count once), and the socket loop's
RSS, open descriptors and threads. Exit status 1 when a check failed: an undocumented code, ``internal``, a worker death,
a request without exactly one reply, or (with ``--max-tree-mib`` / ``--max-ping-ms``) memory or latency over the line.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import zmq

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "zmqproc" / "samples"
DOCUMENTED = {"ok", "bad_request", "unsupported_version", "unknown_kind", "unknown_op", "bad_params", "too_large"}
DOCUMENTED |= {"decode_failed", "busy", "timeout", "cancelled", "internal"}  # docs/protocol.md, Errors
FUZZ_SERVER_ARGS = "--max-memory 600M --job-timeout 5"
ENCODINGS = {
    "png": (".png", []),
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "jpeg-progressive": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "webp-lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    "bmp": (".bmp", []),
    "tiff": (".tiff", []),
}
INFLATED = (65535, 65536, 100_000, 46341, 1 << 31, (1 << 32) - 1)


# ---- the corpus and the mutator -------------------------------------------------------------------------------------


def seeds(side: int = 192) -> list[tuple[str, bytes]]:
    """The shipped samples (as shipped, and small in every encoding), gray and with alpha too: (format, bytes)."""
    found: list[tuple[str, bytes]] = []
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix not in (".png", ".jpg"):
            continue
        found.append(("png" if path.suffix == ".png" else "jpeg", path.read_bytes()))
        image = cv2.imread(str(path))
        image = cv2.resize(image, (side, side * image.shape[0] // image.shape[1]))
        variants = [image, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)]
        for name, (ext, params) in ENCODINGS.items():
            for variant in variants if name in ("png", "tiff") else variants[:2]:
                found.append((name.split("-")[0], cv2.imencode(ext, variant, params)[1].tobytes()))
    return found


def large_images() -> list[tuple[str, bytes]]:
    """Valid 12 MP images (4000x3000), as PNG and JPEG."""
    image = cv2.resize(cv2.imread(str(SAMPLES / "astronaut.png")), (4000, 3000))
    return [("png", cv2.imencode(".png", image)[1].tobytes()), ("jpeg", cv2.imencode(".jpg", image)[1].tobytes())]


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each chunk."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((at, length))
        at += 12 + length
    return chunks


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each marker segment before the entropy-coded data, and of every later SOS/DHT/DQT."""
    found, at = [], 2
    while at + 4 <= len(data):
        if data[at] != 0xFF or data[at + 1] in (0x00, 0xFF) or 0xD0 <= data[at + 1] <= 0xD9:
            at += 1
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        found.append((at, length))
        at += 2 + length
    return found


def _tiff_entries(data: bytes) -> list[int]:
    """Offsets of the first IFD's 12-byte entries."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return []
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    return [ifd + 2 + 12 * i for i in range(count) if ifd + 14 + 12 * i <= len(data)]


def _flip(rng: random.Random, fmt: str, data: bytearray) -> str:
    for _ in range(rng.randint(1, 24)):
        at = rng.randrange(min(8, len(data) - 1), len(data))
        data[at] ^= 1 << rng.randrange(8)
    return "byte flips"


def _truncate(rng: random.Random, fmt: str, data: bytearray) -> str:
    del data[rng.randrange(1, len(data)) :]
    return "truncated"


def _structure(rng: random.Random, fmt: str, data: bytearray) -> str:
    """Edit a chunk (png), marker segment (jpeg), IFD entry (tiff), RIFF chunk (webp) or header field (bmp)."""
    if fmt == "png":
        at, length = rng.choice(_png_chunks(bytes(data)))
        edit = rng.choice(["length", "type", "data", "drop", "repeat"])
        if edit == "length":
            data[at : at + 4] = struct.pack(">I", rng.choice([0, 1, length + 1, length * 7 + 3, (1 << 31) - 1]))
        elif edit == "type":
            data[at + 4 + rng.randrange(4)] ^= 0x20  # critical <-> ancillary, public <-> private
        elif edit == "data" and length:
            for _ in range(rng.randint(1, 8)):
                data[at + 8 + rng.randrange(length)] = rng.randrange(256)
            data[at + 8 + length : at + 12 + length] = struct.pack(">I", zlib.crc32(bytes(data[at + 4 : at + 8 + length])))
        elif edit == "drop":
            del data[at : at + 12 + length]
        else:
            data[at:at] = data[at : at + 12 + length]
        return f"png chunk {edit}"
    if fmt == "jpeg":
        at, length = rng.choice(_jpeg_segments(bytes(data)) or [(2, 2)])
        edit = rng.choice(["length", "marker", "data", "drop", "repeat"])
        if edit == "length":
            data[at + 2 : at + 4] = struct.pack(">H", rng.choice([0, 1, 2, max(2, length - 1), min(65535, length + 9), 65535]))
        elif edit == "marker":
            data[at + 1] = rng.choice([0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xCC, 0xDA, 0xDB, 0xDD, 0xE1, 0xFE, 0xD8, 0xD9])
        elif edit == "data" and length > 2:
            for _ in range(rng.randint(1, 6)):
                data[min(len(data) - 1, at + 4 + rng.randrange(length - 2))] = rng.randrange(256)
        elif edit == "drop":
            del data[at : at + 2 + length]
        else:
            data[at:at] = data[at : at + 2 + length] * rng.randint(1, 40)
        return f"jpeg segment {edit}"
    if fmt == "tiff":
        entries = _tiff_entries(bytes(data)) or [8]
        at = rng.choice(entries)
        field = rng.choice([(2, 2), (4, 4), (8, 4)])  # type, count, value/offset
        data[at + field[0] : at + field[0] + field[1]] = rng.randbytes(field[1])
        return "tiff tag edit"
    if fmt == "webp":
        at = rng.choice([4, 16, 20, 24, 26]) if len(data) > 30 else 4
        data[at : at + 4] = rng.randbytes(4)
        return "webp chunk edit"
    at = rng.choice([2, 10, 14, 18, 22, 26, 28, 30, 34, 46])  # bmp: file size, pixel offset, header size, w, h, planes, bpp, ...
    data[at : at + 4] = rng.randbytes(4)
    return "bmp header edit"


def _inflate(rng: random.Random, fmt: str, data: bytearray) -> str:
    """Claim a huge width and/or height in the header (with a valid CRC for PNG, so decoders believe it)."""
    width, height = rng.choice(INFLATED), rng.choice(INFLATED)
    if fmt == "png":
        data[16:24] = struct.pack(">II", width % (1 << 31), height % (1 << 31))
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt == "jpeg":
        sof = next((at for at, _ in _jpeg_segments(bytes(data)) if 0xC0 <= data[at + 1] <= 0xC3), None)
        if sof is not None:
            data[sof + 5 : sof + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    elif fmt == "bmp":
        data[18:26] = struct.pack("<ii", width % (1 << 31), -(height % (1 << 31)) if rng.random() < 0.5 else height % (1 << 31))
    elif fmt == "webp":
        data[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)  # VP8: 14-bit sides
    else:
        order = "<" if data[:2] == b"II" else ">"
        for at in _tiff_entries(bytes(data)):
            tag, kind = struct.unpack(order + "HH", data[at : at + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                data[at + 8 : at + 12] = struct.pack(order + "I", value) if kind == 4 else struct.pack(order + "HH", value & 0xFFFF, 0)
    return f"{fmt} size inflated to {width}x{height}"


MUTATIONS: list[Callable[[random.Random, str, bytearray], str]] = [_flip, _truncate, _structure, _inflate]


def mutate(rng: random.Random, fmt: str, data: bytes) -> tuple[str, bytes]:
    """One to three seeded mutations of an image file: (what was done, the bytes)."""
    out = bytearray(data)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(MUTATIONS)
        try:
            done.append(mutation(rng, fmt, out))
        except (IndexError, ValueError, struct.error):  # an earlier mutation cut what this one edits
            done.append(f"{mutation.__name__.strip('_')} (cut short)")
    return "; ".join(done), bytes(out or b"\0")


def inputs(seed: int, large_every: int) -> Iterator[tuple[str, str, bytes]]:
    """Endless (format, what, bytes): mutated seeds, with a valid 12 MP image every ``large_every``-th."""
    rng = random.Random(seed)
    corpus, large = seeds(), large_images()
    for n in range(1 << 62):
        if large_every and n % large_every == large_every - 1:
            fmt, data = large[n // large_every % len(large)]
            yield fmt, "valid 12 MP", data
        else:
            fmt, data = corpus[rng.randrange(len(corpus))]
            what, mutated = mutate(rng, fmt, data)
            yield fmt, what, mutated


# ---- the server and its process tree --------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += parents.get(found[-1], [])
    return found


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_pss_mib(pid: int) -> dict[int, float]:
    """The memory of a process and each of its descendants (MiB), shared pages counted once (PSS)."""
    found = {}
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    found[member] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return found


def loop_sample(pid: int) -> dict[str, float]:
    """The socket loop process's RSS (MiB), open descriptors and threads."""
    return {
        "rss_mib": round(_status(pid, "VmRSS") / 1024, 1),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": _status(pid, "Threads"),
    }


class Sampler(threading.Thread):
    """Samples the tree's memory every ``every`` s (its peak kept) and the loop's figures every ``report_s`` s."""

    def __init__(self, pid: int, every: float = 0.05, report_s: float | None = None) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.report_s = pid, every, report_s
        self.stop = threading.Event()
        self.peak_tree_mib = 0.0
        self.peak_at = 0.0  # time.monotonic() of the peak
        self.peak_by_pid: dict[int, float] = {}
        self.samples: list[dict[str, float]] = []

    def run(self) -> None:
        started = next_report = time.monotonic()
        while not self.stop.wait(self.every):
            try:
                by_pid = tree_pss_mib(self.pid)
                if sum(by_pid.values()) > self.peak_tree_mib:
                    self.peak_tree_mib, self.peak_at, self.peak_by_pid = sum(by_pid.values()), time.monotonic(), by_pid
                if self.report_s and time.monotonic() >= next_report:
                    sample = {"t_s": round(time.monotonic() - started, 1), **loop_sample(self.pid)}
                    self.samples.append(sample)
                    print(json.dumps(sample), flush=True)
                    next_report += self.report_s
            except OSError:
                return  # the server is gone; the run reports it


class Pinger(threading.Thread):
    """A ``ping`` every ``every`` s on a connection of its own; the round-trip times (None: no reply within 5 s)."""

    def __init__(self, endpoint: str, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.every = endpoint, every
        self.stop = threading.Event()
        self.rtts: list[float | None] = []

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            while not self.stop.wait(self.every):
                sent = time.perf_counter()
                sock.send(msgpack.packb({"v": 1, "id": f"ping{len(self.rtts)}", "kind": "ping"}))
                if sock.poll(5000):
                    sock.recv_multipart()
                    self.rtts.append(time.perf_counter() - sent)
                else:
                    self.rtts.append(None)
                    return
        finally:
            sock.close()


class PoliteDealer:
    """A DEALER that keeps within the server's credit grant (docs/protocol.md, Flow control)."""

    def __init__(self, endpoint: str, timeout_ms: int = 60000) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        self.sock.connect(endpoint)
        self.outstanding: dict[str, int] = {}  # request id -> payload bytes
        self.grant = {"seq": 0, "requests": 1, "bytes": 0}  # unknown until the first reply: one request at a time
        self.sock.send(msgpack.packb({"v": 1, "id": "credit?", "kind": "ping"}))
        self.recv()

    def fits(self, nbytes: int) -> bool:
        if not self.outstanding:
            return True
        return len(self.outstanding) < self.grant["requests"] and sum(self.outstanding.values()) + nbytes <= self.grant["bytes"]

    def submit(self, header: dict[str, Any], payload: bytes) -> None:
        self.sock.send_multipart([msgpack.packb({**header, "credit_seq": self.grant["seq"]}), payload], copy=False)
        self.outstanding[header["id"]] = len(payload)

    def recv(self) -> dict[str, Any]:
        reply = msgpack.unpackb(self.sock.recv_multipart(copy=False)[0].bytes)
        self.grant = reply.get("credit", self.grant)
        self.outstanding.pop(reply["id"], None)
        return reply

    def close(self) -> None:
        self.sock.close()


def stats(endpoint: str) -> dict[str, Any]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(msgpack.packb({"v": 1, "id": "stats", "kind": "stats"}))
        if not sock.poll(10000):
            raise TimeoutError("no stats reply in 10 s")
        return msgpack.unpackb(sock.recv())
    finally:
        sock.close()


# ---- the run --------------------------------------------------------------------------------------------------------


def run(
    endpoint: str,
    *,
    pid: int | None = None,
    count: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    in_flight: int = 8,
    large_every: int = 10,
    report_s: float | None = None,
) -> dict[str, Any]:
    """Send mutated files until ``count`` were sent or ``seconds`` passed; the figures and the problems found."""
    pinger = Pinger(endpoint)
    sampler = Sampler(pid, report_s=report_s) if pid else None
    before = stats(endpoint)
    dealer = PoliteDealer(endpoint)
    sent: dict[str, str] = {}  # id -> what was sent
    times: dict[str, list[float]] = {}  # id -> [sent, answered]
    codes: Counter[str] = Counter()
    problems: list[str] = []
    source = inputs(seed, large_every)
    deadline = time.monotonic() + seconds if seconds else float("inf")
    pinger.start()
    if sampler:
        sampler.start()
    started = time.monotonic()
    try:
        pending: tuple[str, str, bytes] | None = None
        while dealer.outstanding or ((count is None or len(sent) < count) and time.monotonic() < deadline):
            while (count is None or len(sent) < count) and time.monotonic() < deadline and len(dealer.outstanding) < in_flight:
                pending = pending or next(source)
                if not dealer.fits(len(pending[2])):
                    break
                fmt, what, data = pending
                request_id = str(len(sent))
                header = {"v": 1, "id": request_id, "kind": "process", "image": {"format": fmt}, "reply_format": "raw"}
                dealer.submit({**header, "pipeline": [{"op": "identity"}]}, data)
                sent[request_id] = f"{fmt} ({len(data)} bytes): {what}"
                times[request_id] = [time.monotonic(), float("inf")]
                pending = None
            if dealer.outstanding:
                reply = dealer.recv()
                code = reply["status"] if reply["status"] == "ok" else reply["error"]["code"]
                codes[code] += 1
                if code not in DOCUMENTED or code in ("internal", "busy"):
                    problems.append(f"request {reply['id']} ({sent.get(reply['id'])}): {code} {reply.get('error')}")
                if reply["id"] not in sent:
                    problems.append(f"a reply to {reply['id']!r}, which was not sent")
                elif times[reply["id"]][1] != float("inf"):
                    problems.append(f"a second reply to {reply['id']!r}")
                times.get(reply["id"], [0.0, 0.0])[1] = time.monotonic()
    except zmq.Again:
        problems.append(f"no reply within 60 s to {sorted(dealer.outstanding)}")
    finally:
        elapsed = time.monotonic() - started
        dealer.close()
        pinger.stop.set()
        pinger.join()
        if sampler:
            sampler.stop.set()
            sampler.join()
    after = stats(endpoint) if not problems or "no reply" not in problems[-1] else before
    died = after["workers_died"] - before["workers_died"]
    if died:
        problems.append(f"{died} worker(s) died")
    rtts = [r for r in pinger.rtts if r is not None]
    if None in pinger.rtts:
        problems.append("a ping went unanswered for 5 s")
    return {
        "sent": len(sent),
        "seconds": round(elapsed, 1),
        "codes": dict(codes.most_common()),
        "workers_died": died,
        "jobs_stopped": after["stopped_jobs"] - before["stopped_jobs"],
        "ping_max_ms": round(max(rtts) * 1000, 1) if rtts else None,
        "ping_p99_ms": round(float(np.percentile(rtts, 99)) * 1000, 1) if rtts else None,
        "peak_tree_mib": round(sampler.peak_tree_mib, 1) if sampler else None,
        "peak_by_pid_mib": {pid: round(mib) for pid, mib in sampler.peak_by_pid.items()} if sampler else {},
        "in_flight_at_peak": [f"{i}: {sent[i]}" for i, (a, b) in times.items() if sampler and a <= sampler.peak_at <= b],
        "samples": sampler.samples if sampler else [],
        "problems": problems,
    }


def spawn(server_args: str) -> tuple[subprocess.Popen[str], str]:
    """A server_main.py on a free loopback port, once it listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "server_main.py", "--bind", endpoint, *shlex.split(server_args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, endpoint
    raise SystemExit("the server did not start:\n" + line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="a running server (else --spawn)")
    p.add_argument("--spawn", action="store_true", help="start server_main.py with --server-args, stop it at the end")
    p.add_argument("--server-args", default=FUZZ_SERVER_ARGS, help="for --spawn (default: %(default)s)")
    p.add_argument("--pid", type=int, help="the server's pid, to sample its process tree")
    p.add_argument("--count", type=int, help="requests to send")
    p.add_argument("--seconds", type=float, help="run this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--large-every", type=int, default=10, help="every Nth request is a valid 12 MP image (0: none)")
    p.add_argument("--sample-s", type=float, help="print the loop's RSS, descriptors and threads this often")
    p.add_argument("--max-tree-mib", type=float, help="fail when the process tree's memory peaked above this")
    p.add_argument("--max-ping-ms", type=float, help="fail when a ping took longer")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if not (args.endpoint or args.spawn) or not (args.count or args.seconds):
        p.error("give --endpoint or --spawn, and --count or --seconds")
    proc = None
    if args.spawn:
        proc, args.endpoint = spawn(args.server_args)
        args.pid = proc.pid
    try:
        figures = run(
            args.endpoint,
            pid=args.pid,
            count=args.count,
            seconds=args.seconds,
            seed=args.seed,
            in_flight=args.in_flight,
            large_every=args.large_every,
            report_s=args.sample_s,
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    if args.max_tree_mib and (figures["peak_tree_mib"] or 0) > args.max_tree_mib:
        figures["problems"].append(f"the process tree peaked at {figures['peak_tree_mib']} MiB, over {args.max_tree_mib}")
    if args.max_ping_ms and (figures["ping_max_ms"] or 0) > args.max_ping_ms:
        figures["problems"].append(f"a ping took {figures['ping_max_ms']} ms, over {args.max_ping_ms}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "samples"}, indent=2))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
