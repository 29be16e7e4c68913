"""The paramiko backend: one SSH session whose ``direct-tcpip`` channels a relay loop joins to the tunnel's local socket.

Where the time went, and what this does about it (docs/benchmarks.md#ssh-tunnel has the profile and the figures):

- sshd sets no TCP_NODELAY on a forward-only connection (no shell or command), so it holds back a short last segment
  until our ACK, which Linux delays up to 40 ms: a fifth of VGA round trips took 45-55 ms. The socket under the
  Transport re-arms TCP_QUICKACK after every read (the kernel clears it), so that ACK goes out at once.
- paramiko reads each packet in two or three ``recv`` calls; one 256 KiB read here serves many packets.
- AES-GCM is offered first: one AEAD call per packet instead of AES-CTR plus a Python-level HMAC, and cheaper for sshd too.
- Channels get a 16 MiB window and 256 KiB packets; the relay reads 256 KiB at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from typing import Any

import paramiko
from paramiko.auth_strategy import AuthStrategy, InMemoryPrivateKey, OnDiskPrivateKey, Password

from ..endpoints import Endpoint
from ..errors import (
    HostKeyChanged,
    HostKeyUnknown,
    TunnelAuthFailed,
    TunnelDied,
    TunnelError,
    TunnelKeyLocked,
    TunnelTargetRefused,
    TunnelUnreachable,
)
from .rules import PREFERRED_CIPHERS, SshOptions, key_is_encrypted

READ_SIZE = 256 * 1024  # what the relay reads from a channel or the local socket at a time
READ_AHEAD = 256 * 1024  # what the transport socket reads at a time (paramiko asks for one packet's parts)
CHANNEL_WINDOW = 16 * 1024 * 1024
CHANNEL_PACKET = 256 * 1024  # the largest data packet we take (sshd sends 32 KiB ones)
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
KEEPALIVE_MISSES = 3
PARAMIKO_LOG = "zmqproc.ssh.tunnel.paramiko"  # paramiko's own messages; failures are raised as typed errors, not only logged
logging.getLogger(PARAMIKO_LOG).addHandler(logging.NullHandler())
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


class _TransportSocket(socket.socket):
    """The TCP socket under paramiko's Transport: reads ahead in large pieces and acknowledges at once."""

    _ahead = b""
    _at = 0

    @classmethod
    def wrap(cls, sock: socket.socket) -> _TransportSocket:
        wrapped = cls(sock.family, sock.type, sock.proto, sock.detach())
        wrapped.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return wrapped

    def recv(self, n: int, flags: int = 0) -> bytes:
        if self._at < len(self._ahead):
            out = self._ahead[self._at : self._at + n]
            self._at += len(out)
            return out
        data = super().recv(max(n, READ_AHEAD), flags)
        if _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if len(data) <= n:
            return data
        self._ahead, self._at = data, n
        return data[:n]


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A Transport that offers AES-GCM first (where this paramiko has it), then its own order."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    head = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers)
    options.ciphers = head + tuple(c for c in options.ciphers if c not in head)
    return transport


class _RejectUnknown(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko is untyped
    def __init__(self, ssh: str) -> None:
        self.ssh = ssh

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyUnknown(
            f"{self.ssh} is not in known_hosts (its {key.get_name()} key is {key.fingerprint}); "
            "accept it explicitly (accept_new_host_key / --accept-new-host-key)"
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko is untyped
    """Like OpenSSH's ``StrictHostKeyChecking=accept-new``: add an unknown key to known_hosts, still reject a changed one."""

    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _Logins(AuthStrategy):  # type: ignore[misc]  # paramiko is untyped
    """Exactly what the options allow, in order: the key (or ssh-agent's keys, then the default keys), then the password.

    The key passphrase only unlocks key files; it is never offered to the server as a password.
    """

    def __init__(self, user: str, keys: list[tuple[str, paramiko.PKey]], agent: paramiko.Agent | None, password: str | None) -> None:
        super().__init__(ssh_config=None)
        self.user, self.keys, self.agent, self.password = user, keys, agent, password

    def get_sources(self) -> Any:
        for path, pkey in self.keys:
            yield OnDiskPrivateKey(self.user, "python-config", path, pkey)
        for pkey in self.agent.get_keys() if self.agent is not None else ():
            yield InMemoryPrivateKey(self.user, pkey)
        if self.password is not None:
            password = self.password
            yield Password(self.user, lambda: password)


def _load_key(path: str, passphrase: str | None) -> paramiko.PKey:
    """The private key at ``path``, unlocked with ``passphrase`` if it is encrypted; typed errors otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TunnelAuthFailed(f"cannot read the SSH key {path}: {exc.strerror or exc}") from None
    encrypted = key_is_encrypted(data)
    if encrypted and passphrase is None:
        raise TunnelKeyLocked(f"the SSH key {path} is encrypted: give its passphrase (ssh_key_passphrase / --ssh-ask-passphrase)")
    try:
        return paramiko.PKey.from_path(path, passphrase.encode() if encrypted and passphrase is not None else None)
    except (ValueError, TypeError, paramiko.SSHException) as exc:
        if encrypted:
            raise TunnelKeyLocked(f"could not unlock the SSH key {path}: wrong passphrase?") from None
        raise TunnelAuthFailed(f"cannot use the SSH key {path}: {exc}") from None


def _keys(options: SshOptions) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """The key files to offer, and the default ones left out because they are encrypted and no passphrase was given."""
    if options.key:
        return [(options.key, _load_key(options.key, options.key_passphrase))], []
    keys, locked = [], []
    for path in map(os.path.expanduser, DEFAULT_KEYS):
        if os.path.isfile(path):
            try:
                keys.append((path, _load_key(path, options.key_passphrase)))
            except TunnelKeyLocked:
                locked.append(path)
            except TunnelAuthFailed:
                pass  # a key type paramiko does not know: ssh would skip it too
    return keys, locked


def _connect(options: SshOptions, sock: socket.socket, deadline: float) -> paramiko.SSHClient:
    """A logged-in SSHClient over ``sock`` (connected), host key checked; typed errors."""
    ssh = options.target
    target = options.ssh_target
    keys, locked = _keys(options)
    path = os.path.expanduser(options.known_hosts or DEFAULT_KNOWN_HOSTS)
    client = paramiko.SSHClient()
    if os.path.exists(path):
        client.load_host_keys(path)
    client.set_missing_host_key_policy(_AcceptNew(path) if options.accept_new_host_key else _RejectUnknown(ssh))
    agent = paramiko.Agent() if not options.key else None
    left = max(0.5, deadline - time.monotonic())
    try:
        client.connect(
            target.host,
            target.port,
            username=target.user,
            sock=sock,
            timeout=left,
            banner_timeout=left,
            auth_timeout=left,
            channel_timeout=left,
            auth_strategy=_Logins(target.user, keys, agent, options.password),
            transport_factory=_transport,
        )
    except BaseException as exc:
        _close_client(client)
        if isinstance(exc, TunnelError):
            raise
        if isinstance(exc, paramiko.BadHostKeyException):
            raise HostKeyChanged(
                f"the host key of {ssh} does not match {path} (a changed key, or someone in between): "
                f"got {exc.key.get_name()} {exc.key.fingerprint}"
            ) from None
        if isinstance(exc, paramiko.AuthenticationException):
            tried = [f"key {p}" for p, _ in keys] + (["ssh-agent"] if agent is not None and agent.get_keys() else [])
            tried += ["password"] if options.password is not None else []
            said = f"{ssh} refused the login (offered: {', '.join(tried) or 'nothing'})"
            if locked and options.password is None:
                raise TunnelKeyLocked(f"{said}; {', '.join(locked)} is encrypted: give its passphrase") from None
            raise TunnelAuthFailed(said) from None
        if isinstance(exc, paramiko.SSHException | EOFError | OSError):
            raise TunnelUnreachable(f"no working SSH session with {ssh}: {exc or type(exc).__name__}") from None
        raise
    finally:
        if agent is not None:
            agent.close()
    return client


def _close_client(client: paramiko.SSHClient) -> None:
    """Close the SSH connection and wait for paramiko's reader thread to end."""
    transport = client.get_transport()
    client.close()
    if transport is not None and transport is not threading.current_thread():
        transport.join(timeout=5)


def _tcp_connect(options: SshOptions, deadline: float) -> socket.socket:
    target, ssh = options.ssh_target, options.target
    left = max(0.1, deadline - time.monotonic())
    try:
        return socket.create_connection((target.host, target.port), timeout=left)
    except ConnectionRefusedError:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: connection refused") from None
    except socket.gaierror as exc:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: unknown host ({exc.strerror})") from None
    except TimeoutError:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: no answer within {options.timeout:g} s") from None
    except OSError as exc:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: {exc.strerror or exc}") from None


class ParamikoSession:
    """One SSH session relaying the connections made to ``listener`` (kept by the tunnel across sessions)."""

    def __init__(self, options: SshOptions, endpoint: str, remote: Endpoint, listener: socket.socket) -> None:
        self.options, self.endpoint, self.remote, self.listener = options, endpoint, remote, listener
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sock: socket.socket | None = None
        self._client: paramiko.SSHClient | None = None
        self._transport: paramiko.Transport | None = None
        self._answered = 0.0

    def start(self) -> None:
        """Connect, check the host key, log in, and open one channel to the server: typed errors within the timeout."""
        deadline = time.monotonic() + self.options.timeout
        try:
            self._sock = _TransportSocket.wrap(_tcp_connect(self.options, deadline))
            if self._stopped.is_set():
                raise TunnelDied("the tunnel was closed while it opened")
            self._client = _connect(self.options, self._sock, deadline)
            self._transport = self._client.get_transport()
            assert self._transport is not None
            self._transport.set_log_channel(PARAMIKO_LOG)
            self._open_channel(("127.0.0.1", 0), max(0.5, deadline - time.monotonic())).close()  # the server end answers
        except BaseException:
            self._release()
            raise

    def run(self) -> TunnelError:
        """Relay until the session ends (or :meth:`stop`); return why it ended."""
        assert self._transport is not None
        self._answered = time.monotonic()
        keepalive = threading.Thread(target=self._keepalive, name="zmqproc-tunnel-keepalive", daemon=True)
        keepalive.start()
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopped.is_set():
                for key, _ in sel.select(timeout=min(0.5, self.options.keepalive)):
                    if key.fileobj is self.listener:
                        self._accept(sel)
                    elif key.data is not None:
                        self._relay(sel, *key.data)
                if not self._transport.is_active():
                    return TunnelDied(f"the SSH connection to {self.options.target} ended")
                silent = time.monotonic() - self._answered
                if silent > KEEPALIVE_MISSES * self.options.keepalive + 1:
                    return TunnelDied(f"{self.options.target} did not answer keepalives for {silent:.0f} s")
            return TunnelDied("the tunnel was closed")
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    with contextlib.suppress(OSError):
                        key.fileobj.close()  # type: ignore[union-attr]
            sel.close()
            self._stopped.set()
            self._release()
            keepalive.join(timeout=5)

    def stop(self) -> None:
        """End the session from another thread: :meth:`start` raises, :meth:`run` returns."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        client, sock = self._client, self._sock
        transport = client.get_transport() if client is not None else None
        if transport is not None:  # ends a relay waiting for the server's window, or a channel being opened
            transport.close()  # (the client stays: _release closes it and joins paramiko's thread)
        elif sock is not None:  # still logging in: cut the socket under it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        if self._client is not None:
            _close_client(self._client)
        elif self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _keepalive(self) -> None:
        """Every ``keepalive`` seconds a request the server must answer (OpenSSH's ServerAliveInterval)."""
        transport = self._transport
        assert transport is not None
        while not self._stopped.wait(self.options.keepalive):
            transport.global_request("keepalive@openssh.com", wait=True)  # returns on the answer, or when the session ends
            if transport.is_active():
                self._answered = time.monotonic()

    def _open_channel(self, origin: tuple[str, int], timeout: float) -> paramiko.Channel:
        assert self._transport is not None
        try:
            return self._transport.open_channel(
                "direct-tcpip",
                (self.remote.host, self.remote.port),
                origin,
                window_size=CHANNEL_WINDOW,
                max_packet_size=CHANNEL_PACKET,
                timeout=timeout,
            )
        except paramiko.ChannelException as exc:
            raise TunnelTargetRefused(f"{self.options.target} could not connect to {self.endpoint}: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TunnelTargetRefused(f"{self.options.target} did not open a channel to {self.endpoint}: {exc}") from None

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, origin = self.listener.accept()
        except OSError:  # the peer gave up already, or no file descriptor left: the next one may work
            return
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            chan = self._open_channel(origin if isinstance(origin, tuple) else ("127.0.0.1", 0), self.options.timeout)
        except TunnelError as exc:  # the server end refused this one: its client retries; the session stays up
            logging.getLogger("zmqproc.ssh.tunnel").info("%s", exc)
            conn.close()
            return
        sel.register(conn, selectors.EVENT_READ, (conn, chan))
        sel.register(chan, selectors.EVENT_READ, (chan, conn))

    @staticmethod
    def _relay(sel: selectors.BaseSelector, src: Any, dst: Any) -> None:
        try:
            data = src.recv(READ_SIZE)
            if data:
                dst.sendall(data)
                return
        except (OSError, EOFError, paramiko.SSHException):
            pass
        for end in (src, dst):
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(end)
            with contextlib.suppress(OSError):
                end.close()
