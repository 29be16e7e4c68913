"""The Histogram tab: per-channel histograms and statistics of the part of the image in view, or of a rectangle drawn
with Ctrl+drag, for the original or the result."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPolygonF
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from .helpers import ChannelStats, Region, region_stats

GRAY = QColor(80, 80, 80)
COLORS = {"B": QColor(60, 120, 255), "G": QColor(40, 190, 70), "R": QColor(230, 60, 50), "A": QColor(150, 150, 150), "v": GRAY}


class HistogramPlot(QWidget):
    """The channels' histograms, each scaled to its own highest bin (the square root of the counts, so small bins show)."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: list[ChannelStats] = []
        self.setMinimumHeight(90)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(250, 250, 250))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        for channel in self.channels:
            heights = np.sqrt(channel.counts.astype(np.float64))
            top = heights.max() or 1.0
            n = len(heights)
            points = [QPointF(0, h)] + [QPointF(i * w / n, h - heights[i] / top * (h - 4)) for i in range(n)] + [QPointF(w, h)]
            color = QColor(COLORS.get(channel.name, GRAY))
            color.setAlpha(90)
            painter.setPen(COLORS.get(channel.name, GRAY))
            painter.setBrush(color)
            painter.drawPolygon(QPolygonF(points))
        painter.end()


class HistogramPanel(QWidget):
    """``show_region(original, result, region, what)``: what the tab shows; the combo box picks original or result."""

    def __init__(self) -> None:
        super().__init__()
        self.which = QComboBox()
        self.which.addItem("Original", "original")
        self.which.addItem("Result", "result")
        self.where = QLabel("")
        self.plot = HistogramPlot()
        self.table = QLabel("")
        self.table.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table.setTextFormat(Qt.TextFormat.RichText)
        top = QHBoxLayout()
        top.addWidget(self.which)
        top.addWidget(self.where, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.table)
        self._images: dict[str, np.ndarray | None] = {"original": None, "result": None}
        self._region: Region | None = None
        self._what = ""
        self.which.currentIndexChanged.connect(lambda _i: self._refresh())

    def show_region(self, original: np.ndarray | None, result: np.ndarray | None, region: Region | None, what: str) -> None:
        self._images = {"original": original, "result": result}
        self._region, self._what = region, what
        if self.isVisible():
            self._refresh()

    def showEvent(self, event: object) -> None:  # noqa: N802 (Qt's name): computed only when looked at
        super().showEvent(event)  # type: ignore[arg-type]
        self._refresh()

    def _refresh(self) -> None:
        image = self._images[str(self.which.currentData())]
        if image is None or self._region is None:
            self.plot.channels = []
            self.where.setText("no image" if image is None else "")
            self.table.setText("")
            self.plot.update()
            return
        x, y, w, h = self._region
        # the region is in the original's pixels: the result may be of another size
        sy, sx = image.shape[0] / self._images_shape()[0], image.shape[1] / self._images_shape()[1]
        region = (int(x * sx), int(y * sy), max(1, int(w * sx)), max(1, int(h * sy)))
        self.plot.channels = region_stats(image, region)
        self.where.setText(f"{self._what}: {region[2]}×{region[3]} at {region[0]}, {region[1]} ({image.dtype})")
        rows = "".join(
            f"<tr><td><b>{c.name}</b></td><td>{_n(c.minimum)}</td><td>{_n(c.maximum)}</td><td>{_n(c.mean)}</td><td>{_n(c.std)}</td></tr>"
            for c in self.plot.channels
        )
        self.table.setText(f"<table cellspacing=6><tr><td></td><td>min</td><td>max</td><td>mean</td><td>std</td></tr>{rows}</table>")
        self.plot.update()

    def _images_shape(self) -> tuple[int, int]:
        original = self._images["original"]
        reference = original if original is not None else self._images["result"]
        assert reference is not None
        return reference.shape[0], reference.shape[1]


def _n(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"
