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
    s.route_up(0, 0.0)
    p = s.request("ping", None, None, 1.0, 0.0)
    s.sent(p, 0, 0.0)
    pending, reply = s.receive(encode_reply(p.id, "E1", {"time": 1.0}))
    assert pending is p and reply.ok and s.epoch == "E1" and len(s) == 0
    assert s.receive(encode_reply(p.id, "E1", {})) is None and s.late_replies == 1
    q = s.request("ping", None, None, 1.0, 0.0)
    s.sent(q, 0, 0.0)
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


def test_requests_go_to_the_least_loaded_live_route():
    s = ClientSession(routes=2)
    assert s.pick_route() is None, "no route is up yet"
    s.route_up(0, 0.0)
    s.route_up(1, 0.0)
    first = s.request("ping", None, None, 5.0, 0.0)
    assert s.unsent() == [first]
    s.sent(first, s.pick_route(), 0.0)
    assert first.route == 0 and s.unsent() == [] and s.pick_route() == 1


def test_a_dropped_route_orphans_its_requests_for_resending():
    s = ClientSession(routes=2)
    s.route_up(0, 0.0)
    s.route_up(1, 0.0)
    a = s.request("ping", None, None, 5.0, 0.0)
    s.sent(a, 0, 0.0)
    assert s.route_down(0) == [a] and a.route is None and s.unsent() == [a]
    assert s.pick_route() == 1
    s.sent(a, 1, 0.1)
    assert s.resent == 1 and a.sends == 2
    assert s.receive(encode_reply(a.id, "E", {}), route=1)[0] is a


def test_a_new_epoch_resends_what_the_old_instance_held():
    s = ClientSession()
    s.route_up(0, 0.0)
    first, a, b = (s.request("ping", None, None, 5.0, 0.0) for _ in range(3))
    s.sent(first, 0, 0.0)
    s.receive(encode_reply(first.id, "OLD", {}), route=0)
    s.receive(encode_reply("unknown", "OTHER", {}), route=0)  # an unmatched reply does not tell the epoch
    assert s.epoch == "OLD"
    s.sent(a, 0, 0.0)
    s.sent(b, 0, 0.0)
    assert s.receive(encode_reply(a.id, "NEW", {}), route=0)[0] is a
    assert s.unsent() == [b] and s.epoch == "NEW"
    s.sent(b, 0, 1.0)
    assert s.resent == 1


def test_a_reply_that_crossed_a_reconnect_does_not_tell_the_epoch():
    s = ClientSession()
    s.route_up(0, 0.0)
    first, a, b = (s.request("ping", None, None, 5.0, 0.0) for _ in range(3))
    s.sent(first, 0, 0.0)
    s.receive(encode_reply(first.id, "OLD", {}), route=0)
    s.sent(a, 0, 0.0)
    s.sent(b, 0, 0.0)
    s.route_down(0)
    s.route_up(0, 1.0)
    s.sent(b, 0, 1.0)
    assert s.receive(encode_reply(a.id, "OLD", {}), route=0)[0] is a, "the old instance's late answer still counts"
    s.sent(c := s.request("ping", None, None, 5.0, 1.0), 0, 1.0)
    s.receive(encode_reply(b.id, "NEW", {}), route=0)
    assert s.unsent() == [] and s.resent == 1 and c.sends == 1, "nothing is sent a third time"


def test_reconnect_after_a_drop_does_not_resend_twice():
    s = ClientSession()
    s.route_up(0, 0.0)
    s.receive(encode_reply("x", "OLD", {}), route=0)
    a, b = (s.request("ping", None, None, 5.0, 0.0) for _ in range(2))
    s.sent(a, 0, 0.0)
    s.sent(b, 0, 0.0)
    s.route_down(0)
    s.route_up(0, 1.0)
    s.sent(a, 0, 1.0)
    s.sent(b, 0, 1.0)
    s.receive(encode_reply(a.id, "NEW", {}), route=0)
    assert s.unsent() == [] and s.resent == 2


def test_a_resend_carries_the_time_left():
    s = ClientSession()
    s.route_up(0, 0.0)
    p = s.process_request(np.zeros((2, 2), np.uint8), "identity", timeout=10.0, now=100.0)
    assert s.frames(p, 100.0, 0) is p.frames
    s.sent(p, 0, 100.0)
    s.route_down(0)
    again = s.frames(p, 104.0, 0)
    assert decode_request([again[0], again[1].tobytes()]).deadline_ms == 6000
    assert again[1] is p.frames[1], "the payload is not copied"


def test_a_silent_route_gives_its_work_to_a_live_one_only():
    s = ClientSession(routes=2)
    s.route_up(0, 0.0)
    a = s.request("ping", None, None, 5.0, 0.0)
    s.sent(a, 0, 0.0)
    assert s.needs_ping(0, 2.0, interval=1.0) and not s.needs_ping(0, 0.5, interval=1.0)
    ping = s.liveness_ping(0, 3.0, 2.0)
    assert ping.route == 0 and ping in s.unsent() and not s.needs_ping(0, 2.5, interval=1.0), "one ping, even unsent"
    s.forget(ping.id)
    assert s.route_silent(0) == [], "no other live route: keep waiting"
    s.route_up(1, 2.0)
    assert s.route_silent(0) == [a] and s.pick_route() == 1
