"""The session's side of payloads in parts (docs/protocol.md, "Payloads in parts"): uploads and downloads in parts
within a window, progress, liveness while bytes move, and a transport cut that is not a server's death."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from zmqproc.client.events import Fail, Progress, Resolve, RouteChanged
from zmqproc.client.session import LOST, MIN_PART, WINDOW_PARTS, WINDOW_S, ClientOptions, ClientSession
from zmqproc.client.transfer import GUESS_NEAR
from zmqproc.errors import Cancelled, ConnectionLost, ServerCrashed
from zmqproc.protocol import Credit, decode_request, encode_error, encode_reply

PART = 256 * 1024
IMAGE = (np.arange(2048 * 1024 * 3) % 251).astype(np.uint8).reshape(1024, 2048, 3)  # 6 MiB: 24 parts


class PartsServer:
    """One server instance that takes parts: uploads are gathered, results (the image inverted) held for fetches."""

    def __init__(self, epoch: str = "E1", part_bytes: int = PART) -> None:
        self.epoch, self.part_bytes = epoch, part_bytes
        self.uploads: dict[str, tuple[Any, bytearray]] = {}
        self.ready: list[Any] = []  # complete process requests, not answered yet
        self.held: dict[str, bytes] = {}
        self.seen: list[Any] = []

    @property
    def credit(self) -> Credit:
        return Credit(1, 8, 1 << 30, self.part_bytes)

    def take(self, frames: list[Any]) -> list[list[Any]]:
        request = decode_request([frames[0], *[memoryview(f).cast("B") for f in frames[1:]]])
        self.seen.append(request)
        ok = lambda fields, payload=None: [encode_reply(request.id, self.epoch, fields, payload, self.credit)]  # noqa: E731
        if request.kind == "process":
            if request.up is None:
                self.ready.append((request, bytes(request.payload)))
            else:
                self.uploads[request.id] = (request, bytearray())
            return []
        if request.kind == "part":
            process, data = self.uploads[request.target]
            assert request.offset == len(data), "parts come in order"
            data += request.payload
            if len(data) == process.up:
                del self.uploads[request.target]
                self.ready.append((process, bytes(data)))
            return ok({"received": len(data)})
        if request.kind == "fetch":
            held = self.held[request.target]
            return ok({}, held[request.offset : request.offset + request.length])
        if request.kind == "cancel":
            dropped = self.held.pop(request.target, None) is not None
            return ok({"cancelled": dropped})
        return ok({"time": 1.0})

    def answer(self) -> list[list[Any]]:
        out = []
        for request, data in self.ready:
            result = (255 - np.frombuffer(data, np.uint8)).tobytes()
            fields: dict[str, Any] = {"image": request.image.to_wire(), "server_ms": 1.0}
            if request.down and len(result) > self.part_bytes:
                self.held[request.id] = result
                fields["parts"] = {"bytes": len(result)}
                result = result[: self.part_bytes]
            out.append(encode_reply(request.id, self.epoch, fields, result, self.credit))
        self.ready = []
        return out


class Link:
    """A session and one server behind a link that answers each message ``delay`` seconds after it is sent."""

    def __init__(self, server: PartsServer | None = None, delay: float = 0.0, **options: Any) -> None:
        self.now = 100.0
        self.session = ClientSession(["tcp://10.0.0.1:5555"], ClientOptions(**options), self.now)
        self.server = server or PartsServer()
        self.delay = delay
        self.sent: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.inflight_peak = 0
        self.first_window: int | None = None  # bytes of parts out before any was answered
        self.pending: list[list[Any]] = []  # replies on the wire

    def connect(self) -> None:
        self.session.connected(0, self.now)
        self.run(0.0)

    def cut(self) -> None:
        """The connection drops: what was on the wire is gone."""
        self.session.disconnected(0, self.now)
        self.pending = []

    def run(self, seconds: float, answer: bool = True) -> None:
        """Let ``seconds`` pass: what the session sends is answered ``delay`` later (process work only when ``answer``)."""
        end = self.now + seconds
        while True:
            self.session.tick(self.now)
            sends = self.session.sends(self.now)
            for send in sends:
                self.sent.append(msgpack.unpackb(send.frames[0]))
                self.pending += self.server.take(send.frames)
            self.inflight_peak = max(self.inflight_peak, self.session.routes[0].inflight)
            if sends and self.first_window is None and any(h["kind"] == "part" for h in self.sent):
                self.first_window = self.session.routes[0].inflight
            if answer:
                self.pending += self.server.answer()
            self.events += self.session.events()
            if self.now >= end:
                break
            if self.pending:
                self.now = min(end, self.now + self.delay)
                replies, self.pending = self.pending, []
                for frames in replies:
                    self.session.receive(0, [memoryview(f).cast("B") for f in frames], self.now)
            else:
                wake = self.session.next_wakeup()
                self.now = end if wake is None or wake > end else max(self.now, wake)
        self.events += self.session.events()

    def value(self, request_id: str) -> Any:
        done = [e for e in self.events if isinstance(e, Resolve | Fail) and e.request_id == request_id]
        assert len(done) == 1, done
        return done[0].value if isinstance(done[0], Resolve) else done[0].error


def test_a_big_payload_goes_up_in_parts_within_a_window_and_its_result_comes_down_in_parts():
    link = Link(delay=0.01)
    link.connect()
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    link.run(5.0)
    processed = link.value(request_id)
    assert np.array_equal(processed.image, 255 - IMAGE), "byte-exact, though it travelled in 48 pieces"
    process = next(h for h in link.sent if h["kind"] == "process")
    assert process["parts"] == {"up": IMAGE.nbytes, "down": True}
    parts = [h for h in link.sent if h["kind"] == "part"]
    assert [h["offset"] for h in parts] == list(range(0, IMAGE.nbytes, PART))
    fetches = [(h["offset"], h["length"]) for h in link.sent if h["kind"] == "fetch"]
    assert fetches == [(o, PART) for o in range(PART, IMAGE.nbytes, PART)], "the reply held the first part"
    assert link.first_window == WINDOW_PARTS * MIN_PART, "before the link's rate is known, a slow start"
    progress = [e for e in link.events if isinstance(e, Progress)]
    ups = [e.sent for e in progress if e.down == 0]
    downs = [e.received for e in progress if e.down]
    assert ups == list(range(PART, IMAGE.nbytes + 1, PART)) and downs == list(range(PART, IMAGE.nbytes + 1, PART))
    assert all(e.up == IMAGE.nbytes for e in progress) and progress[-1].rate > 0


def test_the_window_grows_with_the_measured_rate_and_a_quick_transfer_goes_whole():
    link = Link(delay=0.001)
    link.connect()
    link.session.submit_process(np.zeros((4096, 4096, 4), np.uint8), "invert", 60.0, link.now)  # 64 MiB
    link.run(30.0)
    rate = link.session.routes[0].rate
    assert rate > 100e6 and link.inflight_peak > WINDOW_PARTS * MIN_PART and link.inflight_peak <= rate * WINDOW_S
    quick = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    link.run(1.0)
    assert "parts" not in link.sent[-1] and link.sent[-1]["id"] == quick, "this link carries 6 MiB in a blink: whole, no copies"
    assert np.array_equal(link.value(quick).image, 255 - IMAGE)


def test_while_parts_are_answered_the_route_stays_alive_however_long_the_transfer():
    """20 s of upload on a slow link (each part answered 0.8 s after it went): no ping times out, nothing is lost."""
    link = Link(delay=0.8)
    link.connect()
    request_id = link.session.submit_process(IMAGE, "invert", 120.0, link.now)
    link.run(60.0)
    assert np.array_equal(link.value(request_id).image, 255 - IMAGE)
    assert link.now - 100.0 > 20
    assert not [e for e in link.events if isinstance(e, RouteChanged) and e.state == LOST]


def test_small_payloads_and_servers_without_parts_send_in_one_piece():
    link = Link(server=PartsServer(part_bytes=0))
    link.connect()
    big = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    small = Link()
    small.connect()
    small.run(0.1)  # the hello ping's answer: the server takes parts
    tiny = small.session.submit_process(IMAGE[:8], "invert", 60.0, small.now)
    link.run(1.0)
    small.run(1.0)
    assert "parts" not in next(h for h in link.sent if h["kind"] == "process")
    assert next(h for h in small.sent if h["kind"] == "process")["parts"] == {"down": True}
    assert not [h for h in link.sent + small.sent if h["kind"] in ("part", "fetch")]
    assert np.array_equal(link.value(big).image, 255 - IMAGE) and np.array_equal(small.value(tiny).image, 255 - IMAGE[:8])


def test_a_big_payload_waits_until_the_server_has_said_whether_it_takes_parts():
    link = Link()
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    link.session.connected(0, link.now)
    link.session.tick(link.now)
    first = link.session.sends(link.now)
    assert [msgpack.unpackb(s.frames[0])["kind"] for s in first] == ["ping"], "the hello ping first, the image after its answer"
    for send in first:
        for frames in link.server.take(send.frames):
            link.session.receive(0, frames, link.now)
    link.run(2.0)
    assert np.array_equal(link.value(request_id).image, 255 - IMAGE)


def test_a_cut_mid_transfer_resends_and_a_cut_is_never_a_servers_death():
    link = Link(delay=0.1)
    link.connect()
    image = np.full((4096, 4096, 4), 7, np.uint8)  # 64 MiB: seconds of upload
    request_id = link.session.submit_process(image, "invert", 60.0, link.now)
    for _ in range(3):  # three cuts in the middle of the upload; the same instance answers after each
        link.run(0.25, answer=False)
        assert link.server.uploads, "cut while parts travel"
        link.cut()
        link.server.uploads.clear()
        link.now += 0.5
        link.connect()
    link.run(20.0)
    assert np.array_equal(link.value(request_id).image, 255 - image)
    assert sum(h["kind"] == "process" for h in link.sent) == 4 and link.session.resent == 3


def test_a_new_instance_after_a_cut_is_a_death_and_two_make_server_crashed():
    link = Link(delay=0.01)
    link.connect()
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    for epoch in ("E2", "E3"):
        link.run(0.05, answer=False)
        link.cut()
        link.server = PartsServer(epoch)
        link.now += 0.5
        link.connect()
    assert isinstance(link.value(request_id), ServerCrashed)


def test_cancel_while_the_result_comes_ends_it_at_once_and_frees_the_server():
    link = Link(delay=0.05)
    link.connect()
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    while not any(isinstance(e, Progress) and e.down for e in link.events):
        link.run(0.05)
    link.session.cancel(request_id, link.now)
    link.events += link.session.events()
    assert isinstance(link.value(request_id), Cancelled)
    link.run(1.0)
    assert not link.server.held and link.sent[-1]["kind"] in ("cancel", "fetch")
    assert any(h["kind"] == "cancel" and h["target"] == request_id for h in link.sent)


def test_a_lost_server_mid_upload_fails_with_connection_lost_after_the_grace():
    link = Link(delay=0.01)
    link.connect()
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    link.run(0.05, answer=False)
    link.cut()
    link.run(4.0)
    assert isinstance(link.value(request_id), ConnectionLost)


def test_an_error_answer_to_a_part_ends_its_request():
    link = Link(delay=0.01)
    link.connect()
    take = link.server.take

    def refuse(frames: list[Any]) -> list[list[Any]]:
        header = msgpack.unpackb(frames[0])
        if header["kind"] == "part" and header["offset"] >= 2 * PART:
            from zmqproc.errors import BadRequest

            return [encode_error(header["id"], "E1", BadRequest("no upload in progress"), link.server.credit)]
        return take(frames)

    link.server.take = refuse  # type: ignore[method-assign]
    request_id = link.session.submit_process(IMAGE, "invert", 60.0, link.now)
    link.run(2.0)
    assert "no upload" in str(link.value(request_id))


def test_the_link_is_judged_by_its_least_round_trip_not_a_late_reading():
    """A first ping answered late (the viewer's window was still being built) does not make loopback look far."""
    link = Link(delay=0.03, keepalive=True)
    link.connect()
    link.run(0.1)
    assert link.session.link().rtt == pytest.approx(0.03) and not link.session.link().measured
    link.delay = 0.0002
    link.run(3.0)  # keepalive pings, now answered at once
    assert link.session.link().rtt == pytest.approx(0.0002) and link.session.link().rate == GUESS_NEAR
