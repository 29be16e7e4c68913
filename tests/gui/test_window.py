"""The real main window (offscreen) against real servers: open, process, errors, batch with cancel, connection, scripted mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import IMAGES, ROOT, ServerProcess, free_port, load_image
from tests.rawwire import server_stats
from zmqproc import Client, samples
from zmqproc.gui.qt_client import CONNECTED, LOST


@pytest.fixture
def window(qtbot, qt_settings, endpoint):
    from zmqproc.gui.window import MainWindow

    win = MainWindow([endpoint], timeout=30.0)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    return win


def run_job(qtbot, win) -> tuple[bool, str]:
    with qtbot.waitSignal(win.jobFinished, timeout=20000) as job:
        win.process()
    return tuple(job.args)


def test_ops_build_parameter_controls(window):
    from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

    from zmqproc.gui.pipeline_editor import SpinSlider

    window.editor.set_steps("")
    for name in ("gaussian_blur", "threshold", "flip", "detect_faces"):
        window.editor.add_step(name)
    kinds = set()
    for row in range(4):
        window.editor.steps_list.setCurrentRow(row)
        kinds |= {type(c.spin if isinstance(c, SpinSlider) else c) for c in window.editor._controls.values()}
    assert {QSpinBox, QDoubleSpinBox, QComboBox, QCheckBox} <= kinds
    window.editor.steps_list.setCurrentRow(0)
    ksize = window.editor._controls["ksize"]
    assert isinstance(ksize, SpinSlider)
    ksize.spin.setValue(ksize.spin.value() + ksize.spin.singleStep())
    assert window.editor.steps()[0].params["ksize"] % 2 == 1  # odd parameters step by two
    ksize.slider.setValue(ksize.slider.maximum() // 2)
    assert window.editor.steps()[0].params["ksize"] % 2 == 1 and ksize.spin.value() == window.editor.steps()[0].params["ksize"]
    window.editor.move_selected(1)
    window.editor.remove_selected()
    assert [s.op for s in window.editor.steps()] == ["threshold", "flip", "detect_faces"]


@pytest.mark.parametrize("transfer", ["raw", "encoded"])
def test_open_process_shows_the_librarys_result(qtbot, window, endpoint, transfer, tmp_path):
    path = str(IMAGES / "astronaut.png")
    assert window.transfer.currentData() == "auto" and window.transfer_mode() == "raw"  # auto: raw pixels on a direct link
    window.transfer.setCurrentIndex(window.transfer.findData(transfer))
    window.open_files([path])
    assert window.original_view.has_image() and not window.result_view.has_image()
    window.editor.set_steps("grayscale;gaussian_blur:ksize=5")
    ok, message = run_job(qtbot, window)
    assert ok and message.startswith("Done: grayscale;gaussian_blur:ksize=5 in ")
    with Client(endpoint) as lib:
        expected = lib.process(load_image("astronaut.png"), "grayscale;gaussian_blur:ksize=5")
    assert np.array_equal(window.result, expected)
    assert window.result_view.has_image() and window.notice.isVisible() and window.notice.text() == message
    window.save_result(str(tmp_path / "out.png"))
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), expected)


def test_faces_are_listed_for_the_sample_opened_from_the_menu(qtbot, window):
    menu = window.samples_menu.actions()
    assert [a.text().partition(":")[0] for a in menu] == samples.names()
    next(a for a in menu if a.text().startswith("astronaut:")).trigger()
    assert window.path == str(samples.path("astronaut")) and window.original_view.has_image()
    window.editor.set_steps("detect_faces")
    ok, _ = run_job(qtbot, window)
    assert ok
    items = [window.results_list.item(i).text() for i in range(window.results_list.count())]
    assert items[0] == "faces: 1 box (drawn)" and items[1].startswith("    [")
    assert window.result_view.overlay_count() == 1, "the viewer draws the box over the result"
    assert np.array_equal(window.result, load_image("astronaut.png")), "one outline only: the server did not draw it too"


def test_a_result_row_and_its_overlay_select_each_other_and_export_as_json_or_csv(qtbot, window, tmp_path, monkeypatch):
    """Issue 20, deliverable 4: the results list and the overlays linked; CSV/JSON export."""
    import json

    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtWidgets import QFileDialog

    from zmqproc.gui.views import HIGHLIGHT_COLOR, OVERLAY_COLOR

    window.open_files(["sample:astronaut"])
    window.editor.set_steps("detect_faces")
    assert run_job(qtbot, window)[0]
    box = window.result_view._overlays[0]
    assert box.pen().color() == OVERLAY_COLOR
    window.results_list.setCurrentRow(1)  # the box's row
    assert box.pen().color() == HIGHLIGHT_COLOR and window.original_view._overlays[0].pen().color() == HIGHLIGHT_COLOR
    window.results_list.setCurrentRow(0)  # the heading: nothing highlighted
    assert box.pen().color() == OVERLAY_COLOR
    view = window.result_view
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(box.mapToScene(box.rect().topLeft())) + QPoint(0, 0))
    assert window.results_list.currentRow() == 1 and box.pen().color() == HIGHLIGHT_COLOR, "a click on the box selects its row"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(tmp_path / "faces.csv"), "CSV (*.csv)"))
    window.export_results_dialog()
    lines = (tmp_path / "faces.csv").read_text().splitlines()
    assert lines[0] == "key,index,value" and lines[1].startswith("faces,0,") and len(lines) == 2
    window.export_results(str(tmp_path / "faces.json"))
    assert json.loads((tmp_path / "faces.json").read_text()) == window.results


@pytest.mark.parametrize(
    ("pipeline", "words"),
    [
        ("gaussian_blur:ksize=4", "Step 1 (gaussian_blur): ksize must be odd"),
        ("no_such_op", "Step 1: the server does not offer 'no_such_op'"),
    ],
)
def test_error_reply_is_a_message_and_the_app_keeps_working(qtbot, window, pipeline, words):
    window.open_files([str(IMAGES / "coffee.png")])
    window.editor.set_steps(pipeline)
    ok, message = run_job(qtbot, window)
    assert not ok and words in message
    assert window.notice.property("level") == "error" and window.notice.text() == message
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]


def test_batch_with_cancel(qtbot, qt_settings, start_server, tmp_path):
    from zmqproc.gui.window import MainWindow

    server = start_server("--workers", "1")
    big = np.tile(load_image("astronaut.png"), (2, 2, 1))
    paths = []
    for i in range(8):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), big)
        paths.append(str(p))
    win = MainWindow([server.endpoint], timeout=30.0)
    qtbot.addWidget(win)
    win.open_files(paths)
    win.batch_panel.folder.setText(str(tmp_path / "out"))
    win.editor.set_steps("bilateral_filter:d=15")
    win.start_batch()
    qtbot.waitUntil(lambda: win.batch.finished_count >= 1, timeout=20000)
    with qtbot.waitSignal(win.batch_panel.finished, timeout=30000) as finished:
        win.cancel_batch()
    statuses = [win.batch_panel.table.item(r, 1).text() for r in range(len(paths))]
    assert statuses.count("done") >= 1 and statuses.count("cancelled") >= 3 and set(statuses) <= {"done", "cancelled"}
    assert finished.args[0].startswith("Batch of 8: ") and "cancelled" in finished.args[0]
    assert win.batch_panel.progress.value() == 8 and win.batch_panel.summary.text() == finished.args[0]
    assert finished.args[1] == "warn" and win.notice.property("level") == "warn", "a cancelled batch is not told in green"
    assert len(list((tmp_path / "out").glob("*.png"))) == statuses.count("done"), "each result was written as it arrived"
    with Client(server.endpoint) as lib:
        assert lib.stats()["errors"].get("cancelled", 0) >= 1  # queued work was withdrawn by the server
    win.close()


def test_connection_lost_and_regained_indicator(qtbot, qt_settings):
    from zmqproc.gui.window import MainWindow

    port = free_port()
    first = ServerProcess("--workers", "1", port=port)
    second = None
    win = MainWindow([first.endpoint])
    qtbot.addWidget(win)
    try:
        qtbot.waitUntil(lambda: win.control.label.property("state") == CONNECTED, timeout=5000)
        first.stop()
        qtbot.waitUntil(lambda: win.control.label.property("state") == LOST, timeout=10000)
        assert "lost" in win.control.label.text()
        second = ServerProcess("--workers", "1", port=port)
        qtbot.waitUntil(lambda: win.control.label.property("state") == CONNECTED, timeout=10000)
        assert "restarted" in win.notice.text()
        win.open_files([str(IMAGES / "coffee.png")])
        win.editor.set_steps("invert")
        assert run_job(qtbot, win)[0]
    finally:
        win.close()
        first.stop()
        if second is not None:
            second.stop()


def test_settings_persist(qtbot, qt_settings, endpoint):
    from zmqproc.gui.window import MainWindow

    win = MainWindow([endpoint])
    qtbot.addWidget(win)
    win.editor.set_steps("invert;flip:mode=vertical")
    win.transfer.setCurrentIndex(win.transfer.findData("encoded"))
    win.open_files([str(IMAGES / "coffee.png")])
    win.close()
    assert (qt_settings / "zmqproc" / "viewer.ini").is_file()  # in the test's directory, not the user's
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.editor.text() == "invert;flip:mode=vertical"
    assert again.transfer.currentData() == "encoded"
    assert again.connection.endpoints == [endpoint]
    assert again._recent()[0] == str(IMAGES / "coffee.png")
    again.close()


def test_scripted_mode_writes_a_screenshot(endpoint, tmp_path):
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    cmd = [sys.executable, "gui_app.py", "--server", endpoint, "--open", str(IMAGES / "astronaut.png")]
    cmd += ["--pipeline", "grayscale;gaussian_blur:ksize=5", "--process", "--screenshot", str(shot), "--quit-when-done"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Done: grayscale;gaussian_blur:ksize=5 in ")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 600


def test_scripted_mode_fails_with_the_reason(endpoint, tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    cmd = [sys.executable, "gui_app.py", "--server", endpoint, "--open", str(IMAGES / "coffee.png")]
    cmd += ["--pipeline", "gaussian_blur:ksize=4", "--process", "--quit-when-done"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "must be odd" in done.stderr and "ksize" in done.stderr


def test_gui_app_and_the_console_script_are_the_same_program():
    from importlib.metadata import entry_points

    from zmqproc.gui.app import main

    (script,) = entry_points(group="console_scripts", name="zmqproc-gui")
    assert script.load() is main
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    helps = [
        subprocess.run([*cmd, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        for cmd in ([sys.executable, "gui_app.py"], [str(Path(sys.executable).with_name("zmqproc-gui"))])
    ]
    assert helps[0].returncode == helps[1].returncode == 0 and helps[0].stdout == helps[1].stdout
    assert "--open" in helps[0].stdout and "sample:NAME" in helps[0].stdout


def test_connection_dialog_tests_ports_and_ping(qtbot, qt_settings, endpoint):
    from zmqproc.gui.connection import ConnectionDialog, ConnectionSettings

    closed = f"tcp://127.0.0.1:{free_port()}"
    typo = "tcp://127.0.0.l:5555"  # issue 20, row 6: an l for a 1 was "port filtered"
    dialog = ConnectionDialog(ConnectionSettings([endpoint, closed, typo]))
    qtbot.addWidget(dialog)
    dialog.test_connection()
    qtbot.waitUntil(lambda: dialog.test_button.isEnabled(), timeout=15000)
    lines = dialog.test_result.text().splitlines()
    assert lines[0].startswith(f"{endpoint}: port open, ping ") and lines[0].endswith(" ms")
    assert lines[1] == f"{closed}: port closed"
    assert lines[2] == f"{typo}: no such host"
    assert dialog.settings().endpoints == [endpoint, closed, typo]


def ssh_settings(sshd, endpoint, key):
    from zmqproc.gui.connection import ConnectionSettings

    return ConnectionSettings([endpoint], True, sshd.host, sshd.user, sshd.port, key, sshd.known_hosts)


@pytest.mark.sshd
def test_processing_through_an_ssh_tunnel(qtbot, qt_settings, sshd, endpoint):
    from zmqproc.gui.window import MainWindow

    win = MainWindow([endpoint])
    qtbot.addWidget(win)
    win.connect_to(ssh_settings(sshd, endpoint, sshd.key))
    qtbot.waitUntil(lambda: win.control.label.property("state") == CONNECTED and bool(win.control.tunnels), timeout=15000)
    assert win.client.endpoints == [endpoint] != [t.local_endpoint for t in win.control.tunnels]  # named as typed, reached through SSH
    win.transfer.setCurrentIndex(win.transfer.findData("auto"))
    assert win.transfer_mode() == "encoded"  # auto: the encoded file through SSH
    win.open_files([str(IMAGES / "coffee.png")])
    win.editor.set_steps("invert")
    ok, _ = run_job(qtbot, win)
    assert ok and np.array_equal(win.result, 255 - load_image("coffee.png"))
    win.close()


@pytest.mark.sshd
def test_ssh_login_refused_asks_in_a_dialog_then_says_so(qtbot, qt_settings, sshd, endpoint, monkeypatch):
    from zmqproc.gui import connection_control as control_module
    from zmqproc.gui import window as window_module

    asked: list[str] = []
    monkeypatch.setattr(control_module, "ask_secret", lambda _parent, what: asked.append(what))  # the user presses Cancel
    win = window_module.MainWindow([endpoint])
    qtbot.addWidget(win)
    win.connect_to(ssh_settings(sshd, endpoint, sshd.wrong_key))
    qtbot.waitUntil(lambda: "Could not open the SSH tunnel" in win.notice.text(), timeout=15000)
    assert asked == [f"Password of {sshd.target}"]  # an unencrypted key: only a password can help
    qtbot.wait(1500)  # the client's own state changes meanwhile must not bring "connecting…" back
    assert win.control.label.property("state") == "ssh_failed" and "SSH tunnel failed" in win.control.label.text()
    assert "opening an SSH tunnel" not in win.statusBar().currentMessage(), "issue 20, row 6: a final state, no stale text"
    win.close()


@pytest.mark.sshd
def test_an_encrypted_key_asks_for_its_passphrase_once_and_connects(qtbot, qt_settings, sshd_password, endpoint, tmp_path, monkeypatch):
    import subprocess

    from zmqproc.gui import connection_control as control_module
    from zmqproc.gui import window as window_module

    sshd = sshd_password
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", str(key)], check=True)
    with open(sshd.dir / "authorized_keys", "a") as f:
        f.write((tmp_path / "locked.pub").read_text())
    asked: list[str] = []
    monkeypatch.setattr(control_module, "ask_secret", lambda _parent, what: asked.append(what) or "open sesame")
    win = window_module.MainWindow([endpoint])
    qtbot.addWidget(win)
    win.connect_to(ssh_settings(sshd, endpoint, str(key)))
    qtbot.waitUntil(lambda: win.control.label.property("state") == CONNECTED and bool(win.control.tunnels), timeout=15000)
    assert asked == [f"Passphrase of the SSH key {key}"] and win.control.tunnels[0].backend == "paramiko"
    assert sshd.logins("Failed password") == 0  # the passphrase unlocked the key, it was never sent as a password
    win.close()  # saves the settings
    saved = [path.read_bytes() for path in qt_settings.rglob("*") if path.is_file()]
    assert saved and not any(b"open sesame" in data for data in saved)


def test_views_zoom_and_pan_together_and_drop_opens_files(qtbot, window):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(IMAGES / "chelsea.png")), QUrl.fromLocalFile(str(IMAGES / "coffee.png"))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    assert window.path == str(IMAGES / "chelsea.png") and window.batch_paths == [str(IMAGES / "chelsea.png"), str(IMAGES / "coffee.png")]
    window.editor.set_steps("invert")
    assert run_job(qtbot, window)[0]
    from PySide6.QtWidgets import QAbstractSlider

    window.compare.actual_size()
    window.compare.zoom(2.0)
    assert window.result_view.transform().m11() == pytest.approx(2.0), "the result follows the zoom"
    window.original_view.horizontalScrollBar().triggerAction(QAbstractSlider.SliderAction.SliderPageStepAdd)  # the user pans
    assert window.result_view.view_state().center == pytest.approx(window.original_view.view_state().center, abs=0.01)
    window.result_view.fit()
    assert window.original_view.transform().m11() == pytest.approx(window.result_view.transform().m11())


def test_run_local_starts_a_server_and_stops_it_with_the_viewer(tmp_path):
    from zmqproc.endpoints import port_state

    port = free_port()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path), "PORT": str(port), "WORKERS": "1"}
    env["BIN"] = str(Path(sys.executable).parent)
    args = ["--open", str(IMAGES / "coffee.png"), "--pipeline", "invert", "--process", "--quit-when-done"]
    done = subprocess.run(["scripts/run_local.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Done: invert in ")
    assert port_state("127.0.0.1", port, 1.0) == "closed"  # the server went away with the viewer


def scripted(*args: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "gui_app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_scripted_mode_over_curve(start_server, keys, tmp_path):
    server = start_server("--workers", "1", *keys.server_args())
    curve = ["--curve-server-key", str(keys.server_public), "--curve-secret", str(keys.client_secret)]
    done = scripted("--server", server.endpoint, *curve, "--open", "sample:coffee", "--pipeline", "invert", "--process",
                    "--quit-when-done", tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Done: invert in ")


def test_curve_settings_save_the_secret_keys_path_only(qt_settings, tmp_path):
    from PySide6.QtCore import QSettings

    from zmqproc.gui.connection import ConnectionSettings
    from zmqproc.security import generate_keypair, load_keypair

    public, secret = generate_keypair("viewer", tmp_path)
    settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "zmqproc", "viewer")
    ConnectionSettings(curve_server_key=str(public), curve_secret=str(secret)).save(settings)
    settings.sync()
    saved = (qt_settings / "zmqproc" / "viewer.ini").read_text()
    assert str(secret) in saved and load_keypair(secret)[1].decode() not in saved
    assert ConnectionSettings.load(settings).curve_secret == str(secret)


def test_scripted_mode_without_a_server_fails_within_seconds_in_one_sentence(tmp_path):
    started = time.monotonic()
    done = scripted("--server", f"tcp://127.0.0.1:{free_port()}", "--open", "sample:coffee", "--pipeline", "invert",
                    "--process", "--quit-when-done", tmp_path=tmp_path)  # fmt: skip
    assert done.returncode == 1 and time.monotonic() - started < 10
    ours = [line for line in done.stderr.splitlines() if line.startswith("zmqproc-gui:")]  # Qt's offscreen plugin warns too
    assert ours == [line for line in done.stderr.splitlines() if "zmqproc" in line or "Traceback" in line]
    assert len(ours) == 1 and ours[0].startswith("zmqproc-gui: No server can be reached: no server reachable")


def test_an_endpoint_without_a_scheme_is_a_plain_message(tmp_path):
    done = scripted("--server", "localhost:5599", "--open", "sample:coffee", "--process", "--quit-when-done", tmp_path=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "zmqproc-gui: 'localhost:5599' has no transport: write tcp://localhost:5599"


def test_a_bad_saved_endpoint_does_not_stop_the_viewer(qtbot, qt_settings):
    from PySide6.QtCore import QSettings

    from zmqproc.gui.window import MainWindow

    saved = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "zmqproc", "viewer")
    saved.setValue("connection/endpoints", ["localhost:5599"])
    saved.sync()
    win = MainWindow()
    qtbot.addWidget(win)
    assert "Cannot connect" in win.notice.text() and "tcp://localhost:5599" in win.notice.text()
    win.close()


def test_the_connection_dialog_never_accepts_an_invalid_endpoint_or_key(qtbot, qt_settings, endpoint, tmp_path):
    from zmqproc.gui.connection import ConnectionDialog, ConnectionSettings

    dialog = ConnectionDialog(ConnectionSettings([endpoint]))
    qtbot.addWidget(dialog)
    dialog.endpoints.setPlainText("127.0.0.1:5555")
    dialog._accept_valid()
    assert dialog.result() == 0 and "write tcp://127.0.0.1:5555" in dialog.test_result.text()
    dialog.endpoints.setPlainText(endpoint)
    dialog.curve_server_key.setText(str(tmp_path / "missing.key"))
    dialog._accept_valid()
    assert dialog.result() == 0 and "CURVE keys" in dialog.test_result.text()
    dialog.curve_server_key.setText("")
    dialog._accept_valid()
    assert dialog.result() == 1


def test_ok_warns_when_nothing_answers_at_an_endpoint(qtbot, qt_settings, endpoint, monkeypatch):
    """Issue 20, row 6: OK accepted a closed or unresolvable endpoint without a word."""
    from PySide6.QtWidgets import QMessageBox

    from zmqproc.gui.connection import ConnectionDialog, ConnectionSettings

    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda _parent, _title, text: asked.append(text) or answer[0])
    closed = f"tcp://127.0.0.1:{free_port()}"
    dialog = ConnectionDialog(ConnectionSettings([endpoint, closed, "tcp://127.0.0.l:5555"]))
    qtbot.addWidget(dialog)
    dialog._accept_valid()
    assert dialog.result() == 0 and asked[0].startswith(f"{closed}: port closed\ntcp://127.0.0.l:5555: no such host")
    assert "no such host" in dialog.test_result.text()
    answer[0] = QMessageBox.StandardButton.Yes  # the server is not up yet: connect anyway
    dialog._accept_valid()
    assert dialog.result() == 1
    dialog = ConnectionDialog(ConnectionSettings([endpoint]))
    qtbot.addWidget(dialog)
    dialog._accept_valid()
    assert dialog.result() == 1 and len(asked) == 2, "a live endpoint: no question"


def test_escape_cancels_the_running_request(qtbot, qt_settings, start_server, tmp_path):
    from PySide6.QtCore import Qt

    from zmqproc.gui.window import MainWindow

    server = start_server("--workers", "1")
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.tile(load_image("astronaut.png"), (2, 2, 1)))  # seconds of denoise: running when Esc comes
    win = MainWindow([server.endpoint], timeout=60.0)
    qtbot.addWidget(win)
    win.show()
    try:
        win.open_files([str(big)])
        win.editor.set_steps("denoise:h=10,search_window=35,template_window=21")
        with qtbot.waitSignal(win.jobFinished, timeout=10000) as job:
            win.process()
            assert win.cancel_button.isEnabled()
            qtbot.waitUntil(lambda: server_stats(server.endpoint)["running"] == 1, timeout=5000)
            qtbot.keyClick(win, Qt.Key.Key_Escape)
        assert job.args == [False, "Cancelled."] and not win.cancel_button.isEnabled() and win.process_button.isEnabled()
        stats = server_stats(server.endpoint)
        assert stats["errors"].get("cancelled") == 1 and stats["running"] == 0, "the server stopped the running work"
    finally:
        win.close()


def test_the_histogram_tab_gives_per_channel_statistics_of_the_view_or_a_drawn_rectangle(qtbot, window):
    """Issue 20, deliverable 4: as napari, Fiji and GIMP do; a rectangle drawn with Ctrl+drag."""
    from PySide6.QtCore import Qt

    coffee = load_image("coffee.png")
    window.open_files(["sample:coffee"])
    window.tabs.setCurrentWidget(window.histogram)
    names = [c.name for c in window.histogram.plot.channels]
    assert names == ["B", "G", "R"] and window.histogram.where.text().startswith("in view: 600×400 at 0, 0")
    assert window.histogram.plot.channels[2].mean == pytest.approx(coffee[:, :, 2].mean())
    view = window.original_view
    start, end = view.mapFromScene(100.2, 50.2), view.mapFromScene(300.2, 150.2)
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier, start)
    qtbot.mouseMove(view.viewport(), end)
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier, end)
    x, y, w, h = view.region()
    assert abs(x - 100) <= 1 and abs(y - 50) <= 1 and abs(w - 200) <= 2 and abs(h - 100) <= 2
    part = coffee[y : y + h, x : x + w]
    stats = window.histogram.plot.channels
    assert window.histogram.where.text().startswith(f"rectangle: {w}×{h} at {x}, {y}")
    assert [s.minimum for s in stats] == [part[:, :, c].min() for c in range(3)]
    assert stats[0].std == pytest.approx(part[:, :, 0].std()) and int(stats[1].counts.sum()) == w * h
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier, start)
    assert view.region() is None and window.histogram.where.text().startswith("in view")
