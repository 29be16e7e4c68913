"""A ZeroMQ socket driven by the Qt event loop: the one place that handles the edge-triggered FD.

ZeroMQ's ``FD`` is edge-triggered and signals *some* change of ``EVENTS``, not
"a message is waiting". So on every ``activated`` the socket is drained while
``EVENTS & POLLIN``, and after every send ``EVENTS`` is checked again, since a
send can consume the edge that announced a waiting reply; a new socket (or
connection) gets one look too, since an edge may have passed unseen. No polling timer, no
thread blocking on ``recv``: any Qt application can reuse this class.
"""

from __future__ import annotations

from typing import Any, cast

import zmq
from PySide6.QtCore import QObject, QSocketNotifier, QTimer, Signal

from ..client import dealer


class QZmqSocket(QObject):
    """A DEALER (by default; or any socket passed in, e.g. a monitor) on the GUI thread.

    ``received`` carries each message's frames (``copy=False``).
    """

    received = Signal(object)  # list[zmq.Frame]
    writable = Signal()  # the socket can take messages again after a send hit zmq.Again

    def __init__(
        self,
        socket_type: int = zmq.DEALER,
        *,
        socket: zmq.Socket[Any] | None = None,
        context: zmq.Context[Any] | None = None,
        max_batch: int = 8,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if socket is None:
            socket = (context or zmq.Context.instance()).socket(socket_type)
            if socket_type == zmq.DEALER:
                dealer.configure(socket)
        self.socket = socket
        self._max_batch = max_batch  # messages per turn of the event loop, so a flood never freezes the window
        self._want_write = False
        self._drain_scheduled = False
        self._notifier = QSocketNotifier(self.socket.FD, QSocketNotifier.Type.Read, self)
        # PySide6 passes a QSocketDescriptor, which the slot does not need.
        self._notifier.activated.connect(lambda _descriptor: self._drain())
        # An edge may have passed before the notifier existed (a monitor's first events do), and a pipe that was
        # never read from does not signal: one look at EVENTS reads what waits and arms the edge.
        self._schedule_drain(force=True)

    @property
    def closed(self) -> bool:
        return self.socket.closed

    def connect_to(self, endpoint: str) -> None:
        self.socket.connect(endpoint)
        self._schedule_drain(force=True)

    def send(self, frames: list[Any]) -> bool:
        """Send without blocking and without copies; False if no peer can take it now (retry on ``writable``)."""
        try:
            sent = dealer.send(self.socket, frames)
            if not sent:
                self._want_write = True
            return sent
        finally:
            self._schedule_drain()

    def close(self) -> None:
        self._notifier.setEnabled(False)
        if not self.socket.closed:
            self.socket.close(linger=0)

    def close_monitored(self, monitor: QZmqSocket) -> None:
        """Close this DEALER and ``monitor``, its monitor socket (the monitor stopped first, as dealer.close_dealer does)."""
        self._notifier.setEnabled(False)
        monitor._notifier.setEnabled(False)
        dealer.close_dealer(self.socket, monitor.socket)

    def _events(self) -> int:
        return cast(int, self.socket.get(zmq.EVENTS))

    def _schedule_drain(self, force: bool = False) -> None:
        if self._drain_scheduled or self.socket.closed:
            return
        if force or self._events() & zmq.POLLIN:
            self._drain_scheduled = True
            QTimer.singleShot(0, self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        count = 0
        while not self.socket.closed:
            events = self._events()
            if self._want_write and events & zmq.POLLOUT:
                self._want_write = False
                self.writable.emit()
                continue
            if not events & zmq.POLLIN:
                return
            if count == self._max_batch:  # let the event loop breathe, then go on
                self._drain_scheduled = True
                QTimer.singleShot(0, self._drain)
                return
            frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            count += 1
            self.received.emit(frames)
