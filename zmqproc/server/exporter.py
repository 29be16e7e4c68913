"""The metrics endpoint (``--metrics-port``): Prometheus text over HTTP, served by prometheus-client in a thread of its own.

A thin shell: the socket loop hands :meth:`Exporter.publish` a :class:`~zmqproc.server.metrics.Snapshot` at most every
0.5 s; a scrape turns the latest one into metric families (:func:`families`). Nothing else of the server is read here.
prometheus-client comes with the ``metrics`` extra (``pip install 'zmqproc[metrics]'``; the server image has it) and is
imported only when this module is, that is only when the endpoint is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .metrics import Snapshot

PREFIX = "zmqproc_"

# (metric, its key in ServerCore.stats(), help). Counters are exposed with the suffix _total.
COUNTERS = (
    ("requests", "requests", "Requests received, of every kind (ping, ops, stats, process, part, fetch, cancel)."),
    ("worker_deaths", "workers_died", "Worker processes that died (each was replaced)."),
    ("restarted_jobs", "restarted_jobs", "Jobs started again on a fresh worker after theirs died."),
    ("stopped_jobs", "stopped_jobs", "Running jobs stopped: past their deadline_ms or --job-timeout, or at shutdown."),
    ("inline_jobs", "inline_jobs", "Light jobs run in the socket loop itself."),
    ("dropped_replies", "dropped_replies", "Replies dropped: the client was gone, or its pipe full."),
)
GAUGES = (
    ("in_flight", "in_flight", "Requests admitted and not yet answered (queued, running, uploading)."),
    ("queue_length", "queue_length", "Jobs waiting for a worker or their turn inline."),
    ("running", "running", "Jobs running on a worker (or inline) now."),
    ("workers", "workers", "Worker processes (--workers)."),
    ("max_queue", "max_queue", "Queued requests before busy (--max-queue)."),
    ("active_clients", "active_clients", "Connections with work or credit in use."),
    ("uploads", "uploads", "Payloads coming in parts, not all in yet."),
    ("held_results", "held_results", "Results sent in parts, held for fetches."),
    ("uptime_seconds", "uptime_s", "Seconds since the server started serving."),
)
MEMORY = (
    ("memory_budget_bytes", "budget_bytes", "The whole server's memory budget (--max-memory, or 80% of the cgroup limit)."),
    ("memory_jobs_bytes", "jobs_bytes", "The part of the budget jobs and unread replies may use."),
    ("memory_reserved_bytes", "reserved_bytes", "Estimated peak bytes of the running jobs."),
    ("memory_unread_reply_bytes", "unread_reply_bytes", "Reply bytes libzmq still holds (sent, not yet read)."),
    ("memory_upload_bytes", "upload_bytes", "Bytes of payloads coming in parts."),
    ("memory_held_result_bytes", "held_result_bytes", "Bytes of results held for fetches."),
)


def families(snapshot: Snapshot) -> list[Metric]:
    """The snapshot as Prometheus metric families, every name with the prefix ``zmqproc_``."""
    stats: dict[str, Any] = snapshot.stats
    out: list[Metric] = []
    for name, key, text in COUNTERS:
        out.append(CounterMetricFamily(PREFIX + name, text, value=stats[key]))
    replies = CounterMetricFamily(PREFIX + "replies", "Replies by code: ok, or the error's code (docs/protocol.md).", labels=["code"])
    replies.add_metric(["ok"], stats["ok"])
    for code, n in sorted(stats["errors"].items()):
        replies.add_metric([code], n)
    out.append(replies)
    for name, key, text in GAUGES:
        out.append(GaugeMetricFamily(PREFIX + name, text, value=stats[key]))
    for name, key, text in MEMORY:
        out.append(GaugeMetricFamily(PREFIX + name, text, value=stats["memory"][key]))
    times = snapshot.job_seconds
    buckets = [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in times.buckets]
    text = "Time of each job that ran to its end (inline or on a worker, ok or not), from its start to its outcome."
    out.append(HistogramMetricFamily(PREFIX + "job_seconds", text, buckets=buckets, sum_value=times.sum))
    return out


class _Latest(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None  # replaced whole by the loop's thread; read whole by the HTTP thread

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot
        return [] if snapshot is None else families(snapshot)


class Exporter:
    """``http://HOST:PORT/metrics`` until :meth:`close`: the latest published snapshot and this process's own metrics."""

    def __init__(self, host: str, port: int) -> None:
        self._latest = _Latest()
        registry = CollectorRegistry()
        registry.register(self._latest)
        ProcessCollector(registry=registry)  # process_*: the socket loop's process (CPU, memory, descriptors); not the workers
        self._http, self._thread = start_http_server(port, host, registry)  # OSError: the address is taken or not ours
        self.host, self.port = host, self._http.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def publish(self, snapshot: Snapshot) -> None:
        self._latest.snapshot = snapshot

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
