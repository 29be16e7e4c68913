"""SSH tunnel figures (issues 4 and 13): identity round trips/s through each way in, measured in one run.

    flock /tmp/zmqproc-test.lock flock /tmp/zmqproc-bench.lock .venv/bin/python bench/ssh.py [--seconds 3] [--repeat 3]

Direct, our paramiko backend, our OpenSSH backend, pyzmq's stock paramiko tunnel
(``zmq.ssh.tunnel``) and a bare ``ssh -N -L 127.0.0.1:PORT:HOST:PORT`` with OpenSSH's defaults, all to the
same real server through the same real sshd (started here, as in the tests), all with the same zmqproc Client
and default settings; and our OpenSSH backend to a second server process bound on a Unix socket (``ipc://``).
Goals: paramiko (ours) >= 1.0x and OpenSSH (ours) >= 0.9x a bare ``ssh -L``; paramiko >= 5x pyzmq's stock
tunnel. The ways take turns in every run and each figure is the best of the runs, so a burst of load
elsewhere does not favour one way.

``--ablation``: our paramiko backend with each of its three tunings undone in turn (TCP_QUICKACK on the
transport socket, AES-GCM offered first, the transport socket's read-ahead), and all three, beside bare ``ssh -L``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
from zmq.ssh import tunnel as stock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import free_port, rate, wait_for_port, zmqproc_server  # noqa: E402
from tests.fixtures.sshd import Sshd  # noqa: E402
from zmqproc import Client, tunnel_paramiko  # noqa: E402

Way = Callable[[str, Sshd], AbstractContextManager[Client]]


@contextmanager
def direct(endpoint: str, sshd: Sshd) -> Iterator[Client]:
    with Client(endpoint, timeout=60) as client:
        yield client


def ours(backend: str) -> Way:
    @contextmanager
    def open_client(endpoint: str, sshd: Sshd) -> Iterator[Client]:
        ssh = {"ssh": sshd.target, "ssh_key": sshd.key, "ssh_known_hosts": sshd.known_hosts, "ssh_backend": backend}
        with Client(endpoint, timeout=60, **ssh) as client:  # type: ignore[arg-type]
            yield client

    return open_client


@contextmanager
def pyzmq_stock(endpoint: str, sshd: Sshd) -> Iterator[Client]:
    """``zmq.ssh.tunnel`` with paramiko=True: what ``tunnel_connection(..., paramiko=True)`` sets up."""
    os.environ["PYZMQ_PARAMIKO_HOST_KEY_POLICY"] = "Warning"  # it reads only ~/.ssh/known_hosts
    warnings.filterwarnings("ignore", message="Unknown .* host key")
    url, proc = stock.open_tunnel(endpoint, f"{sshd.user}@{sshd.host}:{sshd.port}", keyfile=sshd.key, paramiko=True)
    try:
        wait_for_port(int(url.rsplit(":", 1)[1]))
        with Client(url, timeout=60) as client:
            yield client
    finally:
        proc.terminate()
        proc.join(5)


@contextmanager
def bare_ssh(endpoint: str, sshd: Sshd) -> Iterator[Client]:
    host, port = endpoint[len("tcp://") :].rsplit(":", 1)
    local = free_port()
    cmd = ["ssh", "-N", "-L", f"127.0.0.1:{local}:{host}:{port}", "-p", str(sshd.port), "-i", sshd.key]
    cmd += ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sshd.known_hosts}", f"{sshd.user}@{sshd.host}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(local)
        with Client(f"tcp://127.0.0.1:{local}", timeout=60) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(5)


def far_unix(far: str) -> Way:
    """Our openssh backend to the same server code bound on a Unix socket of the SSH host: no TCP at the far end."""
    plain = ours("openssh")

    @contextmanager
    def open_client(endpoint: str, sshd: Sshd) -> Iterator[Client]:
        with plain(far, sshd) as client:
            yield client

    return open_client


def undone(**tuning: object) -> Way:
    """Our paramiko backend with some module-level tuning of zmqproc.ssh.backend_paramiko replaced, for the ablation."""
    plain = ours("paramiko")

    @contextmanager
    def open_client(endpoint: str, sshd: Sshd) -> Iterator[Client]:
        saved = {name: getattr(tunnel_paramiko, name) for name in tuning}
        for name, value in tuning.items():
            setattr(tunnel_paramiko, name, value)
        try:
            with plain(endpoint, sshd) as client:
                yield client
        finally:
            for name, value in saved.items():
                setattr(tunnel_paramiko, name, value)

    return open_client


WAYS: dict[str, Way] = {
    "direct": direct,
    "paramiko (ours)": ours("paramiko"),
    "openssh (ours)": ours("openssh"),
    "pyzmq stock paramiko": pyzmq_stock,
    "bare ssh -N -L": bare_ssh,
}


ABLATION: dict[str, Way] = {
    "paramiko (ours)": ours("paramiko"),
    "without TCP_QUICKACK": undone(_QUICKACK=None),
    "without AES-GCM first": undone(PREFERRED_CIPHERS=()),
    "without read-ahead": undone(READ_AHEAD=0),
    "without all three": undone(_QUICKACK=None, PREFERRED_CIPHERS=(), READ_AHEAD=0),
    "bare ssh -N -L": bare_ssh,
}


def measure(way: Way, endpoint: str, sshd: Sshd, image: np.ndarray, seconds: float) -> float:
    with way(endpoint, sshd) as client:
        return rate(lambda: client.process(image, "identity"), seconds, warmup=3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per figure")
    p.add_argument("--ablation", action="store_true", help="our paramiko backend with its tunings undone, one at a time")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    images = {
        "VGA 640x480x3": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "1080p 1920x1080x3": rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8),
    }
    figures: dict[tuple[str, str], float] = {}
    with zmqproc_server(2) as endpoint, zmqproc_server(2, ipc=True) as far, Sshd() as sshd:
        ways = ABLATION if args.ablation else {**WAYS, "openssh (ours), ipc:// far end": far_unix(far)}
        for run in range(args.repeat):  # round-robin, best of the runs: a burst of load hits every way alike
            for label, image in images.items():
                for name, way in ways.items():
                    got = measure(way, endpoint, sshd, image, args.seconds)
                    figures[name, label] = max(got, figures.get((name, label), 0.0))
                    print(f"  run {run + 1} {label:<18} {name:<22} {got:8.1f} round trips/s", file=sys.stderr, flush=True)
    mb = {label: image.nbytes * 2 / 1e6 for label, image in images.items()}
    print("| way in | " + " | ".join(f"{label} round trips/s (MB/s both ways)" for label in images) + " |")
    print("|---|" + "---:|" * len(images))
    for name in ways:
        cells = [f"{figures[name, label]:.1f} ({figures[name, label] * mb[label]:.0f})" for label in images]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    for label in images:
        bare = figures["bare ssh -N -L", label]
        if args.ablation:
            print(f"- {label}: " + "; ".join(f"{name} / bare ssh -L = **{figures[name, label] / bare:.2f}x**" for name in list(ways)[:-1]))
            continue
        para, openssh = figures["paramiko (ours)", label] / bare, figures["openssh (ours)", label] / bare
        stock = figures["paramiko (ours)", label] / figures["pyzmq stock paramiko", label]
        print(f"- {label}: paramiko (ours) / bare ssh -L = **{para:.2f}x** (goal >= 1.0x); ", end="")
        print(f"openssh (ours) / bare ssh -L = **{openssh:.2f}x** (goal >= 0.9x); ", end="")
        print(f"paramiko (ours) / pyzmq stock = **{stock:.1f}x** (goal >= 5x)")


if __name__ == "__main__":
    main()
