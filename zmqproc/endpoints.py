"""ZeroMQ endpoints as users type them: the one parser (no paramiko), used by the library, CLI and viewer; and a TCP probe.

zmqproc speaks ``tcp://HOST:PORT`` and ``ipc://PATH``. A mistake gets a message
that says what would work: ``localhost:5599`` has no transport, so the message
suggests ``tcp://localhost:5599``.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from .errors import InvalidEndpoint

DEFAULT_SERVER = "tcp://127.0.0.1:5555"
NO_SUCH_HOST = "no such host"  # where the command line and the viewer look first
SCHEMES = ("tcp", "ipc")
MAX_IPC_PATH = 107  # sun_path holds 108 bytes with the terminating NUL (Linux)
_HOST = r"\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+)"
_TCP = re.compile(rf"(?:{_HOST}):(?P<port>\d{{1,5}})")
_BIND_TCP = re.compile(rf"(?:{_HOST}|(?P<any>\*)):(?P<port>\d{{1,5}}|\*)")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint: ``tcp`` with ``host`` and ``port``, or ``ipc`` with ``path``."""

    scheme: str
    host: str = ""
    port: int = 0  # 0: any port (``tcp://HOST:*``, bind only)
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port or '*'}"


def parse(text: str, *, bind: bool = False) -> Endpoint:
    """Parse a connect (or, with ``bind``, a bind) endpoint; :class:`InvalidEndpoint` says what to write instead."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidEndpoint(_suggestion(text))
    if scheme not in SCHEMES:
        raise InvalidEndpoint(f"{text!r}: zmqproc speaks tcp:// and ipc:// (not {scheme}://)")
    if scheme == "ipc":
        if not rest:
            raise InvalidEndpoint(f"{text!r}: an ipc:// endpoint needs a socket path, e.g. ipc:///run/zmqproc/zmqproc.sock")
        if len(rest.encode()) > MAX_IPC_PATH:
            raise InvalidEndpoint(f"{text!r}: a Unix socket path is at most {MAX_IPC_PATH} bytes")
        return Endpoint("ipc", path=rest)
    match = (_BIND_TCP if bind else _TCP).fullmatch(rest)
    if match is None:
        example = "tcp://0.0.0.0:5555 or tcp://127.0.0.1:5555" if bind else "tcp://127.0.0.1:5555 or tcp://[::1]:5555"
        raise InvalidEndpoint(f"{text!r} is not tcp://HOST:PORT (e.g. {example})")
    port = 0 if match["port"] == "*" else int(match["port"])
    if not (0 if bind else 1) <= port <= 65535:  # binding port 0 (or *) takes any free one
        raise InvalidEndpoint(f"{text!r}: the port must be between 1 and 65535")
    return Endpoint("tcp", host=match["v6"] or match["name"] or "*", port=port)


def check(text: str, *, bind: bool = False) -> str:
    """The endpoint as zmq takes it (whitespace stripped), or :class:`InvalidEndpoint`."""
    parse(text, bind=bind)
    return text.strip()


def _suggestion(text: str) -> str:
    if not text:
        return "the endpoint is empty; write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"
    if text.startswith("/"):
        return f"{text!r} has no transport: for a Unix socket write ipc://{text}"
    if re.fullmatch(rf"(?:{_HOST}):\d{{1,5}}", text):
        return f"{text!r} has no transport: write tcp://{text}"
    if text.isdigit():
        return f"{text!r} is a port alone: write tcp://127.0.0.1:{text} (or the server's host instead of 127.0.0.1)"
    if re.fullmatch(_HOST, text):
        return f"{text!r} has no transport and no port: write tcp://{text}:PORT, e.g. tcp://{text}:5555"
    return f"{text!r} is not an endpoint: write tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"


def port_state(host: str, port: int, timeout: float) -> str:
    """``open``, ``closed`` (refused) or ``filtered`` (no answer, or unreachable), as nmap names them; ``no such host``
    when the name does not resolve (a typo such as ``127.0.0.l``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except socket.gaierror:
        return NO_SUCH_HOST
    except ConnectionRefusedError:
        return "closed"
    except (TimeoutError, OSError):
        return "filtered"
