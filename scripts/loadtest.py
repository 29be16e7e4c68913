#!/usr/bin/env python3
"""Load test a zmqproc server with nothing but pyzmq, msgpack and numpy (wire contract v1, docs/protocol.md).

    python scripts/loadtest.py --endpoint tcp://127.0.0.1:5555 --clients 4 --inflight 2 --duration 10
    python scripts/loadtest.py --rate 50 --duration 600 --soak 10        # soak: fixed rate, latency per 10 s

Closed loop by default (each client keeps ``--inflight`` requests outstanding); ``--rate`` makes it open loop
(requests are sent on a fixed schedule whatever the replies do, and latency counts from the scheduled time, so a
slow server cannot hide its queueing). A request with no reply within ``--timeout`` is lost; the exit status is 1
when any request was lost. This script deliberately does not import zmqproc: it proves the contract stands alone.
OpenCV is needed only for ``--format png|jpeg`` (to encode the test frame once).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import queue
import sys
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq
import zmq.auth

FLUSH_S = 0.2  # how often workers report their outcomes to the main process
LOST, OK = "lost", "ok"


# ---- command line values -------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """bool, int, float, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_pipeline(text: str) -> list[dict[str, Any]]:
    """``"grayscale;gaussian_blur:ksize=5,sigma=1.5"`` -> wire steps ``[{"op": ..., "params": {...}}, ...]``."""
    steps = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, rest = part.partition(":")
        params = {}
        for item in filter(None, (i.strip() for i in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"parameter {item!r} of {name!r} is not key=value")
            params[key.strip()] = parse_value(value)
        steps.append({"op": name.strip(), "params": params})
    if not steps:
        raise ValueError("the pipeline is empty")
    return steps


def parse_size(text: str) -> tuple[int, int, int]:
    """``WxH`` or ``WxHxC`` -> (height, width, channels)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise ValueError(f"size {text!r} is not WxH or WxHxC")
    w, h, c = (*parts, 3) if len(parts) == 2 else parts
    if c not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, not {c}")
    return h, w, c


def make_frame(size: tuple[int, int, int], fmt: str) -> tuple[dict[str, Any], np.ndarray]:
    """A synthetic BGR(A) uint8 test image (gradient + noise, so codecs have real work) as (descriptor, payload)."""
    h, w, c = size
    rng = np.random.default_rng(0)
    ramp = (np.add.outer(np.arange(h) * 255 // max(h, 1), np.arange(w) * 255 // max(w, 1)) // 2).astype(np.uint8)
    image = np.repeat(ramp[:, :, None], c, axis=2) + rng.integers(0, 16, (h, w, c), dtype=np.uint8)
    if fmt == "raw":
        shape = [h, w] if c == 1 else [h, w, c]
        return {"format": "raw", "dtype": "uint8", "shape": shape}, np.ascontiguousarray(image.reshape(shape))
    import cv2  # only for encoded formats

    ok, encoded = cv2.imencode(".png" if fmt == "png" else ".jpg", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {fmt} test frame")
    return {"format": fmt}, encoded


def split(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (the parts add up to ``total``)."""
    parts = [total * w // sum(weights) for w in weights]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


# ---- one worker process: its clients (DEALER sockets) in one poll loop --------------------------------------------


@dataclass
class Plan:
    """What one worker does."""

    index: int
    endpoints: list[str]
    clients: int
    inflight: int
    requests: int | None  # None: until the duration is over
    duration: float | None
    rate: float | None  # requests/s of this worker (open loop), None: closed loop
    timeout: float
    size: tuple[int, int, int]
    fmt: str
    pipeline: list[dict[str, Any]]
    curve: tuple[bytes, bytes, bytes] | None = None  # (server public key, client public key, client secret key)


@dataclass
class WorkerState:
    pending: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (client, scheduled send time)
    deadlines: deque[tuple[float, str]] = field(default_factory=deque)
    inflight: list[int] = field(default_factory=list)
    records: list[tuple[str, float, float]] = field(default_factory=list)  # (code, sent at, latency s or nan)
    sent: int = 0
    bytes: int = 0
    late: int = 0
    first_send: float = math.inf
    last_reply: float = -math.inf


def run_worker(plan: Plan, go: Any, out: Any) -> None:
    """Process entry point: report ("ready"), wait for ``go``, run, stream ("batch", ...), end with ("done", ...)."""
    try:
        _run_worker(plan, go, out)
    except BaseException:
        out.put(("failed", plan.index, traceback.format_exc()))


def orphaned() -> bool:
    """True once the main process is gone (killed): a worker then stops instead of hammering on."""
    parent = mp.parent_process()
    return parent is not None and not parent.is_alive()


def warm_up(socks: list[zmq.Socket], poller: zmq.Poller, timeout: float) -> None:
    """One ``ping`` per socket, so connecting is not measured; gives up quietly after ``timeout`` (it will show as lost)."""
    for sock in socks:
        with contextlib.suppress(zmq.Again):  # no connection to queue on (e.g. a CURVE handshake was refused)
            sock.send(msgpack.packb({"v": 1, "id": "warm-up", "kind": "ping"}), zmq.NOBLOCK)
    waiting, deadline = set(socks), time.monotonic() + timeout
    while waiting and (left := deadline - time.monotonic()) > 0:
        for sock, _ in poller.poll(left * 1000):
            sock.recv_multipart()
            waiting.discard(sock)


def _run_worker(plan: Plan, go: Any, out: Any) -> None:
    ctx = zmq.Context()
    socks = []
    for _ in range(plan.clients):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if plan.curve:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = plan.curve
        for endpoint in plan.endpoints:
            sock.connect(endpoint)
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    descriptor, payload = make_frame(plan.size, plan.fmt)
    base = {"v": 1, "kind": "process", "pipeline": plan.pipeline, "image": descriptor, "deadline_ms": plan.timeout * 1000}
    st = WorkerState(inflight=[0] * plan.clients)
    warm_up(socks, poller, min(plan.timeout, 5.0))
    out.put(("ready", plan.index))
    while not go.wait(0.5):
        if orphaned():
            return
    t0 = time.monotonic()
    end = t0 + plan.duration if plan.duration else math.inf
    budget = plan.requests if plan.requests is not None else math.inf
    seq = 0
    next_flush = t0 + FLUSH_S

    def send(client: int, scheduled: float) -> None:
        nonlocal seq
        rid = f"{plan.index}.{client}.{seq}"
        seq += 1
        header = msgpack.packb({**base, "id": rid})
        now = time.monotonic()
        st.sent += 1
        st.first_send = min(st.first_send, now)
        try:
            socks[client].send(header, zmq.SNDMORE | zmq.NOBLOCK)
            socks[client].send(payload, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the socket's queue is full (nothing connected, or far behind): no reply will come
            st.records.append((LOST, scheduled, math.nan))
            return
        st.bytes += payload.nbytes
        st.pending[rid] = (client, scheduled)
        st.deadlines.append((now + plan.timeout, rid))
        st.inflight[client] += 1

    def receive(sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.monotonic()
            try:
                header = msgpack.unpackb(frames[0].bytes)
                rid = header["id"]
                code = OK if header["status"] == "ok" else header["error"]["code"]
                if code == OK and len(frames) != 2:
                    code = "malformed_reply"
            except Exception:
                rid, code = None, "malformed_reply"
            entry = st.pending.pop(rid, None) if isinstance(rid, str) else None
            if entry is None:
                st.late += 1  # answered after it was counted lost, or not ours
                continue
            client, scheduled = entry
            st.inflight[client] -= 1
            st.bytes += sum(len(f) for f in frames[1:])
            st.last_reply = now
            st.records.append((code, scheduled, now - scheduled))

    def flush() -> None:
        out.put(("batch", plan.index, st.sent, st.bytes, st.records))
        st.sent, st.bytes, st.records = 0, 0, []

    interval = 1.0 / plan.rate if plan.rate else 0.0
    k = 0  # open loop: index of the next scheduled send
    while True:
        now = time.monotonic()
        sending = budget > 0 and now < end
        if sending and plan.rate:
            while budget > 0 and (due := t0 + k * interval) <= now:
                send(k % plan.clients, due)
                k += 1
                budget -= 1
        elif sending:
            for client in range(plan.clients):
                while budget > 0 and st.inflight[client] < plan.inflight:
                    send(client, time.monotonic())
                    budget -= 1
        while st.deadlines and st.deadlines[0][0] <= now:
            _, rid = st.deadlines.popleft()
            entry = st.pending.pop(rid, None)
            if entry is not None:
                st.inflight[entry[0]] -= 1
                st.records.append((LOST, entry[1], math.nan))
        if now >= next_flush:
            flush()
            next_flush = now + FLUSH_S
            if orphaned():
                return
        if not st.pending and not (budget > 0 and now < end):
            break
        wake = [next_flush]
        if st.deadlines:
            wake.append(st.deadlines[0][0])
        if plan.rate and budget > 0:
            wake.append(min(t0 + k * interval, end))
        for sock, _ in poller.poll(max(0, math.ceil((min(wake) - time.monotonic()) * 1000))):
            receive(sock)
    # A last look for replies that raced the deadlines, so they count as late rather than vanish.
    for sock, _ in poller.poll(50):
        receive(sock)
    flush()
    out.put(("done", plan.index, st.late, st.first_send, st.last_reply))
    ctx.destroy(linger=0)


# ---- aggregation and report (pure) ----------------------------------------------------------------------------------


def percentiles(latencies_s: np.ndarray) -> dict[str, float | None]:
    if latencies_s.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(latencies_s, [50, 90, 99]) * 1000
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(latencies_s.max() * 1000)}


@dataclass
class Totals:
    """Everything the workers reported so far."""

    sent: int = 0
    bytes: int = 0
    late: int = 0
    codes: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)

    def add(self, sent: int, nbytes: int, records: list[tuple[str, float, float]]) -> None:
        self.sent += sent
        self.bytes += nbytes
        for code, at, latency in records:
            self.codes.append(code)
            self.sent_at.append(at)
            self.latency.append(latency)

    def counts(self) -> Counter[str]:
        return Counter(self.codes)


def summarize(totals: Totals, elapsed: float) -> dict[str, Any]:
    """The final figures; ``elapsed`` runs from the first send to the last reply."""
    counts = totals.counts()
    latency = np.asarray(totals.latency, dtype=float)
    answered = latency[~np.isnan(latency)]
    errors = {code: n for code, n in sorted(counts.items()) if code not in (OK, LOST)}
    elapsed = max(elapsed, 1e-9)
    return {
        "sent": totals.sent,
        "ok": counts[OK],
        "errors": errors,
        "lost": counts[LOST],
        "late": totals.late,
        "elapsed_s": elapsed if answered.size else 0.0,
        "round_trips_per_s": answered.size / elapsed if answered.size else 0.0,
        "mb_per_s": totals.bytes / elapsed / 1e6 if answered.size else 0.0,
        "latency_ms": percentiles(answered),
    }


def interval_row(totals: Totals, start: float, width: float, t0: float) -> dict[str, Any]:
    """Figures of the requests scheduled in ``[start, start + width)`` seconds after ``t0``."""
    at = np.asarray(totals.sent_at, dtype=float) - t0
    mask = (at >= start) & (at < start + width)
    codes = Counter(c for c, m in zip(totals.codes, mask, strict=True) if m)
    latency = np.asarray(totals.latency, dtype=float)[mask]
    answered = latency[~np.isnan(latency)]
    return {
        "t_s": start,
        "requests": int(mask.sum()),
        "ok": codes[OK],
        "errors": sum(n for c, n in codes.items() if c not in (OK, LOST)),
        "lost": codes[LOST],
        "latency_ms": percentiles(answered),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    rows = [("sent", summary["sent"]), ("ok", summary["ok"])]
    rows += [(f"error {code}", n) for code, n in summary["errors"].items()]
    rows += [
        ("lost (no reply in time)", summary["lost"]),
        ("late replies (after lost)", summary["late"]),
        ("round trips/s", f"{summary['round_trips_per_s']:.1f}"),
        ("MB/s (payload, both ways)", f"{summary['mb_per_s']:.1f}"),
        ("latency p50/p90/p99/max ms", " / ".join(_ms(lat[k]) for k in ("p50", "p90", "p99", "max"))),
    ]
    return "\n".join(f"{name:<28} {value}" for name, value in rows)


INTERVAL_HEADER = f"{'t(s)':>7} {'requests':>8} {'ok':>7} {'errors':>6} {'lost':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"


def format_interval(row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    cells = " ".join(f"{_ms(lat[k]):>8}" for k in ("p50", "p90", "p99", "max"))
    return f"{row['t_s']:>7.0f} {row['requests']:>8} {row['ok']:>7} {row['errors']:>6} {row['lost']:>5} {cells}"


# ---- main process --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", action="append", help="server endpoint, repeatable (default tcp://127.0.0.1:5555)")
    p.add_argument("--clients", type=int, default=1, help="DEALER sockets in all (default 1)")
    p.add_argument("--procs", type=int, default=1, help="processes the clients are spread over (default 1)")
    p.add_argument("--inflight", type=int, default=1, help="requests outstanding per client, closed loop (default 1)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="requests in all (default 1000 unless --duration)")
    amount.add_argument("--duration", type=float, help="seconds to keep sending")
    p.add_argument("--rate", type=float, help="open loop: requests/s in all, on a fixed schedule")
    p.add_argument("--size", default="640x480x3", help="WxH or WxHxC of the test frame (default 640x480x3)")
    p.add_argument("--format", default="raw", choices=("raw", "png", "jpeg"), help="payload format (default raw)")
    p.add_argument("--pipeline", default="identity", help='"op:k=v,k=v;op" (default identity)')
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as lost (default 10)")
    p.add_argument("--soak", type=float, metavar="SECONDS", help="soak mode: latency per interval of SECONDS (with --rate, --duration)")
    p.add_argument("--curve-server-key", metavar="FILE", help="CURVE: the server's public key file (NAME.key)")
    p.add_argument("--curve-secret", metavar="FILE", help="CURVE: this client's secret key file (NAME.key_secret)")
    p.add_argument("--json", metavar="FILE", help="write the figures (and the soak intervals) as JSON to FILE ('-' = stdout)")
    return p


def load_curve(server_key: str, client_secret: str) -> tuple[bytes, bytes, bytes]:
    """CURVE keys from the files ``zmqproc keygen`` (pyzmq's ``zmq.auth.create_certificates``) writes."""
    server_public, _ = zmq.auth.load_certificate(server_key)
    public, secret = zmq.auth.load_certificate(client_secret)
    if secret is None:
        raise ValueError(f"{client_secret} holds no secret key")
    return server_public, public, secret


def make_plans(args: argparse.Namespace, curve: tuple[bytes, bytes, bytes] | None = None) -> list[Plan]:
    procs = min(args.procs, args.clients)
    clients = split(args.clients, [1] * procs)
    requests = split(args.requests, clients) if args.requests is not None else [None] * procs
    size, pipeline = parse_size(args.size), parse_pipeline(args.pipeline)
    return [
        Plan(i, args.endpoint, clients[i], args.inflight, requests[i], args.duration,
             args.rate * clients[i] / args.clients if args.rate else None, args.timeout, size, args.format, pipeline, curve)
        for i in range(procs)
    ]  # fmt: skip


class Progress:
    """A live line on stderr: rewritten twice a second on a terminal, else a plain line every 5 s."""

    def __init__(self, total: int | None, duration: float | None) -> None:
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else 5.0
        self.total, self.duration = total, duration
        self.next = time.monotonic() + self.every
        self.last_done, self.last_t = 0, time.monotonic()

    def update(self, totals: Totals, t0: float, final: bool = False) -> None:
        now = time.monotonic()
        if now < self.next and not final:
            return
        counts = totals.counts()
        done = len(totals.codes)
        rate = (done - self.last_done) / max(now - self.last_t, 1e-9)
        self.last_done, self.last_t, self.next = done, now, now + self.every
        where = f"{done}/{self.total} done" if self.total else f"{done} done, {now - t0:.0f}/{self.duration:.0f} s"
        errors = done - counts[OK] - counts[LOST]
        line = f"{where}  {rate:.0f}/s  ok {counts[OK]}  errors {errors}  lost {counts[LOST]}"
        if self.tty:
            print(f"\r\x1b[K{line}", end="\n" if final else "", file=sys.stderr, flush=True)
        elif not final:
            print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, curve: tuple[bytes, bytes, bytes] | None = None) -> dict[str, Any]:
    """Start the workers, collect their outcomes (printing progress and soak rows), return the summary."""
    plans = make_plans(args, curve)
    spawn = mp.get_context("spawn")  # no zmq context is ever forked
    out, go = spawn.Queue(), spawn.Event()
    workers = [spawn.Process(target=run_worker, args=(plan, go, out), daemon=True) for plan in plans]
    for w in workers:
        w.start()
    totals, ready, done = Totals(), 0, 0
    first, last = math.inf, -math.inf
    progress = Progress(args.requests, args.duration)
    intervals: list[dict[str, Any]] = []
    t0 = math.inf
    ready_by = time.monotonic() + 30 + min(args.timeout, 5.0)
    try:
        while done < len(workers):
            if ready < len(workers) and time.monotonic() > ready_by:
                raise RuntimeError("the load-test workers did not start")
            try:
                msg = out.get(timeout=0.25)
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("a load-test worker died") from None
                msg = ("idle",)
            if msg[0] == "ready":
                ready += 1
                if ready == len(workers):
                    t0 = time.monotonic()
                    go.set()
            elif msg[0] == "batch":
                totals.add(*msg[2:])
            elif msg[0] == "done":
                done += 1
                totals.late += msg[2]
                first, last = min(first, msg[3]), max(last, msg[4])
            elif msg[0] == "failed":
                raise RuntimeError(f"worker {msg[1]} failed:\n{msg[2]}")
            if t0 < math.inf:
                progress.update(totals, t0)
                if args.soak:
                    # An interval is final once every request scheduled in it was answered or timed out.
                    while (len(intervals) + 1) * args.soak + args.timeout + 2 * FLUSH_S < time.monotonic() - t0 and (
                        len(intervals) * args.soak < args.duration
                    ):
                        intervals.append(emit_interval(totals, len(intervals) * args.soak, args.soak, t0))
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
    progress.update(totals, t0, final=True)
    while args.soak and len(intervals) * args.soak < args.duration:
        intervals.append(emit_interval(totals, len(intervals) * args.soak, args.soak, t0))
    summary = summarize(totals, last - first)
    summary["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    if args.soak:
        summary["intervals"] = intervals
    return summary


def emit_interval(totals: Totals, start: float, width: float, t0: float) -> dict[str, Any]:
    row = interval_row(totals, start, width, t0)
    if start == 0:
        print(INTERVAL_HEADER, flush=True)
    print(format_interval(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.endpoint = args.endpoint or ["tcp://127.0.0.1:5555"]
    if args.requests is None and args.duration is None:
        args.requests = 1000
    if args.soak and not (args.rate and args.duration):
        parser.error("--soak needs --rate and --duration")
    if min(args.clients, args.procs, args.inflight) < 1 or args.timeout <= 0 or (args.rate is not None and args.rate <= 0):
        parser.error("--clients, --procs, --inflight, --timeout and --rate must be positive")
    if (args.curve_server_key is None) != (args.curve_secret is None):
        parser.error("--curve-server-key and --curve-secret go together")
    try:
        parse_size(args.size), parse_pipeline(args.pipeline)
        curve = load_curve(args.curve_server_key, args.curve_secret) if args.curve_secret else None
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        summary = run(args, curve)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 3
    print(format_table(summary))
    if args.json == "-":
        json.dump(summary, sys.stdout, indent=2)
        print()
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 1 if summary["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
