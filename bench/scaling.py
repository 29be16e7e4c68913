"""Replicas found through one DNS name (issue 24, part 6): the throughput of a heavy op by one client against N = 1, 2,
3 server processes on this machine (``--workers 1`` each), and what the client spends per request and per replica;
all measured in one run on 2 cores.

    flock /tmp/zmqproc-bench.lock .venv/bin/python bench/scaling.py [--quick] [--write]

Needs root and util-linux's ``unshare`` (as tests/system/test_discovery.py): the servers bind 127.0.0.2, .3, .4 on one
port, and a hosts file names them all ``replicas.zmqproc.test``; the measuring client runs as a new process in a
private mount namespace whose /etc/hosts is that file (``unshare -m --propagation private``, the file bind-mounted),
this script again with ``--client``, connecting to ``tcp://replicas.zmqproc.test:PORT`` (the real resolver finds every
address; ``ClientOptions.rediscover`` at its default, 10 s). The baseline, in the same run and the same namespace, is
the same client given the N addresses as IP literals (no discovery): the ratio shows what finding them by name costs.

The image: the shipped ``coffee`` sample (600x400) resized to VGA (640x480x3 uint8, bicubic): a photo, not noise.
The op: ``denoise:template_window=5,search_window=5`` (non-local means), about 60-90 ms of one core per image here
(``--op`` picks another). Each client sends ``--warmup`` images, then ``--requests`` through ``Client.map``
(unordered: as many in flight as the servers' credit allows, spread over every connected replica; the library's
default ``transfer="auto"``, which sends raw both ways on loopback, or ``--transfer raw``) and reports images/s,
its own CPU time per request (``resource.getrusage(RUSAGE_SELF)``: every thread of the process, libzmq's I/O thread
included), the workers' median job time (``server_ms``) and each replica's share of the requests
(``Client.stats_each``); then its CPU per second while idle for ``--idle`` s with the N connections open. The servers
are started afresh for each N; the two clients alternate, ``--repeat`` times (best throughput, least CPU kept).
Prints the table and notes; ``--write`` puts them in docs/benchmarks.md ("## Scaling").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, free_port, process, tree_cpu_seconds, write_section  # noqa: E402
from zmqproc import Client, ClientOptions, samples  # noqa: E402

NAME = "replicas.zmqproc.test"
OP = "denoise:template_window=5,search_window=5"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
CLIENT_TIMEOUT = 120.0


def photo() -> np.ndarray:
    """The coffee sample at VGA (see the module's docstring)."""
    image = cv2.imread(str(samples.path("coffee")), cv2.IMREAD_COLOR)
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_CUBIC)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the client, in the namespace -------------------------------------------------------------------------------------


def client_role(args: argparse.Namespace) -> None:
    image = np.load(args.image)
    endpoints: list[str] = args.client
    with Client(endpoints if len(endpoints) > 1 else endpoints[0], timeout=CLIENT_TIMEOUT, options=ClientOptions()) as client:
        deadline = time.monotonic() + 15
        while not (len(found := client.replicas()) == args.expect and all(state == "connected" for _, state, _ in found)):
            if time.monotonic() > deadline:
                raise SystemExit(f"expected {args.expect} connected replicas, have {found}")
            time.sleep(0.01)
        replicas = sorted(endpoint for endpoint, _, _ in found)
        for item in client.map((image for _ in range(args.warmup)), args.op, ordered=False, transfer=args.transfer):
            if item.error is not None:
                raise SystemExit(f"warm-up request failed: {item.error!r}")
        before = client.stats_each()
        cpu0, start = cpu_s(), time.perf_counter()
        server_ms = []
        for item in client.map((image for _ in range(args.requests)), args.op, ordered=False, details=True, transfer=args.transfer):
            if item.error is not None:
                raise SystemExit(f"request {item.index} failed: {item.error!r}")
            server_ms.append(item.result.server_ms)
        seconds, cpu = time.perf_counter() - start, cpu_s() - cpu0
        after = client.stats_each()
        share = {}
        for endpoint in replicas:
            b, a = before[endpoint], after[endpoint]
            if isinstance(a, BaseException) or isinstance(b, BaseException):
                raise SystemExit(f"{endpoint} did not answer stats: {a!r} {b!r}")
            share[endpoint] = int(a["requests"]) - int(b["requests"]) - 1  # the "after" stats request counts itself
        idle0 = cpu_s()
        time.sleep(args.idle)
        idle = (cpu_s() - idle0) / args.idle
    report = {
        "replicas": replicas,
        "images_s": args.requests / seconds,
        "cpu_ms": cpu / args.requests * 1000,
        "server_ms": statistics.median(server_ms),
        "share": share,
        "idle_ms_s": idle * 1000,
    }
    print(json.dumps(report))


# ---- the servers and the runs ------------------------------------------------------------------------------------------


@contextmanager
def servers(n: int, port: int) -> Iterator[list[int]]:
    """N server processes, 1 worker each, on 127.0.0.2... and ``port``: their pids."""
    with ExitStack() as stack:
        pids = []
        for address in ADDRESSES[:n]:
            args = [sys.executable, "server_main.py", "--bind", f"tcp://{address}:{port}", "--workers", "1", "--log-level", "warning"]
            pids.append(stack.enter_context(process(args, port, host=address)).pid)
        yield pids


def write_hosts(path: Path, n: int) -> None:
    path.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {NAME}\n" for address in ADDRESSES[:n]))


def run_client(hosts: Path, image: Path, args: argparse.Namespace, n: int, endpoints: list[str]) -> dict[str, Any]:
    """This script with ``--client`` in a mount namespace whose /etc/hosts is ``hosts``: its report."""
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    inner = [sys.executable, __file__, "--image", str(image), "--op", args.op, "--requests", str(args.requests)]
    inner += [
        "--transfer",
        args.transfer,
        "--warmup",
        str(args.warmup),
        "--idle",
        str(args.idle),
        "--expect",
        str(n),
        "--client",
        *endpoints,
    ]
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(hosts), *inner]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the client ({' '.join(endpoints)}) failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best throughput, the least CPU, the lowest median job time of the repeats (the least disturbed)."""
    top = max(runs, key=lambda r: r["images_s"])
    return {
        **top,
        "cpu_ms": min(r["cpu_ms"] for r in runs),
        "idle_ms_s": min(r["idle_ms_s"] for r in runs),
        "server_ms": min(r["server_ms"] for r in runs),
    }


def bench(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    image, hosts = tmp / "photo.npy", tmp / "hosts"
    np.save(image, photo())
    found: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    for n in args.replicas:
        port = free_port()
        write_hosts(hosts, n)
        literals = [f"tcp://{address}:{port}" for address in ADDRESSES[:n]]
        runs: dict[str, list[dict[str, Any]]] = {"name": [], "ip": []}
        with servers(n, port) as pids:
            cpu0 = sum(tree_cpu_seconds(pid) for pid in pids)
            for _ in range(args.repeat):
                runs["name"].append(run_client(hosts, image, args, n, [f"tcp://{NAME}:{port}"]))
                runs["ip"].append(run_client(hosts, image, args, n, literals))
            served = args.repeat * 2 * (args.requests + args.warmup)
            server_cpu_ms = (sum(tree_cpu_seconds(pid) for pid in pids) - cpu0) / served * 1000
        name = best(runs["name"])
        if sorted(name["replicas"]) != sorted(literals):
            raise SystemExit(f"the name found {name['replicas']}, not {literals}")
        found.append({"n": n, "name": name, "ip": best(runs["ip"]), "server_cpu_ms": server_cpu_ms, "load": load})
    return found


# ---- the report -----------------------------------------------------------------------------------------------------------


def table(found: list[dict[str, Any]]) -> list[str]:
    one = found[0]["name"]["images_s"]
    lines = [
        "| N | images/s (by name) | speedup vs N=1 | client CPU ms/request | client idle CPU ms/s | IP literals: images/s "
        "| by name / IP literals | client CPU ms/request (IP) | median job ms | requests per replica |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in found:
        name, ip = f["name"], f["ip"]
        share = " / ".join(str(name["share"][e]) for e in sorted(name["share"]))
        lines.append(
            f"| {f['n']} | {name['images_s']:.1f} | {name['images_s'] / one:.2f}x | {name['cpu_ms']:.2f} | {name['idle_ms_s']:.2f} "
            f"| {ip['images_s']:.1f} | {name['images_s'] / ip['images_s']:.2f}x | {ip['cpu_ms']:.2f} | {name['server_ms']:.0f} | {share} |"
        )
    return lines


def per_replica(found: list[dict[str, Any]]) -> str:
    """The client's CPU per request as N grows: a least-squares slope over N (ms per request per replica)."""
    if len(found) < 2:
        return "one N only: no slope"
    ns = [f["n"] for f in found]
    slope = float(np.polyfit(ns, [f["name"]["cpu_ms"] for f in found], 1)[0])
    slope_ip = float(np.polyfit(ns, [f["ip"]["cpu_ms"] for f in found], 1)[0])
    idle = float(np.polyfit(ns, [f["name"]["idle_ms_s"] for f in found], 1)[0])
    return (
        f"client CPU per request grows by {slope:+.3f} ms per replica by name ({slope_ip:+.3f} with IP literals); "
        f"idle, {idle:+.3f} ms of CPU per second per replica"
    )


def notes(found: list[dict[str, Any]]) -> list[str]:
    cores = os.cpu_count() or 1
    speed = {f["n"]: f["name"]["images_s"] / found[0]["name"]["images_s"] for f in found}
    lines = [f"- {per_replica(found)}."]
    lines.append(f"- load average (1 min) when the run began: {found[0]['load']:.2f} (above 0: other work shared the cores).")
    lines.append(
        "- servers' CPU (their process trees, warm-ups and both clients included): "
        + ", ".join(f"N={f['n']} {f['server_cpu_ms']:.0f} ms/request" for f in found)
        + "."
    )
    if cores in speed:
        share = "the client and the servers' main processes share the cores"
        lines.append(f"- {cores} cores: N={cores} gives {speed[cores]:.2f}x of N=1 (at most {cores}x; {share}).")
    beyond = [n for n in speed if n > cores]
    if beyond:
        lines.append(
            "- beyond the cores: "
            + ", ".join(f"N={n} {speed[n]:.2f}x" for n in beyond)
            + f" (vs {speed.get(cores, float('nan')):.2f}x at N={cores}): more replicas than cores only share the same cores, "
            "and each job takes longer (median job ms)."
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer requests, one run each (figures to check the script, not to quote)")
    p.add_argument("--replicas", default="1,2,3", help="the Ns to run, comma-separated (default 1,2,3; at most 5)")
    p.add_argument("--op", default=OP, help=f"the heavy op (default {OP})")
    p.add_argument("--requests", type=int, help="measured requests per client run (default 200, 30 with --quick)")
    p.add_argument("--warmup", type=int, help="requests before measuring (default 10, 4 with --quick)")
    p.add_argument("--repeat", type=int, help="client runs of each kind per N, alternating (default 3, 1 with --quick)")
    p.add_argument("--idle", type=float, help="seconds of idle CPU measured with the connections open (default 3, 1 with --quick)")
    p.add_argument("--transfer", choices=("auto", "raw"), default="auto", help="the library's choice (default), or raw both ways")
    p.add_argument("--write", action="store_true", help="write the figures into docs/benchmarks.md")
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    p.add_argument("--client", nargs="+", help=argparse.SUPPRESS)  # the client part, in the namespace: its endpoints
    args = p.parse_args()
    args.requests = args.requests or (30 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (4 if args.quick else 10)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.idle = args.idle or (1.0 if args.quick else 3.0)
    if args.client:
        client_role(args)
        return
    args.replicas = [int(n) for n in args.replicas.split(",")]
    if not 1 <= min(args.replicas) <= max(args.replicas) <= len(ADDRESSES):
        p.error(f"--replicas: from 1 to {len(ADDRESSES)}")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("needs root and util-linux's unshare (a private /etc/hosts for the client)")
    with tempfile.TemporaryDirectory() as tmp:
        found = bench(args, Path(tmp))
    lines, noted = table(found), notes(found)
    print("\n".join(lines))
    print("\n".join(noted))
    if args.write:
        command = "flock /tmp/zmqproc-bench.lock .venv/bin/python bench/scaling.py " + shlex.join(sys.argv[1:])
        write(command, args, lines, noted)


def write(command: str, args: argparse.Namespace, lines: list[str], noted: list[str]) -> None:
    quick = " **--quick figures, to be rerun on a quiet machine**" if args.quick else ""
    section = [
        "## Scaling",
        "",
        f"`{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores){quick}: N server processes",
        f"(`--workers 1` each) on 127.0.0.2... one port, found by one client through one name (`tcp://{NAME}:PORT`, the",
        "client in a private mount namespace whose /etc/hosts lists the name on the N addresses), against the same client",
        f"given the N addresses as IP literals, in the same run. `{args.op}` on a VGA photo (the `coffee` sample resized),",
        f"{args.requests} requests through `Client.map` (unordered, transfer={args.transfer}) after {args.warmup} to warm up,",
        f"best of {args.repeat} (throughput; least CPU). Client CPU: its process's user + system time (every thread) over",
        "the measured requests; idle: its CPU per second with the N connections open and nothing to do. Median job ms: the",
        "workers' own time per image (`server_ms`), which grows when replicas outnumber the cores.",
        "",
        *lines,
        "",
        *noted,
        "",
    ]
    write_section(ROOT / "docs" / "benchmarks.md", "\n".join(section))


if __name__ == "__main__":
    main()
