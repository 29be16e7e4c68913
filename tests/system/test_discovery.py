"""Replicas found by DNS (issue 24), with the real resolver: the client runs in a mount namespace of its own whose
/etc/hosts is this test's file, listing one name on several loopback addresses with a real server on each; the file
is edited while work flows (a replica added, one removed, all gone, back)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, free_port, require_or_skip, wait_until
from zmqproc import Client

NAME = "replicas.zmqproc.test"
PERIOD = 0.5


@pytest.fixture
def namespaces():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        require_or_skip("namespaces", "needs root and util-linux's unshare for a private /etc/hosts")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        require_or_skip("namespaces", f"unshare -m does not work here: {probe.stderr.strip()}")


class Replicas:
    """Real servers on 127.0.0.2, .3, ... (one port), and the hosts file that names them."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.hosts = tmp / "hosts"
        self.servers: dict[str, ServerProcess] = {}
        self.write()

    def start(self, address: str) -> None:
        self.servers[address] = ServerProcess("--workers", "1", "--bind", f"tcp://{address}:{self.port}")

    def write(self, *addresses: str) -> None:
        """The hosts file now lists NAME on these addresses: written in place (the namespace's bind mount keeps the inode)."""
        text = "127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in addresses)
        with self.hosts.open("r+" if self.hosts.exists() else "w") as f:
            f.write(text)
            f.truncate()

    def requests(self, address: str) -> int:
        """Requests that server has had, this look included (a connection's hello ping and the stats: 2 each time)."""
        with Client(f"tcp://{address}:{self.port}", timeout=5) as client:
            return int(client.stats()["requests"])

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


class Driver:
    """tests/discovery_client.py in its own mount namespace, talking JSON lines."""

    def __init__(self, replicas: Replicas, *extra: str) -> None:
        script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(replicas.hosts)]
        cmd += [sys.executable, "tests/discovery_client.py", f"tcp://{NAME}:{replicas.port}", str(PERIOD), *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the client ended: " + (self.proc.stderr.read() if self.proc.stderr else ""))
        return json.loads(line)

    def ask(self, command: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def addresses(self) -> set[str]:
        return set(self.states())

    def states(self) -> dict[str, str]:
        return {endpoint: state for endpoint, state, _rtt in self.ask("replicas")["replicas"]}

    def close(self) -> str:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        return self.proc.stderr.read() if self.proc.stderr else ""


@pytest.fixture
def replicas(namespaces, tmp_path):
    found = Replicas(tmp_path)
    yield found
    found.stop()


@pytest.mark.parametrize("kind", ["library", "viewer"])
def test_replicas_come_and_go_by_name_and_every_request_is_answered(replicas, kind):
    """The library's Client and the viewer's QtClient alike (each drives the same session)."""
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        replicas.start(address)
    ep = {a: f"tcp://{a}:{replicas.port}" for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    replicas.write("127.0.0.2", "127.0.0.3")
    driver = Driver(replicas, *(["--qt"] if kind == "viewer" else []))
    try:
        assert {e for e, _, _ in driver.first["replicas"]} == {ep["127.0.0.2"], ep["127.0.0.3"]}, "every address, from the start"
        first = driver.ask("run 40")
        assert first["ok"] == 40 and not first["errors"]
        assert replicas.requests("127.0.0.2") > 1 and replicas.requests("127.0.0.3") > 1, "both replicas worked"

        replicas.write("127.0.0.2", "127.0.0.3", "127.0.0.4")  # one added
        wait_until(lambda: driver.states().get(ep["127.0.0.4"]) == "connected", timeout=5 * PERIOD + 5, what="the new replica found")
        before = replicas.requests("127.0.0.4")
        added = driver.ask("run 60")
        assert added["ok"] == 60 and replicas.requests("127.0.0.4") > before + 5, "the new replica gets its share"

        replicas.write("127.0.0.2", "127.0.0.4")  # one removed
        wait_until(lambda: ep["127.0.0.3"] not in driver.addresses(), timeout=5 * PERIOD + 5, what="the removed replica drained")
        left = replicas.requests("127.0.0.3")
        removed = driver.ask("run 40")
        assert removed["ok"] == 40 and replicas.requests("127.0.0.3") == left + 2, "nothing more to it (only this look)"

        replicas.write()  # all gone: the name resolves to nothing
        time.sleep(3 * PERIOD)  # several look-ups find nothing
        gone = driver.ask("run 20")
        assert gone["ok"] == 20 and {e for e, _, _ in gone["replicas"]} == {ep["127.0.0.2"], ep["127.0.0.4"]}, "last known kept"

        replicas.write("127.0.0.3")  # back, on another replica only
        wait_until(lambda: driver.addresses() == {ep["127.0.0.3"]}, timeout=5 * PERIOD + 5, what="the name's one address")
        back = driver.ask("run 20")
        assert back["ok"] == 20 and replicas.requests("127.0.0.3") >= left + 2 + 20
    finally:
        stderr = driver.close()
    assert "resolves to no address now" in stderr, "the client said the name resolved to nothing"


def test_a_name_that_resolves_to_nothing_at_the_start_is_a_clear_error(replicas):
    replicas.write()
    driver_cmd = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$1" /etc/hosts && exec "$2" tests/discovery_client.py "$3" 1',
        "sh",
    ]
    out = subprocess.run(
        [*driver_cmd, str(replicas.hosts), sys.executable, f"tcp://{NAME}:{replicas.port}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and f"{NAME} resolves to no address" in out.stderr, out.stderr


def test_stats_lists_the_replicas_a_name_stands_for(replicas):
    for address in ("127.0.0.2", "127.0.0.3"):
        replicas.start(address)
    replicas.write("127.0.0.2", "127.0.0.3")
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(replicas.hosts)]
    cmd += [sys.executable, "-m", "zmqproc", "stats", "--server", f"tcp://{NAME}:{replicas.port}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("2 replicas: ") and f"127.0.0.2:{replicas.port} (connected)" in first, out.stdout
    assert out.stdout.count("requests ") == 2 and f"\ntcp://127.0.0.3:{replicas.port}\n" in out.stdout, out.stdout
