"""The viewer's main window: layout and wiring of the compare view, the pipeline editor, the batch tab and the connection.

What each part does lives in its own module (compare, pipeline_editor,
batch_panel, connection_control, messages); here are the menus and shortcuts,
opening and saving files, and one job at a time: Process (Ctrl+R), or Live,
where every parameter change sends the pipeline again after a short pause and a
newer request supersedes the one in flight. Videos and cameras play in the
:class:`~zmqproc.gui.player.Player` bar.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QInputDialog,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QSplitter,
    QStyle,
    QSystemTrayIcon,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .. import samples
from ..client.pipeline import to_text
from ..client.replies import Processed
from ..client.tiles import Tile
from ..client.transfer import FILE, PNG, RAW, Choice, Ratios, choose, png_holds
from ..errors import ProcessingError, TooLarge
from ..formats import ENCODED_FORMATS, SUFFIXES, TABLE, for_path
from ..images import VIDEO_CODECS, encode_image, png_ratio, sniff_format
from ..protocol import Step
from .batch_panel import BatchPanel
from .compare import CompareView, DisplayRangeDialog
from .connection import ConnectionSettings, string_list
from .connection_control import ConnectionControl
from .frame_reader import camera_source
from .helpers import (
    expand_paths,
    neighbour,
    pipeline_problems,
    pixel_type_problem,
    read_file,
    read_image,
    result_array,
    result_rows,
    results_csv,
    shapes,
)
from .histogram import HistogramPanel
from .messages import explain
from .pipeline_editor import PipelineEditor, load_pipeline, read_preset
from .player import VIDEO_FILTER, Player
from .qt_client import QtClient
from .tiled import WORTH_ASKING, TiledProcess
from .transfer_bar import TransferBar
from .views import to_qimage

OPEN_FILTER = f"Images ({' '.join('*' + s for s in sorted(SUFFIXES))});;All files (*)"
SAVE_FILTERS = {f"{f.label} (*{f.suffix})": f.suffix for f in TABLE}
TRANSFERS = {
    "auto": "Auto (quickest for the link)",
    "raw": "Raw pixels (fast link)",
    "encoded": "Encoded file (slow link, e.g. SSH)",
}
LIVE_DELAY_MS = 150  # Live: a parameter change waits this long for the next one before the pipeline is sent
MAX_RECENT = 8
WAYS = {RAW: "raw pixels", PNG: "PNG", FILE: "the file"}  # how Auto sent an image and had its result back, in words
DEFAULT_PIPELINE = "grayscale;gaussian_blur:ksize=5"


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
        chosen = connection or ConnectionSettings.load(self.settings)
        if endpoints:
            chosen = ConnectionSettings(endpoints=list(endpoints))
        self.client = QtClient(timeout=timeout, parent=self)
        self.control = ConnectionControl(self.client, chosen, self)
        self.path: str | None = None
        self.original: np.ndarray | None = None
        self.original_in_memory = False  # the original is a former result ("Use result as input"), not its file
        self.result: np.ndarray | None = None
        self.results: dict[str, Any] = {}  # what the ops found, as the last result's reply said
        self._result_pipeline = ""  # the pipeline that made the result shown
        self._result_links: list[tuple[str, int] | None] = []  # per row of the Results tab: the overlay it is, if drawn
        self.ops: list[dict[str, Any]] = []
        self._job: tuple[str, float, str] | None = None  # request id ("" while tiles go), started, pipeline text
        self._tiled: TiledProcess | None = None  # the job, when it goes as tiles
        self.last_choice: Choice | None = None  # how Auto sent the last image whole (or would have: tiles go raw)
        self._ratios = Ratios()  # how small PNG made each pipeline's results: the transfer policy's memory
        self._tray: QSystemTrayIcon | None = None
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)
        self._live_timer.timeout.connect(lambda: self.process(live=True))
        self._build()
        self._restore()
        self.client.processed.connect(self._on_processed)
        self.client.failed.connect(self._on_failed)
        self.client.transferred.connect(self._on_transferred)
        self.client.opsReceived.connect(self._on_ops)
        self.client.stateChanged.connect(lambda state, _rtt: self.client.request_ops() if state == "connected" and not self.ops else None)
        self.client.serverRestarted.connect(
            lambda _epoch: self.notify(
                "The server restarted; the work it had not answered is being sent again."
                if self.client.in_flight
                else "The server restarted.",
                "warn",
            )
        )
        self.control.notice.connect(self.notify)
        self.control.status.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
        self.control.connect_to(chosen)

    @property
    def connection(self) -> ConnectionSettings:
        return self.control.connection

    @property
    def original_view(self) -> Any:
        return self.compare.original_view

    @property
    def result_view(self) -> Any:
        return self.compare.result_view

    # -- building -------------------------------------------------------------------

    def _build(self) -> None:
        self.compare = CompareView()
        self.compare.filesDropped.connect(lambda paths: self.open_files(expand_paths(paths)))
        self.notice = QLabel("")
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.hide()
        self.results_list = QListWidget()
        self.results_list.currentRowChanged.connect(
            lambda row: self.compare.highlight(self._result_links[row] if 0 <= row < len(self._result_links) else None)
        )
        self.compare.overlayClicked.connect(self._select_result)
        self.batch_panel = BatchPanel(self.settings)
        self.batch_panel.showItem.connect(self.show_batch_item)
        self.batch_panel.finished.connect(self.notify)
        self.batch_panel.start_button.clicked.connect(self.start_batch)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.results_list, "Results")
        self.tabs.addTab(self.batch_panel, "Batch")
        self.histogram = HistogramPanel()
        self.tabs.addTab(self.histogram, "Histogram")
        for view in (self.compare.original_view, self.compare.result_view):
            view.regionChosen.connect(lambda region, v=view: self._region_chosen(v, region))
        self.compare.original_view.viewChanged.connect(self._update_histogram)
        self.compare.original_view.scaleChanged.connect(self._update_histogram)
        center = QSplitter(Qt.Orientation.Vertical)  # the user decides how much room the tabs get
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.notice)
        top_layout.addWidget(self.compare, 1)
        self.player = Player(self.client, self.compare, lambda: self.editor.steps(), lambda: self.transfer_mode() == "encoded")
        self.player.notice.connect(self.notify)
        top_layout.addWidget(self.player)
        center.addWidget(top)
        center.addWidget(self.tabs)
        center.setStretchFactor(0, 3)
        center.setSizes([640, 230])

        self.editor = PipelineEditor()
        self.editor.changed.connect(self._pipeline_changed)
        self.live = QCheckBox("Live: process on every change")
        self.live.setToolTip("each parameter change sends the pipeline again; a newer request supersedes the older")
        self.live.toggled.connect(lambda on: self._pipeline_changed() if on else None)
        self.transfer = QComboBox()
        for key, text in TRANSFERS.items():
            self.transfer.addItem(text, key)
        self.process_button = QPushButton("Process (Ctrl+R)")
        self.process_button.setDefault(True)
        self.process_button.clicked.connect(lambda: self.process())
        self.cancel_button = QPushButton("Cancel (Esc)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(QLabel("Pipeline"))
        side_layout.addWidget(self.editor, 1)
        side_layout.addWidget(self.live)
        side_layout.addWidget(QLabel("Transfer"))
        side_layout.addWidget(self.transfer)
        side_layout.addWidget(self.process_button)
        side_layout.addWidget(self.cancel_button)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(side)
        splitter.addWidget(center)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 1060])
        self.setCentralWidget(splitter)
        self.transfer_bar = TransferBar()
        self.statusBar().addPermanentWidget(self.transfer_bar)
        self.statusBar().addPermanentWidget(self.control.label)
        self.transfer_bar.hide()  # until a transfer is worth showing (the status bar shows what it is given)
        self._build_menus()

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
        self._action(file_menu, "Open &video…", self.open_video_dialog, "Ctrl+Shift+O")
        self._action(file_menu, "Open c&amera…", self.open_camera_dialog)
        self.samples_menu = file_menu.addMenu("Open &sample")
        for name, (_, what) in samples.SAMPLES.items():
            self._action(self.samples_menu, f"{name}: {what}", lambda n=name: self.open_sample(n))
        self.recent_menu = file_menu.addMenu("Recent files")
        self._action(file_menu, "&Next image in folder", lambda: self.open_neighbour(1), "PgDown")
        self._action(file_menu, "&Previous image in folder", lambda: self.open_neighbour(-1), "PgUp")
        file_menu.addSeparator()
        self._action(file_menu, "&Save result as…", self.save_dialog, QKeySequence.StandardKey.Save)
        self._action(file_menu, "&Copy result", self.copy_result, QKeySequence.StandardKey.Copy)
        self._action(file_menu, "&Export results (JSON, CSV)…", self.export_results_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "Load pipeline…", self.load_pipeline_dialog)
        self._action(file_menu, "Save pipeline…", self.save_pipeline_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        edit_menu = bar.addMenu("&Edit")
        self.undo_action = self._action(edit_menu, "&Undo pipeline change", self.editor.undo, QKeySequence.StandardKey.Undo)
        self.redo_action = self._action(edit_menu, "&Redo pipeline change", self.editor.redo, "Ctrl+Shift+Z")
        self._action(edit_menu, "Use result as &input", self.use_result_as_input)
        self.editor.historyChanged.connect(self._history_changed)
        self._history_changed()
        run_menu = bar.addMenu("&Process")
        self._action(run_menu, "&Process image", self.process, "Ctrl+R")
        self._action(run_menu, "Process &batch", self.start_batch, "Ctrl+B")
        self._action(run_menu, "&Cancel", self.cancel, "Esc")
        self._action(run_menu, "&Live", self.live.toggle, "Ctrl+L")
        run_menu.addSeparator()
        self._action(run_menu, "Play / pause &stream", self.player.play_pause, "P")
        self._action(run_menu, "S&tep one frame", self.player.step, ".")
        self._action(run_menu, "Save processed &video…", self.player.save_dialog)
        self._action(run_menu, "Close strea&m", self.player.stop)
        view_menu = bar.addMenu("&View")
        self._action(view_menu, "&Fit", self.compare.fit, "Ctrl+0")
        self._action(view_menu, "&1:1 (100 %)", self.compare.actual_size, "Ctrl+1")
        self._action(view_menu, "Display &range…", lambda: DisplayRangeDialog(self.compare, self).exec())
        self._action(view_menu, "Zoom &in", lambda: self.compare.zoom(1.25), QKeySequence.StandardKey.ZoomIn)
        self._action(view_menu, "Zoom &out", lambda: self.compare.zoom(0.8), QKeySequence.StandardKey.ZoomOut)
        view_menu.addSeparator()
        self._action(view_menu, "&Side by side", lambda: self.compare.set_mode("side"))
        self._action(view_menu, "S&plit", lambda: self.compare.set_mode("split"))
        self._action(view_menu, "F&lick original / result", self.compare.flick, "Space")
        self._action(view_menu, "F&ull screen", self.toggle_full_screen, "F11")
        server_menu = bar.addMenu("&Server")
        self._action(server_menu, "&Connection…", lambda: self.control.dialog(self.settings))
        self._action(server_menu, "&Reload operations", self.client.request_ops)
        self._refresh_recent()

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 880)
        index = self.transfer.findData(self.settings.value("transfer", "auto"))
        self.transfer.setCurrentIndex(max(0, index))
        saved = self.settings.value("pipeline_entries")
        try:
            entries = read_preset(str(saved)) if saved else load_pipeline(str(self.settings.value("pipeline", DEFAULT_PIPELINE)))
        except ValueError:
            entries = []
        self.editor.set_steps(entries)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("transfer", self.transfer.currentData())
        self.settings.setValue("pipeline", self.editor.text())
        self.settings.setValue("pipeline_entries", self.editor.preset())
        self.connection.save(self.settings)
        self.settings.sync()
        self.batch_panel.close_batch()
        self.player.cancel_save()
        self.player.stop()
        self.client.close()
        self.control.close_tunnels()
        super().closeEvent(event)

    def connect_to(self, connection: ConnectionSettings, **kwargs: Any) -> None:
        """Connect directly, or through SSH tunnels (see :class:`ConnectionControl`)."""
        self.control.connect_to(connection, **kwargs)

    def _on_ops(self, ops: list[dict[str, Any]]) -> None:
        self.ops = ops
        self.editor.set_ops(ops)
        self._check_pipeline()

    def _check_pipeline(self, where: str = "") -> None:
        """Say what in the pipeline this server will refuse (an op it does not offer, a value out of its declaration)."""
        problems = pipeline_problems(self.editor.steps(), self.ops)
        if problems:
            self.notify(f"{where}{' '.join(problems)} Fix it in the pipeline before processing.", "warn")

    def _history_changed(self) -> None:
        self.undo_action.setEnabled(self.editor.can_undo())
        self.redo_action.setEnabled(self.editor.can_redo())

    # -- files ----------------------------------------------------------------------------

    def open_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", str(self.settings.value("last_dir", "")), OPEN_FILTER)
        if paths:
            self.open_files(paths)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", str(self.settings.value("last_dir", "")))
        if folder:
            self.open_files(expand_paths([folder]))

    def open_files(self, paths: list[str]) -> None:
        """Show the first image; several files also fill the batch list. ``sample:NAME`` names a shipped sample."""
        try:
            paths = [samples.resolve(p) for p in paths]
        except ValueError as exc:
            self.notify(str(exc), "error")
            return
        if not paths:
            return
        if len(paths) == 1 and Path(paths[0]).suffix.lower() in VIDEO_CODECS:
            self.open_video(paths[0])
            return
        if len(paths) > 1:  # every file goes in the batch list: one that cannot be read fails there, in words
            self.batch_panel.set_paths(paths)
            self.tabs.setCurrentWidget(self.batch_panel)
        any(self.open_image(path) for path in paths)  # shows the first that opens

    def open_video_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", str(self.settings.value("last_dir", "")), VIDEO_FILTER)
        if path:
            self.open_video(path)

    def open_video(self, path: str) -> bool:
        """Play a video file through the pipeline, its processed frames beside the originals."""
        if not self.player.open(path):
            return False
        self.setWindowTitle(f"zmqproc viewer — {Path(path).name}")
        self._remember(path)
        return True

    def open_camera_dialog(self) -> None:
        text, ok = QInputDialog.getText(
            self, "Open camera", "Camera index (0, 1, …) or stream URL (http://…, rtsp://…):", text=str(self.settings.value("camera", "0"))
        )
        if ok:
            self.open_camera(text)

    def open_camera(self, text: str) -> bool:
        """Play a camera (an index, or a stream's URL) live through the pipeline."""
        try:
            source = camera_source(text)
        except ValueError as exc:
            self.notify(str(exc), "error")
            return False
        self.settings.setValue("camera", text.strip())
        if not self.player.open(source):
            return False
        self.setWindowTitle(f"zmqproc viewer — camera {source}")
        return True

    @property
    def batch_paths(self) -> list[str]:
        return self.batch_panel.paths

    @property
    def batch(self) -> Any:
        return self.batch_panel.batch

    def open_image(self, path: str) -> bool:
        try:
            image = read_image(path)
        except ValueError as exc:
            self.notify(f"Cannot open {Path(path).name}: {exc}.", "error")
            return False
        self.player.stop()
        self.path, self.original, self.result, self.original_in_memory = path, image, None, False
        self.compare.set_original(image)
        self._update_histogram()
        self.results_list.clear()
        self.notice.hide()  # what was said of the previous image is not about this one
        self.setWindowTitle(f"zmqproc viewer — {Path(path).name}")
        self.statusBar().showMessage(f"{Path(path).name}: {image.shape[1]}×{image.shape[0]}", 5000)
        self._remember(path)
        if self.live.isChecked():
            self._pipeline_changed()
        return True

    def open_sample(self, name: str) -> None:
        """File → Open sample: the photo, and (connected, with a pipeline) its first result: one click."""
        self.open_files([str(samples.path(name))])
        if self.ops and self.editor.steps() and self.path == str(samples.path(name)):
            self.process()

    def open_neighbour(self, step: int) -> None:
        """PgDn / PgUp: the next or previous image in the folder of the one shown."""
        other = neighbour(self.path, step) if self.path else None
        if other is not None:
            self.open_image(other)

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
        self.open_files(expand_paths([u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]))
        event.acceptProposedAction()

    def save_dialog(self) -> None:
        if self.result is None:
            self.notify("There is no result to save yet.", "warn")
            return
        stem = Path(self.path or "result").stem
        path, chosen = QFileDialog.getSaveFileName(self, "Save result", f"{stem}-processed.png", ";;".join(SAVE_FILTERS))
        if path:
            self.save_result(path, SAVE_FILTERS.get(chosen, ".png"))

    def save_result(self, path: str, default_suffix: str = ".png") -> str | None:
        """Write the result to ``path`` (without an extension: the chosen format's); the path written, or None."""
        if self.result is None:
            return None
        target = Path(path)
        if target.suffix.lower() not in SUFFIXES:
            target = target.with_name(target.name + default_suffix)
        fmt = for_path(target.name)
        assert fmt is not None
        try:
            data = encode_image(self.result, fmt.name)[1]  # refuses what the format cannot hold, rather than convert it
        except ProcessingError:
            holds = " or ".join(f.suffix for f in TABLE if str(self.result.dtype) in f.dtypes)
            self.notify(f"{fmt.label} cannot hold this {self.result.dtype} result without loss: save it as {holds}.", "error")
            return None
        target.write_bytes(bytes(data))
        self.statusBar().showMessage(f"saved {target}", 5000)
        return str(target)

    def copy_result(self) -> None:
        """Ctrl+C: the result as an image on the clipboard."""
        if self.result is None:
            self.notify("There is no result to copy yet.", "warn")
            return
        QGuiApplication.clipboard().setImage(to_qimage(self.result))
        self.statusBar().showMessage("result copied to the clipboard", 3000)

    def load_pipeline_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load pipeline", str(self.settings.value("last_dir", "")), "Pipeline (*.json)")
        if path:
            try:
                self.editor.load_preset(Path(path).read_text())
            except (OSError, ValueError) as exc:
                self.notify(f"Cannot load {Path(path).name}: {exc}", "error")
                return
            self._check_pipeline(f"{Path(path).name}: ")

    def save_pipeline_dialog(self) -> None:
        start = Path(str(self.settings.value("last_dir", "") or Path.home())) / "pipeline.json"
        path, _ = QFileDialog.getSaveFileName(self, "Save pipeline", str(start), "Pipeline (*.json)")
        if path:
            target = Path(path) if path.endswith(".json") else Path(path + ".json")
            target.write_text(self.editor.preset())
            self.statusBar().showMessage(f"saved {target} (also for gui_app.py --pipeline {target.name})", 5000)

    def use_result_as_input(self) -> None:
        """The result becomes the original, to process further."""
        if self.result is None:
            self.notify("There is no result to use yet.", "warn")
            return
        self.original, self.result, self.original_in_memory = self.result, None, True
        self.compare.set_original(self.original)
        self.results_list.clear()
        self.statusBar().showMessage("the result is now the input", 3000)

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    # -- processing -----------------------------------------------------------------------

    def transfer_mode(self) -> str:
        """``raw`` or ``encoded`` for a stream's frames: what the selector says, ``auto`` meaning encoded through an SSH
        tunnel (a single image's or a batch's Auto goes by the link as measured: :meth:`_choose`)."""
        mode = str(self.transfer.currentData())
        return ("encoded" if self.connection.use_ssh else "raw") if mode == "auto" else mode

    def _choose(self, path: str, image: np.ndarray, pipeline: str = "") -> Choice | None:
        """Auto: the library's transfer policy on the link as the client measured it (None: raw or encoded was chosen).

        Up: the opened file's own bytes (when the image is that file's, not a former result), raw, or PNG made here;
        down: raw or PNG; whichever way, the result shown is the decoded pixels (lossless)."""
        if self.transfer.currentData() != "auto":
            return None
        file = None
        if not self.original_in_memory or image is not self.original:
            try:
                with open(path, "rb") as f:
                    fmt = sniff_format(f.read(16))
                file = (fmt, Path(path).stat().st_size) if fmt in ENCODED_FORMATS else None  # what a server decodes
            except (OSError, ValueError):
                file = None
        down_ratio = self._ratios.get(pipeline)  # how small this pipeline's last result came as PNG
        return choose(
            self.client.link(), image.nbytes, file=file, ratio=lambda: png_ratio(image), png_ok=png_holds(image), down_ratio=down_ratio
        )

    def _payload(self, path: str, image: np.ndarray | None = None, choice: Choice | None = None) -> np.ndarray | bytes:
        """What to send: the pixels (raw), or an encoded file (the file itself, or the in-memory image as PNG); with
        Auto (``choice``, or chosen here for a batch's file) what the policy says."""
        if self.transfer.currentData() == "auto":
            if image is None:
                image = read_image(path)
            choice = choice or self._choose(path, image)
            assert choice is not None
            if choice.up == FILE:
                return read_file(path).tobytes()
            return bytes(encode_image(image, PNG)[1]) if choice.up == PNG else image
        if self.transfer_mode() != "encoded":
            return read_image(path) if image is None else image
        if image is not None and self.original_in_memory:
            return bytes(encode_image(image, "png" if image.dtype != np.float32 else "tiff")[1])  # kept as it is
        return read_file(path).tobytes()

    def process(self, live: bool = False) -> None:
        """Send the original through the pipeline; a job in flight is superseded (cancelled, its reply ignored)."""
        if self.player.active:
            if not live:
                self.notify("A stream plays: its frames go through the pipeline as they come. Pause (P), step (.) a frame.", "warn")
            return
        if self.original is None or self.path is None:
            if not live:
                self.notify("Open an image first.", "warn")
            return
        steps = self.editor.steps()
        if not steps:
            if not live:
                self.notify("The pipeline is empty: add a step first.", "warn")
            return
        problem = pixel_type_problem(steps, self.ops, self.original)
        if problem is not None:
            self.notify(problem, "error")
            return
        self._withdraw()
        choice = self.last_choice = self._choose(self.path, self.original, to_text(steps))
        self.transfer_bar.start(time.monotonic())
        if self.original.shape[0] * self.original.shape[1] >= WORTH_ASKING:  # perhaps as tiles: the servers say
            # tiles travel raw: they share the workers only when raw is how the image would go anyway
            share = (choice.up, choice.down) == (RAW, RAW) if choice is not None else self.transfer_mode() == "raw"
            tiled = self._tiled = TiledProcess(self.client, self.original, steps, share=share, parent=self)
            self._job = ("", time.monotonic(), to_text(steps))
            tiled.whole.connect(lambda: self._send_whole(steps, choice) if tiled is self._tiled else None)
            tiled.tilePlaced.connect(lambda tile: self._tile_arrived(tiled, tile))
            tiled.finished.connect(lambda processed, error: self._tiles_finished(tiled, processed, error))
        else:
            self._send_whole(steps, choice)
        self.cancel_button.setEnabled(True)
        if self.notice.property("level") == "error":
            self.notice.hide()  # an old error is not about this job
        self.statusBar().showMessage(f"processing {Path(self.path).name}… (Esc cancels)")

    def _send_whole(self, steps: list[Step], choice: Choice | None) -> None:
        assert self.path is not None and self.original is not None
        self._tiled = None
        try:
            payload = self._payload(self.path, self.original, choice)
        except (OSError, ValueError) as exc:
            self._end_job()
            self.notify(f"Cannot send {Path(self.path).name}: {explain(exc)}", "error")
            return
        reply_format: str | None
        if choice is not None:  # raw asked for even when a file goes up (its own format may be lossy)
            reply_format = "png" if choice.down == PNG else "raw"
        else:
            reply_format = "png" if self.transfer_mode() == "encoded" else None
        started = self._job[1] if self._job is not None else time.monotonic()
        self._job = (self.client.process(payload, steps, reply_format=reply_format), started, to_text(steps))

    def _withdraw(self) -> None:
        """The job in flight is superseded: its request or its tiles withdrawn, whatever comes of them ignored."""
        if self._tiled is not None:
            tiled, self._tiled = self._tiled, None
            tiled.cancel()
        elif self._job is not None and self._job[0]:
            self.client.cancel(self._job[0])
        self._job = None

    def _on_transferred(self, request_id: str, progress: Any) -> None:
        """A part of the job's image or result moved: the bar and the status text follow it."""
        if self._job is None or request_id != self._job[0]:
            return
        text = self.transfer_bar.moved(progress)
        if text is not None:
            self.statusBar().showMessage(f"{Path(self.path or '').name}: {text} (Esc cancels)")

    def _tile_arrived(self, tiled: TiledProcess, tile: Tile) -> None:
        if tiled is not self._tiled or tiled.job is None:
            return
        done, total = tiled.progress
        if done == 1:  # the result appears, black where no tile has come yet
            image = tiled.job.assembly.image
            assert image is not None
            self.result = image
            self.compare.set_result(image, None, f"{total} tiles arriving")
        else:
            self.compare.repaint_result(tile.core)
        self.statusBar().showMessage(f"processing {Path(self.path or '').name}: {done} of {total} tiles… (Esc cancels)")

    def _tiles_finished(self, tiled: TiledProcess, processed: Processed | None, error: BaseException | None) -> None:
        if tiled is not self._tiled or self._job is None:
            return  # superseded
        _, started, pipeline = self._job
        self._end_job()
        if processed is None:
            assert error is not None
            self._finish(False, self._too_many_pixels(error) or explain(error))
            return
        assert tiled.job is not None
        tiles = f"{len(tiled.job.tiles)} tiles of {tiled.job.size} px"
        self._result_pipeline = pipeline
        self.show_result(result_array(processed.image), processed.results, processed.result_kinds, f"raw pixels, {tiles}")
        elapsed = time.monotonic() - started
        self._finish(True, f"Done: {pipeline} in {elapsed * 1000:.0f} ms as {tiles} (server {processed.server_ms:.0f} ms in all).")

    def _pipeline_changed(self) -> None:
        self.player.pipeline_changed()
        self.compare.set_stale(self.result is not None and self.editor.text() != self._result_pipeline)
        if self.live.isChecked():
            self._live_timer.start()  # restarted by every change: sent once the user pauses

    def cancel(self) -> None:
        """Esc: withdraw the running request (the server stops it) and the batch."""
        self._live_timer.stop()
        if self._tiled is not None:
            self._tiled.cancel()  # ends with Cancelled, as a request does
        elif self._job is not None:
            self.client.cancel(self._job[0])
        self.batch_panel.cancel()
        self.player.cancel_save()

    def _on_processed(self, request_id: str, result: Any) -> None:
        if self._job is None or request_id != self._job[0]:
            return  # a superseded or cancelled request's late reply
        _, started, pipeline = self._job
        self._end_job()
        self._result_pipeline = pipeline
        try:
            pixels = result_array(result.image)
            if isinstance(result.image, bytes) and self.last_choice is not None and self.last_choice.down == PNG:
                self._ratios.learn(pipeline, len(result.image), pixels.nbytes)
            self.show_result(pixels, result.results, result.result_kinds, self._format_of(result.image))
        except Exception as exc:  # whatever the result holds, the job ends with a message
            self._finish(False, explain(exc))
            return
        elapsed = time.monotonic() - started
        choice, way = self.last_choice, ""
        if choice is not None and (choice.up, choice.down) != (RAW, RAW):  # Auto chose smaller than raw for this link
            way = f" Sent as {WAYS[choice.up]}, back as {WAYS[choice.down]}."
        self._finish(True, f"Done: {pipeline} in {elapsed * 1000:.0f} ms (server {result.server_ms:.0f} ms).{way}")

    def _on_failed(self, request_id: str, error: BaseException) -> None:
        if self._job is not None and request_id == self._job[0]:
            self._end_job()
            self._finish(False, self._too_many_pixels(error) or explain(error))

    def _too_many_pixels(self, error: BaseException) -> str | None:
        """A raw frame refused for its bytes, of an image that a file of it would be refused for too (its pixels): the
        advice that works, not "send it as an encoded file"."""
        if not isinstance(error, TooLarge) or error.details.get("limit") != "frame_bytes" or self.original is None:
            return None
        limit, pixels = error.details.get("max_pixels"), self.original.shape[0] * self.original.shape[1]
        return explain(TooLarge.over("pixels", pixels, limit, "")) if isinstance(limit, int) and pixels > limit else None

    @staticmethod
    def _format_of(image: np.ndarray | bytes) -> str:
        if isinstance(image, np.ndarray):
            return "raw pixels"
        try:
            return f"{sniff_format(image[:16])} from the server"
        except ValueError:
            return "encoded"

    def _region_chosen(self, view: Any, region: tuple[int, int, int, int] | None) -> None:
        """A rectangle drawn with Ctrl+drag in either view: shown in both (each in its own image's pixels), and its
        histogram; a Ctrl+click clears it (the histogram is of the part in view again)."""
        views = (self.compare.original_view, self.compare.result_view)
        for other in views:
            if other is view or region is None or other.image is None or view.image is None:
                other.set_region(region if other is view or region is None else None)
                continue
            sy, sx = other.image.shape[0] / view.image.shape[0], other.image.shape[1] / view.image.shape[1]
            other.set_region((int(region[0] * sx), int(region[1] * sy), max(1, int(region[2] * sx)), max(1, int(region[3] * sy))))
        self._update_histogram()

    def _update_histogram(self) -> None:
        view = self.compare.original_view
        drawn = view.region()
        self.histogram.show_region(self.original, self.result, drawn or view.visible_region(), "rectangle" if drawn else "in view")

    def _select_result(self, kind: str, index: int) -> None:
        """An overlay was clicked: its row in the Results tab (shown), and so its highlight."""
        if (kind, index) in self._result_links:
            self.tabs.setCurrentWidget(self.results_list)
            self.results_list.setCurrentRow(self._result_links.index((kind, index)))

    def export_results_dialog(self) -> None:
        if not self.results:
            self.notify("No results to export: process an image whose ops find something first.", "warn")
            return
        stem = Path(self.path).stem if self.path else "results"
        path, chosen = QFileDialog.getSaveFileName(self, "Export results", f"{stem}-results.json", "JSON (*.json);;CSV (*.csv)")
        if path:
            self.export_results(path if Path(path).suffix else path + (".csv" if "CSV" in chosen else ".json"))

    def export_results(self, path: str) -> None:
        """Write what the ops found: JSON as the server sent it, or CSV (key, index, value)."""
        text = results_csv(self.results) if path.lower().endswith(".csv") else json.dumps(self.results, indent=2) + "\n"
        try:
            Path(path).write_text(text)
        except OSError as exc:
            self.notify(f"Cannot write {Path(path).name}: {exc.strerror}.", "error")
            return
        self.notify(f"Results written to {path}.", "ok")

    def show_result(self, image: np.ndarray, results: dict[str, Any], kinds: dict[str, str], how: str = "") -> None:
        """The result in the views (zoom kept), what the ops found drawn over it and listed."""
        self.result = image
        self.compare.set_result(image, shapes(results, kinds), how)
        self.results = results
        self._update_histogram()
        self.results_list.clear()
        self._result_links = []
        for text, link in result_rows(results, kinds) or [("(no results beside the image)", None)]:
            self.results_list.addItem(text)
            self._result_links.append(link)

    def _end_job(self) -> None:
        self._job, self._tiled = None, None
        self.transfer_bar.stop()
        self.cancel_button.setEnabled(False)

    def _finish(self, ok: bool, message: str) -> None:
        self.notify(message, "ok" if ok else "error")
        self.jobFinished.emit(ok, message)

    # -- batch ----------------------------------------------------------------------------

    def start_batch(self) -> None:
        """Ctrl+B: every file in the batch list through the pipeline, results written as they arrive."""
        if not self.batch_panel.paths:
            self.notify("Open several files (or a folder) to run a batch.", "warn")
            return
        if self.batch_panel.start(self.client, self.editor.steps(), self._payload) is not None:
            self.tabs.setCurrentWidget(self.batch_panel)

    def cancel_batch(self) -> None:
        self.batch_panel.cancel()

    def show_batch_item(self, row: int) -> None:
        """A double-clicked row: its file, and its result read back from where it was written."""
        batch = self.batch_panel.batch
        if batch is None or not 0 <= row < len(batch.items):
            return
        item = batch.items[row]
        if not self.open_image(item.path) or item.output is None:
            return
        written = cv2.imread(str(item.output), cv2.IMREAD_UNCHANGED)
        if written is None:
            self.notify(f"The result {item.output.name} is no longer readable.", "warn")
            return
        self.show_result(written, item.results, item.result_kinds, f"written to {item.output}")

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
