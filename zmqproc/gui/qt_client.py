"""The viewer's client: the ClientSession (sans I/O) moved by QZmqSockets, with Qt signals for every outcome.

The same session as :class:`zmqproc.client.Client`, so the same rules (credit, retries, resends, pings, fail-fast,
cancel); this class only carries its inputs and outputs on the Qt event loop: a DEALER and its monitor per endpoint on
QSocketNotifiers (:class:`~zmqproc.gui.qt_socket.QZmqSocket`) and one single-shot QTimer set to the session's next
wakeup. Every request ends exactly once: ``processed`` / ``opsReceived`` or ``failed`` (a typed error), always from the
event loop, never from inside the call that made the request: a request that fails at once (no server reachable) fails
after its caller has its id. By default the session pings every connection each second, idle or not (``keepalive``), so
``state`` stays fresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq
from PySide6.QtCore import QObject, QTimer, Signal

from ..client import dealer, discovery
from ..client.events import Fail, Progress, Resolve, RouteAdded, RouteRetired, ServerRestarted, StateChanged
from ..client.pipeline import PipelineSpec
from ..client.replies import Processed, TilePlan
from ..client.session import CONNECTED, CONNECTING, LOST, SLOW, ClientOptions, ClientSession
from ..client.transfer import Link
from ..errors import InvalidEndpoint
from ..security import ClientCurve
from .qt_socket import QZmqSocket

if TYPE_CHECKING:
    from ..ssh.tunnel import Tunnel

__all__ = ["CONNECTED", "CONNECTING", "LOST", "SLOW", "QtClient"]

log = logging.getLogger("zmqproc.gui")
VIEWER_OPTIONS = ClientOptions(keepalive=True)


class QtClient(QObject):
    """Asynchronous zmqproc client for Qt applications (any number of endpoints, no broker)."""

    processed = Signal(str, object)  # request id, zmqproc.client.Processed
    failed = Signal(str, object)  # request id, exception
    opsReceived = Signal(object)  # the server's op list
    planReceived = Signal(str, object)  # request id, zmqproc.client.replies.TilePlan
    stateChanged = Signal(str, float)  # state, best ping round trip in seconds (-1 when unknown)
    serverRestarted = Signal(str)  # the new epoch
    transferred = Signal(str, object)  # request id, zmqproc.client.events.Progress: a payload or result moving in parts
    tunnelChanged = Signal()  # an SSH tunnel opened, is reconnecting or failed (emitted from its thread, delivered on this one)
    replicasChanged = Signal()  # discovery found a new address, or closed a drained one (see replicas())
    _found = Signal(object, str, object)  # from the discovery thread: session, service, its addresses now

    def __init__(
        self,
        endpoints: Sequence[str] = (),
        *,
        timeout: float = 60.0,
        options: ClientOptions = VIEWER_OPTIONS,
        curve: ClientCurve | None = None,
        context: zmq.Context[Any] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.timeout = timeout
        self.options = options
        self.endpoints: list[str] = []
        self._ctx = context or zmq.Context.instance()
        self._session = ClientSession([], options, time.monotonic())
        self._links: list[tuple[QZmqSocket, QZmqSocket] | None] = []  # by route; None once retired
        self._rediscovery: discovery.Rediscovery | None = None
        self._tunnels: list[Tunnel] = []
        self._curve = False
        self._keys: ClientCurve | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._pump)
        self.tunnelChanged.connect(self._pump)
        self._found.connect(self._rediscovered)
        self._later: list[object] = []  # events of a turn taken inside a call, delivered from the event loop
        self.set_endpoints(endpoints, curve=curve)

    # -- the API ----------------------------------------------------------------

    @property
    def state(self) -> str:
        """connecting, connected, slow or lost (see :class:`~zmqproc.client.session.StateChanged`)."""
        return self._session.state[0]

    @property
    def rtt(self) -> float:
        return self._session.state[1]

    @property
    def epoch(self) -> str | None:
        return self._session.epoch

    @property
    def in_flight(self) -> int:
        return len(self._session)

    @property
    def resent(self) -> int:
        """Requests sent again after a lost connection, a server restart, ``busy`` or a silent server."""
        return self._session.resent

    def link(self) -> Link:
        """The way to the servers as the session measured it (rate, round trip): what the transfer policy costs on."""
        return self._session.link()

    def replicas(self) -> list[tuple[str, str, float]]:
        """Each server connection (one per address the endpoints resolve to): endpoint, state, last round trip."""
        return self._session.replicas()

    def room_for(self, image: np.ndarray | bytes) -> bool:
        """A ``process`` request of this image would go out at once (see :meth:`ClientSession.room_for`)."""
        return self._session.room_for(image.nbytes if isinstance(image, np.ndarray) else len(image))

    def set_endpoints(self, endpoints: Sequence[str], *, curve: ClientCurve | None = None, tunnels: Sequence[Tunnel] = ()) -> None:
        """Connect to these servers instead (through ``tunnels`` when given, one per endpoint); what is pending fails."""
        self._drop("the viewer switched servers")
        self.endpoints, self._tunnels, self._curve, self._keys = list(endpoints), list(tunnels), curve is not None, curve
        for tunnel in self._tunnels:  # reconnecting, failed: read at once on this thread
            tunnel.on_state_change = lambda _tunnel, _state: self.tunnelChanged.emit()
        routes, services = self.endpoints, self.endpoints
        if not self._tunnels:  # names stand for every address they resolve to (through SSH the far side resolves)
            try:
                routes, services = discovery.expand(self.endpoints)
            except InvalidEndpoint as exc:
                log.warning("%s: connecting by name, and looking it up again", exc)  # the state says lost meanwhile
        session = self._session = ClientSession(routes, self.options, time.monotonic(), services)
        for endpoint in [t.local_endpoint for t in self._tunnels] or routes:
            self._open(session, endpoint)
        names = [] if self._tunnels else discovery.named(self.endpoints)
        if names and self.options.rediscover > 0:
            self._rediscovery = discovery.Rediscovery(names, self.options.rediscover, lambda n, found: self._found.emit(session, n, found))
        self.stateChanged.emit(*session.state)
        self._pump()

    def process(
        self, image: np.ndarray | bytes, pipeline: PipelineSpec, *, reply_format: str | None = None, timeout: float | None = None
    ) -> str:
        """Send an image (array: raw, no copy, do not modify it meanwhile; bytes: an encoded file); its request id."""
        t = self.timeout if timeout is None else timeout
        request_id = self._session.submit_process(image, pipeline, t, time.monotonic(), reply_format)
        self._pump(later=True)
        return request_id

    def request_tile_plan(self, pipeline: PipelineSpec, dtype: str) -> str:
        """Ask for ``pipeline``'s halo on ``dtype`` images and the server's limits: ``planReceived`` or ``failed``."""
        request_id = self._session.submit_tile_plan(pipeline, dtype, self.timeout, time.monotonic())
        self._pump(later=True)
        return request_id

    def request_ops(self, timeout: float | None = None) -> str:
        request_id = self._session.submit("ops", self.timeout if timeout is None else timeout, time.monotonic())
        self._pump(later=True)
        return request_id

    def cancel(self, request_id: str) -> None:
        """Withdraw a request: at once if it is not sent yet, else by a ``cancel`` to the server that has it.

        It ends with ``failed(id, Cancelled)``, or with its result if the server had finished it already.
        """
        self._session.cancel(request_id, time.monotonic())
        self._pump(later=True)

    def close(self) -> None:
        """Close the sockets and fail what is still pending with ConnectionLost."""
        self._drop("the viewer closed the connection")
        self._timer.stop()

    # -- driving the session ------------------------------------------------------------

    def _open(self, session: ClientSession, endpoint: str) -> None:
        """The sockets of the next route (its index is the number of routes opened so far)."""
        route = len(self._links)
        sock, monitor_sock = dealer.open_dealer(self._ctx, endpoint, self._keys)
        dealer_q, monitor = QZmqSocket(socket=sock, parent=self), QZmqSocket(socket=monitor_sock, parent=self)
        dealer_q.received.connect(lambda frames, r=route, s=session: self._input(s, lambda now: self._reply(s, r, frames, now)))
        dealer_q.writable.connect(lambda r=route, s=session: self._input(s, lambda now: s.writable(r, now)))
        monitor.received.connect(lambda frames, r=route, s=session: self._input(s, lambda now: self._monitor(s, r, frames, now)))
        self._links.append((dealer_q, monitor))

    def _rediscovered(self, session: ClientSession, service: str, found: list[str]) -> None:
        self._input(session, lambda now: session.discovered(service, found, now))

    def _routes_changed(self, session: ClientSession, events: Sequence[RouteAdded | RouteRetired]) -> None:
        """Open the sockets of routes discovery added, close those of routes it retired."""
        for event in events:
            if isinstance(event, RouteAdded):
                self._open(session, event.endpoint)
            elif isinstance(event, RouteRetired) and (link := self._links[event.route]) is not None:
                self._links[event.route] = None
                link[0].close_monitored(link[1])
        self.replicasChanged.emit()

    def _input(self, session: ClientSession, feed: Callable[[float], None]) -> None:
        """One input from a socket; an error in it is logged, and the session still acts (nothing is lost)."""
        if session is not self._session:  # a late signal from sockets of an earlier set_endpoints
            return
        try:
            feed(time.monotonic())
        except Exception:
            log.exception("a client input failed")
        self._pump()

    @staticmethod
    def _reply(session: ClientSession, route: int, frames: list[zmq.Frame], now: float) -> None:
        session.receive(route, [f.buffer for f in frames], now)

    def _monitor(self, session: ClientSession, route: int, frames: list[Any], now: float) -> None:
        dealer.monitor_input(session, route, frames, session.endpoints[route], self._curve, now)

    def _pump(self, later: bool = False) -> None:
        """Let time pass, send what the session says, emit what it decided (``later``: from the event loop, after the
        caller returns), and set the timer to its next wakeup."""
        session = self._session
        try:
            dealer.turn(session, self._tunnels, lambda route, frames: self._send(route, frames), time.monotonic())
        except Exception:
            log.exception("the client session failed a turn")
        finally:
            wakeup = session.next_wakeup()
            if wakeup is None:
                self._timer.stop()
            else:
                self._timer.start(max(0, int((wakeup - time.monotonic()) * 1000) + 1))
        events = session.events()
        changed = [e for e in events if isinstance(e, RouteAdded | RouteRetired)]
        if changed:
            self._routes_changed(session, changed)
        self._later += events
        if later:
            if self._later:
                QTimer.singleShot(0, self._deliver)
        else:
            self._deliver()

    def _send(self, route: int, frames: list[Any]) -> bool:
        link = self._links[route]
        assert link is not None  # the session sends nothing on a retired route
        return link[0].send(frames)

    def _deliver(self) -> None:
        events, self._later = self._later, []
        for event in events:
            try:
                self._emit(event)
            except Exception:  # a slot that raises must not keep the others from their events
                log.exception("a slot failed on %s", type(event).__name__)

    def _emit(self, event: object) -> None:
        if isinstance(event, Resolve):
            if isinstance(event.value, Processed):
                self.processed.emit(event.request_id, event.value)
            elif isinstance(event.value, TilePlan):
                self.planReceived.emit(event.request_id, event.value)
            else:
                self.opsReceived.emit(event.value)
        elif isinstance(event, Fail):
            self.failed.emit(event.request_id, event.error)
        elif isinstance(event, StateChanged):
            self.stateChanged.emit(event.state, event.rtt)
        elif isinstance(event, ServerRestarted):
            self.serverRestarted.emit(event.epoch)
        elif isinstance(event, Progress):
            self.transferred.emit(event.request_id, event)

    def _drop(self, reason: str) -> None:
        """Close the session (cancelling on the servers what they hold for it) and its sockets."""
        if self._rediscovery is not None:
            self._rediscovery.close()
            self._rediscovery = None
        dealer.close_session(self._session, [None if link is None else (link[0].socket, link[1].socket) for link in self._links], reason)
        for link in self._links:
            if link is not None:
                link[0].close()
                link[1].close()
        self._links = []
        self._later += [event for event in self._session.events() if isinstance(event, Fail)]
        self._deliver()
