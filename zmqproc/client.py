"""The client library: a DEALER owned by one I/O thread, futures for every request.

``process`` blocks for one result; ``submit`` returns a
:class:`concurrent.futures.Future` so many requests can be in flight. Every
request has a deadline: it ends with its result, a typed
:class:`~zmqproc.errors.ProcessingError` from the server, or
:class:`~zmqproc.errors.RequestTimeout`, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from .endpoints import check as check_endpoint
from .errors import AuthenticationFailed, ConnectionLost, MalformedReply, RequestTimeout, TunnelError
from .images import payload_to_image
from .pipeline import PipelineSpec
from .protocol import Reply
from .security import ClientCurve, refusal
from .session import ClientSession, Pending
from .zmqflags import NOBLOCK, POLLIN, POLLOUT, readable

if TYPE_CHECKING:
    from .tunnel import Tunnel

log = logging.getLogger("zmqproc.client")


@dataclass(frozen=True, slots=True)
class Processed:
    """A ``process`` reply in full: the image plus what the server said about it."""

    image: np.ndarray | bytes
    results: dict[str, Any]
    server_ms: float
    epoch: str | None
    result_kinds: dict[str, str] = field(default_factory=dict)  # result key -> boxes, points or polygons


def to_processed(reply: Reply) -> Processed:
    header = reply.header
    return Processed(
        payload_to_image(header["image"], reply.payload),
        header.get("results") or {},
        header.get("server_ms", 0.0),
        reply.epoch,
        header.get("result_kinds") or {},
    )


def configure_dealer(sock: zmq.Socket) -> None:
    """Options every zmqproc DEALER uses: queue only to connected servers, heartbeats, no linger."""
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


@dataclass(slots=True)
class _Link:
    """One connection of the client: a DEALER to one endpoint and the monitor reporting its state."""

    endpoint: str
    sock: zmq.Socket
    monitor: zmq.Socket
    blocked: bool = False  # the last send would have blocked: wait for POLLOUT
    refused: AuthenticationFailed | None = None  # a final answer: the key or the mechanism is refused
    # A CURVE handshake the peer cut short: a wrong server key looks exactly like a server still starting
    # (docker-proxy accepts, then closes), and libzmq retries; it is named as the cause if the deadline passes.
    cut_short: AuthenticationFailed | None = None


_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class Client:
    """Talk to one or more zmqproc servers (several endpoints share the work, no broker).

    Each endpoint gets its own DEALER, so the client knows which server holds
    which request: work goes to the least-loaded live server; a dropped
    connection, a restarted server (new ``epoch``) or a server that stops
    answering its liveness ping has its requests sent again (to another server
    when there is one) while their deadlines allow. ``resent`` counts them.

    Whoever waits drives the sockets (leader/followers): a thread blocked in
    :meth:`process`, :meth:`ping`, ... sends, polls and receives itself while no
    other thread does, so a lone caller pays no thread hand-off; the client's own
    thread drives while futures from :meth:`submit` wait with nobody blocked on
    them. Only the thread holding the I/O lock touches a socket.
    """

    heartbeat = 1.0  # seconds of silence, with work out on a connection, before a liveness ping

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
        ssh_key_passphrase: str | None = None,
        ssh_backend: str = "auto",
        ssh_known_hosts: str | None = None,
        ssh_accept_new_host_key: bool = False,
    ) -> None:
        """CURVE: ``curve_server_key`` is the server's public key (file or Z85 text), ``curve_client_key`` this client's secret key file."""
        self.endpoints = [check_endpoint(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)]
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        curve = ClientCurve.load(curve_server_key, curve_client_key)  # key errors before any socket exists
        self.timeout = timeout
        self._ctx = context or zmq.Context.instance()
        self._session = ClientSession(routes=len(self.endpoints))
        self._lock = threading.Lock()  # guards the session and the futures
        self._io = threading.Lock()  # held by the one thread that drives the sockets
        self._driver: int | None = None  # that thread's ident (futures' callbacks run on it)
        self._driver_wanted = threading.Condition(self._lock)
        self._futures: dict[str, tuple[Future[Any], Callable[[Reply], Any]]] = {}
        self._closed = False
        # ssh="user@host[:port]": each endpoint (as seen from that host) through a tunnel this client owns
        self.tunnels: list[Tunnel] = []
        if ssh:
            from .tunnel import open_tunnels  # paramiko loads only for SSH users: a health probe stays light

            self.tunnels = open_tunnels(
                self.endpoints,
                ssh,
                key=ssh_key,
                password=ssh_password,
                key_passphrase=ssh_key_passphrase,
                backend=ssh_backend,
                known_hosts=ssh_known_hosts,
                accept_new_host_key=ssh_accept_new_host_key,
                timeout=timeout,
            )
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._links: list[_Link] = []
        for endpoint in [t.local_endpoint for t in self.tunnels] or self.endpoints:
            sock = self._ctx.socket(zmq.DEALER)
            configure_dealer(sock)
            if curve is not None:
                curve.secure(sock)
            monitor = sock.get_monitor_socket(_EVENTS)
            sock.connect(endpoint)
            self._links.append(_Link(endpoint, sock, monitor))
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
        future = self._process_future(image, pipeline, reply_format, timeout, details, cancellable=True)
        self._hand_over()
        return future

    def process(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        *,
        reply_format: str | None = None,
        timeout: float | None = None,
        details: bool = False,
    ) -> Any:
        """Send and wait (see :meth:`submit`): the processed image, or a typed error."""
        return self._wait(self._process_future(image, pipeline, reply_format, timeout, details, cancellable=False), timeout)

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

    @property
    def connected(self) -> list[str]:
        """The endpoints whose connection is up now (handshake done, not dropped since)."""
        if self._io.acquire(blocking=False):  # nobody drives the sockets: read what the monitors reported meanwhile
            try:
                if not self._closed:
                    for route, link in enumerate(self._links):
                        self._on_monitor(route, link, time.monotonic())
            finally:
                self._io.release()
        with self._lock:
            return [endpoint for endpoint, route in zip(self.endpoints, self._session.routes, strict=True) if route.up]

    @property
    def resent(self) -> int:
        """Requests sent again after a lost connection, a server restart or a silent server."""
        return self._session.resent

    def close(self) -> None:
        """Fail what is still pending with ConnectionLost and stop the I/O thread (and the SSH tunnels)."""
        for tunnel in self.tunnels:  # first: the I/O thread may have marked the client closed already
            tunnel.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._driver_wanted.notify()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def _process_future(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        reply_format: str | None,
        timeout: float | None,
        details: bool,
        cancellable: bool,
    ) -> Future[Any]:
        t = self.timeout if timeout is None else timeout
        convert = to_processed if details else (lambda r: to_processed(r).image)
        return self._submit(lambda now: self._session.process_request(image, pipeline, t, now, reply_format), convert, cancellable)

    def _call(self, kind: str, timeout: float | None, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        t = self.timeout if timeout is None else timeout
        future = self._submit(lambda now: self._session.request(kind, fields, None, t, now), lambda r: r.header)
        return self._wait(future, t)

    def _wait(self, future: Future[Any], timeout: float | None) -> Any:
        """Drive the sockets until ``future`` is done, unless another thread drives them already."""
        if self._driver == threading.get_ident():  # a blocking call from a done-callback of the driving thread
            self._drive(until=future)
        elif self._io.acquire(blocking=False):
            try:
                self._drive(until=future)
            finally:
                self._io.release()
                self._hand_over(wake=False)
        else:
            self._wake()  # the driving thread sends this request at once
        # Every future ends by its deadline (whoever drives expires it); the margin only guards against a dead thread.
        t = self.timeout if timeout is None else timeout
        try:
            return future.result(timeout=t + 5.0)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout) or future.done():
                raise
            raise RequestTimeout(f"no reply within {t} s") from None

    def _hand_over(self, wake: bool = True) -> None:
        """Futures wait and nobody may be driving: let the client's thread drive (and wake the one that does)."""
        with self._lock:
            if self._futures and not self._closed:
                self._driver_wanted.notify()
        if wake:
            self._wake()

    def _submit(self, build: Callable[[float], Pending], convert: Callable[[Reply], Any], cancellable: bool = False) -> Future[Any]:
        """Register a request and its future; cancelling a ``cancellable`` future withdraws the request from the server."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise ConnectionLost("the client is closed")
            pending = build(time.monotonic())
            self._futures[pending.id] = (future, convert)
        if cancellable:
            future.add_done_callback(lambda f: self._cancel_remote(pending.id) if f.cancelled() else None)
        return future

    def _cancel_remote(self, request_id: str) -> None:
        with self._lock:
            withdrawn = self._session.forget(request_id)
            if self._closed or withdrawn is None:
                return
            self._futures.pop(request_id, None)
            if withdrawn.route is None:
                return  # never sent: nothing to withdraw on a server
            cancel = self._session.request("cancel", {"target": request_id}, None, self.timeout, time.monotonic(), internal=True)
            cancel.route = withdrawn.route  # a cancel only reaches the connection that carried the request
            self._driver_wanted.notify()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a wake-up is already pending, or the client is closing
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        """The client's thread: drives the sockets while futures wait and no caller drives them."""
        try:
            while True:
                with self._lock:
                    while not self._closed and not self._futures:
                        self._driver_wanted.wait()
                    if self._closed:
                        break
                with self._io:
                    self._drive(until=None)
        except Exception:
            log.exception("client I/O thread failed")
        finally:
            with self._io:
                self._shutdown()

    def _drive(self, until: Future[Any] | None) -> None:
        """I/O turns until ``until`` is done, or (None) until no future waits; the caller holds ``_io``."""
        outer, self._driver = self._driver, threading.get_ident()
        try:
            while self._needed(until):
                self._turn(until)
        finally:
            self._driver = outer

    def _needed(self, until: Future[Any] | None) -> bool:
        return not self._closed and (not until.done() if until is not None else bool(self._futures))

    def _turn(self, until: Future[Any] | None) -> None:
        """One turn: send what waits, wait for sockets (within the nearest deadline), receive, send, expire."""
        self._send()
        if not self._needed(until):  # sending can end it (a refused client fails at once): then do not wait
            return
        wake = self._wake_r.fileno()
        items: list[tuple[Any, int]] = [(wake, POLLIN)]
        for link in self._links:
            items.append((link.sock, POLLIN | POLLOUT if link.blocked else POLLIN))
            items.append((link.monitor, POLLIN))
        events: dict[Any, int] = dict(zmq.zmq_poll(items, self._poll_timeout()))
        if wake in events:
            self._drain_wake()
        now = time.monotonic()
        for route, link in enumerate(self._links):
            if link.monitor in events:
                self._on_monitor(route, link, now)
            flags = events.get(link.sock, 0)
            if flags & POLLIN:
                self._receive(route, link)
            if flags & POLLOUT:
                link.blocked = False
        self._liveness(now)
        self._send()
        self._expire()

    def _poll_timeout(self) -> int:
        with self._lock:
            deadline = self._session.next_deadline()
            busy = any(route.assigned for route in self._session.routes)
        if busy:  # liveness checks are due while work is out
            deadline = min(deadline or float("inf"), time.monotonic() + self.heartbeat / 2)
        return -1 if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))

    def _drain_wake(self) -> None:
        while True:
            try:
                if not self._wake_r.recv(4096):
                    return
            except BlockingIOError:
                return

    def _on_monitor(self, route: int, link: _Link, now: float) -> None:
        while True:
            try:
                event = recv_monitor_message(link.monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            with self._lock:
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    link.refused = link.cut_short = None
                    self._session.route_up(route, now)
                    self._session.liveness_ping(route, 3 * self.heartbeat, now)  # its reply brings the connection's credit
                elif kind == zmq.EVENT_DISCONNECTED:
                    orphans = self._session.route_down(route)
                    if orphans:
                        log.info("%s disconnected: %d requests will be sent again", link.endpoint, len(orphans))
                elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                    # the key is not in the allow-list, or one side uses CURVE and the other does not
                    link.refused = link.refused or refusal(link.endpoint, kind, event["value"], link.sock.mechanism == zmq.CURVE)
                    self._session.route_down(route)
                elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and link.sock.mechanism == zmq.CURVE:
                    link.cut_short = refusal(link.endpoint, kind, event["value"])

    def _liveness(self, now: float) -> None:
        """A ping on each connection that has work out and has been silent for ``heartbeat``."""
        with self._lock:
            for route in range(len(self._links)):
                if self._session.needs_ping(route, now, self.heartbeat):
                    self._session.liveness_ping(route, 3 * self.heartbeat, now)

    def _send(self) -> None:
        """Send what waits: pinned requests (pings, cancels) on their connection, others on the least-loaded live one.

        When every server refused this client's CURVE key, what waits fails at once: libzmq does not retry.
        """
        refused = [link.refused for link in self._links if link.refused]
        if len(refused) == len(self._links):
            self._fail_all(refused[0])
            return
        with self._lock:
            waiting = self._session.unsent()
        full: list[int] = []
        for pending in waiting:
            route = pending.route if pending.route is not None else self._pick(full, pending)
            if route is None or route in full:
                continue
            link = self._links[route]
            try:
                link.sock.send_multipart(self._session.frames(pending, time.monotonic(), route), flags=NOBLOCK, copy=False)
            except zmq.Again:
                link.blocked = True
                full.append(route)
                continue
            with self._lock:
                if pending.id in self._session:
                    self._session.sent(pending, route, time.monotonic())

    def _pick(self, full: list[int], pending: Pending) -> int | None:
        size = pending.size if pending.kind == "process" else None
        with self._lock:
            return self._session.pick_route(exclude=[i for i, link in enumerate(self._links) if link.blocked] + full, size=size)

    def _receive(self, route: int, link: _Link) -> None:
        while readable(link.sock):
            frames = link.sock.recv_multipart(flags=NOBLOCK, copy=False)
            try:
                with self._lock:
                    matched = self._session.receive([f.buffer for f in frames], route, time.monotonic())
                    entry = self._futures.pop(matched[0].id, None) if matched else None
            except MalformedReply as exc:
                log.warning("dropped a malformed reply from %s: %s", link.endpoint, exc)
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
            entries = []
            for pending in expired:
                if pending.internal and pending.kind == "ping" and pending.route is not None:
                    moved = self._session.route_silent(pending.route)
                    if moved:
                        log.info("%s does not answer: %d requests move on", self._links[pending.route].endpoint, len(moved))
                entries.append((pending, self._futures.pop(pending.id, None)))
        dead = self._dead_tunnel() if entries and self.tunnels else None
        for pending, entry in entries:
            if entry is None:
                continue
            where = "" if pending.route is None else f" from {self.endpoints[pending.route]}"
            timeout = RequestTimeout(f"no reply to {pending.kind} {pending.id}{where} in time ({pending.sends} sends)")
            links = self._links if pending.route is None else [self._links[pending.route]]
            cut_short = next((link.cut_short for link in links if link.cut_short), None)
            _resolve(entry[0], dead or cut_short or timeout)

    def _dead_tunnel(self) -> TunnelError | None:
        """Why no reply came, when an SSH tunnel died: a clearer error than the timeout."""
        for tunnel in self.tunnels:
            try:
                tunnel.check()
            except TunnelError as dead:
                return dead
        return None

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            waiting = self._session.pending()
            for pending in waiting:
                self._session.forget(pending.id)
            entries = [self._futures.pop(p.id, None) for p in waiting]
        for entry in entries:
            if entry is not None:
                _resolve(entry[0], error)

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._fail_all(ConnectionLost("the client was closed before the reply arrived"))
        for link in self._links:
            link.sock.disable_monitor()
            link.monitor.close(linger=0)
            link.sock.close(linger=0)
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
