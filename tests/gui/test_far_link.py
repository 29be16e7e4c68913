"""The viewer over a slow, far link (issue 23): a real server behind scripts/link.py (20 Mbit/s, 60 ms each way).

What the user sees while a 6 MP photo travels (seconds each way): the status bar's progress bar shows and moves, the
status text names the bytes, the rate and the time left, the connection label says "transferring (… MB/s)" and never
"lost"; Auto sends the file or PNG made here and asks for a PNG result over the slow link, raw both ways over loopback;
the result is the library's, byte for byte, either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from tests.conftest import ServerProcess, load_script
from zmqproc import Client
from zmqproc.client.transfer import FILE, NEAR_RTT, PNG, RAW
from zmqproc.gui import messages

OP = "gaussian_blur:ksize=5"
SLOW = (20, 60)  # Mbit/s each way, ms one way


@pytest.fixture(scope="module")
def far(server: ServerProcess) -> Iterator[str]:
    """The shared server, reached through a 20 Mbit/s link with 60 ms each way."""
    host, port = server.endpoint.removeprefix("tcp://").rsplit(":", 1)
    with load_script("link").link((host, int(port)), *SLOW) as relay:
        yield relay.endpoint


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory, endpoint) -> tuple[str, np.ndarray, np.ndarray]:
    """A 6 MP photo-like PNG file (18 MB of pixels), its pixels and the library's result for them over loopback."""
    noise = np.random.default_rng(23).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (7, 7), 0)
    path = tmp_path_factory.mktemp("far") / "photo.png"
    cv2.imwrite(str(path), image)
    with Client(endpoint) as client:
        expected = client.process(image, OP, timeout=60)
    return str(path), image, expected


class Seen:
    """What the window shows, sampled every 50 ms as a user would see it."""

    def __init__(self, win) -> None:
        from PySide6.QtCore import QTimer

        self.win, self.rows = win, []
        self.states: list[str] = []  # what the client's session says of the connection, as it says it
        win.client.stateChanged.connect(lambda state, _rtt: self.states.append(state))
        self.timer = QTimer(win)
        self.timer.timeout.connect(self.sample)
        self.timer.start(50)

    def sample(self) -> None:
        bar, label = self.win.transfer_bar, self.win.control.label
        self.rows.append((bar.isVisible(), bar.value(), bar.format(), self.win.statusBar().currentMessage(), label.text()))


def test_a_slow_link_shows_progress_and_auto_sends_it_smaller(qtbot, make_window, far, photo_file):
    path, image, expected = photo_file
    win = make_window(far, timeout=120, pipeline=OP)
    assert win.transfer.currentData() == "auto"
    qtbot.waitUntil(lambda: win.client.link().rtt > 0.1, timeout=10000)  # a ping crossed the link: it is known as far
    assert win.open_image(path)
    seen = Seen(win)
    with qtbot.waitSignal(win.jobFinished, timeout=120000) as job:
        win.process()
    seen.timer.stop()
    ok, message = job.args
    assert ok, message
    choice = win.last_choice
    assert choice is not None and choice.up in (FILE, PNG) and choice.down == PNG, choice  # smaller than raw, both ways
    assert np.array_equal(win.result, expected), "the result shown is the library's, byte for byte"
    assert "png from the server" in win.compare.result_info.text() and message.endswith("back as PNG.")

    shown = [row for row in seen.rows if row[0]]
    assert shown, "the progress bar showed during the transfer"
    ups = [value for _, value, fmt, _, _ in shown if fmt.startswith("↑")]
    downs = [value for _, value, fmt, _, _ in shown if fmt.startswith("↓")]
    assert len(set(ups)) > 3 and ups == sorted(ups), f"the bar moves up as the image goes: {ups}"
    assert len(set(downs)) > 3 and downs == sorted(downs), f"and again as the result comes: {downs}"
    texts = [text for _, _, _, text, _ in shown]
    assert any("uploading " in t and " MB at " in t and " MB/s, " in t and " s left" in t for t in texts), texts
    assert any("downloading " in t and " MB/s" in t for t in texts), texts
    labels = [label for _, _, _, _, label in seen.rows]
    assert any("transferring (" in label and "MB/s)" in label for label in labels), labels
    assert not any("lost" in label for label in labels), labels
    assert "lost" not in seen.states, seen.states
    assert not win.transfer_bar.isVisible(), "the bar goes when the job is done"
    assert message in win.statusBar().currentMessage()

    win.use_result_as_input()  # no file behind it now: over the far link it would go as PNG made here
    again = win._choose(win.path, win.original)
    assert again is not None and again.up == PNG


def test_auto_goes_raw_over_loopback(qtbot, make_window, endpoint, photo_file):
    path, _image, expected = photo_file
    win = make_window(endpoint, pipeline=OP)
    # a ping says the server is near (the policy judges by the last ping's round trip before any rate is measured; on a
    # busy machine one ping can take over NEAR_RTT even on loopback)
    qtbot.waitUntil(lambda: 0 <= win.client.link().rtt < NEAR_RTT, timeout=15000)
    assert win.open_image(path)
    with qtbot.waitSignal(win.jobFinished, timeout=60000) as job:
        win.process()
    assert job.args[0], job.args[1]
    assert win.last_choice is not None and (win.last_choice.up, win.last_choice.down) == (RAW, RAW)
    assert np.array_equal(win.result, expected)


def test_a_jpeg_file_goes_as_it_is_and_its_result_comes_back_lossless(qtbot, make_window, endpoint, tmp_path):
    """Over loopback a JPEG file is quicker to send than its pixels; the result asked for is raw, not the file's format."""
    noise = np.random.default_rng(5).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), cv2.GaussianBlur(noise, (7, 7), 0), [cv2.IMWRITE_JPEG_QUALITY, 95])
    pixels = cv2.imread(str(path))
    with Client(endpoint) as client:
        expected = client.process(pixels, OP, transfer="raw")
    win = make_window(endpoint, pipeline=OP)
    qtbot.waitUntil(lambda: 0 <= win.client.link().rtt < NEAR_RTT, timeout=15000)
    assert win.open_image(str(path))
    with qtbot.waitSignal(win.jobFinished, timeout=60000) as job:
        win.process()
    assert job.args[0], job.args[1]
    assert win.last_choice is not None and win.last_choice.up == FILE
    assert np.array_equal(win.result, expected), "the result's pixels exactly: not re-encoded as JPEG on the way back"


def test_transfer_words():
    assert messages.rate(2.5e6) == "2.5 MB/s"
    assert messages.transfer(12_300_000, 36_000_000, 2.5e6, True) == "uploading 12.3 of 36.0 MB at 2.5 MB/s, 9 s left"
    assert messages.transfer(1_000_000, 36_000_000, 0, False) == "downloading 1.0 of 36.0 MB…"
    assert messages.transfer(36_000_000, 36_000_000, 2.5e6, True) == "uploaded 36.0 MB; the server works on it…"
