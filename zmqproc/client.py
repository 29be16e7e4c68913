"""The client library: a DEALER owned by one I/O thread, futures for every request.

``process`` blocks for one result; ``submit`` returns a
:class:`concurrent.futures.Future` so many requests can be in flight. Every
request has a deadline: it ends with its result, a typed
:class:`~zmqproc.errors.ProcessingError` from the server, or
:class:`~zmqproc.errors.RequestTimeout`, never a hang.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .errors import AuthenticationFailed, ConnectionLost, MalformedReply, RequestTimeout
from .images import payload_to_image
from .pipeline import PipelineSpec
from .protocol import Reply
from .security import ClientCurve, HandshakeWatcher
from .session import ClientSession, Pending
from .tunnel import open_tunnels

log = logging.getLogger("zmqproc.client")


@dataclass(frozen=True, slots=True)
class Processed:
    """A ``process`` reply in full: the image plus what the server said about it."""

    image: np.ndarray | bytes
    results: dict[str, Any]
    server_ms: float
    epoch: str | None


def to_processed(reply: Reply) -> Processed:
    header = reply.header
    return Processed(
        payload_to_image(header["image"], reply.payload),
        header.get("results") or {},
        header.get("server_ms", 0.0),
        reply.epoch,
    )


def configure_dealer(sock: zmq.Socket) -> None:
    """Options every zmqproc DEALER uses: queue only to connected servers, heartbeats, no linger."""
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


class Client:
    """Talk to one or more zmqproc servers (several endpoints share the work, no broker)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        timeout: float = 10.0,
        *,
        context: zmq.Context | None = None,
        curve_server_key: str | os.PathLike[str] | None = None,
        curve_client_key: str | os.PathLike[str] | None = None,
        ssh: str | None = None,
        ssh_key: str | None = None,
        ssh_password: str | None = None,
        ssh_backend: str = "auto",
        ssh_known_hosts: str | None = None,
        ssh_accept_new_host_key: bool = False,
    ) -> None:
        """CURVE: ``curve_server_key`` is the server's public key (file or Z85 text), ``curve_client_key`` this client's secret key file."""
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        curve = ClientCurve.load(curve_server_key, curve_client_key)  # key errors before any socket exists
        self.timeout = timeout
        self._ctx = context or zmq.Context.instance()
        self._session = ClientSession()
        self._lock = threading.Lock()
        self._outbox: deque[Pending] = deque()
        self._futures: dict[str, tuple[Future[Any], Callable[[Reply], Any]]] = {}
        self._closed = False
        # ssh="user@host[:port]": each endpoint (as seen from that host) through a tunnel this client owns
        self.tunnels = open_tunnels(
            self.endpoints,
            ssh,
            key=ssh_key,
            password=ssh_password,
            backend=ssh_backend,
            known_hosts=ssh_known_hosts,
            accept_new_host_key=ssh_accept_new_host_key,
            timeout=timeout,
        )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sock = self._ctx.socket(zmq.DEALER)
        configure_dealer(self._sock)
        self._curve: HandshakeWatcher | None = curve.secure(self._sock, len(self.endpoints), self._refused) if curve else None
        for endpoint in [t.local_endpoint for t in self.tunnels] or self.endpoints:
            self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._run, name="zmqproc-client", daemon=True)
        self._thread.start()

    # -- the API ----------------------------------------------------------------

    def submit(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        *,
        reply_format: str | None = None,
        timeout: float | None = None,
        details: bool = False,
    ) -> Future[Any]:
        """Send an image (array: raw, without a copy; bytes: an encoded file) through ``pipeline``.

        The future's result is the processed array (or encoded bytes), or a
        :class:`Processed` with ``details=True``. Do not modify the array until
        the future is done: it is sent without a copy. Cancelling the future
        withdraws the request from the server's queue.
        """
        t = self.timeout if timeout is None else timeout
        convert = to_processed if details else (lambda r: to_processed(r).image)
        return self._submit(lambda now: self._session.process_request(image, pipeline, t, now, reply_format), convert)

    def process(self, image: np.ndarray | bytes, pipeline: PipelineSpec, **kwargs: Any) -> Any:
        """:meth:`submit` and wait: the processed image, or a typed error."""
        return self._wait(self.submit(image, pipeline, **kwargs), kwargs.get("timeout"))

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time to a server, in seconds."""
        started = time.perf_counter()
        self._call("ping", timeout)
        return time.perf_counter() - started

    def ops(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The server's operations with their declared parameters."""
        return self._call("ops", timeout)["ops"]

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The server's counters (requests, ok, errors by code, in flight, queue length, uptime)."""
        header = dict(self._call("stats", timeout))
        for key in ("v", "id", "status"):
            header.pop(key, None)
        return header

    @property
    def epoch(self) -> str | None:
        """The epoch of the server instance that answered last."""
        return self._session.epoch

    @property
    def in_flight(self) -> int:
        return len(self._session)

    def close(self) -> None:
        """Fail what is still pending with ConnectionLost and stop the I/O thread (and the SSH tunnels)."""
        for tunnel in self.tunnels:  # first: the I/O thread may have marked the client closed already
            tunnel.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def _call(self, kind: str, timeout: float | None, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        t = self.timeout if timeout is None else timeout
        future = self._submit(lambda now: self._session.request(kind, fields, None, t, now), lambda r: r.header)
        return self._wait(future, t)

    def _wait(self, future: Future[Any], timeout: float | None) -> Any:
        # The I/O thread ends every future by its deadline; the margin only guards against a dead thread.
        t = self.timeout if timeout is None else timeout
        try:
            return future.result(timeout=t + 5.0)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout) or future.done():
                raise
            raise RequestTimeout(f"no reply within {t} s") from None

    def _submit(self, build: Callable[[float], Pending], convert: Callable[[Reply], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise ConnectionLost("the client is closed")
            pending = build(time.monotonic())
            self._futures[pending.id] = (future, convert)
            self._outbox.append(pending)
        if pending.kind == "process":
            future.add_done_callback(lambda f: f.cancelled() and self._cancel_remote(pending.id))
        self._wake()
        return future

    def _cancel_remote(self, request_id: str) -> None:
        with self._lock:
            if self._closed or self._session.forget(request_id) is None:
                return
            self._futures.pop(request_id, None)
            pending = self._session.request("cancel", {"target": request_id}, None, self.timeout, time.monotonic())
            self._futures[pending.id] = (Future(), lambda r: r.header)
            self._outbox.append(pending)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the client is closing

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self._sock, zmq.POLLIN)
        try:
            while not self._closed:
                with self._lock:
                    deadline = self._session.next_deadline()
                timeout = None if deadline is None else max(0.0, (deadline - time.monotonic()) * 1000)
                events = dict(poller.poll(timeout))
                if self._wake_r.fileno() in events:  # zmq.Poller reports plain sockets by fd
                    while True:
                        try:
                            if not self._wake_r.recv(4096):
                                break
                        except BlockingIOError:
                            break
                if events.get(self._sock, 0) & zmq.POLLIN:
                    self._receive()
                blocked = self._send()
                poller.modify(self._sock, zmq.POLLIN | (zmq.POLLOUT if blocked else 0))
                self._expire()
        except Exception:
            log.exception("client I/O thread failed")
        finally:
            self._shutdown()

    def _send(self) -> bool:
        """Send what is queued; True if the socket could not take everything (no server connected yet)."""
        while True:
            with self._lock:
                if not self._outbox:
                    return False
                pending = self._outbox[0]
                if pending.id not in self._session:  # expired or cancelled before it could be sent
                    self._outbox.popleft()
                    continue
            try:
                self._sock.send_multipart(pending.frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            with self._lock:
                self._outbox.popleft()

    def _receive(self) -> None:
        while True:
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                with self._lock:
                    matched = self._session.receive([f.buffer for f in frames])
                    entry = self._futures.pop(matched[0].id, None) if matched else None
            except MalformedReply as exc:
                log.warning("dropped a malformed reply: %s", exc)
                continue
            if entry is None or matched is None:
                continue
            future, convert = entry
            reply = matched[1]
            error = reply.error
            try:
                _resolve(future, error) if error is not None else _resolve(future, None, convert(reply))
            except Exception as exc:  # a reply that passed decode_reply but whose content is unusable
                _resolve(future, exc)

    def _expire(self) -> None:
        with self._lock:
            expired = self._session.expire(time.monotonic())
            entries = [(p, self._futures.pop(p.id, None)) for p in expired]
        refused = self._curve.refused if self._curve is not None else None
        for pending, entry in entries:
            if entry is None:
                continue
            if refused is not None:  # libzmq does not retry a refused key: waiting longer cannot help
                _resolve(entry[0], AuthenticationFailed(str(refused)))
            else:
                _resolve(entry[0], RequestTimeout(f"no reply to {pending.kind} {pending.id} from {', '.join(self.endpoints)} in time"))

    def _refused(self, error: AuthenticationFailed) -> None:
        """Every endpoint refused the CURVE handshake (called from the watcher's thread): end what waits now."""
        with self._lock:
            waiting = self._session.pending()
            for pending in waiting:
                self._session.forget(pending.id)
            entries = [self._futures.pop(pending.id, None) for pending in waiting]
        for entry in entries:
            if entry is not None:
                _resolve(entry[0], AuthenticationFailed(str(error)))

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._futures.values())
            self._futures.clear()
            self._outbox.clear()
            for pending in self._session.pending():
                self._session.forget(pending.id)
        for future, _ in entries:
            _resolve(future, ConnectionLost("the client was closed before the reply arrived"))
        self._sock.close(linger=0)
        self._wake_r.close()
        self._wake_w.close()


def _resolve(future: Future[Any], error: BaseException | None, result: Any = None) -> None:
    """End a future unless the caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
