"""Typed errors and the one place where they map to wire error codes.

The same classes are raised by the server (and turned into an error reply) and
by the client (rebuilt from an error reply), so ``except BadParams`` means the
same thing on both sides of the wire.
"""

from __future__ import annotations


class ProcessingError(Exception):
    """An error with a wire code: raised from an error reply or by the server."""

    code = "internal"

    def __init__(self, message: str = "", *, request_id: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


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
    """Parameters out of bounds, or an op that cannot take the image's dtype or channels."""

    code = "bad_params"


class TooLarge(ProcessingError):
    """A frame, the pixel count or the header is over the server's limits."""

    code = "too_large"


class DecodeFailed(ProcessingError):
    """The payload does not match its descriptor, or an encoded image will not decode."""

    code = "decode_failed"


class Busy(ProcessingError):
    """The server's queue is full (or it is shutting down); retry later or elsewhere."""

    code = "busy"


class DeadlineExceeded(ProcessingError, TimeoutError):
    """The server could not start the work before the request's deadline."""

    code = "timeout"


class Cancelled(ProcessingError):
    code = "cancelled"


class InternalError(ProcessingError):
    """A bug in the server; it was logged with a traceback and the server keeps serving."""

    code = "internal"


class RequestTimeout(TimeoutError):
    """No reply arrived before the client's deadline."""


class ConnectionLost(ConnectionError):
    """The client was closed, or lost its transport, before the reply arrived."""


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


def error_from_wire(code: object, message: object, request_id: str | None = None) -> ProcessingError:
    """Rebuild the typed error for an error reply; an unknown code stays a plain ProcessingError."""
    cls = ERROR_CLASSES.get(code) if isinstance(code, str) else None
    if cls is None:
        err = ProcessingError(str(message), request_id=request_id)
        err.code = str(code)
        return err
    return cls(str(message), request_id=request_id)


class MalformedReply(ValueError):
    """A reply that does not follow the wire contract (client side)."""


class TunnelError(ConnectionError):
    """The SSH tunnel to a server could not be opened, or stopped working."""


class TunnelAuthFailed(TunnelError):
    """The SSH server refused every key or password offered."""


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


class AuthenticationFailed(ConnectionError):
    """A CURVE handshake failed: the server refused this client's key, or the server's key is wrong."""
