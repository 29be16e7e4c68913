"""One image view: fitted by default, wheel zoom, fit / true 1:1, pan by dragging, overlays, a second image to compare.

Views are synced in image coordinates (:class:`ViewState`: the centre as a
fraction of the image and the scale per image width), so an original and a
result of another size show the same part of the picture. 100 % means one image
pixel per *device* pixel, also on a 2x screen. In ``split`` and ``flick`` modes
the view shows a second image over the first, scaled to it: left of the divider
(split) or instead of it (flick).

A huge image is never made into one full-size QImage: it is shown from an overview (every n-th pixel, at most
OVERVIEW_SIDE long), and zoomed in, the part in view is shown at its true pixels over it. Scene coordinates stay the
image's pixels either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QPolygonF,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsPolygonItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QWidget,
)

OVERLAY_COLOR = QColor(255, 200, 0)
HIGHLIGHT_COLOR = QColor(0, 220, 255)
ZOOM_STEP = 1.25
MIN_SCALE, MAX_SCALE = 0.001, 64.0  # device pixels per image pixel
OVERVIEW_SIDE = 4096  # a longer image is shown from every n-th pixel; zoomed in, the part in view at its own pixels
DETAIL_MAX_PIXELS = 12_000_000  # the most image pixels the part in view may have to be shown at its own pixels


AUTO_PERCENTILES = (0.5, 99.5)  # a 16-bit or float image is shown from its 0.5th to its 99.5th percentile by default


def _qimage_over(image: np.ndarray, display: tuple[float, float] | None = None) -> tuple[QImage, np.ndarray]:
    """A QImage over (not a copy of) an 8-bit gray, BGR or BGRA form of ``image``, and that array (keep it alive)."""
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8:
        arr = np.ascontiguousarray(to_uint8(arr, display))
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
    return QImage(arr.data, w, h, arr.strides[0], fmt), arr


def to_qimage(image: np.ndarray, display: tuple[float, float] | None = None) -> QImage:
    """A QImage of an array, others than 8-bit mapped to 8 bits (copied, so the array may go away)."""
    view, _arr = _qimage_over(image, display)
    return view.copy()


def overview_step(image: np.ndarray) -> int:
    """Every how many pixels an image is shown at first: 1 up to OVERVIEW_SIDE pixels long."""
    return max(1, math.ceil(int(max(image.shape[:2])) / OVERVIEW_SIDE))


def to_pixmap(image: np.ndarray, display: tuple[float, float] | None = None) -> QPixmap:
    """What a view shows: one conversion, no intermediate copy (a 12 MP photo: about 18 ms); a huge image's overview."""
    step = overview_step(image)
    view, _arr = _qimage_over(image[::step, ::step] if step > 1 else image, display)  # _arr holds the pixels meanwhile
    return QPixmap.fromImage(view)


def _checkerboard(cell: int = 8) -> QPixmap:
    tile = QPixmap(2 * cell, 2 * cell)
    tile.fill(QColor(204, 204, 204))
    painter = QPainter(tile)
    painter.fillRect(0, 0, cell, cell, QColor(153, 153, 153))
    painter.fillRect(cell, cell, cell, cell, QColor(153, 153, 153))
    painter.end()
    return tile


def auto_range(image: np.ndarray) -> tuple[float, float]:
    """A 16-bit or float image's display range: its AUTO_PERCENTILES (of about a million pixels sampled), never empty."""
    step = max(1, int((image.shape[0] * image.shape[1] / 1e6) ** 0.5))
    sample = image[::step, ::step]
    values = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)


def to_uint8(image: np.ndarray, display: tuple[float, float] | None = None) -> np.ndarray:
    """For display only: ``display`` (low, high), by default :func:`auto_range`, mapped onto 0-255."""
    low, high = display or auto_range(image)
    scale = 255.0 / (high - low) if high > low else 0.0
    out: np.ndarray = np.clip((image.astype(np.float32) - low) * scale, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True, slots=True)
class ViewState:
    """What part of an image a view shows, independent of the image's size."""

    center: tuple[float, float]  # as fractions of the image's width and height
    scale_per_width: float  # logical pixels the image's whole width takes
    fitted: bool


class ImageView(QGraphicsView):
    """``viewChanged`` when the user zooms or pans; ``scaleChanged`` whenever the scale changes, by the user or not (a
    resize, a fit); ``cursorMoved((x, y) or None)`` in image pixels; ``filesDropped``."""

    viewChanged = Signal()
    scaleChanged = Signal()
    overlayClicked = Signal(str, int)  # a drawn result clicked: its kind and index (see highlight)
    regionChosen = Signal(object)  # Ctrl+drag drew a rectangle: (x, y, w, h) in image pixels; a Ctrl+click: None
    cursorMoved = Signal(object)
    filesDropped = Signal(list)

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)  # a notice appearing does not move the picture
        self.setBackgroundBrush(QColor(48, 48, 48))
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.image: np.ndarray | None = None
        self.other: np.ndarray | None = None
        self._checker = QGraphicsRectItem()  # under an image with alpha: transparency shown as a checkerboard
        self._checker.setPen(QPen(Qt.PenStyle.NoPen))
        self._checker.setBrush(QBrush(_checkerboard()))
        self.scene().addItem(self._checker)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._item)
        self._detail = QGraphicsPixmapItem(self._item)  # a huge image's part in view, at its own pixels, over the overview
        self._detail.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._display: tuple[float, float] | None = None  # the range the image is shown in (its details in the same)
        self._patches: list[QGraphicsPixmapItem] = []  # parts repainted since the picture was set (tiles that arrived)
        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(40)
        self._detail_timer.timeout.connect(self._show_detail)
        self._clip = QGraphicsPathItem()  # the second image's window: left of the divider, or all
        self._clip.setFlag(QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape)
        self._clip.setPen(QPen(Qt.PenStyle.NoPen))
        self.scene().addItem(self._clip)
        self._other_item = QGraphicsPixmapItem(self._clip)
        self._other_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._divider = self.scene().addLine(0, 0, 0, 0, _pen(QColor(255, 255, 255), 2))
        self._overlays: list[QGraphicsItem] = []
        self._overlay_keys: list[tuple[str, int]] = []  # (kind, index) of each overlay
        self._region_item = QGraphicsRectItem()  # the rectangle drawn with Ctrl+drag (the histogram's region)
        self._region_item.setPen(_pen(HIGHLIGHT_COLOR, 1, dashed=True))
        self._region_item.setZValue(2)
        self._region_item.setVisible(False)
        self.scene().addItem(self._region_item)
        self._region_start: QPointF | None = None
        self._mode = "single"  # single, split (the other image left of the divider) or flick (the other image instead)
        self._split = 0.5
        self._fitted = True
        self._quiet = False  # programmatic changes: no viewChanged echo
        self._dragging = False
        self._placeholder = self.scene().addText(placeholder)
        self._placeholder.setDefaultTextColor(QColor(200, 200, 200))
        centred = self._placeholder.document().defaultTextOption()
        centred.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.document().setDefaultTextOption(centred)
        self._touched = False  # the user is dragging, scrolling or pressing keys: scroll changes are theirs
        for bar in (self.horizontalScrollBar(), self.verticalScrollBar()):
            bar.actionTriggered.connect(lambda _action: self._touch())
            bar.valueChanged.connect(lambda _v: self._changed())
        self._show_layers()

    # -- content ------------------------------------------------------------------

    def has_image(self) -> bool:
        return self.image is not None

    def set_image(
        self,
        image: np.ndarray | None,
        *,
        keep_view: bool = False,
        pixmap: QPixmap | None = None,
        display: tuple[float, float] | None = None,
    ) -> None:
        """Show ``image`` (``pixmap``: made already, with ``display``, its range); fitted, unless ``keep_view`` keeps the
        part of the picture shown."""
        state = self.view_state() if keep_view and self.image is not None else None
        self.image = image
        self.set_overlays({})
        if not keep_view:
            self._region_item.setVisible(False)  # a new picture: the old rectangle is not about it
        self._placeholder.setVisible(image is None)
        huge = image is not None and overview_step(image) > 1
        self._display = display or (auto_range(image) if huge and image is not None and image.dtype != np.uint8 else None)
        self._item.setPixmap(QPixmap() if image is None else pixmap or to_pixmap(image, self._display))
        self._item.setTransform(self._to_image(self._item.pixmap()))
        self._detail.setVisible(False)
        self._drop_patches()
        self._checker.setRect(self._image_rect())
        self._checker.setVisible(image is not None and image.ndim == 3 and image.shape[2] == 4)
        rect = self._image_rect() if image is not None else self._placeholder.boundingRect()
        self.scene().setSceneRect(rect)
        self._fit_other()
        if state is None or state.fitted:
            self.fit(quiet=True)
        else:
            self.apply_view_state(state)

    def repaint_region(self, image: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> None:
        """Rows y0..y1, columns x0..x1 of ``image`` (shown here, or as the other image) changed in place (a tile
        arrived): that part is laid over what is shown, until the next picture."""
        for item, shown in ((self._item, self.image), (self._other_item, self.other)):
            if shown is not image or item.pixmap().isNull():
                continue
            step = overview_step(image)
            oy0, ox0 = -(-y0 // step), -(-x0 // step)  # the first overview row and column in the region
            if oy0 * step >= y1 or ox0 * step >= x1:
                continue
            patch = QGraphicsPixmapItem(to_pixmap(image[oy0 * step : y1 : step, ox0 * step : x1 : step], self._display), item)
            patch.setPos(ox0, oy0)
            patch.setZValue(-1)  # under the overlays and the detail
            self._patches.append(patch)
        self._detail_timer.start()

    def set_other(self, image: np.ndarray | None, pixmap: QPixmap | None = None) -> None:
        """The image to compare with (the result over the original), scaled to this view's image."""
        self.other = image
        self._drop_patches()
        self._other_item.setPixmap(QPixmap() if image is None else pixmap or to_pixmap(image))
        self._fit_other()
        self._show_layers()

    def set_mode(self, mode: str, split: float | None = None) -> None:
        """``single``, ``split`` (the other image left of the divider at ``split``, a fraction of the width) or ``flick``."""
        if mode not in ("single", "split", "flick"):
            raise ValueError(f"unknown compare mode {mode!r}")
        self._mode = mode
        if split is not None:
            self._split = min(1.0, max(0.0, split))
        self._show_layers()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def split(self) -> float:
        return self._split

    def set_overlays(self, shapes: dict[str, Sequence[Any]], on_other: bool = False) -> None:
        """Draw results over the image: ``{"boxes": [[x, y, w, h]], "points": [[x, y]], "polygons": [[[x, y], ...]]}``.

        Coordinates are pixels of this view's image, or of the other image with ``on_other`` (then they show with it).
        """
        for item in self._overlays:
            self.scene().removeItem(item)
        parent, image = (self._other_item, self.other) if on_other else (self._item, self.image)
        pixmap = parent.pixmap()
        kx, ky = (1.0, 1.0) if image is None or pixmap.isNull() else (pixmap.width() / image.shape[1], pixmap.height() / image.shape[0])
        pen = _pen(OVERLAY_COLOR, 2)
        items: list[QGraphicsItem] = [QGraphicsRectItem(QRectF(x, y, w, h), parent) for x, y, w, h in shapes.get("boxes", ())]
        keys = [("boxes", i) for i in range(len(items))]
        items += [QGraphicsPolygonItem(QPolygonF([QPointF(x, y) for x, y in poly]), parent) for poly in shapes.get("polygons", ())]
        keys += [("polygons", i) for i in range(len(items) - len(keys))]
        for item in items:  # in the image's pixels, over an overview of it
            item.setTransform(QTransform.fromScale(kx, ky))
        for i, (x, y) in enumerate(shapes.get("points", ())):
            marker = QGraphicsEllipseItem(QRectF(-4, -4, 8, 8), parent)
            marker.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)  # the same size at any zoom
            marker.setPos((x + 0.5) * kx, (y + 0.5) * ky)
            items.append(marker)
            keys.append(("points", i))
        for item in items:
            item.setPen(pen)  # type: ignore[attr-defined]
        self._overlays, self._overlay_keys = items, keys

    def highlight(self, link: tuple[str, int] | None) -> None:
        """Draw one result (kind, index) in the highlight colour, the others as usual; None: none."""
        for item, key in zip(self._overlays, self._overlay_keys, strict=True):
            chosen = key == link
            item.setPen(_pen(HIGHLIGHT_COLOR if chosen else OVERLAY_COLOR, 4 if chosen else 2))  # type: ignore[attr-defined]
            item.setZValue(1 if chosen else 0)

    def overlay_count(self) -> int:
        return len(self._overlays)

    # -- zoom and pan ---------------------------------------------------------------

    def zoom_percent(self) -> float:
        """Device pixels per image pixel, in percent (100 = 1:1 on the screen's own pixels)."""
        return self.transform().m11() * self.devicePixelRatioF() * 100

    def fit(self, *, quiet: bool = False) -> None:
        self._fitted = True
        if self.image is None:  # the placeholder keeps its own size, centred
            self._apply(self._show_placeholder, quiet)
            return
        self._apply(lambda: self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio), quiet)

    def _show_placeholder(self) -> None:
        """The text wrapped to the view's width (a narrow view shows all of it, no scroll bar), centred."""
        self.resetTransform()
        self._placeholder.setTextWidth(-1)
        natural = self._placeholder.boundingRect().width()
        self._placeholder.setTextWidth(min(natural, max(80.0, self.viewport().width() - 16.0)))
        self.scene().setSceneRect(self._placeholder.boundingRect())
        self.centerOn(self._placeholder)

    def actual_size(self) -> None:
        """1:1: one image pixel on one device pixel."""
        self._fitted = False
        self._apply(lambda: self.setTransform(QTransform.fromScale(1 / self.devicePixelRatioF(), 1 / self.devicePixelRatioF())))

    def zoom(self, factor: float) -> None:
        target = self.transform().m11() * factor * self.devicePixelRatioF()
        if not MIN_SCALE <= target <= MAX_SCALE:
            return
        self._fitted = False
        self._apply(lambda: self.scale(factor, factor))

    def view_state(self) -> ViewState:
        rect = self.scene().sceneRect()
        center = self.mapToScene(self.viewport().rect().center())
        width, height = max(rect.width(), 1.0), max(rect.height(), 1.0)
        return ViewState((center.x() / width, center.y() / height), self.transform().m11() * width, self._fitted)

    def apply_view_state(self, state: ViewState) -> None:
        """Show the same part of this image as ``state`` describes (another view's, perhaps of another size)."""
        if state.fitted:
            self.fit(quiet=True)
            return
        rect = self.scene().sceneRect()
        scale = state.scale_per_width / max(rect.width(), 1.0)

        def place() -> None:
            self.setTransform(QTransform.fromScale(scale, scale))
            self.centerOn(state.center[0] * rect.width(), state.center[1] * rect.height())

        self._fitted = False
        self._apply(place, quiet=True)

    def image_point(self, pos: QPointF) -> tuple[int, int] | None:
        """The image pixel under a viewport position, or None outside the image."""
        if self.image is None:
            return None
        point = self.mapToScene(pos.toPoint())
        x, y = int(point.x()), int(point.y())
        h, w = self.image.shape[:2]
        return (x, y) if 0 <= x < w and 0 <= y < h else None

    # -- events ---------------------------------------------------------------------

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt's name)
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(ZOOM_STEP**steps)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fitted:
            self.fit(quiet=True)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier and self.image is not None:
            self._region_start = self.mapToScene(event.position().toPoint())
            self._region_item.setRect(QRectF(self._region_start, self._region_start))
            self._region_item.setVisible(True)
            return
        under = self.items(event.position().toPoint())
        hit = next((key for item, key in zip(self._overlays, self._overlay_keys, strict=True) if item in under), None)
        if hit is not None:
            self.overlayClicked.emit(*hit)
        self._dragging = True
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._region_start is not None:
            self._region_start = None
            self.regionChosen.emit(self.region())
            return
        super().mouseReleaseEvent(event)
        self._dragging = False

    def region(self) -> tuple[int, int, int, int] | None:
        """The rectangle drawn with Ctrl+drag, in image pixels (clamped to the image); None when there is none."""
        if self.image is None or not self._region_item.isVisible():
            return None
        rect = self._region_item.rect().normalized()
        h, w = self.image.shape[:2]
        x0, y0 = max(0, int(rect.left())), max(0, int(rect.top()))
        x1, y1 = min(w, math.ceil(rect.right())), min(h, math.ceil(rect.bottom()))  # the pixels it covers
        if x1 - x0 < 2 or y1 - y0 < 2:  # a click, not a drag: no region
            self._region_item.setVisible(False)
            return None
        return x0, y0, x1 - x0, y1 - y0

    def set_region(self, region: tuple[int, int, int, int] | None) -> None:
        """Show a rectangle (x, y, w, h in this view's image pixels), as if drawn; None: none."""
        if region is not None:
            self._region_item.setRect(QRectF(*region))
        self._region_item.setVisible(region is not None and self.image is not None)

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The part of the image the view shows, in image pixels."""
        if self.image is None:
            return None
        rect = self.mapToScene(self.viewport().rect()).boundingRect()
        h, w = self.image.shape[:2]
        x0, y0 = max(0, int(rect.left())), max(0, int(rect.top()))
        x1, y1 = min(w, math.ceil(rect.right())), min(h, math.ceil(rect.bottom()))  # the pixels it covers
        return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        self._touched = True  # arrow keys and page keys scroll the view
        super().keyPressEvent(event)
        self._touched = False

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._region_start is not None:
            self._region_item.setRect(QRectF(self._region_start, self.mapToScene(event.position().toPoint())).normalized())
            self.cursorMoved.emit(self.image_point(event.position()))
            return
        super().mouseMoveEvent(event)
        self.cursorMoved.emit(self.image_point(event.position()))

    def leaveEvent(self, event: Any) -> None:  # noqa: N802
        super().leaveEvent(event)
        self.cursorMoved.emit(None)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.filesDropped.emit(paths)

    # -- internals --------------------------------------------------------------------

    def _apply(self, change: Any, quiet: bool = False) -> None:
        was, self._quiet = self._quiet, True
        try:
            change()
        finally:
            self._quiet = was
        self._pixels_as_seen()
        self._detail_timer.start()
        self.scaleChanged.emit()
        if not quiet:
            self.viewChanged.emit()

    def _pixels_as_seen(self) -> None:
        """Above 1:1 each image pixel is a square (nearest neighbour), so the readout matches what is seen; below, smooth."""
        mode = Qt.TransformationMode.FastTransformation if self.zoom_percent() > 100.5 else Qt.TransformationMode.SmoothTransformation
        for item in (self._item, self._other_item, self._detail):
            if item.transformationMode() != mode:
                item.setTransformationMode(mode)

    def _touch(self) -> None:
        self._touched = True

    def _changed(self) -> None:
        """A scroll position changed: the user's pan if they are at it (not a range adjusted by Qt, not an echo)."""
        user = self._touched or self._dragging or any(b.isSliderDown() for b in (self.horizontalScrollBar(), self.verticalScrollBar()))
        self._touched = False
        self._detail_timer.start()
        if user and not self._quiet:
            self._fitted = False
            self.viewChanged.emit()

    def _drop_patches(self) -> None:
        for patch in self._patches:
            self.scene().removeItem(patch)
        self._patches = []

    def _image_rect(self) -> QRectF:
        """The image in scene coordinates: its own pixels (whatever size the pixmap shown for it)."""
        if self.image is None:
            return self._item.boundingRect()
        return QRectF(0, 0, self.image.shape[1], self.image.shape[0])

    def _to_image(self, pixmap: QPixmap) -> QTransform:
        """The scale that lays a pixmap (an overview, or the image itself) onto the image's pixels."""
        if self.image is None or pixmap.isNull():
            return QTransform()
        return QTransform.fromScale(self.image.shape[1] / pixmap.width(), self.image.shape[0] / pixmap.height())

    def _show_detail(self) -> None:
        """A huge image zoomed in: the part in view at its own pixels (at most DETAIL_MAX_PIXELS), else the overview."""
        image, shown = self.image, False
        if image is not None and overview_step(image) > 1 and not self._clip.isVisible():
            magnified = self.transform().m11() * overview_step(image) > 1.0  # the overview's pixels are blown up
            region = self.visible_region()
            if magnified and region is not None and region[2] * region[3] <= DETAIL_MAX_PIXELS:
                x, y, w, h = region
                sx, sy = self._item.transform().m11(), self._item.transform().m22()
                self._detail.setPixmap(to_pixmap(image[y : y + h, x : x + w], self._display))
                self._detail.setTransform(QTransform.fromScale(1 / sx, 1 / sy))  # undo the overview's scale
                self._detail.setPos(x / sx, y / sy)
                shown = True
        self._detail.setVisible(shown)

    def _fit_other(self) -> None:
        """Scale the other image onto this one's rectangle (a result of another size covers the same picture)."""
        pixmap, rect = self._other_item.pixmap(), self._image_rect()
        if pixmap.isNull() or rect.isEmpty():
            return
        self._other_item.setTransform(QTransform.fromScale(rect.width() / pixmap.width(), rect.height() / pixmap.height()))

    def _show_layers(self) -> None:
        rect = self._image_rect()
        comparing = self._mode != "single" and self.other is not None and self.image is not None
        self._clip.setVisible(comparing)
        self._divider.setVisible(comparing and self._mode == "split")
        if comparing:
            width = rect.width() * (self._split if self._mode == "split" else 1.0)
            path = QPainterPath()
            path.addRect(QRectF(0, 0, width, rect.height()))
            self._clip.setPath(path)
            self._divider.setLine(width, 0, width, rect.height())


def _pen(color: QColor, width: float, dashed: bool = False) -> QPen:
    pen = QPen(color, width)
    pen.setCosmetic(True)  # the same width at any zoom
    if dashed:
        pen.setStyle(Qt.PenStyle.DashLine)
    return pen
