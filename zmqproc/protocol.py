"""Wire contract v1, sans I/O: frames in, typed requests and replies out, and back.

Nothing here touches a socket. A message is a list of buffers: frame 0 is a
msgpack header, frame 1 (``process`` only) the image payload. The server calls
:func:`decode_request` and :func:`encode_reply` / :func:`encode_error`; clients
call :func:`encode_request` and :func:`decode_reply`. The flow-control grant a
reply carries is a :class:`Credit` (docs/protocol.md, "Flow control").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack

from .errors import (
    BadRequest,
    MalformedReply,
    ProcessingError,
    TooLarge,
    UnknownKind,
    UnsupportedVersion,
    error_from_wire,
)
from .formats import RAW_DTYPES, REPLY_FORMATS
from .images import ImageDescriptor, parse_descriptor

VERSION = 1
KINDS = ("ping", "ops", "process", "cancel", "stats", "part", "fetch")

MAX_ID_LENGTH = 128
RESULT_KINDS = ("boxes", "points", "polygons")  # the kinds of results a viewer draws (see Results); others are listed
MAX_PIPELINE_STEPS = 16

Buffer = bytes | bytearray | memoryview
PART_BYTES = 1 << 20  # the size of a payload's parts (docs/protocol.md, "Payloads in parts")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server accepts; checked before anything big is allocated."""

    max_header_bytes: int = 64 * 1024
    max_frame_bytes: int = 128 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True, slots=True)
class Step:
    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.op, "params": self.params}


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed the wire-level checks (op names and params are checked by ops)."""

    id: str
    kind: str
    pipeline: tuple[Step, ...] = ()
    image: ImageDescriptor | None = None
    payload: Buffer | None = None
    reply_format: str | None = None
    deadline_ms: float | None = None
    target: str | None = None
    credit_seq: int | None = None  # the grant the client sent it under (flow control)
    tile_dtype: str | None = None  # ops with ``tile``: the halo of ``pipeline`` on images of this pixel type is asked for
    up: int | None = None  # process: its payload's bytes follow in this many bytes of parts (payload is None)
    down: bool = False  # process: its result may come in parts
    offset: int = 0  # part, fetch: where in the payload
    length: int = 0  # fetch: how many bytes


@dataclass(frozen=True, slots=True)
class Credit:
    """A server's flow-control grant to one connection: outstanding ``process`` work it will take without ``busy``.

    ``requests`` and ``bytes`` (the sum of frame 1 sizes) bound what may be
    outstanding (sent, reply not yet received); a lone request fits whatever its
    size. ``seq`` numbers the grants; a request names the one it was sent under.
    ``requests`` is 0 only while the server shuts down.
    """

    seq: int
    requests: int
    bytes: int
    part_bytes: int = 0  # the server takes payloads in parts of this size (0: it does not)

    def to_wire(self) -> dict[str, int]:
        wire = {"seq": self.seq, "requests": self.requests, "bytes": self.bytes}
        if self.part_bytes:
            wire["part_bytes"] = self.part_bytes
        return wire

    def admits(self, outstanding: int, outstanding_bytes: int, size: int) -> bool:
        """Whether one more request of ``size`` payload bytes fits beside what is outstanding."""
        if outstanding == 0:
            return self.requests > 0
        return outstanding + 1 <= self.requests and outstanding_bytes + size <= self.bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: its header (all keys), and the payload frame of an ok ``process`` reply."""

    id: str | None
    header: dict[str, Any]
    payload: Buffer | None = None

    @property
    def ok(self) -> bool:
        return bool(self.header["status"] == "ok")

    @property
    def epoch(self) -> str | None:
        return self.header.get("epoch")

    @property
    def error(self) -> ProcessingError | None:
        """The typed error of an error reply, None for an ok reply."""
        return None if self.ok else error_from_wire(self.header.get("error"), self.id)

    @property
    def credit(self) -> Credit | None:
        """The grant this reply carries; None from a server without flow control (checked by :func:`decode_reply`)."""
        value = self.header.get("credit")
        return None if value is None else Credit(value["seq"], value["requests"], value["bytes"], value.get("part_bytes", 0))


def _pack(header: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(header, use_bin_type=True)
    return packed


def _unpack_header(frame: Buffer, max_bytes: int) -> dict[str, Any]:
    if len(frame) > max_bytes:
        raise TooLarge.over("header_bytes", len(frame), max_bytes, f"header is {len(frame)} bytes, the limit is {max_bytes}")
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise BadRequest("header must be a msgpack map")
    return header


def _valid_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 1 <= len(value) <= MAX_ID_LENGTH


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: object) -> TypeGuard[int]:
    """A non-negative int that fits msgpack's uint64 (not a bool)."""
    return type(value) is int and 0 <= value < 2**64


def _parse_pipeline(value: object) -> tuple[Step, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PIPELINE_STEPS:
        raise BadRequest(f"'pipeline' must be a list of 1 to {MAX_PIPELINE_STEPS} steps")
    steps = []
    for i, step in enumerate(value):
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            raise BadRequest(f"pipeline step {i} must be a map with a string 'op'")
        params = step.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise BadRequest(f"pipeline step {i}: 'params' must be a map with string keys")
        steps.append(Step(step["op"], params))
    return tuple(steps)


def decode_request(frames: Sequence[Buffer], limits: Limits = Limits()) -> Request:
    """Check one request message and return it, or raise the ProcessingError to answer with.

    The raised error carries ``request_id`` once the header's id could be read.
    """
    if not frames:
        raise BadRequest("empty message")
    header = _unpack_header(frames[0], limits.max_header_bytes)
    request_id = header.get("id")
    if not _valid_id(request_id):
        raise BadRequest(f"'id' must be a string of 1 to {MAX_ID_LENGTH} characters")
    try:
        return _decode_checked(header, request_id, frames, limits)
    except ProcessingError as err:
        err.request_id = request_id
        raise


def _decode_checked(header: dict[str, Any], request_id: str, frames: Sequence[Buffer], limits: Limits) -> Request:
    if "v" not in header:
        raise BadRequest("missing key 'v'")
    version = header["v"]
    if type(version) is not int or version != VERSION:
        raise UnsupportedVersion(f"protocol version {version!r} is not supported; this server speaks {VERSION}")
    kind = header.get("kind")
    if not isinstance(kind, str):
        raise BadRequest("'kind' must be a string")
    if kind not in KINDS:
        raise UnknownKind(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    parts = header.get("parts") if kind == "process" else None
    if parts is not None and not (
        isinstance(parts, dict) and (parts.get("up") is None or _count(parts["up"])) and isinstance(parts.get("down", False), bool)
    ):
        raise BadRequest("'parts' must be a map with 'up' (a byte count) and/or 'down' (a bool)")
    up = parts.get("up") if parts else None
    expected = 2 if kind == "part" or (kind == "process" and up is None) else 1
    if len(frames) != expected:
        raise BadRequest(f"a {kind} request has {expected} frame(s), got {len(frames)}")
    if kind in ("cancel", "part", "fetch"):
        target = header.get("target")
        if not _valid_id(target):
            raise BadRequest("'target' must be the id of an earlier request")
        if kind == "cancel":
            return Request(request_id, kind, target=target)
        return _part_request(request_id, kind, target, header, frames)
    if kind == "ops" and "tile" in header:
        return _tile_request(request_id, header["tile"])
    if kind != "process":
        return Request(request_id, kind)

    pipeline = _parse_pipeline(header.get("pipeline"))
    payload = frames[1] if up is None else None
    size = len(frames[1]) if up is None else up
    if size > limits.max_frame_bytes:
        refused = TooLarge.over(
            "frame_bytes", size, limits.max_frame_bytes, f"payload is {size} bytes, the limit is {limits.max_frame_bytes}"
        )
        refused.details["max_pixels"] = limits.max_pixels  # whether an encoded file of the same image would pass
        raise refused
    image = parse_descriptor(header.get("image"), payload if payload is not None else size, limits.max_pixels)
    reply_format = header.get("reply_format")
    if reply_format is not None and reply_format not in REPLY_FORMATS:
        raise BadRequest(f"'reply_format' must be one of {', '.join(REPLY_FORMATS)}")
    deadline_ms = header.get("deadline_ms")
    if deadline_ms is not None and (not _number(deadline_ms) or not 0 <= deadline_ms < math.inf):  # NaN fails too
        raise BadRequest("'deadline_ms' must be a non-negative finite number")
    credit_seq = header.get("credit_seq")
    if credit_seq is not None and not _count(credit_seq):
        raise BadRequest("'credit_seq' must be a non-negative integer (the seq of a credit this server sent)")
    down = bool(parts.get("down", False)) if parts else False
    return Request(request_id, kind, pipeline, image, payload, reply_format, deadline_ms, credit_seq=credit_seq, up=up, down=down)


def _part_request(request_id: str, kind: str, target: str, header: dict[str, Any], frames: Sequence[Buffer]) -> Request:
    """A ``part`` (frame 1: bytes of an upload) or a ``fetch`` (bytes of a held result); see Payloads in parts."""
    offset = header.get("offset")
    if not _count(offset):
        raise BadRequest("'offset' must be a non-negative integer")
    if kind == "part":
        if not 1 <= len(frames[1]) <= PART_BYTES:
            raise BadRequest(f"a part holds 1 to {PART_BYTES} bytes, this one {len(frames[1])}")
        return Request(request_id, kind, payload=frames[1], target=target, offset=offset)
    length = header.get("length")
    if not _count(length) or not 1 <= length <= PART_BYTES:
        raise BadRequest(f"'length' must be 1 to {PART_BYTES}")
    return Request(request_id, kind, target=target, offset=offset, length=length)


def _tile_request(request_id: str, tile: object) -> Request:
    """An ``ops`` request that asks for a pipeline's halo (see Tiles in docs/protocol.md)."""
    if not isinstance(tile, dict):
        raise BadRequest("'tile' must be a map with 'pipeline' and 'dtype'")
    dtype = tile.get("dtype")
    if dtype not in RAW_DTYPES:
        raise BadRequest(f"'tile.dtype' must be one of {', '.join(RAW_DTYPES)}")
    return Request(request_id, "ops", _parse_pipeline(tile.get("pipeline")), tile_dtype=dtype)


def tile_fields(pipeline: Sequence[Step], dtype: str) -> dict[str, Any]:
    """The keys of an ``ops`` request that asks for ``pipeline``'s halo on ``dtype`` images."""
    return {"tile": {"pipeline": [step.to_wire() for step in pipeline], "dtype": dtype}}


def encode_reply(
    request_id: str | None,
    epoch: str,
    fields: dict[str, Any],
    payload: Any = None,
    credit: Credit | None = None,
    pack: Callable[[Any], bytes] = _pack,
) -> list[Any]:
    """Frames of an ok reply; ``payload`` is any buffer (a numpy array travels without a copy); ``pack``: the caller's
    own msgpack packer."""
    header = {"v": VERSION, "id": request_id, "status": "ok", "epoch": epoch, **fields}
    if credit is not None:
        header["credit"] = credit.to_wire()
    return [pack(header)] if payload is None else [pack(header), payload]


def encode_error(
    request_id: str | None, epoch: str, err: ProcessingError, credit: Credit | None = None, pack: Callable[[Any], bytes] = _pack
) -> list[Any]:
    """Frames of an error reply: a header only."""
    header: dict[str, Any] = {"v": VERSION, "id": request_id, "status": "error", "epoch": epoch, "error": err.to_wire()}
    if credit is not None:
        header["credit"] = credit.to_wire()
    return [pack(header)]


def encode_request(
    kind: str, request_id: str, fields: dict[str, Any] | None = None, payload: Any = None, pack: Callable[[Any], bytes] = _pack
) -> list[Any]:
    """Frames of a request (``pack``: the caller's own msgpack packer). :func:`process_fields` gives a process request's keys."""
    head = pack({"v": VERSION, "id": request_id, "kind": kind, **(fields or {})})
    return [head] if payload is None else [head, payload]


def process_fields(
    pipeline: Sequence[Step],
    image: ImageDescriptor,
    reply_format: str | None = None,
    deadline_ms: float | None = None,
    credit_seq: int | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "pipeline": [step.to_wire() for step in pipeline],
        "image": image.to_wire(),
    }
    if reply_format is not None:
        fields["reply_format"] = reply_format
    if deadline_ms is not None:
        fields["deadline_ms"] = deadline_ms
    if credit_seq is not None:
        fields["credit_seq"] = credit_seq
    return fields


def parts_fields(up: int | None, down: bool) -> dict[str, Any]:
    """The ``parts`` key of a process request whose payload follows in ``up`` bytes of parts, or whose result may come in parts."""
    parts: dict[str, Any] = {}
    if up is not None:
        parts["up"] = up
    if down:
        parts["down"] = True
    return {"parts": parts} if parts else {}


def part_fields(target: str, offset: int) -> dict[str, Any]:
    return {"target": target, "offset": offset}


def fetch_fields(target: str, offset: int, length: int) -> dict[str, Any]:
    return {"target": target, "offset": offset, "length": length}


def decode_reply(frames: Sequence[Buffer]) -> Reply:
    """Read a reply message; raise MalformedReply when it breaks the contract."""
    if not 1 <= len(frames) <= 2:
        raise MalformedReply(f"a reply has 1 or 2 frames, got {len(frames)}")
    try:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception as exc:
        raise MalformedReply(f"reply header is not msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict) or header.get("status") not in ("ok", "error"):
        raise MalformedReply("reply header must be a map with status ok or error")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedReply("reply id must be a string or nil")
    if header.get("epoch") is not None and not isinstance(header["epoch"], str):
        raise MalformedReply("reply epoch must be a string or nil")
    if header["status"] == "error" and not isinstance(header.get("error"), dict):
        raise MalformedReply("an error reply needs an 'error' map")  # else Reply.error would raise AttributeError
    credit = header.get("credit")
    if credit is not None and not (
        isinstance(credit, dict)
        and _count(credit.get("seq"))
        and _count(credit.get("requests"))
        and _count(credit.get("bytes"))
        and _count(credit.get("part_bytes", 0))
    ):
        raise MalformedReply("reply credit must be a map of non-negative integers seq, requests, bytes (and part_bytes)")
    return Reply(request_id, header, frames[1] if len(frames) == 2 else None)
