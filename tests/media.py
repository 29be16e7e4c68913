"""Videos and a camera the tests make themselves. The camera is for machines without one: an MJPEG-over-HTTP stream on
127.0.0.1, as IP cameras serve it, that OpenCV opens like a camera (``cv2.VideoCapture("http://127.0.0.1:PORT/video.mjpg")``).
Frame i shows its number and carries i % 256 in its top-left 8x8 block, so a test can tell which frame it was given."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = b"frame"


def camera_frame(i: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    frame = np.zeros((*shape, 3), np.uint8)
    cv2.putText(frame, str(i), (20, shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3)
    frame[:8, :8] = i % 256
    return frame


def write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
    """A lossless video (FFV1 in Matroska) of ``frames``."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"FFV1"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()


def read_video_frames(path: str) -> list[np.ndarray]:
    capture = cv2.VideoCapture(path)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return frames


@contextmanager
def mjpeg_camera(fps: float = 30.0, seconds: float = 60.0) -> Iterator[str]:
    """Serve frames at ``fps`` for at most ``seconds`` to each client; the stream's URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.end_headers()
            start = time.monotonic()
            i = 0
            try:
                while time.monotonic() - start < seconds and not stopping.is_set():
                    time.sleep(max(0.0, start + i / fps - time.monotonic()))
                    ok, jpeg = cv2.imencode(".jpg", camera_frame(i), [cv2.IMWRITE_JPEG_QUALITY, 90])
                    assert ok
                    head = b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    self.wfile.write(head + jpeg.tobytes() + b"\r\n")
                    i += 1
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    stopping = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
