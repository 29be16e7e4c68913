"""scripts/loadtest.py: the raw-pyzmq load test, run as a real process against real server processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq.auth

from tests.conftest import ROOT, free_port, load_script
from tests.rawwire import RawDealer

SCRIPT = ROOT / "scripts" / "loadtest.py"
# Runs the script with zmqproc made unimportable: the load test must stand on pyzmq, msgpack and numpy alone.
WITHOUT_ZMQPROC = (
    "import runpy, sys; sys.modules['zmqproc'] = None; sys.argv = ['loadtest.py', *sys.argv[1:]]; "
    f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
)

loadtest = load_script("loadtest")


def run(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    """Exit code, the --json figures, stdout."""
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_ZMQPROC, *args, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert out.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(out.read_text()), proc.stdout


def adds_up(figures: dict[str, Any]) -> bool:
    return figures["ok"] + sum(figures["errors"].values()) + figures["lost"] == figures["sent"]


def server_stats(endpoint: str) -> dict[str, Any]:
    dealer = RawDealer(endpoint)
    try:
        header, _ = dealer.call({"v": 1, "id": "stats", "kind": "stats"})
        return header
    finally:
        dealer.close()


def test_duration_run_all_answered(tmp_path: Path, start_server: Any) -> None:
    server = start_server("--workers", "2")
    code, figures, stdout = run(
        tmp_path, "--endpoint", server.endpoint, "--duration", "2", "--clients", "3", "--procs", "2", "--inflight", "2", "--size", "64x64"
    )
    assert code == 0, stdout
    assert figures["sent"] > 50 and figures["ok"] == figures["sent"] and figures["lost"] == 0 and figures["errors"] == {}
    assert adds_up(figures)
    assert figures["round_trips_per_s"] > 0 and figures["mb_per_s"] > 0
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert server_stats(server.endpoint)["ok"] >= figures["ok"]  # the server saw them too
    for row in ("sent", "ok", "lost (no reply in time)", "round trips/s", "MB/s", "latency p50/p90/p99/max ms"):
        assert row in stdout


def test_request_count_is_exact_with_encoded_frames(tmp_path: Path, server: Any) -> None:
    code, figures, _ = run(
        tmp_path, "--endpoint", server.endpoint, "--requests", "120", "--clients", "2", "--inflight", "3",
        "--format", "png", "--size", "320x240", "--pipeline", "grayscale;gaussian_blur:ksize=5",
    )  # fmt: skip
    assert code == 0
    assert figures["sent"] == figures["ok"] == 120 and adds_up(figures)


def test_unknown_op_counted_per_code(tmp_path: Path, start_server: Any) -> None:
    server = start_server("--workers", "1")
    code, figures, stdout = run(tmp_path, "--endpoint", server.endpoint, "--requests", "80", "--inflight", "4", "--pipeline", "no_such_op")
    assert code == 0  # errors are answers; only lost requests fail the run
    assert figures["errors"] == {"unknown_op": 80} and figures["ok"] == 0 and figures["lost"] == 0 and adds_up(figures)
    assert "error unknown_op" in stdout
    assert server_stats(server.endpoint)["errors"]["unknown_op"] == 80


def test_curve_server(tmp_path: Path, start_server: Any) -> None:
    """Against a CURVE server: with an allowed key everything is answered; a key not on the allow-list gets nothing."""
    allow = tmp_path / "allow"
    allow.mkdir()
    _, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    zmq.auth.create_certificates(allow, "client")
    _, stranger_secret = zmq.auth.create_certificates(tmp_path, "stranger")
    server = start_server("--workers", "1", "--curve-secret", server_secret, "--curve-allow", str(allow))
    keys = ["--endpoint", server.endpoint, "--curve-server-key", str(tmp_path / "server.key"), "--size", "64x64"]
    code, figures, _ = run(tmp_path, *keys, "--curve-secret", str(allow / "client.key_secret"), "--requests", "50", "--inflight", "2")
    assert code == 0 and figures["ok"] == figures["sent"] == 50
    code, figures, _ = run(tmp_path, *keys, "--curve-secret", stranger_secret, "--requests", "3", "--timeout", "0.5")
    assert code == 1 and figures["lost"] == figures["sent"] == 3


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_through_an_ssh_tunnel(tmp_path: Path, server: Any, sshd: Any, backend: str) -> None:
    """docs/loadtest.md: point --endpoint at the tunnel's local port (a real sshd on 127.0.0.1)."""
    from zmqproc.ssh.tunnel import open_tunnel

    with open_tunnel(server.endpoint, sshd.target, key=sshd.key, known_hosts=sshd.known_hosts, backend=backend) as tunnel:
        code, figures, _ = run(tmp_path, "--endpoint", tunnel.local_endpoint, "--requests", "60", "--clients", "2", "--inflight", "2")
    assert code == 0 and figures["ok"] == figures["sent"] == 60


@pytest.mark.docker
def test_against_the_docker_container(tmp_path: Path, start_container: Any) -> None:
    """docs/loadtest.md: the containerised server, published on 127.0.0.1, driven from the host."""
    container = start_container("--workers", "2")
    container.wait_healthy()
    code, figures, _ = run(tmp_path, "--endpoint", container.endpoint, "--duration", "2", "--clients", "2", "--inflight", "2")
    assert code == 0 and figures["sent"] > 0 and figures["ok"] == figures["sent"]


def test_nothing_answers_everything_lost(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    code, figures, _ = run(tmp_path, "--endpoint", endpoint, "--requests", "6", "--clients", "2", "--inflight", "3", "--timeout", "0.5")
    assert code == 1
    assert figures["sent"] == figures["lost"] == 6 and figures["ok"] == 0 and adds_up(figures)
    assert figures["latency_ms"]["p50"] is None


def test_half_the_endpoints_dead_half_lost(tmp_path: Path, server: Any) -> None:
    """A DEALER deals requests round-robin over its endpoints: those queued for the dead one are lost, not hidden."""
    dead = f"tcp://127.0.0.1:{free_port()}"
    args = ["--requests", "12", "--inflight", "4", "--timeout", "0.5", "--size", "64x64"]
    code, figures, _ = run(tmp_path, "--endpoint", server.endpoint, "--endpoint", dead, *args)
    assert code == 1
    assert figures["ok"] > 0 and figures["lost"] > 0 and adds_up(figures)


def test_soak_reports_intervals_at_a_fixed_rate(tmp_path: Path, server: Any) -> None:
    code, figures, stdout = run(
        tmp_path, "--endpoint", server.endpoint, "--rate", "100", "--duration", "2", "--soak", "1", "--timeout", "1", "--size", "64x64"
    )
    assert code == 0
    rows = figures["intervals"]
    assert [row["t_s"] for row in rows] == [0, 1]
    assert sum(row["requests"] for row in rows) == figures["sent"] and 190 <= figures["sent"] <= 200
    assert all(row["ok"] == row["requests"] and row["latency_ms"]["p50"] is not None for row in rows)
    assert "t(s) requests" in stdout


@pytest.mark.parametrize("argv", [["--soak", "5"], ["--clients", "0"], ["--size", "10x10x2"], ["--pipeline", "blur:k"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "error" in proc.stderr


def test_parse_pipeline_and_size() -> None:
    assert loadtest.parse_pipeline("grayscale; gaussian_blur:ksize=5,sigma=1.5 ;flip:mode=h,x=true") == [
        {"op": "grayscale", "params": {}},
        {"op": "gaussian_blur", "params": {"ksize": 5, "sigma": 1.5}},
        {"op": "flip", "params": {"mode": "h", "x": True}},
    ]
    assert loadtest.parse_size("640x480") == (480, 640, 3) and loadtest.parse_size("64x32x1") == (32, 64, 1)
    assert loadtest.split(10, [3, 2]) == [6, 4] and sum(loadtest.split(7, [1, 1, 1])) == 7


def test_summary_of_records() -> None:
    totals = loadtest.Totals()
    nan = float("nan")
    totals.add(5, 1000, [("ok", 0.0, 0.010), ("ok", 0.1, 0.030), ("busy", 0.2, 0.001), ("lost", 0.3, nan), ("ok", 1.2, 0.020)])
    summary = loadtest.summarize(totals, 2.0)
    assert (summary["sent"], summary["ok"], summary["errors"], summary["lost"]) == (5, 3, {"busy": 1}, 1)
    assert summary["round_trips_per_s"] == 2.0 and summary["latency_ms"]["max"] == 30.0
    first = loadtest.interval_row(totals, 0.0, 1.0, 0.0)
    assert (first["requests"], first["ok"], first["errors"], first["lost"]) == (4, 2, 1, 1)
