"""Client-side request state, sans I/O: ids, frames, deadlines, reply matching, and routes.

Shared by the threaded :class:`zmqproc.client.Client` and the Qt client: they
move frames; this decides what the frames are, which request a reply ends, and
which server (route) a request goes to. A route is one connection to one
endpoint. The shell reports what it sees (a route up or down, a reply on a
route); the session answers with what to (re)send:

- a route going down (disconnect) orphans the requests sent on it: the server
  cannot answer them on a new connection, so they are sent again, on another
  route or on the same one once it is back;
- a reply with a new ``epoch`` on a route means that server restarted: the
  other requests sent to the old instance are sent again (processing is
  idempotent; a duplicate reply is dropped as late);
- a route whose liveness ping went unanswered is ``suspect``: its requests move
  to the live routes, if there are any.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .images import ImageDescriptor, describe_array, sniff_format
from .pipeline import PipelineSpec, to_steps
from .protocol import Buffer, Credit, Reply, decode_reply, encode_request, process_fields, with_header


@dataclass(slots=True)
class Pending:
    """A request waiting for its reply; ``route`` is None while it waits to be (re)sent."""

    id: str
    kind: str
    frames: list[Any]
    deadline: float
    sent_at: float
    generation: int = 0  # the connection of its route it was last sent on (see Route.generation)
    route: int | None = None
    internal: bool = False  # a liveness ping of the shell, not the caller's
    sends: int = 0
    size: int = 0  # payload bytes (what flow control counts)


@dataclass(slots=True)
class Route:
    """What the session knows of one connection."""

    up: bool = False
    epoch: str | None = None
    generation: int = 0  # counts the route's dropped connections: a reply to an older one says nothing of the epoch
    ping: str | None = None  # the id of the liveness ping out on it, sent or not
    suspect: bool = False
    last_heard: float = 0.0
    assigned: set[str] = field(default_factory=set)
    credit: Credit | None = None  # the latest grant received on this connection (None: not told, or an older server)
    work: int = 0  # process requests outstanding on it, and their payload bytes
    work_bytes: int = 0

    def admits(self, size: int) -> bool:
        """Whether one more process request of ``size`` bytes fits this connection's grant (one, until a grant arrives)."""
        if self.credit is None:
            return self.epoch is not None or self.work == 0
        return self.credit.admits(self.work, self.work_bytes, size)


class ClientSession:
    """Builds request frames, routes requests and matches replies to them by id."""

    def __init__(self, routes: int = 1) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._pending: dict[str, Pending] = {}
        self._unsent: dict[str, Pending] = {}  # in order of creation
        self._deadlines: list[tuple[float, str]] = []
        self.routes = [Route() for _ in range(routes)]
        self.epoch: str | None = None
        self.late_replies = 0
        self.resent = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._pending

    # -- building requests --------------------------------------------------------

    def request(
        self, kind: str, fields: dict[str, Any] | None, payload: Any, timeout: float, now: float, internal: bool = False
    ) -> Pending:
        """Register a request; it waits in :meth:`unsent` until the shell sends it."""
        request_id = f"{self._prefix}-{next(self._counter)}"
        pending = Pending(request_id, kind, encode_request(kind, request_id, fields, payload), now + timeout, now, internal=internal)
        self._pending[request_id] = pending
        self._unsent[request_id] = pending
        heapq.heappush(self._deadlines, (pending.deadline, request_id))
        return pending

    def process_request(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        timeout: float,
        now: float,
        reply_format: str | None = None,
    ) -> Pending:
        """A ``process`` request for an array (sent raw, without a copy) or an encoded file's bytes."""
        payload: Any
        if isinstance(image, np.ndarray):
            desc, payload = describe_array(image)
        else:
            payload = image
            desc = ImageDescriptor(sniff_format(bytes(memoryview(image)[:16])))
        fields = process_fields(to_steps(pipeline), desc, reply_format, deadline_ms=round(timeout * 1000))
        pending = self.request("process", fields, payload, timeout, now)
        pending.size = len(memoryview(payload).cast("B"))
        return pending

    # -- routing --------------------------------------------------------------------

    def unsent(self) -> list[Pending]:
        """Requests to send (new, or orphaned by a route), oldest first."""
        return list(self._unsent.values())

    def pick_route(self, exclude: Sequence[int] = (), size: int | None = None) -> int | None:
        """The up route with the least work, preferring routes that are not suspect; None if none is up.

        With ``size`` (a process request's payload bytes), only routes whose credit admits it.
        """
        best: tuple[bool, int, int] | None = None
        for index, route in enumerate(self.routes):
            if route.up and index not in exclude and (size is None or route.admits(size)):
                key = (route.suspect, len(route.assigned), index)
                best = key if best is None or key < best else best
        return None if best is None else best[2]

    def frames(self, pending: Pending, now: float, route: int) -> list[Any]:
        """The frames to send now on ``route``: a process request names its grant, and a resend carries the time left."""
        if pending.kind != "process":
            return pending.frames
        keys: dict[str, Any] = {}
        credit = self.routes[route].credit
        if credit is not None:
            keys["credit_seq"] = credit.seq
        if pending.sends:
            keys["deadline_ms"] = max(0, round((pending.deadline - now) * 1000))
        return with_header(pending.frames, **keys) if keys else pending.frames

    def sent(self, pending: Pending, route: int, now: float) -> None:
        """The shell sent ``pending`` on ``route``."""
        self._unsent.pop(pending.id, None)
        self._unassign(pending)
        if pending.sends:
            self.resent += 1
        pending.route, pending.sent_at, pending.sends = route, now, pending.sends + 1
        pending.generation = self.routes[route].generation
        state = self.routes[route]
        state.assigned.add(pending.id)
        if pending.kind == "process":
            state.work += 1
            state.work_bytes += pending.size

    def _unassign(self, pending: Pending) -> None:
        if pending.route is None:
            return
        state = self.routes[pending.route]
        if pending.id in state.assigned:
            state.assigned.discard(pending.id)
            if pending.kind == "process":
                state.work -= 1
                state.work_bytes -= pending.size

    def route_up(self, route: int, now: float) -> None:
        state = self.routes[route]
        state.up, state.suspect, state.last_heard = True, False, now

    def route_down(self, route: int) -> list[Pending]:
        """The connection dropped: what was sent on it is orphaned and will be sent again.

        The epoch is forgotten too: the first reply after the reconnect tells it
        anew, without orphaning the requests just sent again.
        """
        state = self.routes[route]
        state.up, state.epoch, state.credit = False, None, None
        state.generation += 1
        return self._orphan(route)

    def route_silent(self, route: int) -> list[Pending]:
        """A liveness ping went unanswered: move the route's work to live routes, if there are any."""
        self.routes[route].suspect = True
        others = [i for i, r in enumerate(self.routes) if i != route and r.up and not r.suspect]
        return self._orphan(route) if others else []

    def needs_ping(self, route: int, now: float, interval: float) -> bool:
        """True when ``route`` has work out, has been silent for ``interval``, and no ping is out on it."""
        state = self.routes[route]
        if not state.up or not state.assigned or now - state.last_heard < interval:
            return False
        return state.ping not in self._pending

    def liveness_ping(self, route: int, timeout: float, now: float) -> Pending:
        """An internal ping pinned to ``route`` (see :meth:`needs_ping` and :meth:`route_silent`)."""
        ping = self.request("ping", None, None, timeout, now, internal=True)
        ping.route = route
        self.routes[route].ping = ping.id
        return ping

    def _orphan(self, route: int) -> list[Pending]:
        state = self.routes[route]
        orphans = [self._pending[i] for i in state.assigned if i in self._pending]
        for pending in sorted(orphans, key=lambda p: p.sent_at):
            if pending.internal:  # a ping is not worth resending: the next one goes out when due
                self.forget(pending.id)
                continue
            self._unassign(pending)
            pending.route = None
            self._unsent[pending.id] = pending
        return [p for p in orphans if not p.internal]

    # -- replies and deadlines ------------------------------------------------------

    def receive(self, frames: Sequence[Buffer], route: int = 0, now: float = 0.0) -> tuple[Pending, Reply] | None:
        """Match a reply; None for a reply nobody waits for any more (late or unknown: dropped).

        A new epoch on ``route`` sends the route's other requests again. Only a
        reply to a request sent on the route's current connection tells the
        epoch: an unmatched reply, or one that crossed a reconnect, may come
        from the old instance.
        Raises MalformedReply for a message that breaks the contract.
        """
        reply = decode_reply(frames)
        state = self.routes[route]
        state.last_heard, state.suspect = now, False
        pending = self._pending.pop(reply.id, None) if reply.id is not None else None
        current = pending is not None and pending.route == route and pending.generation == state.generation
        if pending is not None:
            self._unsent.pop(pending.id, None)
            self._unassign(pending)
        if current and reply.credit is not None:
            state.credit = reply.credit
        epoch = reply.epoch
        if current and epoch is not None and epoch != state.epoch:
            if state.epoch is not None:
                self._orphan(route)
            state.epoch = epoch
            self.epoch = epoch
        if pending is None:
            self.late_replies += 1
            return None
        return pending, reply

    def forget(self, request_id: str) -> Pending | None:
        pending = self._pending.pop(request_id, None)
        self._unsent.pop(request_id, None)
        if pending is not None:
            self._unassign(pending)
        return pending

    def expire(self, now: float) -> list[Pending]:
        """Pending requests whose deadline has passed; they are forgotten."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            pending = self.forget(request_id)
            if pending is not None:
                expired.append(pending)
        return expired

    def next_deadline(self) -> float | None:
        """When the earliest pending request expires (None when nothing is pending)."""
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def pending(self) -> list[Pending]:
        return list(self._pending.values())
