"""Errors in plain words: the one mapping from a wire code or a client-side failure to what the user reads.

What the user reads names no library, no exception class, no epoch and no raw
byte count: sizes are in MB and megapixels, with what to do about them. The
server's own detail is shown where it is already in words (which parameter of
which step, for instance).
"""

from __future__ import annotations

import re

from ..errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyChanged,
    HostKeyUnknown,
    InvalidEndpoint,
    MalformedReply,
    ProcessingError,
    RequestTimeout,
    ServerCrashed,
    TooLarge,
    TunnelAuthFailed,
    TunnelError,
)

SENTENCES: dict[str, str] = {
    "bad_request": "The server did not understand the request (a bug in the viewer, please report it).",
    "unsupported_version": "The server speaks another protocol version; update the viewer or the server.",
    "unknown_kind": "The server does not know this kind of request; it may be older than the viewer.",
    "unknown_op": "The server does not offer one of the operations in the pipeline (Server → Reload operations).",
    "bad_params": "A parameter does not fit.",
    "too_large": "The image is too large for the server.",
    "decode_failed": "The server could not read the image.",
    "busy": "The server stayed busy until the request's time ran out. Try again in a moment.",
    "timeout": "The work did not finish in time. Try again with a longer timeout, or a lighter pipeline.",
    "cancelled": "Cancelled.",
    "internal": "The server failed while processing this image (its log has the details); it keeps serving.",
}
LIMITS = {  # too_large's `limit`: what it is, how to show its figures, and what to do
    "pixels": ("the server accepts up to {allowed}", "resize it first, or ask its operator to raise --max-pixels", "Mpx"),
    "frame_bytes": ("the server accepts files up to {allowed}", "send it as an encoded file, or ask for a higher --max-frame-bytes", "MB"),
    "memory_bytes": ("the server's memory budget for a job is {allowed}", "use a smaller image or fewer growing steps", "MB"),
    "jpeg_scans": ("the server decodes at most {allowed} scans", "save it as a baseline (not progressive) JPEG", "scans"),
}


def size(value: float, unit: str) -> str:
    """``12.3 Mpx``, ``243 MB``: megapixels or megabytes (decimal), as people read them."""
    if unit in ("Mpx", "MB"):
        shown = value / 1e6
        return f"{shown:.1f} {unit}" if shown < 100 else f"{shown:.0f} {unit}"
    return f"{value:g} {unit}"


def rate(bytes_per_s: float) -> str:
    """``2.5 MB/s`` (decimal megabytes, as people read a link's speed)."""
    return f"{bytes_per_s / 1e6:.1f} MB/s" if bytes_per_s < 100e6 else f"{bytes_per_s / 1e6:.0f} MB/s"


def transfer(sent: int, total: int, bytes_per_s: float, uploading: bool) -> str:
    """A transfer in parts, as the status bar says it: ``uploading 12.3 of 36.0 MB at 2.5 MB/s, 9 s left``; the rate and
    the time left only once the link's rate is measured; ``uploaded 36.0 MB; the server works on it`` once up."""
    if uploading and sent >= total:
        return f"uploaded {size(total, 'MB')}; the server works on it…"
    amount = f"{'uploading' if uploading else 'downloading'} {sent / 1e6:.1f} of {size(total, 'MB')}"
    if bytes_per_s <= 0:
        return f"{amount}…"
    left = (total - sent) / bytes_per_s
    return f"{amount} at {rate(bytes_per_s)}, {left:.0f} s left" if left >= 1 else f"{amount} at {rate(bytes_per_s)}, under 1 s left"


def pixel_type_sentence(step: object, op: str, takes: list[str], dtype: str) -> str:
    """An op that cannot take the image's pixel type, in those words (not as a parameter problem)."""
    return f"Step {step} ({op}) works on {' or '.join(takes)} images; this one is {dtype}. Convert it first, or choose another op."


def explain(error: BaseException) -> str:
    """One or two sentences for the user."""
    if isinstance(error, TooLarge):
        return _too_large(error)
    if isinstance(error, ProcessingError) and isinstance(error.details.get("takes"), list):
        return pixel_type_sentence(
            error.details.get("step", "?"), str(error.details.get("op")), error.details["takes"], str(error.details.get("dtype"))
        )
    if isinstance(error, ProcessingError) and error.code == "unknown_op" and isinstance(error.details.get("op"), str):
        return f"Step {error.details.get('step', '?')}: the server does not offer {error.details['op']!r} (Server → Reload operations)."
    if isinstance(error, ProcessingError):
        sentence = SENTENCES.get(error.code, f"The server refused the request ({error.code}).")
        if error.code in ("cancelled", "too_large", "busy"):
            return sentence
        detail = _words(error.message)
        return f"{sentence} {detail[0].upper()}{detail[1:]}." if detail else sentence
    if isinstance(error, RequestTimeout):
        return "No reply from the server in time: it may be down, unreachable or overloaded."
    if isinstance(error, AuthenticationFailed):
        return "The server did not accept this viewer's CURVE keys. Check the keys in Server → Connection…"
    if isinstance(error, HostKeyChanged):
        return "The SSH host's key is not the one remembered: someone may be in between. Check it before you connect."
    if isinstance(error, HostKeyUnknown):
        return "The SSH host is not known yet; connect again and trust its key if it is the right one."
    if isinstance(error, TunnelAuthFailed):
        return "The SSH host refused the login (key, passphrase or password). Check them in Server → Connection…"
    if isinstance(error, TunnelError):
        return f"The SSH tunnel to the server failed: {_words(str(error))}."
    if isinstance(error, ServerCrashed):
        return "This image crashed the server twice (it was sent again once after the first crash), so it was not sent a third time."
    if isinstance(error, ConnectionLost):
        return f"No server can be reached: {_words(str(error))}."
    if isinstance(error, InvalidEndpoint):
        return f"Not a server address: {error}."
    if isinstance(error, MalformedReply):
        return "The server sent a reply the viewer cannot read; it may be a different program, or a newer zmqproc."
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or 'The file could not be used'}{where}."
    return f"Something went wrong: {error}."


def _too_large(error: TooLarge) -> str:
    limit, value, allowed = (error.details.get(k) for k in ("limit", "value", "allowed"))
    if limit not in LIMITS or not isinstance(value, int) or not isinstance(allowed, int):
        return SENTENCES["too_large"]
    what, advice, unit = LIMITS[limit]
    have = "This image has" if limit == "pixels" else "This needs"
    return f"{have} {size(value, unit)}; {what.format(allowed=size(allowed, unit))}: {advice}."


def _words(message: str) -> str:
    """A server or library message without exception class names in front and without raw byte counts."""
    message = re.sub(r"^[A-Z][A-Za-z]+(Error|Exception): ", "", message.strip()).rstrip(".")
    return re.sub(r"\b(\d{7,}) bytes\b", lambda m: size(int(m.group(1)), "MB"), message)
