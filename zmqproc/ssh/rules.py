"""What an SSH tunnel is and the rules it follows: no sockets, no processes, no paramiko.

The SSH target (``user@host[:port]``) and the server endpoint as seen from that host, the options a tunnel is opened
with (secrets never in a ``repr``), which backend serves them, the ``ssh`` command line, what ssh printed as a typed
error, and when a tunnel whose SSH session ended is opened again. The CLI and the viewer use it without loading paramiko.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import re
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from .. import endpoints
from ..endpoints import Endpoint
from ..errors import (
    HostKeyChanged,
    HostKeyUnknown,
    InvalidEndpoint,
    TunnelAuthFailed,
    TunnelError,
    TunnelKeyLocked,
    TunnelTargetRefused,
    TunnelUnreachable,
)

BACKENDS = ("auto", "paramiko", "openssh")
State = Literal["open", "reconnecting", "failed", "closed"]
OPENSSH_STREAMLOCAL = (6, 7)  # the first OpenSSH that forwards from a Unix socket (-L PATH:HOST:PORT)
OPENSSH_CIPHERS_HEAD = (8, 1)  # the first that takes Ciphers=^LIST (LIST ahead of the default order)
# AES-GCM first: with AES instructions (x86-64, ARMv8) it costs both ends less than OpenSSH's default chacha20-poly1305,
# and it is the cheapest AEAD paramiko offers (no separate HMAC per packet). Both are OpenSSH's own defaults otherwise.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
FINAL_ERRORS = (TunnelAuthFailed, HostKeyChanged, HostKeyUnknown)  # another try cannot change these: reopening stops


class SshTarget(NamedTuple):
    user: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def parse_ssh_target(text: str) -> SshTarget:
    """``user@host[:port]`` (``[v6]:port`` too) -> SshTarget; the user defaults to the local one, the port to 22."""
    user, _, hostport = text.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
    if not match or not hostport:
        raise ValueError(f"not an SSH target (user@host[:port]): {text!r}")
    port = int(match.group(2) or match.group(4) or 22)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the SSH port must be between 1 and 65535")
    return SshTarget(user or getpass.getuser(), match.group(1) or match.group(3), port)


def server_endpoint(endpoint: str) -> Endpoint:
    """The server endpoint as seen from the SSH host: ``tcp://HOST:PORT``, or ``ipc:///PATH`` (a Unix socket there)."""
    parsed = endpoints.parse(endpoint)
    if parsed.scheme == "ipc" and not parsed.path.startswith("/"):
        raise InvalidEndpoint(
            f"{endpoint!r}: an SSH tunnel reaches a Unix socket by its absolute path, e.g. ipc:///run/zmqproc/zmqproc.sock"
        )
    return parsed


@dataclass(frozen=True)
class SshOptions:
    """How to reach and log in to the SSH host; ``password`` and ``key_passphrase`` stay out of ``repr`` and logs.

    ``password`` logs in (paramiko only); ``key_passphrase`` unlocks ``key`` (or the default ``~/.ssh/id_*`` keys) and is
    never sent to the server. ``keepalive``: seconds between liveness checks; 3 unanswered end the session.
    """

    target: str
    key: str | None = None
    password: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    backend: str = "auto"
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    timeout: float = 10.0
    keepalive: float = 5.0

    def __post_init__(self) -> None:
        parse_ssh_target(self.target)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown SSH backend {self.backend!r} (one of {', '.join(BACKENDS)})")
        if self.timeout <= 0 or self.keepalive <= 0:
            raise ValueError("the SSH timeout and keepalive are positive numbers of seconds")

    @property
    def ssh_target(self) -> SshTarget:
        return parse_ssh_target(self.target)

    @property
    def has_secrets(self) -> bool:
        return self.password is not None or self.key_passphrase is not None


def openssh_version(ssh_v: str) -> tuple[int, int] | None:
    """The (major, minor) of what ``ssh -V`` printed, or None when it is not OpenSSH."""
    match = re.search(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)", ssh_v)
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose_backend(options: SshOptions, remote: Endpoint, openssh: tuple[int, int] | None, unix_sockets: bool) -> str:
    """``auto``: OpenSSH when it can serve (keys or ssh-agent, a Unix socket at this end), else paramiko.

    A Unix socket at the far end (``ipc://``) needs OpenSSH. ``ValueError`` says why a backend asked for cannot serve.
    """
    if options.backend == "paramiko" and remote.scheme == "ipc":
        raise ValueError("a Unix socket at the far end (ipc://) needs the openssh backend")
    if options.backend == "paramiko":
        return "paramiko"
    unusable = _openssh_unusable(options, openssh, unix_sockets)
    if options.backend == "auto" and remote.scheme == "tcp":
        return "paramiko" if unusable else "openssh"
    if unusable:
        raise ValueError(unusable + (" (a Unix socket at the far end needs it)" if remote.scheme == "ipc" else ""))
    return "openssh"


def _openssh_unusable(options: SshOptions, openssh: tuple[int, int] | None, unix_sockets: bool) -> str:
    if options.has_secrets:
        return "the openssh backend logs in with keys and ssh-agent only; a password or key passphrase needs the paramiko backend"
    if openssh is None:
        return "the openssh backend needs OpenSSH's ssh client on PATH"
    if openssh < OPENSSH_STREAMLOCAL:
        return f"the openssh backend needs OpenSSH >= 6.7 (forwarding from a Unix socket); this ssh is {openssh[0]}.{openssh[1]}"
    if not unix_sockets:
        return "the openssh backend forwards from a Unix socket, which this platform lacks"
    return ""


def openssh_command(ssh: str, version: tuple[int, int], local_path: str, remote: Endpoint, options: SshOptions) -> list[str]:
    """``ssh -N -L LOCAL.sock:FAR``: no prompts, the socket owner-only, exit when the forward or the connection fails."""
    target = options.ssh_target
    if remote.scheme == "ipc":
        far = remote.path
    else:
        far = f"[{remote.host}]:{remote.port}" if ":" in remote.host else f"{remote.host}:{remote.port}"
    settings = {
        "BatchMode": "yes",
        "ExitOnForwardFailure": "yes",
        "StreamLocalBindMask": "0177",
        "StreamLocalBindUnlink": "yes",
        "ServerAliveInterval": str(max(1, round(options.keepalive))),
        "ServerAliveCountMax": "3",
        "ConnectTimeout": str(max(1, round(options.timeout))),
        "StrictHostKeyChecking": "accept-new" if options.accept_new_host_key else "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
    }
    if version >= OPENSSH_CIPHERS_HEAD:
        settings["Ciphers"] = "^" + ",".join(PREFERRED_CIPHERS)
    cmd = [ssh, "-N", "-T", "-L", f"{local_path}:{far}", "-p", str(target.port)]
    if options.known_hosts:
        settings["UserKnownHostsFile"] = f'"{options.known_hosts}"'
    if options.key:
        cmd += ["-i", options.key]
        settings["IdentitiesOnly"] = "yes"
    for name, value in settings.items():
        cmd += ["-o", f"{name}={value}"]
    return [*cmd, "--", f"{target.user}@{target.host}"]


def ssh_failure(stderr: str, ssh: str, endpoint: str) -> TunnelError:
    """Map what ``ssh`` printed before it gave up to a typed error with a plain message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@")]
    said = lines[-1] if lines else "no message"
    text = stderr.lower()
    if "has changed" in text or "identification has changed" in text:
        return HostKeyChanged(f"the host key of {ssh} does not match known_hosts (a changed key, or someone in between): {said}")
    if "host key is known" in text or "host key verification failed" in text:
        return HostKeyUnknown(f"{ssh} is not in known_hosts; accept its key explicitly (accept_new_host_key / --accept-new-host-key)")
    if "cannot bind" in text or "cannot listen" in text or "unix_listener" in text:
        return TunnelError(f"ssh could not listen on its local socket for {endpoint}: {said}")
    if "permission denied" in text or "too many authentication failures" in text or "load key" in text:
        return TunnelAuthFailed(f"{ssh} refused the login: {said}")
    if "open failed" in text:
        return TunnelTargetRefused(f"{ssh} could not connect to {endpoint}: {said}")
    if re.search(
        r"connect to host|could not resolve|no route|unreachable|timed out|connection closed|closed by|reset by|banner exchange", text
    ):
        return TunnelUnreachable(f"cannot reach the SSH server {ssh}: {said}")
    return TunnelError(f"ssh to {ssh} failed: {said}")


def key_locked(key: str, error: TunnelAuthFailed) -> TunnelKeyLocked:
    """An encrypted key the openssh backend could not use (BatchMode asks for no passphrase): name what would work."""
    return TunnelKeyLocked(
        f"{error} (the key {key} is encrypted: give its passphrase, which the paramiko backend uses, or add the key to ssh-agent)"
    )


def key_is_encrypted(data: bytes) -> bool:
    """True for a passphrase-protected private key file (OpenSSH's own format, legacy PEM, or PKCS#8)."""
    if b"Proc-Type: 4,ENCRYPTED" in data or b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        return True
    match = re.search(rb"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", data, re.DOTALL)
    if match is None:
        return False
    try:
        blob = base64.b64decode(b"".join(match.group(1).split()))
    except binascii.Error:
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    size = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + size] != b"none"


@dataclass
class Reopen:
    """When to open a tunnel again after its SSH session ended: soon, then backing off to ``cap``; never after a final refusal.

    A refused login or a wrong host key would be refused again (and a password tried again and again looks like an
    attack): those end the reopening, and the tunnel fails with that error.
    """

    first: float = 0.25
    cap: float = 2.0
    tries: int = 0

    def delay(self, error: TunnelError) -> float | None:
        """Seconds to wait before the next try, or None: stop, ``error`` is final."""
        if isinstance(error, FINAL_ERRORS):
            return None
        wait = min(self.cap, self.first * (1 << min(self.tries, 30)))
        self.tries += 1
        return wait

    def opened(self) -> None:
        self.tries = 0
