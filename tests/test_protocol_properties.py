"""Property-based tests of the sans-I/O layer: whatever arrives, the answer is a valid request or a typed error.

Random frames, and structured fuzzing: valid messages whose keys, values, types,
descriptors, pipelines, payloads and frame counts are mutated. The same for
replies on the client side, and for ``ops.validate_pipeline`` / ``run_pipeline``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqproc import ops
from zmqproc.client.events import Fail, Resolve
from zmqproc.client.session import ClientSession
from zmqproc.errors import (
    ERROR_CLASSES,
    ERROR_CODES,
    BadParams,
    BadRequest,
    DecodeFailed,
    MalformedReply,
    ProcessingError,
    TooLarge,
    UnknownOp,
)
from zmqproc.images import CHANNELS, ENCODED_FORMATS, RAW_DTYPES, decode_image
from zmqproc.protocol import (
    KINDS,
    MAX_ID_LENGTH,
    MAX_PIPELINE_STEPS,
    PART_BYTES,
    REPLY_FORMATS,
    Limits,
    Request,
    Step,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
)

LIMITS = Limits(max_header_bytes=4096, max_frame_bytes=64 * 1024, max_pixels=4096)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies ------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)


def _tiny_encoded(fmt: str) -> bytes:
    ext = {"jpeg": ".jpg", "tiff": ".tiff"}.get(fmt, f".{fmt}")
    ok, data = cv2.imencode(ext, np.full((6, 5, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


ENCODED = {fmt: _tiny_encoded(fmt) for fmt in ENCODED_FORMATS}


def param_value(p: ops.Param) -> st.SearchStrategy[Any]:
    if p.type == "bool":
        return st.booleans()
    if p.type == "choice":
        return st.sampled_from(p.choices or ())
    lo = -1000 if p.min is None else p.min
    hi = 1000 if p.max is None else p.max
    if p.type == "int":
        ints = st.integers(int(lo), int(hi))
        return ints.filter(lambda v: v % 2 == 1) if p.odd else ints
    return st.floats(lo, hi)


@st.composite
def valid_steps(draw: st.DrawFn, max_steps: int = 3) -> list[dict[str, Any]]:
    steps = []
    for name in draw(st.lists(st.sampled_from(sorted(ops.REGISTRY)), min_size=1, max_size=max_steps)):
        declared = ops.REGISTRY[name].params
        chosen = draw(st.lists(st.sampled_from(sorted(declared)), unique=True)) if declared else []
        steps.append({"op": name, "params": {k: draw(param_value(declared[k])) for k in chosen}})
    return steps


@st.composite
def raw_image(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    dtype = draw(st.sampled_from(RAW_DTYPES))
    shape = [draw(st.integers(1, 12)), draw(st.integers(1, 12))]
    channels = draw(st.sampled_from((None, *CHANNELS)))
    if channels is not None:
        shape.append(channels)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"format": "raw", "dtype": dtype, "shape": shape}, draw(st.binary(min_size=size, max_size=size))


@st.composite
def encoded_image(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    fmt = draw(st.sampled_from(ENCODED_FORMATS))
    return {"format": fmt}, ENCODED[fmt]


@st.composite
def valid_message(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    kind = draw(st.sampled_from(KINDS))
    header: dict[str, Any] = {"v": 1, "id": draw(st.text(min_size=1, max_size=20)), "kind": kind}
    if kind in ("cancel", "part", "fetch"):
        header["target"] = draw(st.text(min_size=1, max_size=20))
    if kind in ("part", "fetch"):
        header["offset"] = draw(st.integers(0, 2**40))
        if kind == "fetch":
            header["length"] = draw(st.integers(1, PART_BYTES))
            return header, []
        return header, [draw(st.binary(min_size=1, max_size=64))]
    if kind != "process":
        return header, []
    image, payload = draw(raw_image() | encoded_image())
    header.update(pipeline=draw(valid_steps()), image=image)
    if draw(st.booleans()):
        header["reply_format"] = draw(st.sampled_from(REPLY_FORMATS))
    if draw(st.booleans()):
        header["deadline_ms"] = draw(st.integers(0, 10**6) | st.floats(0, 1e6))
    if draw(st.booleans()):
        header["parts"] = {"down": True}
    if image["format"] == "raw" and draw(st.booleans()):
        header["parts"] = {"up": len(payload)}  # the bytes follow in parts
        return header, []
    return header, [payload]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a header (where a mutation can land)."""
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated_header(draw: st.DrawFn, header: dict[str, Any]) -> Any:
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(header)))
        if not path:
            return draw(values)  # the whole header replaced
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(("replace", "delete", "add")))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            key = draw(st.text(max_size=8) | st.sampled_from(("v", "id", "kind", "image", "pipeline", "params", "op", "shape")))
            parent[key] = draw(values)
        else:
            parent.append(draw(values))
    return header


@st.composite
def mutated_payloads(draw: st.DrawFn, payloads: list[bytes]) -> list[bytes]:
    """Truncated, extended, bit-flipped, dropped or extra frames (huge declared sizes come from header mutations)."""
    out = list(payloads)
    action = draw(st.sampled_from(("none", "truncate", "extend", "flip", "drop", "extra", "swap_encoded")))
    if action == "truncate" and out:
        out[0] = out[0][: draw(st.integers(0, max(0, len(out[0]) - 1)))]
    elif action == "extend" and out:
        out[0] = out[0] + draw(st.binary(min_size=1, max_size=64))
    elif action == "flip" and out and out[0]:
        data = bytearray(out[0])
        for i in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[i] ^= draw(st.integers(1, 255))
        out[0] = bytes(data)
    elif action == "drop":
        out = out[:-1]
    elif action == "extra":
        out.append(draw(st.binary(max_size=32)))
    elif action == "swap_encoded":
        out = [ENCODED[draw(st.sampled_from(ENCODED_FORMATS))]]
    return out


def pack(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


@st.composite
def fuzzed_frames(draw: st.DrawFn) -> list[bytes]:
    header, payloads = draw(valid_message())
    return [pack(draw(mutated_header(header))), *draw(mutated_payloads(payloads))]


# --- what a valid outcome is -------------------------------------------------------


def check_request(req: Request, frames: list[bytes]) -> None:
    """Everything the server relies on after decode_request returned."""
    assert isinstance(req.id, str) and 1 <= len(req.id) <= MAX_ID_LENGTH
    assert req.kind in KINDS
    assert len(frames) == (2 if req.kind == "part" or (req.kind == "process" and req.up is None) else 1)
    if req.kind in ("cancel", "part", "fetch"):
        assert isinstance(req.target, str) and 1 <= len(req.target) <= MAX_ID_LENGTH
    if req.kind == "part":
        assert req.payload is not None and 1 <= len(req.payload) <= PART_BYTES and req.offset >= 0
    if req.kind == "fetch":
        assert 1 <= req.length <= PART_BYTES and req.offset >= 0
    if req.kind != "process":
        return
    assert 1 <= len(req.pipeline) <= MAX_PIPELINE_STEPS
    assert all(isinstance(s.op, str) and isinstance(s.params, dict) and all(isinstance(k, str) for k in s.params) for s in req.pipeline)
    assert req.reply_format is None or req.reply_format in REPLY_FORMATS
    assert req.deadline_ms is None or (isinstance(req.deadline_ms, int | float) and math.isfinite(req.deadline_ms) and req.deadline_ms >= 0)
    image = req.image
    if req.up is not None:  # the bytes follow in parts: only their count is known
        assert image is not None and req.payload is None and req.up <= LIMITS.max_frame_bytes
        return
    assert image is not None and req.payload is not None and len(req.payload) <= LIMITS.max_frame_bytes
    if image.format == "raw":
        assert image.dtype in RAW_DTYPES and image.shape is not None
        assert image.shape[0] * image.shape[1] <= LIMITS.max_pixels
        arr = decode_image(image, req.payload)  # sizes match: the view needs no allocation and cannot fail
        assert arr.shape == image.shape
    else:
        assert image.format in ENCODED_FORMATS


def decode_outcome(frames: list[bytes]) -> Request | ProcessingError:
    try:
        req = decode_request(frames, LIMITS)
    except ProcessingError as err:
        assert err.code in ERROR_CODES and type(err) is ERROR_CLASSES[err.code]
        assert err.request_id is None or isinstance(err.request_id, str)
        return err
    check_request(req, frames)
    return req


# --- decode_request ----------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=256), max_size=4))
def test_any_frames_give_a_request_or_a_typed_error(frames: list[bytes]) -> None:
    decode_outcome(frames)


@FUZZ
@given(st.lists(values.map(pack), min_size=1, max_size=1), st.lists(st.binary(max_size=64), max_size=2))
def test_any_msgpack_header_gives_a_request_or_a_typed_error(head: list[bytes], payloads: list[bytes]) -> None:
    decode_outcome([*head, *payloads])


@FUZZ
@given(fuzzed_frames())
def test_mutated_valid_messages_give_a_request_or_a_typed_error(frames: list[bytes]) -> None:
    decode_outcome(frames)


@FUZZ
@given(valid_message())
def test_valid_messages_are_accepted_as_sent(message: tuple[dict[str, Any], list[bytes]]) -> None:
    header, payloads = message
    req = decode_outcome([pack(header), *payloads])
    assert isinstance(req, Request), req
    assert (req.id, req.kind) == (header["id"], header["kind"])
    if req.kind == "process":
        assert [Step(s["op"], s["params"]) for s in header["pipeline"]] == list(req.pipeline)
        assert req.image is not None and req.image.to_wire() == header["image"]
        assert bytes(req.payload or b"") == payloads[0] if payloads else req.payload is None and req.up == header["parts"]["up"]
        assert req.down == header.get("parts", {}).get("down", False)
    if req.kind == "part":
        assert (req.target, req.offset, bytes(req.payload or b"")) == (header["target"], header["offset"], payloads[0])
    if req.kind == "fetch":
        assert (req.target, req.offset, req.length) == (header["target"], header["offset"], header["length"])


@FUZZ
@given(st.sampled_from(ENCODED_FORMATS), st.binary(max_size=96), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_encoded_payloads_are_sized_before_decoding(fmt: str, tail: bytes, width: int, height: int) -> None:
    """Headers claiming any size: refused as too large, or small enough to decode (or fail to) safely."""
    magic = {"png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "jpeg": b"\xff\xd8\xff\xc0\x00\x11\x08", "bmp": b"BM" + bytes(16),
             "webp": b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes(8), "tiff": b"II*\x00"}[fmt]  # fmt: skip
    if fmt == "png":
        sizes = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    elif fmt == "jpeg":
        sizes = (height & 0xFFFF).to_bytes(2, "big") + (width & 0xFFFF).to_bytes(2, "big")
    elif fmt == "bmp":
        sizes = (width & 0x7FFFFFFF).to_bytes(4, "little") + (height & 0x7FFFFFFF).to_bytes(4, "little")
    else:
        sizes = (width & 0xFFFFFF).to_bytes(3, "little") + (height & 0xFFFFFF).to_bytes(3, "little")
    header = {"v": 1, "id": "x", "kind": "process", "pipeline": [{"op": "identity"}], "image": {"format": fmt}}
    outcome = decode_outcome([pack(header), magic + sizes + tail])
    if isinstance(outcome, Request) and fmt != "tiff":  # tiff is left to OpenCV's own pixel limit (docs/security.md)
        with contextlib.suppress(DecodeFailed):
            decode_image(outcome.image, outcome.payload)  # type: ignore[arg-type]


# --- ops ----------------------------------------------------------------------------

op_names = st.sampled_from(sorted(ops.REGISTRY)) | st.text(max_size=10)


@st.composite
def arbitrary_steps(draw: st.DrawFn) -> list[Step]:
    steps = []
    for name in draw(st.lists(op_names, min_size=1, max_size=3)):
        declared = sorted(ops.REGISTRY[name].params) if name in ops.REGISTRY else []
        keys = st.sampled_from(declared) | st.text(max_size=6) if declared else st.text(max_size=6)
        steps.append(Step(name, draw(st.dictionaries(keys, values, max_size=4))))
    return steps


def check_resolved(resolved: list[tuple[ops.Op, dict[str, Any]]]) -> None:
    for found, params in resolved:
        assert set(params) == set(found.params)
        for name, value in params.items():
            p = found.params[name]
            if p.type == "bool":
                assert isinstance(value, bool)
            elif p.type == "choice":
                assert value in (p.choices or ())
            else:
                assert isinstance(value, int if p.type == "int" else float) and not isinstance(value, bool)
                assert math.isfinite(value), f"{found.name}.{name} accepted {value}"
                assert p.min is None or value >= p.min
                assert p.max is None or value <= p.max
                assert not p.odd or value % 2 == 1


@FUZZ
@given(arbitrary_steps())
def test_validate_pipeline_on_arbitrary_params(steps: list[Step]) -> None:
    try:
        resolved = ops.validate_pipeline(steps)
    except (BadParams, UnknownOp):
        return
    check_resolved(resolved)


NUMERIC_PARAMS = sorted((o.name, n) for o in ops.REGISTRY.values() for n, p in o.params.items() if p.type in ("int", "float"))


@FUZZ
@given(st.sampled_from(NUMERIC_PARAMS), st.floats() | st.integers(-(2**64), 2**64) | st.booleans())
def test_numeric_params_take_any_number(op_param: tuple[str, str], value: float) -> None:
    """Every number, NaN and the infinities included: a value within the declared bounds, or BadParams."""
    name, param = op_param
    try:
        resolved = ops.validate_pipeline([Step(name, {param: value})])
    except BadParams:
        return
    check_resolved(resolved)


@FUZZ
@given(st.floats() | st.integers(-(2**63), 2**64 - 1) | values)
def test_any_deadline(deadline: Any) -> None:
    image = {"format": "raw", "dtype": "uint8", "shape": [1, 1]}
    header = {"v": 1, "id": "d", "kind": "process", "pipeline": [{"op": "identity"}], "image": image}
    decode_outcome([pack({**header, "deadline_ms": deadline}), b"\0"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_image(), valid_steps(max_steps=2))
def test_valid_pipelines_run_on_any_small_image(image: tuple[dict[str, Any], bytes], steps: list[dict[str, Any]]) -> None:
    """What the workers do after the checks: an image back, BadParams, or TooLarge past the pixel limit (never an internal error)."""
    desc, payload = image
    header = {"v": 1, "id": "r", "kind": "process", "pipeline": steps, "image": desc}
    req = decode_request([pack(header), payload], LIMITS)
    resolved = ops.validate_pipeline(req.pipeline)
    check_resolved(resolved)
    assert req.image is not None
    try:
        out, results = ops.run_pipeline(decode_image(req.image, req.payload), resolved, LIMITS.max_pixels)
    except (BadParams, TooLarge):
        return
    assert isinstance(out, np.ndarray) and out.dtype.name in RAW_DTYPES and isinstance(results, dict)


# --- replies --------------------------------------------------------------------------

ids = st.none() | st.text(max_size=20)
RESERVED_REPLY_KEYS = ("v", "id", "status", "epoch", "credit")  # keys the contract gives a meaning in every reply
field_maps = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in RESERVED_REPLY_KEYS), values, max_size=4)


@FUZZ
@given(ids, st.text(min_size=1, max_size=12), field_maps, st.none() | st.binary(max_size=64))
def test_ok_reply_round_trip(request_id: str | None, epoch: str, fields: dict[str, Any], payload: bytes | None) -> None:
    reply = decode_reply(encode_reply(request_id, epoch, fields, payload))
    assert reply.id == request_id and reply.ok and reply.epoch == epoch and reply.error is None
    for key, value in fields.items():
        assert msgpack.packb(reply.header[key]) == msgpack.packb(value)  # NaN-safe equality
    assert (None if reply.payload is None else bytes(reply.payload)) == payload


@FUZZ
@given(ids, st.text(min_size=1, max_size=12), st.sampled_from(ERROR_CODES), st.text(max_size=40))
def test_error_reply_round_trip(request_id: str | None, epoch: str, code: str, message: str) -> None:
    reply = decode_reply(encode_error(request_id, epoch, ERROR_CLASSES[code](message)))
    err = reply.error
    assert not reply.ok and reply.epoch == epoch
    assert type(err) is ERROR_CLASSES[code] and err.request_id == request_id and err.message == (message or code)


def receive_outcome(session: ClientSession, frames: list[bytes]) -> None:
    """ClientSession.receive never raises; a reply it reads ends its request at most once, with a typed value or error."""
    session.receive(0, frames, 0.0)
    ended = [e for e in session.events() if isinstance(e, Resolve | Fail)]
    assert len(ended) <= 1
    for event in ended:
        assert not isinstance(event, Fail) or isinstance(event.error, ProcessingError | MalformedReply)
    assert session.epoch is None or isinstance(session.epoch, str)


def sent_ping() -> tuple[ClientSession, str]:
    session = ClientSession(["tcp://127.0.0.1:1"])
    session.connected(0, 0.0)
    request_id = session.submit("ping", 10.0, 0.0)
    session.tick(0.0)
    session.sends(0.0)
    return session, request_id


@FUZZ
@given(st.lists(st.binary(max_size=128), max_size=3))
def test_session_receive_any_frames(frames: list[bytes]) -> None:
    receive_outcome(sent_ping()[0], frames)


@FUZZ
@given(st.data())
def test_session_receive_mutated_replies(data: st.DataObject) -> None:
    session, request_id = sent_ping()
    if data.draw(st.booleans()):
        header: dict[str, Any] = {"v": 1, "id": request_id, "status": "ok", "epoch": "e1", "time": 1.0}
    else:
        header = {"v": 1, "id": request_id, "status": "error", "epoch": "e1", "error": {"code": "bad_params", "message": "x"}}
    frames = [pack(data.draw(mutated_header(header))), *data.draw(st.lists(st.binary(max_size=16), max_size=2))]
    receive_outcome(session, frames)


BOMBS = [b"\x91" * 60000, b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\x81\x91\x01\x01"]


@pytest.mark.parametrize("header", BOMBS)
def test_msgpack_bombs_in_a_header_are_bad_requests(header: bytes) -> None:
    """Deep nesting, huge declared lengths, unhashable keys: refused by msgpack itself, before anything is allocated."""
    with pytest.raises(BadRequest, match="not valid msgpack"):
        decode_request([header])
