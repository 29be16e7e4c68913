"""The client protocol, sans I/O: every scenario of docs/protocol.md's client side, with in-memory servers and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pytest

from zmqproc.client.events import Fail, Resolve, RouteChanged, ServerRestarted, StateChanged
from zmqproc.client.replies import Processed
from zmqproc.client.session import CONNECTED, CONNECTING, LOST, SLOW, TUNNEL_FAILED, TUNNEL_RECONNECTING, ClientOptions, ClientSession
from zmqproc.errors import (
    AuthenticationFailed,
    BadParams,
    Busy,
    Cancelled,
    ConnectionLost,
    MalformedReply,
    RequestTimeout,
    ServerCrashed,
    TunnelDied,
)
from zmqproc.protocol import Credit, Request, decode_request, encode_error, encode_reply

IMAGE = np.arange(12, dtype=np.uint8).reshape(3, 4)


@dataclass
class FakeServer:
    """One server instance behind a route: grants credit, holds process work until told to answer it."""

    epoch: str = "E1"
    requests: int = 4
    bytes: int = 1 << 30
    flow: bool = True  # False: an older server that sends no credit
    seq: int = 1
    held: list[tuple[Request, int | None]] = field(default_factory=list)  # (request, credit_seq it named)
    seen: list[Request] = field(default_factory=list)
    over_grant: int = 0  # polite requests the server would have had to answer busy
    leaving: bool = False

    @property
    def credit(self) -> Credit | None:
        if not self.flow:
            return None
        return Credit(self.seq, 0 if self.leaving else self.requests, 0 if self.leaving else self.bytes)

    def take(self, frames: list[Any]) -> list[Any] | None:
        payload = frames[1:] and [memoryview(frames[1]).cast("B")]
        request = decode_request([frames[0], *payload])
        self.seen.append(request)
        if request.kind != "process":
            fields: dict[str, Any] = {"ping": {"time": 1.0}, "ops": {"ops": [{"name": "invert"}]}, "stats": {"requests": 1}}.get(
                request.kind, {}
            )
            if request.kind == "cancel":
                held = [h for h in self.held if h[0].id == request.target]
                for h in held:
                    self.held.remove(h)
                fields = {"cancelled": bool(held)}
                reply = encode_reply(request.id, self.epoch, fields, credit=self.credit)
                return reply if not held else [reply, encode_error(request.target, self.epoch, Cancelled("stopped"), self.credit)]
            return encode_reply(request.id, self.epoch, fields, credit=self.credit)
        if self.leaving:
            return encode_error(request.id, self.epoch, Busy.shutting_down(), self.credit)
        outstanding = len(self.held) + 1
        if self.flow and outstanding > self.requests:
            self.over_grant += 1
        self.held.append((request, request.credit_seq))
        return None

    def answer(self, n: int | None = None, error: Exception | None = None) -> list[list[Any]]:
        """Replies to the ``n`` oldest held requests (all by default): their image inverted, or ``error``."""
        done, self.held = self.held[:n], self.held[n:] if n is not None else []
        out = []
        for request, _ in done:
            if error is not None:
                out.append(encode_error(request.id, self.epoch, error, self.credit))
                continue
            image = 255 - np.frombuffer(request.payload, np.uint8).reshape(request.image.shape)
            desc = {"format": "raw", "dtype": "uint8", "shape": list(image.shape)}
            out.append(encode_reply(request.id, self.epoch, {"image": desc, "server_ms": 1.0}, image, self.credit))
        return out


class Rig:
    """A session, its servers (one per route), a fake clock and everything the session said."""

    def __init__(self, routes: int = 1, **options: Any) -> None:
        self.now = 100.0
        self.session = ClientSession([f"tcp://10.0.0.{i}:5555" for i in range(routes)], ClientOptions(**options), self.now)
        self.servers = [FakeServer(epoch=f"E{i}") for i in range(routes)]
        self.results: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.events: list[Any] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []

    def connect(self, *routes: int) -> None:
        for route in routes or range(len(self.servers)):
            self.session.connected(route, self.now)
        self.pump()

    def submit(self, n: int = 1, timeout: float = 30.0, image: np.ndarray = IMAGE) -> list[str]:
        ids = [self.session.submit_process(image, "invert", timeout, self.now) for _ in range(n)]
        self.pump()
        return ids

    def pump(self) -> None:
        """Let the session act until it has nothing more to send: servers answer control requests at once."""
        while True:
            self.session.tick(self.now)
            sends = self.session.sends(self.now)
            if not sends:
                break
            for send in sends:
                self.sent.append((send.route, msgpack.unpackb(send.frames[0])))
                reply = self.servers[send.route].take(send.frames)
                for frames in reply if reply and isinstance(reply[0], list) else [reply] if reply else []:
                    self.session.receive(send.route, frames, self.now)
        self.collect()

    def deliver(self, route: int, replies: list[list[Any]]) -> None:
        for frames in replies:
            self.session.receive(route, [memoryview(f).cast("B") for f in frames], self.now)  # as the wire delivers them
        self.pump()

    def answer(self, route: int = 0, n: int | None = None, error: Exception | None = None) -> None:
        self.deliver(route, self.servers[route].answer(n, error))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.pump()

    def collect(self) -> None:
        for event in self.session.events():
            self.events.append(event)
            if isinstance(event, Resolve):
                self.results[event.request_id] = event.value
            elif isinstance(event, Fail):
                self.errors[event.request_id] = event.error

    def held(self, route: int = 0) -> int:
        return len(self.servers[route].held)

    def process_sends(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return ((route, h) for route, h in self.sent if h["kind"] == "process")


# -- requests, replies, typed values ------------------------------------------------------------


def test_a_process_request_carries_its_grant_and_time_left_and_resolves_typed():
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit(timeout=10.0)
    request, seq = rig.servers[0].held[0]
    assert request.kind == "process" and request.image.shape == (3, 4) and request.deadline_ms == 10000 and seq == 1
    rig.answer()
    result = rig.results[rid]
    assert isinstance(result, Processed) and np.array_equal(result.image, 255 - IMAGE) and result.epoch == "E0"
    assert rig.session.epoch == "E0" and len(rig.session) == 0


def test_the_array_is_the_payload_frame_and_encoded_bytes_are_sniffed():
    s = ClientSession(["tcp://h:1"])
    s.connected(0, 0.0)
    s.submit_process(IMAGE, "identity", 5.0, 0.0)
    s.submit_process(b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "identity", 5.0, 0.0)
    s.tick(0.0)
    sends = [x for x in s.sends(0.0) if len(x.frames) == 2]
    assert sends[0].frames[1] is IMAGE, "not copied"
    with pytest.raises(ValueError):
        s.submit_process(b"GIF89a", "identity", 1.0, 0.0)
    with pytest.raises(ValueError):
        s.submit_process(np.zeros((2, 2), np.int64), "identity", 1.0, 0.0)


def test_ping_ops_and_stats_resolve_with_their_values():
    rig = Rig()
    rig.connect()
    ping, ops, stats = (rig.session.submit(kind, 5.0, rig.now) for kind in ("ping", "ops", "stats"))
    rig.pump()
    assert rig.results[ping] == 0.0 and rig.results[ops] == [{"name": "invert"}]
    assert rig.results[stats]["requests"] == 1 and "id" not in rig.results[stats]


@pytest.mark.parametrize(
    ("header", "payload", "words"),
    [
        ({}, b"x" * 12, "'image' must be a map"),
        ({"image": {"format": "raw", "dtype": "uint8", "shape": [3, 5]}}, b"x" * 12, "needs 15 bytes"),
        ({"image": {"format": "raw", "dtype": "int64", "shape": [3, 4]}}, b"x" * 12, "raw dtype"),
        ({"image": {"format": "raw", "dtype": "uint8", "shape": [3, 4]}}, None, "no frame 1"),
        ({"image": {"format": "png"}}, b"not a png at all", "not a readable png"),
        ({"image": {"format": "raw", "dtype": "uint8", "shape": [3, 4]}, "results": [1]}, b"x" * 12, "'result_kinds' must be maps"),
    ],
)
def test_a_process_reply_that_breaks_the_contract_is_malformed_reply_not_key_error(header, payload, words):
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit()
    frames = [msgpack.packb({"v": 1, "id": rid, "status": "ok", "epoch": "E0", **header})]
    rig.deliver(0, [frames + ([payload] if payload is not None else [])])
    assert isinstance(rig.errors[rid], MalformedReply) and words in str(rig.errors[rid])


def test_an_unreadable_reply_fails_the_request_it_names_and_garbage_is_dropped():
    rig = Rig()
    rig.connect()
    a, b = rig.submit(2)
    rig.deliver(0, [[b"\xc1garbage"], [msgpack.packb({"id": a, "status": "maybe"})]])
    assert isinstance(rig.errors[a], MalformedReply) and b not in rig.errors and len(rig.session) == 1


def test_final_error_codes_surface_at_once():
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit()
    rig.answer(error=BadParams("ksize must be odd"))
    assert isinstance(rig.errors[rid], BadParams) and rig.held() == 0 and len(rig.session) == 0


def test_a_late_reply_is_dropped_and_counted():
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit(timeout=1.0)
    rig.advance(1.0)
    assert isinstance(rig.errors[rid], RequestTimeout)
    rig.answer()
    assert rig.session.late_replies == 1 and rid not in rig.results


# -- credit ------------------------------------------------------------------------------------------


def test_until_a_grant_arrives_one_process_request_and_a_hello_ping():
    s = ClientSession(["tcp://h:1"])
    s.connected(0, 0.0)
    for _ in range(5):
        s.submit_process(IMAGE, "identity", 5.0, 0.0)
    s.tick(0.0)
    kinds = [msgpack.unpackb(x.frames[0])["kind"] for x in s.sends(0.0)]
    assert kinds == ["ping", "process"], "the credit is unknown: a ping brings it, one request goes meanwhile"
    assert s.sends(0.0) == []


def test_a_burst_waits_in_the_client_in_order_and_never_exceeds_the_grant():
    rig = Rig()
    rig.connect()
    ids = rig.submit(500)
    assert rig.held() == 4 and rig.session.waiting_bytes == 496 * IMAGE.nbytes
    while rig.held():
        rig.answer(n=1)
        assert rig.held() <= 4
    assert list(rig.results) == ids, "in submission order"
    assert rig.servers[0].over_grant == 0 and not rig.errors and rig.session.waiting_bytes == 0


def test_the_grant_in_every_reply_replaces_the_last_and_bytes_count_too():
    rig = Rig()
    rig.servers[0].bytes = 2 * IMAGE.nbytes
    rig.connect()
    rig.submit(6)
    assert rig.held() == 2, "the byte window holds two images"
    rig.servers[0].seq, rig.servers[0].requests, rig.servers[0].bytes = 2, 1, 1 << 30
    rig.answer()
    assert rig.held() == 1 and rig.servers[0].held[0][1] == 2, "the lowered grant is kept and named"
    big = np.zeros((100, 100), np.uint8)
    rig.servers[0].seq, rig.servers[0].requests, rig.servers[0].bytes = 3, 4, 10
    rig.answer()
    rig.submit(image=big)
    assert rig.held() == 1, "a request alone fits whatever its size"


def test_work_goes_to_the_route_with_room_and_fewest_outstanding_a_full_one_does_not_hold_back_others():
    rig = Rig(routes=2)
    rig.servers[0].requests, rig.servers[1].requests = 2, 6
    rig.connect()
    rig.submit(20)
    assert (rig.held(0), rig.held(1)) == (2, 6)
    rig.answer(route=1)
    assert (rig.held(0), rig.held(1)) == (2, 6), "the fast server takes more while the full one holds its two"
    assert sum(r.over_grant for r in rig.servers) == 0


def test_room_for_counts_the_work_submitted_and_not_sent_yet():
    rig = Rig(routes=2)
    rig.servers[0].requests, rig.servers[1].requests = 2, 1
    rig.connect()
    rig.submit(1)  # sent: route 1 holds none, route 0 one
    for _ in range(2):  # submitted, not sent yet (the driver's turn has not come): they take the two free slots
        rig.session.submit_process(IMAGE, "invert", 30.0, rig.now)
    assert not rig.session.room_for(IMAGE.nbytes), "the grants' three slots hold the three submitted"
    for frames in rig.servers[0].answer():  # read, and not sent anything yet
        rig.session.receive(0, frames, rig.now)
    assert rig.session.room_for(IMAGE.nbytes), "the answer frees a slot for one more beside the two waiting"
    rig.session.submit_process(IMAGE, "invert", 30.0, rig.now)
    rig.pump()
    assert rig.held(0) + rig.held(1) == 3 and sum(r.over_grant for r in rig.servers) == 0


def test_a_forgotten_request_still_counts_against_the_grant_until_its_server_answers():
    rig = Rig()
    rig.servers[0].requests = 1
    rig.connect()
    first, second = rig.submit(2, timeout=5.0)
    rig.session.cancel(second, rig.now)
    rig.advance(5.0)
    assert isinstance(rig.errors[first], RequestTimeout)
    (third,) = rig.submit()
    assert rig.held() == 1, "the server still holds the expired request: nothing more is sent"
    rig.answer(error=Busy("deadline"))  # its late answer frees the slot
    assert rig.held() == 1 and rig.servers[0].held[0][0].id == third and rig.servers[0].over_grant == 0


def test_a_server_without_credit_gets_no_window():
    rig = Rig()
    rig.servers[0].flow = False
    rig.connect()
    rig.submit(10)
    assert rig.held() == 10
    assert all("credit_seq" not in h for _, h in rig.process_sends())


def test_the_memory_bound_of_waiting_work():
    rig = Rig(max_waiting_bytes=3 * IMAGE.nbytes)
    rig.connect()
    rig.submit(7)
    assert rig.session.waiting_bytes == 3 * IMAGE.nbytes and rig.session.has_room()
    rig.submit()
    assert not rig.session.has_room()
    rig.answer()
    assert rig.session.has_room()


# -- retryable is not final ---------------------------------------------------------------------


def test_busy_is_retried_with_backoff_preferring_another_server():
    rig = Rig(routes=2)
    rig.connect()
    rig.servers[1].requests = 0  # a grant of 0 from the second: everything goes to the first
    rig.servers[1].seq = 2
    rig.session.submit("ping", 1.0, rig.now)
    rig.pump()
    (rid,) = rig.submit()
    rig.servers[1].requests = 4
    rig.servers[1].seq = 3
    rig.session.submit("ping", 1.0, rig.now)
    rig.pump()
    rig.answer(route=0, error=Busy("queue full"))
    assert rid not in rig.errors and rig.held(1) == 0, "not at once: after a backoff"
    rig.advance(0.049)
    assert rig.held(1) == 0
    rig.advance(0.002)
    assert rig.held(0) == 0 and rig.held(1) == 1, "to the other server"
    rig.answer(route=1, error=Busy("queue full"))
    rig.advance(0.099)
    assert rig.held(0) + rig.held(1) == 0, "the backoff doubles"
    rig.advance(0.002)
    rig.answer(route=0)
    assert isinstance(rig.results[rid], Processed) and rig.session.resent == 2


def test_busy_within_the_deadline_only():
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit(timeout=0.04)
    rig.answer(error=Busy("queue full"))
    assert isinstance(rig.errors[rid], Busy), "no time left to retry: the server's answer is the request's"


def test_shutting_down_drains_the_route_and_resends_elsewhere_at_once():
    rig = Rig(routes=2)
    rig.connect()
    ids = rig.submit(8)
    rig.servers[0].leaving = True
    rig.answer(route=0, error=Busy.shutting_down())
    assert rig.held(1) == 4 and rig.held(0) == 0, "the route that is leaving gets nothing more"
    rig.answer(route=1)
    rig.answer(route=1)
    assert sorted(rig.results) == sorted(ids) and not rig.errors


def test_shutting_down_then_the_next_instance_takes_the_work():
    rig = Rig()
    rig.connect()
    ids = rig.submit(10)
    rig.servers[0].leaving = True
    rig.answer(error=Busy.shutting_down())
    assert rig.held() == 0 and not rig.errors
    rig.session.disconnected(0, rig.now)
    rig.servers[0] = FakeServer(epoch="E-next")
    rig.advance(1.0)
    rig.connect()
    while rig.held():
        rig.answer()
    assert sorted(rig.results) == sorted(ids) and not rig.errors
    assert any(isinstance(e, ServerRestarted) and e.epoch == "E-next" for e in rig.events)


def test_a_disconnect_resends_what_the_connection_held_with_the_time_left():
    rig = Rig()
    rig.connect()
    ids = rig.submit(6, timeout=10.0)
    rig.session.disconnected(0, rig.now)
    rig.servers[0] = FakeServer(epoch="E0")  # the same instance: a network blip
    rig.advance(2.0)
    rig.connect()
    resent = [h for _, h in rig.process_sends()][4:]
    assert resent[0]["id"] == ids[0] and resent[0]["deadline_ms"] == 8000
    assert [h["id"] for h in resent] == ids[:4], "the same instance answers again: a cut, not a death (no suspects)"
    while rig.held():
        rig.answer()
    assert sorted(rig.results) == sorted(ids) and rig.session.resent == 4
    assert not any(isinstance(e, ServerRestarted) for e in rig.events), "same epoch: not a restart"


def test_a_new_epoch_on_the_same_connection_resends_what_the_old_instance_held():
    rig = Rig()
    rig.connect()
    old = rig.submit(3)
    rig.servers[0] = FakeServer(epoch="E-new")  # restarted, and the drop went unseen: the old instance's work is gone
    (new,) = rig.submit()
    rig.answer()  # the new instance's first reply tells its epoch
    assert new in rig.results and any(isinstance(e, ServerRestarted) and e.epoch == "E-new" for e in rig.events)
    while rig.held():
        rig.answer()
    assert sorted(rig.results) == sorted([*old, new]) and rig.session.resent == 3 and rig.session.epoch == "E-new"


# -- poison -----------------------------------------------------------------------------------------


def test_a_request_whose_server_died_twice_holding_it_fails_with_server_crashed():
    rig = Rig()
    rig.connect()
    (poison,) = rig.submit()
    for death in range(2):
        rig.session.disconnected(0, rig.now)
        rig.servers[0] = FakeServer(epoch=f"E{death + 1}")
        rig.advance(0.5)
        rig.connect()
    assert isinstance(rig.errors[poison], ServerCrashed) and "twice" in str(rig.errors[poison])


def test_after_a_death_suspects_go_one_per_route_so_a_second_death_names_one_request():
    rig = Rig()
    rig.connect()
    ids = rig.submit(4)
    rig.session.disconnected(0, rig.now)  # all four were outstanding: all suspects now
    rig.servers[0] = FakeServer(epoch="E1")
    rig.advance(0.5)
    rig.connect()
    assert rig.held() == 1
    rig.submit(2)  # fresh work is not held back by the suspects
    assert rig.held() == 3
    rig.session.disconnected(0, rig.now)  # the suspect out now was the poison
    rig.servers[0] = FakeServer(epoch="E2")
    rig.advance(0.5)
    rig.connect()
    assert [rid for rid, e in rig.errors.items() if isinstance(e, ServerCrashed)] == [ids[0]]
    while rig.held():
        rig.answer()
    assert len(rig.results) == 5 and len(rig.errors) == 1


# -- liveness --------------------------------------------------------------------------------------


def test_state_connecting_connected_slow_and_lost():
    rig = Rig(slow_after=0.5)
    assert rig.session.state == (CONNECTING, -1.0)
    rig.session.connected(0, rig.now)
    rig.session.tick(rig.now)
    (hello,) = rig.session.sends(rig.now)
    rig.now += 0.6
    rig.deliver(0, [rig.servers[0].take(hello.frames)])
    assert rig.session.state == (SLOW, pytest.approx(0.6))
    rig.session.disconnected(0, rig.now)
    rig.collect()
    assert rig.session.state[0] == LOST
    states = [e.state for e in rig.events if isinstance(e, StateChanged)]
    assert states == [SLOW, LOST] and any(isinstance(e, RouteChanged) and e.state == LOST for e in rig.events)
    rig.connect()
    assert rig.session.state[0] == CONNECTED


def test_a_first_stats_answer_measures_the_round_trip():
    rig = Rig()
    rig.session.connected(0, rig.now)
    rig.session.submit("stats", 5.0, rig.now, route=0)  # asked before the connection's first heartbeat went
    rig.session.tick(rig.now)
    stats, ping = rig.session.sends(rig.now)
    assert decode_request(stats.frames).kind == "stats" and decode_request(ping.frames).kind == "ping"
    rig.now += 0.2
    rig.deliver(0, [rig.servers[0].take(stats.frames)])
    assert rig.session.replicas()[0][1:] == (CONNECTED, pytest.approx(0.2))
    rig.deliver(0, [rig.servers[0].take(ping.frames)])  # the heartbeat's answer measures it again
    assert rig.session.replicas()[0][2] == pytest.approx(0.2)


def test_a_never_connected_route_is_connecting_for_the_grace_then_lost():
    rig = Rig(grace=3.0)
    rig.advance(2.9)
    assert rig.session.state[0] == CONNECTING and rig.session.next_wakeup() == pytest.approx(103.0)
    rig.advance(0.1)
    assert rig.session.state[0] == LOST


def test_liveness_pings_while_work_is_out_and_keepalive_pings_when_idle():
    rig = Rig(heartbeat=1.0)
    rig.connect()
    pings = lambda: sum(h["kind"] == "ping" for _, h in rig.sent)  # noqa: E731
    assert pings() == 1, "the hello ping"
    rig.advance(5.0)
    assert pings() == 1, "idle: no pings without keepalive"
    rig.submit()
    rig.advance(0.9)
    assert pings() == 1
    rig.advance(0.1)
    assert pings() == 2, "work out and a second of silence"
    idle = Rig(heartbeat=1.0, keepalive=True)
    idle.connect()
    for _ in range(3):
        idle.advance(1.0)
    assert sum(h["kind"] == "ping" for _, h in idle.sent) == 4


def test_a_silent_route_gives_its_work_to_a_live_one_and_its_late_answers_still_count():
    rig = Rig(routes=2, heartbeat=1.0, ping_timeout=3.0)
    rig.connect()
    ids = rig.submit(6)
    hung = rig.servers[0]
    hung.take = lambda frames: None  # hung: it takes messages and answers nothing
    moved_from = rig.held(0)
    rig.advance(1.0)  # a ping goes out on both; the live one answers
    rig.answer(route=1)
    rig.advance(3.0)  # the hung one's ping expires: its work moves
    while rig.held(1):
        rig.answer(route=1)
    assert sorted(rig.results) == sorted(ids) and rig.session.resent == moved_from
    assert rig.session.routes[0].state == LOST and rig.session.state[0] == CONNECTED


# -- fail fast ------------------------------------------------------------------------------------


def test_every_route_lost_past_the_grace_fails_pending_and_new_work_naming_the_endpoints():
    rig = Rig(routes=2, grace=3.0)
    rig.connect()
    rig.session.disconnected(0, rig.now)
    rig.advance(1.0)
    rig.session.disconnected(1, rig.now)
    ids = rig.submit(3, timeout=30.0)
    rig.advance(2.9)
    assert not rig.errors, "the second route is lost for less than the grace"
    rig.advance(0.1)
    assert sorted(rig.errors) == sorted(ids)
    error = rig.errors[ids[0]]
    assert isinstance(error, ConnectionLost) and "tcp://10.0.0.0:5555" in str(error) and "tcp://10.0.0.1:5555" in str(error)
    (late,) = rig.submit()
    assert isinstance(rig.errors[late], ConnectionLost), "new work fails at once"
    rig.connect(1)
    (again,) = rig.submit()
    assert again not in rig.errors and rig.held(1) == 1


def test_a_route_back_within_the_grace_keeps_the_work():
    rig = Rig(grace=3.0)
    rig.connect()
    ids = rig.submit(2)
    rig.session.disconnected(0, rig.now)
    rig.advance(2.5)
    rig.connect()
    rig.advance(10.0)
    rig.answer()
    assert sorted(rig.results) == sorted(ids)


def test_a_reconnecting_tunnel_keeps_work_waiting_a_failed_one_is_lost_for_good():
    rig = Rig(routes=2, grace=3.0)
    rig.connect()
    ids = rig.submit(2, timeout=60.0)
    for route in (0, 1):
        rig.session.disconnected(route, rig.now)  # the local end drops its connections while SSH reconnects
        rig.session.tunnel(route, TUNNEL_RECONNECTING, rig.now, TunnelDied("the tunnel is reconnecting"))
    rig.advance(10.0)
    assert not rig.errors and rig.session.routes[0].state == CONNECTING, "past the grace: the tunnels are still trying"
    rig.session.tunnel(0, TUNNEL_FAILED, rig.now, TunnelDied("the SSH host changed its key"))
    rig.session.tunnel(1, TUNNEL_FAILED, rig.now, TunnelDied("the login was refused"))
    rig.pump()
    assert all(isinstance(rig.errors[i], TunnelDied) for i in ids), "lost for good: no grace"
    late = Rig(grace=3.0)
    late.connect()
    (rid,) = late.submit(timeout=5.0)
    late.session.disconnected(0, late.now)
    late.session.tunnel(0, TUNNEL_RECONNECTING, late.now, TunnelDied("the tunnel is reconnecting"))
    late.advance(5.0)
    assert isinstance(late.errors[rid], TunnelDied) and "reconnecting" in str(late.errors[rid]), "the cause, at the deadline"


def test_a_refused_key_fails_at_once_and_a_cut_short_handshake_is_named_at_the_grace():
    rig = Rig()
    (rid,) = rig.submit()
    rig.session.refused(0, AuthenticationFailed("not in the allow-list"), rig.now)
    rig.pump()
    assert isinstance(rig.errors[rid], AuthenticationFailed)
    other = Rig(grace=3.0)
    (rid,) = other.submit(timeout=10.0)
    other.session.cut_short(0, AuthenticationFailed("the server public key is wrong"))
    other.advance(3.0)
    assert isinstance(other.errors[rid], AuthenticationFailed) and "public key" in str(other.errors[rid])


# -- cancel, close, sockets that would block --------------------------------------------------------------


def test_cancel_before_sending_is_at_once_and_after_sending_asks_the_server():
    rig = Rig()
    rig.servers[0].requests = 1
    rig.connect()
    sent, waiting = rig.submit(2)
    rig.session.cancel(waiting, rig.now)
    rig.collect()
    assert isinstance(rig.errors[waiting], Cancelled)
    rig.session.cancel(sent, rig.now)
    rig.pump()
    cancel = [h for _, h in rig.sent if h["kind"] == "cancel"]
    assert cancel[0]["target"] == sent and isinstance(rig.errors[sent], Cancelled) and rig.held() == 0


def test_a_cancelled_request_is_not_resent_when_its_connection_drops():
    rig = Rig()
    rig.connect()
    (rid,) = rig.submit()
    rig.servers[0].take = lambda frames: None  # the cancel is not answered
    rig.session.cancel(rid, rig.now)
    rig.pump()
    rig.session.disconnected(0, rig.now)
    rig.collect()
    assert isinstance(rig.errors[rid], Cancelled)


def test_close_fails_everything_and_refuses_new_work():
    rig = Rig()
    rig.connect()
    ids = rig.submit(6)
    rig.session.close("closed by the test")
    rig.collect()
    assert all(isinstance(rig.errors[i], ConnectionLost) for i in ids)
    assert rig.session.sends(rig.now) == []
    with pytest.raises(ConnectionLost):
        rig.session.submit("ping", 1.0, rig.now)


def test_close_cancels_on_each_server_what_it_holds_and_nothing_else():
    rig = Rig(routes=2)
    rig.connect(0)  # route 1 never connects: nothing of ours is there
    ids = rig.submit(3)
    rig.answer(0, n=1)  # one answered: the server no longer holds it
    held = [request.id for request, _ in rig.servers[0].held]
    assert len(held) == 2
    farewells = rig.session.close("the viewer closed")
    cancels = [(f.route, msgpack.unpackb(f.frames[0])) for f in farewells]
    assert [(route, h["kind"], h["target"]) for route, h in cancels] == [(0, "cancel", rid) for rid in held]
    assert not {h["id"] for _, h in cancels} & set(ids), "a cancel has an id of its own"
    rig.collect()
    assert all(isinstance(rig.errors[i], ConnectionLost) for i in held)
    assert rig.session.close("again") == [], "closing twice sends nothing more"


def test_a_send_that_would_block_waits_for_the_route_to_be_writable():
    s = ClientSession(["tcp://h:1"])
    s.connected(0, 0.0)
    s.submit_process(IMAGE, "identity", 5.0, 0.0)
    s.tick(0.0)
    for send in s.sends(0.0):
        s.send_failed(send, 0.0)
    assert s.blocked(0) and s.sends(0.0) == [] and s.resent == 0
    s.writable(0, 0.1)
    s.tick(0.1)
    assert [msgpack.unpackb(x.frames[0])["kind"] for x in s.sends(0.1)] == ["ping", "process"]
    assert s.resent == 0


def test_deadlines_and_the_next_wakeup():
    s = ClientSession(["tcp://h:1"], ClientOptions(grace=100.0))
    early = s.submit("ping", 1.0, 0.0)
    s.submit("ping", 5.0, 0.0)
    assert s.next_wakeup() == 1.0
    s.tick(1.0)
    assert [type(e) for e in s.events() if isinstance(e, Fail | Resolve)] == [Fail]
    assert s.next_wakeup() == 5.0 and early not in s
