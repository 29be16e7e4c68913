"""The viewer's client: ClientSession (sans I/O) moved by QZmqSockets, with Qt signals for every outcome.

Like :class:`zmqproc.client.Client`, each endpoint gets its own DEALER and a
monitor (both on QSocketNotifiers), so the session knows which server holds
which request: work goes to the least-loaded live server; a dropped connection
or a restarted server (new ``epoch``) has its requests sent again while their
deadlines allow; a server that stops answering its ping has its work moved to
the others. Every request ends exactly once: ``processed`` / ``opsReceived`` or
``failed`` (a typed :class:`~zmqproc.errors.ProcessingError`, RequestTimeout or
ConnectionLost). Deadlines are one single-shot QTimer set to the session's next
deadline; a ping per connection every second keeps ``state`` fresh
(connecting, connected, slow, lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq
from PySide6.QtCore import QObject, QTimer, Signal
from zmq.utils.monitor import parse_monitor_message

from ..client import configure_dealer, to_processed
from ..errors import Cancelled, ConnectionLost, MalformedReply, RequestTimeout
from ..pipeline import PipelineSpec
from ..protocol import Reply
from ..session import ClientSession, Pending
from .qt_socket import QZmqSocket

log = logging.getLogger("zmqproc.gui")

CONNECTING, CONNECTED, SLOW, LOST = "connecting", "connected", "slow", "lost"
_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@dataclass
class _Link:
    """One endpoint: its DEALER, its monitor, and what the pings say about it."""

    endpoint: str
    dealer: QZmqSocket
    monitor: QZmqSocket
    blocked: bool = False
    ping: str | None = None  # the id of the ping in flight on this connection
    rtt: float = -1.0
    answering: bool = True
    epochs: list[str] = field(default_factory=list)

    def close(self) -> None:
        if not self.dealer.closed:
            self.dealer.socket.disable_monitor()
        self.monitor.close()
        self.dealer.close()


class QtClient(QObject):
    """Asynchronous zmqproc client for Qt applications (any number of endpoints, no broker)."""

    processed = Signal(str, object)  # request id, zmqproc.client.Processed
    failed = Signal(str, object)  # request id, exception
    opsReceived = Signal(object)  # the server's op list
    stateChanged = Signal(str, float)  # state, best ping round trip in seconds (-1 when unknown)
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
        self.state = CONNECTING
        self.rtt = -1.0
        self.endpoints: list[str] = []
        self._ctx = context or zmq.Context.instance()
        self._session = ClientSession(routes=0)
        self._links: list[_Link] = []
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

    @property
    def resent(self) -> int:
        """Requests sent again after a lost connection or a server restart."""
        return self._session.resent

    def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Connect to these servers instead; what is still pending fails with ConnectionLost."""
        self._drop_links("the viewer switched servers")
        self.endpoints = list(endpoints)
        self._session = ClientSession(routes=len(self.endpoints))
        for route, endpoint in enumerate(self.endpoints):
            sock = self._ctx.socket(zmq.DEALER)
            configure_dealer(sock)
            dealer = QZmqSocket(socket=sock, parent=self)
            monitor = QZmqSocket(socket=sock.get_monitor_socket(_EVENTS), parent=self)
            dealer.received.connect(lambda frames, r=route: self._on_frames(r, frames))
            dealer.writable.connect(lambda r=route: self._unblock(r))
            monitor.received.connect(lambda frames, r=route: self._on_monitor(r, frames))
            sock.connect(endpoint)
            self._links.append(_Link(endpoint, dealer, monitor))
        self._set_state(CONNECTING if self.endpoints else LOST, -1.0)
        if self.endpoints:
            self._ping_timer.start()
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

    def cancel(self, request_id: str) -> None:
        """Withdraw a process request: locally if it is not sent yet, else with a ``cancel`` to the server that has it.

        A request the server has not started ends with ``failed(id, Cancelled)``;
        one already running still ends with its result.
        """
        pending = next((p for p in self._session.pending() if p.id == request_id), None)
        if pending is None:
            return
        if pending.route is None:
            self._session.forget(request_id)
            self.failed.emit(request_id, Cancelled("cancelled before it was sent", request_id=request_id))
            return
        cancel = self._session.request("cancel", {"target": request_id}, None, self.lost_after, time.monotonic(), internal=True)
        cancel.route = pending.route  # a cancel only reaches the connection that carried the request
        self._submit(cancel)

    def close(self) -> None:
        """Stop the timers, close the sockets and fail what is still pending with ConnectionLost."""
        self._ping_timer.stop()
        self._deadline_timer.stop()
        self._drop_links("the viewer closed the connection")

    # -- sending ------------------------------------------------------------------

    def _submit(self, pending: Pending) -> str:
        self._flush()
        self._arm_deadline()
        return pending.id

    def _flush(self) -> None:
        """Send what waits: pinned requests on their connection, others on the least-loaded live one."""
        full: list[int] = [i for i, link in enumerate(self._links) if link.blocked]
        for pending in self._session.unsent():
            size = pending.size if pending.kind == "process" else None
            route = pending.route if pending.route is not None else self._session.pick_route(exclude=full, size=size)
            if route is None or route in full:
                continue
            if not self._links[route].dealer.send(self._session.frames(pending, time.monotonic(), route)):
                self._links[route].blocked = True
                full.append(route)
                continue
            self._session.sent(pending, route, time.monotonic())

    def _unblock(self, route: int) -> None:
        self._links[route].blocked = False
        self._flush()

    # -- receiving ----------------------------------------------------------------

    def _on_monitor(self, route: int, frames: list[zmq.Frame]) -> None:
        event = parse_monitor_message([f.bytes for f in frames])["event"]
        link = self._links[route]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._session.route_up(route, time.monotonic())
            link.answering, link.blocked = True, False
            self._flush()
            self._send_ping(route)
        else:
            orphans = self._session.route_down(route)
            link.ping, link.rtt = None, -1.0
            if orphans:
                log.info("%s disconnected: %d requests will be sent again", link.endpoint, len(orphans))
            self._flush()
        self._update_state()

    def _on_frames(self, route: int, frames: list[zmq.Frame]) -> None:
        now = time.monotonic()
        try:
            matched = self._session.receive([f.buffer for f in frames], route, now)
        except MalformedReply as exc:
            log.warning("dropped a malformed reply: %s", exc)
            return
        link = self._links[route]
        epoch = self._session.routes[route].epoch
        if epoch is not None and epoch not in link.epochs:
            if link.epochs:
                self.serverRestarted.emit(epoch)  # its unanswered requests went back to the unsent queue
            link.epochs.append(epoch)
        if matched is not None:
            self._dispatch(route, *matched, now)
        self._flush()
        self._arm_deadline()

    def _dispatch(self, route: int, pending: Pending, reply: Reply, now: float) -> None:
        if pending.kind == "ping":
            link = self._links[route]
            link.ping, link.rtt, link.answering = None, now - pending.sent_at, True
            self._update_state()
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

    # -- time -------------------------------------------------------------------------

    def _send_ping(self, route: int) -> None:
        link = self._links[route]
        if link.ping is not None and link.ping not in self._session:
            link.ping = None  # the session forgot it (a new epoch or a dropped route orphans pings)
        if link.ping is None and self._session.routes[route].up:
            ping = self._session.request("ping", None, None, self.lost_after, time.monotonic(), internal=True)
            ping.route = route
            link.ping = self._submit(ping)

    def _on_ping_tick(self) -> None:
        for route in range(len(self._links)):
            self._send_ping(route)
        if not any(route.up for route in self._session.routes):
            self._update_state()  # still no connection: lost, not connecting
        self._flush()

    def _expire(self) -> None:
        for pending in self._session.expire(time.monotonic()):
            if pending.kind == "ping" and pending.route is not None:
                link = self._links[pending.route]
                link.ping, link.answering = None, False
                moved = self._session.route_silent(pending.route)  # its work goes to the live servers, if any
                if moved:
                    log.info("%s does not answer: %d requests moved", link.endpoint, len(moved))
                self._update_state()
            elif pending.kind not in ("ping", "cancel"):
                where = ", ".join(self.endpoints) or "no server"
                self.failed.emit(pending.id, RequestTimeout(f"no reply to {pending.kind} from {where} in time"))
        self._flush()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        deadline = self._session.next_deadline()
        if deadline is None:
            self._deadline_timer.stop()
        else:
            self._deadline_timer.start(max(0, round((deadline - time.monotonic()) * 1000) + 1))

    # -- state ----------------------------------------------------------------------------

    def _update_state(self) -> None:
        """Connected (or slow) when some server answers its pings; lost when none is connected or none answers."""
        up = [link for route, link in enumerate(self._links) if self._session.routes[route].up]
        answering = [link for link in up if link.answering]
        rtts = [link.rtt for link in answering if link.rtt >= 0]
        if not answering:
            self._set_state(LOST, -1.0)
        elif rtts:
            best = min(rtts)
            self._set_state(SLOW if best > self.slow_after else CONNECTED, best)

    def _set_state(self, state: str, rtt: float) -> None:
        changed = state != self.state or rtt != self.rtt
        self.state, self.rtt = state, rtt
        if changed:
            self.stateChanged.emit(state, rtt)

    def _drop_links(self, reason: str) -> None:
        for link in self._links:
            link.close()
        self._links = []
        for pending in self._session.pending():
            self._session.forget(pending.id)
            if pending.kind in ("process", "ops"):
                self.failed.emit(pending.id, ConnectionLost(reason))
