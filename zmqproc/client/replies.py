"""Replies as typed values: a ``process`` reply as :class:`Processed` (raw pixels as a view of the frame, no copy), an
``ops`` reply as its list, a ``stats`` reply as its map; :class:`~zmqproc.errors.MalformedReply` when one breaks the
contract (docs/protocol.md)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MalformedReply, ProcessingError
from ..formats import RAW_DTYPES
from ..images import CHANNELS, parse_descriptor
from ..protocol import Buffer, Reply


@dataclass(frozen=True, slots=True)
class Processed:
    """A ``process`` reply in full: the image plus what the server said about it."""

    image: np.ndarray | bytes
    results: dict[str, Any]
    server_ms: float
    epoch: str | None
    result_kinds: dict[str, str] = field(default_factory=dict)  # result key -> boxes, points or polygons


@dataclass(frozen=True, slots=True)
class TilePlan:
    """What a server said for tiling a pipeline: its halo (None: a server that does not tile) and the server's limits."""

    halo: int | None
    max_pixels: int
    max_frame_bytes: int
    workers: int


def reply_value(kind: str, reply: Reply) -> Any:
    """The typed value of an ok process, ops, stats or tile-plan (an ops request with ``tile``) reply; MalformedReply when
    its content breaks the contract."""
    header = reply.header
    if kind == "process":
        return decode_processed(reply)
    if kind == "tile":
        return _tile_plan(header)
    if kind == "ops":
        listing = header.get("ops")
        if not isinstance(listing, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in listing):
            raise MalformedReply("an ops reply needs 'ops', a list of maps with a 'name'")
        return listing
    return {k: v for k, v in header.items() if k not in ("v", "id", "status")}  # stats


def decode_processed(reply: Reply) -> Processed:
    """An ok ``process`` reply as a :class:`Processed`; MalformedReply when its image or other keys break the contract."""
    header = reply.header
    payload = reply.payload
    if payload is None:
        raise MalformedReply("an ok process reply carries the image as frame 1; this one has no frame 1")
    desc = header.get("image")
    raw = _raw_image(desc, payload) if type(desc) is dict and desc.get("format") == "raw" else None
    image: np.ndarray | bytes
    if raw is not None:
        image = raw
    else:  # encoded, or a raw descriptor that does not fit: the full check says what is wrong
        try:
            parsed = parse_descriptor(desc, payload, sys.maxsize)
        except ProcessingError as exc:
            raise MalformedReply(f"the process reply's 'image' does not describe frame 1: {exc.message}") from None
        if parsed.format == "raw":
            raise MalformedReply(f"the process reply's 'image' does not describe frame 1: {desc}")
        image = bytes(payload)
    results = header.get("results") or {}
    kinds = header.get("result_kinds") or {}
    server_ms = header.get("server_ms", 0.0)
    if not isinstance(results, dict) or not isinstance(kinds, dict) or not isinstance(server_ms, int | float):
        raise MalformedReply("a process reply's 'results' and 'result_kinds' must be maps and 'server_ms' a number")
    return Processed(image, results, float(server_ms), reply.epoch, kinds)


_DTYPES = {name: np.dtype(name) for name in RAW_DTYPES}


def _raw_image(desc: dict[str, Any], payload: Buffer) -> np.ndarray | None:
    """The pixels of a raw reply as a view of its frame, when the descriptor fits it exactly (the hot path); else None."""
    dtype, shape = _DTYPES.get(str(desc.get("dtype"))), desc.get("shape")
    if dtype is None or type(shape) is not list or not 2 <= len(shape) <= 3:
        return None
    if not all(type(n) is int and n > 0 for n in shape) or (len(shape) == 3 and shape[2] not in CHANNELS):
        return None
    count = shape[0] * shape[1] * (shape[2] if len(shape) == 3 else 1)
    view = memoryview(payload)
    if view.nbytes != count * dtype.itemsize:
        return None
    return np.frombuffer(view, dtype=dtype).reshape(shape)


def _tile_plan(header: dict[str, Any]) -> TilePlan:
    tile, limits = header.get("tile"), header.get("limits")
    halo = tile.get("halo") if isinstance(tile, dict) else None
    if not isinstance(limits, dict):  # a server from before tiling: no limits said, and no halo
        return TilePlan(None, 0, 0, 1)
    numbers = [limits.get(k) for k in ("max_pixels", "max_frame_bytes", "workers")]
    if not all(type(n) is int and n > 0 for n in numbers) or (halo is not None and (type(halo) is not int or halo < 0)):
        raise MalformedReply(f"a tile plan needs positive int limits and a halo >= 0, got {limits} and {tile}")
    return TilePlan(halo, int(limits["max_pixels"]), int(limits["max_frame_bytes"]), int(limits["workers"]))
