"""Batch processing: requests in flight, per-item status, results written to a folder as they arrive, retry, cancel.

Nothing is held in memory for long: each result is written (on a writer
thread, so the window stays responsive) as soon as it arrives, under a name made
from :class:`BatchOutput`'s pattern, and read back from its file when the user
wants to see it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal

from ..client.pipeline import PipelineSpec
from ..errors import Cancelled
from ..formats import BY_NAME
from .helpers import BatchOutput, encode_for_disk
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
    output: Path | None = None  # the result's file, once written
    results: dict[str, Any] = field(default_factory=dict)
    result_kinds: dict[str, str] = field(default_factory=dict)


class Batch(QObject):
    """Send ``paths`` through ``pipeline``, ``window`` in flight; ``finished(summary)`` when every item has ended."""

    itemChanged = Signal(int)
    finished = Signal(str)
    _written = Signal(int, object, object)  # row, path or None, error or None: from the writer thread

    def __init__(
        self,
        client: QtClient,
        paths: Sequence[str],
        pipeline: PipelineSpec,
        load: Callable[[str], Any],
        output: BatchOutput,
        *,
        window: int = 4,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.items = [BatchItem(p) for p in paths]
        self.pipeline = pipeline
        self.output = output
        self.window = window
        self._load = load
        self._by_id: dict[str, int] = {}
        self._writing: set[int] = set()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zmqproc-batch-writer")
        self.started = 0.0
        self.earlier_s = 0.0  # the time of the batch's earlier runs (before Retry failed): the summary counts them all
        self.running = False
        self._closed = False
        self._written.connect(self._on_written)
        client.processed.connect(self._processed)
        client.failed.connect(self._failed)

    @property
    def finished_count(self) -> int:
        return sum(item.status in (DONE, FAILED, CANCELLED) for item in self.items)

    def counts(self) -> dict[str, int]:
        return {s: sum(i.status == s for i in self.items) for s in (DONE, FAILED, CANCELLED)}

    def start(self) -> None:
        self.output.folder.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.running = True
        self._fill()

    def retry_failed(self) -> bool:
        """Send the failed (and cancelled) items again; False when there are none or the batch still runs."""
        again = [i for i, item in enumerate(self.items) if item.status in (FAILED, CANCELLED)]
        if self.running or not again:
            return False
        for index in again:
            self.items[index] = BatchItem(self.items[index].path)
            self.itemChanged.emit(index)
        self.start()
        return True

    def cancel(self) -> None:
        """Drop what is not sent yet; ask the server to stop what it has (queued or running)."""
        for index, item in enumerate(self.items):
            if item.status == WAITING:
                self._end(index, CANCELLED, "cancelled")
        for request_id in list(self._by_id):
            self.client.cancel(request_id)
        self._maybe_finish()

    def save_all(self, target: BatchOutput) -> int:
        """Copy the written results into ``target`` (named by its pattern); how many."""
        target.folder.mkdir(parents=True, exist_ok=True)
        copied = 0
        for index, item in enumerate(self.items):
            if item.output is not None and item.output.exists():
                destination = target.folder / target.name(item.path, self.pipeline, index)
                if target.fmt == self.output.fmt:
                    shutil.copyfile(item.output, destination)
                else:
                    image = cv2.imread(str(item.output), cv2.IMREAD_UNCHANGED)
                    if image is None:
                        continue  # gone or damaged since it was written
                    destination.write_bytes(encode_for_disk(image, target.fmt))
                copied += 1
        return copied

    def summary(self) -> str:
        counts = self.counts()
        took = self.earlier_s + (time.monotonic() - self.started if self.running else 0.0)
        parts = [f"{counts[DONE]} done"] + [f"{counts[s]} {s}" for s in (FAILED, CANCELLED) if counts[s]]
        return f"Batch of {len(self.items)}: {', '.join(parts)} in {took:.1f} s; results in {self.output.folder}"

    def reply_format(self) -> str:
        """What to ask the server for: the output format itself when it can encode it, else raw pixels."""
        return self.output.fmt if BY_NAME[self.output.fmt].server_encodes else "raw"  # the server's bytes are written as they come

    # -- internals ----------------------------------------------------------------------

    def _fill(self) -> None:
        for index, item in enumerate(self.items):
            if not self.running or len(self._by_id) + len(self._writing) >= self.window:
                break
            if item.status != WAITING:
                continue
            try:
                image = self._load(item.path)
            except (OSError, ValueError) as exc:  # the file, not the server: said as the window says it
                self._end(index, FAILED, f"Cannot open it: {exc}.")
                continue
            item.request_id = self.client.process(image, self.pipeline, reply_format=self.reply_format())
            item.started = time.monotonic()
            item.status = SENT
            self._by_id[item.request_id] = index
            self.itemChanged.emit(index)
        self._maybe_finish()

    def _processed(self, request_id: str, result: Any) -> None:
        index = self._by_id.pop(request_id, None)
        if index is None:
            return
        item = self.items[index]
        item.results, item.result_kinds = dict(result.results), dict(result.result_kinds)
        item.message = f"server {result.server_ms:.0f} ms"
        destination = self.output.folder / self.output.name(item.path, self.pipeline, index)
        self._writing.add(index)
        self._writer.submit(self._write, index, result.image, destination)

    def _write(self, index: int, image: np.ndarray | bytes, destination: Path) -> None:
        try:
            destination.write_bytes(encode_for_disk(image, self.output.fmt))
            self._written.emit(index, destination, None)
        except (OSError, ValueError) as exc:
            self._written.emit(index, None, exc)

    def _on_written(self, index: int, destination: Path | None, error: BaseException | None) -> None:
        self._writing.discard(index)
        if error is not None:
            self._end(index, FAILED, f"could not write the result: {explain(error)}")
        else:
            self.items[index].output = destination
            self._end(index, DONE, self.items[index].message)
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
            self.earlier_s += time.monotonic() - self.started
            self.finished.emit(self.summary())

    def close(self) -> None:
        """Stop listening to the client and let the writer finish (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        self.client.processed.disconnect(self._processed)
        self.client.failed.disconnect(self._failed)
        self._writer.shutdown(wait=True)
