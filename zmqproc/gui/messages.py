"""Errors in plain words: the one mapping from a wire code or a client-side failure to a sentence."""

from __future__ import annotations

from ..errors import (
    AuthenticationFailed,
    ConnectionLost,
    InvalidEndpoint,
    MalformedReply,
    ProcessingError,
    RequestTimeout,
    ServerCrashed,
    TunnelError,
)

SENTENCES: dict[str, str] = {
    "bad_request": "The server did not understand the request (this is a bug in the viewer).",
    "unsupported_version": "The server speaks another protocol version; update the viewer or the server.",
    "unknown_kind": "The server does not know this kind of request; it may be older than the viewer.",
    "unknown_op": "The server does not know one of the operations in the pipeline.",
    "bad_params": "A parameter is out of range or does not fit this image.",
    "too_large": "The image is too large for the server's limits.",
    "decode_failed": "The server could not read the image.",
    "busy": "The server stayed busy until the request's time ran out. Try again in a moment.",
    "timeout": "The work did not finish in time (the request's deadline or the server's time limit). Try a longer timeout.",
    "cancelled": "Cancelled.",
    "internal": "The server failed while processing this image (its log has the details).",
}


def explain(error: BaseException) -> str:
    """One sentence for the user, with the detail that says which server or key when there is one."""
    if isinstance(error, ProcessingError):
        sentence = SENTENCES.get(error.code, f"The server refused the request ({error.code}).")
        return sentence if error.code == "cancelled" else f"{sentence} ({error.message})"
    if isinstance(error, RequestTimeout):
        return "No reply from the server in time: it may be down, unreachable or overloaded."
    if isinstance(error, AuthenticationFailed):
        return f"The server did not accept this connection's CURVE keys: {error}. Check the keys in Server → Connection…"
    if isinstance(error, TunnelError):
        return f"The SSH tunnel to the server failed: {error}."
    if isinstance(error, ServerCrashed):
        return "This image crashed the server twice (it was sent again once after the first crash), so it was not sent a third time."
    if isinstance(error, ConnectionLost):
        return f"The connection to the server was lost: {error}."
    if isinstance(error, InvalidEndpoint):
        return f"Not a server address: {error}."
    if isinstance(error, MalformedReply):
        return f"The server sent a reply the viewer cannot read ({error})."
    return f"{type(error).__name__}: {error}"
