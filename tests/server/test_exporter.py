"""The metrics endpoint (zmqproc/server/exporter.py): scraped from a real server under load, and off by default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port
from tests.rawwire import RawDealer, process_header
from zmqproc.server.cli import metrics_host, parse_args
from zmqproc.server.exporter import _Latest
from zmqproc.server.metrics import JobTimes, Snapshot

FAILING_OPS = str(Path(__file__).parent.parent / "server_with_failing_op.py")  # adds `explode`, an op that raises


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {labels: value}} of http://127.0.0.1:PORT/metrics, parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_a_scrape_under_load_counts_what_was_sent(start_server):
    port = free_port()
    server = start_server("--workers", "1", "--metrics-port", str(port), script=FAILING_OPS)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in server.output()
    image = np.zeros((64, 64, 3), np.uint8).tobytes()
    mix = [
        ([{"op": "invert"}], 4),  # light: inline in the loop
        ([{"op": "denoise"}], 4),  # heavy: on the worker
        ([{"op": "no_such_op"}], 2),  # unknown_op, refused before it runs
        ([{"op": "explode"}], 1),  # runs, and raises: internal
    ]
    dealers = [RawDealer(server.endpoint) for _ in range(3)]
    sent, kinds = 0, Counter[str]()
    try:
        for d, dealer in enumerate(dealers):  # all sent before any reply is read: the server has them at once
            for pipeline, n in mix:
                for i in range(n):
                    dealer.send(process_header(f"{d}-{pipeline[0]['op']}-{i}", [64, 64, 3], pipeline), image)
                    sent += 1
            dealer.send({"v": 1, "id": f"{d}-odd", "kind": "nonsense"})
            dealer.send({"v": 1, "id": f"{d}-ping", "kind": "ping"})
            sent += 2
        during = scrape(port)  # while the denoise jobs are queued for the one worker (or done already): served, not blocked
        assert value(during, "zmqproc_workers") == 1 and value(during, "zmqproc_in_flight") >= 0
        replies: Counter[str] = Counter()
        for dealer in dealers:
            for _ in range(sum(n for _, n in mix) + 2):
                header, _ = dealer.recv()
                replies["ok" if header["status"] == "ok" else header["error"]["code"]] += 1
                kinds[header["id"].split("-")[1]] += header["status"] == "ok"
    finally:
        for dealer in dealers:
            dealer.close()
    assert replies["unknown_op"] == 6 and replies["unknown_kind"] == 3 and replies["internal"] == 3
    ran = kinds["invert"] + kinds["denoise"] + replies["internal"]  # process jobs that ran to an outcome

    deadline = time.monotonic() + 5  # the loop publishes at most every 0.5 s: until then a scrape may be a turn behind
    while sum((after := scrape(port))["zmqproc_replies_total"].values()) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert value(after, "zmqproc_requests_total") == sent
    for code, n in replies.items():
        assert value(after, "zmqproc_replies_total", code=code) == n, code
    assert sum(after["zmqproc_replies_total"].values()) == sent  # one reply a request, each counted once
    assert value(after, "zmqproc_job_seconds_count") == ran == 3 * 4 + 3 * 4 + 3
    assert value(after, "zmqproc_job_seconds_bucket", le="+Inf") == ran
    assert 0 < value(after, "zmqproc_job_seconds_sum") < 60
    assert value(after, "zmqproc_inline_jobs_total") >= 3 * 4  # invert and explode are light
    for gauge in ("zmqproc_in_flight", "zmqproc_queue_length", "zmqproc_running", "zmqproc_memory_reserved_bytes"):
        assert value(after, gauge) == 0, gauge
    assert value(after, "zmqproc_memory_budget_bytes") > 0 and value(after, "zmqproc_worker_deaths_total") == 0
    assert value(after, "zmqproc_restarted_jobs_total") == 0 and value(after, "process_open_fds") > 0
    assert server.stop() == 0  # the endpoint's thread does not hold up the shutdown
    with pytest.raises(OSError):
        scrape(port)


def test_metrics_are_off_by_default(start_server):
    server = start_server("--workers", "1")
    assert "metrics on" not in server.output()
    pid = server.proc.pid
    owned = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.name.isdigit()}
    sockets = {name[len("socket:[") : -1] for name in owned if name.startswith("socket:[")}
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:  # LISTEN, and this process's
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    assert ports == {int(server.endpoint.rsplit(":", 1)[1])}, "only the ZeroMQ port listens"


def test_a_taken_metrics_port_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "server_main.py", "--bind", f"tcp://127.0.0.1:{free_port()}", "--metrics-port", str(port)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot serve metrics on 127.0.0.1 port {port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_metrics_address_follows_bind():
    assert metrics_host("tcp://0.0.0.0:5555") == metrics_host("tcp://*:5555") == "0.0.0.0"
    assert metrics_host("tcp://127.0.0.1:5555") == "127.0.0.1" and metrics_host("tcp://[::1]:5555") == "::1"
    assert metrics_host("ipc:///run/zmqproc.sock") == "127.0.0.1"
    assert parse_args(["--metrics-port", "9555"]).metrics_bind == "0.0.0.0"  # the image's --bind
    assert parse_args(["--metrics-port", "9555", "--metrics-bind", "10.0.0.5"]).metrics_bind == "10.0.0.5"
    assert parse_args([]).metrics_port is None
    for wrong in (["--metrics-bind", "127.0.0.1"], ["--metrics-port", "70000"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


def test_the_families_of_a_snapshot():
    times = JobTimes()
    for seconds in (0.0005, 0.02, 90.0):
        times.observe(seconds)
    stats = {
        "requests": 9, "ok": 5, "errors": {"busy": 3, "unknown_op": 1}, "in_flight": 2, "queue_length": 1, "running": 1,
        "max_queue": 64, "max_client_queue": None, "active_clients": 1, "workers": 2, "dropped_replies": 0, "inline_jobs": 2,
        "stopped_jobs": 0, "workers_died": 1, "restarted_jobs": 1, "uploads": 0, "held_results": 0, "uptime_s": 3.5,
        "memory": {"budget_bytes": 100, "jobs_bytes": 80, "reserved_bytes": 7, "unread_reply_bytes": 1, "upload_bytes": 0,
                   "held_result_bytes": 0},
    }  # fmt: skip
    latest = _Latest()
    registry = CollectorRegistry()
    registry.register(latest)
    assert generate_latest(registry) == b""  # nothing published yet
    latest.snapshot = Snapshot(stats, times.snapshot())
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(name.startswith("zmqproc_") for name in families)
    assert families["zmqproc_requests"].type == "counter" and families["zmqproc_queue_length"].type == "gauge"
    assert families["zmqproc_job_seconds"].type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples["zmqproc_replies_total", (("code", "busy"),)] == 3 and samples["zmqproc_replies_total", (("code", "ok"),)] == 5
    assert samples["zmqproc_worker_deaths_total", ()] == 1 and samples["zmqproc_restarted_jobs_total", ()] == 1
    assert samples["zmqproc_memory_reserved_bytes", ()] == 7 and samples["zmqproc_memory_budget_bytes", ()] == 100
    assert samples["zmqproc_job_seconds_bucket", (("le", "0.001"),)] == 1
    assert samples["zmqproc_job_seconds_bucket", (("le", "60.0"),)] == 2
    assert samples["zmqproc_job_seconds_bucket", (("le", "+Inf"),)] == samples["zmqproc_job_seconds_count", ()] == 3


def test_the_server_image_installs_the_metrics_extra():
    """docker/requirements.py (what `make wheels` downloads and the image installs) takes the metrics extra along."""
    done = subprocess.run([sys.executable, "docker/requirements.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert any(line.startswith("prometheus-client") for line in done.stdout.splitlines())
    assert not any(line.startswith("paramiko") for line in done.stdout.splitlines())
