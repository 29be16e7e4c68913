"""The server core on its own, with a fake clock and no processes: what it sends, runs, starts and stops."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from zmqproc.errors import InternalError
from zmqproc.server import work
from zmqproc.server.budget import BudgetPlan
from zmqproc.server.core import INLINE_TURN_NS, SHUTDOWN_GRACE_S, CoreConfig, RunInline, Send, ServerCore, Start, Stop

MiB = 1 << 20
A, B, C = b"a", b"b", b"c"


def make_core(jobs: int = 64 * MiB, **config: Any) -> ServerCore:
    plan = BudgetPlan(total=jobs + 64 * MiB, baseline=0, buffers=0, queued=64 * MiB, jobs=jobs)
    return ServerCore(CoreConfig(plan, **{"workers": 2, "max_queue": 8, "job_timeout": 60.0, **config}), "epoch", 0.0, lambda: 1e9)


def request(request_id: str, shape=(8, 8, 3), ops=("identity",), **extra: Any) -> list[bytes]:
    header = {
        "v": 1,
        "id": request_id,
        "kind": "process",
        "pipeline": [{"op": o} if isinstance(o, str) else o for o in ops],
        "image": {"format": "raw", "dtype": "uint8", "shape": list(shape)},
        **extra,
    }
    return [msgpack.packb(header), bytes(int(np.prod(shape)))]


def control(kind: str, request_id: str, **extra: Any) -> list[bytes]:
    return [msgpack.packb({"v": 1, "id": request_id, "kind": kind, **extra})]


def replies(actions: list[Any]) -> list[dict[str, Any]]:
    return [msgpack.unpackb(a.frames[0]) for a in actions if isinstance(a, Send)]


def code(reply: dict[str, Any]) -> str:
    return str(reply["status"] if reply["status"] == "ok" else reply["error"]["code"])


def run_inline(core: ServerCore, actions: list[Any], now: float) -> list[Any]:
    """Carry out RunInline actions as the loop does; the sends they produce, with the other actions."""
    out = []
    for action in actions:
        if isinstance(action, RunInline):
            out += core.finished(action.job, work.run(action.spec, action.payload), now)
        else:
            out.append(action)
    return out


HEAVY = {"op": "denoise"}


def test_ping_ops_and_stats_are_answered_at_once_with_credit():
    core = make_core()
    (ping,) = replies(core.receive(A, control("ping", "p"), 0.0))
    assert ping["id"] == "p" and ping["time"] == 1e9 and ping["credit"]["requests"] >= 1
    (ops,) = replies(core.receive(A, control("ops", "o"), 0.0))
    assert any(o["name"] == "denoise" for o in ops["ops"])
    (stats,) = replies(core.receive(A, control("stats", "s"), 0.0))
    assert stats["requests"] == 3 and stats["memory"]["jobs_bytes"] == 64 * MiB


def test_light_raw_work_runs_inline_in_the_turn_it_arrives_and_heavy_work_waits_for_a_worker():
    core = make_core()
    (inline,) = core.receive(A, request("light"), 0.0)
    assert isinstance(inline, RunInline)
    (reply,) = replies(run_inline(core, [inline], 0.0))
    assert reply["id"] == "light" and reply["status"] == "ok"
    assert core.receive(A, request("heavy", ops=[HEAVY]), 0.0) == []
    assert core.pump(0.0, idle_workers=0) == []
    (start,) = core.pump(0.0, idle_workers=1)
    assert isinstance(start, Start) and start.reply_bytes == 8 * 8 * 3


def test_inline_work_is_bounded_per_turn_so_a_ping_waits_little():
    core = make_core(jobs=1 << 40)
    big = (512, 512, 3)  # invert: about 80 us of estimated work each
    arrived = [core.receive(bytes([i]), request(f"r{i}", big, ["invert"] * 4), 0.0) for i in range(100)]
    first_turn = [a for actions in arrived for a in actions] + core.pump(0.0, idle_workers=0)
    ran = sum(isinstance(a, RunInline) for a in first_turn)
    assert 0 < ran < 100, "the rest waits for the next turns"
    cost = sum(core._running[a.job].estimate.cost_ns + 30_000 for a in first_turn if isinstance(a, RunInline))
    assert cost < 2 * INLINE_TURN_NS
    assert core.busy(), "the driver polls without sleeping while inline work waits"


def test_a_job_that_can_never_fit_is_too_large_with_the_figures():
    core = make_core(jobs=16 * MiB)
    grow = [{"op": "resize", "params": {"width": 4000, "height": 4000}}]
    (reply,) = replies(core.receive(A, request("big", (1, 1, 4), grow), 0.0))
    assert code(reply) == "too_large" and "MiB at its peak" in reply["error"]["message"]
    assert reply["error"]["limit"] == "memory_bytes" and reply["error"]["value"] > reply["error"]["allowed"] == 16 * MiB


def test_a_job_that_does_not_fit_now_waits_for_memory_while_smaller_work_goes_by():
    core = make_core(jobs=60 * MiB)
    blur = [{"op": "gaussian_blur"}]
    core.receive(A, request("big1", (1500, 1500, 4), blur), 0.0)  # ~26 MiB peak each
    core.receive(A, request("big2", (1500, 1500, 4), blur), 0.0)
    core.receive(B, request("big3", (1500, 1500, 4), blur), 0.0)
    started = [a for a in core.pump(0.0, idle_workers=3) if isinstance(a, Start)]
    assert len(started) == 2, "two fit the budget, the third waits though a worker is idle"
    assert core.stats(0.0)["memory"]["reserved_bytes"] <= 60 * MiB
    out = core.finished(started[0].job, work.Outcome("ok", {"image": {}}, b"x"), 0.1)
    assert code(replies(out)[0]) == "ok"
    assert [type(a) for a in core.pump(0.1, idle_workers=2)] == [Start], "memory freed: the waiting job starts"


def test_deadline_passed_in_the_queue_and_while_running():
    core = make_core()
    core.receive(A, request("running", ops=[HEAVY], deadline_ms=500), 0.0)
    core.receive(A, request("queued", ops=[HEAVY], deadline_ms=100), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    assert core.next_wakeup(0.0) == pytest.approx(0.1)
    late = replies(core.pump(0.2, idle_workers=0))
    assert [(r["id"], code(r)) for r in late] == [("queued", "timeout")] and "in the queue" in late[0]["error"]["message"]
    stopped = core.pump(0.6, idle_workers=0)
    assert stopped[0] == Stop(start.job)
    (reply,) = replies(stopped)
    assert reply["id"] == "running" and code(reply) == "timeout" and "past its deadline_ms" in reply["error"]["message"]
    assert core.finished(start.job, work.Outcome("ok", {}, b"late"), 0.7) == [], "a result after the answer is dropped"


def test_job_timeout_stops_a_runaway_job():
    core = make_core(job_timeout=5.0)
    core.receive(A, request("runaway", ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    assert core.pump(4.9, idle_workers=0) == [] and core.next_wakeup(4.9) == pytest.approx(0.1)
    actions = core.pump(5.01, idle_workers=0)
    assert actions[0] == Stop(start.job)
    assert "--job-timeout (5 s)" in replies(actions)[0]["error"]["message"]
    assert core.stats(5.01)["stopped_jobs"] == 1


def test_cancel_of_queued_and_of_running_work_of_the_same_client_only():
    core = make_core()
    core.receive(A, request("run", ops=[HEAVY]), 0.0)
    core.receive(A, request("wait", ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    (other,) = replies(core.receive(B, control("cancel", "c0", target="run"), 0.0))
    assert other["cancelled"] is False, "another connection's work is not reached"
    actions = core.receive(A, control("cancel", "c1", target="run"), 0.1)
    assert actions[0] == Stop(start.job)
    assert [(r["id"], code(r)) for r in replies(actions)] == [("run", "cancelled"), ("c1", "ok")]
    assert replies(actions)[1]["cancelled"] is True
    queued = replies(core.receive(A, control("cancel", "c2", target="wait"), 0.2))
    assert [(r["id"], code(r)) for r in queued] == [("wait", "cancelled"), ("c2", "ok")] and queued[1]["cancelled"]
    assert core.stats(0.2)["in_flight"] == 0


def test_a_job_whose_worker_dies_starts_again_first_and_is_given_up_at_the_second_death():
    core = make_core(workers=1)
    core.receive(A, request("poison", ops=[HEAVY]), 0.0)
    core.receive(B, request("next", ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    assert core.worker_died(start.job, -9, 1.0) == [], "the first death costs the job nothing: it starts again"
    (again,) = core.pump(1.0, idle_workers=1)
    assert again == start, "ahead of the job that was queued before it died, with the same pixels"
    (reply,) = replies(core.worker_died(again.job, -9, 2.0))
    assert code(reply) == "internal" and reply["id"] == "poison"
    assert "died 2 times" in reply["error"]["message"] and "OOM" in reply["error"]["message"]
    assert core.stats(2.0)["restarted_jobs"] == 1 and core.stats(2.0)["workers_died"] == 2
    (following,) = core.pump(2.0, idle_workers=1)
    assert following.job != start.job
    assert core.worker_died(None, 1, 3.0) == [], "an idle worker's death answers nothing"


def test_a_job_that_never_reached_its_dead_worker_is_not_blamed():
    core = make_core()
    core.receive(A, request("unlucky", ops=[HEAVY]), 0.0)
    for now in (1.0, 2.0, 3.0):  # its worker was already gone when it was handed over: a broken pipe
        (start,) = core.pump(now, idle_workers=1)
        assert core.worker_died(start.job, -9, now, delivered=False) == []
    (start,) = core.pump(4.0, idle_workers=1)
    assert core.worker_died(start.job, -9, 4.0) == [], "one death it was running for: it starts again"
    (start,) = core.pump(5.0, idle_workers=1)
    (reply,) = replies(core.finished(start.job, work.run(start.spec, start.payload), 5.5))
    assert code(reply) == "ok"


def test_an_op_that_raises_is_internal():
    core = make_core()
    core.receive(A, request("boom", ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    (reply,) = replies(core.finished(start.job, work.Outcome("internal", error=InternalError("x")), 0.1))
    assert code(reply) == "internal"


def test_a_float_where_an_int_or_a_choice_is_declared_is_bad_params():
    core = make_core()
    for params in ({"aperture": 3.0}, {"aperture": True}):
        (reply,) = replies(core.receive(A, request("c", ops=[{"op": "canny", "params": params}]), 0.0))
        assert code(reply) == "bad_params"
    (reply,) = replies(core.receive(A, request("k", ops=[{"op": "gaussian_blur", "params": {"ksize": 5.0}}]), 0.0))
    assert code(reply) == "bad_params"


def test_credit_shares_adapt_and_a_raw_flooder_cannot_take_a_newcomers_room():
    core = make_core(max_queue=8)  # capacity 10 requests
    flood = [code(r) for i in range(20) for r in replies(core.receive(A, request(f"f{i}", ops=[HEAVY]), 0.0))]
    assert flood == ["busy"] * (20 - 5), "alone it is granted half: 5"
    (ping,) = replies(core.receive(C, control("ping", "p"), 0.0))
    grant = ping["credit"]
    assert core.receive(C, request("polite", ops=[HEAVY], credit_seq=grant["seq"]), 0.1) == [], "the newcomer is admitted"
    starts = [a for a in core.pump(0.1, idle_workers=2) if isinstance(a, Start)]
    assert [core._running[s.job].client for s in starts] == [A, C], "round-robin: the newcomer does not wait for the flood"


def test_unread_replies_throttle_their_client_and_its_work_waits_then_times_out():
    core = make_core(jobs=23 * MiB, job_timeout=10.0)
    big = (1024, 1024, 4)  # 4 MiB replies, 14 MiB at the peak
    median = [{"op": "median_blur"}] * 2  # too slow for inline work at this size
    for i in range(5):  # its whole grant: 10 // 2
        core.receive(A, request(f"r{i}", big, ops=median), 0.0)
    held = []
    for t in range(3):
        (start,) = [a for a in core.pump(float(t), idle_workers=1) if isinstance(a, Start)]
        (send,) = core.finished(start.job, work.Outcome("ok", {}, bytes(4 * MiB)), float(t))
        assert send.held == 4 * MiB
        held.append(send)
    # 12 MiB unread, over A's share (23 MiB // (1 active + 1)); its grant falls to one request
    (ping,) = replies(core.receive(A, control("ping", "p"), 3.0))
    assert ping["credit"]["requests"] == 1
    assert not any(isinstance(a, Start) for a in core.pump(3.0, idle_workers=2)), "its queued work waits"
    assert core.receive(B, request("b", (512, 512, 4), ops=median), 3.0) == []
    assert [type(a) for a in core.pump(3.0, idle_workers=2)] == [Start], "another client's work goes by"
    late = replies(core.pump(2.0 + 10.1, idle_workers=2))
    assert {code(r) for r in late} == {"timeout"} and len(late) == 2 and "unread" in late[0]["error"]["message"]
    for send in held:
        core.reply_released(send.job, 13.0)
    assert core.stats(13.0)["memory"]["unread_reply_bytes"] == 0
    (ping,) = replies(core.receive(A, control("ping", "p2"), 13.0))
    assert ping["credit"]["requests"] > 1, "read at last: its share is back"


def test_shutdown_answers_queued_work_busy_then_stops_what_still_runs_after_the_grace():
    core = make_core()
    core.receive(A, request("run", ops=[HEAVY]), 0.0)
    core.receive(A, request("wait", ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, idle_workers=1)
    (queued,) = replies(core.shutdown(1.0))
    assert queued["id"] == "wait" and code(queued) == "busy" and queued["error"]["shutting_down"] is True
    assert queued["credit"]["requests"] == 0
    (new,) = replies(core.receive(B, request("new"), 1.1))
    assert new["error"]["shutting_down"] is True
    (ping,) = replies(core.receive(B, control("ping", "p"), 1.1))
    assert ping["status"] == "ok" and ping["credit"]["requests"] == 0
    assert not core.done() and core.pump(1.0 + SHUTDOWN_GRACE_S - 0.1, 1) == []
    actions = core.pump(1.0 + SHUTDOWN_GRACE_S, 1)
    assert actions[0] == Stop(start.job) and replies(actions)[0]["error"]["shutting_down"] is True
    assert core.done()


def test_a_failed_send_is_counted_and_releases_what_it_held():
    core = make_core()
    core.receive(A, request("big", (512, 512, 3), ops=[HEAVY]), 0.0)
    (start,) = core.pump(0.0, 1)
    (send,) = core.finished(start.job, work.Outcome("ok", {}, bytes(512 * 512 * 3)), 0.1)
    assert core.stats(0.1)["memory"]["unread_reply_bytes"] == send.held > 0
    core.send_failed(send, 0.1)
    stats = core.stats(0.1)
    assert stats["dropped_replies"] == 1 and stats["memory"]["unread_reply_bytes"] == 0


def test_a_bug_a_request_meets_is_its_internal_answer_never_the_loops_end(monkeypatch):
    core = make_core()

    def broken(*_: Any) -> None:
        raise KeyError(0)  # as _tiff_geometry once did for a TIFF with 0 samples a pixel

    monkeypatch.setattr("zmqproc.server.core.decode_request", broken)
    (reply,) = replies(core.receive(A, request("r"), 0.0))
    assert code(reply) == "internal" and "logged" in reply["error"]["message"]
    assert len(core.bugs) == 1 and "KeyError: 0" in core.bugs[0]
    monkeypatch.undo()
    assert code(replies(core.receive(A, control("ping", "p"), 0.1))[0]) == "ok"
