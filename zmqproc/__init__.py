"""zmqproc: remote image processing over ZeroMQ (DEALER/ROUTER, msgpack headers, raw image frames)."""

from .client.threaded import Client, ClientOptions, Processed
from .errors import (
    AuthenticationFailed,
    BadParams,
    BadRequest,
    Busy,
    Cancelled,
    ClientError,
    ConnectionLost,
    DeadlineExceeded,
    DecodeFailed,
    HostKeyChanged,
    HostKeyUnknown,
    InternalError,
    InvalidEndpoint,
    MalformedReply,
    ProcessingError,
    RequestTimeout,
    ServerCrashed,
    TooLarge,
    TunnelAuthFailed,
    TunnelDied,
    TunnelError,
    TunnelKeyLocked,
    TunnelTargetRefused,
    TunnelUnreachable,
    UnknownKind,
    UnknownOp,
    UnsupportedVersion,
    ZmqprocError,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``op`` and ``Range`` (writing plugin ops) and ``plugins`` load OpenCV: only when asked for, so a client's import
    stays light."""
    if name in ("op", "Range", "OpDeclarationError"):
        from .ops import declare

        return getattr(declare, name)
    if name == "plugins":
        from .ops import plugins

        return plugins
    raise AttributeError(f"module 'zmqproc' has no attribute {name!r}")


__all__ = [
    "AuthenticationFailed",
    "BadParams",
    "BadRequest",
    "Busy",
    "Cancelled",
    "Client",
    "ClientOptions",
    "ClientError",
    "ConnectionLost",
    "DeadlineExceeded",
    "DecodeFailed",
    "HostKeyChanged",
    "HostKeyUnknown",
    "InternalError",
    "InvalidEndpoint",
    "MalformedReply",
    "OpDeclarationError",
    "Processed",
    "ProcessingError",
    "Range",
    "RequestTimeout",
    "ServerCrashed",
    "TooLarge",
    "TunnelAuthFailed",
    "TunnelDied",
    "TunnelError",
    "TunnelKeyLocked",
    "TunnelTargetRefused",
    "TunnelUnreachable",
    "UnknownKind",
    "UnknownOp",
    "UnsupportedVersion",
    "ZmqprocError",
    "op",
]
