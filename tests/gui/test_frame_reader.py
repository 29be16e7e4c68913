"""Reading videos and cameras on a thread: a file at its own rate and in order, pause and step, a camera (an
MJPEG stream on 127.0.0.1), and sources that do not open."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.media import mjpeg_camera, write_video
from zmqproc.errors import DecodeFailed
from zmqproc.gui.frame_reader import FrameReader, camera_source


class Frames:
    def __init__(self):
        self.got, self.ended, self.error = [], threading.Event(), None

    def frame(self, index, captured_at, frame):
        self.got.append((index, captured_at, frame))

    def end(self, error):
        self.error = error
        self.ended.set()


@pytest.fixture
def clip(tmp_path):
    frames = [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(10)]
    write_video(str(tmp_path / "clip.mkv"), frames, 20.0)
    return str(tmp_path / "clip.mkv"), frames


def test_a_file_plays_in_order_at_its_own_rate(clip):
    path, frames = clip
    seen = Frames()
    reader = FrameReader(path, seen.frame, seen.end)
    assert (reader.fps, reader.frames, reader.size, reader.live) == (20.0, 10, (32, 24), False)
    reader.start()
    assert seen.ended.wait(10) and seen.error is None
    assert [i for i, _, _ in seen.got] == list(range(10))
    assert all(np.array_equal(f, frames[i]) for i, _, f in seen.got)
    assert seen.got[-1][1] - seen.got[0][1] >= 9 / 20 * 0.9, "paced at 20 fps, not as fast as the file decodes"


def test_paused_nothing_is_read_and_a_step_reads_one_frame(clip):
    seen = Frames()
    reader = FrameReader(clip[0], seen.frame, seen.end)
    reader.start(playing=False)
    time.sleep(0.2)
    assert seen.got == []
    reader.step()
    reader.step()
    wait_until(lambda: len(seen.got) == 2, 5, "two steps")
    time.sleep(0.2)
    assert len(seen.got) == 2 and not reader.playing
    reader.play()
    assert seen.ended.wait(10) and [i for i, _, _ in seen.got] == list(range(10))


def test_a_camera_stream_gives_frames_as_it_makes_them():
    with mjpeg_camera(fps=30) as url:
        seen = Frames()
        reader = FrameReader(camera_source(url), seen.frame, seen.end)
        assert reader.live and reader.frames == 0
        reader.start()
        wait_until(lambda: len(seen.got) >= 15, 10, "frames from the camera")
        reader.stop()
    marks = [int(f[0, 0, 0]) for _, _, f in seen.got]
    assert marks == sorted(marks) and not seen.ended.is_set(), "stopped by the user: no end reported"


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_a_file_that_is_not_a_video_is_a_typed_error_naming_it(tmp_path, content):
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(content)
    with pytest.raises(DecodeFailed, match="broken.mkv"):
        FrameReader(str(bad), Frames().frame, Frames().end)


@pytest.mark.parametrize(("text", "source"), [("0", 0), (" 2 ", 2), ("rtsp://cam/1", "rtsp://cam/1")])
def test_camera_source_takes_an_index_or_a_url(text, source):
    assert camera_source(text) == source


def test_camera_source_refuses_anything_else():
    with pytest.raises(ValueError, match="neither a camera index"):
        camera_source("webcam")
