"""Streams in the viewer: a video file or a camera plays through the pipeline, the processed frame beside its original.

Playing is live (latest wins, :class:`~zmqproc.client.stream.Stream`): when processing is slower than the source,
frames that could not go out in time are dropped rather than queued, so what is shown stays about one processing
time behind the source. The bar under the pictures says the frame rate shown, the latency from capture to screen
and the frames dropped. Pause (P), step a frame (.), and save the processed video: every frame of the file, in
order, none dropped, written as it arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from ..client.pipeline import PipelineSpec
from ..client.stream import Item
from ..images import VIDEO_CODECS, VideoSink, encode_image, read_video
from .compare import CompareView
from .frame_reader import FrameReader
from .helpers import result_array
from .messages import explain
from .playback import Meter
from .qt_client import QtClient
from .qt_stream import QtStream

VIDEO_FILTER = f"Videos ({' '.join('*' + s for s in VIDEO_CODECS)});;All files (*)"
SAVE_FILTER = "Lossless, Matroska FFV1 (*.mkv);;Motion JPEG (*.avi);;MPEG-4 part 2 (*.mp4)"
STATS_EVERY_MS = 500


def frame_payload(frame: np.ndarray, encoded: bool, lossless: bool) -> tuple[np.ndarray | bytes, str | None]:
    """What to send for a frame and the reply format to ask for: raw pixels, or (encoded transfer, a slow link) a JPEG
    for live viewing, a PNG when every pixel counts (a saved video)."""
    if not encoded:
        return frame, None
    fmt = "png" if lossless else "jpeg"
    return bytes(encode_image(frame, fmt)[1]), fmt


class Player(QWidget):
    """The bar of a playing stream; ``notice(message, level)`` for what the window should say."""

    notice = Signal(str, str)
    _frame = Signal(int, float, object)  # from the reader's thread
    _end = Signal(object)
    saved = Signal(str)  # the path of a processed video, once written

    def __init__(self, client: QtClient, compare: CompareView, pipeline: Callable[[], PipelineSpec], encoded: Callable[[], bool]) -> None:
        super().__init__()
        self.client, self.compare, self._pipeline, self._encoded = client, compare, pipeline, encoded
        self.reader: FrameReader | None = None
        self.stream: QtStream | None = None
        self.meter = Meter()
        self.export: QtStream | None = None
        self._sink: VideoSink | None = None
        self._frames: dict[int, tuple[float, np.ndarray]] = {}  # stream index -> (captured at, original), until shown
        self._last_error = ""
        self.title = QLabel("")
        self.play_button = QPushButton("Pause (P)")
        self.play_button.clicked.connect(self.play_pause)
        self.step_button = QPushButton("Step (.)")
        self.step_button.clicked.connect(self.step)
        self.save_button = QPushButton("Save processed video…")
        self.save_button.clicked.connect(self.save_dialog)
        self.stop_button = QPushButton("Close stream")
        self.stop_button.clicked.connect(self.stop)
        self.stats = QLabel("")
        self.stats.setObjectName("streamStats")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.title, self.play_button, self.step_button, self.save_button, self.stop_button):
            layout.addWidget(widget)
        layout.addWidget(self.stats, 1)
        self._frame.connect(self._on_frame)
        self._end.connect(self._on_end)
        self._tick = QTimer(self)
        self._tick.setInterval(STATS_EVERY_MS)
        self._tick.timeout.connect(self._show_stats)
        self.hide()

    @property
    def active(self) -> bool:
        return self.reader is not None

    # -- playing ---------------------------------------------------------------------------

    def open(self, source: int | str, playing: bool = True) -> bool:
        """Play a video file or a camera (index or URL); False (and a notice) when it does not open."""
        self.stop()
        try:
            reader = FrameReader(source, lambda i, at, frame: self._frame.emit(i, at, frame), self._end.emit)
        except Exception as exc:
            self.notice.emit(f"Cannot play {source}: {explain(exc)}", "error")
            return False
        self.reader, self.meter = reader, Meter()
        name = f"camera {source}" if reader.live else Path(str(source)).name
        frames = f", {reader.frames} frames" if reader.frames else ""
        rate = "" if reader.live else f" at {reader.fps:g} fps"  # a camera's claimed rate is often wrong: the bar measures it
        self.title.setText(f"{name}: {reader.size[0]}×{reader.size[1]}{rate}{frames}")
        self.save_button.setEnabled(not reader.live)
        self.save_button.setToolTip("" if not reader.live else "a camera has no end: save a video file's processed frames")
        self._restart_stream()
        self.show()
        self._tick.start()
        reader.start(playing)
        self._show_playing()
        return True

    def play_pause(self) -> None:
        if self.reader is None:
            return
        self.reader.pause() if self.reader.playing else self.reader.play()
        self._show_playing()

    def step(self) -> None:
        """Pause, and process the next frame."""
        if self.reader is not None:
            self.reader.step()
            self._show_playing()

    def stop(self) -> None:
        """Close the stream: the source released, what is out withdrawn; a video being saved goes on."""
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self._frames.clear()
        self._tick.stop()
        if self.export is None:
            self.hide()

    def pipeline_changed(self) -> None:
        """The frames from now on go through the new pipeline."""
        if self.reader is not None:
            self._restart_stream()

    def _restart_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self._frames.clear()
        self.stream = QtStream(self.client, self._pipeline(), latest=True, parent=self)
        self.stream.itemReady.connect(self._on_item)

    def _on_frame(self, index: int, captured_at: float, frame: np.ndarray) -> None:
        if self.stream is None:
            return  # a frame read just before the stream closed
        self.meter.frame_read(captured_at)
        payload, reply_format = frame_payload(frame, self._encoded(), lossless=False)
        self.stream.reply_format = reply_format
        self._frames[self.stream.stream.progress.pulled] = (captured_at, frame)
        self.stream.push(payload)

    def _on_item(self, item: Item) -> None:
        captured_at, original = self._frames.pop(item.index, (0.0, None))
        for stale in [i for i in self._frames if i < item.index]:  # dropped frames: never shown
            del self._frames[stale]
        if original is None:
            return
        if not item.ok:
            assert item.error is not None
            message = explain(item.error)
            if message != self._last_error:  # said once, not thirty times a second
                self._last_error = message
                self.notice.emit(f"A frame failed: {message}", "error")
            return
        try:
            image = result_array(item.result.image)
        except ValueError as exc:
            self.notice.emit(explain(exc), "error")
            return
        self.compare.set_frame(original, image, f"server {item.result.server_ms:.0f} ms")
        self.meter.frame_shown(time.monotonic(), captured_at)

    def _on_end(self, error: BaseException | None) -> None:
        if error is not None:
            self.notice.emit(f"The stream ended: {explain(error)}", "error")
        elif self.reader is not None:
            self.notice.emit(f"{self.title.text().split(':')[0]} played to its end.", "ok")
        if self.stream is not None:
            self.stream.end_of_source()
        self._show_playing(ended=True)

    def _show_playing(self, ended: bool = False) -> None:
        playing = self.reader is not None and self.reader.playing and not ended
        self.play_button.setText("Pause (P)" if playing else "Play (P)")
        self.play_button.setEnabled(not ended)
        self.step_button.setEnabled(not ended)

    def _show_stats(self) -> None:
        if self.stream is None or self.reader is None:
            return
        progress = self.stream.stream.progress
        self.stats.setText(self.meter.text(time.monotonic(), progress.dropped, progress.failed))

    # -- saving the processed video ----------------------------------------------------------

    def save_dialog(self) -> None:
        if self.reader is None or self.reader.live:
            self.notice.emit("Open a video file to save its processed frames.", "warn")
            return
        stem = Path(str(self.reader.source)).stem
        path, chosen = QFileDialog.getSaveFileName(self, "Save processed video", f"{stem}-processed.mkv", SAVE_FILTER)
        if path:
            suffix = chosen[chosen.rfind("*") + 1 : -1] if "*" in chosen else ".mkv"
            self.save(path if Path(path).suffix.lower() in VIDEO_CODECS else path + suffix)

    def save(self, path: str) -> bool:
        """Every frame of the playing file through the pipeline, in order, into ``path`` at the file's rate."""
        if self.reader is None or self.reader.live or self.export is not None:
            return False
        try:
            info, frames = read_video(str(self.reader.source))
            self._sink = VideoSink(path, info.fps)
        except Exception as exc:
            self.notice.emit(f"Cannot save {Path(path).name}: {explain(exc)}", "error")
            return False
        self.reader.pause()
        self._show_playing()
        encoded = self._encoded()
        payloads: Iterator[Any] = (frame_payload(f, encoded, lossless=True)[0] for f in frames)
        self.export = QtStream(self.client, self._pipeline(), source=payloads, reply_format="png" if encoded else None, parent=self)
        self._export_total, self._export_failed = info.frames, 0
        self.export.itemReady.connect(self._on_saved_item)
        self.export.ended.connect(self._export_ended)
        self.save_button.setText("Cancel saving")
        self.save_button.clicked.disconnect()
        self.save_button.clicked.connect(self.cancel_save)
        self.export.start()
        return True

    def cancel_save(self) -> None:
        if self.export is not None:
            self.export.cancel()

    def _on_saved_item(self, item: Item) -> None:
        assert self._sink is not None and self.export is not None
        try:
            if item.error is not None:
                raise item.error
            self._sink.write(result_array(item.result.image))
        except Exception as exc:  # a failed frame is left out and counted; the video goes on
            self._export_failed += 1
            self._last_error = explain(exc)
        done = self.export.stream.progress.done + self.export.stream.progress.failed
        total = f"/{self._export_total}" if self._export_total else ""
        self.stats.setText(f"saving {Path(self._sink.path).name}: {done}{total} frames, {self._export_failed} failed")

    def _export_ended(self) -> None:
        assert self._sink is not None and self.export is not None
        self._sink.close()
        path, written = self._sink.path, self.export.stream.progress.done - self._export_failed
        cancelled = not self.export.stream.exhausted
        self.export.close()
        self.export, self._sink = None, None
        self.save_button.setText("Save processed video…")
        self.save_button.clicked.disconnect()
        self.save_button.clicked.connect(self.save_dialog)
        if cancelled:
            self.notice.emit(f"Saving stopped: {written} frames are in {path}.", "warn")
        elif self._export_failed:
            failed = f"{self._export_failed} failed and were left out: {self._last_error}"
            self.notice.emit(f"Saved {written} frames to {path}; {failed}", "warn")
        else:
            self.notice.emit(f"Done: saved {written} processed frames to {path}.", "ok")
            self.saved.emit(path)
        if self.reader is None:
            self.hide()
