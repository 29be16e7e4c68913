"""Typed errors, one tree, and the one place where they map to wire error codes.

``ZmqprocError`` is the root. ``ProcessingError`` and its subclasses carry a
wire code: the server raises them (and turns them into an error reply), the
client rebuilds them from an error reply, so ``except BadParams`` means the same
thing on both sides of the wire. ``ClientError`` and its subclasses are what the
client itself concludes: no reply in time, the connection or tunnel gone, a
reply that breaks the contract. Where a built-in exception says the same, the
class derives from it too (``RequestTimeout`` is a ``TimeoutError``,
``ConnectionLost`` a ``ConnectionError``), so generic handlers keep working.
"""

from __future__ import annotations

from typing import Any


class ZmqprocError(Exception):
    """The root of every error zmqproc raises on purpose."""


# -- what the server said -----------------------------------------------------------


class ProcessingError(ZmqprocError):
    """An error with a wire code: raised from an error reply or by the server.

    ``details`` are the error map's keys beside ``code`` and ``message`` (additive
    keys of the wire contract, e.g. ``shutting_down`` on ``busy``).
    """

    code = "internal"

    def __init__(self, message: str = "", *, request_id: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.request_id = request_id
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        """The error map of an error reply."""
        return {**self.details, "code": self.code, "message": self.message}


class BadRequest(ProcessingError):
    """Unreadable or malformed header, wrong frame count, missing or wrong-typed key."""

    code = "bad_request"


class UnsupportedVersion(ProcessingError):
    code = "unsupported_version"


class UnknownKind(ProcessingError):
    code = "unknown_kind"


class UnknownOp(ProcessingError):
    code = "unknown_op"


class BadParams(ProcessingError):
    """Parameters out of bounds or of the wrong type, or an op that cannot take the image's dtype or channels."""

    code = "bad_params"


class TooLarge(ProcessingError):
    """A frame, the pixel count, the header or the job's memory is over the server's limits.

    The error map says which limit (``limit``: pixels, frame_bytes, header_bytes,
    jpeg_scans or memory_bytes), what the request needed (``value``) and what the
    server allows (``allowed``), so a client can put it in its own words.
    """

    code = "too_large"

    @classmethod
    def over(cls, limit: str, value: int, allowed: int, message: str) -> TooLarge:
        return cls(message, details={"limit": limit, "value": value, "allowed": allowed})


class DecodeFailed(ProcessingError):
    """The payload does not match its descriptor, or an encoded image will not decode."""

    code = "decode_failed"


class Busy(ProcessingError):
    """Not started: the server is full for this client, or shutting down; retryable (the client's session retries it)."""

    code = "busy"

    @classmethod
    def shutting_down(cls, message: str = "the server is shutting down; resend elsewhere or once it is back") -> Busy:
        return cls(message, details={"shutting_down": True})

    @property
    def server_leaving(self) -> bool:
        """True when the server is shutting down: send it nothing more, resend elsewhere or to its next instance."""
        return self.details.get("shutting_down") is True


class DeadlineExceeded(ProcessingError, TimeoutError):
    """The request's deadline, or the server's job time limit, passed before the work was done."""

    code = "timeout"


class Cancelled(ProcessingError):
    code = "cancelled"


class InternalError(ProcessingError):
    """A bug in the server or a dead worker; it was logged and the server keeps serving."""

    code = "internal"


ERROR_CLASSES: dict[str, type[ProcessingError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        UnsupportedVersion,
        UnknownKind,
        UnknownOp,
        BadParams,
        TooLarge,
        DecodeFailed,
        Busy,
        DeadlineExceeded,
        Cancelled,
        InternalError,
    )
}

ERROR_CODES: tuple[str, ...] = tuple(ERROR_CLASSES)


def error_from_wire(error: object, request_id: str | None = None) -> ProcessingError:
    """Rebuild the typed error from an error reply's ``error`` map; an unknown code stays a plain ProcessingError."""
    fields = dict(error) if isinstance(error, dict) else {}
    code, message = fields.pop("code", None), fields.pop("message", "")
    details = {k: v for k, v in fields.items() if isinstance(k, str)}
    cls = ERROR_CLASSES.get(code) if isinstance(code, str) else None
    if cls is None:
        err = ProcessingError(str(message), request_id=request_id, details=details)
        err.code = str(code)
        return err
    return cls(str(message), request_id=request_id, details=details)


# -- what the client concluded --------------------------------------------------------


class ClientError(ZmqprocError):
    """The client's own conclusion: no reply, no connection, no tunnel, or a reply it cannot read."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply arrived before the client's deadline."""


class ConnectionLost(ClientError, ConnectionError):
    """The client was closed, or every server stayed unreachable past the grace period, before the reply arrived."""


class ServerCrashed(ClientError):
    """The request was resent once after its server died holding it, and the next server died holding it too."""


class MalformedReply(ClientError, ValueError):
    """A reply that does not follow the wire contract."""


class AuthenticationFailed(ClientError, ConnectionError):
    """A CURVE handshake failed: the server refused this client's key, or the server's key is wrong."""


class InvalidEndpoint(ClientError, ValueError):
    """Not a ZeroMQ endpoint zmqproc can use (the message says what would be)."""


class TunnelError(ClientError, ConnectionError):
    """The SSH tunnel to a server could not be opened, or stopped working."""


class TunnelAuthFailed(TunnelError):
    """The SSH server refused every key or password offered."""


class TunnelKeyLocked(TunnelAuthFailed):
    """The SSH key file is encrypted and no passphrase, or a wrong one, was given: ask for the passphrase, not a password."""


class HostKeyUnknown(TunnelError):
    """The SSH host is not in known_hosts (and accepting a new key was not asked for)."""


class HostKeyChanged(TunnelError):
    """The SSH host presented a key other than the one in known_hosts."""


class TunnelUnreachable(TunnelError):
    """The SSH host cannot be reached: refused port, unknown name, no route, no answer in time."""


class TunnelTargetRefused(TunnelError):
    """The SSH host is up but the server endpoint behind it refused the forwarded connection."""


class TunnelDied(TunnelError):
    """An open tunnel ended: the SSH connection or the ssh process is gone."""
