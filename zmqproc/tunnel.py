"""SSH tunnels to a zmqproc server: a paramiko forwarder in this process, or an OpenSSH ``ssh -N -L`` child.

``open_tunnel("tcp://127.0.0.1:5555", "user@host:22", key=...)`` returns a
:class:`Tunnel` whose ``local_endpoint`` a DEALER connects to. Every failure
(unreachable host, refused port, authentication, unknown or changed host key,
a tunnel that dies) is a :class:`~zmqproc.errors.TunnelError` subclass raised
within ``timeout``; nothing is ever asked on a terminal. Host keys are checked
against known_hosts; a new one is accepted only with ``accept_new_host_key``.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from typing import IO, Any

import paramiko

from .errors import HostKeyChanged, HostKeyUnknown, TunnelAuthFailed, TunnelDied, TunnelError, TunnelTargetRefused, TunnelUnreachable

BACKENDS = ("auto", "paramiko", "openssh")
KEEPALIVE = 5  # seconds between keepalives; 3 missed answers end an OpenSSH tunnel
READ_SIZE = 256 * 1024
CHANNEL_WINDOW = 16 * 1024 * 1024
CHANNEL_PACKET = 256 * 1024  # the largest data packet we take; sshd sends up to its own limit (32 KiB packets: ~20% slower)
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
PARAMIKO_LOG = "zmqproc.tunnel.paramiko"  # paramiko's messages; failures are raised as typed errors, not only logged
logging.getLogger(PARAMIKO_LOG).addHandler(logging.NullHandler())

# -- pure helpers ------------------------------------------------------------------


def parse_ssh_target(ssh: str) -> tuple[str, str, int]:
    """``user@host[:port]`` (``[v6]:port`` too) -> (user, host, port); the user defaults to the local one."""
    user, _, hostport = ssh.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
    if not match or not hostport:
        raise ValueError(f"not an SSH target (user@host[:port]): {ssh!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4) or 22)
    return user or getpass.getuser(), host, port


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port)."""
    match = re.fullmatch(r"tcp://(?:\[([^\]]+)\]|([^:\[\]*]+)):(\d+)", endpoint)
    if not match:
        raise ValueError(f"an SSH tunnel needs a tcp://HOST:PORT endpoint, not {endpoint!r}")
    return match.group(1) or match.group(2), int(match.group(3))


def choose_backend(backend: str, password: str | None, ssh_binary: str | None) -> str:
    """``auto``: OpenSSH when its client exists and no password is needed (keys, BatchMode), else paramiko."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown SSH backend {backend!r} (one of {', '.join(BACKENDS)})")
    if backend == "openssh" and password is not None:
        raise ValueError("the openssh backend logs in with keys only; use the paramiko backend with a password")
    if backend == "openssh" and ssh_binary is None:
        raise ValueError("the openssh backend needs the ssh client on PATH")
    if backend == "auto":
        return "openssh" if ssh_binary and password is None else "paramiko"
    return backend


def openssh_command(
    ssh_binary: str,
    local_port: int,
    remote: tuple[str, int],
    target: tuple[str, str, int],
    *,
    key: str | None,
    known_hosts: str | None,
    accept_new_host_key: bool,
    timeout: float,
) -> list[str]:
    """The ``ssh -N -L`` command line: no prompts, exit when the forward or the connection fails."""
    user, host, port = target
    rhost = f"[{remote[0]}]" if ":" in remote[0] else remote[0]
    cmd = [ssh_binary, "-N", "-T", "-L", f"127.0.0.1:{local_port}:{rhost}:{remote[1]}", "-p", str(port)]
    options = {
        "BatchMode": "yes",
        "ExitOnForwardFailure": "yes",
        "ServerAliveInterval": str(KEEPALIVE),
        "ServerAliveCountMax": "3",
        "ConnectTimeout": str(max(1, round(timeout))),
        "StrictHostKeyChecking": "accept-new" if accept_new_host_key else "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
    }
    if known_hosts:
        options["UserKnownHostsFile"] = f'"{os.path.expanduser(known_hosts)}"'
    if key:
        cmd += ["-i", key]
        options["IdentitiesOnly"] = "yes"
    for name, value in options.items():
        cmd += ["-o", f"{name}={value}"]
    return [*cmd, "--", f"{user}@{host}"]


def ssh_failure(stderr: str, ssh: str, endpoint: str) -> TunnelError:
    """Map what ``ssh`` printed before it gave up to a typed error with a plain message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@")]
    said = lines[-1] if lines else "no message"
    text = stderr.lower()
    if "has changed" in text or "identification has changed" in text:
        return HostKeyChanged(f"the host key of {ssh} does not match known_hosts (a changed key, or someone in between): {said}")
    if "host key is known" in text or "host key verification failed" in text:
        return HostKeyUnknown(f"{ssh} is not in known_hosts; accept its key explicitly (accept_new_host_key / --accept-new-host-key)")
    if "permission denied" in text or "too many authentication failures" in text or "load key" in text:
        return TunnelAuthFailed(f"{ssh} refused the login: {said}")
    if "open failed" in text:
        return TunnelTargetRefused(f"{ssh} could not connect to {endpoint}: {said}")
    if re.search(r"connect to host|could not resolve|no route|unreachable|timed out|connection closed|banner exchange", text):
        return TunnelUnreachable(f"cannot reach the SSH server {ssh}: {said}")
    return TunnelError(f"ssh to {ssh} failed: {said}")


# -- the tunnels -------------------------------------------------------------------------

_open_tunnels: weakref.WeakSet[Tunnel] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tunnel in list(_open_tunnels):
        tunnel.close()


class Tunnel:
    """A local endpoint forwarded to a server endpoint through SSH; ended by :meth:`close` or at exit."""

    backend = ""

    def __init__(self, endpoint: str, ssh: str) -> None:
        self.endpoint = endpoint
        self.ssh = ssh
        self.local_endpoint = ""
        self._closed = False

    def alive(self) -> bool:
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`TunnelDied` if the tunnel ended (and was not closed on purpose)."""
        if self._closed:
            raise TunnelDied(f"the tunnel to {self.endpoint} through {self.ssh} was closed")
        if not self.alive():
            raise self._death()

    def _death(self) -> TunnelDied:
        return TunnelDied(f"the tunnel to {self.endpoint} through {self.ssh} died")

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.local_endpoint} -> {self.ssh} -> {self.endpoint} {state}>"


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, ssh: str) -> None:
        self.ssh = ssh

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyUnknown(
            f"{self.ssh} is not in known_hosts (its {key.get_name()} key is {key.fingerprint}); "
            "accept it explicitly (accept_new_host_key / --accept-new-host-key)"
        )


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Like OpenSSH's ``StrictHostKeyChecking=accept-new``: add an unknown key to known_hosts, still reject a changed one."""

    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class ParamikoTunnel(Tunnel):
    """A forwarder thread: 127.0.0.1:0 -> direct-tcpip channels of one keepalive'd paramiko Transport."""

    backend = "paramiko"

    def __init__(
        self,
        endpoint: str,
        ssh: str,
        *,
        key: str | None,
        password: str | None,
        known_hosts: str | None,
        accept_new_host_key: bool,
        timeout: float,
    ) -> None:
        super().__init__(endpoint, ssh)
        self.remote = parse_endpoint(endpoint)
        user, host, port = parse_ssh_target(ssh)
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        self._client = _ssh_connect(
            ssh, user, host, port, key=key, password=password, known_hosts=known_hosts, accept_new=accept_new_host_key, timeout=timeout
        )
        try:
            transport = self._client.get_transport()
            assert transport is not None
            self._transport = transport
            transport.set_log_channel(PARAMIKO_LOG)
            transport.set_keepalive(KEEPALIVE)
            self._open_channel(("127.0.0.1", 0), max(0.5, deadline - time.monotonic())).close()  # the server end answers
            self._listener = socket.create_server(("127.0.0.1", 0))
        except BaseException:
            _close_client(self._client)
            raise
        self.local_endpoint = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._error: TunnelError | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=f"zmqproc-tunnel-{self.local_endpoint[16:]}", daemon=True)
        self._thread.start()
        _open_tunnels.add(self)

    def alive(self) -> bool:
        return not self._closed and self._thread.is_alive() and self._transport.is_active()

    def _death(self) -> TunnelDied:
        if self._error is not None:
            return TunnelDied(str(self._error))
        return TunnelDied(f"the SSH connection to {self.ssh} ended; the tunnel to {self.endpoint} is gone")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        _close_client(self._client)
        self._wake_r.close()
        self._wake_w.close()
        _open_tunnels.discard(self)

    def _open_channel(self, origin: tuple[str, int], timeout: float) -> paramiko.Channel:
        try:
            return self._transport.open_channel(
                "direct-tcpip", self.remote, origin, window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_PACKET, timeout=timeout
            )
        except paramiko.ChannelException as exc:
            raise TunnelTargetRefused(f"{self.ssh} could not connect to {self.endpoint}: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TunnelTargetRefused(f"{self.ssh} did not open a channel to {self.endpoint}: {exc}") from None

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    if key.fileobj is self._listener:
                        self._accept(sel)
                    elif key.data is not None:
                        self._relay(sel, *key.data)
                if not self._transport.is_active():
                    self._error = TunnelDied(f"the SSH connection to {self.ssh} ended; the tunnel to {self.endpoint} is gone")
                    break
        finally:
            for key in list(sel.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, origin = self._listener.accept()
        except OSError:  # the peer gave up already, or no file descriptor left: the next one may work
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            chan = self._open_channel(origin, self.timeout)
        except TunnelError as exc:
            self._error = exc
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


def _close_client(client: paramiko.SSHClient) -> None:
    """Close the SSH connection and wait for paramiko's reader thread to end."""
    transport = client.get_transport()
    client.close()
    if transport is not None and transport is not threading.current_thread():
        transport.join(timeout=5)


def _ssh_connect(
    ssh: str,
    user: str,
    host: str,
    port: int,
    *,
    key: str | None,
    password: str | None,
    known_hosts: str | None,
    accept_new: bool,
    timeout: float,
) -> paramiko.SSHClient:
    """A logged-in SSHClient over a TCP_NODELAY socket, host key checked; typed errors within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: connection refused") from None
    except socket.gaierror as exc:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: unknown host ({exc.strerror})") from None
    except TimeoutError:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: no answer within {timeout} s") from None
    except OSError as exc:
        raise TunnelUnreachable(f"cannot reach the SSH server {ssh}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = os.path.expanduser(known_hosts or DEFAULT_KNOWN_HOSTS)
    client = paramiko.SSHClient()
    if os.path.exists(path):
        client.load_host_keys(path)
    client.set_missing_host_key_policy(_AcceptNew(path) if accept_new else _RejectUnknown(ssh))
    left = max(0.5, deadline - time.monotonic())
    try:
        client.connect(
            host,
            port,
            username=user,
            password=password,
            key_filename=key,
            look_for_keys=key is None,
            allow_agent=key is None,
            sock=sock,
            timeout=left,
            banner_timeout=left,
            auth_timeout=left,
            channel_timeout=left,
        )
    except BaseException as exc:
        _close_client(client)
        sock.close()
        if isinstance(exc, TunnelError):
            raise
        if isinstance(exc, paramiko.BadHostKeyException):
            raise HostKeyChanged(
                f"the host key of {ssh} does not match {path} (a changed key, or someone in between): "
                f"got {exc.key.get_name()} {exc.key.fingerprint}"
            ) from None
        if isinstance(exc, paramiko.AuthenticationException | paramiko.PasswordRequiredException):
            raise TunnelAuthFailed(f"{ssh} refused the login: {exc}") from None
        if isinstance(exc, FileNotFoundError):
            raise TunnelAuthFailed(f"cannot read the SSH key {key}: {exc.strerror}") from None
        if isinstance(exc, paramiko.SSHException | EOFError | OSError):
            raise TunnelUnreachable(f"no working SSH session with {ssh}: {exc or type(exc).__name__}") from None
        raise
    return client


class OpenSSHTunnel(Tunnel):
    """An ``ssh -N -L 127.0.0.1:PORT:HOST:PORT`` child, in its own session (no terminal), killed on close and at exit."""

    backend = "openssh"

    def __init__(
        self,
        endpoint: str,
        ssh: str,
        *,
        key: str | None,
        known_hosts: str | None,
        accept_new_host_key: bool,
        timeout: float,
        ssh_binary: str = "ssh",
    ) -> None:
        super().__init__(endpoint, ssh)
        remote = parse_endpoint(endpoint)
        target = parse_ssh_target(ssh)
        deadline = time.monotonic() + timeout
        self._stderr: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # another process may take the free port before ssh binds it
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = openssh_command(
                ssh_binary, port, remote, target, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key, timeout=timeout
            )
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (ssh writes here while the tunnel lives; closed in close())
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True
            )
            _open_tunnels.add(self)
            self.local_endpoint = f"tcp://127.0.0.1:{port}"
            try:
                if self._wait_ready(port, deadline):
                    return
            except BaseException:
                self.close()
                raise
            self._end_process()
        self.close()
        raise TunnelError(f"ssh could not listen on a local port for {endpoint}")

    def _wait_ready(self, port: int, deadline: float) -> bool:
        """True once the forward works end to end; False if the local port was taken; else a typed error."""
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                text = self.stderr()
                if "address already in use" in text.lower() or "cannot listen" in text.lower():
                    return False
                raise ssh_failure(text, self.ssh, self.endpoint)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TunnelUnreachable(f"no tunnel through {self.ssh} within the timeout (ssh said: {self.stderr().strip() or 'nothing'})")
            try:
                probe = socket.create_connection(("127.0.0.1", port), timeout=min(left, 1.0))
            except OSError:
                time.sleep(0.02)
                continue
            with probe:  # a ZMTP peer greets at once; ssh closes the connection if the server end refused it
                probe.settimeout(max(0.1, min(left, 2.0)))
                try:
                    greeted = probe.recv(1) != b""
                except TimeoutError:
                    greeted = True  # silent, but the channel opened
                except OSError:
                    greeted = False
            if greeted:
                return True
            time.sleep(0.1)  # let ssh write its "open failed" line
            raise ssh_failure(self.stderr() or "open failed", self.ssh, self.endpoint)

    def stderr(self) -> str:
        """What ssh has printed so far."""
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return not self._closed and self._proc is not None and self._proc.poll() is None

    def _death(self) -> TunnelDied:
        code = self._proc.returncode if self._proc is not None else None
        lines = self.stderr().strip().splitlines()
        said = lines[-1] if lines else "no message"
        return TunnelDied(f"ssh (tunnel to {self.endpoint} through {self.ssh}) exited with {code}: {said}")

    def _end_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end_process()
        _open_tunnels.discard(self)


def open_tunnel(
    endpoint: str,
    ssh: str,
    *,
    key: str | None = None,
    password: str | None = None,
    backend: str = "auto",
    known_hosts: str | None = None,
    accept_new_host_key: bool = False,
    timeout: float = 10.0,
) -> Tunnel:
    """Forward a local port to ``endpoint`` (as seen from the SSH host ``user@host[:port]``).

    ``password`` logs in (paramiko) or unlocks ``key``; ``backend`` is
    ``auto`` (OpenSSH for keys when ``ssh`` exists, else paramiko), ``paramiko``
    or ``openssh``. Raises a :class:`~zmqproc.errors.TunnelError` subclass within
    ``timeout``; the server end is tried once before this returns.
    """
    parse_endpoint(endpoint)
    parse_ssh_target(ssh)
    key = os.path.expanduser(key) if key else None  # "" from a settings form means none
    known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
    ssh_binary = shutil.which("ssh")
    chosen = choose_backend(backend, password, ssh_binary)
    if chosen == "openssh":
        assert ssh_binary is not None
        return OpenSSHTunnel(
            endpoint, ssh, key=key, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key, timeout=timeout, ssh_binary=ssh_binary
        )
    return ParamikoTunnel(
        endpoint, ssh, key=key, password=password, known_hosts=known_hosts, accept_new_host_key=accept_new_host_key, timeout=timeout
    )


def open_tunnels(endpoints: list[str], ssh: str | None, **options: Any) -> list[Tunnel]:
    """One tunnel per endpoint (none without ``ssh``); if one fails, those already open are closed."""
    tunnels: list[Tunnel] = []
    try:
        for endpoint in endpoints if ssh else []:
            tunnels.append(open_tunnel(endpoint, ssh, **options))  # type: ignore[arg-type]
    except BaseException:
        for tunnel in tunnels:
            tunnel.close()
        raise
    return tunnels
