"""bench/scaling.py: a bounded run of the real thing (N = 1 and 2 servers found by one name in a private mount
namespace, and by IP literals, a few requests each) that must complete and print the table; no timing is asserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, require_or_skip


def test_a_quick_run_finds_the_replicas_by_name_and_prints_the_table() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        require_or_skip("namespaces", "needs root and util-linux's unshare for a private /etc/hosts")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        require_or_skip("namespaces", f"unshare -m does not work here: {probe.stderr.strip()}")
    done = subprocess.run(
        [sys.executable, "bench/scaling.py", "--quick", "--replicas", "1,2", "--requests", "6", "--warmup", "2", "--idle", "0.2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| N | images/s (by name) | speedup vs N=1 | client CPU ms/request |"), done.stdout
    rows = [line.split(" | ") for line in lines if line.startswith(("| 1 |", "| 2 |"))]
    assert [row[0] for row in rows] == ["| 1", "| 2"], done.stdout
    counted = [sum(int(n) for n in row[-1].rstrip(" |").split(" / ")) for row in rows]
    assert all(n >= 6 for n in counted), f"each replica's requests (a heartbeat ping may add one): {counted}"
    assert "client CPU per request grows by" in done.stdout
