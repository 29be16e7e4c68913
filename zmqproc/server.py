"""The processing server: one ROUTER socket loop and a pool of worker threads.

The socket loop only moves frames: it decodes and checks each request (pure
functions from :mod:`zmqproc.protocol` and :mod:`zmqproc.ops`), answers
``ping``/``ops``/``stats``/``cancel`` and refusals at once, and queues
``process`` work. Workers decode pixels, run the pipeline and encode the reply,
then hand the frames back over an inproc PUSH socket, so the ROUTER is only
ever touched by the loop's thread. Threads, not processes: OpenCV releases the
GIL, and raw pixels never need copying between address spaces (see
docs/architecture.md for the measurement).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
import uuid
from collections import Counter
from typing import Any

import zmq

from . import ops
from .credit import CreditLedger
from .errors import Busy, Cancelled, DeadlineExceeded, InternalError, ProcessingError
from .images import decode_image, encode_image
from .protocol import Limits, Request, decode_request, encode_error, encode_reply, with_header
from .security import ServerCurve
from .work_queue import Job, QueueFull, WorkQueue
from .zmqflags import NOBLOCK, POLLIN, readable

log = logging.getLogger("zmqproc.server")

SHUTDOWN_LIMIT_S = 4.5  # after a stop, running work may finish this long; then the loop exits, whatever is left
SUMMARY_INTERVAL_S = 60.0
INLINE_MAX_BYTES = 64 * 1024  # light work on payloads this small runs in the socket loop when nothing is queued
INLINE_MAX_STEPS = 4


class Server:
    """Serve the wire contract on ``bind`` until :meth:`stop` (thread- and signal-safe).

    OpenCV's own decoder limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, the guard for TIFF) is read when cv2 is
    loaded: :func:`zmqproc.server_cli.main` sets it from ``--max-pixels`` first; a program embedding
    this class sets it before importing zmqproc."""

    def __init__(
        self,
        bind: str = "tcp://0.0.0.0:5555",
        workers: int | None = None,
        max_queue: int = 64,
        limits: Limits = Limits(),
        max_client_queue: int | None = None,
        context: zmq.Context | None = None,
        curve: ServerCurve | None = None,
    ) -> None:
        self.bind = bind
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits
        self.epoch = f"{uuid.uuid4().hex[:12]}"
        self.endpoint: str | None = None
        self._ctx = context or zmq.Context.instance()
        self.curve = curve  # CURVE keys and allow-list; None serves in the clear
        # Admission is the credit ledger's (docs/protocol.md, "Flow control"): each active connection is granted a share of
        # max_queue + workers outstanding requests; the queue itself only orders the admitted work fairly.
        capacity = max_queue + self.workers
        self._credit = CreditLedger(capacity, capacity * limits.max_frame_bytes, max_share=max_client_queue)
        self._queue = WorkQueue(capacity * 2)
        self._stop = threading.Event()
        self._results_addr = f"inproc://zmqproc-results-{self.epoch}"
        self._started = time.monotonic()
        self._outstanding = 0
        self._counts: Counter[str] = Counter()
        self._requests = 0
        self._dropped = 0
        self._ops_reply = {"ops": ops.describe()}

    # -- control -------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking work, finish or answer what is in flight, then return from serve()."""
        self._stop.set()

    def stats(self) -> dict[str, Any]:
        errors = {code: n for code, n in self._counts.items() if code != "ok"}
        return {
            "requests": self._requests,
            "ok": self._counts["ok"],
            "errors": errors,
            "in_flight": self._outstanding,
            "queue_length": len(self._queue),
            "max_queue": self._credit.max_requests - self.workers,
            "max_client_queue": self._credit.max_share,
            "active_clients": self._credit.active(time.monotonic()),
            "workers": self.workers,
            "dropped_replies": self._dropped,
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    # -- the socket loop ------------------------------------------------------

    def serve(self, ready: threading.Event | None = None) -> None:
        router = self._ctx.socket(zmq.ROUTER)
        auth = self.curve.secure(router) if self.curve is not None else None
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # libzmq disconnects a peer whose frame is over MAXMSGSIZE; smaller oversize frames get `too_large`.
        router.setsockopt(zmq.MAXMSGSIZE, 2 * max(self.limits.max_frame_bytes, self.limits.max_header_bytes))
        router.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
        router.setsockopt(zmq.LINGER, 1000)
        router.bind(self.bind)
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        results = self._ctx.socket(zmq.PULL)
        results.bind(self._results_addr)
        threads = [threading.Thread(target=self._work, name=f"zmqproc-worker-{i}", daemon=True) for i in range(self.workers)]
        for t in threads:
            t.start()
        log.info(
            "listening on %s with %d workers, queue %d (epoch %s)",
            self.endpoint,
            self.workers,
            self._credit.max_requests - self.workers,
            self.epoch,
        )
        if ready is not None:
            ready.set()
        try:
            self._loop(router, results)
        finally:
            self._queue.close()
            for t in threads:
                t.join(timeout=max(0.0, SHUTDOWN_LIMIT_S - (time.monotonic() - self._stopping_since)))
            results.close(linger=0)
            router.close()
            if auth is not None:
                auth.stop()
            log.info("stopped: %s", self._summary())

    _stopping_since = 0.0

    def _loop(self, router: zmq.Socket, results: zmq.Socket) -> None:
        items = [(router, POLLIN), (results, POLLIN)]
        next_summary = time.monotonic() + SUMMARY_INTERVAL_S
        drained = False
        while True:
            events = dict(zmq.zmq_poll(items, 100))
            if results in events:
                self._forward_results(router, results)
            if router in events:
                self._receive_requests(router)
            now = time.monotonic()
            if now >= next_summary:
                log.info("summary: %s", self._summary())
                next_summary = now + SUMMARY_INTERVAL_S
            if not self._stop.is_set():
                continue
            if not self._stopping_since:
                self._stopping_since = now
                self._credit.close()
                log.info("stopping: %d requests in flight", self._outstanding)
            elapsed = now - self._stopping_since
            if not drained:  # what has not started is answered at once: its client resends it elsewhere or to the next instance
                for job in self._queue.withdraw_all():
                    self._finished(router, job, encode_error(job.request.id, self.epoch, Busy.shutting_down()), "busy")
                drained = True
            if self._outstanding == 0 or elapsed >= SHUTDOWN_LIMIT_S:
                return

    def _summary(self) -> str:
        s = self.stats()
        return (
            f"{s['requests']} requests, {s['ok']} ok, errors {s['errors'] or '{}'}, "
            f"{s['in_flight']} in flight, {s['dropped_replies']} replies dropped, up {s['uptime_s']:.0f} s"
        )

    def _reply(self, router: zmq.Socket, client: bytes, frames: list[Any], code: str) -> None:
        """Send a reply encoded without credit, with the connection's current grant added to its header."""
        self._counts[code] += 1
        frames = with_header(frames, credit=self._credit.credit(client, time.monotonic()).to_wire())
        try:
            router.send_multipart([client, *frames], flags=NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: client gone; EAGAIN: client not reading
            self._dropped += 1
            log.debug("reply to a gone or stalled client dropped (%s)", exc.strerror)

    def _forward_results(self, router: zmq.Socket, results: zmq.Socket) -> None:
        while readable(results):
            code, client, size, *frames = results.recv_multipart(flags=NOBLOCK, copy=False)
            self._outstanding -= 1
            self._credit.release(client.bytes, int(size.bytes), time.monotonic())
            self._reply(router, client.bytes, frames, code.bytes.decode())

    def _finished(self, router: zmq.Socket, job: Job, frames: list[Any], code: str) -> None:
        """Answer a queued job on the loop's thread (withdrawn by a cancel or at shutdown)."""
        self._outstanding -= 1
        self._credit.release(job.client, job.size, time.monotonic())
        self._reply(router, job.client, frames, code)

    def _receive_requests(self, router: zmq.Socket) -> None:
        for _ in range(1000):  # bounded, so worker results are forwarded between bursts
            if not readable(router):
                return
            frames = router.recv_multipart(flags=NOBLOCK, copy=False)
            self._requests += 1
            client = frames[0].bytes
            try:
                request = decode_request([f.buffer for f in frames[1:]], self.limits)
                try:
                    self._handle(router, client, request)
                except ProcessingError as err:
                    err.request_id = request.id
                    raise
            except ProcessingError as err:
                log.debug("request %s refused: %s", err.request_id, err)
                self._reply(router, client, encode_error(err.request_id, self.epoch, err), err.code)

    def _handle(self, router: zmq.Socket, client: bytes, request: Request) -> None:
        if request.kind == "process":
            job = self._admit(client, request)
            if not len(self._queue) and self._light(job):  # nothing waits that it could overtake
                code, frames = self._execute(job)
                self._credit.release(client, job.size, time.monotonic())
                self._reply(router, client, frames, code)
                return
            try:
                self._queue.put(job)
            except QueueFull as full:  # a safety net only: the credit ledger keeps admitted work far below it
                self._credit.release(client, job.size, time.monotonic())
                raise Busy(f"{full.reason}; retry later") from None
            self._outstanding += 1
            return
        if request.kind == "ping":
            fields: dict[str, Any] = {"time": time.time()}
        elif request.kind == "ops":
            fields = self._ops_reply
        elif request.kind == "stats":
            fields = self.stats()
        else:  # cancel
            withdrawn = self._queue.withdraw(client, request.target or "")
            if withdrawn is not None:
                cancelled = Cancelled("cancelled by the client")
                self._finished(router, withdrawn, encode_error(withdrawn.request.id, self.epoch, cancelled), "cancelled")
            fields = {"cancelled": withdrawn is not None}
        log.debug("%s %s ok", request.kind, request.id)
        self._reply(router, client, encode_reply(request.id, self.epoch, fields), "ok")

    def _admit(self, client: bytes, request: Request) -> Job:
        """A checked job within the connection's credit (taken from it), or the error to answer."""
        if self._stop.is_set():
            raise Busy.shutting_down()
        pipeline = ops.validate_pipeline(request.pipeline)
        now = time.monotonic()
        assert request.payload is not None
        size = len(request.payload)
        if not self._credit.admit(client, request.credit_seq, size, now):
            raise Busy("over this connection's credit (docs/protocol.md, Flow control); retry later")
        deadline = None if request.deadline_ms is None else now + request.deadline_ms / 1000
        return Job(client, request, pipeline, now, deadline, size)

    @staticmethod
    def _light(job: Job) -> bool:
        """Small raw work of a few light steps that cannot grow the image: cheaper here than two thread hand-offs."""
        request = job.request
        assert request.image is not None and request.payload is not None
        return (
            request.image.format == "raw"
            and len(request.payload) <= INLINE_MAX_BYTES
            and len(job.pipeline) <= INLINE_MAX_STEPS
            and not any(o.heavy or o.grows for o, _ in job.pipeline)
        )

    # -- workers --------------------------------------------------------------

    def _work(self) -> None:
        out = self._ctx.socket(zmq.PUSH)
        out.connect(self._results_addr)
        try:
            while (job := self._queue.get()) is not None:
                code, frames = self._execute(job)
                out.send_multipart([code.encode(), job.client, str(job.size).encode(), *frames], copy=False)
        finally:
            out.close(linger=1000)

    def _execute(self, job: Job) -> tuple[str, list[Any]]:
        request = job.request
        started = time.monotonic()
        try:
            if job.deadline is not None and started > job.deadline:
                waited = (started - job.received) * 1000
                raise DeadlineExceeded(f"waited {waited:.0f} ms in the queue, past deadline_ms={request.deadline_ms}")
            assert request.image is not None
            image = decode_image(request.image, request.payload)
            result, findings = ops.run_pipeline(image, job.pipeline, self.limits.max_pixels)
            desc, payload = encode_image(result, request.reply_format or request.image.format)
            fields: dict[str, Any] = {"image": desc.to_wire(), "server_ms": round((time.monotonic() - started) * 1000, 3)}
            if findings:
                fields["results"] = findings
                kinds = ops.result_kinds(job.pipeline, findings)
                if kinds:
                    fields["result_kinds"] = kinds
            log.debug("process %s ok in %.1f ms", request.id, fields["server_ms"])
            return "ok", encode_reply(request.id, self.epoch, fields, payload)
        except ProcessingError as err:
            log.debug("process %s: %s", request.id, err)
            return err.code, encode_error(request.id, self.epoch, err)
        except Exception as exc:
            log.error("process %s failed inside the server:\n%s", request.id, traceback.format_exc())
            bug = InternalError(f"{type(exc).__name__} inside the server (logged); it keeps serving")
            return bug.code, encode_error(request.id, self.epoch, bug)


def serve_until_signalled(server: Server) -> None:
    """Run ``server`` in this (main) thread; SIGTERM and SIGINT stop it gracefully."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    server.serve()
