"""The processing server's shell: one ROUTER socket loop driving the sans-I/O core and the worker pool.

The loop only moves frames and events: requests from the ROUTER go to
:class:`zmqproc.server.core.ServerCore`, which answers at once or admits work; each turn
the core says what to run inline (light work, here in the loop), what to start
on a worker process (:class:`zmqproc.server.pool.WorkerPool`) and what to stop; the
pool's outcomes go back to the core, whose replies the loop sends. Reply
payloads go out without a copy and are tracked until libzmq lets go of them, so
unread replies count against their client; a worker's output segment is reused
once the core holds its result no more (:meth:`ServerCore.holds`: a result sent
in parts is held until it has been fetched). See docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from ..protocol import Limits
from ..security import ServerCurve
from ..zmqflags import POLLIN, readable, recv_frames, send_frames
from . import work
from .budget import BudgetPlan, format_size
from .core import CoreConfig, RunInline, Send, ServerCore, Start, Stop
from .metrics import PUBLISH_INTERVAL_S, Snapshot
from .pool import CACHE_MAX_BYTES, SPARE_OUTPUTS, Died, Segment, WorkerPool

log = logging.getLogger("zmqproc.server")

SUMMARY_INTERVAL_S = 60.0
RECEIVE_BATCH = 64  # requests read per turn before inline work and workers get their turn
IDLE_POLL_MS = 100
TRACKING_POLL_MS = 5  # how often libzmq's progress with held replies is checked while some are out
EXIT_LIMIT_S = 4.5  # after a stop, the loop ends by then whatever is left (the core stops running work after 3 s)
TRACEBACKS_PER_MINUTE = 5


def process_tree_pss(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants (shared pages split among their users), in bytes."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending += [int(child) for child in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


class _TracebackLog:
    """At most TRACEBACKS_PER_MINUTE tracebacks a minute: a flood of failing requests cannot fill the disk."""

    def __init__(self) -> None:
        self.window, self.logged, self.suppressed = 0.0, 0, 0

    def __call__(self, request: str, text: str, now: float) -> None:
        if now - self.window >= 60:
            if self.suppressed:
                log.error("%d more failures inside ops in the last minute (tracebacks not logged)", self.suppressed)
            self.window, self.logged, self.suppressed = now, 0, 0
        if self.logged < TRACEBACKS_PER_MINUTE:
            self.logged += 1
            log.error("process %s failed inside the server:\n%s", request, text.rstrip())
        else:
            self.suppressed += 1


class Server:
    """Serve the wire contract on ``bind`` until :meth:`stop` (thread- and signal-safe).

    OpenCV's own decoder limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is read when cv2
    is loaded: :func:`zmqproc.server.cli.main` sets it from ``--max-pixels``
    first; a program embedding this class sets it before importing zmqproc.
    ``max_memory`` is the whole server's budget in bytes (processes included).
    ``metrics``, if given, is handed the core's :class:`~zmqproc.server.metrics.Snapshot` at most every 0.5 s, from this
    loop's thread (the metrics endpoint's :meth:`~zmqproc.server.exporter.Exporter.publish`).
    """

    def __init__(
        self,
        bind: str = "tcp://0.0.0.0:5555",
        workers: int | None = None,
        max_queue: int = 64,
        limits: Limits = Limits(),
        max_client_queue: int | None = None,
        context: zmq.Context[Any] | None = None,
        curve: ServerCurve | None = None,
        max_memory: int = 2 << 30,
        job_timeout: float = 60.0,
        opencv_threads: int = 1,
        metrics: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.bind = bind
        self.workers = workers or os.cpu_count() or 1
        self.max_queue = max_queue
        self.limits = limits
        self.max_client_queue = max_client_queue
        self.max_memory = max_memory
        self.job_timeout = job_timeout
        self.opencv_threads = opencv_threads
        self.metrics = metrics
        self.epoch = f"{uuid.uuid4().hex[:12]}"
        self.endpoint: str | None = None
        self.core: ServerCore | None = None
        self._ctx = context or zmq.Context.instance()
        self.curve = curve  # CURVE keys and allow-list; None serves in the clear
        self._stop = threading.Event()
        self._tracebacks = _TracebackLog()
        self._held: list[tuple[zmq.MessageTracker, int]] = []  # replies libzmq still holds, and their jobs
        self._segments: dict[int, Segment] = {}  # job -> the output segment its result is in, while the core holds it

    def stop(self) -> None:
        """Stop taking work, answer what is queued, let running work finish briefly, then return from serve()."""
        self._stop.set()

    # -- start --------------------------------------------------------------------------------

    def serve(self, ready: threading.Event | None = None) -> None:
        pool = WorkerPool(self.workers, self.opencv_threads)
        pool.start()
        deadline = time.monotonic() + 60
        while pool.idle() < self.workers and time.monotonic() < deadline:  # workers up, so the baseline includes them
            zmq.select(pool.fds(), [], [], 0.05)
            pool.events()
        baseline = process_tree_pss(os.getpid())
        plan = BudgetPlan.split(
            self.max_memory, baseline, self.workers * (1 + SPARE_OUTPUTS) * CACHE_MAX_BYTES, self.limits.max_frame_bytes
        )
        config = CoreConfig(plan, self.workers, self.max_queue, self.limits, self.job_timeout, self.max_client_queue)
        self.core = core = ServerCore(config, self.epoch, time.monotonic())
        router = self._ctx.socket(zmq.ROUTER)
        auth = self.curve.secure(router) if self.curve is not None else None
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # libzmq disconnects a peer whose frame is over MAXMSGSIZE; smaller oversize frames get `too_large`.
        router.setsockopt(zmq.MAXMSGSIZE, 2 * max(self.limits.max_frame_bytes, self.limits.max_header_bytes))
        # Unread replies are bounded in bytes by the core; the high-water mark only bounds their count (a client that
        # sends pings and never reads): past it, replies are dropped and counted. Far above any grant of requests.
        router.setsockopt(zmq.SNDHWM, max(1000, 4 * (self.max_queue + self.workers)))
        router.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        router.setsockopt(zmq.LINGER, 1000)
        try:
            router.bind(self.bind)
        except zmq.ZMQError:
            pool.close()
            router.close(linger=0)
            raise
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.metrics is not None:  # a scrape from now on has the server's metrics (then the loop's, every 0.5 s)
            self.metrics(core.snapshot(time.monotonic()))
        log.info("%s", plan.describe())
        log.info(
            "listening on %s with %d worker processes, queue %d, job timeout %g s (epoch %s)",
            self.endpoint, self.workers, self.max_queue, self.job_timeout, self.epoch,
        )  # fmt: skip
        if ready is not None:
            ready.set()
        try:
            self._loop(core, router, pool)
        finally:
            pool.close()
            router.close()
            if auth is not None:
                auth.stop()
            log.info("stopped: %s", self._summary(core.stats(time.monotonic())))

    # -- the socket loop ------------------------------------------------------------------------

    def _loop(self, core: ServerCore, router: zmq.Socket[Any], pool: WorkerPool) -> None:
        items: list[tuple[Any, int]] = []
        generation = -1
        next_summary = time.monotonic() + SUMMARY_INTERVAL_S
        stopped_at = 0.0
        next_metrics = 0.0
        while True:
            if pool.generation != generation:  # a worker was replaced: poll the new one's pipe and sentinel
                items, generation = [(router, POLLIN), *((fd, POLLIN) for fd in pool.fds())], pool.generation
            ready = zmq.zmq_poll(items, self._poll_ms(core, pool))
            now = time.monotonic()
            if self._stop.is_set() and not stopped_at:
                stopped_at = now
                log.info("stopping: %d requests in flight", core.stats(now)["in_flight"])
                self._act(core, router, pool, core.shutdown(now))
            if self._held:
                self._check_held(core, pool, now)
            incoming, workers_ready = False, pool.due_in() == 0.0
            for socket, _ in ready:
                incoming, workers_ready = incoming or socket is router, workers_ready or socket is not router
            for event in pool.events() if workers_ready else ():
                if isinstance(event, Died):
                    log.warning("a worker died (exit code %s) holding job %s; replaced", event.exitcode, event.job)
                    self._act(core, router, pool, core.worker_died(event.job, event.exitcode, now, event.delivered))
                    continue
                if event.outcome.traceback:
                    self._tracebacks(str(event.job), event.outcome.traceback, now)
                if event.segment is not None:
                    self._segments[event.job] = event.segment
                self._act(core, router, pool, core.finished(event.job, event.outcome, now))
                self._release_segment(core, pool, event.job)
            for _ in range(RECEIVE_BATCH):
                if not incoming and not readable(router):  # the poll said so for the first
                    break
                incoming = False
                client, *frames = recv_frames(router)
                self._act(core, router, pool, core.receive(client.bytes, [f.buffer for f in frames], now))
                while core.bugs:
                    self._tracebacks("request", core.bugs.pop(), now)
            self._act(core, router, pool, core.pump(now, pool.idle()))
            for job in [j for j in self._segments if not core.holds(j)] if self._segments else ():  # let go by the core
                self._release_segment(core, pool, job)  # (a result in parts: cancelled, or not fetched in time)
            if self.metrics is not None and now >= next_metrics:  # off by default: one test a turn
                self.metrics(core.snapshot(now))
                next_metrics = now + PUBLISH_INTERVAL_S
            if now >= next_summary:
                log.info("summary: %s", self._summary(core.stats(now)))
                next_summary = now + SUMMARY_INTERVAL_S
            if stopped_at and ((core.done() and not self._held) or now - stopped_at >= EXIT_LIMIT_S):
                return

    def _poll_ms(self, core: ServerCore, pool: WorkerPool) -> int:
        if core.busy() or self._stop.is_set() and core.stopping_since is None:
            return 0
        wake = core.next_wakeup(time.monotonic())
        due = pool.due_in()
        ms = min([IDLE_POLL_MS, *(int(s * 1000) + 1 for s in (wake, due) if s is not None)])
        return min(ms, TRACKING_POLL_MS) if self._held else ms

    def _act(self, core: ServerCore, router: zmq.Socket[Any], pool: WorkerPool, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(core, router, pool, action)
            elif isinstance(action, RunInline):
                outcome = work.run(action.spec, action.payload)
                if outcome.traceback:
                    self._tracebacks(str(action.job), outcome.traceback, time.monotonic())
                self._act(core, router, pool, core.finished(action.job, outcome, time.monotonic()))
            elif isinstance(action, Start):
                pool.submit(action.job, action.spec, action.payload, action.reply_bytes)
            elif isinstance(action, Stop):
                pool.kill(action.job)

    def _send(self, core: ServerCore, router: zmq.Socket[Any], pool: WorkerPool, send: Send) -> None:
        try:
            tracker = send_frames(router, [send.client, *send.frames], track=bool(send.held))  # tracks the payload
            if send.held:
                assert send.job is not None and tracker is not None
                self._held.append((tracker, send.job))
        except zmq.ZMQError as exc:  # EHOSTUNREACH: client gone; EAGAIN: its pipe is full (it does not read)
            log.debug("reply to a gone or stalled client dropped (%s)", exc.strerror)
            core.send_failed(send, time.monotonic())

    def _release_segment(self, core: ServerCore, pool: WorkerPool, job: int) -> None:
        """A result the core holds no more (its reply small: pyzmq copied it; let go by libzmq; not sent at all; a result in
        parts all fetched or dropped): its segment can take the next result."""
        if job in self._segments and not core.holds(job):
            pool.release(self._segments.pop(job))

    def _check_held(self, core: ServerCore, pool: WorkerPool, now: float) -> None:
        still = []
        for tracker, job in self._held:
            if tracker.done:
                core.reply_released(job, now)
                self._release_segment(core, pool, job)
            else:
                still.append((tracker, job))
        self._held = still

    @staticmethod
    def _summary(s: dict[str, Any]) -> str:
        return (
            f"{s['requests']} requests, {s['ok']} ok, errors {s['errors'] or '{}'}, "
            f"{s['in_flight']} in flight, {s['dropped_replies']} replies dropped, {s['stopped_jobs']} jobs stopped, "
            f"{s['workers_died']} workers died, {format_size(s['memory']['unread_reply_bytes'])} of replies unread, "
            f"up {s['uptime_s']:.0f} s"
        )


def serve_until_signalled(server: Server) -> None:
    """Run ``server`` in this (main) thread; SIGTERM and SIGINT stop it gracefully."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    server.serve()
