"""SSH tunnels to zmqproc servers: open one, and it stays usable, reopened when its SSH session drops, until closed.

``open_tunnel("tcp://127.0.0.1:5555", "user@gateway:22", key="~/.ssh/zmqproc")`` returns a :class:`Tunnel` whose
``local_endpoint`` (``ipc://...``: a Unix socket in a directory only this user can enter) a DEALER connects to. Every
failure to open is a :class:`~zmqproc.errors.TunnelError` subclass raised within ``timeout``; nothing is asked on a
terminal. When the SSH session drops, the tunnel reopens it with backoff on the same local socket (the DEALER reconnects
by itself) until a final refusal (login refused, host key changed or unknown) ends it. The rules are in
:mod:`zmqproc.ssh.rules`, the backends in :mod:`zmqproc.ssh.backend_openssh` and :mod:`zmqproc.ssh.backend_paramiko`, the
owner-only local ends in :mod:`zmqproc.ssh.local`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..endpoints import Endpoint
from ..errors import TunnelDied, TunnelError
from .backend_openssh import OpenSSHSession, installed_version
from .local import local_ends, shutdown_local_ends, tcp_listener, unix_listener, unix_sockets
from .rules import Reopen, SshOptions, State, choose_backend, server_endpoint

log = logging.getLogger("zmqproc.ssh.tunnel")
StateCallback = Callable[["Tunnel", State], None]


class _Session(Protocol):
    def start(self) -> None: ...
    def run(self) -> TunnelError: ...
    def stop(self) -> None: ...


class _Backend(Protocol):
    name: str
    local_endpoint: str

    def session(self) -> _Session: ...
    def close(self) -> None: ...


class _OpenSSH:
    """ssh children listening on one socket path of the private directory, one after another."""

    name = "openssh"

    def __init__(self, ssh: str, version: tuple[int, int], options: SshOptions, endpoint: str, remote: Endpoint) -> None:
        self._args = (ssh, version, options, endpoint, remote)
        self.path = local_ends().socket_path()
        self.local_endpoint = f"ipc://{self.path}"

    def session(self) -> OpenSSHSession:
        return OpenSSHSession(*self._args, self.path)

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Paramiko:
    """One listening socket, kept across SSH sessions: connections made while one reopens wait in its backlog."""

    name = "paramiko"

    def __init__(self, options: SshOptions, endpoint: str, remote: Endpoint) -> None:
        from .backend_paramiko import ParamikoSession  # paramiko loads for paramiko tunnels only

        self._session = ParamikoSession
        self._args = (options, endpoint, remote)
        if unix_sockets():
            self.path: str | None = local_ends().socket_path()
            self.listener = unix_listener(self.path)
            self.local_endpoint = f"ipc://{self.path}"
        else:
            self.path = None
            self.listener = tcp_listener()
            self.local_endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"

    def session(self) -> _Session:
        return self._session(*self._args, self.listener)

    def close(self) -> None:
        self.listener.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


_open_tunnels: weakref.WeakSet[Tunnel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tunnel in list(_open_tunnels):
        tunnel.close()
    shutdown_local_ends()


class Tunnel:
    """A local socket forwarded through SSH to a server endpoint, open until :meth:`close` (or interpreter exit).

    ``state``: ``"open"``; ``"reconnecting"`` (the SSH session dropped and is being opened again, same host-key and
    login rules, same local socket); ``"failed"`` (a final refusal ended reopening: ``error`` holds it and nothing
    listens any more); ``"closed"``. ``on_state_change(tunnel, state)`` is called after each change but ``closed``, on the
    tunnel's own thread: hand the news to your thread or event loop, do not block there.
    """

    def __init__(self, endpoint: str, options: SshOptions, backend: _Backend, on_state_change: StateCallback | None = None) -> None:
        self.endpoint = endpoint
        self.ssh = options.target
        self.options = options
        self.backend = backend.name
        self.local_endpoint = backend.local_endpoint
        self.on_state_change = on_state_change
        self.state: State = "open"
        self.error: TunnelError | None = None
        self._backend = backend
        self._reopen = Reopen()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        session = backend.session()
        try:
            session.start()
        except BaseException:
            backend.close()
            raise
        self._session = session
        self._thread = threading.Thread(target=self._supervise, name=f"zmqproc-tunnel-{self.backend}", daemon=True)
        self._thread.start()
        _open_tunnels.add(self)

    @property
    def pid(self) -> int | None:
        """The running ssh child's pid (openssh backend), else None."""
        proc = getattr(self._session, "proc", None)
        return proc.pid if proc is not None and proc.poll() is None else None

    def alive(self) -> bool:
        return self.state == "open"

    def check(self) -> None:
        """Raise unless open: :class:`TunnelDied` while reconnecting or after close, the final error once failed."""
        if self.state == "failed" and self.error is not None:
            raise self.error
        if self.state == "closed":
            raise TunnelDied(f"the tunnel to {self.endpoint} through {self.ssh} was closed")
        if self.state == "reconnecting":
            raise TunnelDied(f"the SSH session to {self.ssh} dropped; the tunnel to {self.endpoint} is reconnecting")

    def close(self) -> None:
        """End the tunnel: stop the SSH session (or the reopening), remove the local socket; idempotent."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            session = self._session
        session.stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self._backend.close()
        self.state = "closed"
        _open_tunnels.discard(self)

    def _supervise(self) -> None:
        """The tunnel's thread: run the session; when it ends, reopen with backoff until a final error or close()."""
        session = self._session
        while True:
            try:
                ended = session.run()
            except Exception as exc:  # an OS failure or a bug below: the session is gone all the same
                log.exception("the SSH session of %s failed", self)
                ended = TunnelDied(f"the SSH session to {self.ssh} failed: {exc}")
            if self._closing.is_set():
                return
            log.warning("tunnel to %s through %s: %s; reopening", self.endpoint, self.ssh, ended)
            self._set_state("reconnecting")
            reopened = self._reopened(ended)
            if reopened is None:
                return
            session = reopened
            log.warning("tunnel to %s through %s: open again", self.endpoint, self.ssh)
            self._set_state("open")

    def _reopened(self, error: TunnelError) -> _Session | None:
        """A new started session, or None: closed meanwhile, or failed for good (state and error set)."""
        while True:
            delay = self._reopen.delay(error)
            if delay is None:
                log.error("tunnel to %s through %s: %s; it stays down", self.endpoint, self.ssh, error)
                self.error = error
                self._backend.close()
                self._set_state("failed")
                return None
            if self._closing.wait(delay):
                return None
            session = self._backend.session()
            with self._lock:
                if self._closing.is_set():
                    return None
                self._session = session
            try:
                session.start()
            except Exception as exc:  # TunnelError: what ssh or paramiko said; anything else (OSError): try again as well
                if self._closing.is_set():
                    return None
                error = exc if isinstance(exc, TunnelError) else TunnelError(f"reopening the tunnel failed: {exc}")
                continue
            self._reopen.opened()
            return session

    def _set_state(self, state: State) -> None:
        self.state = state
        callback = self.on_state_change
        if callback is not None:
            try:
                callback(self, state)
            except Exception:
                log.exception("on_state_change of the tunnel to %s failed", self.endpoint)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Tunnel {self.backend} {self.local_endpoint} -> {self.ssh} -> {self.endpoint} {self.state}>"


def open_tunnel(endpoint: str, ssh: str | SshOptions, *, on_state_change: StateCallback | None = None, **options: Any) -> Tunnel:
    """Forward a local socket to ``endpoint`` as seen from the SSH host ``ssh`` (``user@host[:port]`` or :class:`SshOptions`).

    ``options`` are :class:`SshOptions` fields: ``key``, ``password``, ``key_passphrase``, ``backend`` (``auto``:
    OpenSSH for keys and ssh-agent when ``ssh`` is on PATH, else paramiko), ``known_hosts``, ``accept_new_host_key``,
    ``timeout``, ``keepalive``. Raises a :class:`~zmqproc.errors.TunnelError` subclass within ``timeout`` (the server
    end is tried once through the tunnel first), ``ValueError`` for options that cannot work together.
    """
    settings = dataclasses.replace(ssh, **options) if isinstance(ssh, SshOptions) else SshOptions(ssh, **options)
    settings = dataclasses.replace(
        settings,  # "" from a settings form means none
        key=os.path.expanduser(settings.key) if settings.key else None,
        known_hosts=os.path.expanduser(settings.known_hosts) if settings.known_hosts else None,
    )
    remote = server_endpoint(endpoint)
    binary = shutil.which("ssh")
    version = installed_version(binary) if binary else None
    chosen = choose_backend(settings, remote, version, unix_sockets())
    if chosen == "openssh":
        assert binary is not None and version is not None
        backend: _Backend = _OpenSSH(binary, version, settings, endpoint, remote)
    else:
        backend = _Paramiko(settings, endpoint, remote)
    return Tunnel(endpoint, settings, backend, on_state_change)


def open_tunnels(endpoints: list[str], ssh: str | SshOptions | None, **options: Any) -> list[Tunnel]:
    """One tunnel per endpoint (none without ``ssh``); if one fails, those already open are closed."""
    tunnels: list[Tunnel] = []
    try:
        for endpoint in endpoints if ssh else []:
            assert ssh is not None
            tunnels.append(open_tunnel(endpoint, ssh, **options))
    except BaseException:
        for tunnel in tunnels:
            tunnel.close()
        raise
    return tunnels
