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
blocks on a worker, and no fault of a worker reaches its caller: a worker that
dies, or whose pipe breaks, at any moment (starting, being given a job or a
segment, running, answering) is reported once as :class:`Died` and replaced.
A worker dies with the forkserver it was forked from, and the forkserver with
the server, so a killed server leaves no worker computing.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing import reduction
from typing import Any

import numpy as np

from ..errors import InternalError, error_from_wire
from ..ops import plugins
from . import work

log = logging.getLogger("zmqproc.server.pool")

CACHE_MAX_BYTES = 8 << 20  # a segment up to this size is kept for the next job (a 1080p BGR frame is 6.2 MB); larger ones go
SPARE_OUTPUTS = 2  # free output segments kept per worker (one may still be on its way to a client)
MIN_SEGMENT = 64 * 1024
RESPAWN_DELAY_S = 0.1  # a worker that could not be started is tried again this much later
PR_SET_PDEATHSIG = 1


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


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the forkserver) ends: a worker never outlives the server it works for.

    The forkserver ends when the last holder of its "alive" pipe's write end does;
    multiprocessing hands that end to every child (so that it could fork more), and
    a worker holding it would keep its forkserver, and so itself, alive forever
    after the server died. A worker forks nothing: it lets go of it.
    """
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # a private attribute of multiprocessing (3.8-3.13); test_worker_faults holds it
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


def _worker_main(conn: multiprocessing.connection.Connection, opencv_threads: int) -> None:
    _die_with_parent()
    tune_malloc()
    work.set_opencv_threads(opencv_threads)
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
            _unmap(segments.pop(message[1]))
        else:
            _, job_id, spec, in_id, in_len, out_id, out_size = message
            conn.send(("done", job_id, *_run(spec, memoryview(segments[in_id])[:in_len].toreadonly(), segments[out_id], out_size)))


def _unmap(segment: mmap.mmap) -> None:
    """Unmap now if nothing views the segment any more; else (an op kept a view) when the last view goes."""
    try:
        segment.close()
    except BufferError:
        gc.collect()  # a view held only by a reference cycle
        try:
            segment.close()
        except BufferError:
            log.warning("a view of a finished job's pixels is still held (by an op?): unmapped when it is let go")


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
        try:
            os.ftruncate(self.fd, size)
            self.mm = mmap.mmap(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise
        self.sending = False

    def close(self) -> bool:
        """Unmap and close (once; again is a no-op); False while a reply frame still exports the buffer (try again later)."""
        if self.fd < 0:
            return True
        try:
            self.mm.close()
        except BufferError:
            return False
        os.close(self.fd)
        self.fd = -1
        return True


@dataclass(slots=True)
class Finished:
    """A job's outcome; ``segment``: the reply's bytes are ``segment.mm[:nbytes]``, to :meth:`WorkerPool.release` once sent."""

    job: int
    outcome: work.Outcome
    segment: Segment | None = None


@dataclass(slots=True)
class Died:
    """The worker holding ``job`` (None: an idle one) ended without answering; ``exitcode`` is -N for signal N.

    ``delivered`` False: its pipe was already broken when the job was given, so the job never ran.
    """

    job: int | None
    exitcode: int | None
    delivered: bool = True


class _Worker:
    def __init__(self, proc: Any, conn: multiprocessing.connection.Connection) -> None:
        self.proc, self.conn = proc, conn
        self.ready = False
        self.job: int | None = None
        self.delivered = False  # the job's message went down the pipe
        self.killed = False  # by the pool (a stopped job, or a broken pipe): nothing more is read from it
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
        # plugin ops this process loaded (zmqproc.ops.preload reads them from the environment the forkserver inherits).
        os.environ[plugins.WORKER_ENV] = plugins.for_workers()
        self._ctx.set_forkserver_preload(["__main__", "cv2", "zmqproc.server.pool", "zmqproc.ops.preload"])
        self._workers: list[_Worker] = []
        self._missing = 0  # workers that could not be started yet
        self._respawn_at = 0.0
        self._found: list[Finished | Died] = []  # events met outside events(), reported by the next call
        self._next_segment = 0
        self._closing: list[Segment] = []  # unmapped once their last reply frame is gone
        self.started = 0  # workers started, replacements included
        self.generation = 0  # changes whenever the set of workers (and so fds()) changes

    def start(self) -> None:
        self._missing = self.size
        self._fill()

    def _fill(self) -> None:
        while self._missing and time.monotonic() >= self._respawn_at:
            worker = self._spawn()
            if worker is None:
                self._respawn_at = time.monotonic() + RESPAWN_DELAY_S
                return
            self._workers.append(worker)
            self._missing -= 1

    def _spawn(self) -> _Worker | None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.opencv_threads), name="zmqproc-worker", daemon=True)
        try:
            proc.start()
        except Exception as exc:  # the forkserver is gone or going (multiprocessing starts a new one next time)
            log.warning("a worker could not be started (%s: %s); trying again", type(exc).__name__, exc)
            parent.close()
            return None
        finally:
            child.close()
        self.started += 1
        self.generation += 1
        return _Worker(proc, parent)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def fds(self) -> list[int]:
        """What to poll: each worker's pipe and its process sentinel."""
        return [fd for w in self._workers for fd in (w.conn.fileno(), w.proc.sentinel)]

    def due_in(self) -> float | None:
        """Seconds until :meth:`events` has something to report or do although no worker's descriptor is ready (None: never)."""
        if self._found:
            return 0.0
        return max(0.0, self._respawn_at - time.monotonic()) if self._missing else None

    def idle(self) -> int:
        return sum(1 for w in self._workers if w.ready and w.job is None)

    def submit(self, job: int, spec: work.Spec, payload: Any, reply_bytes: int) -> None:
        """Copy ``payload`` into an idle worker's input segment and start ``job`` there (call only while :meth:`idle`)."""
        worker = next(w for w in self._workers if w.ready and w.job is None)
        worker.job, worker.delivered = job, False
        data = memoryview(payload).cast("B")
        try:
            if worker.input is None or worker.input.size < len(data):
                self._unmap(worker, worker.input)
                worker.input = self._map(worker, max(MIN_SEGMENT, len(data)))
                if worker.input is None:
                    return
            worker.input.mm[: len(data)] = data
            out = next((s for s in worker.outputs if not s.sending and s.size >= reply_bytes), None)
            if out is None:
                out = self._map(worker, max(MIN_SEGMENT, reply_bytes))
                if out is None:
                    return
                worker.outputs.append(out)
        except OSError as exc:  # memfd_create, ftruncate or mmap: no memory or descriptors for a segment
            worker.job = None
            error = InternalError(f"the server could not make shared memory for it ({exc.strerror}); it keeps serving")
            self._found.append(Finished(job, work.Outcome(error.code, error=error)))
            return
        worker.job_output = out
        worker.delivered = self._tell(worker, ("job", job, spec, worker.input.id, len(data), out.id, out.size))

    def kill(self, job: int) -> None:
        """Stop ``job`` now: SIGKILL its worker (replaced once reaped by :meth:`events`)."""
        for worker in self._workers:
            if worker.job == job:
                self._drop(worker)

    def release(self, segment: Segment) -> None:
        """libzmq has let go of a reply sent from ``segment``: it may take the next job's result."""
        segment.sending = False
        owner = next((w for w in self._workers if segment in w.outputs), None)
        if owner is None:
            self._retire(segment)
        else:
            self._trim(owner)

    def events(self) -> list[Finished | Died]:
        """What the workers did since the last call (never blocks, never raises for a worker's fault)."""
        found, self._found = self._found, []
        alive = []
        for worker in self._workers:
            while not worker.killed and worker.conn.poll(0):
                try:
                    message = worker.conn.recv()
                except Exception:  # EOF, a reset, or half a message: it died while answering
                    self._drop(worker)
                    break
                if message[0] == "ready":
                    worker.ready = True
                else:
                    found.append(self._finished(worker, message))
            if worker.proc.exitcode is None:
                alive.append(worker)
                continue
            found.append(Died(worker.job, worker.proc.exitcode, worker.job is None or worker.delivered))
            self._bury(worker)
        self._workers = alive
        self._fill()
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

    def _tell(self, worker: _Worker, message: tuple[Any, ...], fd: int | None = None) -> bool:
        """Send ``message`` (and ``fd``) down the worker's pipe; False (and the worker dropped) if the pipe is broken."""
        try:
            worker.conn.send(message)
            if fd is not None:
                reduction.send_handle(worker.conn, fd, worker.proc.pid)
        except (OSError, EOFError):  # BrokenPipeError, ConnectionResetError: it died, or is dying
            self._drop(worker)
            return False
        return True

    def _drop(self, worker: _Worker) -> None:
        """SIGKILL a worker whose job is stopped or whose pipe broke; :meth:`events` reports and replaces it once reaped."""
        if not worker.killed:
            worker.killed = True
            worker.proc.kill()

    def _bury(self, worker: _Worker) -> None:
        """A reaped worker's pipe and segments go; a replacement is started by :meth:`_fill`."""
        self._release(worker, 0)
        self._missing += 1
        self.generation += 1

    def _release(self, worker: _Worker, wait_s: float) -> None:
        """Reap a killed or dead worker (waiting at most ``wait_s``), close its pipe, retire its segments."""
        worker.proc.join(wait_s)
        worker.conn.close()
        for segment in [worker.input, *worker.outputs]:
            if segment is not None:
                self._retire(segment)

    def _map(self, worker: _Worker, size: int) -> Segment | None:
        """A new segment mapped in ``worker`` too; None if the worker turned out to be gone (it is dropped)."""
        self._next_segment += 1
        segment = Segment(self._next_segment, size)
        if not self._tell(worker, ("map", segment.id, size), segment.fd):
            segment.close()
            return None
        return segment

    def _unmap(self, worker: _Worker, segment: Segment | None) -> None:
        if segment is not None:
            self._tell(worker, ("unmap", segment.id))
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
            self._release(worker, 5)
        self._workers.clear()
