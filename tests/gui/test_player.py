"""The viewer plays streams (issue 21): a video file and a camera through the pipeline, the processed frame beside
its original; the frame rate, latency and drops shown; pause, step, and the processed video saved frame-exact."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QInputDialog

from tests.media import mjpeg_camera, read_video_frames, write_video
from zmqproc import Client

SLOW_OP = '''
import time
from zmqproc import op

@op
def slow(image):
    """Sleep 100 ms, then give the image back: three times slower than a 30 fps camera."""
    time.sleep(0.1)
    return image
'''


@pytest.fixture
def clip(tmp_path):
    """A 60-frame 20 fps video whose frames all differ."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (72, 96, 3), np.uint8) for _ in range(60)]
    write_video(str(tmp_path / "clip.mkv"), frames, 20.0)
    return str(tmp_path / "clip.mkv"), frames


def shown_pairs_agree(win) -> bool:
    original, result = win.compare.original, win.compare.result
    return original is not None and result is not None and np.array_equal(result, 255 - original)


def test_a_video_opened_from_the_menu_plays_processed_beside_its_original_and_pauses_and_steps(
    qtbot, make_window, endpoint, clip, monkeypatch
):
    win = make_window(endpoint, pipeline="invert")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *_a, **_k: (clip[0], ""))
    qtbot.keyClick(win, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    player = win.player
    assert player.isVisible() and "clip.mkv: 96×72 at 20 fps, 60 frames" in player.title.text()
    qtbot.waitUntil(lambda: player.meter.shown >= 10, timeout=10000)
    assert shown_pairs_agree(win), "each result is shown beside the frame it came from"
    qtbot.waitUntil(lambda: "fps shown of" in player.stats.text() and "latency" in player.stats.text(), timeout=3000)

    qtbot.keyClick(win, Qt.Key.Key_P)  # pause
    assert player.play_button.text() == "Play (P)"
    qtbot.wait(400)
    paused_at = player.meter.shown
    qtbot.wait(400)
    assert player.meter.shown == paused_at, "paused: nothing more is shown"
    before = win.compare.original.copy()
    qtbot.keyClick(win, Qt.Key.Key_Period)  # one frame on
    qtbot.waitUntil(lambda: player.meter.shown == paused_at + 1, timeout=5000)
    assert not np.array_equal(win.compare.original, before) and shown_pairs_agree(win)

    qtbot.keyClick(win, Qt.Key.Key_P)  # play to the end
    qtbot.waitUntil(lambda: "played to its end" in win.notice.text(), timeout=15000)
    assert player.stream.stream.progress.pulled == 60, "every frame of the file was read"


def test_the_processed_video_is_saved_frame_exact_from_the_button(qtbot, make_window, endpoint, clip, tmp_path, monkeypatch):
    pipeline = "gaussian_blur:ksize=5;sharpen"
    win = make_window(endpoint, pipeline=pipeline)
    assert win.open_video(clip[0])
    target = tmp_path / "saved"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(target), "Lossless, Matroska FFV1 (*.mkv)"))
    with qtbot.waitSignal(win.player.saved, timeout=30000) as saved:
        qtbot.mouseClick(win.player.save_button, Qt.MouseButton.LeftButton)
    assert saved.args == [str(target) + ".mkv"] and win.notice.text().startswith("Done: saved 60 processed frames")
    written = read_video_frames(saved.args[0])
    with Client(endpoint) as client:
        expected = [client.process(frame, pipeline) for frame in clip[1]]
    assert len(written) == 60 and all(np.array_equal(w, e) for w, e in zip(written, expected, strict=True)), (
        "each frame is the library's result for its input, in order"
    )


def test_a_camera_plays_live_with_bounded_latency_when_processing_is_slower(qtbot, make_window, start_server, tmp_path, monkeypatch):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_OP)
    server = start_server("--workers", "1", "--ops", str(plugin))
    win = make_window(server.endpoint, pipeline="slow")
    with mjpeg_camera(fps=30) as url:
        monkeypatch.setattr(QInputDialog, "getText", lambda *_a, **_k: (url, True))
        file_menu = next(a for a in win.menuBar().actions() if a.text() == "&File").menu()
        next(a for a in file_menu.actions() if a.text() == "Open c&amera…").trigger()
        player = win.player
        assert player.reader is not None and player.reader.live and not player.save_button.isEnabled()
        qtbot.waitUntil(lambda: player.meter.shown >= 20, timeout=20000)
        latency = player.meter.latency_s()
        progress = player.stream.stream.progress
        assert latency is not None and latency < 0.45, f"{latency:.3f} s from capture to screen: stale frames queued"
        assert progress.dropped > progress.done, "a 30 fps camera through 10 fps processing: most frames dropped, not queued"
        player.stop()
    assert not player.isVisible()


def test_a_file_that_is_not_a_video_is_said_and_the_viewer_goes_on(qtbot, make_window, endpoint, tmp_path):
    win = make_window(endpoint, pipeline="invert")
    bad = tmp_path / "holiday.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    assert not win.open_video(str(bad))
    assert "Cannot play" in win.notice.text() and "holiday.mp4" in win.notice.text() and not win.player.isVisible()
    win.open_camera("webcam")
    assert "neither a camera index" in win.notice.text()
