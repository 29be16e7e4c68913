"""The viewer's client: ClientSession (sans I/O) moved by a QZmqSocket, with Qt signals for every outcome.

Every request ends exactly once: ``processed`` / ``opsReceived`` or ``failed``
(a typed :class:`~zmqproc.errors.ProcessingError`, RequestTimeout or
ConnectionLost). Deadlines are one single-shot QTimer set to the session's
next deadline; a periodic ping keeps ``state`` fresh (connecting, connected,
slow, lost). ZeroMQ reconnects by itself; when the server comes back with a
new epoch, requests sent before the loss are failed so the user can retry.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq
from PySide6.QtCore import QObject, QTimer, Signal

from ..client import to_processed
from ..errors import Cancelled, ConnectionLost, MalformedReply, RequestTimeout
from ..pipeline import PipelineSpec
from ..session import ClientSession, Pending
from .qt_socket import QZmqSocket

log = logging.getLogger("zmqproc.gui")

CONNECTING, CONNECTED, SLOW, LOST = "connecting", "connected", "slow", "lost"


class QtClient(QObject):
    """Asynchronous zmqproc client for Qt applications (one DEALER, any number of endpoints)."""

    processed = Signal(str, object)  # request id, zmqproc.client.Processed
    failed = Signal(str, object)  # request id, exception
    opsReceived = Signal(object)  # the server's op list
    stateChanged = Signal(str, float)  # state, last ping round trip in seconds (-1 when unknown)
    serverRestarted = Signal(str)  # the new epoch

    def __init__(
        self,
        endpoints: Sequence[str] = (),
        *,
        timeout: float = 60.0,
        ping_interval: float = 1.0,
        slow_after: float = 0.5,
        lost_after: float = 3.0,
        context: zmq.Context | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.timeout = timeout
        self.slow_after = slow_after
        self.lost_after = lost_after
        self.endpoints: list[str] = []
        self.state = CONNECTING
        self.rtt = -1.0
        self._session = ClientSession()
        self._socket = QZmqSocket(context=context, parent=self)
        self._socket.received.connect(self._on_frames)
        self._socket.writable.connect(self._flush)
        self._outbox: deque[Pending] = deque()
        self._sent_at: dict[str, float] = {}
        self._ping_id: str | None = None
        self._last_reply = 0.0
        self._lost_since: float | None = None
        self._deadline_timer = QTimer(self)
        self._deadline_timer.setSingleShot(True)
        self._deadline_timer.timeout.connect(self._expire)
        self._ping_timer = QTimer(self)
        self._ping_timer.setInterval(round(ping_interval * 1000))
        self._ping_timer.timeout.connect(self._on_ping_tick)
        self.set_endpoints(endpoints)

    # -- the API ----------------------------------------------------------------

    @property
    def epoch(self) -> str | None:
        return self._session.epoch

    @property
    def in_flight(self) -> int:
        return len(self._session)

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Connect to these servers instead (requests already sent stay pending until their deadline)."""
        for endpoint in self.endpoints:
            self._socket.disconnect_from(endpoint)
        self.endpoints = list(endpoints)
        for endpoint in self.endpoints:
            self._socket.connect_to(endpoint)
        self._set_state(CONNECTING if self.endpoints else LOST, -1.0)
        if self.endpoints:
            self._ping_timer.start()
            self.ping()
        else:
            self._ping_timer.stop()

    def process(
        self, image: np.ndarray | bytes, pipeline: PipelineSpec, *, reply_format: str | None = None, timeout: float | None = None
    ) -> str:
        """Send an image (array: raw, no copy, do not modify it meanwhile; bytes: an encoded file); its request id."""
        t = self.timeout if timeout is None else timeout
        return self._submit(self._session.process_request(image, pipeline, t, time.monotonic(), reply_format))

    def request_ops(self, timeout: float | None = None) -> str:
        return self._submit(self._session.request("ops", None, None, self.timeout if timeout is None else timeout, time.monotonic()))

    def ping(self) -> str | None:
        """Send a ping unless one is in flight; the reply updates ``state`` and ``rtt``."""
        if self._ping_id is None:
            self._ping_id = self._submit(self._session.request("ping", None, None, self.lost_after, time.monotonic()))
        return self._ping_id

    def cancel(self, request_id: str) -> None:
        """Withdraw a process request: locally if it is not sent yet, else with a ``cancel`` to the server.

        A request the server has not started ends with ``failed(id, Cancelled)``;
        one already running still ends with its result.
        """
        pending = next((p for p in self._outbox if p.id == request_id), None)
        if pending is not None:
            self._session.forget(request_id)
            self._outbox.remove(pending)
            self.failed.emit(request_id, Cancelled("cancelled before it was sent", request_id=request_id))
        elif request_id in self._session:
            self._submit(self._session.request("cancel", {"target": request_id}, None, self.lost_after, time.monotonic()))

    def close(self) -> None:
        """Stop the timers, close the socket and fail what is still pending with ConnectionLost."""
        self._ping_timer.stop()
        self._deadline_timer.stop()
        self._socket.close()
        self._outbox.clear()
        for pending in self._session.pending():
            self._session.forget(pending.id)
            if pending.kind in ("process", "ops"):
                self.failed.emit(pending.id, ConnectionLost("the viewer closed the connection"))

    # -- plumbing -----------------------------------------------------------------

    def _submit(self, pending: Pending) -> str:
        self._outbox.append(pending)
        self._flush()
        self._arm_deadline()
        return pending.id

    def _flush(self) -> None:
        while self._outbox and not self._socket.closed:
            pending = self._outbox[0]
            if pending.id in self._session:
                if not self._socket.send(pending.frames):
                    return  # no server connected yet: retried on ``writable`` or the next ping tick
                self._sent_at[pending.id] = time.monotonic()
            self._outbox.popleft()

    def _on_frames(self, frames: list[zmq.Frame]) -> None:
        old_epoch = self._session.epoch
        try:
            matched = self._session.receive([f.buffer for f in frames])
        except MalformedReply as exc:
            log.warning("dropped a malformed reply: %s", exc)
            return
        now = time.monotonic()
        self._last_reply = now
        if old_epoch is not None and self._session.epoch != old_epoch:
            self._server_restarted()
        if matched is not None:
            self._dispatch(*matched, now)
        if self.state in (CONNECTING, LOST):
            self._set_state(CONNECTED, self.rtt)
        self._arm_deadline()

    def _dispatch(self, pending: Pending, reply: Any, now: float) -> None:
        sent = self._sent_at.pop(pending.id, pending.sent_at)
        if pending.kind == "ping":
            self._ping_id = None
            rtt = now - sent
            self._set_state(SLOW if rtt > self.slow_after else CONNECTED, rtt)
            return
        if pending.kind == "cancel":
            return
        error = reply.error
        if error is not None:
            self.failed.emit(pending.id, error)
        elif pending.kind == "ops":
            self.opsReceived.emit(reply.header.get("ops", []))
        else:
            try:
                result = to_processed(reply)
            except Exception as exc:  # a reply that passed decode_reply but whose content is unusable
                self.failed.emit(pending.id, exc)
                return
            self.processed.emit(pending.id, result)

    def _server_restarted(self) -> None:
        """Requests the old server instance took before it went away will never be answered."""
        self.serverRestarted.emit(self._session.epoch or "")
        if self._lost_since is None:
            return
        for pending in self._session.pending():
            sent = self._sent_at.get(pending.id)
            if pending.kind == "process" and sent is not None and sent < self._lost_since:
                self._session.forget(pending.id)
                self._sent_at.pop(pending.id, None)
                self.failed.emit(pending.id, ConnectionLost("the server restarted before replying; retry"))

    def _expire(self) -> None:
        now = time.monotonic()
        for pending in self._session.expire(now):
            self._sent_at.pop(pending.id, None)
            if pending.kind == "ping":
                self._ping_id = None
                # Replies still flowing mean a busy link, not a lost one.
                self._set_state(SLOW if now - self._last_reply < self.lost_after else LOST, -1.0)
            elif pending.kind != "cancel":
                where = ", ".join(self.endpoints) or "no server"
                self.failed.emit(pending.id, RequestTimeout(f"no reply to {pending.kind} from {where} in time"))
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        deadline = self._session.next_deadline()
        if deadline is None:
            self._deadline_timer.stop()
        else:
            self._deadline_timer.start(max(0, round((deadline - time.monotonic()) * 1000) + 1))

    def _on_ping_tick(self) -> None:
        self._flush()
        self.ping()

    def _set_state(self, state: str, rtt: float) -> None:
        if state == LOST and self._lost_since is None:
            self._lost_since = time.monotonic()
        elif state in (CONNECTED, SLOW):
            self._lost_since = None
        changed = state != self.state or rtt != self.rtt
        self.state, self.rtt = state, rtt
        if changed:
            self.stateChanged.emit(state, rtt)
