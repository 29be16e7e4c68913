"""Streams of frames (issue 21): zmqproc's streaming API against imagezmq and NetGear, all measured in this one run on 127.0.0.1.

    .venv/bin/pip install -e '.[bench]'
    flock /tmp/zmqproc-bench.lock .venv/bin/python bench/streams.py [--seconds 4 --repeat 2] [--quick] [--write]

Frames: a slow pan across the coffee sample, 60 BGR uint8 frames per size (VGA 640x480, 1080p 1920x1080), made before
the run; each carries its number in a corner (8 black or white blocks of 16x16 pixels, which JPEG keeps), so whoever
receives a result knows which frame it was. Every peer sends the same frames and gets each one back (identity), from a server
process of its own:
- zmqproc: ``Client.map(frames, "identity")``, ordered, default settings (the server with 2 workers); "zmqproc JPEG":
  the client encodes each frame as NetGear does (simplejpeg, quality 90, fast DCT, 4:2:2), sends the bytes with
  ``reply_format="jpeg"`` and decodes the result;
- imagezmq: ``ImageSender.send_image`` (REQ) to an ``ImageHub`` (REP) that answers with the frame: one at a time;
- NetGear (vidgear 0.3.6): its default pattern (0, PAIR) in bidirectional mode, as its docs send processed frames back:
  the receiver returns each frame with its reply to the next one; "NetGear JPEG" with its JPEG compression (its
  default whenever simplejpeg is installed), "NetGear" without.
Cases:
- fast: the frames as fast as the peer takes them;
- 30 fps: a camera (a thread that makes the next frame every 1/30 s; a read waits for a frame newer than the last
  read), a consumer that takes each result as it comes;
- 30 fps, 10 fps consumer: the same camera, a consumer that spends 100 ms on each result (zmqproc with
  ``latest=True``).
Per peer and case: results/s; latency p50/p99 (from the frame being read from the source, or made by the camera,
to its result at the consumer: for the slowed consumer, the result's age when the consumer takes it); drops (camera
frames that never reached the consumer); CPU per result of the client process (all its threads) and of the server's
process tree (/proc). The first WARMUP_S of every run are not counted. Ratios are against imagezmq and NetGear
measured in the same run. The goals of issue 21 (part 4) are checked at the end, with 64x64 frames too (fast: zmqproc
and imagezmq) and imagezmq's other pattern for frames that come back: SENDERS senders in threads (unordered).
With ``--write``, the "## Streams" section of docs/benchmarks.md is rewritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, free_port, process, tree_cpu_seconds, write_section, zmqproc_server_process  # noqa: E402
from zmqproc import Client, samples  # noqa: E402

SIZES = {"VGA": (480, 640), "1080p": (1080, 1920)}
FRAMES = 60
STAMP_BITS = 8
CAMERA_FPS = 30.0
SLOW_CONSUMER_S = 0.1
WARMUP_S = 0.5
CASES = ("fast", "30 fps", "30 fps, 10 fps consumer")
PEERS = ("zmqproc", "zmqproc JPEG", "imagezmq", "NetGear", "NetGear JPEG")
SENDERS = 8  # imagezmq's other pattern (goals only): this many senders in threads, results unordered
JPEG = {"quality": 90, "colorspace": "BGR", "colorsubsampling": "422", "fastdct": True}  # NetGear's defaults

Stream = Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]]


# ---- frames and sources -------------------------------------------------------------------------------------------


def block(width: int) -> int:
    """The side of a stamp's block: 16 pixels, smaller in small frames (the stamp takes at most half the width)."""
    return min(16, width // (2 * STAMP_BITS))


def make_frames(height: int, width: int) -> list[np.ndarray]:
    """A pan across the coffee sample, each frame stamped with its number."""
    photo = cv2.imread(str(samples.path("coffee")), cv2.IMREAD_COLOR)
    wide = cv2.resize(photo, (width * 3 // 2, height), interpolation=cv2.INTER_AREA)
    side = block(width)
    frames = []
    for i in range(FRAMES):
        x = round((width // 2) * i / (FRAMES - 1))
        frame = wide[:, x : x + width].copy()
        for bit in range(STAMP_BITS):
            frame[:side, bit * side : (bit + 1) * side] = 255 if i >> bit & 1 else 0
        frames.append(frame)
    return frames


def stamp(frame: np.ndarray) -> int:
    """The number a frame carries (also after a JPEG round trip)."""
    side = block(frame.shape[1])
    means = frame[:side, : STAMP_BITS * side].reshape(side, STAMP_BITS, -1).mean(axis=(0, 2))
    return sum(1 << bit for bit, mean in enumerate(means) if mean > 128)


class Burst:
    """The frames in a loop, as fast as they are read; when each frame was last read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.ready_at: dict[int, float] = {}
        self.made = 0

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            number = self.made % len(self.frames)
            self.ready_at[number] = time.perf_counter()
            self.made += 1
            yield self.frames[number]


class Camera:
    """A camera at ``fps``: a thread makes the next frame on time; a read waits for one newer than the last read."""

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.frames, self.period = frames, 1.0 / fps
        self.ready_at: dict[int, float] = {}
        self.made = 0
        self._new = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(max(0.0, start + self.made * self.period - time.perf_counter())):
            with self._new:
                self.ready_at[self.made % len(self.frames)] = time.perf_counter()
                self.made += 1
                self._new.notify_all()

    def __iter__(self) -> Iterator[np.ndarray]:
        read = 0
        while True:
            with self._new:
                self._new.wait_for(lambda last=read: self.made > last or self._stop.is_set())
                if self._stop.is_set():
                    return
                read = self.made
            yield self.frames[(read - 1) % len(self.frames)]

    def close(self) -> None:
        self._stop.set()
        with self._new:
            self._new.notify_all()
        self._thread.join()


# ---- the peers' streams: frames in, results out in the order the peer hands them out -------------------------------


def zmqproc_stream(endpoint: str, jpeg: bool, latest: bool) -> Stream:
    def stream(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        import simplejpeg

        images = (simplejpeg.encode_jpeg(f, **JPEG) for f in frames) if jpeg else frames
        with (
            Client(endpoint, timeout=30) as client,
            closing(client.map(images, "identity", latest=latest, reply_format="jpeg" if jpeg else None)) as items,
        ):
            for item in items:
                if not item.ok:
                    raise RuntimeError(f"frame {item.index}: {item.error}")
                yield simplejpeg.decode_jpeg(item.result, colorspace="BGR", fastdct=True) if jpeg else item.result

    return stream


def imagezmq_stream(endpoint: str) -> Stream:
    def stream(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        import imagezmq

        sender = imagezmq.ImageSender(connect_to=endpoint)
        try:
            for frame in frames:
                yield np.frombuffer(sender.send_image("bench", frame), dtype=frame.dtype).reshape(frame.shape)
        finally:
            sender.close()

    return stream


@contextmanager
def netgear(jpeg: bool) -> Iterator[tuple[Stream, int]]:
    """A NetGear receiver and its sender for one run (an idle receiver polls its queue every 10 µs: it is not left
    running beside the other peers); the sender's close ends the receiver."""
    from vidgear.gears import NetGear

    with peer_server("netgear", "{port}", *(["jpeg"] if jpeg else [])) as (port, pid):
        sender = NetGear(address="127.0.0.1", port=str(port), pattern=0, logging=False, bidirectional_mode=True, jpeg_compression=jpeg)

        def stream(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for frame in frames:
                returned = sender.send(frame)  # the receiver's result for an earlier frame (None for the first)
                if isinstance(returned, np.ndarray):
                    yield returned

        try:
            yield stream, pid
        finally:
            sender.close()


@contextmanager
def peer_server(*args: str) -> Iterator[tuple[int, int]]:
    """One of bench/peer_servers.py's servers on a free port: (port, pid)."""
    port = free_port()
    with process([sys.executable, "bench/peer_servers.py", args[0], *(a.format(port=port) for a in args[1:])], port) as proc:
        yield port, proc.pid


# ---- one run: a peer's stream fed by a source, read by a consumer ------------------------------------------------


@dataclass
class Run:
    results: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    made: int = 0  # frames the source made while counting (the camera's)
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.results / self.seconds if self.seconds else 0.0


def run(
    stream: Stream, source: Burst | Camera, frames: list[np.ndarray], server_pid: int, seconds: float, work_s: float, exact: bool
) -> Run:
    """Read ``stream`` for WARMUP_S + ``seconds``; count what came after the warm-up (CPU read before the stream is
    closed: closing withdraws what is still out, which may stop a server's workers). The first result is checked."""
    out = Run()
    started = time.perf_counter()
    begin, checked = None, False
    with closing(stream(iter(source))) as results:
        for result in results:
            now = time.perf_counter()
            number = stamp(result)
            if begin is None:
                if not checked:
                    check(result, frames[number], exact)
                    checked = True
                if now - started >= WARMUP_S:
                    begin, made, cpu, server = now, source.made, time.process_time(), tree_cpu_seconds(server_pid)
            elif (ready := source.ready_at.get(number)) is not None:
                out.results += 1
                out.latencies.append(now - ready)
            if work_s:
                time.sleep(work_s)
            if begin is not None and time.perf_counter() - begin >= seconds:
                out.seconds, out.made = time.perf_counter() - begin, source.made - made
                out.client_cpu, out.server_cpu = time.process_time() - cpu, tree_cpu_seconds(server_pid) - server
                break
    return out


def check(result: np.ndarray, frame: np.ndarray, exact: bool) -> None:
    same = np.array_equal(result, frame) if exact else float(np.abs(result.astype(np.int16) - frame).mean()) < 8
    if not same:
        raise AssertionError("a peer's result is not the frame it was sent")


def imagezmq_senders(endpoint: str, frames: list[np.ndarray], seconds: float, senders: int = SENDERS) -> float:
    """imagezmq's other pattern: ``senders`` REQ senders in threads, each sending the next frame when its reply came."""
    import imagezmq

    counts = [0] * senders
    start_line = threading.Barrier(senders + 1)
    stop = threading.Event()

    def send(i: int) -> None:
        sender = imagezmq.ImageSender(connect_to=endpoint)
        try:
            sender.send_image("bench", frames[i])
            start_line.wait()
            n = i
            while not stop.is_set():
                sender.send_image("bench", frames[n % len(frames)])
                counts[i] += 1
                n += senders
        finally:
            sender.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    start_line.wait(timeout=30)
    time.sleep(WARMUP_S)
    before, start = sum(counts), time.perf_counter()
    time.sleep(seconds)
    done, elapsed = sum(counts) - before, time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    return done / elapsed


# ---- the whole measurement -------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One peer in one case: the best run's rate; latencies, drops and CPU over all its runs."""

    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return max(r.rate for r in self.runs)

    def latency_ms(self, q: float) -> float:
        values = sorted(v for r in self.runs for v in r.latencies)
        return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    @property
    def drops(self) -> float:
        made = sum(r.made for r in self.runs)
        return max(0.0, 1 - sum(r.results for r in self.runs) / made) if made else 0.0

    def cpu_ms(self, side: str) -> float:
        results = sum(r.results for r in self.runs)
        return 1000 * sum(r.client_cpu if side == "client" else r.server_cpu for r in self.runs) / max(1, results)


Results = dict[tuple[str, str], dict[str, Row]]


def measure(args: argparse.Namespace) -> tuple[Results, dict[str, float]]:
    """Every peer through every case, taking turns; then the 64x64 rows and imagezmq's senders for the goals."""
    results: Results = {}
    senders: dict[str, float] = {}
    with ExitStack() as stack:
        zmqproc_endpoint, zmqproc_pid = stack.enter_context(zmqproc_server_process(2))
        imagezmq_port, imagezmq_pid = stack.enter_context(peer_server("imagezmq", "tcp://127.0.0.1:{port}"))
        imagezmq_endpoint = f"tcp://127.0.0.1:{imagezmq_port}"

        @contextmanager
        def peer(name: str, latest: bool) -> Iterator[tuple[Stream, int, bool]]:
            """A peer's stream for one run, its server's pid, and whether its results are the frames exactly."""
            if name.startswith("NetGear"):
                with netgear(jpeg=name.endswith("JPEG")) as (stream, pid):
                    yield stream, pid, not name.endswith("JPEG")
            elif name == "imagezmq":
                yield imagezmq_stream(imagezmq_endpoint), imagezmq_pid, True
            else:
                yield zmqproc_stream(zmqproc_endpoint, name.endswith("JPEG"), latest), zmqproc_pid, not name.endswith("JPEG")

        work = [(size, case, shape) for size, shape in SIZES.items() for case in CASES] + [("64x64", "fast", (64, 64))]
        for size, case, (height, width) in work:
            frames = make_frames(height, width)
            slow = case.endswith("consumer")
            row = results[(size, case)] = {name: Row() for name in PEERS if size != "64x64" or name in ("zmqproc", "imagezmq")}
            for _ in range(args.repeat):  # peers take turns in every round, so a burst of load hits them alike
                for name in row:
                    source = Camera(frames, CAMERA_FPS) if case != "fast" else Burst(frames)
                    with peer(name, latest=slow) as (stream, pid, exact), closing(source):
                        row[name].runs.append(run(stream, source, frames, pid, args.seconds, SLOW_CONSUMER_S if slow else 0.0, exact))
            print(f"{size:>5} {case:<25} " + "  ".join(f"{p} {r.rate:7.1f}/s" for p, r in row.items()), flush=True)
            if case == "fast" and size in ("VGA", "64x64"):
                senders[size] = max(imagezmq_senders(imagezmq_endpoint, frames, args.seconds) for _ in range(args.repeat))
                print(f"{size:>5} {'fast':<25} imagezmq, {SENDERS} senders {senders[size]:7.1f}/s", flush=True)
    return results, senders


# ---- report --------------------------------------------------------------------------------------------------------


def figures(results: Results) -> str:
    """Markdown: each peer in each case."""
    lines = [
        "| frames | case | peer | results/s | latency p50 / p99 (ms) | drops | client CPU / result (ms) | server CPU / result (ms) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (size, case), row in results.items():
        for peer, r in row.items():
            drops = f"{100 * r.drops:.0f} %" if case != "fast" else ""
            lines.append(
                f"| {size} | {case} | {peer} | {r.rate:.1f} | {r.latency_ms(0.5):.1f} / {r.latency_ms(0.99):.1f} | {drops} | "
                f"{r.cpu_ms('client'):.2f} | {r.cpu_ms('server'):.2f} |"
            )
    return "\n".join(lines)


def ratios(results: Results) -> str:
    """Markdown: zmqproc against the others in each case, results/s and latency p50 (below 1: zmqproc's is lower)."""
    pairs = [("zmqproc", "imagezmq"), ("zmqproc", "NetGear"), ("zmqproc JPEG", "NetGear JPEG")]
    names = [f"{a} / {b}" for a, b in pairs]
    head = "| frames | case | " + " | ".join(f"results/s {n}" for n in names) + " | " + " | ".join(f"latency p50 {n}" for n in names) + " |"
    lines = [head, "|---|---|" + "---:|" * 2 * len(pairs)]
    for (size, case), row in results.items():
        rate = [f"{row[a].rate / row[b].rate:.2f}×" if a in row and b in row else "" for a, b in pairs]
        latency = [f"{row[a].latency_ms(0.5) / row[b].latency_ms(0.5):.2f}×" if a in row and b in row else "" for a, b in pairs]
        lines.append(f"| {size} | {case} | " + " | ".join(rate + latency) + " |")
    return "\n".join(lines)


def goals(results: Results, senders: dict[str, float]) -> str:
    """Markdown: issue 21's goals for the streaming API (part 4), each a ratio measured in this run."""
    vga, small = results[("VGA", "fast")], results[("64x64", "fast")]
    rows = [
        ("VGA: zmqproc ≥ 1.2× imagezmq's best pattern", vga["zmqproc"].rate, max(vga["imagezmq"].rate, senders["VGA"]), 1.2),
        ("VGA: zmqproc ≥ 1.0× NetGear", vga["zmqproc"].rate, vga["NetGear"].rate, 1.0),
        ("VGA: zmqproc JPEG ≥ 1.0× NetGear JPEG", vga["zmqproc JPEG"].rate, vga["NetGear JPEG"].rate, 1.0),
        ("64x64: zmqproc ≥ 1.0× imagezmq (one sender)", small["zmqproc"].rate, small["imagezmq"].rate, 1.0),
        (f"64x64: zmqproc against imagezmq's {SENDERS} senders", small["zmqproc"].rate, senders["64x64"], 1.0),
    ]
    lines = ["| goal (issue 21, part 4) | zmqproc results/s | baseline results/s | ratio | |", "|---|---:|---:|---:|---|"]
    for text, ours, theirs, goal in rows:
        lines.append(f"| {text} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}× | {'met' if ours / theirs >= goal else 'MISSED'} |")
    lines.append(
        f"\nimagezmq's best pattern at VGA: {'one sender' if vga['imagezmq'].rate >= senders['VGA'] else f'{SENDERS} senders'} "
        f"({vga['imagezmq'].rate:.0f}/s with one sender, {senders['VGA']:.0f}/s with {SENDERS})."
    )
    return "\n".join(lines)


def section(results: Results, senders: dict[str, float], args: argparse.Namespace) -> str:
    return f"""## Streams

`make bench-streams` (it installs the `bench` extra), or
`flock /tmp/zmqproc-bench.lock .venv/bin/python bench/streams.py --seconds {args.seconds:g} --repeat {args.repeat} --write`.
The same frames (a pan across the coffee sample, 60 pre-decoded BGR uint8 frames per size, each stamped with its number)
through zmqproc's streaming API, imagezmq and NetGear (vidgear 0.3.6), every server a separate process on 127.0.0.1 with
its default settings (zmqproc: 2 workers), `identity` as the processing. Measured in one run
({datetime.now(UTC):%Y-%m-%d %H:%M} UTC) on the 2-core machine (client and server share its two cores): each results/s
the best of {args.repeat} runs of {args.seconds:g} s in which the peers take turns (the first {WARMUP_S:g} s of a run not
counted), latencies and CPU over all runs.

- zmqproc: `Client.map(frames, "identity")`, ordered; "zmqproc JPEG": each frame encoded by the client as NetGear does
  (simplejpeg, quality 90, fast DCT, 4:2:2), sent with `reply_format="jpeg"`, the result decoded. For the 10 fps
  consumer, `latest=True`.
- imagezmq: `ImageSender.send_image` (REQ) to an `ImageHub` (REP) that answers with the frame: one frame at a time.
- NetGear: its default pattern (0, PAIR) in bidirectional mode, the way its docs return processed frames: the receiver
  sends each frame back with its reply to the next one, so a result comes one frame late; "NetGear JPEG" with its JPEG
  compression (on by default when simplejpeg is installed), "NetGear" without.
- fast: frames as fast as the peer takes them; 30 fps: a camera thread makes a frame every 1/30 s and a read waits for
  one newer than the last; 10 fps consumer: the consumer spends 100 ms on each result. Latency: from the frame's read
  (fast) or making (camera) to its result at the consumer, so for the slow consumer the result's age when it is taken;
  drops: camera frames that never reached the consumer. CPU: the client process (all threads), the server's process
  tree (its workers included), per result.

{figures(results)}

zmqproc against the others, in the same run:

{ratios(results)}

{goals(results, senders)}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="length of one run (after its warm-up)")
    p.add_argument("--repeat", type=int, default=2, help="rounds; each results/s is the best of its rounds")
    p.add_argument("--quick", action="store_true", help="a bounded run: 1 s runs, one round")
    p.add_argument("--write", action="store_true", help="write the '## Streams' section of docs/benchmarks.md")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.repeat = 1.0, 1
    missing = [name for name in ("imagezmq", "vidgear", "simplejpeg") if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"bench/streams.py needs the bench extras ({', '.join(missing)} missing): .venv/bin/pip install -e '.[bench]'")
    results, senders = measure(args)
    print()
    print(figures(results))
    print()
    print(ratios(results))
    print()
    print(goals(results, senders))
    if args.write:
        write_section(ROOT / "docs" / "benchmarks.md", section(results, senders, args))
        print("\nwrote the '## Streams' section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
