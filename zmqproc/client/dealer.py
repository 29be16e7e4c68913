"""A client's sockets: the DEALER's options, CURVE, its monitor, and what the monitor and the SSH tunnel tell the session.

Shared by :class:`zmqproc.client.Client` and :class:`zmqproc.gui.qt_client.QtClient`, so both configure, read and
turn their sockets alike; neither decides anything from what they see: every event becomes an input of the
:class:`~zmqproc.client.session.ClientSession`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..errors import TunnelError
from ..security import ClientCurve, refusal
from ..zmqflags import send_frames
from .session import TUNNEL_FAILED, TUNNEL_OPEN, TUNNEL_RECONNECTING, ClientSession

if TYPE_CHECKING:
    from ..ssh.tunnel import Tunnel

log = logging.getLogger("zmqproc.client")

MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_SUCCEEDED, _DISCONNECTED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED), int(zmq.EVENT_DISCONNECTED)
CLOSE_LINGER_MS = 500  # closing: how long libzmq may still try to deliver the cancels of abandoned work
_REFUSED = (int(zmq.EVENT_HANDSHAKE_FAILED_AUTH), int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))
_NO_DETAIL = int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def configure(sock: zmq.Socket[Any], curve: ClientCurve | None = None) -> None:
    """Options every zmqproc DEALER uses: queue only to connected servers, ZMTP heartbeats, quick reconnects, no linger."""
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    # A restarted server is found within half a second of listening again, well inside the session's grace.
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    if curve is not None:
        curve.secure(sock)


def open_dealer(ctx: zmq.Context[Any], endpoint: str, curve: ClientCurve | None = None) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """A configured DEALER connecting to ``endpoint``, and its monitor socket (watching :data:`MONITOR_EVENTS`)."""
    sock = ctx.socket(zmq.DEALER)
    configure(sock, curve)
    monitor = sock.get_monitor_socket(MONITOR_EVENTS)
    sock.connect(endpoint)
    return sock, monitor


def close_dealer(sock: zmq.Socket[Any], monitor: zmq.Socket[Any], linger_ms: int = 0) -> None:
    if not sock.closed:
        sock.disable_monitor()
        sock.close(linger=linger_ms)
    monitor.close(linger=0)


def close_session(session: ClientSession, links: Sequence[tuple[zmq.Socket[Any], zmq.Socket[Any]] | None], reason: str) -> None:
    r"""Close ``session`` and its sockets (None: a retired route's, closed already), the ``cancel``\ s it returns for work
    a server holds sent first; libzmq may deliver them for CLOSE_LINGER_MS more (the context is never terminated, so
    nothing waits for it)."""
    for farewell in session.close(reason):
        if (link := links[farewell.route]) is not None:
            send(link[0], farewell.frames)
    for link in links:
        if link is not None:
            close_dealer(*link, CLOSE_LINGER_MS)


def send(sock: zmq.Socket[Any], frames: list[Any]) -> bool:
    """Send a message without blocking or copying big frames; False when the socket would block (or is closed)."""
    try:
        send_frames(sock, frames)
    except zmq.Again:
        return False
    except zmq.ZMQError as exc:  # the socket is closing (ETERM, ENOTSOCK): nothing more can go on it
        log.debug("send failed: %s", exc)
        return False
    return True


def monitor_input(session: ClientSession, route: int, frames: list[Any], endpoint: str, curve: bool, now: float) -> None:
    """One monitor message of ``route`` as the session's input (``curve``: this client uses CURVE keys)."""
    message = parse_monitor_message([f.bytes for f in frames])
    event, value = int(message["event"]), int(message["value"])
    if event == _SUCCEEDED:
        session.connected(route, now)
    elif event == _DISCONNECTED:
        session.disconnected(route, now)
    elif event in _REFUSED:  # the key is not in the allow-list, or one side uses CURVE and the other does not
        session.refused(route, refusal(endpoint, event, value, curve), now)
    elif event == _NO_DETAIL:  # a wrong server key, or a CURVE server hanging up on a plain client before its greeting
        session.cut_short(route, refusal(endpoint, event, value, curve))  # is through (EPIPE): libzmq retries


def tunnel_input(session: ClientSession, route: int, tunnel: Tunnel, now: float) -> None:
    """The state of ``route``'s SSH tunnel as the session's input: open, reconnecting or failed, with the tunnel's reason."""
    try:
        tunnel.check()  # raises unless open: TunnelDied while reconnecting or once closed, the final refusal once failed
    except TunnelError as why:
        session.tunnel(route, TUNNEL_RECONNECTING if tunnel.state == TUNNEL_RECONNECTING else TUNNEL_FAILED, now, why)
        return
    session.tunnel(route, TUNNEL_OPEN, now)


def turn(session: ClientSession, tunnels: Sequence[Tunnel], send: Callable[[int, list[Any]], bool], now: float) -> None:
    """A driver's turn once the sockets are read: the tunnels' states in, time passes, the session's sends out.

    ``send(route, frames)`` is False when that socket would block; such a send, and any on a route known to block,
    goes back to the session, which waits for the route to be writable.
    """
    for route, tunnel in enumerate(tunnels):
        tunnel_input(session, route, tunnel, now)
    session.tick(now)
    for out in session.sends(now):
        if session.blocked(out.route) or not send(out.route, out.frames):
            session.send_failed(out, now)
