"""The server's decisions, sans I/O: requests and events in, what to send, run, start and stop out.

:class:`ServerCore` knows nothing of sockets, processes or clocks. Its driver
(the ROUTER loop in :mod:`zmqproc.server`, or a test with a fake clock) feeds it

- :meth:`~ServerCore.receive`: a request's frames from a connection (a ROUTER identity);
- :meth:`~ServerCore.pump`: once per turn, with the number of idle workers;
- :meth:`~ServerCore.finished` / :meth:`~ServerCore.worker_died`: what became of a started or inline job;
- :meth:`~ServerCore.reply_released` / :meth:`~ServerCore.send_failed`: what libzmq did with a reply;
- :meth:`~ServerCore.shutdown`: SIGTERM;

and carries out the actions each returns, in order: :class:`Send` frames to a
connection, :class:`RunInline` a light job now, :class:`Start` a job on a
worker, :class:`Stop` a started job (kill its worker). The time is always
passed in.

What it decides (docs/protocol.md is the contract): admission by the credit
ledger (:mod:`zmqproc.server.credit`) and the memory budget (:mod:`zmqproc.server.budget`);
light work (raw pixels, no heavy op, a small estimated cost) runs inline, at
most :data:`INLINE_TURN_NS` of it per turn so a ping never waits long; other
work waits in the fair queue until a worker is idle and its peak bytes fit;
deadlines, ``--job-timeout``, ``cancel`` and shutdown stop work and answer it.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import Busy, Cancelled, DeadlineExceeded, InternalError, ProcessingError
from ..ops import registry as ops
from ..protocol import Buffer, Limits, Request, decode_request, encode_error, encode_reply
from . import budget
from .budget import BudgetPlan, Estimate
from .credit import CreditLedger
from .work import Outcome, Spec, result_bytes
from .work_queue import WorkQueue

INLINE_MAX_NS = 1_000_000  # a job estimated at most this much CPU may run in the socket loop...
INLINE_TURN_NS = 2_000_000  # ...and at most this much inline work runs between two reads of the socket
INLINE_JOB_NS = 30_000  # what any inline job costs beside its ops (header, checks, reply)
TRACK_MIN_BYTES = 64 * 1024  # replies this large are held (and counted against their client) until libzmq lets go
SHUTDOWN_GRACE_S = 3.0  # after SIGTERM, running work may finish this long
WORKER_DEATHS = 2  # a job whose workers died this many times under it is given up (internal); before that it starts again


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frames`` to ``client``. ``held`` > 0: report :meth:`ServerCore.reply_released` (``job``) once libzmq lets go."""

    client: bytes
    frames: list[Any]
    job: int | None = None
    held: int = 0


@dataclass(frozen=True, slots=True)
class RunInline:
    job: int
    spec: Spec
    payload: Buffer


@dataclass(frozen=True, slots=True)
class Start:
    job: int
    spec: Spec
    payload: Buffer
    reply_bytes: int


@dataclass(frozen=True, slots=True)
class Stop:
    job: int


Action = Send | RunInline | Start | Stop


@dataclass(frozen=True, slots=True)
class CoreConfig:
    plan: BudgetPlan
    workers: int = 2
    max_queue: int = 64
    limits: Limits = Limits()
    job_timeout: float = 60.0
    max_client_queue: int | None = None


@dataclass(slots=True)
class Job:
    id: int
    client: bytes
    request_id: str
    spec: Spec
    payload: Buffer | None
    size: int
    estimate: Estimate
    received: float
    deadline: float | None
    light: bool
    started: float | None = None
    deaths: int = 0  # workers that died running it


@dataclass(slots=True)
class _Reader:
    """A connection's replies handed to libzmq and not yet let go of."""

    unread: int = 0
    over_since: float | None = None  # when unread passed its share


@dataclass
class _Counters:
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    inline: int = 0
    started: int = 0
    stopped: int = 0
    workers_died: int = 0
    restarted: int = 0


class ServerCore:
    def __init__(self, config: CoreConfig, epoch: str, now: float, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._wall_clock = wall_clock  # only for the ping reply's `time`
        self.epoch = epoch
        plan = config.plan
        capacity = config.max_queue + config.workers
        self.credit = CreditLedger(capacity, plan.queued, max_share=config.max_client_queue)
        self._light: WorkQueue[Job] = WorkQueue()
        self._heavy: WorkQueue[Job] = WorkQueue()
        self._running: dict[int, Job] = {}  # started on a worker, or handed out to run inline
        self._held: dict[int, tuple[bytes, int]] = {}  # job -> (client, reply bytes) until libzmq lets go
        self._readers: dict[bytes, _Reader] = {}
        self._next_job = 0
        self.reserved = 0  # peak bytes of running jobs
        self.unread = 0  # reply bytes libzmq still holds
        self.spent_ns = 0.0  # estimated inline work run in this turn of the driver's loop
        self._now = now  # the time of the latest receive or pump
        self.stopping_since: float | None = None
        self.counters = _Counters()
        limits = {"max_pixels": config.limits.max_pixels, "max_frame_bytes": config.limits.max_frame_bytes, "workers": config.workers}
        self._ops_reply = {"ops": ops.describe(), "limits": limits}
        self._started_at = now
        self.bugs: list[str] = []  # tracebacks of bugs met by requests, taken by the server for its log
        self._pack = msgpack.Packer(use_bin_type=True).pack  # one Packer for every reply: packb would build one per call

    # -- requests ---------------------------------------------------------------------------

    def receive(self, client: bytes, frames: Sequence[Buffer], now: float) -> list[Action]:
        """One request message from ``client``: its answer now, or nothing yet (work admitted).

        A bug that a request meets here is that request's ``internal`` answer (its
        traceback in :attr:`bugs`, for the server's rate-limited log), never the
        end of the loop.
        """
        self.counters.requests += 1
        self._now = now
        request_id = None
        try:
            request = decode_request(frames, self.config.limits)
            request_id = request.id
            return self._handle(client, request, now)
        except ProcessingError as err:
            return [self._error(client, err.request_id if request_id is None else request_id, err, now)]
        except Exception:
            self.bugs.append(traceback.format_exc())
            return [
                self._error(client, request_id, InternalError("a bug inside the server met this request (logged); it keeps serving"), now)
            ]

    def _handle(self, client: bytes, request: Request, now: float) -> list[Action]:
        if request.kind == "process":
            return self._admit(client, request, now)
        if request.kind == "ping":
            fields: dict[str, Any] = {"time": self._wall_clock()}
        elif request.kind == "ops" and request.tile_dtype is not None:  # a pipeline's halo, for tiles
            halo = ops.pipeline_halo(ops.validate_pipeline(request.pipeline), request.tile_dtype)
            fields = {**self._ops_reply, "tile": {"halo": halo}}
        elif request.kind == "ops":
            fields = self._ops_reply
        elif request.kind == "stats":
            fields = self.stats(now)
        else:
            return self._cancel(client, request, now)
        return [self._ok(client, request.id, fields, now)]

    def _admit(self, client: bytes, request: Request, now: float) -> list[Action]:
        if self.stopping_since is not None:
            raise Busy.shutting_down()
        assert request.image is not None and request.payload is not None
        pipeline = ops.validate_pipeline(request.pipeline)
        reply_format = request.reply_format or request.image.format
        limits = self.config.limits
        estimate = budget.estimate(request.image, len(request.payload), pipeline, reply_format, limits.max_pixels)
        budget.check_fits(estimate, self.config.plan)
        size = len(request.payload)
        if not self.credit.admit(client, request.credit_seq, size, now):
            raise Busy("over this connection's credit (docs/protocol.md, Flow control); retry later")
        self._next_job += 1
        light = request.image.format == "raw" and not any(o.heavy for o, _ in pipeline) and estimate.cost_ns <= INLINE_MAX_NS
        deadline = None if request.deadline_ms is None else now + request.deadline_ms / 1000
        spec = Spec.of(request.image, pipeline, reply_format, limits.max_pixels)
        job = Job(self._next_job, client, request.id, spec, request.payload, size, estimate, now, deadline, light)
        if light and not self._light and self.spent_ns < INLINE_TURN_NS and self._can_start(job):  # it overtakes nothing
            return [self._run_inline(job, now)]
        (self._light if light else self._heavy).put(job)
        return []

    def _cancel(self, client: bytes, request: Request, now: float) -> list[Action]:
        target = request.target or ""
        actions: list[Action] = []
        job = self._light.withdraw(client, target) or self._heavy.withdraw(client, target)
        if job is None:
            job = next((j for j in self._running.values() if j.client == client and j.request_id == target), None)
            if job is not None:  # an inline job is never seen running here: it ends in the turn it starts
                actions.append(Stop(job.id))
                self._end(job)
        if job is not None:
            actions.append(self._answer(job, Cancelled("cancelled by the client"), now))
        actions.append(self._ok(client, request.id, {"cancelled": job is not None}, now))
        return actions

    # -- each turn ---------------------------------------------------------------------------

    def pump(self, now: float, idle_workers: int) -> list[Action]:
        """Time passed and workers may be idle: answer what expired, stop what overran, run and start what fits."""
        self._now = now
        actions: list[Action] = []
        for queue in (self._light, self._heavy) if self._light or self._heavy else ():
            for late in queue.withdraw_where(lambda j: j.deadline is not None and now > j.deadline):
                message = f"waited {(now - late.received) * 1000:.0f} ms in the queue, past its deadline_ms"
                actions.append(self._answer(late, DeadlineExceeded(message), now))
        if self._running or self.stopping_since is not None:
            actions += self._stop_overruns(now)
        if self._readers:
            actions += self._answer_stalled(now)
        if self.stopping_since is not None:
            return actions
        while self.spent_ns < INLINE_TURN_NS and (light := self._light.take(self._can_start)) is not None:
            actions.append(self._run_inline(light, now))
        self.spent_ns = 0.0  # the next turn begins
        while idle_workers > 0 and (self._heavy or self._light):
            job = self._heavy.take(self._can_start) or self._light.take(self._can_start)
            if job is None:
                break
            idle_workers -= 1
            self._begin(job, now)
            self.counters.started += 1
            assert job.payload is not None  # kept until the job is answered: a job whose worker dies starts again from it
            actions.append(Start(job.id, job.spec, job.payload, job.estimate.reply))
        return actions

    def _run_inline(self, job: Job, now: float) -> RunInline:
        self.spent_ns += INLINE_JOB_NS + job.estimate.cost_ns
        self._begin(job, now)
        self.counters.inline += 1
        assert job.payload is not None
        return RunInline(job.id, job.spec, job.payload)

    def busy(self) -> bool:
        """Inline work is waiting: the driver should not sleep before the next :meth:`pump`."""
        return self.stopping_since is None and self._light.ready(self._can_start)

    def _can_start(self, job: Job) -> bool:
        reader = self._readers.get(job.client)
        if reader is not None and reader.over_since is not None:
            return False  # its replies go unread: its work waits (bounded by --job-timeout, see _answer_stalled)
        free = self.config.plan.jobs - self.reserved - self.unread
        if job.estimate.peak <= free:
            return True
        if reader is not None and job.estimate.peak <= free + reader.unread:  # it waits for its own unread replies
            self._over(job.client, reader, self._now)
        return False

    def _begin(self, job: Job, now: float) -> None:
        job.started = now
        self.reserved += job.estimate.peak
        self._running[job.id] = job

    def _end(self, job: Job) -> None:
        if self._running.pop(job.id, None) is not None:
            self.reserved -= job.estimate.peak

    def _stop_overruns(self, now: float) -> list[Action]:
        actions: list[Action] = []
        timeout = self.config.job_timeout
        for job in list(self._running.values()):
            assert job.started is not None
            if job.deadline is not None and now > job.deadline:
                message = f"stopped after {now - job.started:.1f} s of work: past its deadline_ms"
            elif now - job.started > timeout:
                message = f"stopped after {now - job.started:.1f} s of work: past the server's --job-timeout ({timeout:g} s)"
            else:
                continue
            self.counters.stopped += 1
            actions += [Stop(job.id), self._answer(job, DeadlineExceeded(message), now)]
            self._end(job)
        if self.stopping_since is not None and now - self.stopping_since >= SHUTDOWN_GRACE_S:
            for job in list(self._running.values()):
                actions += [Stop(job.id), self._answer(job, Busy.shutting_down("the server stopped it while shutting down; resend"), now)]
                self._end(job)
        return actions

    def _answer_stalled(self, now: float) -> list[Action]:
        """Queued work of a connection whose replies have gone unread for --job-timeout: answered, not kept forever."""
        stalled = {c for c, r in self._readers.items() if r.over_since is not None and now - r.over_since >= self.config.job_timeout}
        if not stalled:
            return []
        message = f"not started: this connection's replies have gone unread for over {self.config.job_timeout:g} s"
        return [
            self._answer(job, DeadlineExceeded(message), now)
            for queue in (self._light, self._heavy)
            for job in queue.withdraw_where(lambda j: j.client in stalled)
        ]

    # -- what became of a job ------------------------------------------------------------------

    def finished(self, job_id: int, outcome: Outcome, now: float) -> list[Action]:
        """A job ended (inline or on a worker); nothing if it was already answered (stopped, cancelled)."""
        job = self._running.get(job_id)
        if job is None:
            return []
        self._end(job)
        if outcome.code != "ok":
            assert outcome.error is not None
            return [self._answer(job, outcome.error, now)]
        frames = encode_reply(job.request_id, self.epoch, outcome.fields, outcome.result, self._credit_after(job, now), self._pack)
        self.counters.codes["ok"] += 1
        size = result_bytes(outcome.result)
        if size < TRACK_MIN_BYTES:
            return [Send(job.client, frames)]
        reader = self._readers.setdefault(job.client, _Reader())
        reader.unread += size
        self.unread += size
        self._held[job.id] = (job.client, size)
        self._check_reader(job.client, reader, now)
        return [Send(job.client, frames, job.id, size)]

    def worker_died(self, job_id: int | None, exitcode: int | None, now: float, delivered: bool = True) -> list[Action]:
        """A worker ended without answering ``job_id``; ``delivered`` False: the job never reached it (a broken pipe).

        The job starts again on a fresh worker, first in line, unless this is the
        :data:`WORKER_DEATHS`-th worker that died running it: then it is answered
        ``internal`` (a poison job cannot kill workers forever).
        """
        self.counters.workers_died += 1
        job = self._running.get(job_id) if job_id is not None else None
        if job is None:
            return []
        self._end(job)
        job.deaths += delivered
        if job.deaths < WORKER_DEATHS:
            self.counters.restarted += 1
            job.started = None
            (self._light if job.light else self._heavy).put_first(job)
            return []
        how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        cause = " (SIGKILL: perhaps the OOM killer)" if exitcode == -9 else ""
        message = f"the workers running it died {job.deaths} times (last: {how}{cause}); they were replaced, it is given up"
        return [self._answer(job, InternalError(message), now)]

    def reply_released(self, job_id: int, now: float) -> None:
        held = self._held.pop(job_id, None)
        if held is None:
            return
        client, size = held
        self.unread -= size
        reader = self._readers[client]
        reader.unread -= size
        self._check_reader(client, reader, now)

    def send_failed(self, send: Send, now: float) -> None:
        """libzmq refused the reply (client gone, or its pipe full): dropped and counted."""
        self.counters.dropped += 1
        if send.job is not None:
            self.reply_released(send.job, now)

    def _check_reader(self, client: bytes, reader: _Reader, now: float) -> None:
        share = self.config.plan.jobs // (self.credit.active(now) + 1)
        over = reader.unread > share
        if over and reader.over_since is None:
            self._over(client, reader, now)
        elif not over and reader.over_since is not None:
            reader.over_since = None
            self.credit.throttle(client, False)
        if not reader.unread and reader.over_since is None:
            del self._readers[client]

    def _over(self, client: bytes, reader: _Reader, now: float) -> None:
        """``client``'s unread replies now hold back its own work: lower its grant, and start the clock on its queue."""
        reader.over_since = now
        self.credit.throttle(client, True)

    # -- shutdown ------------------------------------------------------------------------------

    def shutdown(self, now: float) -> list[Action]:
        """Stop taking work: queued work is answered busy + shutting_down at once; running work has SHUTDOWN_GRACE_S."""
        if self.stopping_since is not None:
            return []
        self.stopping_since = now
        self.credit.close()
        return [
            self._answer(job, Busy.shutting_down(), now)
            for queue in (self._light, self._heavy)
            for job in queue.withdraw_where(lambda _: True)
        ]

    def done(self) -> bool:
        """Shutting down and nothing is left running."""
        return self.stopping_since is not None and not self._running

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until :meth:`pump` has something to do by the clock alone (None: nothing timed is pending)."""
        if not (self._light or self._heavy or self._running or self._readers or self.stopping_since is not None):
            return None
        times = [j.deadline for q in (self._light, self._heavy) for j in q if j.deadline is not None]
        for job in self._running.values():
            assert job.started is not None
            times.append(job.started + self.config.job_timeout)
            if job.deadline is not None:
                times.append(job.deadline)
        times += [r.over_since + self.config.job_timeout for r in self._readers.values() if r.over_since is not None]
        if self.stopping_since is not None:
            times.append(self.stopping_since + SHUTDOWN_GRACE_S)
        return None if not times else max(0.0, min(times) - now)

    # -- replies ---------------------------------------------------------------------------------

    def _credit_after(self, job: Job, now: float) -> Any:
        self.credit.release(job.client, job.size, now)
        return self.credit.credit(job.client, now)

    def _answer(self, job: Job, err: ProcessingError, now: float) -> Send:
        """The error reply to an admitted job (which is then no longer outstanding)."""
        self.counters.codes[err.code] += 1
        return Send(job.client, encode_error(job.request_id, self.epoch, err, self._credit_after(job, now), self._pack))

    def _error(self, client: bytes, request_id: str | None, err: ProcessingError, now: float) -> Send:
        self.counters.codes[err.code] += 1
        return Send(client, encode_error(request_id, self.epoch, err, self.credit.credit(client, now), self._pack))

    def _ok(self, client: bytes, request_id: str, fields: dict[str, Any], now: float) -> Send:
        self.counters.codes["ok"] += 1
        return Send(client, encode_reply(request_id, self.epoch, fields, credit=self.credit.credit(client, now), pack=self._pack))

    def stats(self, now: float) -> dict[str, Any]:
        c = self.counters
        plan = self.config.plan
        return {
            "requests": c.requests,
            "ok": c.codes["ok"],
            "errors": {code: n for code, n in c.codes.items() if code != "ok"},
            "in_flight": len(self._light) + len(self._heavy) + len(self._running),
            "queue_length": len(self._light) + len(self._heavy),
            "running": len(self._running),
            "max_queue": self.config.max_queue,
            "max_client_queue": self.credit.max_share,
            "active_clients": self.credit.active(now),
            "workers": self.config.workers,
            "dropped_replies": c.dropped,
            "inline_jobs": c.inline,
            "stopped_jobs": c.stopped,
            "workers_died": c.workers_died,
            "restarted_jobs": c.restarted,
            "memory": {
                "budget_bytes": plan.total,
                "jobs_bytes": plan.jobs,
                "reserved_bytes": self.reserved,
                "unread_reply_bytes": self.unread,
            },
            "uptime_s": round(now - self._started_at, 3),
        }
