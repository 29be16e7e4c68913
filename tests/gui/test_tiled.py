"""Huge images in the viewer (issue 22): shown from an overview with true pixels when zoomed in, processed as tiles
painted in as they arrive, cancelled with Esc, saved at full resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from zmqproc import Client
from zmqproc.gui.views import OVERVIEW_SIDE


@pytest.fixture
def big_file(tmp_path):
    """A 1800x1200 photo-like file: big enough for the viewer to ask the servers whether to tile."""
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (1200, 1800, 3), np.uint8), (7, 7), 0)
    cv2.imwrite(str(tmp_path / "big.png"), image)
    return str(tmp_path / "big.png"), image


def test_an_image_goes_as_tiles_painted_in_as_they_arrive_and_is_exact(qtbot, make_window, endpoint, big_file):
    win = make_window(endpoint, pipeline="gaussian_blur:ksize=15")
    win.transfer.setCurrentIndex(win.transfer.findData("raw"))  # raw tiles share the workers (Auto: on a link it finds near)
    assert win.open_image(big_file[0])
    seen = []
    with qtbot.waitSignal(win.jobFinished, timeout=30000) as job:
        qtbot.keyClick(win, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
        tiled = win._tiled  # made on the key press, before any tile can arrive
        assert tiled is not None
        tiled.tilePlaced.connect(lambda tile: seen.append((tiled.progress, win.compare.result is not None)))
    ok, message = job.args
    with Client(endpoint) as client:
        expected = client.process(big_file[1], "gaussian_blur:ksize=15")
    assert ok and " tiles of " in message, message
    total = seen[-1][0][1]
    assert total >= 4 and [done for (done, _), _shown in seen] == list(range(1, total + 1))
    assert all(shown for _, shown in seen), "the result is on screen from the first tile on"
    assert np.array_equal(win.result, expected), "painted in tile by tile, the result is exactly the whole image's"


def test_esc_cancels_the_tiles_still_out(qtbot, make_window, endpoint, big_file):
    win = make_window(endpoint, pipeline="denoise:search_window=35")
    win.transfer.setCurrentIndex(win.transfer.findData("raw"))
    assert win.open_image(big_file[0])
    with qtbot.waitSignal(win.jobFinished, timeout=30000) as job:
        win.process()
        qtbot.waitUntil(lambda: win._tiled is not None and win._tiled.progress[1] > 0, timeout=10000)
        qtbot.keyClick(win, Qt.Key.Key_Escape)
    ok, message = job.args
    assert not ok and "ancel" in message, message


def test_a_huge_image_is_shown_from_an_overview_and_at_true_pixels_zoomed_in(qtbot, make_window, endpoint, tmp_path):
    """45 Mpx, more than the default server takes whole: never one full-size QImage, processed as tiles, saved whole."""
    image = np.zeros((5000, 9000, 3), np.uint8)
    image[:, :, 2] = (np.arange(9000) % 256).astype(np.uint8)
    image[::50, :, 1] = 255
    cv2.imwrite(str(tmp_path / "huge.bmp"), image)
    win = make_window(endpoint, pipeline="invert")
    win.transfer.setCurrentIndex(win.transfer.findData("encoded"))  # even so: too big whole, it goes as raw tiles
    assert win.open_image(str(tmp_path / "huge.bmp"))
    view = win.original_view
    assert max(view._item.pixmap().width(), view._item.pixmap().height()) <= OVERVIEW_SIDE
    assert view.scene().sceneRect().width() == 9000, "scene coordinates stay the image's pixels"
    win.compare.actual_size()
    qtbot.waitUntil(lambda: view._detail.isVisible(), timeout=3000)
    x, y, w, h = view.visible_region()
    assert view._detail.pixmap().width() == w and view._detail.pixmap().height() == h, "the part in view at its own pixels"
    with qtbot.waitSignal(win.jobFinished, timeout=60000) as job:
        win.process()
    assert job.args[0], job.args[1]
    assert np.array_equal(win.result, 255 - image)
    saved = win.save_result(str(tmp_path / "out.bmp"))
    assert saved is not None and np.array_equal(cv2.imread(saved), 255 - image), "saved at full resolution"
