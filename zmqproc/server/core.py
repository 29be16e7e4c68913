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

Payloads in parts (docs/protocol.md): a ``process`` request whose payload
follows in ``part`` requests is checked and admitted at once, and its bytes
gather in an :class:`_Upload` until they are all in; then it goes on as any
other job. A result over :data:`~zmqproc.protocol.PART_BYTES` whose request
allows it goes out as its first part, the rest held in a :class:`_Download`
for ``fetch`` requests and counted as its connection's unread replies.
:meth:`ServerCore.holds` tells the driver whether a job's result buffer is
still needed.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import BadRequest, Busy, Cancelled, DeadlineExceeded, InternalError, ProcessingError
from ..images import ImageDescriptor, parse_descriptor
from ..ops import registry as ops
from ..protocol import PART_BYTES, Buffer, Limits, Request, decode_request, encode_error, encode_reply
from . import budget
from .budget import BudgetPlan, Estimate
from .credit import CreditLedger
from .metrics import JobTimes, Snapshot
from .work import Outcome, Spec, result_bytes
from .work_queue import WorkQueue

INLINE_MAX_NS = 1_000_000  # a job estimated at most this much CPU may run in the socket loop...
INLINE_TURN_NS = 2_000_000  # ...and at most this much inline work runs between two reads of the socket
INLINE_JOB_NS = 30_000  # what any inline job costs beside its ops (header, checks, reply)
TRACK_MIN_BYTES = 64 * 1024  # replies this large are held (and counted against their client) until libzmq lets go
SHUTDOWN_GRACE_S = 3.0  # after SIGTERM, running work may finish this long
WORKER_DEATHS = 2  # a job whose workers died this many times under it is given up (internal); before that it starts again
TRANSFER_STALL_S = 30.0  # a result held without a fetch this long is let go...
UPLOAD_STALL_S = 10.0  # ...and an upload without a part this long dropped: its connection is gone (a cut; ZMTP's own
# heartbeat gives up after 6 s), and the client sends it again, whole, on its new connection


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
    down: bool = False  # its result may go in parts


@dataclass(slots=True)
class _Upload:
    """An admitted ``process`` request whose payload comes in ``part`` requests, until its ``size`` bytes are in."""

    client: bytes
    request_id: str
    image: ImageDescriptor  # an encoded file's is unsized until its bytes are in
    pipeline: list[tuple[ops.Op, dict[str, Any]]]
    reply_format: str
    estimate: Estimate | None  # None: an encoded file, sized from its own header once it is in
    buffer: bytearray
    size: int
    deadline: float | None
    down: bool
    last_part: float
    got: int = 0


@dataclass(slots=True)
class _Download:
    """A result sent in parts: its first part went with the reply, the rest is held for ``fetch`` requests."""

    job: int
    client: bytes
    request_id: str
    data: memoryview  # the whole result, as bytes
    last_fetch: float
    sent: int = PART_BYTES  # bytes sent so far
    sending: int = 1  # replies sent from it that libzmq still holds
    over: bool = False  # all sent, cancelled or stalled: let go once nothing is sending


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
        self._uploads: dict[tuple[bytes, str], _Upload] = {}  # (client, request id) -> its payload's parts so far
        self._downloads: dict[tuple[bytes, str], _Download] = {}  # (client, request id) -> a result held for fetches
        self._downloading: dict[int, _Download] = {}  # job -> its download, until it is over and libzmq let go of its parts
        self._readers: dict[bytes, _Reader] = {}
        self._next_job = 0
        self.reserved = 0  # peak bytes of running jobs
        self.unread = 0  # reply bytes libzmq still holds
        self.spent_ns = 0.0  # estimated inline work run in this turn of the driver's loop
        self._now = now  # the time of the latest receive or pump
        self.stopping_since: float | None = None
        self.counters = _Counters()
        self.job_times = JobTimes()  # each job that ran to its end, for the metrics endpoint (zmqproc.server.metrics)
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
        elif request.kind == "part":
            return self._part(client, request, now)
        elif request.kind == "fetch":
            return self._fetch(client, request, now)
        else:
            return self._cancel(client, request, now)
        return [self._ok(client, request.id, fields, now)]

    def _admit(self, client: bytes, request: Request, now: float) -> list[Action]:
        """Check and admit a ``process`` request: as a job, or (``up``) as an upload whose bytes come in parts."""
        if self.stopping_since is not None:
            raise Busy.shutting_down()
        image = request.image
        assert image is not None
        pipeline = ops.validate_pipeline(request.pipeline)
        reply_format = request.reply_format or image.format
        size = len(request.payload) if request.payload is not None else request.up
        assert size is not None
        if request.up is not None and (client, request.id) in self._uploads:
            raise BadRequest(f"an upload with id {request.id!r} is already in progress on this connection")
        estimate = None if image.dtype is None else self._estimate(image, size, pipeline, reply_format)  # None: an encoded upload
        if not self.credit.admit(client, request.credit_seq, size, now):
            raise Busy("over this connection's credit (docs/protocol.md, Flow control); retry later")
        deadline = None if request.deadline_ms is None else now + request.deadline_ms / 1000
        if request.payload is None:
            upload = _Upload(
                client, request.id, image, pipeline, reply_format, estimate, bytearray(size), size, deadline, request.down, now
            )
            self._uploads[(client, request.id)] = upload
            return self._uploaded(upload, now) if size == 0 else []
        assert estimate is not None
        return self._queue(
            self._job(client, request.id, image, pipeline, reply_format, request.payload, size, estimate, now, deadline, request.down), now
        )

    def _estimate(self, image: ImageDescriptor, size: int, pipeline: list[tuple[ops.Op, dict[str, Any]]], reply_format: str) -> Estimate:
        estimate = budget.estimate(image, size, pipeline, reply_format, self.config.limits.max_pixels)
        budget.check_fits(estimate, self.config.plan)
        return estimate

    def _job(
        self,
        client: bytes,
        request_id: str,
        image: ImageDescriptor,
        pipeline: list[tuple[ops.Op, dict[str, Any]]],
        reply_format: str,
        payload: Buffer,
        size: int,
        estimate: Estimate,
        now: float,
        deadline: float | None,
        down: bool,
    ) -> Job:
        self._next_job += 1
        light = image.format == "raw" and not any(o.heavy for o, _ in pipeline) and estimate.cost_ns <= INLINE_MAX_NS
        spec = Spec.of(image, pipeline, reply_format, self.config.limits.max_pixels)
        return Job(self._next_job, client, request_id, spec, payload, size, estimate, now, deadline, light, down=down)

    def _queue(self, job: Job, now: float) -> list[Action]:
        """An admitted job with its payload: run inline now if it is light and overtakes nothing, else queued."""
        if job.light and not self._light and self.spent_ns < INLINE_TURN_NS and self._can_start(job):  # it overtakes nothing
            return [self._run_inline(job, now)]
        (self._light if job.light else self._heavy).put(job)
        return []

    # -- payloads in parts ---------------------------------------------------------------------

    def _part(self, client: bytes, request: Request, now: float) -> list[Action]:
        """Bytes of an upload, in order; the wrong offset or too many bytes end the upload (answered bad_request)."""
        key = (client, request.target or "")
        upload = self._uploads.get(key)
        if upload is None:
            raise BadRequest(f"no upload in progress for {request.target!r} on this connection (unknown, already answered, or another's)")
        data = request.payload
        assert data is not None
        end = request.offset + len(data)
        if request.offset != upload.got or end > upload.size:
            del self._uploads[key]
            why = (
                f"a part at offset {request.offset} where {upload.got} bytes are in"
                if request.offset != upload.got
                else f"a part of {len(data)} bytes at offset {request.offset} passes the payload's {upload.size} bytes"
            )
            return [
                self._answer(upload, BadRequest(f"its upload ended: {why}"), now),
                self._error(client, request.id, BadRequest(f"{why}; the upload of {upload.request_id!r} is ended"), now),
            ]
        upload.buffer[upload.got : end] = data
        upload.got, upload.last_part = end, now
        received = self._ok(client, request.id, {"received": end}, now)
        return [received] if end < upload.size else [received, *self._uploaded(upload, now)]

    def _uploaded(self, upload: _Upload, now: float) -> list[Action]:
        """All of an upload's bytes are in: it goes on as if its payload had come in one frame."""
        del self._uploads[(upload.client, upload.request_id)]
        payload = memoryview(upload.buffer)
        image, estimate = upload.image, upload.estimate
        try:
            if estimate is None:  # an encoded file: sized from its own header, now that it is here
                image = parse_descriptor(image.to_wire(), payload, self.config.limits.max_pixels)
                estimate = self._estimate(image, upload.size, upload.pipeline, upload.reply_format)
        except ProcessingError as err:
            return [self._answer(upload, err, now)]
        except Exception:
            self.bugs.append(traceback.format_exc())
            return [self._answer(upload, InternalError("a bug inside the server met this request (logged); it keeps serving"), now)]
        job = self._job(
            upload.client,
            upload.request_id,
            image,
            upload.pipeline,
            upload.reply_format,
            payload,
            upload.size,
            estimate,
            now,
            upload.deadline,
            upload.down,
        )
        return self._queue(job, now)

    def _download(self, job: Job, outcome: Outcome, size: int, now: float) -> Send:
        """The reply to a job whose result goes in parts: the first part now, the rest held for fetches."""
        data = memoryview(outcome.result).cast("B")  # results are C-contiguous (arrays from images.describe_array, or bytes)
        fields = {**outcome.fields, "parts": {"bytes": size}}
        frames = encode_reply(job.request_id, self.epoch, fields, data[:PART_BYTES], self._credit_after(job, now), self._pack)
        self.counters.codes["ok"] += 1
        key = (job.client, job.request_id)
        earlier = self._downloads.get(key)
        if earlier is not None:  # the same id again: the earlier result's fetches would be ambiguous
            self._end_download(earlier, now)
        self._downloads[key] = self._downloading[job.id] = _Download(job.id, job.client, job.request_id, data, now)
        self._hold(job.client, job.id, size, now)
        return Send(job.client, frames, job.id, PART_BYTES)

    def _fetch(self, client: bytes, request: Request, now: float) -> list[Action]:
        """Bytes of a held result; the result is let go once all of it has been sent."""
        download = self._downloads.get((client, request.target or ""))
        if download is None:
            raise BadRequest(f"no result held for {request.target!r} on this connection (unknown, all fetched, let go, or another's)")
        end = request.offset + request.length
        if end > len(download.data):
            raise BadRequest(f"bytes {request.offset} to {end} pass the result's {len(download.data)}")
        download.sent += request.length
        download.last_fetch = now
        download.sending += 1
        self.counters.codes["ok"] += 1
        credit = self.credit.credit(client, now)
        frames = encode_reply(request.id, self.epoch, {}, download.data[request.offset : end], credit, self._pack)
        if download.sent >= len(download.data):
            self._end_download(download, now)
        return [Send(client, frames, download.job, request.length)]

    def _end_download(self, download: _Download, now: float) -> None:
        """No more fetches of it; its memory is let go once libzmq holds none of its parts."""
        key = (download.client, download.request_id)
        if self._downloads.get(key) is download:
            del self._downloads[key]
        download.over = True
        if not download.sending:
            del self._downloading[download.job]
            self._let_go(download.job, now)

    def _expire_transfers(self, now: float) -> list[Action]:
        """Uploads past their deadline or without a part for UPLOAD_STALL_S are answered; results not fetched are let go."""
        actions: list[Action] = []
        for upload in list(self._uploads.values()):
            progress = f"{upload.got} of its {upload.size} bytes came in parts"
            if upload.deadline is not None and now > upload.deadline:
                err = DeadlineExceeded(f"{progress} before its deadline_ms passed")
            elif now - upload.last_part > UPLOAD_STALL_S:
                err = DeadlineExceeded(f"{progress}, then none for {UPLOAD_STALL_S:g} s: the upload is dropped")
            else:
                continue
            del self._uploads[(upload.client, upload.request_id)]
            actions.append(self._answer(upload, err, now))
        for download in [d for d in self._downloads.values() if now - d.last_fetch > TRANSFER_STALL_S]:
            self._end_download(download, now)
        return actions

    def _cancel(self, client: bytes, request: Request, now: float) -> list[Action]:
        target = request.target or ""
        actions: list[Action] = []
        job = self._light.withdraw(client, target) or self._heavy.withdraw(client, target)
        if job is None:
            job = next((j for j in self._running.values() if j.client == client and j.request_id == target), None)
            if job is not None:  # an inline job is never seen running here: it ends in the turn it starts
                actions.append(Stop(job.id))
                self._end(job)
        found: Job | _Upload | None = job or self._uploads.pop((client, target), None)
        if found is not None:
            actions.append(self._answer(found, Cancelled("cancelled by the client"), now))
        download = self._downloads.get((client, target)) if found is None else None
        if download is not None:  # answered already: what is held for its fetches is let go
            self._end_download(download, now)
        actions.append(self._ok(client, request.id, {"cancelled": found is not None or download is not None}, now))
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
        if self._uploads or self._downloads:
            actions += self._expire_transfers(now)
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
            for download in list(self._downloads.values()):  # results not fetched within the grace are let go
                self._end_download(download, now)
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
        if job.started is not None:
            self.job_times.observe(now - job.started)
        if outcome.code != "ok":
            assert outcome.error is not None
            return [self._answer(job, outcome.error, now)]
        size = result_bytes(outcome.result)
        if job.down and size > PART_BYTES:
            return [self._download(job, outcome, size, now)]
        frames = encode_reply(job.request_id, self.epoch, outcome.fields, outcome.result, self._credit_after(job, now), self._pack)
        self.counters.codes["ok"] += 1
        if size < TRACK_MIN_BYTES:
            return [Send(job.client, frames)]
        self._hold(job.client, job.id, size, now)
        return [Send(job.client, frames, job.id, size)]

    def _hold(self, client: bytes, job_id: int, size: int, now: float) -> None:
        """``size`` bytes of ``job_id``'s result are held for ``client`` (counted as its unread replies) until let go."""
        reader = self._readers.setdefault(client, _Reader())
        reader.unread += size
        self.unread += size
        self._held[job_id] = (client, size)
        self._check_reader(client, reader, now)

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
        """libzmq let go of a reply sent with ``held`` (a result in parts: one of its parts)."""
        download = self._downloading.get(job_id)
        if download is not None:
            download.sending -= 1
            if download.sending or not download.over:
                return  # more of it is held for fetches, or still on its way
            del self._downloading[job_id]
        self._let_go(job_id, now)

    def holds(self, job_id: int) -> bool:
        """Whether ``job_id``'s result is still needed: its reply not yet let go by libzmq, or parts of it held for fetches."""
        return job_id in self._held

    def _let_go(self, job_id: int, now: float) -> None:
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
        waiting: list[Job | _Upload] = [job for queue in (self._light, self._heavy) for job in queue.withdraw_where(lambda _: True)]
        waiting += self._uploads.values()
        self._uploads.clear()
        return [self._answer(job, Busy.shutting_down(), now) for job in waiting]

    def done(self) -> bool:
        """Shutting down, nothing is left running, and no result is held for fetches (they have the grace too)."""
        return self.stopping_since is not None and not self._running and not self._downloads

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until :meth:`pump` has something to do by the clock alone (None: nothing timed is pending)."""
        if not (
            self._light
            or self._heavy
            or self._running
            or self._readers
            or self._uploads
            or self._downloads
            or self.stopping_since is not None
        ):
            return None
        times = [j.deadline for q in (self._light, self._heavy) for j in q if j.deadline is not None]
        for job in self._running.values():
            assert job.started is not None
            times.append(job.started + self.config.job_timeout)
            if job.deadline is not None:
                times.append(job.deadline)
        times += [r.over_since + self.config.job_timeout for r in self._readers.values() if r.over_since is not None]
        for upload in self._uploads.values():
            times.append(upload.last_part + UPLOAD_STALL_S)
            if upload.deadline is not None:
                times.append(upload.deadline)
        times += [d.last_fetch + TRANSFER_STALL_S for d in self._downloads.values()]
        if self.stopping_since is not None:
            times.append(self.stopping_since + SHUTDOWN_GRACE_S)
        return None if not times else max(0.0, min(times) - now)

    # -- replies ---------------------------------------------------------------------------------

    def _credit_after(self, job: Job | _Upload, now: float) -> Any:
        self.credit.release(job.client, job.size, now)
        return self.credit.credit(job.client, now)

    def _answer(self, job: Job | _Upload, err: ProcessingError, now: float) -> Send:
        """The error reply to an admitted job or upload (which is then no longer outstanding)."""
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
            "in_flight": len(self._light) + len(self._heavy) + len(self._running) + len(self._uploads),
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
            "uploads": len(self._uploads),
            "held_results": len(self._downloading),
            "memory": {
                "budget_bytes": plan.total,
                "jobs_bytes": plan.jobs,
                "reserved_bytes": self.reserved,
                "unread_reply_bytes": self.unread,
                "upload_bytes": sum(u.size for u in self._uploads.values()),
                "held_result_bytes": sum(len(d.data) for d in self._downloading.values()),
            },
            "uptime_s": round(now - self._started_at, 3),
        }

    def snapshot(self, now: float) -> Snapshot:
        """:meth:`stats` and the job times, copied: the metrics endpoint's thread reads this and never the core."""
        return Snapshot(self.stats(now), self.job_times.snapshot())
