"""The viewer as a user works in it (offscreen, real servers): the bugs users hit first, compare, live preview,
batch to disk, pipeline presets, keyboard, plain words, and plugin results drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import IMAGES, ROOT, load_image, wait_until
from tests.rawwire import server_stats
from zmqproc import Client


@pytest.fixture
def window(qtbot, qt_settings, endpoint):
    from zmqproc.gui.window import MainWindow

    win = MainWindow([endpoint], timeout=30.0)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    return win


def run_job(qtbot, win, live: bool = False):
    with qtbot.waitSignal(win.jobFinished, timeout=20000) as job:
        if not live:
            win.process()
    return tuple(job.args)


def images_in(folder: Path, count: int, size: tuple[int, int] = (120, 160)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


# -- the bugs of issue 14 -------------------------------------------------------------------


def test_zoom_before_the_first_result_is_kept_and_a_new_image_is_fitted(qtbot, window):
    window.open_files([str(IMAGES / "coffee.png")])
    window.compare.zoom(2.0)
    zoomed = window.original_view.view_state()
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]
    assert window.original_view.view_state() == zoomed and not zoomed.fitted, "the result does not snap the views back"
    assert window.result_view.transform().m11() == pytest.approx(window.original_view.transform().m11())
    window.open_files([str(IMAGES / "chelsea.png")])
    assert window.original_view.view_state().fitted and not window.result_view.has_image()


def test_a_stale_done_or_error_does_not_stay_on_the_next_image_or_job(qtbot, window):
    window.open_files([str(IMAGES / "coffee.png")])
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0] and window.notice.isVisible()
    window.open_files([str(IMAGES / "chelsea.png")])
    assert not window.notice.isVisible(), "Done was about the previous image"
    window.editor.set_steps("gaussian_blur:ksize=4")
    assert not run_job(qtbot, window)[0] and window.notice.property("level") == "error"
    window.editor.set_steps("flip")
    window.process()
    assert not window.notice.isVisible(), "the old error is gone while the next job runs"


def test_save_adds_the_chosen_formats_suffix_and_writes_tiff_and_bmp(qtbot, window, tmp_path):
    window.open_files([str(IMAGES / "coffee.png")])
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]
    assert window.save_result(str(tmp_path / "plain"), ".tiff") == str(tmp_path / "plain.tiff")
    for name in ("plain.tiff", "out.bmp"):
        if name == "out.bmp":
            window.save_result(str(tmp_path / name))
        assert np.array_equal(cv2.imread(str(tmp_path / name)), 255 - load_image("coffee.png"))


def test_broken_empty_and_bomb_files_are_refused_in_words_at_once(qtbot, window, tmp_path):
    import time

    from tests.hostile import client_side_files

    window.open_files([str(IMAGES / "coffee.png")])
    for name, (data, words) in client_side_files().items():
        (tmp_path / name).write_bytes(data)
        started = time.monotonic()
        window.open_files([str(tmp_path / name)])
        assert window.notice.text().startswith(f"Cannot open {name}: ") and words in window.notice.text()
        assert time.monotonic() - started < 2, "sized from the header, never decoded as claimed"
    assert window.original is not None and window.path == str(IMAGES / "coffee.png"), "the open image stays"


def test_words_a_user_reads_name_no_library_no_path_twice_no_byte_count(qtbot, window, tmp_path):
    from zmqproc.errors import ServerCrashed, TooLarge
    from zmqproc.gui.messages import explain

    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    window.open_files([str(fake)])
    assert window.notice.text() == "Cannot open fake.png: it is not a png, jpeg, webp, bmp or tiff file."
    pixels = TooLarge.over("pixels", 45_000_000, 40_000_000, "image is 9000x5000 = 45000000 pixels, the limit is 40000000")
    assert (
        explain(pixels)
        == "This image has 45.0 Mpx; the server accepts up to 40.0 Mpx: resize it first, or ask its operator to raise --max-pixels."
    )
    frame = TooLarge.over("frame_bytes", 243_000_000, 134_217_728, "payload is 243000000 bytes, the limit is 134217728")
    assert explain(frame) == (
        "This needs 243 MB; the server accepts files up to 134 MB: send it as an encoded file, or ask for a higher --max-frame-bytes."
    )
    for error in (pixels, frame, ServerCrashed("x")):
        words = explain(error)
        assert "OpenCV" not in words and "Error" not in words and not any(len(w) > 6 and w.isdigit() for w in words.split())
    window.client.serverRestarted.emit("a3af173d68b6")
    assert "a3af173d68b6" not in window.notice.text() and "restarted" in window.notice.text()


# -- compare, keyboard, files ----------------------------------------------------------------


def test_split_and_flick_from_the_keyboard_and_the_result_described(qtbot, window):
    from PySide6.QtCore import Qt

    window.transfer.setCurrentIndex(window.transfer.findData("raw"))  # Auto goes by the link as measured
    window.open_files([str(IMAGES / "coffee.png")])
    window.editor.set_steps("resize:scale=0.5")
    assert run_job(qtbot, window)[0]
    assert window.compare.result_info.text() == "result 300×200, 3 channels, uint8 (raw pixels)"
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.compare.mode == "flick" and window.compare.flicked and window.original_view.mode == "flick"
    window.compare.set_mode("split")
    assert window.original_view.mode == "split" and not window.result_view.isVisible()


def test_page_down_opens_the_next_image_in_the_folder_and_ctrl_c_copies_the_result(qtbot, window, tmp_path):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    paths = images_in(tmp_path / "photos", 3)
    window.open_files([paths[0]])
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert window.path == paths[1]
    qtbot.keyClick(window, Qt.Key.Key_PageUp)
    qtbot.keyClick(window, Qt.Key.Key_PageUp)
    assert window.path == paths[2], "wrapping around"
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]
    qtbot.keyClick(window, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QGuiApplication.clipboard().image()
    assert (copied.width(), copied.height()) == (160, 120)


def test_use_result_as_input_processes_the_result_further(qtbot, window):
    window.open_files([str(IMAGES / "coffee.png")])
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]
    window.use_result_as_input()
    for transfer in ("raw", "encoded"):  # encoded: the in-memory image goes as PNG, not the file on disk
        window.transfer.setCurrentIndex(window.transfer.findData(transfer))
        assert run_job(qtbot, window)[0]
        assert np.array_equal(window.result, load_image("coffee.png")), "inverted twice"


def test_files_dropped_on_either_view_open_them(qtbot, window, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    paths = images_in(tmp_path / "dropped", 2)
    for view, urls in ((window.original_view, [paths[0]]), (window.result_view, [str(tmp_path / "dropped")])):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(u) for u in urls])
        view.dropEvent(QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))
    assert window.path == paths[0] and window.batch_paths == paths, "a folder dropped on the result view fills the batch"


def test_keyboard_shortcuts_are_in_the_menus(window):
    shortcuts = {a.text(): a.shortcut().toString() for m in window.menuBar().actions() for a in m.menu().actions()}
    for text, keys in {"&Process image": "Ctrl+R", "Process &batch": "Ctrl+B", "&Cancel": "Esc", "F&ull screen": "F11"}.items():
        assert shortcuts[text] == keys
    assert shortcuts["&Copy result"] == "Ctrl+C" and shortcuts["&Redo pipeline change"] == "Ctrl+Shift+Z"


# -- live preview --------------------------------------------------------------------------------


def test_live_preview_processes_on_a_change_and_a_newer_request_supersedes(qtbot, qt_settings, start_server):
    from zmqproc.gui.window import MainWindow

    server = start_server("--workers", "1")
    win = MainWindow([server.endpoint], timeout=30.0)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    big = np.tile(load_image("astronaut.png"), (3, 3, 1))
    path = Path(qt_settings) / "big.png"
    cv2.imwrite(str(path), big)
    win.open_files([str(path)])
    win.editor.set_steps("bilateral_filter:d=15")
    win.live.setChecked(True)
    qtbot.waitUntil(lambda: win._job is not None, timeout=2000)  # the toggle itself sends, after the pause
    win.editor.set_steps("invert")  # the user changes the pipeline while the slow one runs
    ok, message = run_job(qtbot, win, live=True)
    assert ok and message.startswith("Done: invert")
    assert np.array_equal(win.result, 255 - big), "the shown result is the newest request's"
    wait_until(lambda: server_stats(server.endpoint)["errors"].get("cancelled", 0) >= 1, what="the superseded request cancelled")
    assert win.client.in_flight == 0, "the superseded request is over too"
    win.close()


# -- batch to disk ----------------------------------------------------------------------------------


def test_batch_writes_results_as_they_arrive_retries_failed_and_saves_all(qtbot, window, tmp_path):
    paths = images_in(tmp_path / "in", 4)
    broken = tmp_path / "in" / "img9.png"
    broken.write_text("not an image")
    window.open_files([*paths, str(broken)])
    window.batch_panel.folder.setText(str(tmp_path / "out"))
    window.batch_panel.pattern.setText("{stem}-{pipeline}.{ext}")
    window.batch_panel.format.setCurrentIndex(window.batch_panel.format.findData("jpeg"))
    window.editor.set_steps("invert;flip")
    table = window.batch_panel.table
    assert table.editTriggers() == table.EditTrigger.NoEditTriggers
    assert table.minimumHeight() >= 6 * table.verticalHeader().defaultSectionSize(), "six whole rows, not three and a half"
    with qtbot.waitSignal(window.batch_panel.finished, timeout=30000) as finished:
        window.start_batch()
    summary, level = finished.args
    assert level == "error" and "4 done, 1 failed" in summary and window.notice.property("level") == "error"
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"img{i}-invert-flip.jpg" for i in range(4)]
    assert window.batch_panel.retry_button.isEnabled()
    cv2.imwrite(str(broken), load_image("coffee.png"))  # the user fixes the file
    with qtbot.waitSignal(window.batch_panel.finished, timeout=30000) as again:
        window.batch_panel.retry_failed()
    assert again.args[1] == "ok" and (tmp_path / "out" / "img9-invert-flip.jpg").exists()
    window.show_batch_item(4)
    assert window.path == str(broken) and window.result.shape == load_image("coffee.png").shape  # read back from its file
    window.batch_panel.format.setCurrentIndex(window.batch_panel.format.findData("png"))
    assert window.batch_panel.save_all(tmp_path / "kept") == 5 and len(list((tmp_path / "kept").glob("*.png"))) == 5


def test_scripted_batch_writes_every_result_and_exits_by_outcome(endpoint, tmp_path):
    folder = tmp_path / "in"
    images_in(folder, 3)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path)}
    cmd = [sys.executable, "gui_app.py", "--server", endpoint, "--open", str(folder), "--pipeline", "grayscale", "--batch"]
    cmd += ["--output-dir", str(tmp_path / "out"), "--name-pattern", "{index}_{stem}.{ext}", "--quit-when-done"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("Batch of 3: 3 done in ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1_img0.png", "2_img1.png", "3_img2.png"]
    (folder / "img5.png").write_text("broken")
    failed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert failed.returncode == 1 and "3 done, 1 failed" in failed.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3, "the others are still written"


# -- pipeline presets ----------------------------------------------------------------------------


def test_a_saved_pipeline_preset_is_what_pipeline_takes(qtbot, window, endpoint, tmp_path):
    window.editor.set_steps("grayscale;gaussian_blur:ksize=7")
    preset = tmp_path / "soft.json"
    preset.write_text(window.editor.preset())
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    cmd = [sys.executable, "gui_app.py", "--server", endpoint, "--open", "sample:coffee", "--pipeline", str(preset), "--process"]
    done = subprocess.run([*cmd, "--quit-when-done"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Done: grayscale;gaussian_blur:ksize=7 in "), done.stderr


# -- plugins in the viewer -------------------------------------------------------------------------


def test_plugin_ops_get_controls_and_their_points_and_polygons_are_drawn(qtbot, qt_settings, start_server):
    from PySide6.QtWidgets import QCheckBox, QComboBox

    from zmqproc.gui.pipeline_editor import SpinSlider
    from zmqproc.gui.window import MainWindow

    server = start_server("--workers", "1", "--ops", str(ROOT / "examples" / "ops"))
    win = MainWindow([server.endpoint], timeout=30.0)
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: "count_blobs" in {o["name"] for o in win.ops}, timeout=10000)
    win.editor.set_steps("")
    win.editor.add_step("count_blobs")
    controls = win.editor._controls
    assert isinstance(controls["polarity"], QComboBox) and isinstance(controls["split_touching"], QCheckBox)
    assert isinstance(controls["min_area"], SpinSlider)
    controls["min_area"].spin.setValue(10)
    win.open_files(["sample:hubble_deep_field"])
    assert run_job(qtbot, win)[0]
    with Client(server.endpoint) as lib:
        count = lib.process(load_image("hubble_deep_field.jpg"), "count_blobs:min_area=10", details=True).results["count"]
    assert win.result_view.overlay_count() == count > 50
    lines = [win.results_list.item(i).text() for i in range(win.results_list.count())]
    assert lines[0] == f"count: {count}" and lines[1] == f"centroids: {count} points (drawn)"
    win.close()
