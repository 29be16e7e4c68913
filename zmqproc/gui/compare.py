"""The original and the result together: side by side, split by a divider, or flicked with Space; one zoom for both.

The two :class:`ImageView` s follow each other in image coordinates (a result of
another size shows the same part of the picture); the bar under them shows the
zoom, the size and kind of the result, and the pixel under the cursor in both
images.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .views import ImageView, auto_range, to_pixmap

MODES = {"side": "Side by side", "split": "Split", "flick": "Flick (Space)", "diff": "Difference"}


def pixel_text(image: np.ndarray, x: int, y: int) -> str:
    """``x, y: B 1 G 2 R 3`` (gray: ``v 7``; float values with 3 decimals)."""
    value = image[y, x]
    values = np.atleast_1d(value).tolist()
    names = {1: ["v"], 3: ["B", "G", "R"], 4: ["B", "G", "R", "A"]}[len(values)]
    shown = " ".join(f"{n} {v:.3f}" if isinstance(v, float) else f"{n} {v}" for n, v in zip(names, values, strict=True))
    return f"{x}, {y}: {shown}"


def difference(original: np.ndarray, result: np.ndarray) -> np.ndarray | None:
    """|result - original| pixel by pixel, in their own type; None when they differ in size, channels or type."""
    if original.shape != result.shape or original.dtype != result.dtype:
        return None
    return cv2.absdiff(result, original)


def describe(image: np.ndarray) -> str:
    """``640×480, 3 channels, uint8``."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    return f"{image.shape[1]}×{image.shape[0]}, {channels} channel{'s' if channels > 1 else ''}, {image.dtype}"


class CompareView(QWidget):
    """``filesDropped(paths)`` when files are dropped on either view."""

    filesDropped = Signal(list)
    overlayClicked = Signal(str, int)  # a drawn result clicked in either view: its kind and index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.original_view = ImageView("Open an image (File → Open, or File → Open sample), or drop files here")
        self.result_view = ImageView("The result appears here")
        self.original: np.ndarray | None = None
        self.result: np.ndarray | None = None
        self.mode = "side"
        self.flicked = False  # flick mode: the result is the one shown
        self.difference: np.ndarray | None = None  # |result - original|, made when the Difference mode is shown
        self.display: tuple[float, float] | None = None  # how 16-bit and float pixels map to the screen (None: auto)
        self._overlays: dict[str, Any] = {}
        self.original_title, self.result_title = QLabel("Original"), QLabel("Result")
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(_titled(self.original_title, self.original_view))
        self._result_box = _titled(self.result_title, self.result_view)
        views.addWidget(self._result_box)
        views.setSizes([500, 500])
        self.mode_buttons = QButtonGroup(self)
        bar = QHBoxLayout()
        for key, text in MODES.items():
            button = QPushButton(text)
            button.setCheckable(True)
            button.setChecked(key == self.mode)
            button.setObjectName(f"mode_{key}")
            button.clicked.connect(lambda _checked=False, k=key: self.set_mode(k))
            self.mode_buttons.addButton(button)
            bar.addWidget(button)
        self.split_slider = QSlider(Qt.Orientation.Horizontal)
        self.split_slider.setRange(0, 1000)
        self.split_slider.setValue(500)
        self.split_slider.setToolTip("where the divider is: the result left of it, the original right")
        self.split_slider.valueChanged.connect(lambda v: self.original_view.set_mode(self.original_view.mode, v / 1000))
        bar.addWidget(self.split_slider, 1)
        self.zoom_label = QLabel()
        self.zoom_label.setMinimumWidth(60)
        bar.addWidget(self.zoom_label)
        self.readout = QLabel(" ")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_info = QLabel("")
        info = QHBoxLayout()
        info.addWidget(self.readout, 1)
        info.addWidget(self.result_info)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(views, 1)
        layout.addLayout(bar)
        layout.addLayout(info)
        for view, other in ((self.original_view, self.result_view), (self.result_view, self.original_view)):
            view.viewChanged.connect(lambda v=view, o=other: self._follow(v, o))
            view.cursorMoved.connect(lambda point, v=view: self._show_pixel(v, point))
            view.filesDropped.connect(self.filesDropped)
            view.overlayClicked.connect(self.overlayClicked)
        self.original_view.scaleChanged.connect(self._show_zoom)  # a fit after a resize or a mode change too
        self._show_mode()

    # -- content ----------------------------------------------------------------

    def set_original(self, image: np.ndarray | None) -> None:
        """A new picture: fitted, and the old result gone."""
        self.original = image
        self.original_view.set_image(image, pixmap=None if image is None else to_pixmap(image, self.display))
        self.clear_result()

    def set_result(self, image: np.ndarray, overlays: dict[str, Any] | None = None, info: str = "") -> None:
        """Show a result; the zoom and the part of the picture shown stay as they are."""
        self.result = image
        self.difference = None
        self.set_stale(False)
        self._overlays = overlays or {}
        pixmap = to_pixmap(image, self.display)  # once, for both views
        self.result_view.set_image(image, keep_view=True, pixmap=pixmap)
        self.result_view.apply_view_state(self.original_view.view_state())
        self.result_view.set_overlays(self._overlays)
        self.original_view.set_other(image, pixmap)
        self.original_view.set_overlays(self._overlays, on_other=True)
        self.result_info.setText(f"result {describe(image)}" + (f" ({info})" if info else ""))
        self._show_mode()

    def set_frame(self, original: np.ndarray, result: np.ndarray, info: str = "") -> None:
        """A stream's frame and its result together; the zoom and the part shown stay (a video plays in place)."""
        self.original = original
        self.original_view.set_image(original, keep_view=True, pixmap=to_pixmap(original, self.display))
        self.set_result(result, None, info)

    def repaint_result(self, core: tuple[int, int, int, int]) -> None:
        """Rows y0..y1, columns x0..x1 of the result changed in place (a tile arrived): shown again there."""
        y0, y1, x0, x1 = core
        if self.result is not None:
            for view in (self.result_view, self.original_view):
                view.repaint_region(self.result, y0, y1, x0, x1)

    def set_stale(self, stale: bool) -> None:
        """Mark the result as made by another pipeline than the one now in the editor (or not)."""
        self.result_title.setText("Result — out of date: the pipeline changed (Ctrl+R)" if stale else "Result")

    def highlight(self, link: tuple[str, int] | None) -> None:
        """Highlight one drawn result (kind, index) in both views; None: none."""
        for view in (self.original_view, self.result_view):
            view.highlight(link)

    def clear_result(self) -> None:
        self.result = None
        self.difference = None
        self._overlays = {}
        self.result_view.set_image(None)
        self.original_view.set_other(None)
        self.original_view.set_overlays({})
        self.result_info.setText("")
        self._show_zoom()

    def set_display_range(self, display: tuple[float, float] | None) -> None:
        """Show 16-bit and float pixels from ``display`` (low, high) black to white; None: each image's own percentiles.
        The pixel readout keeps the image's own values; 8-bit images are shown as they are."""
        self.display = display
        if self.original is not None:
            self.original_view.set_image(self.original, keep_view=True, pixmap=to_pixmap(self.original, display))
        if self.result is not None:
            pixmap = to_pixmap(self.result, display)
            self.result_view.set_image(self.result, keep_view=True, pixmap=pixmap)
            self.result_view.set_overlays(self._overlays)
            self.original_view.set_other(self.result, pixmap)
            self.original_view.set_overlays(self._overlays, on_other=True)
        self._show_mode()

    # -- modes and zoom -----------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown compare mode {mode!r}")
        self.mode = mode
        self._show_mode()

    def flick(self) -> None:
        """Show the other one of original and result (switching to flick mode)."""
        self.flicked = not self.flicked if self.mode == "flick" else True
        self.set_mode("flick")

    def fit(self) -> None:
        self.original_view.fit()

    def actual_size(self) -> None:
        self.original_view.actual_size()

    def zoom(self, factor: float) -> None:
        self.original_view.zoom(factor)

    # -- internals ----------------------------------------------------------------------

    def _show_mode(self) -> None:
        for button in self.mode_buttons.buttons():
            button.setChecked(button.objectName() == f"mode_{self.mode}")
        self._result_box.setVisible(self.mode == "side")
        self.split_slider.setVisible(self.mode == "split")
        if self.mode == "side":
            self.original_view.set_mode("single")
            self.original_title.setText("Original")
        elif self.mode == "split":
            self.original_view.set_mode("split", self.split_slider.value() / 1000)
            self.original_title.setText("Result ◀ divider ▶ original")
        elif self.mode == "flick":
            showing_result = self.flicked and self.result is not None
            self.original_view.set_mode("flick" if showing_result else "single")
            self.original_title.setText("Result (Space: original)" if showing_result else "Original (Space: result)")
        else:
            self._show_difference()
        if self.mode != "diff" and self.result is not None and self.original_view.other is not self.result:
            self.original_view.set_other(self.result)  # back from the difference
            self.original_view.set_overlays(self._overlays, on_other=True)
        self._show_zoom()

    def _show_difference(self) -> None:
        """|result - original| over the original (the overlays stay, on it), or why it cannot be made."""
        if self.result is None or self.original is None:
            self.original_view.set_mode("single")
            self.original_title.setText("Difference: no result yet")
            return
        if self.difference is None:
            self.difference = difference(self.original, self.result)
        if self.difference is None:
            self.original_view.set_mode("single")
            self.original_title.setText("Difference: the result differs in size, channels or type; showing the original")
            return
        self.original_view.set_other(self.difference)
        self.original_view.set_overlays(self._overlays, on_other=True)
        self.original_view.set_mode("flick")
        self.original_title.setText("Difference |result − original|")

    def _follow(self, source: ImageView, target: ImageView) -> None:
        if target.has_image():
            target.apply_view_state(source.view_state())
        self._show_zoom()

    def _show_zoom(self) -> None:
        self.zoom_label.setText(f"{self.original_view.zoom_percent():.0f} %" if self.original is not None else "")

    def _show_pixel(self, view: ImageView, point: tuple[int, int] | None) -> None:
        if point is None or view.image is None:
            self.readout.setText(" ")
            return
        fx, fy = (point[0] + 0.5) / view.image.shape[1], (point[1] + 0.5) / view.image.shape[0]
        parts = []
        shown: list[tuple[str, np.ndarray | None]] = [("original", self.original), ("result", self.result)]
        if self.mode == "diff":
            shown.append(("difference", self.difference))
        for name, image in shown:
            if image is not None:
                x, y = min(int(fx * image.shape[1]), image.shape[1] - 1), min(int(fy * image.shape[0]), image.shape[0] - 1)
                parts.append(f"{name} {pixel_text(image, x, y)}")
        self.readout.setText("   ·   ".join(parts))


def _titled(title: QLabel, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(title)
    layout.addWidget(widget, 1)
    return box


class DisplayRangeDialog(QDialog):
    """View → Display range…: automatic (each image's 0.5th-99.5th percentiles) or a low and a high value."""

    def __init__(self, compare: CompareView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Display range")
        self.compare = compare
        image = compare.original if compare.original is not None else compare.result
        low, high = compare.display or (auto_range(image) if image is not None and image.dtype != np.uint8 else (0.0, 255.0))
        self.auto = QCheckBox("Automatic (each image's 0.5th to 99.5th percentile)")
        self.auto.setChecked(compare.display is None)
        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        for box, value in ((self.low, low), (self.high, high)):
            box.setDecimals(3)
            box.setRange(-1e12, 1e12)
            box.setValue(value)
        form = QFormLayout(self)
        form.addRow(self.auto)
        form.addRow("Black at", self.low)
        form.addRow("White at", self.high)
        form.addRow(QLabel("For 16-bit and float images; the pixel readout always shows the image's own values."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.auto.toggled.connect(self._auto_toggled)
        self._auto_toggled(self.auto.isChecked())

    def _auto_toggled(self, on: bool) -> None:
        self.low.setEnabled(not on)
        self.high.setEnabled(not on)

    def accept(self) -> None:
        if not self.auto.isChecked() and self.high.value() <= self.low.value():
            self.high.setFocus()
            return  # white must be above black
        self.compare.set_display_range(None if self.auto.isChecked() else (self.low.value(), self.high.value()))
        super().accept()
