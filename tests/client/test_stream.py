"""A sequence of requests on its own (no sockets): pull only with room, hand out in order or as they come, drop stale
inputs in live mode, cancel."""

from __future__ import annotations

import itertools
from collections import deque

from zmqproc.client.stream import Stream


def feed(stream: Stream, value: object, request_id: str) -> int:
    assert stream.wants_input()
    stream.pulled(value)
    index, held = stream.to_send()
    assert held is value
    stream.submitted(index, request_id)
    return index


def test_ordered_results_wait_for_earlier_ones_and_errors_are_items():
    s = Stream(ordered=True)
    for i in range(3):
        feed(s, f"img{i}", f"r{i}")
    s.finished("r2", "out2")
    s.finished("r1", error=ValueError("bad file"))
    assert s.ready() == [], "the first one has not ended"
    s.finished("r0", "out0")
    items = s.ready()
    assert [(i.index, i.result, i.ok) for i in items] == [(0, "out0", True), (1, None, False), (2, "out2", True)]
    s.exhausted = True
    assert (s.progress.done, s.progress.failed, s.in_flight) == (2, 1, 0) and s.over()


def test_unordered_results_come_as_they_end():
    s = Stream(ordered=False)
    feed(s, "a", "r0")
    feed(s, "b", "r1")
    s.finished("r1", "B")
    assert [i.index for i in s.ready()] == [1]


def test_an_input_without_room_is_held_and_nothing_more_is_pulled():
    s = Stream()
    s.pulled("a")
    assert s.to_send() == (0, "a") and not s.wants_input(), "memory stays bounded: one input held at most"


def test_live_mode_replaces_a_stale_input_and_does_not_wait_for_it():
    s = Stream(ordered=True, latest=True)
    feed(s, "f0", "r0")
    s.pulled("f1")  # no room: held...
    assert s.wants_input()
    s.pulled("f2")  # ...and replaced by a fresher frame
    assert s.progress.dropped == 1 and s.to_send() == (2, "f2")
    s.submitted(2, "r2")
    s.finished("r0", "out0")
    assert [i.index for i in s.ready()] == [0]
    s.finished("r2", "out2")
    assert [i.index for i in s.ready()] == [2], "the dropped frame is not waited for"


def test_live_results_ready_at_once_hand_out_the_newest_and_every_error():
    s = Stream(ordered=True, latest=True)
    for i in range(3):
        s.pulled(f"f{i}")
        s.submitted(i, f"r{i}")
        s.depth = 3
    s.finished("r2", "out2")
    s.finished("r1", error=ValueError("bad frame"))
    s.finished("r0", "out0")
    assert [(i.index, i.ok) for i in s.ready()] == [(1, False), (2, True)] and s.progress.dropped == 1


def live_round(s: Stream, index: int, pulled: float, trip: float) -> None:
    """Frame ``index`` read at ``pulled``, sent at once, its result ``trip`` later."""
    s.pulled(f"f{index}", pulled)
    s.submitted(index, f"r{index}", pulled)
    s.finished(f"r{index}", f"out{index}", now=pulled + trip, service_s=trip)


def test_a_live_result_that_waited_for_the_consumer_gives_way_to_a_fresher_one_due_soon():
    """A camera at 30 fps, 3 ms round trips, a consumer that spends 100 ms on each result: what ended while it was away
    is 100 ms old when it asks, the frame read as it asks is due in 3 ms."""
    s = Stream(latest=True)
    for i in range(4):
        live_round(s, i, i / 30, 0.003)
        assert [item.index for item in s.ready(i / 30 + 0.003, i / 30)] == [i], "a result that came while asked for goes out"
    asked = 0.25
    live_round(s, 4, 0.15, 0.003)  # ended at 0.153, while the consumer was away
    s.pulled("f5", asked)
    s.submitted(5, "r5", asked)
    assert s.ready(asked, asked) == [] and s.progress.dropped == 1
    s.finished("r5", "out5", now=asked + 0.003, service_s=0.003)
    assert [item.index for item in s.ready(asked + 0.003, asked)] == [5]


def test_a_live_result_that_waited_is_handed_out_when_a_fresher_one_is_due_later_than_it_waited():
    """300 ms round trips: the consumer would wait 300 ms for a frame 400 ms fresher, for a result that waited 100 ms."""
    s = Stream(latest=True)
    for i in range(3):
        live_round(s, i, i, 0.3)
        s.ready(i + 0.3, i)
    live_round(s, 3, 3.0, 0.3)  # ended at 3.3; the consumer asks at 3.4
    s.pulled("f4", 3.4)
    s.submitted(4, "r4", 3.4)
    assert [item.index for item in s.ready(3.4, 3.4)] == [3]


def test_a_live_reader_passing_inputs_over_leaves_gaps_in_the_indexes():
    s = Stream(ordered=True, latest=True)
    s.passed_over(2)
    s.pulled("f2")
    assert s.to_send() == (2, "f2") and s.progress.dropped == 2 and s.progress.pulled == 3


def test_cancel_stops_pulling_and_names_what_to_withdraw():
    s = Stream()
    feed(s, "a", "r0")
    s.pulled("b")
    assert s.cancel() == ["r0"] and not s.wants_input() and s.to_send() is None
    s.finished("r0", error=RuntimeError("cancelled"))
    s.ready()
    assert s.over()


def test_an_input_that_cannot_be_sent_is_its_own_failed_item():
    s = Stream()
    feed(s, "a", "r0")
    s.pulled(b"junk")
    s.refused(ValueError("not a png, jpeg, webp, bmp or tiff file"))
    s.finished("r0", "A")
    assert [(i.index, i.ok) for i in s.ready()] == [(0, True), (1, False)] and s.progress.failed == 1


def test_live_mode_keeps_out_only_what_the_servers_work_on():
    """Two workers, 100 ms each: the stream settles at three out (two running, one on its way), not the whole credit."""
    s = Stream(ordered=True, latest=True)
    now, out, most = 0.0, {}, 0
    running: list[tuple[float, str]] = []  # (ends at, id) on two workers
    queue: list[str] = []
    for n in range(200):
        while s.may_send(room=True) or s.wants_input():
            if s.wants_input() and s.to_send() is None:
                s.pulled(f"f{n}")
            if not s.may_send(room=True):
                break
            index, _ = s.to_send()
            out[f"r{index}"] = index
            s.submitted(index, f"r{index}")
            queue.append(f"r{index}")
        most = max(most, s.in_flight)
        while queue and len(running) < 2:
            running.append((now + 0.1, queue.pop(0)))
        running.sort()
        now, done = running.pop(0)
        s.finished(done, "out", now=now, service_s=0.1)
        s.ready()
    assert s.depth in (3, 4) and most <= 4, f"depth {s.depth}, {most} out at most"


def test_without_timings_live_mode_keeps_one_out():
    s = Stream(latest=True)
    feed(s, "f0", "r0")
    s.pulled("f1")
    assert not s.may_send(room=True), "the first result has not told the stream how many the servers take"


def test_advance_pulls_and_sends_while_there_is_room_and_an_unsendable_input_is_its_own_item():
    s = Stream()
    source, sent, room = iter(["a", b"junk", "b", "c", "d"]), [], [True, True, True, False]

    def send(value):
        if value == b"junk":
            raise ValueError("not an image")
        sent.append(value)
        return f"r{len(sent)}"

    s.advance(lambda: next(source), lambda _value: room.pop(0), send)
    assert sent == ["a", "b"] and s.to_send() == (3, "c"), "stops at the first input without room; holds it, pulls no more"
    s.finished("r1", "A")
    assert [(i.index, i.ok) for i in s.ready()] == [(0, True), (1, False)]
    s.advance(lambda: next(source), lambda _value: True, send)
    assert sent == ["a", "b", "c", "d"] and s.exhausted


def test_a_live_source_is_read_once_per_advance():
    s = Stream(latest=True)
    reads = []

    def camera():
        reads.append(len(reads))
        return f"f{len(reads)}"

    s.advance(camera, lambda _value: True, lambda value: "r0")
    s.advance(camera, lambda _value: True, lambda value: "r1")
    assert len(reads) <= 3 and s.in_flight == 1, "one out until the first result tunes the depth"


def test_with_a_timeout_no_more_is_out_than_the_servers_finish_in_half_of_it():
    """One worker, 0.4 s a request, a 10 s timeout: 12 out (4.8 s of work), not a credit of 33 (13 s: the last time out)."""
    s = Stream(timeout=10.0)
    source, out = itertools.count(), deque()

    def send(value):
        out.append(f"r{value}")
        return out[-1]

    now, most = 0.0, 0
    for _ in range(100):
        s.advance(lambda: next(source), lambda _value: True, send)
        most = max(most, s.in_flight)
        now += 0.4
        s.finished(out.popleft(), "out", now=now, service_s=0.4)  # the oldest one ends
        s.ready()
    assert s.depth == 12 and most <= 12, f"depth {s.depth}, {most} out"


def test_two_results_at_once_from_two_servers_do_not_open_the_flood_gates():
    """Two servers finish together: two ends 10 ms apart say 100 results/s, which a 10 s timeout would turn into 500 out."""
    s = Stream(timeout=10.0)
    for i in range(4):
        feed(s, i, f"r{i}")
    s.finished("r0", "out", now=1.00, service_s=1.0)
    s.finished("r1", "out", now=1.01, service_s=1.0)
    s.finished("r2", error=RuntimeError("decode_failed"), now=1.02)
    assert s.depth == 4, "the rate is taken over eight results, not two; failures do not count"


def test_a_lean_stream_keeps_out_what_the_servers_work_on_and_drops_nothing():
    """A huge image's tiles on two workers, 1 s each: three out (not the whole credit queued on the server), all done."""
    s = Stream(ordered=False, lean=True, timeout=3600.0)
    source, out, running, now, most = iter(range(40)), [], [], 0.0, 0
    while not s.over():
        s.advance(lambda: next(source), lambda _value: True, lambda value: out.append(f"r{value}") or out[-1])
        most = max(most, s.in_flight) if s.progress.done >= 8 else most
        queued = [r for r in out if r not in running]
        while queued and len(running) < 2:
            running.append(queued.pop(0))
        now += 0.5
        done = running.pop(0)
        out.remove(done)
        s.finished(done, "tile", now=now, service_s=1.0)
        s.ready()
    assert s.progress.done == 40 and s.progress.dropped == 0 and most <= 3, f"{most} out"


def test_a_live_consumer_slower_than_two_round_trips_gets_one_request_at_a_time_sent_as_it_asks():
    """3 ms round trips, 100 ms on each result: a frame sent before the consumer asks is stale when it does."""
    s = Stream(latest=True)
    s.depth = 4
    asked = 0.0
    for i in range(4):
        live_round(s, i, asked, 0.003)
        s.ready(asked + 0.003, asked)
        asked += 0.103
    s.pulled("f4", asked)
    s.submitted(4, "r4", asked)
    s.finished("r4", "out4", now=asked + 0.003, service_s=0.003)
    s.pulled("f5", asked + 0.003)
    assert not s.may_send(room=True), "the result before it waits to be handed out"
    assert [item.index for item in s.ready(asked + 0.003, asked)] == [4]
    assert s.may_send(room=True), "handed out: the next goes as the consumer asks"
