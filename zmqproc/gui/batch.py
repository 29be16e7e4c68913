"""Batch processing: a window of requests in flight, per-item status, cancel, a summary at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from ..errors import Cancelled
from ..pipeline import PipelineSpec
from .messages import explain
from .qt_client import QtClient

WAITING, SENT, DONE, FAILED, CANCELLED = "waiting", "sent", "done", "failed", "cancelled"


@dataclass
class BatchItem:
    path: str
    status: str = WAITING
    request_id: str | None = None
    started: float = 0.0
    elapsed: float = 0.0
    message: str = ""
    result: Any = None  # zmqproc.client.Processed


class Batch(QObject):
    """Send ``paths`` through ``pipeline``, at most ``window`` at a time; ``finished(summary)`` at the end."""

    itemChanged = Signal(int)
    finished = Signal(str)

    def __init__(
        self,
        client: QtClient,
        paths: Sequence[str],
        pipeline: PipelineSpec,
        load: Callable[[str], Any],
        *,
        reply_format: str | None = None,
        window: int = 4,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.items = [BatchItem(p) for p in paths]
        self.pipeline = pipeline
        self.reply_format = reply_format
        self.window = window
        self._load = load
        self._by_id: dict[str, int] = {}
        self._next = 0
        self.started = 0.0
        self.running = False
        client.processed.connect(self._processed)
        client.failed.connect(self._failed)

    @property
    def finished_count(self) -> int:
        return sum(item.status in (DONE, FAILED, CANCELLED) for item in self.items)

    def start(self) -> None:
        self.started = time.monotonic()
        self.running = True
        self._fill()

    def cancel(self) -> None:
        """Drop what is not sent yet; ask the server to withdraw what it has queued (running work finishes)."""
        for index, item in enumerate(self.items):
            if item.status == WAITING:
                self._end(index, CANCELLED, "cancelled")
        for request_id in list(self._by_id):
            self.client.cancel(request_id)
        self._maybe_finish()

    def summary(self) -> str:
        counts = {s: sum(i.status == s for i in self.items) for s in (DONE, FAILED, CANCELLED)}
        took = time.monotonic() - self.started
        parts = [f"{counts[DONE]} done"] + [f"{counts[s]} {s}" for s in (FAILED, CANCELLED) if counts[s]]
        return f"Batch of {len(self.items)}: {', '.join(parts)} in {took:.1f} s"

    def _fill(self) -> None:
        while self.running and len(self._by_id) < self.window and self._next < len(self.items):
            index = self._next
            self._next += 1
            item = self.items[index]
            if item.status != WAITING:
                continue
            try:
                image = self._load(item.path)
            except (OSError, ValueError) as exc:
                self._end(index, FAILED, str(exc))
                continue
            item.request_id = self.client.process(image, self.pipeline, reply_format=self.reply_format)
            item.started = time.monotonic()
            item.status = SENT
            self._by_id[item.request_id] = index
            self.itemChanged.emit(index)
        self._maybe_finish()

    def _processed(self, request_id: str, result: Any) -> None:
        index = self._by_id.pop(request_id, None)
        if index is not None:
            self.items[index].result = result
            self._end(index, DONE, f"server {result.server_ms:.0f} ms")
            self._fill()

    def _failed(self, request_id: str, error: BaseException) -> None:
        index = self._by_id.pop(request_id, None)
        if index is not None:
            self._end(index, CANCELLED if isinstance(error, Cancelled) else FAILED, explain(error))
            self._fill()

    def _end(self, index: int, status: str, message: str) -> None:
        item = self.items[index]
        item.status, item.message = status, message
        item.elapsed = time.monotonic() - item.started if item.started else 0.0
        self.itemChanged.emit(index)

    def _maybe_finish(self) -> None:
        if self.running and self.finished_count == len(self.items):
            self.running = False
            self.client.processed.disconnect(self._processed)
            self.client.failed.disconnect(self._failed)
            self.finished.emit(self.summary())
