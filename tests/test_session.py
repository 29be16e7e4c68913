"""Client state, sans I/O: ids, deadlines, reply matching."""

import msgpack
import numpy as np
import pytest

from zmqproc.errors import Busy, MalformedReply
from zmqproc.protocol import decode_request, encode_error, encode_reply
from zmqproc.session import ClientSession


def test_requests_get_unique_ids_and_decodable_frames():
    s = ClientSession()
    a = s.request("ping", None, None, timeout=1.0, now=10.0)
    b = s.process_request(np.zeros((3, 4), np.uint8), "invert", timeout=2.0, now=10.0)
    assert a.id != b.id and len(s) == 2
    req = decode_request([b.frames[0], b.frames[1].tobytes()])
    assert req.kind == "process" and req.deadline_ms == 2000 and req.image.shape == (3, 4)
    assert b.frames[1].shape == (3, 4), "the array itself is the payload frame"


def test_encoded_bytes_are_sniffed():
    s = ClientSession()
    p = s.process_request(b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "identity", 1.0, 0.0)
    assert msgpack.unpackb(p.frames[0])["image"] == {"format": "png"}
    with pytest.raises(ValueError):
        s.process_request(b"GIF89a", "identity", 1.0, 0.0)


def test_replies_match_and_late_ones_are_dropped():
    s = ClientSession()
    p = s.request("ping", None, None, 1.0, 0.0)
    pending, reply = s.receive(encode_reply(p.id, "E1", {"time": 1.0}))
    assert pending is p and reply.ok and s.epoch == "E1" and len(s) == 0
    assert s.receive(encode_reply(p.id, "E1", {})) is None and s.late_replies == 1
    q = s.request("ping", None, None, 1.0, 0.0)
    _, err = s.receive(encode_error(q.id, "E2", Busy("full")))
    assert isinstance(err.error, Busy) and s.epoch == "E2"


def test_deadlines():
    s = ClientSession()
    early = s.request("ping", None, None, 1.0, 0.0)
    late = s.request("ping", None, None, 5.0, 0.0)
    assert s.next_deadline() == 1.0
    assert s.expire(0.5) == [] and s.expire(1.0) == [early]
    assert s.next_deadline() == 5.0
    s.forget(late.id)
    assert s.next_deadline() is None and s.expire(100) == []


def test_malformed_reply_raises():
    with pytest.raises(MalformedReply):
        ClientSession().receive([b"junk"])
