"""scripts/fuzz.py, bounded: a few hundred mutated files of every accepted format among valid 12 MP ones, 8 in flight,
against a server with --max-memory 600M --job-timeout 5 (``make fuzz SECONDS=...`` runs it for longer)."""

from __future__ import annotations

import random

import pytest

from tests.conftest import load_script

fuzz = load_script("fuzz")
BUDGET_MIB = 600  # --max-memory 600M


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp", "tiff"])
def test_the_mutator_is_seeded_and_each_mutation_changes_the_file(fmt):
    data = next(d for f, d in fuzz.seeds() if f == fmt)
    assert fuzz.mutate(random.Random(5), fmt, data) == fuzz.mutate(random.Random(5), fmt, data), "a seed makes the same file"
    for mutation in fuzz.MUTATIONS:
        changed = 0
        for seed in range(20):
            out = bytearray(data)
            mutation(random.Random(seed), fmt, out)
            changed += bytes(out) != data
        assert changed >= 15, f"{mutation.__name__} on {fmt} changed {changed} of 20"


def test_mutated_files_get_documented_answers_bounded_memory_and_a_responsive_loop(start_server):
    server = start_server("--max-memory", "600M", "--job-timeout", "5")
    figures = fuzz.run(server.endpoint, pid=server.proc.pid, count=400, seed=18)
    print(
        f"\nfuzz: {figures['sent']} in {figures['seconds']} s, {figures['codes']}, tree peak {figures['peak_tree_mib']} MiB, "
        f"ping max {figures['ping_max_ms']} ms"
    )
    assert figures["problems"] == [], "\n".join(figures["problems"])
    assert figures["codes"].get("ok", 0) >= 400 // 10 - 1, "the valid 12 MP images interleaved were served"
    assert figures["workers_died"] == 0 and figures["jobs_stopped"] == 0
    assert figures["peak_tree_mib"] <= BUDGET_MIB + 100, figures["in_flight_at_peak"]
    assert figures["ping_max_ms"] < 100
