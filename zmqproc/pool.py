"""The server's worker processes: jobs run where they can be stopped (killed and replaced), pixels pass through shared memory.

Each worker is a process forked by a forkserver that has imported OpenCV once,
so a replacement is ready in milliseconds. Per worker, the pool keeps an input
segment and output segments (``memfd`` files mapped by both processes, sent
once over the worker's pipe with SCM_RIGHTS; nothing is named in /dev/shm, so
nothing leaks when a process is killed). A job costs one copy in (the request's
frame into the input segment) and one copy out (the worker writes its result
into an output segment); the reply frame is sent from that segment without a
copy, and the segment is reused once libzmq has let go of it (:meth:`release`).

Nothing here decides: the server core says what to start and what to stop; the
pool reports what finished and which worker died (:meth:`events`). It never
blocks on a worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import os
from dataclasses import dataclass
from multiprocessing import reduction
from typing import Any

import numpy as np

from . import plugins, work
from .errors import error_from_wire

log = logging.getLogger("zmqproc.pool")

CACHE_MAX_BYTES = 8 << 20  # a segment up to this size is kept for the next job (a 1080p BGR frame is 6.2 MB); larger ones go
SPARE_OUTPUTS = 2  # free output segments kept per worker (one may still be on its way to a client)
MIN_SEGMENT = 64 * 1024


def tune_malloc() -> None:
    """Return freed big buffers to the OS at once: glibc's dynamic mmap threshold otherwise keeps up to 32 MiB chunks on the heap."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 256 * 1024)
    libc.mallopt(m_trim_threshold, 1 << 20)


# -- the worker process ----------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection, opencv_threads: int) -> None:
    import cv2

    tune_malloc()
    cv2.setNumThreads(opencv_threads)
    segments: dict[int, mmap.mmap] = {}
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "map":
            _, seg_id, size = message
            fd = reduction.recv_handle(conn)
            segments[seg_id] = mmap.mmap(fd, size)
            os.close(fd)
        elif message[0] == "unmap":
            segments.pop(message[1]).close()
        else:
            _, job_id, spec, in_id, in_len, out_id, out_size = message
            conn.send(("done", job_id, *_run(spec, memoryview(segments[in_id])[:in_len].toreadonly(), segments[out_id], out_size)))


def _run(spec: work.Spec, payload: memoryview, out: mmap.mmap, out_size: int) -> tuple[Any, ...]:
    outcome = work.run(spec, payload)
    if outcome.code != "ok":
        assert outcome.error is not None
        return outcome.code, outcome.error.to_wire(), outcome.traceback
    n = work.result_bytes(outcome.result)
    if n > out_size:  # an encoded reply larger than its estimate: through the pipe
        return "ok", outcome.fields, ("bytes", bytes(outcome.result))
    target = np.ndarray((n,), np.uint8, buffer=out)
    target[:] = np.ascontiguousarray(outcome.result).reshape(-1).view(np.uint8)
    del target, payload  # no view of a segment may outlive the job: the parent may unmap it next
    return "ok", outcome.fields, ("segment", n)


# -- the parent's side -----------------------------------------------------------------------


class Segment:
    """A memfd mapped here and in one worker."""

    __slots__ = ("id", "size", "fd", "mm", "sending")

    def __init__(self, seg_id: int, size: int) -> None:
        self.id, self.size = seg_id, size
        self.fd = os.memfd_create(f"zmqproc-{seg_id}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size)
        self.sending = False

    def close(self) -> bool:
        """Unmap; False while a reply frame still exports the buffer (try again later)."""
        try:
            self.mm.close()
        except BufferError:
            return False
        os.close(self.fd)
        return True


@dataclass(slots=True)
class Finished:
    """A job's outcome; ``segment``: the reply's bytes are ``segment.mm[:nbytes]``, to :meth:`WorkerPool.release` once sent."""

    job: int
    outcome: work.Outcome
    segment: Segment | None = None


@dataclass(slots=True)
class Died:
    """The worker running ``job`` (None: an idle one) ended without answering; ``exitcode`` is -N for signal N."""

    job: int | None
    exitcode: int | None


class _Worker:
    def __init__(self, proc: Any, conn: multiprocessing.connection.Connection) -> None:
        self.proc, self.conn = proc, conn
        self.ready = False
        self.job: int | None = None
        self.killed = False
        self.input: Segment | None = None
        self.outputs: list[Segment] = []
        self.job_output: Segment | None = None


class WorkerPool:
    """``size`` worker processes; :meth:`submit` to an idle one, :meth:`events` for what happened, :meth:`kill` to stop a job."""

    def __init__(self, size: int, opencv_threads: int = 1) -> None:
        self.size = size
        self.opencv_threads = opencv_threads
        self._ctx = multiprocessing.get_context("forkserver")
        # The forkserver imports these once; each worker forked from it has OpenCV loaded, __main__'s own ops and the
        # plugin ops this process loaded (zmqproc.worker_ops reads them from the environment the forkserver inherits).
        os.environ[plugins.WORKER_ENV] = plugins.for_workers()
        self._ctx.set_forkserver_preload(["__main__", "cv2", "zmqproc.pool", "zmqproc.worker_ops"])
        self._workers: list[_Worker] = []
        self._next_segment = 0
        self._closing: list[Segment] = []  # unmapped once their last reply frame is gone
        self.started = 0  # workers started, replacements included

    def start(self) -> None:
        for _ in range(self.size):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.opencv_threads), name="zmqproc-worker", daemon=True)
        proc.start()
        child.close()
        self.started += 1
        return _Worker(proc, parent)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def fds(self) -> list[int]:
        """What to poll: each worker's pipe and its process sentinel."""
        return [fd for w in self._workers for fd in (w.conn.fileno(), w.proc.sentinel)]

    def idle(self) -> int:
        return sum(1 for w in self._workers if w.ready and w.job is None)

    def submit(self, job: int, spec: work.Spec, payload: Any, reply_bytes: int) -> None:
        """Copy ``payload`` into an idle worker's input segment and start ``job`` there (call only while :meth:`idle`)."""
        worker = next(w for w in self._workers if w.ready and w.job is None)
        data = memoryview(payload).cast("B")
        if worker.input is None or worker.input.size < len(data):
            self._unmap(worker, worker.input)
            worker.input = self._map(worker, max(MIN_SEGMENT, len(data)))
        worker.input.mm[: len(data)] = data
        out = next((s for s in worker.outputs if not s.sending and s.size >= reply_bytes), None)
        if out is None:
            out = self._map(worker, max(MIN_SEGMENT, reply_bytes))
            worker.outputs.append(out)
        worker.job, worker.job_output = job, out
        with contextlib.suppress(OSError):  # it died since the last events(): the next one reports the job's worker dead
            worker.conn.send(("job", job, spec, worker.input.id, len(data), out.id, out.size))

    def kill(self, job: int) -> None:
        """Stop ``job`` now: SIGKILL its worker (replaced once reaped by :meth:`events`)."""
        for worker in self._workers:
            if worker.job == job and not worker.killed:
                worker.killed = True
                worker.proc.kill()

    def release(self, segment: Segment) -> None:
        """libzmq has let go of a reply sent from ``segment``: it may take the next job's result."""
        segment.sending = False
        owner = next((w for w in self._workers if segment in w.outputs), None)
        if owner is None:
            self._retire(segment)
        else:
            self._trim(owner)

    def events(self) -> list[Finished | Died]:
        """What the workers did since the last call (never blocks)."""
        found: list[Finished | Died] = []
        for i, worker in enumerate(self._workers):
            while not worker.killed and worker.conn.poll(0):
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "ready":
                    worker.ready = True
                else:
                    found.append(self._finished(worker, message))
            if worker.proc.exitcode is not None or (worker.killed and not worker.proc.is_alive()):
                if not worker.killed or worker.job is not None:
                    found.append(Died(worker.job, worker.proc.exitcode))
                self._replace(i)
        self._closing = [s for s in self._closing if not s.close()]
        return found

    def _finished(self, worker: _Worker, message: tuple[Any, ...]) -> Finished:
        _, job, code, fields_or_error, extra = message
        out, worker.job, worker.job_output = worker.job_output, None, None
        if code != "ok":
            self._trim(worker)
            return Finished(job, work.Outcome(code, error=error_from_wire(fields_or_error), traceback=extra))
        kind, value = extra
        if kind == "bytes":
            self._trim(worker)
            return Finished(job, work.Outcome("ok", fields_or_error, value))
        assert out is not None
        out.sending = True
        return Finished(job, work.Outcome("ok", fields_or_error, memoryview(out.mm)[:value]), out)

    def _replace(self, i: int) -> None:
        old = self._workers[i]
        old.proc.join(0)
        old.conn.close()
        for segment in [old.input, *old.outputs]:
            if segment is not None:
                self._retire(segment)
        self._workers[i] = self._spawn()

    def _map(self, worker: _Worker, size: int) -> Segment:
        self._next_segment += 1
        segment = Segment(self._next_segment, size)
        worker.conn.send(("map", segment.id, size))
        reduction.send_handle(worker.conn, segment.fd, worker.proc.pid)
        return segment

    def _unmap(self, worker: _Worker, segment: Segment | None) -> None:
        if segment is not None:
            worker.conn.send(("unmap", segment.id))
            self._retire(segment)

    def _retire(self, segment: Segment) -> None:
        if segment.sending or not segment.close():
            self._closing.append(segment)

    def _trim(self, worker: _Worker) -> None:
        """Keep the input segment and a few free output segments up to CACHE_MAX_BYTES each; unmap the rest."""
        if worker.input is not None and worker.input.size > CACHE_MAX_BYTES and worker.job is None:
            self._unmap(worker, worker.input)
            worker.input = None
        spare = 0
        for segment in list(worker.outputs):
            if segment.sending or segment is worker.job_output:
                continue
            spare += 1
            if segment.size > CACHE_MAX_BYTES or spare > SPARE_OUTPUTS:
                worker.outputs.remove(segment)
                self._unmap(worker, segment)

    def close(self) -> None:
        for worker in self._workers:
            worker.proc.kill()
        for worker in self._workers:
            worker.proc.join(5)
            worker.conn.close()
            for segment in [worker.input, *worker.outputs]:
                if segment is not None:
                    self._retire(segment)
        self._workers.clear()
