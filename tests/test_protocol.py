"""Sans-I/O protocol: frames in, requests or typed errors out; replies encoded and decoded."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from zmqproc.errors import ERROR_CODES, BadRequest, DecodeFailed, MalformedReply, TooLarge, UnknownKind, UnsupportedVersion
from zmqproc.images import ImageDescriptor
from zmqproc.protocol import (
    Limits,
    Step,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    process_fields,
    tile_fields,
)


def frames_of(header, *payload):
    return [msgpack.packb(header), *payload]


def test_ping_request():
    req = decode_request(encode_request("ping", "a1"))
    assert (req.id, req.kind, req.pipeline, req.payload) == ("a1", "ping", (), None)


def test_process_request_round_trip():
    image = np.zeros((4, 5, 3), np.uint8)
    fields = process_fields(
        [Step("gaussian_blur", {"ksize": 3}), Step("grayscale")], ImageDescriptor("raw", "uint8", (4, 5, 3)), "png", 250
    )
    req = decode_request(encode_request("process", "p1", fields, image.tobytes()))
    assert req.pipeline == (Step("gaussian_blur", {"ksize": 3}), Step("grayscale", {}))
    assert req.image == ImageDescriptor("raw", "uint8", (4, 5, 3))
    assert req.reply_format == "png" and req.deadline_ms == 250 and len(req.payload) == 60


def test_params_may_be_omitted_or_nil():
    header = {
        "v": 1,
        "id": "x",
        "kind": "process",
        "pipeline": [{"op": "identity", "params": None}],
        "image": {"format": "raw", "dtype": "uint8", "shape": [1, 1]},
    }
    assert decode_request(frames_of(header, b"\0")).pipeline == (Step("identity", {}),)


def test_unknown_extra_keys_are_ignored():
    assert decode_request(frames_of({"v": 1, "id": "x", "kind": "ping", "future": [1, 2]})).kind == "ping"


@pytest.mark.parametrize(
    ("frames", "error", "has_id"),
    [
        ([], BadRequest, False),
        ([b"\xc1"], BadRequest, False),
        ([msgpack.packb("str")], BadRequest, False),
        ([msgpack.packb({"v": 1, "kind": "ping"})], BadRequest, False),
        ([msgpack.packb({"v": 1, "id": "x" * 129, "kind": "ping"})], BadRequest, False),
        ([msgpack.packb({"v": 3, "id": "x", "kind": "ping"})], UnsupportedVersion, True),
        ([msgpack.packb({"v": True, "id": "x", "kind": "ping"})], UnsupportedVersion, True),
        ([msgpack.packb({"id": "x", "kind": "ping"})], BadRequest, True),
        ([msgpack.packb({"v": 1, "id": "x", "kind": "jump"})], UnknownKind, True),
        ([msgpack.packb({"v": 1, "id": "x", "kind": "ping"}), b""], BadRequest, True),
        ([msgpack.packb({"v": 1, "id": "x", "kind": "cancel", "target": ""})], BadRequest, True),
    ],
)
def test_header_errors(frames, error, has_id):
    with pytest.raises(error) as info:
        decode_request(frames)
    assert (info.value.request_id == "x") == has_id
    assert info.value.code in ERROR_CODES


def process_header(**image):
    return {"v": 1, "id": "x", "kind": "process", "pipeline": [{"op": "identity"}], "image": image}


@pytest.mark.parametrize(
    ("image", "payload", "error"),
    [
        ({"format": "raw", "dtype": "int8", "shape": [2, 2]}, b"\0" * 4, BadRequest),
        ({"format": "raw", "dtype": "uint8", "shape": [2]}, b"\0" * 2, BadRequest),
        ({"format": "raw", "dtype": "uint8", "shape": [2, 0]}, b"", BadRequest),
        ({"format": "raw", "dtype": "uint8", "shape": [2, 2, 2]}, b"\0" * 8, BadRequest),
        ({"format": "raw", "dtype": "uint8", "shape": [2.0, 2]}, b"\0" * 4, BadRequest),
        ({"format": "raw", "dtype": "uint16", "shape": [2, 2]}, b"\0" * 4, DecodeFailed),
        ({"format": "raw", "dtype": "uint8", "shape": [1000, 1001]}, b"", TooLarge),
        ({"format": "jpeg"}, b"\x89PNG\r\n\x1a\n", DecodeFailed),
    ],
)
def test_descriptor_errors(image, payload, error):
    with pytest.raises(error):
        decode_request(frames_of(process_header(**image), payload), Limits(max_pixels=1_000_000))


def test_frame_and_header_limits():
    limits = Limits(max_header_bytes=100, max_frame_bytes=10)
    with pytest.raises(TooLarge):
        decode_request(frames_of(process_header(format="raw", dtype="uint8", shape=[4, 4]), b"\0" * 16), limits)
    with pytest.raises(TooLarge) as info:
        decode_request([msgpack.packb({"v": 1, "id": "x", "kind": "ping", "pad": "y" * 200})], limits)
    assert info.value.request_id is None


def test_ok_reply_round_trip_without_copying_the_payload():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    frames = encode_reply("r", "epoch1", {"image": {"format": "raw"}, "server_ms": 1.5}, image)
    assert frames[1] is image
    reply = decode_reply([frames[0], memoryview(image)])
    assert reply.ok and reply.id == "r" and reply.epoch == "epoch1" and reply.error is None
    assert reply.header["server_ms"] == 1.5 and bytes(reply.payload) == image.tobytes()


def test_error_reply_rebuilds_the_typed_error():
    frames = encode_error("r", "e", TooLarge("too big"))
    assert len(frames) == 1
    header = msgpack.unpackb(frames[0])
    assert header == {"v": 1, "id": "r", "status": "error", "epoch": "e", "error": {"code": "too_large", "message": "too big"}}
    error = decode_reply(frames).error
    assert isinstance(error, TooLarge) and error.request_id == "r" and error.message == "too big"


def test_unknown_error_code_from_a_newer_server_stays_readable():
    frames = [msgpack.packb({"v": 1, "id": "r", "status": "error", "error": {"code": "quota", "message": "m"}})]
    error = decode_reply(frames).error
    assert error.code == "quota" and "m" in str(error)


@pytest.mark.parametrize(
    "frames",
    [[], [b"\xc1"], [msgpack.packb({"status": "maybe"})], [msgpack.packb({"status": "ok", "id": 5})], [b"a", b"b", b"c"]],
)
def test_malformed_replies(frames):
    with pytest.raises(MalformedReply):
        decode_reply(frames)


# -- flow control (docs/protocol.md, "Flow control") ----------------------------------------


def test_credit_travels_in_ok_and_error_replies():
    from zmqproc.errors import Busy
    from zmqproc.protocol import Credit

    grant = Credit(seq=3, requests=8, bytes=1 << 20)
    ok = decode_reply(encode_reply("a", "e1", {"time": 1.0}, credit=grant))
    err = decode_reply(encode_error("b", "e1", Busy.shutting_down(), credit=Credit(4, 0, 0)))
    assert ok.credit == grant and err.credit == Credit(4, 0, 0)
    assert err.error is not None and err.error.server_leaving
    assert decode_reply(encode_reply("c", "e1", {})).credit is None  # a server without flow control


@pytest.mark.parametrize(
    "credit", [[1, 2, 3], {"seq": 1, "requests": 2}, {"seq": -1, "requests": 1, "bytes": 0}, {"seq": 1, "requests": True, "bytes": 0}]
)
def test_a_malformed_credit_breaks_the_contract(credit):
    header = {"v": 1, "id": "x", "status": "ok", "epoch": "e", "credit": credit}
    with pytest.raises(MalformedReply, match="credit"):
        decode_reply([msgpack.packb(header)])


def test_a_request_names_the_grant_it_was_sent_under():
    desc = ImageDescriptor("raw", "uint8", (1, 1))
    assert decode_request(encode_request("process", "p", process_fields([Step("identity")], desc, credit_seq=7), b"\0")).credit_seq == 7
    assert decode_request(encode_request("process", "p", process_fields([Step("identity")], desc), b"\0")).credit_seq is None
    for bad in (-1, 1.5, "7", True):
        header = {**process_fields([Step("identity")], desc), "v": 1, "id": "p", "kind": "process", "credit_seq": bad}
        with pytest.raises(BadRequest, match="credit_seq"):
            decode_request(frames_of(header, b"\0"))


def test_credit_admits_within_both_bounds_and_a_lone_request_of_any_size():
    from zmqproc.protocol import Credit

    grant = Credit(seq=1, requests=2, bytes=100)
    assert grant.admits(0, 0, 10_000)  # nothing outstanding: one request fits whatever its size
    assert grant.admits(1, 40, 60) and not grant.admits(1, 40, 61)  # bytes
    assert not grant.admits(2, 10, 1)  # requests
    assert not Credit(seq=2, requests=0, bytes=100).admits(0, 0, 1)  # shutting down: nothing


def test_an_ops_request_may_ask_for_a_pipelines_halo():
    req = decode_request(encode_request("ops", "t1", tile_fields([Step("gaussian_blur", {"ksize": 5})], "uint16")))
    assert (req.kind, req.pipeline, req.tile_dtype) == ("ops", (Step("gaussian_blur", {"ksize": 5}),), "uint16")
    assert decode_request(encode_request("ops", "t2")).tile_dtype is None


@pytest.mark.parametrize(
    "tile", [[], {"pipeline": [{"op": "invert"}], "dtype": "float64"}, {"dtype": "uint8"}, {"pipeline": [], "dtype": "uint8"}]
)
def test_a_malformed_tile_request_is_bad_request(tile):
    with pytest.raises(BadRequest):
        decode_request(frames_of({"v": 1, "id": "t", "kind": "ops", "tile": tile}))
