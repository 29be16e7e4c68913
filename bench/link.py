"""Big images over emulated links (issue 23): each way of sending pixels, and ``transfer="auto"``, against the ideal
time for the bytes it sent, all measured in one run on 127.0.0.1 (2 cores).

    flock /tmp/zmqproc-bench.lock .venv/bin/python bench/link.py [--quick] [--links 20m,100m] [--runs N] [--write]

Links (scripts/link.py, in a process of its own, one relay per link: a FIFO at the rate and a propagation delay, each
way): 1 Gbit/s 1 ms, 100 Mbit/s 20 ms, 20 Mbit/s 60 ms (one way; the round trip is twice). The relay counts the bytes
that enter it each way: the bytes up and down below are what went on the wire for a request (payload, headers, parts
and fetches, and the odd ping meanwhile). One server process (``server_main.py --workers 2``, default settings) behind
all of them; ``gaussian_blur:ksize=5``.
Images: photo-like, the shipped samples at their own resolution in bands (bench/tiles.py's ``mosaic``): 3000x4000x3
uint8 (12 MP, 36 MB) and 1080x1920x3 (1080p, 6.2 MB); as files, JPEG q95 and PNG as OpenCV writes it by default.
Ways (the library's ``Client.process`` with ``details=True``; the time runs from the call to the result's pixels in
hand, a PNG reply decoded here included):
- raw / raw: the array, ``transfer="raw"``;  png / png: the array, ``transfer="png"`` (the fast PNG made here and by
  the server);
- JPEG file / raw, JPEG file / png: the JPEG's bytes as they are, ``reply_format="raw"`` or ``"png"`` (the result is
  then the JPEG's decoded pixels blurred: lossless for a user whose image is that file);
- PNG file / raw: the PNG's bytes, ``reply_format="raw"``;
- auto: the array, the library's default (``transfer="auto"``): what it chose is recorded from its own call of
  ``transfer.choose``;
- auto, JPEG file / auto, PNG file: what the viewer does with a file: ``transfer.choose(client._session.link(),
  pixel_bytes, file=(fmt, size), ratio=...)``, then that choice carried out (the file, the array raw, or the fast PNG
  up; ``reply_format`` raw or png down); the time includes choosing and any encoding and decoding here;
- auto, first request: the array through a brand-new Client that has done nothing yet (no warm-up): what a user's
  first image meets.
Each link has a fresh Client, warmed up (a ping and one small image) before its first cell, so the link is measured as
a user's second request would find it (its later cells see what the earlier ones measured, as a user's would). Runs go
round the ways in turn, each round starting one further on; each cell is the median of N runs (5 at 1 Gbit/s, 3
below; 1 with --quick). Ideal: bytes up / rate + bytes down / rate + the round trip + the server's time
(``server_ms``: decoding, processing and encoding there); the client's own encoding and decoding are not in it.
Results are checked: every lossless way gives the raw way's pixels, every JPEG way the JPEG raw way's.
Goals (issue 23): every cell completes; "auto" within 1.1x of the best lossless fixed way on every link and size (the
array: raw or png; with a file: those and the file's ways), and within 1.3x of the ideal for the bytes it sent.
``--write`` rewrites "## Links" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, write_section, zmqproc_server_process  # noqa: E402
from bench.tiles import mosaic  # noqa: E402
from zmqproc import Client  # noqa: E402
from zmqproc.client import threaded, transfer  # noqa: E402
from zmqproc.images import ImageDescriptor, decode_image, encode_image, png_ratio  # noqa: E402

OP = "gaussian_blur:ksize=5"
LINKS = {"1g": (1000.0, 1.0), "100m": (100.0, 20.0), "20m": (20.0, 60.0)}  # Mbit/s each way, ms one way
SIZES = {"12 MP": (3000, 4000), "1080p": (1080, 1920)}
RUNS = {"1g": 5, "100m": 3, "20m": 3}
JPEG_QUALITY = 95
TIMEOUT = 600.0
FIXED_ARRAY = ("raw", "png")
FILE_WAYS = {"jpeg": ("jpeg-raw", "jpeg-png"), "pngfile": ("pngfile-raw",)}
AUTOS = {"auto": FIXED_ARRAY, "auto-jpeg": FIXED_ARRAY + FILE_WAYS["jpeg"], "auto-pngfile": FIXED_ARRAY + FILE_WAYS["pngfile"]}
WAYS = {  # name: label
    "raw": "raw up / raw down",
    "png": "png up / png down",
    "jpeg-raw": "JPEG q95 file up / raw down",
    "jpeg-png": "JPEG q95 file up / png down",
    "pngfile-raw": "PNG file up / raw down",
    "auto": "auto (array)",
    "auto-jpeg": "auto, JPEG file",
    "auto-pngfile": "auto, PNG file",
    "auto-first": "auto (array), first request",
}
LOSSLESS = {"raw", "png", "pngfile-raw", "auto", "auto-pngfile", "auto-first"}  # give the raw way's pixels
FROM_JPEG = {"jpeg-raw", "jpeg-png", "auto-jpeg"}  # give the JPEG raw way's pixels


# ---- the link, in its own process, counting the bytes each way ---------------------------------------------------------


def relay_role(target_port: str, rate_mbit: str, delay_ms: str) -> None:
    """scripts/link.py's relay to 127.0.0.1:``target_port``; prints its port, then for each line read from stdin the bytes
    that entered it so far, up (from clients) and down (from the server). Ends when stdin closes."""
    spec = importlib.util.spec_from_file_location("link", ROOT / "scripts" / "link.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["link"] = module
    spec.loader.exec_module(module)
    directions: dict[str, list[Any]] = {"up": [], "down": []}

    class Counted:
        """A socket whose ``recv`` counts what it returns (all the relay asks of its source)."""

        def __init__(self, sock: Any) -> None:
            self.sock, self.bytes = sock, 0

        def recv(self, n: int) -> bytes:
            data: bytes = self.sock.recv(n)
            self.bytes += len(data)
            return data

    class CountedDirection(module._Direction):  # type: ignore[name-defined,misc]
        def __init__(self, src: Any, dst: Any, *args: Any) -> None:
            super().__init__(Counted(src), dst, *args)
            directions["down" if src.getpeername()[1] == int(target_port) else "up"].append(self.src)

    module._Direction = CountedDirection
    relay = module.Link(("127.0.0.1", int(target_port)), float(rate_mbit), float(delay_ms))
    print(relay.port, flush=True)
    for _ in sys.stdin:
        print(sum(c.bytes for c in directions["up"]), sum(c.bytes for c in directions["down"]), flush=True)
    relay.close()


class Relay:
    def __init__(self, proc: subprocess.Popen[str], rate_mbit: float, delay_ms: float) -> None:
        assert proc.stdout is not None
        self.proc, self.port = proc, int(proc.stdout.readline())
        self.rate, self.rtt = rate_mbit * 1e6 / 8, 2 * delay_ms / 1000  # bytes/s, s

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def counted(self) -> tuple[int, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        up, down = self.proc.stdout.readline().split()
        return int(up), int(down)


@contextmanager
def relay(server_port: int, rate_mbit: float, delay_ms: float) -> Iterator[Relay]:
    args = [sys.executable, __file__, "_relay", str(server_port), str(rate_mbit), str(delay_ms)]
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield Relay(proc, rate_mbit, delay_ms)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- one image, its files and how each way sends it ---------------------------------------------------------------------


@dataclass
class Image:
    pixels: np.ndarray
    jpeg: bytes
    png: bytes
    jpeg_pixels: np.ndarray  # what the JPEG file decodes to

    @classmethod
    def photo(cls, height: int, width: int) -> Image:
        pixels = mosaic(height, width)
        jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        png = cv2.imencode(".png", pixels)[1].tobytes()
        return cls(pixels, jpeg, png, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED))


@dataclass
class Run:
    seconds: float
    up: int
    down: int
    server_ms: float
    chose: str = ""  # what auto chose, "up/down"
    pixels: np.ndarray | None = field(default=None, repr=False)


def decoded(value: Any) -> np.ndarray:
    """A reply's image as pixels (a PNG reply decoded here)."""
    image = value.image
    return image if isinstance(image, np.ndarray) else decode_image(ImageDescriptor("png"), image)


class Recorder:
    """What the library's ``transfer="auto"`` chose: its own call of ``transfer.choose``, wrapped in this process."""

    def __init__(self) -> None:
        self.last: transfer.Choice | None = None
        original = threaded.choose

        def recording(*args: Any, **kwargs: Any) -> transfer.Choice:
            self.last = original(*args, **kwargs)
            return self.last

        threaded.choose = recording


RECORDER = Recorder()


def send(client: Client, way: str, image: Image) -> tuple[Any, str]:
    """Carry out ``way`` for ``image`` through ``client``: (the Processed reply with pixels, what auto chose)."""
    if way in ("raw", "png"):
        return client.process(image.pixels, OP, details=True, transfer=way), ""
    if way in ("auto", "auto-first"):
        RECORDER.last = None
        reply = client.process(image.pixels, OP, details=True)
        chose = RECORDER.last
        return reply, f"{chose.up}/{chose.down}" if chose is not None else "raw/raw (not costed)"
    if way in ("auto-jpeg", "auto-pngfile"):
        fmt, data, pixels = ("jpeg", image.jpeg, image.jpeg_pixels) if way == "auto-jpeg" else ("png", image.png, image.pixels)
        with client._lock:
            link = client._session.link()
        learned = client._ratios.get(OP)  # the viewer remembers its results' PNG sizes as the library does
        choice = transfer.choose(link, pixels.nbytes, file=(fmt, len(data)), ratio=lambda: png_ratio(pixels), down_ratio=learned)
        payload: np.ndarray | bytes = {
            transfer.FILE: lambda: data,
            transfer.RAW: lambda: pixels,
            transfer.PNG: lambda: encode_image(pixels, "png")[1].tobytes(),
        }[choice.up]()
        reply = client.process(payload, OP, details=True, reply_format=choice.down)
        if choice.down == transfer.PNG:
            client._ratios.learn(OP, len(reply.image), pixels.nbytes)
        return reply, f"{choice.up}/{choice.down}"
    file, down = way.split("-")
    return client.process(image.jpeg if file == "jpeg" else image.png, OP, details=True, reply_format=down), ""


def measure(client: Client, link: Relay, way: str, image: Image) -> Run:
    before = link.counted()
    start = time.perf_counter()
    reply, chose = send(client, way, image)
    pixels = decoded(reply)
    seconds = time.perf_counter() - start
    after = link.counted()
    return Run(seconds, after[0] - before[0], after[1] - before[1], reply.server_ms, chose, pixels)


def warm_up(client: Client) -> None:
    client.ping()
    client.process(np.zeros((64, 64, 3), np.uint8), OP)


# ---- the matrix ------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    link: str
    size: str
    way: str
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exact: bool = True

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.errors

    @property
    def seconds(self) -> float:
        return self.median("seconds")

    def ideal(self, rate: float, rtt: float) -> float:
        return (self.median("up") + self.median("down")) / rate + rtt + self.median("server_ms") / 1000

    @property
    def chose(self) -> str:
        choices = sorted({r.chose for r in self.runs if r.chose})
        return ", ".join(choices)


def run_link(name: str, server_port: int, sizes: dict[str, Image], runs: int, log: Callable[[str], None]) -> list[Cell]:
    rate_mbit, delay_ms = LINKS[name]
    cells = {(size, way): Cell(name, size, way) for size in sizes for way in WAYS}
    with relay(server_port, rate_mbit, delay_ms) as link, Client(link.endpoint, timeout=TIMEOUT) as client:
        warm_up(client)
        for size, image in sizes.items():
            expected: dict[str, np.ndarray] = {}
            for r in range(runs):
                order = list(WAYS)[r % len(WAYS) :] + list(WAYS)[: r % len(WAYS)]  # none always first after a change
                for way in order:
                    cell = cells[size, way]
                    try:
                        if way == "auto-first":
                            with Client(link.endpoint, timeout=TIMEOUT) as first:
                                run = measure(first, link, way, image)
                        else:
                            run = measure(client, link, way, image)
                    except Exception as exc:  # a cell that fails is reported, the matrix goes on
                        cell.errors.append(f"{type(exc).__name__}: {exc}")
                        log(f"{name} {size} {way} run {r + 1}: FAILED {cell.errors[-1]}")
                        continue
                    reference = "jpeg-raw" if way in FROM_JPEG else "raw"
                    if reference in expected and run.pixels is not None:
                        cell.exact = cell.exact and bool(np.array_equal(run.pixels, expected[reference]))
                    elif way == reference and run.pixels is not None:
                        expected[way] = run.pixels
                    run.pixels = None
                    cell.runs.append(run)
                    log(
                        f"{name} {size} {way} run {r + 1}: {run.seconds:.2f} s, up {run.up / 1e6:.2f} MB, down {run.down / 1e6:.2f} MB, "
                        f"server {run.server_ms:.0f} ms{' ' + run.chose if run.chose else ''}"
                    )
    return list(cells.values())


def best_fixed(cells: list[Cell], link: str, size: str, ways: tuple[str, ...]) -> Cell | None:
    done = [c for c in cells if c.link == link and c.size == size and c.way in ways and c.ok]
    return min(done, key=lambda c: c.seconds, default=None)


# ---- report ------------------------------------------------------------------------------------------------------


def link_label(name: str) -> str:
    rate, delay = LINKS[name]
    return f"{rate / 1000:g} Gbit/s, {delay:g} ms" if rate >= 1000 else f"{rate:g} Mbit/s, {delay:g} ms"


def table(cells: list[Cell]) -> list[str]:
    lines = [
        "| link | image | way | time | up | down | server | ideal | time / ideal | / best fixed | auto chose |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        rate_mbit, delay_ms = LINKS[c.link]
        head = f"| {link_label(c.link)} | {c.size} | {WAYS[c.way]} "
        if not c.ok:
            lines.append(head + f"| **failed**: {(c.errors or ['no run'])[0][:80]} | | | | | | | |")
            continue
        ideal = c.ideal(rate_mbit * 1e6 / 8, 2 * delay_ms / 1000)
        way = "auto" if c.way == "auto-first" else c.way
        best = best_fixed(cells, c.link, c.size, AUTOS[way]) if way in AUTOS else None
        versus = f"{c.seconds / best.seconds:.2f}x" if best is not None else ""
        exact = "" if c.exact else " (**result differs**)"
        lines.append(
            head + f"| {c.seconds:.2f} s{exact} | {c.median('up') / 1e6:.2f} MB | {c.median('down') / 1e6:.2f} MB "
            f"| {c.median('server_ms'):.0f} ms | {ideal:.2f} s | {c.seconds / ideal:.2f}x | {versus} | {c.chose} |"
        )
    return lines


def goals(cells: list[Cell]) -> list[tuple[str, bool | None, str]]:
    """(goal, met (None: for information), the figures) for issue 23's goals."""
    failed = [f"{c.link} {c.size} {c.way}: {c.errors[0] if c.errors else 'no run'}" for c in cells if not c.ok]
    met: list[tuple[str, bool | None, str]] = [("every cell completes", not failed, "; ".join(failed) or f"{len(cells)} cells")]
    wrong = [f"{c.link} {c.size} {c.way}" for c in cells if c.ok and not c.exact]
    met.append(("every result is the reference's pixels (lossless)", not wrong, "; ".join(wrong) or "all equal"))
    for way, fixed in AUTOS.items():
        figures, ok = [], True
        for c in cells:
            best = best_fixed(cells, c.link, c.size, fixed)
            if c.way != way or not c.ok or best is None:
                continue
            ratio = c.seconds / best.seconds
            ok = ok and ratio <= 1.1
            figures.append(f"{c.link} {c.size} {ratio:.2f}x ({c.seconds:.2f} s vs {WAYS[best.way]} {best.seconds:.2f} s)")
        if figures:
            met.append((f"{WAYS[way]} within 1.1x of the best lossless fixed way", ok, "; ".join(figures)))
    for way in (*AUTOS, "auto-first"):
        figures, ok = [], True
        for c in cells:
            if c.way != way or not c.ok:
                continue
            rate_mbit, delay_ms = LINKS[c.link]
            ratio = c.seconds / c.ideal(rate_mbit * 1e6 / 8, 2 * delay_ms / 1000)
            ok = ok and ratio <= 1.3
            figures.append(f"{c.link} {c.size} {ratio:.2f}x ({c.chose})")
        if figures:
            info = way == "auto-first"
            met.append(
                (
                    f"{WAYS[way]} within 1.3x of the ideal for its bytes{' (not a goal)' if info else ''}",
                    None if info else ok,
                    "; ".join(figures),
                )
            )
    figures, ok = [], True
    for c in cells:
        best = best_fixed(cells, c.link, c.size, FIXED_ARRAY)
        if c.way == "auto-first" and c.ok and best is not None:
            ratio = c.seconds / best.seconds
            figures.append(f"{c.link} {c.size} {ratio:.2f}x ({c.seconds:.2f} s, {c.chose})")
    if figures:
        met.append(("auto's first request against the best fixed way (not a goal)", None, "; ".join(figures)))
    return met


def verdict(ok: bool | None) -> str:
    return "info  " if ok is None else "met   " if ok else "MISSED"


def write(
    command: str, quick: bool, runs: dict[str, int], images: dict[str, Image], lines: list[str], met: list[tuple[str, bool | None, str]]
) -> None:
    files = "; ".join(
        f"{s}: {i.pixels.nbytes / 1e6:.1f} MB raw, JPEG q95 {len(i.jpeg) / 1e6:.2f} MB, PNG {len(i.png) / 1e6:.2f} MB"
        for s, i in images.items()
    )
    section = [
        "## Links",
        "",
        f"`{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 2 cores)"
        + (": **--quick figures, one run per cell, not a quiet machine**." if quick else "."),
        "Big images over emulated links (issue 23): scripts/link.py's relay, in a process of its own, one per link (a FIFO at",
        "the rate and a propagation delay each way; the delay is one way, the round trip twice), before one server process",
        "(`server_main.py --workers 2`, default settings), `gaussian_blur:ksize=5`. Photo-like images, the shipped samples at",
        f"their own resolution in bands (bench/tiles.py's mosaic): {files}. Each link has a fresh `Client`, warmed up",
        '(a ping, one small image) so the link is measured as a user\'s second request finds it; "first request" is a',
        "brand-new `Client`'s first image. Time: from the call to the result's pixels in hand (a PNG reply decoded), median",
        f"of {', '.join(f'{n} at {link_label(k)}' for k, n in runs.items())}. Up and down: the bytes that entered the relay",
        "each way for the request. Ideal: up / rate + down / rate + round trip + the server's time (`server_ms`: its",
        'decoding, processing and encoding); the client\'s own encoding and decoding are not in it. "/ best fixed": auto',
        "against the quickest lossless fixed way (the array's: raw, png; with a file, the file's ways too; the JPEG's raw",
        'and png ways are taken as the original array\'s). "auto chose": up/down as `transfer.choose` decided.',
        "",
        *lines,
        "",
        *[f"- {'info' if ok is None else 'met' if ok else '**missed**'}: {goal} ({figure})" for goal, ok, figure in met],
        "",
    ]
    write_section(ROOT / "docs" / "benchmarks.md", "\n".join(section))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        relay_role(*sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one run per cell; 1080p on every link, 12 MP on the slowest only")
    p.add_argument("--links", default=",".join(LINKS), help=f"comma-separated, of {', '.join(LINKS)} (default all)")
    p.add_argument("--sizes", help=f"comma-separated, of {', '.join(SIZES)} (default both; --quick: see there)")
    p.add_argument("--runs", type=int, help="runs per cell, the median kept (default 5 at 1 Gbit/s, 3 below; 1 with --quick)")
    p.add_argument("--write", action="store_true", help="write the '## Links' section of docs/benchmarks.md")
    args = p.parse_args()
    links = [name.strip() for name in args.links.split(",") if name.strip()]
    unknown = [name for name in links if name not in LINKS] + [s for s in (args.sizes or "").split(",") if s and s not in SIZES]
    if unknown:
        p.error(f"unknown link or size: {', '.join(unknown)}")
    slowest = min(LINKS, key=lambda name: LINKS[name][0])
    wanted = args.sizes.split(",") if args.sizes else list(SIZES)
    per_link = {name: [s for s in wanted if args.sizes or not args.quick or name == slowest or s != "12 MP"] for name in links}
    images = {size: Image.photo(*SIZES[size]) for size in wanted if any(size in sizes for sizes in per_link.values())}
    runs = {name: args.runs or (1 if args.quick else RUNS[name]) for name in links}
    cells: list[Cell] = []

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with zmqproc_server_process(2) as (endpoint, _):
        port = int(endpoint.rsplit(":", 1)[1])
        for name in links:
            cells += run_link(name, port, {size: images[size] for size in per_link[name]}, runs[name], log)
    lines = table(cells)
    met = goals(cells)
    print("\n".join(lines))
    print()
    for goal, ok, figure in met:
        print(f"{verdict(ok)} {goal}: {figure}")
    if args.write:
        command = "flock /tmp/zmqproc-bench.lock .venv/bin/python bench/link.py " + shlex.join(sys.argv[1:])
        write(command.strip(), args.quick, runs, images, lines, met)


if __name__ == "__main__":
    main()
