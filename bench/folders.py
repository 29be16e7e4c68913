"""A folder through the command line, on one server and spread over two (issue 21), measured in one run on 127.0.0.1.

    flock /tmp/zmqproc-bench.lock .venv/bin/python bench/folders.py [--images 48 --op denoise]

The folder: ``--images`` copies of the astronaut sample (512x512 PNG), written to a temporary folder. Each run is
``zmqproc process FOLDER -o OUT --op OP --server ...`` as a user types it (a new process, default settings), against
(a) one server with one worker, (b) two such servers, each given with its own ``--server``. The machine has 2 cores:
(b) can be at most twice (a). Prints images/s and the ratio; with ``--write`` puts the figures in docs/benchmarks.md
("## Folders").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, zmqproc_server  # noqa: E402
from zmqproc import samples  # noqa: E402


def run(folder: Path, out: Path, op: str, servers: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "zmqproc", "process", str(folder), "-o", str(out), "--op", op]
    for endpoint in servers:
        args += ["--server", endpoint]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"zmqproc process failed: {done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--op", default="denoise")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--write", action="store_true", help="write the figures into docs/benchmarks.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i in range(args.images):
            shutil.copy(samples.path("astronaut"), folder / f"photo{i:04d}.png")
        a = stack.enter_context(zmqproc_server(1))
        b = stack.enter_context(zmqproc_server(1))
        one = min(run(folder, Path(tmp) / "out", args.op, [a]) for _ in range(args.repeat))
        two = min(run(folder, Path(tmp) / "out", args.op, [a, b]) for _ in range(args.repeat))
    rows = [("one server, 1 worker", args.images / one), ("two servers, 1 worker each", args.images / two)]
    for name, per_s in rows:
        print(f"{name:28s} {per_s:7.2f} images/s")
    print(f"two / one: {one / two:.2f}x")
    if args.write:
        write(args, rows, one / two)


def write(args: argparse.Namespace, rows: list[tuple[str, float]], ratio: float) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    head = "## Folders"
    section = [
        head,
        "",
        f"`flock /tmp/zmqproc-bench.lock .venv/bin/python bench/folders.py --images {args.images} --op {args.op} "
        f"--repeat {args.repeat} --write` ({datetime.now(UTC):%Y-%m-%d}, 2 cores): `zmqproc process FOLDER -o OUT --op {args.op}`",
        f"on {args.images} 512x512 PNGs, as typed (a new process each run, default settings, best of {args.repeat}), against one",
        "server with one worker and against two such servers (`--server A --server B`).",
        "",
        "| servers | images/s |",
        "|---|---|",
        *[f"| {name} | {per_s:.2f} |" for name, per_s in rows],
        "",
        f"Two servers: **{ratio:.2f}x** one (at most 2x on 2 cores). The stream sends each image to a server with room in",
        "its grant, the fewest outstanding first, and keeps out what the servers finish in half a request's timeout (so a",
        "slow pipeline's last images do not time out in a queue), which is plenty to keep both busy.",
        "",
    ]
    start = text.find(head)
    if start < 0:
        text = text.rstrip() + "\n\n" + "\n".join(section)
    else:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + "\n".join(section) + ("\n" + text[end + 1 :] if end >= 0 else "")
    doc.write_text(text)


if __name__ == "__main__":
    main()
