"""The client protocol, sans I/O: the one place that decides what a zmqproc client sends, where, when, and what a reply means.

In the manner of h11's ``Connection``: :class:`ClientSession` knows nothing of
sockets, threads or Qt. Its drivers (:class:`zmqproc.client.Client`,
:class:`zmqproc.gui.qt_client.QtClient`) feed it inputs and carry out its
outputs, and decide nothing themselves.

Inputs (each takes the time, ``now``, from a monotonic clock):
:meth:`~ClientSession.submit_process` / :meth:`~ClientSession.submit` (a new request),
:meth:`~ClientSession.cancel`, :meth:`~ClientSession.receive` (a reply's frames on route R),
:meth:`~ClientSession.connected` / :meth:`~ClientSession.disconnected` /
:meth:`~ClientSession.refused` / :meth:`~ClientSession.cut_short` (what R's monitor saw),
:meth:`~ClientSession.tunnel` (R's SSH tunnel state), :meth:`~ClientSession.send_failed` /
:meth:`~ClientSession.writable` (R's socket would block, and can take messages again),
:meth:`~ClientSession.tick` (time passes) and :meth:`~ClientSession.close`.

Outputs: :meth:`~ClientSession.sends` (the frames to send now, each on its route),
:meth:`~ClientSession.events` (:mod:`zmqproc.client.events`; replies become values in
:mod:`zmqproc.client.replies`) and :meth:`~ClientSession.next_wakeup`
(when to call :meth:`~ClientSession.tick` at the latest).

A route is one connection to one endpoint. The rules (docs/protocol.md, "Flow control" and "Stopping work"):

- **Credit.** A route's server grants how many ``process`` requests (and payload bytes) may be outstanding on it; work
  beyond every grant waits here, in submission order, bounded only by its deadline. The next request goes to a route
  with room, the fewest outstanding first; a full server does not hold back the others. Until a reply on a new
  connection tells its grant, one request at a time (and a ``ping`` at once, which brings it).
- **Retryable is not final.** ``busy`` is retried with backoff (from 50 ms, doubling to 1 s) within the deadline,
  preferring another route; ``busy`` + ``shutting_down`` drains that connection (nothing more is sent on it) and the
  request is sent again at once, elsewhere or to the endpoint's next instance. Every other code is final.
- **Lost replies.** A dropped connection, or a new ``epoch`` on it, means the server died holding what was outstanding
  there: that work is sent again, each request at most once; if the server it went to dies holding it too, it fails with
  :class:`~zmqproc.errors.ServerCrashed` (a poison request cannot take down every replica). A request sent again after
  such a death goes to a route holding no other such request, so a second death names one request, not its neighbours.
- **Liveness, one rule.** A connected route silent for ``heartbeat`` gets a ``ping`` (while work is out on it, or always
  with ``keepalive``); one unanswered for ``ping_timeout``, with nothing else heard on the route since it went, makes
  the route silent: its work moves to live routes, if any. (A ping may wait behind parts of a big payload; answers to
  those parts keep the route alive, so only a route on which nothing moves is silent.) Ping round trips give the
  route's state: connecting, connected, slow (over ``slow_after``) or lost.
- **Parts.** With a server that takes them, a payload over its ``part_bytes`` goes in parts, and a big result comes
  back in parts (docs/protocol.md, "Payloads in parts"), each about ``PART_S`` on the link, unless the route's
  measured rate carries the request in under ``WINDOW_S`` (then parts would only cost copies); at most a window of
  about ``WINDOW_S`` of the route's measured rate is out unanswered, so whatever else is sent waits behind that at
  most. A dropped connection after which the same server instance answers again was a cut: the work it held is resent
  without counting as that server's death.
- **Fail fast.** When every route has been unusable (not connected, silent, its tunnel reconnecting) for ``grace``, or
  lost for good (a refused CURVE key, a failed tunnel), what is pending and what is submitted fails at once, with
  :class:`~zmqproc.errors.ConnectionLost` naming the endpoints, or the known cause.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from ..errors import (
    AuthenticationFailed,
    Busy,
    Cancelled,
    ConnectionLost,
    MalformedReply,
    RequestTimeout,
    ServerCrashed,
    TunnelError,
)
from ..images import ImageDescriptor, describe_array, sniff_format
from ..protocol import (
    PART_BYTES,
    Buffer,
    Credit,
    Reply,
    Step,
    decode_reply,
    encode_request,
    fetch_fields,
    part_fields,
    parts_fields,
    process_fields,
    tile_fields,
)
from .events import Event, Fail, Progress, Resolve, RouteAdded, RouteChanged, RouteRetired, Send, ServerRestarted, StateChanged
from .pipeline import PipelineSpec, to_steps
from .replies import reply_value
from .transfer import Link

log = logging.getLogger("zmqproc.client")

CONNECTING, CONNECTED, SLOW, LOST, RETIRED = "connecting", "connected", "slow", "lost", "retired"
TUNNEL_OPEN, TUNNEL_RECONNECTING, TUNNEL_FAILED = "open", "reconnecting", "failed"
BACKOFF_MAX_S = 1.0
WINDOW_S = 0.5  # parts unanswered on a route: about this long at its measured rate (what a ping may wait behind),
WINDOW_PARTS = 2  # but at least this many parts (one arriving while the next travels)...
MAX_WINDOW = 64 << 20
PART_S = 0.125  # ...each about this long on the link (an answer at least this often while bytes move),
MIN_PART = 256 << 10  # at least this big (the size too while the rate is unknown), at most the server's part_bytes
RATE_WEIGHT = 0.3  # of a new throughput sample in a route's running estimate...
RATE_SPAN = 0.05  # ...each sample the bytes answered over at least this long, while parts were out
ROUND_TRIPS = ("ping", "ops", "stats")  # answered by the server's loop at once: a first one measures the round trip


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client waits, retries and gives up (every driver takes one; the defaults suit most uses)."""

    grace: float = 3.0  # every route unusable this long: pending and new work fails with ConnectionLost
    heartbeat: float = 1.0  # silence on a connection before a ping (while work is out, or always with keepalive)
    ping_timeout: float = 3.0  # an unanswered ping this old makes its route silent (its work moves to live routes)
    keepalive: bool = False  # ping idle connections too, for a fresh state and round trip (the viewer)
    slow_after: float = 0.5  # a ping round trip over this shows the route as slow
    backoff: float = 0.05  # first delay before a `busy` request is sent again (doubling, up to 1 s)
    max_waiting_bytes: int | None = None  # Client.submit blocks while more payload than this waits unsent
    rediscover: float = 10.0  # seconds between look-ups of the endpoints' host names (0: only at the start)


# -- state ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Request:
    id: str
    kind: str
    seq: int
    fields: dict[str, Any]  # the request's own keys (protocol.encode_request adds v, id and kind)
    payload: Any
    size: int  # payload bytes, what credit counts
    deadline: float
    internal: bool = False  # a liveness ping or a cancel: nobody waits for it
    pinned: int | None = None  # pings and cancels go to this route only
    route: int | None = None  # where it is outstanding now; None while it waits
    generation: int = 0  # that route's connection when it was sent
    sent_at: float = 0.0
    sends: int = 0
    busy: int = 0  # `busy` answers so far (the backoff doubles)
    avoid: int | None = None  # the route that answered busy: another is preferred
    not_before: float = 0.0
    cancelling: bool = False
    waiting: bool = False  # in a queue (counted in waiting_bytes when it is process work)
    deaths_at: list[tuple[int, str | None]] = field(default_factory=list)  # (route, instance) that dropped it unanswered
    parted: bool = False  # this attempt's payload goes in parts
    up_sent: int = 0  # of those parts: bytes sent, and answered
    up_done: int = 0
    download: _Download | None = None  # its result comes in parts

    @property
    def deaths(self) -> int:
        """Servers that died holding it (a connection the same instance answers on again was only a cut: not counted)."""
        return len(self.deaths_at)


@dataclass(slots=True, eq=False)
class _Download:
    """A result held by the server for ``fetch`` requests: its reply header, and the bytes so far."""

    header: dict[str, Any]
    buffer: bytearray
    asked: int  # bytes asked for (fetches sent), and received
    received: int


@dataclass(slots=True, eq=False)
class _Part:
    """A ``part`` or ``fetch`` out on a route, for ``request``'s attempt ``attempt``."""

    request: _Request
    kind: str
    route: int
    generation: int
    attempt: int
    offset: int
    length: int
    sent_at: float


@dataclass(slots=True, eq=False)
class _Route:
    endpoint: str
    down_since: float | None  # when it became unusable (None: usable)
    up: bool = False  # the connection's handshake is done and it has not dropped since
    ever_up: bool = False
    generation: int = 0  # counts dropped connections: a reply to an older one says nothing of this one
    epoch: str | None = None  # of the instance on the current connection
    last_epoch: str | None = None  # the last instance heard from, across reconnects (restart detection)
    told: bool = False  # a reply on this connection said whether (and how much) credit it grants
    credit: Credit | None = None  # the latest grant (None once told: a server without flow control)
    credit_wire: dict[str, int] | None = None  # that grant as the reply carried it
    assigned: dict[str, _Request] = field(default_factory=dict)  # outstanding on this connection
    work: int = 0  # process requests outstanding (ghosts included), and their bytes
    work_bytes: int = 0
    suspects: int = 0  # outstanding requests that a server already died holding
    ghosts: dict[str, int] = field(default_factory=dict)  # no longer awaited, still held by the server: id -> bytes
    pinned: deque[_Request] = field(default_factory=deque)  # pings and cancels to send on it
    leaving: bool = False  # the server is shutting down: nothing more on this connection
    blocked: bool = False  # a send would have blocked; wait for writable
    silent: bool = False  # its ping went unanswered
    ping: str | None = None  # the id of the ping out on it
    ping_due: float = 0.0
    rtt: float = -1.0
    best_rtt: float = -1.0  # the least ping round trip on this connection: the link's own, without a busy client's delays
    refused: BaseException | None = None  # the handshake was refused: lost until one succeeds
    cut_short: BaseException | None = None  # a CURVE handshake cut short: the likely cause if it never connects
    tunnel: str = TUNNEL_OPEN
    tunnel_error: BaseException | None = None
    state: str = CONNECTING
    transfers: dict[str, _Request] = field(default_factory=dict)  # uploading or downloading in parts, in order
    inflight: int = 0  # bytes of parts and fetches sent and not yet answered
    rate: float = 0.0  # measured throughput of parts and fetches, bytes/s (0: not yet)
    rate_from: float = 0.0  # the rate's next sample: bytes answered since this time
    rate_bytes: int = 0
    last_answer: float = float("-inf")  # when a part or fetch was last answered
    heard: float = float("-inf")  # when anything last came on this connection
    service: str = ""  # the endpoint as given that this route is one address of (see discovered)
    gone: bool = False  # its address no longer resolves: no new work; retired once nothing is out on it
    retired: bool = False  # closed for good (its index is never reused)

    @property
    def part_bytes(self) -> int:
        """The server takes payloads over this size in parts of it (0: it does not, or has not said yet)."""
        return self.credit.part_bytes if self.credit is not None else 0

    def part_size(self) -> int:
        """Parts of about PART_S on this link, within MIN_PART and the server's part_bytes."""
        return int(min(self.part_bytes, max(MIN_PART, self.rate * PART_S)))

    def window(self) -> int:
        """Bytes of parts and fetches that may be out unanswered: a slow start from two small parts, then WINDOW_S of the rate."""
        return int(min(MAX_WINDOW, max(WINDOW_PARTS * self.part_size(), self.rate * WINDOW_S)))

    @property
    def usable(self) -> bool:
        return self.up and not self.silent and self.tunnel != TUNNEL_RECONNECTING and self.lost_for_good is None

    @property
    def lost_for_good(self) -> BaseException | None:
        return self.refused or (self.tunnel_error if self.tunnel == TUNNEL_FAILED else None)

    @property
    def cause(self) -> BaseException | None:
        return self.lost_for_good or self.tunnel_error or self.cut_short

    def new_instance(self) -> None:
        """Forget what the server instance on this connection said: its grant, and that it was leaving."""
        self.told, self.credit, self.credit_wire, self.leaving = False, None, None, False

    def new_connection(self, now: float) -> None:
        """Forget the connection before this one: its instance, whether it was blocked or silent, its pings."""
        self.new_instance()
        self.epoch, self.blocked, self.silent, self.ping, self.ping_due, self.rtt = None, False, False, None, now, -1.0
        self.rate, self.best_rtt = 0.0, -1.0  # perhaps another path (a tunnel re-opened): measured again

    def admits(self, size: int) -> bool:
        """One more process request of ``size`` bytes fits this connection's grant (one at a time until told; a big one
        only once told, which says whether it can go in parts)."""
        if not self.told:
            return self.work == 0 and size <= PART_BYTES
        return self.credit is None or self.credit.admits(self.work, self.work_bytes, size)


class ClientSession:
    """The client protocol for requests to one or more endpoints (see the module docstring)."""

    def __init__(
        self, endpoints: Sequence[str], options: ClientOptions | None = None, now: float = 0.0, services: Sequence[str] | None = None
    ) -> None:
        """``services``: for each endpoint, the endpoint as given (a name) that it is an address of (see :meth:`discovered`;
        by default itself)."""
        self.options = options or ClientOptions()
        self.endpoints = list(endpoints)  # each route's, by route index (it only grows: a retired route keeps its index)
        services = self.endpoints if services is None else list(services)
        self.routes = [
            _Route(endpoint, down_since=now, service=service) for endpoint, service in zip(self.endpoints, services, strict=True)
        ]
        self.epoch: str | None = None  # of the instance that answered last
        self.resent = 0  # requests sent again (lost connection, restart, busy, silent server)
        self.late_replies = 0
        self.waiting_bytes = 0  # payload of process work not sent yet
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._requests: dict[str, _Request] = {}
        self._parts: dict[str, _Part] = {}  # parts and fetches out, by their ids
        self._work: list[tuple[int, str]] = []  # process requests waiting for credit: (seq, id), a heap
        self._calls: deque[_Request] = deque()  # ops, stats, pings from callers: any connected route
        self._delayed: list[tuple[float, int, str]] = []  # busy retries: (not before, seq, id)
        self._deadlines: list[tuple[float, str]] = []
        self._events: list[Event] = []
        self._closed: str | None = None
        self._lost: BaseException | None = None  # fail-fast is in effect (every route lost)
        self._state = (CONNECTING, -1.0)
        self._pack = msgpack.Packer(use_bin_type=True).pack  # one Packer per session: packb would build one per call
        self._refresh(now)

    def __len__(self) -> int:
        """Requests a caller waits for."""
        return sum(not r.internal for r in self._requests.values())

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    @property
    def active(self) -> bool:
        """Something waits for an answer (a caller's request, a ping, a cancel): the driver keeps driving."""
        return bool(self._requests)

    @property
    def state(self) -> tuple[str, float]:
        """(state, best round trip) of the client as a whole; see :class:`StateChanged`."""
        return self._state

    def up(self, route: int) -> bool:
        return self.routes[route].up

    def blocked(self, route: int) -> bool:
        """A send on ``route`` would have blocked: the driver waits until the socket is writable."""
        return self.routes[route].blocked

    def room_for(self, size: int) -> bool:
        """A ``process`` request of ``size`` payload bytes submitted now would go out in the driver's next turn: no retry
        waits for its time, and the routes' grants hold the work waiting before it and then it (what a stream asks
        before it pulls its next input: the driver may not have sent what was just submitted)."""
        if self._delayed:
            return False
        probe = _Request("", "process", 0, {}, None, size, 0.0)
        if not self._work:
            return self._pick(probe) is not None
        waiting = [self._requests.get(request_id) for _, request_id in sorted(self._work)]
        queue = [q for q in waiting if q is not None and q.waiting]
        if any(q.deaths for q in queue):
            return False  # a suspect waits for a route of its own: no room is promised beside it
        saved = [(r.work, r.work_bytes) for r in self.routes]
        try:
            for request in [*queue, probe]:
                target = self._pick(request)
                if target is None:
                    return False
                self.routes[target].work += 1  # as if sent: the next one is judged beside it
                self.routes[target].work_bytes += request.size
            return True
        finally:
            for r, (work, work_bytes) in zip(self.routes, saved, strict=True):
                r.work, r.work_bytes = work, work_bytes

    def present_routes(self) -> list[int]:
        """The indexes of the routes not retired, in the order :meth:`replicas` lists them."""
        return [i for i, r in enumerate(self.routes) if not r.retired]

    def replicas(self) -> list[tuple[str, str, float]]:
        """(endpoint, state, round trip) of each route not retired (a drained one says ``draining``)."""
        return [(r.endpoint, "draining" if r.gone else r.state, r.rtt) for r in self._present()]

    def link(self) -> Link:
        """The way to the servers as measured: the best rate of the usable routes' parts, the best ping round trip."""
        usable = [r for r in self.routes if r.usable] or self._present()
        rtts = [r.best_rtt for r in usable if r.best_rtt >= 0]
        return Link.known(max((r.rate for r in usable), default=0.0), min(rtts) if rtts else -1.0)

    def has_room(self) -> bool:
        """False while the payload waiting to be sent is over ``max_waiting_bytes``."""
        bound = self.options.max_waiting_bytes
        return bound is None or self.waiting_bytes <= bound

    # -- inputs: requests ------------------------------------------------------------------

    def submit_process(
        self, image: np.ndarray | bytes, pipeline: PipelineSpec, timeout: float, now: float, reply_format: str | None = None
    ) -> str:
        """A ``process`` request for an array (sent raw, without a copy) or an encoded file's bytes; its id.

        Raises ValueError for an image that cannot travel, ConnectionLost once closed.
        """
        payload: Any
        if isinstance(image, np.ndarray):
            desc, payload = describe_array(image)
            size = payload.nbytes
        else:
            payload = image
            size, desc = memoryview(image).nbytes, ImageDescriptor(sniff_format(bytes(memoryview(image)[:16])))
        steps = _text_steps(pipeline) if isinstance(pipeline, str) else to_steps(pipeline)
        return self._add("process", process_fields(steps, desc, reply_format), payload, size, timeout, now).id

    def submit_tile_plan(self, pipeline: PipelineSpec, dtype: str, timeout: float, now: float) -> str:
        """Ask a server for ``pipeline``'s halo on ``dtype`` images and its limits (an ``ops`` request with ``tile``);
        its id. The value is a :class:`~zmqproc.client.replies.TilePlan`."""
        steps = _text_steps(pipeline) if isinstance(pipeline, str) else to_steps(pipeline)
        return self._add("ops", tile_fields(steps, dtype), None, 0, timeout, now).id

    def submit(self, kind: str, timeout: float, now: float, route: int | None = None) -> str:
        """A ``ping``, ``ops`` or ``stats`` request (to any connected route, or to ``route``); its id."""
        if kind not in ("ping", "ops", "stats"):
            raise ValueError(f"submit() sends ping, ops or stats, not {kind!r}")
        return self._add(kind, None, None, 0, timeout, now, pinned=route).id

    def cancel(self, request_id: str, now: float) -> None:
        """Withdraw a request: at once if it was not sent, else by a ``cancel`` to the server that holds it.

        One the server has ends with its answer: ``cancelled`` (queued or running work it stopped), or its result.
        """
        request = self._requests.get(request_id)
        if request is None or request.internal or request.cancelling:
            return
        if request.route is None:
            self._fail(request, Cancelled("cancelled before it was sent", request_id=request_id))
            return
        request.cancelling = True
        cancel = self._add("cancel", {"target": request_id}, None, 0, self.options.ping_timeout, now, internal=True)
        cancel.pinned = request.route
        self._enqueue(cancel)
        if request.download is not None:  # answered already: the cancel only frees what the server holds for it
            self._fail(request, Cancelled("cancelled while its result came", request_id=request_id))

    def close(self, reason: str = "the client was closed before the reply arrived") -> list[Send]:
        """Fail everything pending with ConnectionLost; nothing is sent any more but what this returns: a ``cancel`` for
        each ``process`` request a connected server holds, so that no server goes on computing abandoned work (best
        effort: the driver sends them as it closes its sockets)."""
        if self._closed is not None:
            return []
        farewells = [
            Send(q.route, encode_request("cancel", f"{q.id}-bye", {"target": q.id}, None, self._pack), q.id)
            for q in self._requests.values()
            if q.kind == "process" and q.route is not None and self.routes[q.route].up
        ]
        self._closed = reason
        self._fail_all(ConnectionLost(reason))
        return farewells

    # -- inputs: what the sockets and monitors saw -----------------------------------------------

    def connected(self, route: int, now: float) -> None:
        """The handshake of a (new) connection on ``route`` succeeded."""
        r = self.routes[route]
        if r.up:
            return
        r.up = r.ever_up = True
        r.refused = r.cut_short = None
        r.new_connection(now)
        self._refresh(now)

    def disconnected(self, route: int, now: float) -> None:
        """The connection on ``route`` dropped: the server cannot answer what it held on a new one."""
        r = self.routes[route]
        r.generation += 1
        if not r.up:
            return
        r.up = False
        self._orphan(route, died=True, now=now, why="disconnected")
        r.ghosts.clear()
        r.work = r.work_bytes = r.suspects = r.inflight = 0
        self._parts = {pid: p for pid, p in self._parts.items() if p.route != route}
        r.new_connection(now)
        for pending in r.pinned:
            if pending.internal:
                self._forget(pending)
            else:  # a caller's call to this one server
                self._fail(pending, ConnectionLost(f"{r.endpoint} dropped the connection before the call went out"))
        r.pinned.clear()
        self._refresh(now)

    def discovered(self, service: str, endpoints: Sequence[str], now: float) -> None:
        """``service`` (an endpoint as given, by name) resolves to these ``endpoints`` now (one per address).

        A new address becomes a route (:class:`RouteAdded`: the driver connects it); a route whose address is no longer
        among them is drained: no new work goes to it, what is out on it finishes or is sent again by the usual rules,
        then it is retired (:class:`RouteRetired`: the driver closes it). A name that resolves to nothing changes nothing:
        the last known addresses stay (and the log says so).
        """
        if not endpoints:
            log.warning("%s resolves to no address now: its last known addresses are kept", service)
            return
        current = {r.endpoint: i for i, r in enumerate(self.routes) if r.service == service and not r.retired}
        for endpoint in endpoints:
            index = current.get(endpoint)
            if index is None:
                self.endpoints.append(endpoint)
                self.routes.append(_Route(endpoint, down_since=now, service=service))
                self._events.append(RouteAdded(len(self.routes) - 1, endpoint))
                log.info("%s: a new address, %s", service, endpoint)
            elif self.routes[index].gone:
                self.routes[index].gone = False  # back before it was retired
        for endpoint, index in current.items():
            if endpoint not in endpoints and not self.routes[index].gone:
                self.routes[index].gone = True
                log.info("%s: %s is no longer among its addresses: drained", service, endpoint)
        self._refresh(now)

    def refused(self, route: int, error: BaseException, now: float) -> None:
        """The server refused the handshake (a CURVE key it does not allow, or a mechanism mismatch): lost until one succeeds."""
        self.routes[route].refused = error
        self.disconnected(route, now)
        self._refresh(now)

    def cut_short(self, route: int, error: BaseException) -> None:
        """A CURVE handshake the peer cut short (a wrong server key looks like this): named as the cause if no connection comes."""
        self.routes[route].cut_short = error

    def tunnel(self, route: int, state: str, now: float, error: BaseException | None = None) -> None:
        """The SSH tunnel of ``route`` is ``open``, ``reconnecting`` or ``failed``; ``error`` says why it is not open.

        A reconnecting tunnel is trying again by itself: its route is unusable but not lost, so work waits (within its
        deadline, which then names the tunnel as the cause); ``failed`` is lost for good, at once.
        """
        r = self.routes[route]
        if state == TUNNEL_FAILED and error is None:
            error = TunnelError(f"the SSH tunnel to {r.endpoint} failed")
        if (state, error) == (r.tunnel, r.tunnel_error):
            return
        r.tunnel, r.tunnel_error = state, (error if state != TUNNEL_OPEN else None)
        self._refresh(now)

    def send_failed(self, send: Send, now: float) -> None:
        """The socket of ``send.route`` would have blocked: the request waits again, and the route until it is writable."""
        r = self.routes[send.route]
        r.blocked = True
        part = self._parts.pop(send.request_id, None)
        if part is not None:  # not sent: asked again once the socket is writable
            r.inflight -= part.length
            if part.attempt == part.request.sends and part.request.route == send.route:
                if part.kind == "part":
                    part.request.up_sent = min(part.request.up_sent, part.offset)
                elif part.request.download is not None:
                    part.request.download.asked = min(part.request.download.asked, part.offset)
            return
        request = self._requests.get(send.request_id)
        if request is None or request.route != send.route:
            return
        self._unassign(request)
        request.sends -= 1
        if request.sends:
            self.resent -= 1
        if request.kind == "ping" and request.internal:
            r.ping = None
            self._forget(request)
            return
        self._enqueue(request)

    def writable(self, route: int, now: float) -> None:
        self.routes[route].blocked = False

    def receive(self, route: int, frames: Sequence[Buffer], now: float) -> None:
        """A message arrived on ``route``. A reply that breaks the contract fails its request (MalformedReply), if it names one."""
        try:
            reply = decode_reply(frames)
        except MalformedReply as exc:
            request = self._requests.get(_peek_id(frames) or "")
            if request is not None and request.route == route:
                self._unassign(request)
                self._fail(request, exc)
            else:
                log.warning("dropped a malformed reply from %s: %s", self.endpoints[route], exc)
            return
        r = self.routes[route]
        r.ping_due, r.heard = now + self.options.heartbeat, now
        part = self._parts.pop(reply.id, None) if reply.id is not None else None
        if part is not None:
            if part.generation == r.generation:
                self._learn(route, reply, now)
            if r.silent:
                r.silent = False
                self._refresh(now)
            self._part_answered(route, part, reply, now)
            return
        request = self._requests.get(reply.id) if reply.id is not None else None
        current = request is not None and request.route == route and request.generation == r.generation
        if not current and reply.id is not None and reply.id in r.ghosts:
            self._release(r, r.ghosts.pop(reply.id))
            current = True
        if current:
            self._learn(route, reply, now)
        if r.silent:
            r.silent = False
            self._refresh(now)
        if request is None:
            self.late_replies += 1
            return
        try:
            self._answer(route, request, reply, now)
        except Exception as exc:  # a reply that passed decode_reply but is unusable must still end its request
            if request.id in self._requests:
                self._unassign(request)
                error = exc if isinstance(exc, MalformedReply) else MalformedReply(f"unusable {request.kind} reply: {exc!r}")
                self._fail(request, error)

    def tick(self, now: float) -> None:
        """Time passes: deadlines, busy retries, pings, silent routes, fail-fast."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            request = self._requests.get(request_id)
            if request is not None and request.deadline <= now:
                self._expired(request, now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, request_id = heapq.heappop(self._delayed)
            request = self._requests.get(request_id)
            if request is not None and request.waiting:
                heapq.heappush(self._work, (request.seq, request.id))
        for index, r in enumerate(self.routes):
            if r.up and r.ping is None and now >= r.ping_due and (self.options.keepalive or not r.told or r.assigned):
                ping = self._add("ping", None, None, 0, self.options.ping_timeout, now, internal=True)
                ping.pinned = index
                r.ping = ping.id
                self._enqueue(ping)
        if any(r.down_since is not None for r in self._present()):  # what only time changes: a grace ending
            self._refresh(now)

    # -- outputs ---------------------------------------------------------------------------------

    def sends(self, now: float) -> list[Send]:
        """What to send now, each on its route: pinned pings and cancels, calls, then process work within credit."""
        if self._closed is not None:
            return []
        out: list[Send] = []
        for index, r in enumerate(self.routes):
            if r.gone and not r.retired and not r.assigned and not r.pinned:
                self._retire(index)
                self._refresh(now)
            while r.pinned and r.up and not r.blocked:
                pinned = r.pinned.popleft()
                if pinned.id in self._requests:  # not expired meanwhile
                    out.append(self._send(pinned, index, now))
        while self._calls:
            if self._calls[0].id not in self._requests:
                self._calls.popleft()
                continue
            target = self._pick_any()
            if target is None:
                break
            out.append(self._send(self._calls.popleft(), target, now))
        skipped: list[tuple[int, str]] = []
        while self._work:
            seq, request_id = self._work[0]
            request = self._requests.get(request_id)
            if request is None or not request.waiting or request.not_before > now:
                heapq.heappop(self._work)  # stale: answered, cancelled, or a retry whose time has not come (it is in _delayed)
                continue
            target = self._pick(request)
            if target is None:
                if not request.deaths:
                    break  # in submission order: nothing behind it fits either
                skipped.append(heapq.heappop(self._work))  # a suspect waits for a route with no other suspect
                continue
            heapq.heappop(self._work)
            out.append(self._send(request, target, now))
        for item in skipped:
            heapq.heappush(self._work, item)
        for index, r in enumerate(self.routes):
            if r.transfers and r.up and not r.blocked:
                out += self._parts_out(index, now)
        return out

    def events(self) -> list[Event]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    def next_wakeup(self) -> float | None:
        """The latest time :meth:`tick` must run (a deadline, a retry, a ping, a grace ending); None: only on input."""
        times = [self._deadlines[0][0]] if self._deadlines else []
        if self._delayed:
            times.append(self._delayed[0][0])
        keepalive = self.options.keepalive
        grace_matters = bool(self._requests) or self._state[0] == CONNECTING
        for r in self._present():
            if r.up and r.ping is None and (keepalive or not r.told or r.assigned):
                times.append(r.ping_due)
            if r.down_since is not None and grace_matters and self._lost is None and r.tunnel != TUNNEL_RECONNECTING:
                times.append(r.down_since + self.options.grace)
        return min(times) if times else None

    # -- internals: requests -------------------------------------------------------------------

    def _add(
        self,
        kind: str,
        fields: dict[str, Any] | None,
        payload: Any,
        size: int,
        timeout: float,
        now: float,
        internal: bool = False,
        pinned: int | None = None,
    ) -> _Request:
        if self._closed is not None:
            raise ConnectionLost(self._closed)
        seq = next(self._counter)
        request_id = f"{self._prefix}-{seq}"
        request = _Request(request_id, kind, seq, fields or {}, payload, size, now + timeout, internal=internal, pinned=pinned)
        self._requests[request_id] = request
        heapq.heappush(self._deadlines, (request.deadline, request_id))
        if not internal:
            self._enqueue(request)
        return request

    def _enqueue(self, request: _Request) -> None:
        """Into the queue it waits in: its route's (pinned), the calls, or the process work (in submission order)."""
        request.route = None
        if request.pinned is not None:
            self.routes[request.pinned].pinned.append(request)
            return
        request.waiting = True
        if request.kind != "process":
            self._calls.append(request)
            return
        self.waiting_bytes += request.size
        if request.not_before:
            heapq.heappush(self._delayed, (request.not_before, request.seq, request.id))
        else:
            heapq.heappush(self._work, (request.seq, request.id))

    def _send(self, request: _Request, index: int, now: float) -> Send:
        r = self.routes[index]
        if request.waiting and request.kind == "process":
            self.waiting_bytes -= request.size
        request.waiting = False
        if request.sends:
            self.resent += 1
        request.route, request.generation, request.sent_at, request.not_before = index, r.generation, now, 0.0
        request.sends += 1
        if not request.internal and not r.assigned:  # silence counts from here: a ping if nothing is heard for a heartbeat
            r.ping_due = max(r.ping_due, now + self.options.heartbeat)
        r.assigned[request.id] = request
        fields, payload = request.fields, request.payload
        if request.kind == "process":
            r.work += 1
            r.work_bytes += request.size
            r.suspects += request.deaths > 0
            fields = {**fields, "deadline_ms": max(0, round((request.deadline - now) * 1000))}
            if r.credit is not None:
                fields["credit_seq"] = r.credit.seq
            quick = r.rate > 0 and request.size <= r.rate * WINDOW_S  # on this link it takes less than a window's time
            request.parted = 0 < r.part_bytes < request.size and not quick
            request.up_sent = request.up_done = 0
            request.download = None
            if r.part_bytes and not quick:  # a result of about its size would be quick too
                fields.update(parts_fields(request.size if request.parted else None, down=True))
            if request.parted:
                payload = None
                r.transfers[request.id] = request
        return Send(index, encode_request(request.kind, request.id, fields, payload, self._pack), request.id)

    def _parts_out(self, index: int, now: float) -> list[Send]:
        """The parts and fetches that fit ``index``'s window: uploads and downloads in the order they began."""
        r = self.routes[index]
        out: list[Send] = []
        for request in list(r.transfers.values()):
            download = request.download
            while r.inflight < r.window():
                if download is None and request.up_sent < request.size and not request.cancelling:
                    kind, offset = "part", request.up_sent
                    length = min(r.part_size(), request.size - offset)
                    request.up_sent += length
                elif download is not None and download.asked < len(download.buffer):
                    kind, offset = "fetch", download.asked
                    length = min(r.part_size(), len(download.buffer) - offset)
                    download.asked += length
                else:
                    break
                if not r.inflight and now - r.last_answer > RATE_SPAN:  # the link was idle: a new sample starts now
                    r.rate_from, r.rate_bytes = now, 0
                part_id = f"{request.id}.{kind[0]}{offset}.{request.sends}"
                self._parts[part_id] = _Part(request, kind, index, r.generation, request.sends, offset, length, now)
                r.inflight += length
                if kind == "part":
                    piece = _bytes_of(request.payload)[offset : offset + length]
                    frames = encode_request("part", part_id, part_fields(request.id, offset), piece, self._pack)
                else:
                    frames = encode_request("fetch", part_id, fetch_fields(request.id, offset, length), None, self._pack)
                out.append(Send(index, frames, part_id))
            if r.inflight >= r.window():
                break
        return out

    def _part_answered(self, route: int, part: _Part, reply: Reply, now: float) -> None:
        """A part or fetch was answered: the route's window and rate, the request's progress (and its end, once all is in)."""
        r = self.routes[route]
        if part.generation == r.generation:
            r.inflight -= part.length
            r.rate_bytes += part.length
            r.last_answer = now
            if now - r.rate_from >= RATE_SPAN:
                sample = r.rate_bytes / (now - r.rate_from)
                r.rate = sample if r.rate <= 0 else (1 - RATE_WEIGHT) * r.rate + RATE_WEIGHT * sample
                r.rate_from, r.rate_bytes = now, 0
        request = part.request
        if request.id not in self._requests or request.route != route or request.sends != part.attempt or part.generation != r.generation:
            return  # an earlier attempt's, or an ended request's
        error = reply.error
        if error is not None:
            if not request.cancelling:
                self._unassign(request)
                self._fail(request, error)
            return
        download = request.download
        if part.kind == "part":
            request.up_done += part.length
        elif download is not None:
            payload = reply.payload
            if payload is None or len(payload) != part.length:
                self._unassign(request)
                self._fail(
                    request,
                    MalformedReply(
                        f"a fetch of {part.length} bytes of {request.id} was answered with {0 if payload is None else len(payload)}"
                    ),
                )
                return
            download.buffer[part.offset : part.offset + part.length] = payload
            download.received += part.length
        self._progress(request, r)
        if download is not None and download.received == len(download.buffer):
            self._unassign(request)
            self._answer(route, request, Reply(request.id, download.header, download.buffer), now)

    def _progress(self, request: _Request, r: _Route) -> None:
        download = request.download
        up = request.size if request.parted else 0
        sent = request.up_done if request.parted else 0
        if download is None:
            self._events.append(Progress(request.id, sent, up, 0, 0, r.rate))
        else:
            self._events.append(Progress(request.id, up, up, download.received, len(download.buffer), r.rate))

    def _pick(self, request: _Request) -> int | None:
        """The route for a process request: usable, with room in its grant, fewest outstanding (and not the one that said busy)."""
        best: tuple[bool, bool, int, int] | None = None
        for index, r in enumerate(self.routes):
            if not r.up or r.blocked or r.leaving or r.gone or r.lost_for_good is not None or r.tunnel == TUNNEL_RECONNECTING:
                continue
            if (request.deaths and r.suspects) or not r.admits(request.size):
                continue
            key = (r.silent, index == request.avoid, r.work, index)
            if best is None or key < best:
                best = key
        return None if best is None else best[3]

    def _pick_any(self) -> int | None:
        """The route for a ping, ops or stats call: a usable one with the least outstanding."""
        candidates = [
            (not r.usable, r.leaving, len(r.assigned), i) for i, r in enumerate(self.routes) if r.up and not r.blocked and not r.gone
        ]
        return min(candidates)[3] if candidates else None

    def _unassign(self, request: _Request, ghost: bool = False) -> None:
        """``request`` is no longer outstanding where it was sent (``ghost``: but that server may still hold it)."""
        if request.route is None:
            return
        r = self.routes[request.route]
        r.transfers.pop(request.id, None)
        if request.download is not None:  # answered: its credit was released then
            r.assigned.pop(request.id, None)
        elif r.assigned.pop(request.id, None) is not None and request.kind == "process":
            r.suspects -= request.deaths > 0
            if ghost and request.generation == r.generation and r.up:
                r.ghosts[request.id] = request.size  # it still counts against the grant until the server answers
            else:
                self._release(r, request.size)
        request.route = None

    @staticmethod
    def _release(r: _Route, size: int) -> None:
        r.work -= 1
        r.work_bytes -= size

    def _forget(self, request: _Request) -> None:
        """Nobody waits for ``request`` any more. If a server still holds it, it still counts there (a ghost) until it answers."""
        self._requests.pop(request.id, None)
        if request.waiting and request.kind == "process":
            self.waiting_bytes -= request.size
        request.waiting = False
        self._unassign(request, ghost=True)
        if request.kind == "ping" and request.pinned is not None and self.routes[request.pinned].ping == request.id:
            self.routes[request.pinned].ping = None

    def _resolve(self, request: _Request, value: Any) -> None:
        self._forget(request)
        if not request.internal:
            self._events.append(Resolve(request.id, value))

    def _fail(self, request: _Request, error: BaseException) -> None:
        self._forget(request)
        if not request.internal:
            self._events.append(Fail(request.id, error))

    def _fail_all(self, error: BaseException) -> None:
        for request in list(self._requests.values()):
            self._fail(request, error)
        self._work.clear()
        self._calls.clear()
        self._delayed.clear()
        for r in self.routes:
            r.pinned.clear()

    # -- internals: replies ---------------------------------------------------------------------

    def _learn(self, route: int, reply: Reply, now: float) -> None:
        """What a reply on the current connection tells of it: its grant and its server instance."""
        r = self.routes[route]
        epoch = reply.epoch
        if epoch is not None and epoch != r.epoch:
            if r.epoch is not None:  # a new instance on the same connection: the old one's work is lost
                r.new_instance()
                self._orphan(route, died=True, now=now, why=f"restarted (epoch {epoch})", keep=reply.id)
            elif epoch == r.last_epoch:  # the instance of before the connection dropped: it was a cut, not a death
                self._absolve(route, epoch)
            r.epoch = epoch
            if r.last_epoch is not None and r.last_epoch != epoch:
                self._events.append(ServerRestarted(route, epoch))
            r.last_epoch = epoch
        if epoch is not None:
            self.epoch = epoch
        wire = reply.header.get("credit")
        if wire != r.credit_wire or not r.told:  # usually the same grant as last time: nothing to build
            r.told, r.credit_wire = True, wire
            r.credit = None if wire is None else Credit(wire["seq"], wire["requests"], wire["bytes"], wire.get("part_bytes", 0))

    def _answer(self, route: int, request: _Request, reply: Reply, now: float) -> None:
        """End ``request`` with its reply (or send it again, for ``busy``). A reply from where it is no longer
        outstanding (it was sent again meanwhile) still ends it, except a stale ``busy``: the new attempt goes on."""
        r = self.routes[route]
        here = request.route == route
        parts = reply.header.get("parts") if request.kind == "process" and reply.ok else None
        if parts is not None:
            if here and request.download is None:
                self._download(r, request, reply, parts)
            return  # else an earlier attempt's: the rest of it cannot be fetched by this one
        if here:
            self._unassign(request)
        rtt = now - request.sent_at
        heartbeat = request.internal and request.kind == "ping" and r.ping == request.id
        if heartbeat or (r.rtt < 0 and request.kind in ROUND_TRIPS and here):  # a first answer is a round trip too
            r.rtt = rtt
            r.best_rtt = rtt if r.best_rtt < 0 else min(r.best_rtt, rtt)
            self._refresh(now)
        if request.internal:
            self._forget(request)
            return
        error = reply.error
        if error is None:
            kind = "tile" if "tile" in request.fields else request.kind
            self._resolve(request, rtt if kind == "ping" else reply_value(kind, reply))
        elif not isinstance(error, Busy) or request.cancelling:
            self._fail(request, error)
        elif here:
            self._busy(route, request, error, now)

    def _download(self, r: _Route, request: _Request, reply: Reply, parts: Any) -> None:
        """The reply's frame 1 is the first part of the result: the rest is fetched. Its credit is released now."""
        total = parts.get("bytes") if isinstance(parts, dict) else None
        first = reply.payload
        assert first is not None
        if type(total) is not int or not len(first) < total <= 1 << 40:
            self._unassign(request)
            self._fail(
                request, MalformedReply(f"a process reply says its result has {total!r} bytes in parts, with {len(first)} in frame 1")
            )
            return
        buffer = bytearray(total)
        buffer[: len(first)] = first
        r.suspects -= request.deaths > 0
        self._release(r, request.size)
        header = {k: v for k, v in reply.header.items() if k != "parts"}  # once all is in: the reply as if whole
        request.download = _Download(header, buffer, len(first), len(first))
        r.transfers[request.id] = request
        self._progress(request, r)

    def _busy(self, route: int, request: _Request, error: Busy, now: float) -> None:
        """Not started: send it again (at once elsewhere if the server is leaving, else after a backoff), within its deadline."""
        request.avoid = route
        if error.server_leaving:
            self.routes[route].leaving = True
            log.info("%s is shutting down: its work is sent again elsewhere or to its next instance", self.endpoints[route])
            request.not_before = 0.0
        else:
            request.busy += 1
            request.not_before = now + min(BACKOFF_MAX_S, self.options.backoff * 2 ** (request.busy - 1))
            if request.not_before >= request.deadline:
                self._fail(request, error)
                return
        self._enqueue(request)

    def _orphan(self, route: int, *, died: bool, now: float, why: str, keep: str | None = None) -> None:
        """What was outstanding on ``route`` is sent again (pings and cancels are dropped); ``died``: a server died holding it."""
        r = self.routes[route]
        orphans = sorted((q for q in r.assigned.values() if q.id != keep), key=lambda q: q.seq)
        moved = crashed = 0
        for request in orphans:
            self._unassign(request)
            if request.internal:
                self._forget(request)
            elif request.cancelling:
                self._fail(request, Cancelled("cancelled (its server went away before answering)", request_id=request.id))
            elif died and request.kind == "process" and request.deaths >= 1:
                crashed += 1
                self._fail(
                    request,
                    ServerCrashed(f"{request.id}: the servers it was sent to died holding it, twice (last {r.endpoint}, {why})"),
                )
            else:
                if died and request.kind == "process":
                    request.deaths_at.append((route, r.last_epoch))
                moved += 1
                self._enqueue(request)
        if moved or crashed:
            log.info("%s %s: %d requests will be sent again, %d given up (ServerCrashed)", r.endpoint, why, moved, crashed)

    def _absolve(self, route: int, epoch: str) -> None:
        """Instance ``epoch`` of ``route`` answers again after its connection dropped: what that drop counted as its
        death was a cut in the transport (resent without counting, never a ServerCrashed)."""
        mark = (route, epoch)
        for request in self._requests.values():
            if mark in request.deaths_at:
                suspect = request.deaths > 0
                request.deaths_at = [m for m in request.deaths_at if m != mark]
                if suspect and not request.deaths and request.route is not None and request.download is None:
                    self.routes[request.route].suspects -= 1

    def _expired(self, request: _Request, now: float) -> None:
        if request.internal:
            if request.kind == "ping" and request.pinned is not None and self.routes[request.pinned].heard <= request.sent_at:
                self._silent(request.pinned, now)  # nothing at all came since it went (else it waits behind parts: alive)
            self._forget(request)
            return
        where = self.endpoints[request.route] if request.route is not None else ", ".join(self.endpoints)
        cause = self._cause(request.route)
        timeout = RequestTimeout(f"no reply to {request.kind} {request.id} from {where} in time ({request.sends} sends)")
        self._fail(request, cause or timeout)

    def _silent(self, route: int, now: float) -> None:
        """A ping went unanswered: the route is silent; its work moves to live routes, if any (the server may still answer)."""
        r = self.routes[route]
        r.ping, r.ping_due = None, now
        if r.silent or not r.up:
            return
        r.silent = True
        if any(o.usable for o in self.routes):
            moving = [q for q in r.assigned.values() if not q.internal]
            for request in moving:
                self._unassign(request, ghost=True)  # it counts there until the server answers, if it ever does
                self._enqueue(request)
            if moving:
                log.info("%s does not answer: %d requests move to the other servers", r.endpoint, len(moving))
        self._refresh(now)

    def _cause(self, route: int | None) -> BaseException | None:
        """Why a request could not be answered, when known better than a timeout (a refused key, a dead tunnel)."""
        routes = self._present() if route is None else [self.routes[route]]
        causes = [r.cause for r in routes]
        return causes[0] if all(causes) else None

    # -- internals: state --------------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        """Route states, the overall state, retirements, and fail-fast."""
        for index, r in enumerate(self.routes):
            if r.retired:
                continue
            if r.usable:
                r.down_since = None
            elif r.down_since is None:
                r.down_since = now
            state = self._route_state(r, now)
            if state != r.state:
                r.state = state
                self._events.append(RouteChanged(index, state, r.rtt))
        present = self._present()
        answering = [r.rtt for r in present if r.state in (CONNECTED, SLOW)]
        if answering:
            best = min(answering)
            overall = (SLOW if best > self.options.slow_after else CONNECTED, best)
        else:
            connecting = not present or any(r.state == CONNECTING for r in present)  # none yet: a tunnel opening
            overall = (CONNECTING if connecting else LOST, -1.0)
        if overall != self._state:
            self._state = overall
            self._events.append(StateChanged(*overall))
        self._check_lost(now)

    def _present(self) -> list[_Route]:
        """The routes not retired: what the client's state, fail-fast and errors are about."""
        return [r for r in self.routes if not r.retired]

    def _retire(self, index: int) -> None:
        """A gone address with nothing out on it: closed for good (the driver closes its socket)."""
        r = self.routes[index]
        r.retired, r.up, r.down_since, r.state = True, False, None, RETIRED
        self._parts = {pid: p for pid, p in self._parts.items() if p.route != index}
        log.info("%s is no longer an address of %s and has nothing out: closed", r.endpoint, r.service)
        self._events.append(RouteRetired(index))

    def _route_state(self, r: _Route, now: float) -> str:
        if r.lost_for_good is not None or r.silent:
            return LOST
        if r.tunnel == TUNNEL_RECONNECTING:
            return CONNECTING
        if not r.up:
            young = not r.ever_up and r.down_since is not None and now - r.down_since < self.options.grace
            return CONNECTING if young else LOST
        if r.rtt < 0:
            return CONNECTING
        return SLOW if r.rtt > self.options.slow_after else CONNECTED

    def _lost_route(self, r: _Route, now: float) -> bool:
        """Lost for good, or unusable for the grace (a reconnecting tunnel is still trying: not lost until it fails)."""
        if r.lost_for_good is not None:
            return True
        return r.down_since is not None and now - r.down_since >= self.options.grace and r.tunnel != TUNNEL_RECONNECTING

    def _check_lost(self, now: float) -> None:
        grace = self.options.grace
        present = self._present()
        lost = all(self._lost_route(r, now) for r in present)
        if not lost:
            self._lost = None
            return
        if self._lost is None:
            self._lost = self._unreachable(grace)
            if present:
                log.info("%s", self._lost)  # the callers get it as their error
        if self._requests:
            error = self._lost
            for request in [q for q in self._requests.values() if not q.internal]:
                self._fail(request, error)

    def _unreachable(self, grace: float) -> BaseException:
        """The error for work that no server can take: the known cause, or ConnectionLost naming the endpoints."""
        routes = self._present()
        if not routes:
            return ConnectionLost("no server to send to (none is set, or its SSH tunnel is still opening)")
        causes = [r.cause for r in routes]
        if len(routes) == 1 and causes[0] is not None:
            return causes[0]
        text = "; ".join(f"{r.endpoint}: {r.cause or 'not reachable'}" for r in routes)
        first = causes[0]
        if isinstance(first, AuthenticationFailed | TunnelError) and all(type(c) is type(first) for c in causes):
            return type(first)(text)  # every server refused the key, or every tunnel failed alike
        return ConnectionLost(f"no server reachable for {grace:g} s ({text})")


@functools.lru_cache(maxsize=256)
def _text_steps(text: str) -> tuple[Step, ...]:
    """Pipeline text parsed once (its steps are only read)."""
    return tuple(to_steps(text))


def _bytes_of(payload: Any) -> memoryview:
    """A payload as flat bytes, without a copy (its parts are slices of it)."""
    return memoryview(payload).cast("B")


def _peek_id(frames: Sequence[Buffer]) -> str | None:
    """The id in a malformed reply's header, if it has a readable one (so its request fails now, not at its deadline)."""
    try:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception:
        return None
    value = header.get("id") if isinstance(header, dict) else None
    return value if isinstance(value, str) else None
