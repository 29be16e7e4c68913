"""A sequence of requests under one progress and one cancel, sans I/O: which input goes next, which results are handed
out, and (live) which inputs are dropped. Every driver of a sequence (``Client.map``, the command line's folders and
videos, the viewer's streams) keeps its rules here.

Inputs are pulled only when the session has room for them (its credit), so memory stays bounded whatever the length
of the source. Nor are more requests out than the servers finish in half of a request's ``timeout`` (at the rate
results come back, over the last eight; four until then, and at most twice as many at each step): a slow pipeline's
requests would otherwise wait in the servers' queues past their deadline.

``ordered``: results come out in input order (a later one waits for an earlier); else as they come. ``latest``: for
sources faster than the processing (a camera), an input that cannot go out at once is replaced by the next one
(counted as dropped), and only ``depth`` requests are out at once: enough to keep the servers busy (the rate results
come back at, times their service time, plus one on its way), not the whole credit, which would only queue stale
frames on the server. So the age of what is shown stays about one service time, whatever the source's rate. Results
too are live: of those ready at once only the newest is handed out, and one that waited for a consumer busy with the
one before is dropped when a fresher one is on its way, due sooner than it is fresher and than it waited (a
consumer slower than the source then gets what was captured as it asked, not what was captured as it last asked); a
consumer that spends longer on a result than two round trips gets one request at a time, sent as it asks (nothing is
processed only to be dropped).
``lean``: the same depth without dropping, so the servers hold no more of a sequence than they work on (a huge
image's tiles, whose memory on the servers counts more than a queue's head start).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WINDOW = 8  # the results the rate and (live) the service time are taken over
START_DEPTH = 4  # with a timeout: requests out before the rate is known
QUEUE_SHARE = 0.5  # with a timeout: no more out than the servers finish in this share of it
LIVE_MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class Item:
    """One input's outcome: ``result`` (as the request's future gave it), or ``error`` (a typed error); never both."""

    index: int
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class Progress:
    done: int = 0
    failed: int = 0
    dropped: int = 0
    pulled: int = 0


@dataclass(slots=True)
class Stream:
    """The state of one sequence; the driver pulls, sends, reports and hands out as it says."""

    ordered: bool = True
    latest: bool = False
    timeout: float | None = None
    lean: bool = False  # a request's timeout, in seconds
    progress: Progress = field(default_factory=Progress)
    _held: tuple[int, Any] | None = None  # pulled, not sent yet (there was no room)
    _sent: dict[str, int] = field(default_factory=dict)  # request id -> input index
    _finished: dict[int, Item | None] = field(default_factory=dict)  # ordered: ended (None: skipped), waiting for an earlier one
    _ready: deque[Item] = field(default_factory=deque)
    _next_out: int = 0
    _cancelled: bool = False
    exhausted: bool = False  # the source has nothing more
    depth: float = math.inf  # requests out at most, tuned by what comes back (see the module's docstring)
    _ends: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # when the last results came
    _service: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # live: the servers' time on them
    _trips: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # live: sent to ended, of the last results
    _times: dict[int, list[float]] = field(default_factory=dict)  # live: input index -> [pulled, sent, ended] (as known)
    _away: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # live: the consumer's time on a result
    _handed: float | None = None  # live: when a result last went out

    def __post_init__(self) -> None:
        self.depth = 1 if self.latest else START_DEPTH if self.timeout is not None or self.lean else math.inf

    @property
    def in_flight(self) -> int:
        """Requests of this stream sent and not ended."""
        return len(self._sent)

    def advance(
        self, pull: Callable[[], Any] | None, room_for: Callable[[Any], bool], send: Callable[[Any], str], now: float | None = None
    ) -> None:
        """Pull and send what the rules allow now. ``pull()``: the source's next input (StopIteration at its end; None
        for a source that pushes through :meth:`pulled`), at most one per call when live, as a camera blocks until its
        next frame; ``room_for(value)``: the session would send it at once; ``send(value)``: its request id, or
        ValueError when it cannot be sent (that input's item, not the stream's end)."""
        pulled_once = False
        while not self._cancelled:
            if pull is not None and not self.exhausted and self.wants_input() and (self._held is None or not pulled_once):
                pulled_once = True
                try:
                    self.pulled(pull(), now)
                except StopIteration:
                    self.exhausted = True
            held = self._held
            if held is None or not self.may_send(room_for(held[1])):
                return
            try:
                request_id = send(held[1])
            except ValueError as exc:
                self.refused(exc)
                continue
            self.submitted(held[0], request_id, now)

    def wants_input(self) -> bool:
        """Pull the next input now? Only when nothing pulled waits, or (latest) always: a fresher one replaces it."""
        return not self._cancelled and (self._held is None or self.latest)

    def pulled(self, value: Any, now: float | None = None) -> None:
        """The source gave its next input (``now``: when; live, what a result's freshness is judged by)."""
        if self._held is not None:  # latest: the unsent one is stale now
            self.progress.dropped += 1
            self._skip(self._held[0])
        self._held = (self.progress.pulled, value)
        if self.latest and now is not None:
            self._times[self.progress.pulled] = [now, now, now]
        self.progress.pulled += 1

    def passed_over(self, count: int) -> None:
        """Live: the driver's reader replaced ``count`` inputs by fresher ones before the stream saw them (dropped)."""
        for _ in range(count):
            self.progress.dropped += 1
            self._skip(self.progress.pulled)
            self.progress.pulled += 1

    def to_send(self) -> tuple[int, Any] | None:
        """The input to submit when :meth:`may_send` says so (its index and value)."""
        return self._held

    def may_send(self, room: bool) -> bool:
        """Submit the held input now? ``room``: the session would send it at once. One request is always out (so a
        stream moves even on a server that has not granted credit yet); no more than ``depth``."""
        if self._held is None:
            return False
        if self._consumer_bound():  # one at a time, sent once the result before it is handed out
            return not self._sent and not self._ready
        return not self._sent or (room and len(self._sent) < self.depth)

    def _consumer_bound(self) -> bool:
        """Live: the consumer spends longer on a result than two round trips, so a frame sent ahead of its asking would
        only be stale when it asks: one at a time, sent as it asks."""
        if not self.latest or len(self._away) < 3 or not self._trips:
            return False
        return _median(self._away) > 2 * _median(self._trips)

    def submitted(self, index: int, request_id: str, now: float | None = None) -> None:
        assert self._held is not None and self._held[0] == index
        self._held = None
        self._sent[request_id] = index
        if index in self._times and now is not None:
            self._times[index][1] = now

    def refused(self, error: BaseException) -> None:
        """The held input could not be sent at all (nothing the client can send): its item is that error."""
        assert self._held is not None
        index, self._held = self._held[0], None
        self.progress.failed += 1
        self._hand_out(Item(index, None, error))

    def finished(
        self,
        request_id: str,
        result: Any = None,
        error: BaseException | None = None,
        *,
        now: float | None = None,
        service_s: float | None = None,
    ) -> None:
        """A request of this stream ended (its future's outcome); ``now`` and (live) the server's ``service_s`` tune ``depth``."""
        index = self._sent.pop(request_id, None)
        if index is None:
            return
        if error is None:
            self.progress.done += 1
        else:
            self.progress.failed += 1
        if now is not None and service_s is not None:  # a failure is no measure of the work (often fast, or a burst)
            self._tune(now, service_s)
            times = self._times.get(index)
            if times is not None:
                times[2] = now
                self._trips.append(now - times[1])
        self._hand_out(Item(index, result, error))

    def _tune(self, now: float, service_s: float) -> None:
        """Live or lean: as many out as the servers work on at once (results per second x seconds each), and one more. With a
        timeout: as many as they finish in QUEUE_SHARE of it, once WINDOW results tell the rate."""
        self._ends.append(now)
        self._service.append(service_s)
        if len(self._ends) < 2 or now <= self._ends[0]:
            return
        rate = (len(self._ends) - 1) / (now - self._ends[0])
        if self.latest or self.lean:
            service = sorted(self._service)[len(self._service) // 2]
            self.depth = max(1, min(LIVE_MAX_DEPTH, math.ceil(rate * service) + 1))
        elif self.timeout is not None and len(self._ends) == WINDOW:
            self.depth = max(START_DEPTH, min(2 * self.depth, math.floor(rate * self.timeout * QUEUE_SHARE)))

    def ready(self, now: float | None = None, asked: float | None = None) -> list[Item]:
        """What to hand out now (ordered: the next ones in input order). Live: the newest result (and any errors), none
        if it ended before the consumer ``asked`` and a fresher one is due sooner than it is fresher (``now``)."""
        out = list(self._ready)
        self._ready.clear()
        if not self.latest or not out:
            return out
        if asked is not None and self._handed is not None and asked > self._handed:
            self._away.append(asked - self._handed)
            self._handed = None
        newest = max((item for item in out if item.ok), key=lambda item: item.index, default=None)
        keep = [item for item in out if not item.ok or item is newest]
        if newest is not None and now is not None and asked is not None and self._fresher_due(newest.index, now, asked):
            keep.remove(newest)
        self.progress.dropped += len(out) - len(keep)
        for item in out:
            self._times.pop(item.index, None)
        if keep and now is not None:
            self._handed = now
        return keep

    def _fresher_due(self, index: int, now: float, asked: float) -> bool:
        """A result that waited for the consumer (ended before it asked) is beaten by one out now, pulled later, whose
        result is due (sent + the median round trip) sooner than it is fresher, and sooner than the result has waited
        (the consumer never waits longer for freshness than the result waited for it)."""
        times = self._times.get(index)
        if times is None or times[2] >= asked or not self._trips:
            return False
        trip = _median(self._trips)
        waited = now - times[2]
        for other in self._sent.values():
            later = self._times.get(other)
            if later is not None and later[0] > times[0] and later[1] + trip - now < min(later[0] - times[0], waited):
                return True
        return False

    def cancel(self) -> list[str]:
        """Stop: nothing more is pulled or sent; the requests to withdraw."""
        self._cancelled = True
        if self._held is not None:
            self._skip(self._held[0])
            self._held = None
        return list(self._sent)

    def over(self) -> bool:
        """Nothing is left to pull, send or hand out."""
        nothing_left = self._held is None and not self._sent and not self._ready and not self._finished
        return nothing_left and (self.exhausted or self._cancelled)

    def _skip(self, index: int) -> None:
        """An input that will never have an outcome: an ordered stream does not wait for it."""
        self._times.pop(index, None)
        self._hand_out(None, index)

    def _hand_out(self, item: Item | None, skipped: int | None = None) -> None:
        if not self.ordered:
            if item is not None:
                self._ready.append(item)
            return
        index = item.index if item is not None else skipped
        assert index is not None
        self._finished[index] = item
        while self._next_out in self._finished:
            done = self._finished.pop(self._next_out)
            if done is not None:
                self._ready.append(done)
            self._next_out += 1


def _median(values: deque[float]) -> float:
    return sorted(values)[len(values) // 2]
