"""Errors in plain words: the one mapping from a wire code or a client-side failure to a sentence."""

from __future__ import annotations

from ..errors import ConnectionLost, MalformedReply, ProcessingError, RequestTimeout

SENTENCES: dict[str, str] = {
    "bad_request": "The server did not understand the request (this is a bug in the viewer).",
    "unsupported_version": "The server speaks another protocol version; update the viewer or the server.",
    "unknown_kind": "The server does not know this kind of request; it may be older than the viewer.",
    "unknown_op": "The server does not know one of the operations in the pipeline.",
    "bad_params": "A parameter is out of range or does not fit this image.",
    "too_large": "The image is too large for the server's limits.",
    "decode_failed": "The server could not read the image.",
    "busy": "The server is busy (its queue is full). Try again in a moment.",
    "timeout": "The server could not start the work in time. Try again, or with a longer timeout.",
    "cancelled": "Cancelled.",
    "internal": "The server failed while processing this image (its log has the details).",
}


def explain(error: BaseException) -> str:
    """One sentence for the user, with the server's own detail when there is one."""
    if isinstance(error, ProcessingError):
        sentence = SENTENCES.get(error.code, f"The server refused the request ({error.code}).")
        return sentence if error.code == "cancelled" else f"{sentence} ({error.message})"
    if isinstance(error, RequestTimeout):
        return "No reply from the server in time: it may be down, unreachable or overloaded."
    if isinstance(error, ConnectionLost):
        return f"The connection to the server was lost: {error}."
    if isinstance(error, MalformedReply):
        return f"The server sent a reply the viewer cannot read ({error})."
    return f"{type(error).__name__}: {error}"
