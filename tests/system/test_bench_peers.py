"""bench/peers.py's report: it rewrites only its own section of the shared docs/benchmarks.md (no bench extra needed)."""

from __future__ import annotations

from pathlib import Path

from bench.peers import PEERS, table, write_section

RESULTS = {"1080p, sequential": dict(zip(PEERS, (200.0, 180.0, 190.0, 150.0, 40.0), strict=True))}


def test_table_has_rates_and_ratios_to_zmqproc() -> None:
    head, rule, row = table(RESULTS).splitlines()
    assert head.startswith("| workload | raw pyzmq | zmqproc | bare DEALER | imagezmq | FastAPI | zmqproc / raw pyzmq")
    assert rule.count("|---") == 10
    assert row == "| 1080p, sequential | 200 | 180 | 190 | 150 | 40 | 0.90× | 0.95× | 1.20× | 4.50× |"


def test_section_replaced_in_place_others_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Viewer\n\nviewer text\n\n## Peers\n\nold figures\n\n## SSH\n\nssh text\n")
    write_section(doc, "## Peers\n\nnew figures\n")
    assert doc.read_text() == "# Benchmarks\n\n## Viewer\n\nviewer text\n\n## Peers\n\nnew figures\n\n## SSH\n\nssh text\n"


def test_section_appended_when_missing(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Viewer\n\nviewer text\n")
    write_section(doc, "## Peers\n\nfigures\n")
    write_section(doc, "## Peers\n\nfigures again\n")
    assert doc.read_text() == "# Benchmarks\n\n## Viewer\n\nviewer text\n\n## Peers\n\nfigures again\n"
