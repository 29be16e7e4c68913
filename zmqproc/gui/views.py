"""Image views: fitted by default, zoom with the wheel, fit / 100 %, pan by dragging; two views move together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPen, QPixmap, QTransform, QWheelEvent
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView, QWidget


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage over an 8-bit gray, BGR or BGRA array (copied, so the array may go away)."""
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8:
        arr = np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.ascontiguousarray(arr[:, :, 0])
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        fmt = QImage.Format.Format_Grayscale8
    elif arr.shape[2] == 3:
        fmt = QImage.Format.Format_BGR888
    else:
        arr = np.ascontiguousarray(arr[:, :, [2, 1, 0, 3]])
        fmt = QImage.Format.Format_RGBA8888
    return QImage(arr.data, w, h, arr.strides[0], fmt).copy()


class ImageView(QGraphicsView):
    """One image; ``viewChanged`` fires when the user zooms or pans, so a twin view can follow."""

    viewChanged = Signal()
    ZOOM_STEP = 1.25

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QColor(48, 48, 48))
        self.setRenderHints(self.renderHints())
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._item)
        self._boxes: list[QGraphicsRectItem] = []
        self._fitted = True
        self._placeholder = self.scene().addText(placeholder)
        self._placeholder.setDefaultTextColor(QColor(200, 200, 200))
        self.horizontalScrollBar().valueChanged.connect(lambda _v: self.viewChanged.emit())
        self.verticalScrollBar().valueChanged.connect(lambda _v: self.viewChanged.emit())

    def has_image(self) -> bool:
        return not self._item.pixmap().isNull()

    def set_image(self, image: np.ndarray | None) -> None:
        self.set_boxes(())
        self._placeholder.setVisible(image is None)
        self._item.setPixmap(QPixmap() if image is None else QPixmap.fromImage(to_qimage(image)))
        rect = self._item.boundingRect() if image is not None else self._placeholder.boundingRect()
        self.scene().setSceneRect(rect)
        if self._fitted:
            self.fit()

    def set_boxes(self, boxes: Sequence[Sequence[int]]) -> None:
        """Outline structured results (face boxes ``[x, y, w, h]``) over the image."""
        for item in self._boxes:
            self.scene().removeItem(item)
        pen = QPen(QColor(255, 200, 0), 3)
        pen.setCosmetic(True)
        self._boxes = [self.scene().addRect(QRectF(x, y, w, h), pen) for x, y, w, h in boxes]

    def fit(self) -> None:
        self._fitted = True
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.viewChanged.emit()

    def actual_size(self) -> None:
        self._fitted = False
        self.setTransform(QTransform())
        self.viewChanged.emit()

    def zoom(self, factor: float) -> None:
        self._fitted = False
        self.scale(factor, factor)
        self.viewChanged.emit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt's name)
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(self.ZOOM_STEP**steps)

    def resizeEvent(self, event) -> None:  # noqa: N802, ANN001
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def follow(self, other: ImageView) -> None:
        """Take the other view's zoom and scroll position."""
        if self.transform() != other.transform():
            self.setTransform(other.transform())
        self._fitted = other._fitted
        self.horizontalScrollBar().setValue(other.horizontalScrollBar().value())
        self.verticalScrollBar().setValue(other.verticalScrollBar().value())


def synchronize(a: ImageView, b: ImageView) -> None:
    """Zoom and pan one view, the other follows (the guard stops the echo)."""
    busy = [False]

    def mirror(src: ImageView, dst: ImageView) -> None:
        if busy[0] or not dst.has_image():
            return
        busy[0] = True
        try:
            dst.follow(src)
        finally:
            busy[0] = False

    a.viewChanged.connect(lambda: mirror(a, b))
    b.viewChanged.connect(lambda: mirror(b, a))
