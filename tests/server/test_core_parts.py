"""The server core with payloads in parts (docs/protocol.md, "Payloads in parts"), on a fake clock, without processes.

Uploads: a ``process`` request with ``parts.up`` is checked and admitted from its header, its bytes gather from ``part``
requests, and once they are all in it goes on as if it had come in one frame. Downloads: a result over PART_BYTES whose
request allows it goes out as its first part, the rest held for ``fetch`` requests and counted as unread replies.
"""

from __future__ import annotations

from typing import Any

import cv2
import msgpack
import numpy as np
import pytest

from zmqproc.protocol import PART_BYTES, Limits
from zmqproc.server import work
from zmqproc.server.budget import BudgetPlan
from zmqproc.server.core import SHUTDOWN_GRACE_S, TRANSFER_STALL_S, UPLOAD_STALL_S, CoreConfig, RunInline, Send, ServerCore, Start

MiB = 1 << 20
A, B = b"a", b"b"
SHAPE = (1000, 1200, 3)  # 3.4 MiB of pixels: four parts
IMAGE = np.random.default_rng(23).integers(0, 256, SHAPE, dtype=np.uint8)
BLUR = [{"op": "gaussian_blur", "params": {"ksize": 5}}]  # a worker's job at this size
INVERT = [{"op": "invert"}]


def make_core(jobs: int = 256 * MiB, **config: Any) -> ServerCore:
    plan = BudgetPlan(total=jobs + 64 * MiB, baseline=0, buffers=0, queued=64 * MiB, jobs=jobs)
    return ServerCore(CoreConfig(plan, **{"workers": 2, "max_queue": 8, "job_timeout": 60.0, **config}), "epoch", 0.0, lambda: 1e9)


def process(request_id: str, image: Any = IMAGE, ops: Any = BLUR, fmt: str = "raw", up: bool = False, down: bool = False, **extra: Any):
    """A process request's frames: the payload as frame 1, or (``up``) announced in ``parts`` and left out."""
    payload = image.tobytes() if isinstance(image, np.ndarray) else bytes(image)
    desc = {"format": "raw", "dtype": "uint8", "shape": list(image.shape)} if fmt == "raw" else {"format": fmt}
    header = {"v": 1, "id": request_id, "kind": "process", "pipeline": ops, "image": desc, **extra}
    parts = {**({"up": len(payload)} if up else {}), **({"down": True} if down else {})}
    if parts:
        header["parts"] = parts
    head = msgpack.packb(header)
    return [head] if up else [head, payload]


def part(request_id: str, target: str, offset: int, data: bytes) -> list[bytes]:
    return [msgpack.packb({"v": 1, "id": request_id, "kind": "part", "target": target, "offset": offset}), data]


def control(kind: str, request_id: str, **extra: Any) -> list[bytes]:
    return [msgpack.packb({"v": 1, "id": request_id, "kind": kind, **extra})]


def header(send: Send) -> dict[str, Any]:
    return msgpack.unpackb(send.frames[0])


def code(send: Send) -> str:
    reply = header(send)
    return str(reply["status"] if reply["status"] == "ok" else reply["error"]["code"])


def settle(core: ServerCore, actions: list[Any], now: float) -> list[Send]:
    """Carry out the actions as the loop and idle workers would (each started job finishes at once); the sends, in order."""
    sends: list[Send] = []
    pending = list(actions)
    while True:
        while pending:
            action = pending.pop(0)
            if isinstance(action, Send):
                sends.append(action)
            elif isinstance(action, (RunInline, Start)):
                pending += core.finished(action.job, work.run(action.spec, action.payload), now)
        pending = core.pump(now, idle_workers=2)
        if not pending:
            return sends


def upload(core: ServerCore, client: bytes, request_id: str, payload: bytes, now: float = 0.0, **process_args: Any) -> list[Send]:
    """A process request whose payload follows in parts of PART_BYTES; every send the core made meanwhile."""
    sends = settle(core, core.receive(client, process(request_id, up=True, **process_args), now), now)
    assert sends == [], "admitted at once, answered at the end"
    for offset in range(0, len(payload), PART_BYTES):
        data = payload[offset : offset + PART_BYTES]
        sends += settle(core, core.receive(client, part(f"{request_id}@{offset}", request_id, offset, data), now), now)
    return sends


def by_id(sends: list[Send]) -> dict[str, Send]:
    return {header(s)["id"]: s for s in sends}


def whole(core: ServerCore, request_id: str, **process_args: Any) -> Send:
    """The same request sent in one frame, on another connection; its reply read at once."""
    (reply,) = settle(core, core.receive(B, process(request_id, **process_args), 0.0), 0.0)
    assert code(reply) == "ok" and "parts" not in header(reply)
    if reply.held:
        core.reply_released(reply.job, 0.0)
    return reply


# -- uploads --------------------------------------------------------------------------------------


def test_an_upload_in_parts_gives_the_same_bytes_as_the_request_sent_whole():
    core = make_core()
    sends = upload(core, A, "up", IMAGE.tobytes())
    answers = [(header(s)["id"], code(s), header(s).get("received")) for s in sends]
    assert answers == [("up@0", "ok", MiB), ("up@1048576", "ok", 2 * MiB), ("up@2097152", "ok", 3 * MiB),
                       ("up@3145728", "ok", IMAGE.nbytes), ("up", "ok", None)]  # fmt: skip
    result, expected = sends[-1], whole(core, "whole")
    assert header(result)["image"] == header(expected)["image"]
    assert bytes(result.frames[1]) == bytes(expected.frames[1])
    stats = core.stats(0.0)
    assert stats["uploads"] == 0 and stats["memory"]["upload_bytes"] == 0 and stats["in_flight"] == 0
    assert core.credit.outstanding(A) == (0, 0), "its credit is given back with its answer"


def test_light_work_uploaded_in_parts_still_runs_inline():
    core = make_core()
    small = IMAGE[:700]  # 2.4 MiB, invert: light
    core.receive(A, process("up", small, INVERT, up=True), 0.0)
    data = small.tobytes()
    core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 0.0)
    core.receive(A, part("p1", "up", PART_BYTES, data[PART_BYTES : 2 * PART_BYTES]), 0.0)
    received, run = core.receive(A, part("p2", "up", 2 * PART_BYTES, data[2 * PART_BYTES :]), 0.0)
    assert code(received) == "ok" and isinstance(run, RunInline)
    (reply,) = core.finished(run.job, work.run(run.spec, run.payload), 0.0)
    assert bytes(reply.frames[1]) == (255 - small).tobytes()


def test_an_encoded_file_uploaded_in_parts_is_sized_from_its_header_once_it_is_in():
    core = make_core()
    png = cv2.imencode(".png", IMAGE)[1].tobytes()
    assert len(png) > 2 * PART_BYTES
    sends = upload(core, A, "png", png, image=png, fmt="png", ops=INVERT)
    result = by_id(sends)["png"]
    assert code(result) == "ok" and header(result)["image"] == {"format": "png"}
    decoded = cv2.imdecode(np.frombuffer(bytes(result.frames[1]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, 255 - IMAGE)


def test_what_needs_an_encoded_files_header_is_answered_after_its_last_part():
    core = make_core(limits=Limits(max_pixels=1_000_000))
    png = cv2.imencode(".png", IMAGE)[1].tobytes()  # 1.2 Mpx: over the limit, which only its header says
    sends = upload(core, A, "big", png, image=png, fmt="png", ops=INVERT)
    assert [code(s) for s in sends[:-1]] == ["ok"] * (len(sends) - 1), "every part is taken"
    assert (header(sends[-1])["id"], code(sends[-1])) == ("big", "too_large") and header(sends[-1])["error"]["limit"] == "pixels"
    garbage = bytes(3 * MiB)
    sends = upload(core, A, "junk", garbage, image=garbage, fmt="png", ops=INVERT)
    assert (header(sends[-1])["id"], code(sends[-1])) == ("junk", "decode_failed")
    assert core.stats(0.0)["uploads"] == 0 and core.credit.outstanding(A) == (0, 0)


def test_what_can_be_checked_without_the_bytes_is_answered_at_once():
    core = make_core(jobs=64 * MiB, limits=Limits(max_frame_bytes=8 * MiB))
    mismatch = msgpack.unpackb(process("m", up=True)[0])
    mismatch["parts"]["up"] -= 1
    (reply,) = core.receive(A, [msgpack.packb(mismatch)], 0.0)
    assert code(reply) == "decode_failed" and "frame 1 has" in header(reply)["error"]["message"]
    (reply,) = core.receive(A, process("big", np.zeros((2000, 2000, 3), np.uint8), up=True), 0.0)
    assert code(reply) == "too_large" and header(reply)["error"]["limit"] == "frame_bytes"
    (reply,) = core.receive(A, process("op", ops=[{"op": "nonsense"}], up=True), 0.0)
    assert code(reply) == "unknown_op"
    grow = [{"op": "resize", "params": {"width": 6000, "height": 6000}}]  # 36 Mpx: within the pixel limit, not the memory
    (reply,) = core.receive(A, process("mem", ops=grow, up=True), 0.0)
    assert code(reply) == "too_large" and header(reply)["error"]["limit"] == "memory_bytes"
    assert core.stats(0.0)["uploads"] == 0


def test_an_upload_takes_credit_with_its_announced_bytes_and_holds_that_memory_only():
    core = make_core()
    assert core.receive(A, process("up", up=True), 0.0) == []
    assert core.credit.outstanding(A) == (1, IMAGE.nbytes)
    stats = core.stats(0.0)
    assert stats["uploads"] == 1 and stats["memory"]["upload_bytes"] == IMAGE.nbytes and stats["in_flight"] == 1
    (again,) = core.receive(A, process("up", up=True), 0.0)
    assert code(again) == "bad_request" and "already in progress" in header(again)["error"]["message"]
    (ping,) = core.receive(A, control("ping", "p"), 0.0)
    grant = header(ping)["credit"]
    flood = [core.receive(A, process(f"f{i}", up=True, credit_seq=grant["seq"]), 0.0) for i in range(grant["requests"])]
    assert [code(s) for actions in flood for s in actions] == ["busy"], "the grant's requests, the upload included"


@pytest.mark.parametrize("where", ["wrong offset", "past its bytes"])
def test_a_part_at_the_wrong_offset_or_past_the_payload_ends_the_upload(where):
    core = make_core()
    data = IMAGE[:400].tobytes()  # 1.4 MiB
    core.receive(A, process("up", IMAGE[:400], up=True), 0.0)
    (first,) = core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 0.0)
    assert header(first)["received"] == PART_BYTES
    bad = part("p1", "up", 0, data[:10]) if where == "wrong offset" else part("p1", "up", PART_BYTES, data[PART_BYTES:] + b"x")
    answers = core.receive(A, bad, 0.1)
    assert [(header(s)["id"], code(s)) for s in answers] == [("up", "bad_request"), ("p1", "bad_request")]
    assert "its upload ended" in header(answers[0])["error"]["message"]
    assert core.stats(0.1)["uploads"] == 0 and core.credit.outstanding(A) == (0, 0)
    (late,) = core.receive(A, part("p2", "up", PART_BYTES, data[PART_BYTES:]), 0.2)
    assert code(late) == "bad_request", "the upload is over: its later parts find nothing"


def test_a_part_for_no_upload_in_progress_is_bad_request_and_harms_no_other():
    core = make_core()
    data = IMAGE[:400].tobytes()
    core.receive(A, process("up", IMAGE[:400], up=True), 0.0)
    (unknown,) = core.receive(A, part("x", "nobody", 0, b"abc"), 0.0)
    assert code(unknown) == "bad_request" and "no upload in progress" in header(unknown)["error"]["message"]
    (other,) = core.receive(B, part("y", "up", 0, data[:PART_BYTES]), 0.0)
    assert code(other) == "bad_request", "another connection's upload is not reached"
    core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 0.0)
    sends = settle(core, core.receive(A, part("p1", "up", PART_BYTES, data[PART_BYTES:]), 0.0), 0.0)
    assert [code(s) for s in sends] == ["ok", "ok"]


def test_cancel_mid_upload_answers_it_cancelled_and_frees_its_memory_at_once():
    core = make_core()
    data = IMAGE.tobytes()
    core.receive(A, process("up", up=True), 0.0)
    core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 0.0)
    (other,) = core.receive(B, control("cancel", "c0", target="up"), 0.0)
    assert header(other)["cancelled"] is False
    answers = core.receive(A, control("cancel", "c1", target="up"), 0.1)
    assert [(header(s)["id"], code(s)) for s in answers] == [("up", "cancelled"), ("c1", "ok")]
    assert header(answers[1])["cancelled"] is True
    assert core.stats(0.1)["memory"]["upload_bytes"] == 0 and core.credit.outstanding(A) == (0, 0)
    (late,) = core.receive(A, part("p1", "up", PART_BYTES, data[PART_BYTES : 2 * PART_BYTES]), 0.2)
    assert code(late) == "bad_request"


def test_a_deadline_passing_mid_upload_is_timeout():
    core = make_core()
    data = IMAGE.tobytes()
    core.receive(A, process("up", up=True, deadline_ms=2000), 0.0)
    core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 1.0)
    assert core.next_wakeup(1.0) == pytest.approx(1.0)
    assert core.pump(1.9, idle_workers=2) == []
    (late,) = core.pump(2.01, idle_workers=2)
    assert (header(late)["id"], code(late)) == ("up", "timeout")
    assert "1048576 of its 3600000 bytes came in parts before its deadline_ms passed" in header(late)["error"]["message"]
    assert core.stats(2.01)["uploads"] == 0 and core.next_wakeup(2.01) is None


def test_an_upload_without_a_part_for_10_s_is_dropped_as_timeout_and_each_part_restarts_the_clock():
    """A cut connection's partial upload is gone within 10 s (its client resends on the new connection)."""
    core = make_core()
    data = IMAGE.tobytes()
    core.receive(A, process("up", up=True), 0.0)
    assert core.next_wakeup(0.0) == pytest.approx(UPLOAD_STALL_S) == pytest.approx(10.0)
    core.receive(A, part("p0", "up", 0, data[:PART_BYTES]), 8.0)
    assert core.pump(16.0, idle_workers=2) == [], "a part came 8 s ago"
    assert core.next_wakeup(16.0) == pytest.approx(2.0)
    (dropped,) = core.pump(18.01, idle_workers=2)
    assert (header(dropped)["id"], code(dropped)) == ("up", "timeout") and "none for 10 s" in header(dropped)["error"]["message"]
    assert core.credit.outstanding(A) == (0, 0)


def test_shutdown_mid_upload_answers_it_busy_shutting_down_like_queued_work():
    core = make_core()
    core.receive(A, process("up", up=True), 0.0)
    core.receive(A, part("p0", "up", 0, IMAGE.tobytes()[:PART_BYTES]), 0.0)
    (answer,) = core.shutdown(1.0)
    assert (header(answer)["id"], code(answer)) == ("up", "busy") and header(answer)["error"]["shutting_down"] is True
    assert core.stats(1.0)["uploads"] == 0 and core.done()


# -- downloads ------------------------------------------------------------------------------------


def fetch_all(core: ServerCore, client: bytes, target: str, total: int, now: float = 0.0, release: bool = True) -> tuple[bytes, list[Send]]:
    """Fetch a held result's bytes after its first part, in order; libzmq lets go of each at once (``release``)."""
    data, sends = b"", []
    for offset in range(PART_BYTES, total, PART_BYTES):
        length = min(PART_BYTES, total - offset)
        (send,) = core.receive(client, control("fetch", f"f{offset}", target=target, offset=offset, length=length), now)
        assert code(send) == "ok" and send.held == length
        data += bytes(send.frames[1])
        sends.append(send)
        if release:
            core.reply_released(send.job, now)
    return data, sends


def test_a_big_result_goes_in_parts_byte_exact_and_is_let_go_once_all_is_fetched():
    core = make_core()
    (first,) = settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    reply = header(first)
    assert reply["status"] == "ok" and reply["parts"] == {"bytes": IMAGE.nbytes} and reply["image"]["shape"] == list(SHAPE)
    assert len(first.frames[1]) == PART_BYTES and first.held == PART_BYTES
    assert core.holds(first.job)
    stats = core.stats(0.0)
    assert stats["held_results"] == 1 and stats["memory"]["held_result_bytes"] == IMAGE.nbytes
    assert stats["memory"]["unread_reply_bytes"] == IMAGE.nbytes, "held results count as unread replies"
    assert core.credit.outstanding(A) == (0, 0), "the process request is answered: no longer outstanding"
    core.reply_released(first.job, 0.0)
    assert core.holds(first.job), "the rest is held for fetches"
    rest, fetches = fetch_all(core, A, "down", IMAGE.nbytes, release=False)
    expected = whole(core, "whole")
    assert bytes(first.frames[1]) + rest == bytes(expected.frames[1])
    (gone,) = core.receive(A, control("fetch", "again", target="down", offset=0, length=10), 0.0)
    assert code(gone) == "bad_request", "all of it was sent: nothing is held for more fetches"
    assert core.holds(first.job), "its last parts are still on their way"
    for send in fetches:
        core.reply_released(send.job, 0.0)
    assert not core.holds(first.job)
    stats = core.stats(0.0)
    assert stats["held_results"] == 0 and stats["memory"]["unread_reply_bytes"] == stats["memory"]["held_result_bytes"] == 0


def test_a_result_that_fits_one_part_or_was_not_asked_in_parts_goes_whole():
    core = make_core()
    (small,) = settle(core, core.receive(A, process("small", IMAGE[:100], down=True), 0.0), 0.0)
    assert "parts" not in header(small) and small.frames[1].nbytes == 100 * 1200 * 3
    (big,) = settle(core, core.receive(A, process("big"), 0.0), 0.0)
    assert "parts" not in header(big) and big.frames[1].nbytes == IMAGE.nbytes


def test_uploaded_and_downloaded_in_parts():
    core = make_core()
    sends = upload(core, A, "both", IMAGE.tobytes(), down=True)
    first = by_id(sends)["both"]
    assert header(first)["parts"] == {"bytes": IMAGE.nbytes}
    rest, _ = fetch_all(core, A, "both", IMAGE.nbytes)
    assert bytes(first.frames[1]) + rest == bytes(whole(core, "whole").frames[1])


def test_a_fetch_outside_the_result_or_for_nothing_held_is_bad_request():
    core = make_core()
    settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    (past,) = core.receive(A, control("fetch", "f1", target="down", offset=IMAGE.nbytes - 10, length=11), 0.0)
    assert code(past) == "bad_request" and "pass the result's" in header(past)["error"]["message"]
    (other,) = core.receive(B, control("fetch", "f2", target="down", offset=PART_BYTES, length=10), 0.0)
    assert code(other) == "bad_request", "another connection's result is not reached"
    (unknown,) = core.receive(A, control("fetch", "f3", target="nobody", offset=0, length=10), 0.0)
    assert code(unknown) == "bad_request"
    (ok,) = core.receive(A, control("fetch", "f4", target="down", offset=IMAGE.nbytes - 10, length=10), 0.0)
    assert code(ok) == "ok" and len(ok.frames[1]) == 10


def test_cancel_of_a_held_result_lets_it_go():
    core = make_core()
    (first,) = settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    core.reply_released(first.job, 0.0)
    (fetched,) = core.receive(A, control("fetch", "f1", target="down", offset=PART_BYTES, length=PART_BYTES), 0.0)
    (cancel,) = core.receive(A, control("cancel", "c", target="down"), 0.1)
    assert code(cancel) == "ok" and header(cancel)["cancelled"] is True
    (gone,) = core.receive(A, control("fetch", "f2", target="down", offset=2 * PART_BYTES, length=10), 0.1)
    assert code(gone) == "bad_request"
    assert core.holds(first.job), "a part libzmq still holds keeps the buffer"
    core.reply_released(fetched.job, 0.2)
    assert not core.holds(first.job) and core.stats(0.2)["memory"]["unread_reply_bytes"] == 0
    (again,) = core.receive(A, control("cancel", "c2", target="down"), 0.3)
    assert header(again)["cancelled"] is False


def test_a_held_result_not_fetched_for_30_s_is_let_go():
    core = make_core()
    (first,) = settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    core.reply_released(first.job, 0.0)
    assert core.next_wakeup(0.0) == pytest.approx(TRANSFER_STALL_S)
    (fetched,) = core.receive(A, control("fetch", "f1", target="down", offset=PART_BYTES, length=PART_BYTES), 10.0)
    core.reply_released(fetched.job, 10.0)
    assert core.pump(39.0, idle_workers=2) == [] and core.holds(first.job), "a fetch came 29 s ago"
    assert core.pump(40.01, idle_workers=2) == [] and not core.holds(first.job)
    stats = core.stats(40.01)
    assert stats["held_results"] == 0 and stats["memory"]["unread_reply_bytes"] == 0 and core.next_wakeup(40.01) is None


def test_held_results_throttle_a_connection_that_does_not_fetch_them():
    core = make_core(jobs=20 * MiB)  # A's share of unread bytes: 20 MiB // (1 active + 1) = 10 MiB
    for i in range(3):
        (first,) = settle(core, core.receive(A, process(f"d{i}", ops=INVERT, down=True), float(i)), float(i))
        core.reply_released(first.job, float(i))  # the first part was read; the rest is not fetched
    assert core.stats(3.0)["memory"]["unread_reply_bytes"] == 3 * IMAGE.nbytes
    (ping,) = core.receive(A, control("ping", "p"), 3.0)
    assert header(ping)["credit"]["requests"] == 1, "over its share: granted one request until it fetches"
    for i in range(3):
        fetch_all(core, A, f"d{i}", IMAGE.nbytes, 4.0)
    (ping,) = core.receive(A, control("ping", "p2"), 4.0)
    assert header(ping)["credit"]["requests"] > 1 and core.stats(4.0)["memory"]["unread_reply_bytes"] == 0


def test_a_held_result_has_the_shutdown_grace_to_be_fetched():
    core = make_core()
    (first,) = settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    core.reply_released(first.job, 0.0)
    core.shutdown(1.0)
    assert not core.done(), "its fetches are still answered"
    (fetched,) = core.receive(A, control("fetch", "f1", target="down", offset=PART_BYTES, length=PART_BYTES), 1.5)
    assert code(fetched) == "ok" and header(fetched)["credit"]["requests"] == 0
    core.reply_released(fetched.job, 1.5)
    core.pump(1.0 + SHUTDOWN_GRACE_S, idle_workers=2)
    assert core.done() and not core.holds(first.job)


def test_a_failed_send_of_a_part_is_counted_and_does_not_hold_the_result_forever():
    core = make_core()
    (first,) = settle(core, core.receive(A, process("down", down=True), 0.0), 0.0)
    core.send_failed(first, 0.0)  # the client is gone
    assert core.stats(0.0)["dropped_replies"] == 1 and core.holds(first.job)
    core.pump(TRANSFER_STALL_S + 0.1, idle_workers=2)
    assert not core.holds(first.job) and core.stats(31.0)["memory"]["unread_reply_bytes"] == 0


def test_every_reply_says_the_size_of_parts():
    core = make_core()
    (ping,) = core.receive(A, control("ping", "p"), 0.0)
    (error,) = core.receive(A, part("x", "nobody", 0, b"abc"), 0.0)
    for send in (ping, error):
        assert header(send)["credit"]["part_bytes"] == PART_BYTES
