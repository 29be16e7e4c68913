r"""What the client session returns: frames to send, and what happened (h11's events, for zmqproc's client).

:class:`Send` is an instruction for the driver; the rest are :data:`Event`\ s, taken with
:meth:`zmqproc.client.session.ClientSession.events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frames`` on ``route`` now (and report :meth:`ClientSession.send_failed` if the socket would block)."""

    route: int
    frames: list[Any]
    request_id: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """Request ``request_id`` succeeded: ``value`` is a :class:`Processed`, a ping's round trip (s), the op list or the stats."""

    request_id: str
    value: Any


@dataclass(frozen=True, slots=True)
class Fail:
    """Request ``request_id`` ended with ``error`` (a ProcessingError from the server, or a ClientError)."""

    request_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class RouteChanged:
    """Route ``route`` is now ``state`` (connecting, connected, slow, lost); ``rtt`` is its last ping round trip (-1: unknown)."""

    route: int
    state: str
    rtt: float


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The client as a whole: connected or slow if some route answers (``rtt``: the best), else connecting or lost."""

    state: str
    rtt: float


@dataclass(frozen=True, slots=True)
class ServerRestarted:
    """A new server instance (``epoch``) answers on ``route``; what the old one held is sent again."""

    route: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Progress:
    """Request ``request_id``'s payload travels in parts: bytes ``sent`` of ``up`` answered by the server (``up`` 0: it
    went in one piece), ``received`` of ``down`` of its result (``down`` 0: not known yet); ``rate``: the route's
    measured throughput, bytes/s (0 while unknown)."""

    request_id: str
    sent: int
    up: int
    received: int
    down: int
    rate: float

    @property
    def eta(self) -> float | None:
        """Seconds until the bytes known of are through, at the measured rate (None while it is unknown)."""
        left = self.up - self.sent + self.down - self.received
        return left / self.rate if self.rate > 0 else None


@dataclass(frozen=True, slots=True)
class RouteAdded:
    """A name resolved to a new address: route ``route`` connects to ``endpoint`` (the driver opens its socket)."""

    route: int
    endpoint: str


@dataclass(frozen=True, slots=True)
class RouteRetired:
    """Route ``route``'s address no longer resolves and nothing is out on it: the driver closes its socket for good."""

    route: int


Event = Resolve | Fail | RouteChanged | StateChanged | ServerRestarted | Progress | RouteAdded | RouteRetired
