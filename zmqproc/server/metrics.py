"""What the metrics endpoint reports, sans I/O: the job-time histogram the core keeps, and the snapshot the loop hands on.

The core observes each job that ran to its end in a :class:`JobTimes` (a few list updates per job, always on) and makes a
:class:`Snapshot` of its counters on demand (:meth:`zmqproc.server.core.ServerCore.snapshot`). Only when the server has a
metrics endpoint (``--metrics-port``) does the loop take one, at most every :data:`PUBLISH_INTERVAL_S`, and hand it to the
exporter (:mod:`zmqproc.server.exporter`), whose HTTP thread reads the latest snapshot and nothing else: the
single-threaded core is never read from another thread. A snapshot is immutable once made.

Imports nothing outside the standard library (prometheus-client is the exporter's alone).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

# Upper bounds, in seconds, of the job-time histogram's buckets: an inline 1 ms job up to the default --job-timeout of 60 s.
JOB_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUBLISH_INTERVAL_S = 0.5  # the loop takes a snapshot at most this often (a scrape sees counts at most this old, plus a turn)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram as Prometheus exposes it: cumulative counts per upper bound (the last is +Inf), their count and sum."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class JobTimes:
    """The time of each job that ran to its end (inline or on a worker, ok or not), from its start to its outcome."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = JOB_SECONDS_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is over every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # the first bound >= seconds: Prometheus buckets are `le`
        self.total += seconds

    def snapshot(self) -> Histogram:
        cumulative, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return Histogram(tuple(cumulative), running, self.total)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The core's ``stats`` (the same dictionary a ``stats`` request answers) and its job times, at one moment."""

    stats: dict[str, Any]
    job_seconds: Histogram
