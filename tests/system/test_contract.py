"""The client session and the server core against each other, in memory: docs/protocol.md's contract without sockets.

Each message the session sends reaches the core as the ROUTER hands it over, and each of the core's sends reaches the
session as the wire delivers it; worker jobs run when the test lets a worker finish. What is checked is what the two
real sides agree on (test_session.py and test_core.py check each side against a stand-in): a polite client never sees
``busy`` from a healthy server, work handed back on shutdown is served once by the restarted server, and a cancel or a
deadline stops work that is running.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from zmqproc.client.events import Fail, Resolve
from zmqproc.client.replies import Processed
from zmqproc.client.session import ClientOptions, ClientSession
from zmqproc.errors import Cancelled, DeadlineExceeded, RequestTimeout
from zmqproc.protocol import Limits
from zmqproc.server import work
from zmqproc.server.budget import BudgetPlan
from zmqproc.server.core import CoreConfig, RunInline, Send, ServerCore, Start, Stop

MiB = 1 << 20
CLIENT = b"\x00dealer"  # the identity the ROUTER gives the session's DEALER
IMAGE = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
HEAVY = [("denoise", {})]  # runs on a worker, not inline
LIGHT = "invert"  # runs inline in the socket loop


def wire(frames: list[Any]) -> list[memoryview]:
    return [memoryview(f).cast("B") for f in frames]


class Pair:
    """A :class:`ClientSession` connected to a :class:`ServerCore` (the server's defaults), on a clock the test moves."""

    def __init__(self, workers: int = 2) -> None:
        self.now = 0.0
        self.workers = workers
        self.session = ClientSession(["tcp://127.0.0.1:5555"], ClientOptions(), self.now)
        self.running: dict[int, Start] = {}  # worker jobs the core started and the test has not finished
        self.replies: list[dict[str, Any]] = []  # every reply header any server instance sent
        self.ended: dict[str, Resolve | Fail] = {}
        self.core = self.start_server("E1")

    def start_server(self, epoch: str) -> ServerCore:
        plan = BudgetPlan.split(1 << 30, baseline=100 * MiB, buffers=16 * MiB, max_frame_bytes=Limits().max_frame_bytes)
        self.core = ServerCore(CoreConfig(plan, self.workers), epoch, self.now)
        self.running.clear()
        self.session.connected(0, self.now)
        self.settle()
        return self.core

    def server_exits(self) -> None:
        self.session.disconnected(0, self.now)
        self.settle()

    def submit(self, n: int, pipeline: Any = HEAVY, timeout: float = 60.0) -> list[str]:
        ids = [self.session.submit_process(IMAGE, pipeline, timeout, self.now) for _ in range(n)]
        self.settle()
        return ids

    def act(self, actions: list[Any]) -> None:
        """Carry out the core's actions as the ROUTER loop does."""
        for action in actions:
            if isinstance(action, Send):
                self.replies.append(msgpack.unpackb(action.frames[0]))
                self.session.receive(0, wire(action.frames), self.now)
                if action.held:
                    self.core.reply_released(action.job, self.now)  # the client read it: libzmq lets go
            elif isinstance(action, RunInline):
                self.act(self.core.finished(action.job, work.run(action.spec, action.payload), self.now))
            elif isinstance(action, Start):
                self.running[action.job] = action
            elif isinstance(action, Stop):
                del self.running[action.job]

    def settle(self) -> None:
        """Both sides act until neither has anything more to say at this instant."""
        for _ in range(10_000):
            self.session.tick(self.now)
            sends = self.session.sends(self.now)
            for send in sends:
                self.act(self.core.receive(CLIENT, wire(send.frames), self.now))
            actions = self.core.pump(self.now, self.workers - len(self.running))
            self.act(actions)
            for event in self.session.events():
                if isinstance(event, Resolve | Fail):
                    self.ended[event.request_id] = event
            if not sends and not actions:
                return
        raise AssertionError("the pair never settled")

    def finish(self, n: int | None = None) -> None:
        """The running worker jobs (the first ``n``) end with their real result."""
        for job in list(self.running)[:n]:
            start = self.running.pop(job)
            self.act(self.core.finished(job, work.run(start.spec, start.payload), self.now))
        self.settle()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.settle()

    def run_to_the_end(self, ids: list[str]) -> None:
        for _ in range(len(ids) + 10):
            if all(i in self.ended for i in ids):
                return
            self.finish()
            self.advance(0.01)
        raise AssertionError(f"{sum(i not in self.ended for i in ids)} requests never ended")

    def codes(self) -> list[str]:
        return [r.get("error", {}).get("code", "ok") if r.get("status") == "error" else "ok" for r in self.replies]

    def ok(self, ids: list[str]) -> int:
        return sum(isinstance(e := self.ended.get(i), Resolve) and isinstance(e.value, Processed) for i in ids)


def test_a_burst_far_beyond_the_servers_credit_is_all_served_and_the_server_never_says_busy() -> None:
    pair = Pair()
    ids = pair.submit(300) + pair.submit(200, pipeline=LIGHT)
    out_at_once = len(pair.running) + sum(1 for r in pair.replies if "image" in r)
    assert out_at_once < 100, "the session keeps within the server's credit instead of sending the whole burst"
    pair.run_to_the_end(ids)
    assert pair.ok(ids) == 500
    assert "busy" not in pair.codes()
    assert np.array_equal(pair.ended[ids[-1]].value.image, 255 - IMAGE)


def test_work_handed_back_on_shutdown_is_served_once_by_the_restarted_server() -> None:
    pair = Pair()
    ids = pair.submit(20)
    assert len(pair.running) == 2
    pair.act(pair.core.shutdown(pair.now))  # SIGTERM: what is queued comes back as `busy` + shutting_down
    handed_back = sum(r.get("error", {}).get("shutting_down", False) for r in pair.replies)
    assert handed_back > 0 and not pair.ended, "handed-back work is the client's again, not the caller's error"
    pair.finish()  # running work ends within the shutdown grace and is answered
    assert pair.core.done() and pair.ok(ids) == 2
    pair.server_exits()
    pair.advance(0.5)
    pair.start_server("E2")
    pair.run_to_the_end(ids)
    assert pair.ok(ids) == 20 and not any(isinstance(e, Fail) for e in pair.ended.values())
    assert sum(1 for r in pair.replies if "image" in r) == 20, "nothing was processed twice"


def test_a_cancel_stops_running_and_queued_work_and_the_rest_is_served() -> None:
    pair = Pair(workers=1)
    running, queued, kept = pair.submit(3)
    (job,) = pair.running
    pair.session.cancel(running, pair.now)
    pair.session.cancel(queued, pair.now)
    pair.settle()
    assert job not in pair.running, "the running job was stopped, and its worker took the next"
    for request_id in (running, queued):
        assert isinstance(pair.ended[request_id], Fail) and isinstance(pair.ended[request_id].error, Cancelled)
    assert [r["cancelled"] for r in pair.replies if "cancelled" in r] == [True, True]  # the server had both
    pair.run_to_the_end([kept])
    assert pair.ok([kept]) == 1


def test_a_deadline_stops_work_on_the_server_too() -> None:
    pair = Pair(workers=1)
    (late,) = pair.submit(1, timeout=2.0)
    assert len(pair.running) == 1
    pair.advance(2.1)
    assert not pair.running, "the server stopped the job when its deadline passed"
    error = pair.ended[late].error
    assert isinstance(error, RequestTimeout | DeadlineExceeded) and isinstance(error, TimeoutError)
