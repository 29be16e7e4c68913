"""Issue 20, row 12: the details a user meets in the real window."""

from __future__ import annotations

import json

import cv2
import numpy as np

from zmqproc import samples


def test_the_batch_label_follows_the_rows_and_whole_names_show(qtbot, make_window, endpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "photo_07b_transparent_background_scan.png"
    for name in ("a.png", long_name):
        cv2.imwrite(str(folder / name), np.zeros((30, 40, 3), np.uint8))
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.open_files([str(folder / "a.png"), str(folder / long_name)])
    panel = win.batch_panel
    assert "2 files ready" in panel.summary.text()
    said: list[str] = []
    with qtbot.waitSignal(panel.finished, timeout=20000):
        win.start_batch()
        said.append(panel.summary.text())
    assert "files ready" not in said[0], "not the stale text while it runs"
    name_width = panel.table.fontMetrics().horizontalAdvance(long_name)
    assert panel.table.columnWidth(0) >= name_width, "the whole name, not photo_07b_tr…"


def test_a_result_is_marked_out_of_date_when_the_pipeline_changes(qtbot, make_window, endpoint):
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.open_files(["sample:coffee"])
    win.editor.set_steps("invert")
    with qtbot.waitSignal(win.jobFinished, timeout=20000):
        win.process()
    assert win.compare.result_title.text() == "Result"
    win.editor.add_step("flip")
    assert "out of date" in win.compare.result_title.text()
    win.editor.undo()
    assert win.compare.result_title.text() == "Result", "back to what made it"


def test_a_preset_the_server_would_refuse_is_said_on_loading(qtbot, make_window, endpoint, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    preset = tmp_path / "bad.json"
    preset.write_text(json.dumps([{"op": "sharpen_magic"}, {"op": "gaussian_blur", "params": {"ksize": 4}}]))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *_a, **_k: (str(preset), ""))
    win.load_pipeline_dialog()
    text = win.notice.text()
    assert "Step 1: the server does not offer 'sharpen_magic'." in text and "Step 2 (gaussian_blur): ksize must be odd, not 4." in text


def test_save_pipeline_starts_in_the_last_folder(qtbot, make_window, endpoint, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    win = make_window(endpoint)
    win.open_files([str(samples.path("coffee"))])
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda _parent, _title, where, _filter: asked.append(where) or ("", ""))
    win.save_pipeline_dialog()
    assert asked == [str(samples.path("coffee").parent / "pipeline.json")], "where the user last opened a file"


def test_open_sample_gives_a_first_result_in_one_click(qtbot, make_window, endpoint):
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    action = next(a for a in win.samples_menu.actions() if a.text().startswith("coffee:"))
    with qtbot.waitSignal(win.jobFinished, timeout=20000) as job:
        action.trigger()
    assert job.args[0] and win.result is not None


def test_too_large_advice_works(qtbot, make_window, start_server, tmp_path):
    """Row 5: a raw image refused for its bytes was told to go as an encoded file, which its pixels refused too."""
    server = start_server("--workers", "1", "--max-frame-bytes", "1000000", "--max-pixels", "250000")
    win = make_window(server.endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.transfer.setCurrentIndex(win.transfer.findData("raw"))
    win.editor.set_steps("invert")
    for shape, words in (((600, 800, 3), "This image has 0.5 Mpx; the server accepts up to 0.2 Mpx: resize it first"), ((440, 560, 3), "")):
        path = tmp_path / f"{shape[0]}.png"
        cv2.imwrite(str(path), np.zeros(shape, np.uint8))
        win.open_files([str(path)])
        with qtbot.waitSignal(win.jobFinished, timeout=20000) as job:
            win.process()
        assert (job.args[0], win.notice.text().startswith(words)) == (not words, True), win.notice.text()


def test_placeholders_fit_their_fields_and_a_long_step_is_elided_not_scrolled(qtbot, qt_settings):
    """Row 12: cut placeholders in the Batch tab and the connection dialog; a horizontal scroll bar for a long step."""
    from PySide6.QtCore import Qt

    from zmqproc.gui.connection import ConnectionDialog, ConnectionSettings
    from zmqproc.gui.window import MainWindow

    dialog = ConnectionDialog(ConnectionSettings())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    win = MainWindow([], timeout=5)
    qtbot.addWidget(win)
    win.resize(900, 600)
    win.show()
    qtbot.waitExposed(win)
    for field in (dialog.curve_server_key, dialog.curve_secret, dialog.ssh_key, win.batch_panel.folder, win.editor.op_search):
        text = field.placeholderText()
        assert field.fontMetrics().horizontalAdvance(text) <= field.width() - 8, f"{text!r} is cut"
    win.editor.set_steps("bilateral_filter:d=9,sigma_color=75,sigma_space=75")
    steps = win.editor.steps_list
    assert steps.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    assert steps.item(0).toolTip() == "bilateral_filter:d=9,sigma_color=75,sigma_space=75", "the whole step in its tooltip"
