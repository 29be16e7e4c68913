"""One image through the pipeline as tiles, on the Qt event loop: the servers asked for the pipeline's halo, then the
tiles streamed (:class:`~zmqproc.gui.qt_stream.QtStream`, the same sequence rules as everywhere) and put together
(:class:`~zmqproc.client.tiles.TiledJob`, the same tiling as the library's) as they end, so the window can paint each
tile in as it arrives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from ..client.pipeline import PipelineSpec
from ..client.replies import Processed, TilePlan
from ..client.stream import Item
from ..client.tiles import AUTO_TILE_RANGE, TiledJob, pixel_bytes, tile_size
from ..errors import BadParams, Cancelled
from ..images import dtype_name
from .qt_client import QtClient
from .qt_stream import QtStream

WORTH_ASKING = 2 * AUTO_TILE_RANGE[0] ** 2  # smaller images go whole without asking the servers


class TiledProcess(QObject):
    """``whole()``: better sent in one piece (the caller does); else ``tilePlaced(tile)`` as tiles arrive and
    ``finished(processed, error)`` once (a Processed of the whole image, or the error that ended it)."""

    whole = Signal()
    tilePlaced = Signal(object)  # zmqproc.client.tiles.Tile
    finished = Signal(object, object)

    def __init__(self, client: QtClient, image: np.ndarray, pipeline: PipelineSpec, share: bool, parent: QObject | None = None) -> None:
        """``share``: tile to spread the work over the servers' workers too, not only when the image is too big."""
        super().__init__(parent)
        self.client, self.image, self.pipeline, self.share = client, image, pipeline, share
        self.job: TiledJob | None = None
        self.stream: QtStream | None = None
        self._error: BaseException | None = None
        self._done = False
        client.planReceived.connect(self._planned)
        client.failed.connect(self._plan_failed)
        self._plan_id = client.request_tile_plan(pipeline, dtype_name(image) or "")

    @property
    def progress(self) -> tuple[int, int]:
        """Tiles placed, of how many (0, 0 while planning)."""
        return (self.job.assembly.placed, len(self.job.tiles)) if self.job is not None else (0, 0)

    def cancel(self) -> None:
        if self.stream is not None:
            self._error = self._error or Cancelled("cancelled")
            self.stream.cancel()
        elif not self._done:
            self._finish(None, Cancelled("cancelled"))

    def _planned(self, request_id: str, plan: TilePlan) -> None:
        if request_id != self._plan_id or self._done:
            return
        height, width = self.image.shape[:2]
        try:
            size = tile_size(plan, height, width, pixel_bytes(self.image), "auto", max(1, len(self.client.endpoints)), self.share)
        except BadParams as exc:
            self._finish(None, exc)
            return
        if size is None:
            self._done = True
            self._disconnect()
            self.whole.emit()
            return
        self.job = TiledJob(self.image, plan.halo or 0, size)
        self.stream = QtStream(self.client, self.pipeline, source=self.job.inputs(), ordered=False, lean=True, parent=self)
        self.stream.itemReady.connect(self._tile)
        self.stream.ended.connect(self._ended)
        self.stream.start()

    def _plan_failed(self, request_id: str, error: BaseException) -> None:
        if request_id != self._plan_id or self._done:
            return
        if isinstance(error, BadParams) and error.details.get("tileable") is False:
            self._done = True  # not a pipeline to tile: whole, as it always went
            self._disconnect()
            self.whole.emit()
        else:
            self._finish(None, error)

    def _tile(self, item: Item) -> None:
        assert self.job is not None and self.stream is not None
        if self._error is not None:
            return
        try:
            tile = self.job.place(item)
        except Exception as exc:  # a tile's error is the image's: the other tiles are withdrawn
            self._error = exc
            self.stream.cancel()
            return
        self.tilePlaced.emit(tile)

    def _ended(self) -> None:
        assert self.job is not None
        result = self.job.assembly
        if self._error is not None or result.image is None:
            self._finish(None, self._error or Cancelled("cancelled"))
            return
        done: Any = Processed(result.image, result.results, self.job.server_ms, self.client.epoch, result.kinds)
        self._finish(done, None)

    def _finish(self, processed: Processed | None, error: BaseException | None) -> None:
        self._done = True
        self._disconnect()
        self.finished.emit(processed, error)

    def _disconnect(self) -> None:
        self.client.planReceived.disconnect(self._planned)
        self.client.failed.disconnect(self._plan_failed)
