"""Issue 20, rows 1-3, in the real window: every job the viewer starts ends in a shown result, a shown error or a cancel,
whatever the server or the file did; a batch goes past files it cannot read and says which."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
from PySide6.QtCore import Qt

from tests.conftest import ROOT, free_port

WITHIN_S = 6.0  # grace (3 s) + a ping timeout's worth: "No server can be reached" well before any request timeout


def open_folder(win, folder, monkeypatch):
    """File → Open folder as batch…, the folder chosen in the dialog."""
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *_args, **_kw: str(folder))
    win.open_folder()


def folder_of_images(folder, count, broken=(), shape=(60, 80, 3)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20)
    for i in range(count):
        cv2.imwrite(str(folder / f"photo_{i:02d}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
    for name, data in broken:
        (folder / name).write_bytes(data)
    return folder


def ctrl_r_until_finished(qtbot, win):
    started = time.monotonic()
    with qtbot.waitSignal(win.jobFinished, timeout=round((WITHIN_S + 4) * 1000)) as job:
        qtbot.keyClick(win, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    return job.args, time.monotonic() - started


def test_ctrl_r_after_the_server_was_killed_ends_in_words_within_seconds(qtbot, make_window, start_server):
    server = start_server("--workers", "1")
    win = make_window(server.endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.open_files(["sample:coffee"])
    server.stop(signal.SIGKILL)
    qtbot.wait(5000)  # as the user did: the state turns lost meanwhile
    (ok, message), took = ctrl_r_until_finished(qtbot, win)
    assert not ok and took < WITHIN_S and "No server can be reached" in win.notice.text(), (message, win.notice.text())
    assert "processing" not in win.statusBar().currentMessage() and not win.cancel_button.isEnabled()


def test_ctrl_r_with_no_server_at_that_address_ends_in_words(qtbot, make_window):
    win = make_window(f"tcp://127.0.0.1:{free_port()}")
    win.open_files(["sample:coffee"])
    (ok, _), took = ctrl_r_until_finished(qtbot, win)
    assert not ok and took < WITHIN_S and "No server can be reached" in win.notice.text()
    (ok, _), took = ctrl_r_until_finished(qtbot, win)  # and again, at once: the request fails inside process()
    assert not ok and took < 2


def test_a_batch_with_no_server_ends_every_row_and_leaves_the_buttons_usable(qtbot, make_window, tmp_path, monkeypatch):
    folder = folder_of_images(tmp_path / "in", 4)
    win = make_window(f"tcp://127.0.0.1:{free_port()}")
    open_folder(win, folder, monkeypatch)
    win.batch_panel.folder.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(win.batch_panel.finished, timeout=round((WITHIN_S + 4) * 1000)) as finished:
        win.start_batch()
    assert "4 failed" in finished.args[0] and finished.args[1] == "error"
    panel = win.batch_panel
    assert not panel.cancel_button.isEnabled() and panel.retry_button.isEnabled()
    with qtbot.waitSignal(panel.finished, timeout=round((WITHIN_S + 4) * 1000)) as again:
        panel.retry_failed()  # Retry failed ends too, and the buttons come back
    assert "4 failed" in again.args[0] and not panel.cancel_button.isEnabled()


def test_a_zero_byte_file_fails_its_row_in_words_and_the_rest_are_processed(qtbot, make_window, endpoint, tmp_path, monkeypatch):
    folder = folder_of_images(tmp_path / "in", 20, broken=[("photo_07b.jpg", b"")])
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    open_folder(win, folder, monkeypatch)
    win.batch_panel.folder.setText(str(tmp_path / "out"))
    win.editor.set_steps("invert")
    with qtbot.waitSignal(win.batch_panel.finished, timeout=60000) as finished:
        win.start_batch()
    assert "20 done, 1 failed" in finished.args[0]
    failed = [item for item in win.batch.items if item.status == "failed"]
    assert [os.path.basename(i.path) for i in failed] == ["photo_07b.jpg"] and failed[0].message == "Cannot open it: it is empty."
    assert len(list((tmp_path / "out").iterdir())) == 20
    win.open_files([str(folder / "photo_07b.jpg")])
    assert win.notice.text() == "Cannot open photo_07b.jpg: it is empty."


def test_a_folder_whose_first_file_is_unreadable_opens_the_next_and_the_scripted_batch_names_it(
    qtbot, make_window, endpoint, tmp_path, monkeypatch
):
    folder = folder_of_images(tmp_path / "in", 3, broken=[("a_broken.png", b"\x89PNG\r\n\x1a\n broken")])
    win = make_window(endpoint)
    open_folder(win, folder, monkeypatch)
    assert win.path.endswith("photo_00.png") and len(win.batch_paths) == 4
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path)}
    cmd = [sys.executable, "gui_app.py", "--server", endpoint, "--open", str(folder), "--pipeline", "grayscale", "--batch"]
    cmd += ["--output-dir", str(tmp_path / "out"), "--quit-when-done"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "3 done, 1 failed" in done.stderr and "cannot open" not in done.stderr, done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_closing_the_viewer_cancels_the_job_the_server_was_computing(qtbot, make_window, start_server, tmp_path):
    """Row 11: the server does not go on computing work nobody will read."""
    from tests.conftest import wait_until
    from tests.rawwire import server_stats

    server = start_server("--workers", "1")
    win = make_window(server.endpoint, timeout=120)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.random.default_rng(11).integers(0, 256, (1500, 2000, 3), dtype=np.uint8))
    win.open_files([str(big)])
    win.editor.set_steps("denoise:search_window=35,template_window=21")
    win.process()  # the viewer asks the server whether to tile first: its answer comes through the event loop
    qtbot.waitUntil(lambda: server_stats(server.endpoint)["running"] == 1, timeout=10000)
    closed = time.monotonic()
    win.close()
    wait_until(lambda: server_stats(server.endpoint)["running"] == 0, 3, "the server stopping the abandoned job")
    assert server_stats(server.endpoint)["errors"].get("cancelled") == 1 and time.monotonic() - closed < 3


def test_a_server_killed_late_in_a_batch_and_restarted_what_the_viewer_says_is_true(qtbot, make_window, tmp_path, monkeypatch):
    """Row 7: kill -9 at 94 % of a 36-file batch, restart it, Retry failed."""
    from tests.conftest import ServerProcess
    from tests.rawwire import server_stats

    folder = folder_of_images(tmp_path / "in", 36, shape=(240, 320, 3))
    server = ServerProcess("--workers", "1")
    port = int(server.endpoint.rsplit(":", 1)[1])
    try:
        win = make_window(server.endpoint)
        qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
        open_folder(win, folder, monkeypatch)
        win.batch_panel.folder.setText(str(tmp_path / "out"))
        win.editor.set_steps("denoise:search_window=21,template_window=7")  # a tenth of a second or more a file
        finished = []
        win.batch_panel.finished.connect(lambda summary, level: finished.append(summary))
        win.start_batch()
        qtbot.waitUntil(lambda: win.batch.counts()["done"] >= 34, timeout=30000)
        server.stop(signal.SIGKILL)
        qtbot.waitUntil(lambda: bool(finished), timeout=round((WITHIN_S + 4) * 1000))
        counts = win.batch.counts()
        assert counts["done"] + counts["failed"] == 36 and counts["failed"] >= 1, finished
        first_run = win.batch.earlier_s
        server = ServerProcess("--workers", "1", port=port)
        qtbot.waitUntil(lambda: win.client.state == "connected", timeout=15000)
        assert "being sent again" not in win.notice.text(), "nothing was pending: nothing is being sent again"
        win.batch_panel.retry_failed()
        qtbot.waitUntil(lambda: len(finished) == 2, timeout=30000)
        summary = finished[1]
        assert summary.startswith("Batch of 36: 36 done in ")
        assert float(summary.split(" done in ")[1].split(" s")[0]) >= first_run, "the whole batch's time, not the retry's"
        assert len(list((tmp_path / "out").iterdir())) == 36 and server_stats(server.endpoint)["in_flight"] == 0
    finally:
        server.stop()
