"""The viewer's main window: open, choose a pipeline, process (one image or a batch), see and save the result."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QSystemTrayIcon,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import samples
from ..errors import HostKeyUnknown, TunnelAuthFailed
from ..images import sniff_format
from ..security import ClientCurve
from .batch import Batch
from .connection import Background, ConnectionDialog, ConnectionSettings, SshSecrets, ask_secret, string_list, valid_endpoints
from .messages import explain
from .pipeline_editor import PipelineEditor
from .qt_client import CONNECTED, CONNECTING, LOST, SLOW, QtClient
from .views import ImageView, synchronize

OPEN_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp);;All files (*)"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SAVE_FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp"}
TRANSFERS = {
    "auto": "Auto (encoded through SSH, else raw)",
    "raw": "Raw pixels (fast link)",
    "encoded": "Encoded file (slow link, e.g. SSH)",
}
STATE_TEXT = {
    CONNECTING: ("#999", "connecting…"),
    CONNECTED: ("#2a2", "connected"),
    SLOW: ("#d90", "slow"),
    LOST: ("#d22", "lost"),
}
MAX_RECENT = 8


def read_image(path: str) -> np.ndarray:
    """Decode an image file as OpenCV does (8-bit BGR; gray stays gray)."""
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return image


def result_array(image: np.ndarray | bytes) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("the server's encoded result does not decode")
    return decoded


class MainWindow(QMainWindow):
    """``jobFinished(ok, message)`` fires when a single-image job ends and its outcome is shown."""

    jobFinished = Signal(bool, str)

    def __init__(self, endpoints: list[str] | None = None, *, connection: ConnectionSettings | None = None, timeout: float = 60.0) -> None:
        """Connect to ``endpoints``, or to ``connection`` (endpoints, CURVE keys, SSH), or to the saved connection."""
        super().__init__()
        self.setWindowTitle("zmqproc viewer")
        self.setAcceptDrops(True)
        # INI under the user config dir (~/.config/zmqproc/viewer.ini); an explicit format so QSettings.setPath applies
        self.settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "zmqproc", "viewer")
        self.connection = connection or ConnectionSettings.load(self.settings)
        if endpoints:
            self.connection = ConnectionSettings(endpoints=list(endpoints))
        self._curve: ClientCurve | None = None
        self.client = QtClient(timeout=timeout, parent=self)
        self.path: str | None = None
        self.original: np.ndarray | None = None
        self.result: np.ndarray | None = None
        self.ops: list[dict[str, Any]] = []
        self.batch: Batch | None = None
        self.batch_paths: list[str] = []
        self._job: tuple[str, float, str] | None = None  # request id, started, pipeline text
        self._tunnels: list[Any] = []
        self._tray: QSystemTrayIcon | None = None
        self._build()
        self._restore()
        self.client.processed.connect(self._on_processed)
        self.client.failed.connect(self._on_failed)
        self.client.opsReceived.connect(self._on_ops)
        self.client.stateChanged.connect(self._on_state)
        self.client.serverRestarted.connect(
            lambda epoch: self.notify(
                f"The server restarted (epoch {epoch}); unanswered work is sent again ({self.client.resent} resent so far).", "warn"
            )
        )
        self.connect_to(self.connection)

    # -- building -------------------------------------------------------------------

    def _build(self) -> None:
        self.original_view = ImageView("Open an image (File → Open, or File → Open sample), or drop files here")
        self.result_view = ImageView("The result appears here")
        synchronize(self.original_view, self.result_view)
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(self._titled("Original", self.original_view))
        views.addWidget(self._titled("Result", self.result_view))
        views.setSizes([500, 500])

        self.notice = QLabel("")
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.hide()
        self.results_list = QListWidget()
        self.results_list.setMaximumHeight(90)

        self.batch_table = QTableWidget(0, 3)
        self.batch_table.setHorizontalHeaderLabels(["File", "Status", "Details"])
        self.batch_table.horizontalHeader().setStretchLastSection(True)
        self.batch_table.cellDoubleClicked.connect(lambda row, _col: self.show_batch_item(row))
        self.batch_progress = QProgressBar()
        self.batch_cancel = QPushButton("Cancel")
        self.batch_cancel.setEnabled(False)
        self.batch_cancel.clicked.connect(self.cancel_batch)
        self.batch_summary = QLabel("Open several files or a folder to process them as a batch.")
        batch_row = QHBoxLayout()
        batch_row.addWidget(self.batch_progress, 1)
        batch_row.addWidget(self.batch_cancel)
        batch_panel = QWidget()
        batch_layout = QVBoxLayout(batch_panel)
        batch_layout.addWidget(self.batch_table)
        batch_layout.addLayout(batch_row)
        batch_layout.addWidget(self.batch_summary)

        tabs = QTabWidget()
        tabs.addTab(self.results_list, "Results")
        tabs.addTab(batch_panel, "Batch")
        self.tabs = tabs
        tabs.setMaximumHeight(220)

        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.addWidget(self.notice)
        center_layout.addWidget(views, 1)
        center_layout.addWidget(tabs)

        self.editor = PipelineEditor()
        self.transfer = QComboBox()
        for key, text in TRANSFERS.items():
            self.transfer.addItem(text, key)
        self.process_button = QPushButton("Process")
        self.process_button.setDefault(True)
        self.process_button.clicked.connect(self.process)
        self.cancel_button = QPushButton("Cancel (Esc)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.batch_button = QPushButton("Process batch")
        self.batch_button.clicked.connect(self.start_batch)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(QLabel("Pipeline"))
        side_layout.addWidget(self.editor, 1)
        side_layout.addWidget(QLabel("Transfer"))
        side_layout.addWidget(self.transfer)
        side_layout.addWidget(self.process_button)
        side_layout.addWidget(self.cancel_button)
        side_layout.addWidget(self.batch_button)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(side)
        splitter.addWidget(center)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([280, 1000])
        self.setCentralWidget(splitter)

        self.connection_label = QLabel()
        self.statusBar().addPermanentWidget(self.connection_label)
        self._on_state(CONNECTING, -1.0)
        self._build_menus()

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel(title))
        layout.addWidget(widget, 1)
        return box

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &folder as batch…", self.open_folder)
        self.samples_menu = file_menu.addMenu("Open &sample")
        for name, (_, what) in samples.SAMPLES.items():
            self._action(self.samples_menu, f"{name}: {what}", lambda n=name: self.open_files([str(samples.path(n))]))
        self.recent_menu = file_menu.addMenu("Recent files")
        self._action(file_menu, "&Save result as…", self.save_dialog, QKeySequence.StandardKey.Save)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        run_menu = bar.addMenu("&Process")
        self._action(run_menu, "&Process image", self.process, "Ctrl+R")
        self._action(run_menu, "Process &batch", self.start_batch)
        self._action(run_menu, "&Cancel", self.cancel, "Esc")
        self._action(run_menu, "Cancel &batch", self.cancel_batch)
        view_menu = bar.addMenu("&View")
        self._action(view_menu, "&Fit", self.original_view.fit, "Ctrl+0")
        self._action(view_menu, "&100 %", self.original_view.actual_size, "Ctrl+1")
        self._action(view_menu, "Zoom &in", lambda: self.original_view.zoom(1.25), QKeySequence.StandardKey.ZoomIn)
        self._action(view_menu, "Zoom &out", lambda: self.original_view.zoom(0.8), QKeySequence.StandardKey.ZoomOut)
        server_menu = bar.addMenu("&Server")
        self._action(server_menu, "&Connection…", self.connection_dialog)
        self._action(server_menu, "&Reload operations", self.client.request_ops)
        self._refresh_recent()

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 820)
        index = self.transfer.findData(self.settings.value("transfer", "auto"))
        self.transfer.setCurrentIndex(max(0, index))
        pipeline = str(self.settings.value("pipeline", "grayscale;gaussian_blur:ksize=5"))
        try:
            self.editor.set_steps(pipeline)
        except ValueError:
            self.editor.set_steps("")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("transfer", self.transfer.currentData())
        self.settings.setValue("pipeline", self.editor.text())
        self.connection.save(self.settings)
        self.settings.sync()
        self.client.close()
        for tunnel in self._tunnels:
            tunnel.close()
        super().closeEvent(event)

    # -- connection -------------------------------------------------------------------

    def connect_to(self, connection: ConnectionSettings, *, secrets: SshSecrets | None = None, accept_new: bool = False) -> None:
        """Connect directly, or open SSH tunnels first (off the GUI thread; secrets asked in dialogs, kept in memory only)."""
        self.connection = connection
        secrets = secrets or SshSecrets()
        for tunnel in self._tunnels:
            tunnel.close()
        self._tunnels = []
        endpoints, problems = valid_endpoints(connection.endpoints)
        try:
            self._curve = ClientCurve.load(connection.curve_server_key or None, connection.curve_secret or None)
        except ValueError as exc:
            problems.append(f"CURVE keys: {exc}")
        if problems:
            self.client.set_endpoints([])
            self.notify("Cannot connect: " + "; ".join(problems) + " (Server → Connection… to fix it).", "error")
            return
        if not connection.use_ssh:
            self.client.set_endpoints(endpoints, curve=self._curve)
            self.client.request_ops()
            return
        from ..tunnel import open_tunnels

        def open_all() -> list[Any]:
            return open_tunnels(
                connection.endpoints,
                connection.ssh_target,
                key=connection.ssh_key or None,
                password=secrets.password,
                key_passphrase=secrets.key_passphrase,
                known_hosts=connection.known_hosts or None,
                accept_new_host_key=accept_new,
            )

        self.client.set_endpoints([])
        self.statusBar().showMessage(f"opening an SSH tunnel through {connection.ssh_target}…")
        Background(lambda tunnels, error: self._tunnels_opened(connection, tunnels, error, secrets, accept_new), self).run(open_all)

    def _tunnels_opened(self, connection: ConnectionSettings, tunnels: Any, error: Any, secrets: SshSecrets, accept_new: bool) -> None:
        if connection is not self.connection:  # the user chose another connection meanwhile
            for tunnel in tunnels or []:
                tunnel.close()
            return
        if error is None:
            self._tunnels = tunnels
            self.client.set_endpoints(connection.endpoints, curve=self._curve, tunnels=tunnels)
            self.client.request_ops()
            self.statusBar().showMessage(f"tunnel through {connection.ssh_target} open", 5000)
            return
        if isinstance(error, TunnelAuthFailed):
            wanted = secrets.to_ask(error, connection)  # the key's passphrase or the login password, each asked once
            typed = ask_secret(self, wanted[1]) if wanted is not None else None
            if wanted is not None and typed is not None:
                self.connect_to(connection, secrets=secrets.answered(wanted[0], typed), accept_new=accept_new)
                return
        elif isinstance(error, HostKeyUnknown):
            answer = QMessageBox.question(self, "Unknown SSH host", f"{error}\n\nTrust this host and remember its key?")
            if answer == QMessageBox.StandardButton.Yes:
                self.connect_to(connection, secrets=secrets, accept_new=True)
                return
        self.notify(f"Could not open the SSH tunnel: {error}", "error")

    def connection_dialog(self) -> None:
        dialog = ConnectionDialog(self.connection, self)
        if dialog.exec():
            settings = dialog.settings()
            settings.save(self.settings)
            self.connect_to(settings)

    def _on_state(self, state: str, rtt: float) -> None:
        color, text = STATE_TEXT[state]
        detail = f" ({rtt * 1000:.0f} ms)" if rtt >= 0 and state in (CONNECTED, SLOW) else ""
        where = ", ".join(self.connection.endpoints) if hasattr(self, "connection") else ""
        self.connection_label.setText(f"<span style='color:{color}'>●</span> {where} {text}{detail}")
        self.connection_label.setProperty("state", state)
        if state == LOST:
            self.statusBar().showMessage("The server does not answer; the viewer keeps trying to reconnect.")
        elif state == CONNECTED and not self.ops:
            self.client.request_ops()

    def _on_ops(self, ops: list[dict[str, Any]]) -> None:
        self.ops = ops
        self.editor.set_ops(ops)

    # -- files ----------------------------------------------------------------------------

    def open_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", str(self.settings.value("last_dir", "")), OPEN_FILTER)
        if paths:
            self.open_files(paths)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", str(self.settings.value("last_dir", "")))
        if folder:
            self.open_files(sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))

    def open_files(self, paths: list[str]) -> None:
        """Show the first image; several files also fill the batch list. ``sample:NAME`` names a shipped sample."""
        try:
            paths = [samples.resolve(p) for p in paths]
        except ValueError as exc:
            self.notify(str(exc), "error")
            return
        if not paths:
            return
        if self.open_image(paths[0]) and len(paths) > 1:
            self._fill_batch_table(paths)
            self.tabs.setCurrentIndex(1)

    def open_image(self, path: str) -> bool:
        try:
            image = read_image(path)
        except (OSError, ValueError) as exc:
            self.notify(f"Cannot open {path}: {exc}", "error")
            return False
        self.path, self.original, self.result = path, image, None
        self.original_view.set_image(image)
        self.result_view.set_image(None)
        self.results_list.clear()
        self.setWindowTitle(f"zmqproc viewer — {Path(path).name}")
        self.statusBar().showMessage(f"{Path(path).name}: {image.shape[1]}×{image.shape[0]}", 5000)
        self._remember(path)
        return True

    def _remember(self, path: str) -> None:
        recent = [path] + [p for p in self._recent() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.settings.setValue("last_dir", str(Path(path).parent))
        self._refresh_recent()

    def _recent(self) -> list[str]:
        return string_list(self.settings.value("recent"))

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for path in self._recent():
            self._action(self.recent_menu, path, lambda p=path: self.open_files([p]))
        self.recent_menu.setEnabled(bool(self._recent()))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt's name)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        files = []
        for path in paths:
            p = Path(path)
            files += sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [path]
        self.open_files(files)
        event.acceptProposedAction()

    def save_dialog(self) -> None:
        if self.result is None:
            self.notify("There is no result to save yet.", "warn")
            return
        stem = Path(self.path or "result").stem
        path, _ = QFileDialog.getSaveFileName(self, "Save result", f"{stem}-processed.png", "PNG (*.png);;JPEG (*.jpg);;WebP (*.webp)")
        if path:
            self.save_result(path)

    def save_result(self, path: str) -> None:
        suffix = SAVE_FORMATS.get(Path(path).suffix.lower())
        if suffix is None or self.result is None:
            self.notify(f"Save as .png, .jpg or .webp (not {Path(path).suffix or 'no extension'}).", "error")
            return
        ok, data = cv2.imencode(suffix, self.result)
        if not ok:
            self.notify(f"Could not encode the result as {suffix}.", "error")
            return
        Path(path).write_bytes(data.tobytes())
        self.statusBar().showMessage(f"saved {path}", 5000)

    # -- processing -----------------------------------------------------------------------

    def transfer_mode(self) -> str:
        """``raw`` or ``encoded``: what the selector says, ``auto`` meaning encoded through an SSH tunnel."""
        mode = str(self.transfer.currentData())
        return ("encoded" if self.connection.use_ssh else "raw") if mode == "auto" else mode

    def _payload(self, path: str, image: np.ndarray | None = None) -> tuple[np.ndarray | bytes, str | None]:
        """What to send for a file: its pixels (raw) or its encoded bytes, and the reply format to ask for."""
        if self.transfer_mode() == "encoded":
            data = Path(path).read_bytes()
            sniff_format(data[:16])
            return data, "png"
        return (read_image(path) if image is None else image), None

    def process(self) -> None:
        if self.original is None or self.path is None:
            self.notify("Open an image first.", "warn")
            return
        steps = self.editor.steps()
        if not steps:
            self.notify("The pipeline is empty: add a step first.", "warn")
            return
        payload, reply_format = self._payload(self.path, self.original)
        request_id = self.client.process(payload, steps, reply_format=reply_format)
        self._job = (request_id, time.monotonic(), self.editor.text())
        self.process_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.statusBar().showMessage(f"processing {Path(self.path).name}… (Esc cancels)")

    def cancel(self) -> None:
        """Esc: withdraw the running request (the server stops it) and the batch."""
        if self._job is not None:
            self.client.cancel(self._job[0])
        self.cancel_batch()

    def _on_processed(self, request_id: str, result: Any) -> None:
        if self._job is None or request_id != self._job[0]:
            return
        _, started, pipeline = self._job
        self._end_job()
        try:
            self.result = result_array(result.image)
            self.result_view.set_image(self.result)
            self.result_view.follow(self.original_view)
            self._show_results(result.results)
        except Exception as exc:  # whatever the result holds, the job ends with a message
            self._finish(False, explain(exc))
            return
        elapsed = time.monotonic() - started
        self._finish(True, f"Done: {pipeline} in {elapsed * 1000:.0f} ms (server {result.server_ms:.0f} ms).")

    def _on_failed(self, request_id: str, error: BaseException) -> None:
        if self._job is not None and request_id == self._job[0]:
            self._end_job()
            self._finish(False, explain(error))

    def _end_job(self) -> None:
        self._job = None
        self.process_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _finish(self, ok: bool, message: str) -> None:
        self.notify(message, "ok" if ok else "error")
        self.jobFinished.emit(ok, message)

    def _show_results(self, results: dict[str, Any]) -> None:
        self.results_list.clear()
        faces = results.get("faces")
        if faces is not None:
            self.results_list.addItem(f"{len(faces)} face(s) found")
            for x, y, w, h in faces:
                self.results_list.addItem(f"face at x={x}, y={y}, {w}×{h}")
            self.result_view.set_boxes(faces)
        for key, value in results.items():
            if key != "faces":
                self.results_list.addItem(f"{key}: {value}")

    # -- batch ----------------------------------------------------------------------------

    def _fill_batch_table(self, paths: list[str]) -> None:
        self.batch_paths = paths
        self.batch_table.setRowCount(len(paths))
        for row, path in enumerate(paths):
            self.batch_table.setItem(row, 0, QTableWidgetItem(Path(path).name))
            self.batch_table.setItem(row, 1, QTableWidgetItem("waiting"))
            self.batch_table.setItem(row, 2, QTableWidgetItem(""))
        self.batch_progress.setRange(0, len(paths))
        self.batch_progress.setValue(0)
        self.batch_summary.setText(f"{len(paths)} files ready: Process batch sends them all.")

    def start_batch(self) -> None:
        paths = self.batch_paths
        if not paths:
            self.notify("Open several files (or a folder) to run a batch.", "warn")
            return
        if self.batch is not None and self.batch.running:
            return
        self._fill_batch_table(paths)
        reply_format = "png" if self.transfer_mode() == "encoded" else None
        self.batch = Batch(self.client, paths, self.editor.steps(), lambda p: self._payload(p)[0], reply_format=reply_format, parent=self)
        self.batch.itemChanged.connect(self._batch_item_changed)
        self.batch.finished.connect(self._batch_finished)
        self.batch_cancel.setEnabled(True)
        self.batch_button.setEnabled(False)
        self.tabs.setCurrentIndex(1)
        self.batch.start()

    def cancel_batch(self) -> None:
        if self.batch is not None and self.batch.running:
            self.batch_summary.setText("cancelling…")
            self.batch.cancel()

    def _batch_item_changed(self, row: int) -> None:
        assert self.batch is not None
        item = self.batch.items[row]
        detail = f"{item.elapsed:.2f} s, {item.message}" if item.elapsed else item.message
        self.batch_table.setItem(row, 1, QTableWidgetItem(item.status))
        self.batch_table.setItem(row, 2, QTableWidgetItem(detail))
        self.batch_progress.setValue(self.batch.finished_count)

    def _batch_finished(self, summary: str) -> None:
        self.batch_cancel.setEnabled(False)
        self.batch_button.setEnabled(True)
        self.batch_summary.setText(summary)
        self.notify(summary, "ok")

    def show_batch_item(self, row: int) -> None:
        if self.batch is None or not 0 <= row < len(self.batch.items):
            return
        item = self.batch.items[row]
        if self.open_image(item.path) and item.result is not None:
            self.result = result_array(item.result.image)
            self.result_view.set_image(self.result)
            self._show_results(item.result.results)

    # -- telling the user -------------------------------------------------------------------

    def notify(self, message: str, level: str = "ok") -> None:
        """Status bar, the in-window notice, and a system notification when the window is not active."""
        colors = {"ok": ("#e6f4e6", "#1b5e20"), "warn": ("#fff4e0", "#8a5300"), "error": ("#fde8e8", "#8b1a1a")}
        background, color = colors[level]
        self.notice.setStyleSheet(f"background:{background}; color:{color}; padding:6px; border-radius:4px;")
        self.notice.setText(message)
        self.notice.setProperty("level", level)
        self.notice.show()
        self.statusBar().showMessage(message, 10000)
        if not self.isActiveWindow() and QSystemTrayIcon.isSystemTrayAvailable():
            if self._tray is None:
                self._tray = QSystemTrayIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon), self)
            self._tray.show()
            icon = QSystemTrayIcon.MessageIcon.Information if level == "ok" else QSystemTrayIcon.MessageIcon.Warning
            self._tray.showMessage("zmqproc viewer", message, icon, 5000)
