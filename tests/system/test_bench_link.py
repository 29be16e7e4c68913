"""bench/link.py: its report from known figures, and a bounded run of the real thing (1080p over the 1 Gbit/s link only,
one run per cell, about 10 s) that must complete every cell and print the table; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys

from bench.link import WAYS, Cell, Run, goals, table
from tests.conftest import ROOT


def cell(way: str, seconds: float, up: int, down: int, link: str = "20m", chose: str = "") -> Cell:
    return Cell(link, "12 MP", way, [Run(seconds, up, down, 500.0, chose)])


CELLS = [
    cell("raw", 30.0, 36_000_000, 36_000_000),
    cell("png", 18.0, 20_000_000, 20_000_000),
    cell("auto", 18.9, 20_000_000, 20_000_000, chose="png/png"),
]


def test_table_has_ideal_and_ratio_to_the_best_fixed_way() -> None:
    head, rule, raw, png, auto = table(CELLS)
    assert head.startswith("| link | image | way | time | up | down | server | ideal | time / ideal | / best fixed |")
    assert rule.count("|---") == 11
    # 72 MB at 2.5 MB/s + 0.12 s round trip + 0.5 s server = 29.42 s
    assert raw == "| 20 Mbit/s, 60 ms | 12 MP | raw up / raw down | 30.00 s | 36.00 MB | 36.00 MB | 500 ms | 29.42 s | 1.02x |  |  |"
    assert auto.endswith("| 18.90 s | 20.00 MB | 20.00 MB | 500 ms | 16.62 s | 1.14x | 1.05x | png/png |")


def test_goals_name_what_missed() -> None:
    met = {goal: ok for goal, ok, _ in goals([*CELLS, Cell("20m", "12 MP", "jpeg-raw", errors=["ConnectionLost: cut"])])}
    assert met["every cell completes"] is False
    assert met[f"{WAYS['auto']} within 1.1x of the best lossless fixed way"] is True
    assert met[f"{WAYS['auto']} within 1.3x of the ideal for its bytes"] is True
    slow = goals([*CELLS[:2], cell("auto", 20.0, 20_000_000, 20_000_000)])
    assert [ok for goal, ok, _ in slow if "1.1x" in goal] == [False]


def test_a_quick_run_completes_every_cell_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "bench/link.py", "--quick", "--links", "1g", "--sizes", "1080p"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1 Gbit/s, 1 ms | 1080p |")]
    assert len(rows) == len(WAYS), done.stdout
    assert "**failed**" not in done.stdout
    assert "met    every cell completes" in done.stdout
