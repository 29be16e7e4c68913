"""CurveZMQ (IronHouse): key files, a secured server ROUTER, a secured client DEALER.

Each side has a keypair made by :func:`generate_keypair`: ``NAME.key`` holds
the public key (safe to copy), ``NAME.key_secret`` both keys (mode 0600, it
never leaves its machine). The server accepts only clients whose public key
file is in its allow-list directory; a client must know the server's public
key. A refused handshake is reported by libzmq only through a socket monitor:
the client's I/O thread watches it and :func:`refusal` names the failure
(:class:`~zmqproc.errors.AuthenticationFailed`), instead of letting requests
wait for a server that will never answer.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .errors import AuthenticationFailed, ConnectionLost

log = logging.getLogger("zmqproc.security")

Z85_KEY_LENGTH = 40


def generate_keypair(name: str, directory: str | os.PathLike[str] = ".") -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) into ``directory``.

    Existing files are never overwritten (a lost secret key cannot be recovered).
    """
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not name or Path(name).name != name:
        raise ValueError(f"key name {name!r} must be a plain file name")
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it or choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    secret.chmod(0o600)
    public.chmod(0o644)
    return public, secret


def load_public_key(value: str | os.PathLike[str]) -> bytes:
    """A Z85 public key, from a ``.key`` file or given as the 40-character text itself."""
    path = Path(value)
    if path.is_file():
        return zmq.auth.load_certificate(path)[0]
    text = str(value)
    if len(text) == Z85_KEY_LENGTH:
        try:
            z85.decode(text)
            return text.encode()
        except (ValueError, KeyError, IndexError):
            pass
    raise ValueError(f"{text!r} is neither a key file nor a 40-character Z85 public key")


def load_keypair(secret_file: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    path = Path(secret_file)
    if not path.is_file():
        raise ValueError(f"secret key file {path} does not exist")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key; pass the NAME.key_secret file")
    if path.stat().st_mode & 0o077:
        log.warning("secret key file %s is readable by other users; chmod 600 it", path)
    return public, secret


@dataclass(frozen=True, slots=True)
class ServerCurve:
    """The server's keypair and the directory of client public keys it lets in."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, secret_file: str | os.PathLike[str], allow_dir: str | os.PathLike[str]) -> ServerCurve:
        folder = Path(allow_dir)
        if not folder.is_dir():
            raise ValueError(f"allow-list directory {folder} does not exist")
        if not any(folder.glob("*.key")):
            raise ValueError(f"allow-list directory {folder} holds no *.key file: no client could connect")
        curve = cls(*load_keypair(secret_file), folder)
        allowed = len(zmq.auth.load_certificates(folder))
        log.info("CURVE on: server public key %s, %d client keys allowed from %s", curve.public.decode(), allowed, folder)
        return curve

    def secure(self, router: zmq.Socket[Any]) -> ThreadAuthenticator:
        """Make ``router`` a CURVE server checked by a ZAP handler; call before bind, stop the handler after close.

        The allow-list is read once, here: restart the server after adding keys.
        """
        auth = ThreadAuthenticator(router.context, log=logging.getLogger("zmqproc.auth"))
        auth.start()
        auth.configure_curve(domain="*", location=str(self.allow_dir))
        router.curve_secretkey = self.secret
        router.curve_publickey = self.public
        router.curve_server = True
        return auth


def refusal(endpoint: str, event: int, value: int, curve: bool = True) -> AuthenticationFailed | ConnectionLost:
    """The typed error for a failed handshake reported by a client socket's monitor (``curve``: the client uses CURVE)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return AuthenticationFailed(f"{endpoint} refused this client's CURVE key (ZAP status {value}): not in the server's allow-list")
    if not curve and event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # a CURVE server may hang up before the plain greeting
        return ConnectionLost(  # is through (EPIPE), and so does docker-proxy with no server behind it
            f"{endpoint} closed every connection during the handshake: the server may require CURVE keys (this client has "
            "none), or no zmqproc server listens behind that port (a stopped container's docker-proxy)"
        )
    if not curve:
        return AuthenticationFailed(f"handshake with {endpoint} failed: the server requires CURVE keys, and this client has none")
    return AuthenticationFailed(
        f"CURVE handshake with {endpoint} failed: the server public key is wrong, or the server does not use CURVE (or was not ready)"
    )


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """The client's keypair and the public key of the server it will accept."""

    server_key: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str | os.PathLike[str] | None, client_secret: str | os.PathLike[str] | None) -> ClientCurve | None:
        """None when neither is given (no CURVE); both are needed otherwise."""
        if server_key is None and client_secret is None:
            return None
        if server_key is None or client_secret is None:
            raise ValueError("CURVE needs both the server's public key and this client's secret key file")
        return cls(load_public_key(server_key), *load_keypair(client_secret))

    def secure(self, dealer: zmq.Socket[Any]) -> None:
        """Make ``dealer`` a CURVE client; call before connect. Its monitor reports refusals (see :func:`refusal`)."""
        dealer.curve_serverkey = self.server_key
        dealer.curve_publickey = self.public
        dealer.curve_secretkey = self.secret
