"""The viewer's connection: endpoints, CURVE keys and SSH tunnels set up on the client, and its state in the status bar.

Tunnels open on a background thread; a password or key passphrase is asked in a
dialog (each at most once, kept in memory only), an unknown host key is shown
for the user to trust. The state label says connecting / connected (with the
ping) / slow / lost, "SSH reconnecting" while a tunnel heals itself, and
"transferring (2.5 MB/s)" while a payload or a result moves in parts: a ping
that waits behind them is no sign of a slow or lost server (:attr:`state`
decides which).
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from ..errors import HostKeyUnknown, TunnelAuthFailed
from ..security import ClientCurve
from .connection import Background, ConnectionDialog, ConnectionSettings, SshSecrets, ask_secret, valid_endpoints
from .messages import explain, rate
from .qt_client import CONNECTED, CONNECTING, LOST, SLOW, QtClient

TRANSFERRING = "transferring"
MOVING_HOLD_S = 1.5  # a transfer whose last part moved this long ago no longer counts as moving
STATE_TEXT = {
    CONNECTING: ("#999", "connecting…"),
    CONNECTED: ("#2a2", "connected"),
    SLOW: ("#d90", "slow"),
    LOST: ("#d22", "lost"),
    TRANSFERRING: ("#27c", "transferring"),
    "ssh_reconnecting": ("#d90", "SSH reconnecting…"),
    "ssh_failed": ("#d22", "SSH tunnel failed"),
}


class ConnectionControl(QObject):
    """``notice(message, level)`` for the window's notice; ``status(message, ms)`` for its status bar."""

    notice = Signal(str, str)
    status = Signal(str, int)

    def __init__(self, client: QtClient, connection: ConnectionSettings, parent: QWidget) -> None:
        super().__init__(parent)
        self.client = client
        self.connection = connection
        self.tunnels: list[Any] = []
        self.label = QLabel()
        self._window = parent
        self._state, self._rtt = CONNECTING, -1.0
        self._moving: dict[str, tuple[float, float]] = {}  # request id -> (when its last part moved, the route's rate)
        self._still = QTimer(self)  # the label looks again once the bytes may have stopped
        self._still.setSingleShot(True)
        self._still.timeout.connect(self._show)
        client.stateChanged.connect(self._on_state)
        client.tunnelChanged.connect(self._show)
        client.transferred.connect(self._on_transfer)
        client.replicasChanged.connect(self._show)
        self._show()

    @property
    def state(self) -> str:
        """connecting, connected, slow, lost, ssh_reconnecting, or transferring while bytes move (whatever the pings say:
        they wait behind the parts); the one place that decides what the label says."""
        if self._state != "ssh_failed" and self.transfer_rate() is not None:
            return TRANSFERRING
        if self._state != CONNECTED and any(getattr(t, "state", "open") == "reconnecting" for t in self.tunnels):
            return "ssh_reconnecting"
        return self._state

    def transfer_rate(self) -> float | None:
        """Bytes/s of the transfers moving now (0: not measured yet), or None when none moved in the last moments."""
        now = time.monotonic()
        self._moving = {rid: (at, r) for rid, (at, r) in self._moving.items() if now - at < MOVING_HOLD_S}
        return max((r for _, r in self._moving.values()), default=0.0) if self._moving else None

    def connect_to(self, connection: ConnectionSettings, *, secrets: SshSecrets | None = None, accept_new: bool = False) -> None:
        """Connect directly, or open SSH tunnels first (off the GUI thread)."""
        self.connection = connection
        secrets = secrets or SshSecrets()
        self.close_tunnels()
        endpoints, problems = valid_endpoints(connection.endpoints)
        try:
            curve = ClientCurve.load(connection.curve_server_key or None, connection.curve_secret or None)
        except ValueError as exc:
            curve = None
            problems.append(f"CURVE keys: {exc}")
        if problems:
            self.client.set_endpoints([])
            self.notice.emit("Cannot connect: " + "; ".join(problems) + " (Server → Connection… to fix it).", "error")
            return
        if not connection.use_ssh:
            self.client.set_endpoints(endpoints, curve=curve)
            self.client.request_ops()
            return
        from ..ssh.tunnel import open_tunnels

        def open_all() -> list[Any]:
            return open_tunnels(
                connection.endpoints,
                connection.ssh_target,
                key=connection.ssh_key or None,
                password=secrets.password,
                key_passphrase=secrets.key_passphrase,
                known_hosts=connection.known_hosts or None,
                accept_new_host_key=accept_new,
            )

        self.client.set_endpoints([])
        self.status.emit(f"opening an SSH tunnel through {connection.ssh_target}…", 0)
        Background(lambda tunnels, error: self._tunnels_opened(connection, curve, tunnels, error, secrets, accept_new), self).run(open_all)

    def dialog(self, settings: Any) -> None:
        """Server → Connection…: edit, save and connect."""
        dialog = ConnectionDialog(self.connection, self._window)
        if dialog.exec():
            chosen = dialog.settings()
            chosen.save(settings)
            self.connect_to(chosen)

    def close_tunnels(self) -> None:
        for tunnel in self.tunnels:
            tunnel.close()
        self.tunnels = []

    def _tunnels_opened(
        self, connection: ConnectionSettings, curve: ClientCurve | None, tunnels: Any, error: Any, secrets: SshSecrets, accept_new: bool
    ) -> None:
        if connection is not self.connection:  # the user chose another connection meanwhile
            for tunnel in tunnels or []:
                tunnel.close()
            return
        if error is None:
            self.tunnels = tunnels
            self.client.set_endpoints(connection.endpoints, curve=curve, tunnels=tunnels)
            self.client.request_ops()
            self.status.emit(f"tunnel through {connection.ssh_target} open", 5000)
            return
        if isinstance(error, TunnelAuthFailed):
            wanted = secrets.to_ask(error, connection)  # the key's passphrase or the login password, each asked once
            typed = ask_secret(self._window, wanted[1]) if wanted is not None else None
            if wanted is not None and typed is not None:
                self.connect_to(connection, secrets=secrets.answered(wanted[0], typed), accept_new=accept_new)
                return
        elif isinstance(error, HostKeyUnknown):
            answer = QMessageBox.question(self._window, "Unknown SSH host", f"{error}\n\nTrust this host and remember its key?")
            if answer == QMessageBox.StandardButton.Yes:
                self.connect_to(connection, secrets=secrets, accept_new=True)
                return
        self._state = "ssh_failed"  # final: the label says so until the user connects again
        self._show()
        self.status.emit("", 1)  # the "opening an SSH tunnel…" message goes
        self.notice.emit(f"Could not open the SSH tunnel. {explain(error)}", "error")

    def _on_state(self, state: str, rtt: float) -> None:
        if self._state == "ssh_failed" and not self.client.endpoints:
            return  # no connection to speak of: the failure stays on the label
        self._state, self._rtt = state, rtt
        self._show()
        if state == LOST and self.state != TRANSFERRING:
            self.status.emit("The server does not answer; the viewer keeps trying to reconnect.", 0)

    def _on_transfer(self, request_id: str, progress: Any) -> None:
        """A part of a payload or result moved: transferring until the last of it (or for a moment after the latest)."""
        if progress.up - progress.sent + progress.down - progress.received > 0:
            self._moving[request_id] = (time.monotonic(), progress.rate)
            self._still.start(int(MOVING_HOLD_S * 1000) + 10)
        else:
            self._moving.pop(request_id, None)
        self._show()

    def _show(self) -> None:
        state = self.state
        color, text = STATE_TEXT[state]
        detail = f" ({self._rtt * 1000:.0f} ms)" if self._rtt >= 0 and state in (CONNECTED, SLOW) else ""
        if state == TRANSFERRING:
            moving = self.transfer_rate()
            detail = f" ({rate(moving)})" if moving else ""
        where = ", ".join(self.connection.endpoints)
        replicas = self.client.replicas()
        if len(replicas) > len(self.connection.endpoints):  # a name stands for several servers
            where += f" ({len(replicas)} replicas)"
        self.label.setText(f"<span style='color:{color}'>●</span> {where} {text}{detail}")
        self.label.setProperty("state", state)
