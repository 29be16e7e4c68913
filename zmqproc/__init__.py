"""zmqproc: remote image processing over ZeroMQ (DEALER/ROUTER, msgpack headers, raw image frames)."""

from .client import Client, Processed
from .errors import (
    BadParams,
    BadRequest,
    Busy,
    Cancelled,
    ConnectionLost,
    DeadlineExceeded,
    DecodeFailed,
    InternalError,
    ProcessingError,
    RequestTimeout,
    TooLarge,
    UnknownKind,
    UnknownOp,
    UnsupportedVersion,
)

__version__ = "0.1.0"

__all__ = [
    "BadParams",
    "BadRequest",
    "Busy",
    "Cancelled",
    "Client",
    "ConnectionLost",
    "DeadlineExceeded",
    "DecodeFailed",
    "InternalError",
    "Processed",
    "ProcessingError",
    "RequestTimeout",
    "TooLarge",
    "UnknownKind",
    "UnknownOp",
    "UnsupportedVersion",
]
