"""Client-side request state, sans I/O: ids, frames, deadlines and reply matching.

Shared by the threaded :class:`zmqproc.client.Client` and the Qt adapter: they
move frames; this decides what the frames are and which request a reply ends.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .images import ImageDescriptor, describe_array, sniff_format
from .pipeline import PipelineSpec, to_steps
from .protocol import Buffer, Reply, decode_reply, encode_request, process_fields


@dataclass(slots=True)
class Pending:
    """A request waiting for its reply."""

    id: str
    kind: str
    frames: list[Any]
    deadline: float
    sent_at: float
    epoch: str | None = None  # the server epoch last seen when it was sent


class ClientSession:
    """Builds request frames and matches replies to pending requests by id."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[float, str]] = []
        self.epoch: str | None = None
        self.late_replies = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._pending

    def request(self, kind: str, fields: dict[str, Any] | None, payload: Any, timeout: float, now: float) -> Pending:
        """Register a request and return it with its frames (send ``pending.frames``)."""
        request_id = f"{self._prefix}-{next(self._counter)}"
        pending = Pending(request_id, kind, encode_request(kind, request_id, fields, payload), now + timeout, now, self.epoch)
        self._pending[request_id] = pending
        heapq.heappush(self._deadlines, (pending.deadline, request_id))
        return pending

    def process_request(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        timeout: float,
        now: float,
        reply_format: str | None = None,
    ) -> Pending:
        """A ``process`` request for an array (sent raw, without a copy) or an encoded file's bytes."""
        if isinstance(image, np.ndarray):
            desc, payload = describe_array(image)
        else:
            payload = image
            desc = ImageDescriptor(sniff_format(bytes(memoryview(image)[:16])))
        fields = process_fields(to_steps(pipeline), desc, reply_format, deadline_ms=round(timeout * 1000))
        return self.request("process", fields, payload, timeout, now)

    def receive(self, frames: Sequence[Buffer]) -> tuple[Pending, Reply] | None:
        """Match a reply; None for a reply nobody waits for any more (late or unknown: dropped).

        Raises MalformedReply for a message that breaks the contract.
        """
        reply = decode_reply(frames)
        if reply.epoch is not None:
            self.epoch = reply.epoch
        pending = self._pending.pop(reply.id, None) if reply.id is not None else None
        if pending is None:
            self.late_replies += 1
            return None
        return pending, reply

    def forget(self, request_id: str) -> Pending | None:
        return self._pending.pop(request_id, None)

    def expire(self, now: float) -> list[Pending]:
        """Pending requests whose deadline has passed; they are forgotten."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            pending = self._pending.pop(request_id, None)
            if pending is not None:
                expired.append(pending)
        return expired

    def next_deadline(self) -> float | None:
        """When the earliest pending request expires (None when nothing is pending)."""
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def pending(self) -> list[Pending]:
        return list(self._pending.values())
