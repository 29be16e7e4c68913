"""A sequence of requests on the Qt event loop: :class:`~zmqproc.client.stream.Stream`'s rules driven through a
:class:`~zmqproc.gui.qt_client.QtClient`, as ``Client.map`` drives them through the threaded client.

Inputs come from an iterator (pulled as credit allows: a video saved frame by frame) or are pushed by a live source
(:meth:`QtStream.push`, a camera or a playing video, with ``latest``). ``itemReady(Item)`` for each outcome, in input
order (unless not ``ordered``); ``ended()`` once, when nothing is left.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..client.pipeline import PipelineSpec
from ..client.stream import Stream
from .qt_client import QtClient


class QtStream(QObject):
    itemReady = Signal(object)  # zmqproc.client.stream.Item; its result a zmqproc.client.Processed
    ended = Signal()

    def __init__(
        self,
        client: QtClient,
        pipeline: PipelineSpec,
        *,
        source: Iterator[np.ndarray | bytes] | None = None,
        latest: bool = False,
        ordered: bool = True,
        lean: bool = False,
        reply_format: str | None = None,
        parent: QObject | None = None,
    ) -> None:
        """``source``: inputs to pull; None: they are pushed (:meth:`push`, then :meth:`end_of_source`)."""
        super().__init__(parent)
        self.client, self.pipeline, self.reply_format = client, pipeline, reply_format
        self.stream = Stream(ordered=ordered, latest=latest, timeout=client.timeout, lean=lean)
        self._source = source
        self._over = False
        client.processed.connect(self._processed)
        client.failed.connect(self._failed)

    def start(self) -> None:
        self._pump()

    def push(self, value: np.ndarray | bytes) -> None:
        """A live source's next input (live: it replaces one still waiting to be sent)."""
        if not self._over and not self.stream.exhausted:
            self.stream.pulled(value)
            self._pump()

    def end_of_source(self) -> None:
        self.stream.exhausted = True
        self._pump()

    def cancel(self) -> None:
        """Stop pulling and sending; what is out is withdrawn (its items end Cancelled, or with a result already made)."""
        for request_id in self.stream.cancel():
            self.client.cancel(request_id)
        self._pump()

    def close(self) -> None:
        """Cancel, and hear nothing more from the client."""
        self.cancel()
        self._over = True
        self.client.processed.disconnect(self._processed)
        self.client.failed.disconnect(self._failed)

    def _pull(self) -> Any:
        assert self._source is not None
        return next(self._source)

    def _pump(self) -> None:
        if self._over:
            return
        self.stream.advance(self._pull if self._source is not None else None, self.client.room_for, self._send)
        for item in self.stream.ready():
            self.itemReady.emit(item)
        if self.stream.over() and not self._over:
            self._over = True
            self.ended.emit()

    def _send(self, image: np.ndarray | bytes) -> str:
        return self.client.process(image, self.pipeline, reply_format=self.reply_format)

    def _processed(self, request_id: str, result: Any) -> None:
        self.stream.finished(request_id, result, now=time.monotonic(), service_s=result.server_ms / 1000)
        self._pump()

    def _failed(self, request_id: str, error: BaseException) -> None:
        self.stream.finished(request_id, error=error, now=time.monotonic())
        self._pump()
