"""Connection settings (endpoints, CURVE keys, SSH), their dialog with "Test connection", and SSH tunnels opened off the GUI thread."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import endpoints as endpoint_parser
from ..client.threaded import Client
from ..endpoints import DEFAULT_SERVER, NO_SUCH_HOST, port_state
from ..errors import InvalidEndpoint, TunnelAuthFailed, TunnelKeyLocked
from ..security import ClientCurve
from .messages import explain

ACCEPT_PROBE_S = 0.5  # OK tries each direct endpoint's port this long before warning that nothing answers


@dataclass
class ConnectionSettings:
    """Where the servers are, and optionally the SSH host the connection goes through."""

    endpoints: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    use_ssh: bool = False
    ssh_host: str = ""
    ssh_user: str = ""
    ssh_port: int = 22
    ssh_key: str = ""
    known_hosts: str = ""  # empty: ~/.ssh/known_hosts
    curve_server_key: str = ""  # CURVE: the server's public key file (or its Z85 text); empty: no CURVE
    curve_secret: str = ""  # CURVE: the path of this client's NAME.key_secret (the path only, never the key)

    @property
    def ssh_target(self) -> str:
        user = f"{self.ssh_user}@" if self.ssh_user else ""
        return f"{user}{self.ssh_host}:{self.ssh_port}"

    @classmethod
    def load(cls, settings: QSettings) -> ConnectionSettings:
        d = cls()
        return cls(
            endpoints=string_list(settings.value("connection/endpoints")) or d.endpoints,
            use_ssh=str(settings.value("connection/use_ssh", False)).lower() == "true",
            ssh_host=str(settings.value("connection/ssh_host", "")),
            ssh_user=str(settings.value("connection/ssh_user", "")),
            ssh_port=int(str(settings.value("connection/ssh_port", 22))),
            ssh_key=str(settings.value("connection/ssh_key", "")),
            known_hosts=str(settings.value("connection/known_hosts", "")),
            curve_server_key=str(settings.value("connection/curve_server_key", "")),
            curve_secret=str(settings.value("connection/curve_secret", "")),
        )

    def save(self, settings: QSettings) -> None:
        for key, value in vars(self).items():
            settings.setValue(f"connection/{key}", value)


def string_list(value: object) -> list[str]:
    """A QSettings list (an INI file gives a plain string for a one-item list)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def valid_endpoints(texts: list[str]) -> tuple[list[str], list[str]]:
    """The endpoints zmqproc can use, and a sentence for each one it cannot (``localhost:5599``: write ``tcp://...``)."""
    good, problems = [], []
    for text in texts:
        try:
            good.append(endpoint_parser.check(text))
        except InvalidEndpoint as exc:
            problems.append(str(exc))
    return good, problems


def port_words(endpoint: str, state: str) -> str:
    """``tcp://h:1: port closed``, or ``tcp://typo:1: no such host``."""
    return f"{endpoint}: {state if state == NO_SUCH_HOST else 'port ' + state}"


def check_endpoint(endpoint: str, timeout: float = 3.0, curve_server_key: str = "", curve_secret: str = "") -> str:
    """Blocking: the TCP state of the endpoint's port, then a zmqproc ping's latency when it is open (with CURVE keys if set)."""
    parsed = endpoint_parser.parse(endpoint)
    if parsed.scheme == "tcp":
        state = port_state(parsed.host, parsed.port, timeout)
        if state != "open":
            return port_words(endpoint, state)
    with Client(endpoint, timeout=timeout, curve_server_key=curve_server_key or None, curve_client_key=curve_secret or None) as client:
        try:
            rtt = client.ping()
        except TimeoutError:
            return f"{endpoint}: port open, but no zmqproc reply in {timeout:g} s"
    return f"{endpoint}: port open, ping {rtt * 1000:.1f} ms"


class Background(QObject):
    """Run a blocking call on a plain thread; ``on_done(result, error)`` is called on the GUI thread."""

    done = Signal(object, object)

    def __init__(self, on_done: Callable[[Any, BaseException | None], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._on_done = on_done
        self.done.connect(self._deliver)  # a slot of this GUI-thread object: a queued call from the worker thread

    @Slot(object, object)
    def _deliver(self, result: Any, error: BaseException | None) -> None:
        self._on_done(result, error)

    def run(self, fn: Callable[[], Any]) -> None:
        def work() -> None:
            try:
                result, error = fn(), None
            except Exception as exc:  # handed to the GUI thread, shown in words
                result, error = None, exc
            self.done.emit(result, error)

        threading.Thread(target=work, name="zmqproc-gui-background", daemon=True).start()


@dataclass(frozen=True)
class SshSecrets:
    """The SSH login password and key passphrase the user typed: in memory for this connection only, never saved or logged."""

    password: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)

    def to_ask(self, refused: TunnelAuthFailed, connection: ConnectionSettings) -> tuple[str, str] | None:
        """(field, prompt) of the one secret that can help after ``refused``, each asked once (no prompt loop); else None."""
        if isinstance(refused, TunnelKeyLocked):
            key = connection.ssh_key or "(~/.ssh/id_*)"
            return None if self.key_passphrase is not None else ("key_passphrase", f"Passphrase of the SSH key {key}")
        return None if self.password is not None else ("password", f"Password of {connection.ssh_target}")

    def answered(self, name: str, value: str) -> SshSecrets:
        return dataclasses.replace(self, **{name: value})


def ask_secret(parent: QWidget | None, what: str) -> str | None:
    """A password or a key passphrase (``what`` says which), asked in a Qt dialog, never on a terminal; None if declined."""
    text, ok = QInputDialog.getText(parent, "SSH login", what, QLineEdit.EchoMode.Password)
    return text if ok else None


class ConnectionDialog(QDialog):
    """Endpoints (one a line), CURVE key files, SSH host/user/port/key file, and a Test connection button.

    OK keeps the dialog open, with the reason shown, while an endpoint or a key file is unusable: nothing invalid is saved.
    """

    def __init__(self, settings: ConnectionSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connection")
        self.endpoints = QPlainTextEdit("\n".join(settings.endpoints))
        self.endpoints.setPlaceholderText("tcp://127.0.0.1:5555 (one endpoint a line; several share the work)")
        self.endpoints.setFixedHeight(70)
        self.ssh_box = QGroupBox("Through an SSH tunnel")
        self.ssh_box.setCheckable(True)
        self.ssh_box.setChecked(settings.use_ssh)
        self.ssh_host = QLineEdit(settings.ssh_host)
        self.ssh_user = QLineEdit(settings.ssh_user)
        self.ssh_port = QSpinBox()
        self.ssh_port.setRange(1, 65535)
        self.ssh_port.setValue(settings.ssh_port)
        self.ssh_key = QLineEdit(settings.ssh_key)
        self.ssh_key.setPlaceholderText("optional key file")
        self.ssh_key.setToolTip("a private key file (optional); its passphrase is asked when needed")
        self.known_hosts = QLineEdit(settings.known_hosts)
        self.known_hosts.setPlaceholderText("~/.ssh/known_hosts")
        ssh_form = QFormLayout(self.ssh_box)
        ssh_form.addRow("Host", self.ssh_host)
        ssh_form.addRow("User", self.ssh_user)
        ssh_form.addRow("Port", self.ssh_port)
        ssh_form.addRow("Key file", self._with_browse(self.ssh_key, "SSH private key", os.path.expanduser("~/.ssh")))
        ssh_form.addRow("Known hosts", self.known_hosts)
        self.curve_box = QGroupBox("CURVE encryption and authentication (zmqproc keygen makes the keys)")
        self.curve_server_key = QLineEdit(settings.curve_server_key)
        self.curve_server_key.setPlaceholderText("server.key, or its Z85 text")
        self.curve_server_key.setToolTip("the server's public key: its file (server.key) or its 40-character Z85 text")
        self.curve_secret = QLineEdit(settings.curve_secret)
        self.curve_secret.setPlaceholderText("NAME.key_secret")
        self.curve_secret.setToolTip("this viewer's secret key file: NAME.key_secret (only its path is saved)")
        curve_form = QFormLayout(self.curve_box)
        curve_form.addRow("Server public key", self._with_browse(self.curve_server_key, "Server public key"))
        curve_form.addRow("My secret key", self._with_browse(self.curve_secret, "This viewer's secret key"))
        self.test_button = QPushButton("Test connection")
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept_valid)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Server endpoints (as seen from the SSH host when tunnelling)"))
        layout.addWidget(self.endpoints)
        layout.addWidget(self.curve_box)
        layout.addWidget(self.ssh_box)
        layout.addWidget(self.test_button)
        layout.addWidget(self.test_result)
        layout.addWidget(buttons)
        self._background = Background(self._tested, self)
        self.test_button.clicked.connect(self.test_connection)

    def settings(self) -> ConnectionSettings:
        endpoints = [line.strip() for line in self.endpoints.toPlainText().splitlines() if line.strip()]
        return ConnectionSettings(
            endpoints or [DEFAULT_SERVER],
            self.ssh_box.isChecked(),
            self.ssh_host.text().strip(),
            self.ssh_user.text().strip(),
            self.ssh_port.value(),
            self.ssh_key.text().strip(),
            self.known_hosts.text().strip(),
            self.curve_server_key.text().strip(),
            self.curve_secret.text().strip(),
        )

    def problems(self) -> list[str]:
        """Why these settings cannot be used: invalid endpoints, unreadable CURVE keys (empty: they can)."""
        s = self.settings()
        _, problems = valid_endpoints(s.endpoints)
        try:
            ClientCurve.load(s.curve_server_key or None, s.curve_secret or None)
        except ValueError as exc:
            problems.append(f"CURVE keys: {exc}")
        return problems

    def _accept_valid(self) -> None:
        problems = self.problems()
        if problems:
            self.test_result.setText("\n".join(problems))
            return
        unreachable = self.unreachable()
        if unreachable:
            answer = QMessageBox.question(
                self, "Nothing answers there", "\n".join(unreachable) + "\n\nConnect anyway (the viewer keeps trying)?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                self.test_result.setText("\n".join(unreachable))
                return
        self.accept()

    def unreachable(self, timeout: float = ACCEPT_PROBE_S) -> list[str]:
        """The direct tcp:// endpoints whose host does not resolve or whose port does not take a connection, in words
        (a quick probe on OK; through SSH the tunnel's own errors say it)."""
        if self.settings().use_ssh:
            return []
        found = []
        for endpoint in self.settings().endpoints:
            parsed = endpoint_parser.parse(endpoint)
            if parsed.scheme == "tcp":
                state = port_state(parsed.host, parsed.port, timeout)
                if state != "open":
                    found.append(port_words(endpoint, state))
        return found

    def test_connection(self) -> None:
        """Port open/closed/filtered, then ping latency (for SSH: the SSH port; the tunnel opens on OK)."""
        s = self.settings()
        problems = self.problems()
        if problems:
            self.test_result.setText("\n".join(problems))
            return
        self.test_button.setEnabled(False)
        self.test_result.setText("testing…")
        if s.use_ssh:
            self._background.run(lambda: f"SSH {s.ssh_host}:{s.ssh_port}: port {port_state(s.ssh_host, s.ssh_port, 3.0)}")
        else:
            self._background.run(lambda: "\n".join(check_endpoint(e, 3.0, s.curve_server_key, s.curve_secret) for e in s.endpoints))

    def _tested(self, result: Any, error: BaseException | None) -> None:
        self.test_button.setEnabled(True)
        self.test_result.setText(result if error is None else explain(error))

    def _with_browse(self, edit: QLineEdit, title: str, start: str = "") -> QHBoxLayout:
        """``edit`` with a "…" button that picks a file into it (the dialog opens at its path, else at ``start``)."""
        button = QPushButton("…")
        button.clicked.connect(lambda: self._browse_into(edit, title, start))
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def _browse_into(self, edit: QLineEdit, title: str, start: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, edit.text() or start)
        if path:
            edit.setText(path)
