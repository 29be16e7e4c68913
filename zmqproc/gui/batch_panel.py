"""The Batch tab: the files and how each one went, where the results are written, and the batch's buttons."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..client.pipeline import PipelineSpec
from ..formats import TABLE
from .batch import CANCELLED, DONE, FAILED, Batch
from .helpers import DEFAULT_PATTERN, BatchOutput, check_pattern
from .qt_client import QtClient

STATUS_COLORS = {DONE: "#1b5e20", FAILED: "#8b1a1a", CANCELLED: "#8a5300"}
VISIBLE_ROWS = 6


def batch_level(counts: dict[str, int]) -> str:
    """How a finished batch is told: ok when every file is done, error when one failed, warn when some were cancelled."""
    return "error" if counts[FAILED] else "warn" if counts[CANCELLED] else "ok"


def default_folder() -> Path:
    """A fresh folder for one batch's results when the user chose none (under the user's cache)."""
    base = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation) or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("batch-%Y%m%d-%H%M%S-"), dir=base))


class BatchPanel(QWidget):
    """``showItem(row)`` when a row is double-clicked; ``finished(summary, level)`` when a batch ends."""

    showItem = Signal(int)
    finished = Signal(str, str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.batch: Batch | None = None
        self.paths: list[str] = []
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["File", "Status", "Details"])
        for column, mode in enumerate((QHeaderView.ResizeMode.ResizeToContents,) * 2 + (QHeaderView.ResizeMode.Stretch,)):
            self.table.horizontalHeader().setSectionResizeMode(column, mode)  # whole file names, the details take the rest
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        rows = self.table.verticalHeader().defaultSectionSize() * VISIBLE_ROWS
        self.table.setMinimumHeight(rows + self.table.horizontalHeader().sizeHint().height() + 4)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.showItem.emit(row))
        self.folder = QLineEdit(str(settings.value("batch/folder", "")))
        self.folder.setPlaceholderText("a new cache folder")
        self.folder.setToolTip("where results are written; empty: a new folder in the cache for each batch (Save all results copies them)")
        browse = QPushButton("…")
        browse.clicked.connect(self._choose_folder)
        self.pattern = QLineEdit(str(settings.value("batch/pattern", DEFAULT_PATTERN)))
        self.pattern.setToolTip("fields: {stem} (the file's name), {pipeline} (its ops), {ext}, {index}")
        self.format = QComboBox()
        for fmt in TABLE:
            self.format.addItem(fmt.name, fmt.name)
        self.format.setCurrentIndex(max(0, self.format.findData(settings.value("batch/format", "png"))))
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Write results to", folder_row)
        form.addRow("File names", self.pattern)
        form.addRow("Format", self.format)
        self.progress = QProgressBar()
        self.start_button = QPushButton("Process batch")
        self.cancel_button = QPushButton("Cancel")
        self.retry_button = QPushButton("Retry failed")
        self.save_button = QPushButton("Save all results…")
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.retry_button, self.save_button):
            buttons.addWidget(button)
        self.summary = QLabel("Open several files or a folder to process them as a batch.")
        self.summary.setWordWrap(True)
        side = QVBoxLayout()  # beside the table: the table keeps the height for its rows
        side.addLayout(form)
        side.addLayout(buttons)
        side.addWidget(self.progress)
        side.addWidget(self.summary, 1)
        layout = QHBoxLayout(self)
        layout.addWidget(self.table, 3)
        layout.addLayout(side, 2)
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button.clicked.connect(self.retry_failed)
        self.save_button.clicked.connect(self._save_all_dialog)
        self._buttons()

    # -- the files ------------------------------------------------------------------

    def set_paths(self, paths: list[str]) -> None:
        self.paths = list(paths)
        self.table.setRowCount(len(paths))
        for row, path in enumerate(paths):
            self._set_row(row, Path(path).name, "waiting", "")
        self.progress.setRange(0, max(1, len(paths)))
        self.progress.setValue(0)
        self._say(f"{len(paths)} files ready: Process batch (Ctrl+B) sends them all.", "")
        self._buttons()

    def output(self) -> BatchOutput:
        """Where this batch writes (ValueError with a sentence for a bad pattern)."""
        text = self.folder.text().strip()
        return BatchOutput(
            Path(text).expanduser() if text else default_folder(), check_pattern(self.pattern.text().strip()), self.format.currentData()
        )

    # -- running --------------------------------------------------------------------

    def start(self, client: QtClient, pipeline: PipelineSpec, load: Callable[[str], Any]) -> Batch | None:
        """Start a batch of the files; None (with the reason shown) when it cannot start."""
        if not self.paths or (self.batch is not None and self.batch.running):
            return None
        try:
            output = self.output()
        except ValueError as exc:
            self._say(str(exc), "error")
            return None
        self.settings.setValue("batch/folder", self.folder.text().strip())
        self.settings.setValue("batch/pattern", self.pattern.text().strip())
        self.settings.setValue("batch/format", self.format.currentData())
        if self.batch is not None:
            self.batch.close()
        self.set_paths(self.paths)
        self.batch = Batch(client, self.paths, pipeline, load, output, parent=self)
        self.batch.itemChanged.connect(self._item_changed)
        self.batch.finished.connect(self._finished)
        self.batch.start()
        if self.batch.running:
            self._say(f"processing {len(self.paths)} files…", "")
        self._buttons()
        return self.batch

    def cancel(self) -> None:
        if self.batch is not None and self.batch.running:
            self._say("cancelling…", "")
            self.batch.cancel()

    def retry_failed(self) -> None:
        if self.batch is not None and self.batch.retry_failed():
            self._say("sending the failed files again…", "")
            self._buttons()

    def save_all(self, folder: Path) -> int:
        """Copy the results written so far into ``folder``, named by the pattern, in the format chosen."""
        assert self.batch is not None
        try:
            target = BatchOutput(folder, check_pattern(self.pattern.text().strip()), self.format.currentData())
        except ValueError as exc:
            self._say(str(exc), "error")
            return 0
        copied = self.batch.save_all(target)
        self._say(f"{copied} results saved in {folder}.", "ok")
        return copied

    def close_batch(self) -> None:
        if self.batch is not None:
            self.batch.close()

    # -- view -------------------------------------------------------------------------

    def _item_changed(self, row: int) -> None:
        assert self.batch is not None
        item = self.batch.items[row]
        detail = f"{item.elapsed:.2f} s, {item.message}" if item.elapsed and item.message else item.message
        if item.output is not None:
            detail += f" → {item.output.name}"
        self._set_row(row, Path(item.path).name, item.status, detail)
        self.progress.setValue(self.batch.finished_count)
        if self.batch.running:  # the label follows the rows, never a stale "files ready"
            counts = self.batch.counts()
            failed = f", {counts['failed']} failed" if counts["failed"] else ""
            self._say(f"{counts['done']} done{failed} of {len(self.batch.items)}…", "")

    def _finished(self, summary: str) -> None:
        assert self.batch is not None
        level = batch_level(self.batch.counts())
        self._say(summary, level)
        self._buttons()
        self.finished.emit(summary, level)

    def _set_row(self, row: int, name: str, status: str, detail: str) -> None:
        for column, text in enumerate((name, status, detail)):
            cell = QTableWidgetItem(text)
            if column == 1 and status in STATUS_COLORS:
                cell.setForeground(QColor(STATUS_COLORS[status]))
            self.table.setItem(row, column, cell)

    def _say(self, text: str, level: str) -> None:
        colors = {"ok": "#1b5e20", "warn": "#8a5300", "error": "#8b1a1a"}
        self.summary.setText(text)
        self.summary.setProperty("level", level)
        self.summary.setStyleSheet(f"color:{colors[level]}; font-weight:bold;" if level else "")

    def _buttons(self) -> None:
        running = self.batch is not None and self.batch.running
        self.start_button.setEnabled(bool(self.paths) and not running)
        self.cancel_button.setEnabled(running)
        counts = self.batch.counts() if self.batch is not None else {FAILED: 0, CANCELLED: 0, DONE: 0}
        self.retry_button.setEnabled(not running and bool(counts[FAILED] + counts[CANCELLED]))
        self.save_button.setEnabled(not running and bool(counts[DONE]))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Write batch results to", self.folder.text() or str(Path.home()))
        if folder:
            self.folder.setText(folder)

    def _save_all_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save all results to", str(Path.home()))
        if folder:
            self.save_all(Path(folder))
