"""A video file or a camera read on its own thread, so the window never waits for a frame: each frame goes to
``on_frame(index, captured_at, frame)`` (on the reader's thread) and the end, once, to ``on_end(error or None)``.

A file plays at its own frame rate, as a live source would give it; a camera (an index, or a stream's URL such as
``http://host:8080/video.mjpg``) gives frames as fast as it makes them. Paused, nothing is read; :meth:`step` reads
one frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..errors import DecodeFailed

OnFrame = Callable[[int, float, np.ndarray], None]


def camera_source(text: str) -> int | str:
    """What the user typed for a camera: an index (``0``) or a URL (``http://...``, ``rtsp://...``)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if "://" not in text:
        raise ValueError(f"{text!r} is neither a camera index (0, 1, ...) nor a stream URL (http://..., rtsp://...)")
    return text


class FrameReader:
    """Frames of ``source`` (a video file's path, a camera index or URL), read on a thread once :meth:`start` is called."""

    def __init__(self, source: int | str, on_frame: OnFrame, on_end: Callable[[BaseException | None], None]) -> None:
        self.live = isinstance(source, int) or "://" in source
        self.source = source
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            what = f"camera {source}" if self.live else str(source)
            raise DecodeFailed(f"{what} cannot be opened as a {'camera' if self.live else 'video'}")
        self._capture: Any = capture
        rate = capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if 0 < rate <= 1000 else 30.0
        self.frames = 0 if self.live else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._on_frame, self._on_end = on_frame, on_end
        self._state = threading.Condition()
        self._playing = False
        self._steps = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="zmqproc-frames", daemon=True)

    @property
    def playing(self) -> bool:
        return self._playing

    def start(self, playing: bool = True) -> None:
        self._playing = playing
        self._thread.start()

    def play(self) -> None:
        with self._state:
            self._playing = True
            self._state.notify()

    def pause(self) -> None:
        with self._state:
            self._playing = False
            self._state.notify()

    def step(self) -> None:
        """Paused: read one more frame."""
        with self._state:
            self._playing = False
            self._steps += 1
            self._state.notify()

    def stop(self) -> None:
        """End the thread (no ``on_end``); the source is released."""
        with self._state:
            self._stopped = True
            self._state.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        else:
            self._capture.release()

    def _run(self) -> None:
        index, due = 0, time.monotonic()
        error: BaseException | None = None
        try:
            while True:
                with self._state:
                    while not self._stopped and not self._playing and not self._steps:
                        self._state.wait()
                        due = time.monotonic()  # after a pause, play on from now
                    if self._stopped:
                        return
                    if not self._playing:
                        self._steps -= 1
                    elif not self.live and due > time.monotonic():  # a file: at its frame rate (woken early by pause/stop)
                        self._state.wait(due - time.monotonic())
                        continue
                ok, frame = self._capture.read()
                if not ok:
                    if self.live:
                        error = DecodeFailed(f"the camera {self.source} stopped giving frames")
                    return
                self._on_frame(index, time.monotonic(), frame)
                index += 1
                due = max(due + 1 / self.fps, time.monotonic() - 1 / self.fps)  # late by more than a frame: not made up
        except Exception as exc:  # a broken file or camera ends the stream with its error, never silently
            error = exc
        finally:
            self._capture.release()
            if not self._stopped:
                self._on_end(error)
