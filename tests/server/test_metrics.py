"""zmqproc/server/metrics.py and what the core records in it, with a fake clock: job times and the snapshot."""

from __future__ import annotations

import math

import pytest

from tests.server.test_core import HEAVY, A, make_core, request, run_inline
from zmqproc.server import work
from zmqproc.server.core import Start
from zmqproc.server.metrics import JOB_SECONDS_BUCKETS, JobTimes


def test_buckets_are_cumulative_and_a_bound_is_inclusive():
    times = JobTimes((0.01, 0.1, 1.0))
    for seconds in (0.001, 0.01, 0.0100001, 0.5, 1.0, 7.0, 7.0):
        times.observe(seconds)
    h = times.snapshot()
    assert h.buckets == ((0.01, 2), (0.1, 3), (1.0, 5), (math.inf, 7))  # Prometheus's `le`: 0.01 is in the 0.01 bucket
    assert h.count == 7 and h.sum == pytest.approx(0.001 + 0.01 + 0.0100001 + 0.5 + 1.0 + 14.0)


def test_a_snapshot_does_not_change_afterwards():
    times = JobTimes()
    times.observe(0.002)
    before = times.snapshot()
    times.observe(0.002)
    assert before.count == 1 and times.snapshot().count == 2


def test_the_default_buckets_span_an_inline_job_to_the_default_job_timeout():
    assert JOB_SECONDS_BUCKETS[0] == 0.001 and JOB_SECONDS_BUCKETS[-1] == 60.0
    assert list(JOB_SECONDS_BUCKETS) == sorted(JOB_SECONDS_BUCKETS)
    with pytest.raises(ValueError):
        JobTimes((1.0, 0.5))


def test_the_core_records_each_job_that_ran_from_its_start_to_its_outcome():
    core = make_core()
    run_inline(core, core.receive(A, request("light"), 1.0), 1.0)  # inline: started and finished at 1.0
    assert core.receive(A, request("heavy", ops=[HEAVY]), 1.0) == []
    (start,) = core.pump(3.0, idle_workers=1)  # waited 2 s in the queue: not job time
    assert isinstance(start, Start)
    core.finished(start.job, work.run(start.spec, start.payload), 3.25)
    core.receive(A, request("unknown", ops=["no_such_op"]), 4.0)  # refused at admission: never ran
    core.finished(start.job, work.run(start.spec, start.payload), 9.0)  # a second report of the same job: ignored
    snap = core.snapshot(10.0)
    h = dict(snap.job_seconds.buckets)
    assert snap.job_seconds.count == 2 and snap.job_seconds.sum == pytest.approx(0.25)
    assert h[0.001] == 1 and h[0.25] == 2 and h[math.inf] == 2
    assert snap.stats == core.stats(10.0)
    assert snap.stats["requests"] == 3 and snap.stats["ok"] == 2 and snap.stats["errors"] == {"unknown_op": 1}


def test_a_job_stopped_by_its_deadline_is_counted_as_stopped_not_timed():
    core = make_core()
    core.receive(A, request("late", ops=[HEAVY], deadline_ms=500), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    core.pump(1.0, idle_workers=0)  # past the deadline: stopped and answered
    core.finished(start.job, work.run(start.spec, start.payload), 1.1)  # the worker's late outcome
    snap = core.snapshot(2.0)
    assert snap.job_seconds.count == 0 and snap.stats["stopped_jobs"] == 1 and snap.stats["errors"] == {"timeout": 1}
