"""The compare view on its own (offscreen Qt): zoom kept and synced in image coordinates, 1:1 on device pixels, modes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_image


@pytest.fixture
def compare(qtbot):
    from zmqproc.gui.compare import CompareView

    view = CompareView()
    view.resize(1000, 600)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_zoom_chosen_before_the_result_is_kept_when_it_arrives(compare):
    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    compare.zoom(2.0)
    before = compare.original_view.view_state()
    compare.set_result(255 - coffee)
    assert compare.original_view.view_state() == before and not before.fitted
    assert compare.result_view.transform().m11() == pytest.approx(compare.original_view.transform().m11())


def test_opening_another_image_fits_it_and_drops_the_old_result(compare):
    compare.set_original(load_image("coffee.png"))
    compare.set_result(load_image("coffee.png"))
    compare.zoom(3.0)
    compare.set_original(load_image("chelsea.png"))
    assert compare.original_view.view_state().fitted and compare.result is None and not compare.result_view.has_image()


def test_a_result_of_another_size_shows_the_same_part_of_the_picture(compare):
    import cv2

    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    compare.set_result(cv2.resize(coffee, None, fx=2, fy=2))
    compare.actual_size()
    from PySide6.QtWidgets import QAbstractSlider

    for bar in (compare.original_view.horizontalScrollBar(), compare.original_view.verticalScrollBar()):
        for _ in range(3):  # the user pans the original
            bar.triggerAction(QAbstractSlider.SliderAction.SliderPageStepAdd)
    a, b = compare.original_view.view_state(), compare.result_view.view_state()
    assert a.center == pytest.approx(b.center, abs=0.01) and a.scale_per_width == pytest.approx(b.scale_per_width, rel=0.01)
    assert compare.result_view.transform().m11() == pytest.approx(0.5 * compare.original_view.transform().m11())


def test_fit_fits_both_views(compare):
    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    compare.set_result(coffee[:200, :300].copy())
    compare.zoom(4.0)
    compare.fit()
    assert compare.original_view.view_state().fitted and compare.result_view.view_state().fitted


def test_one_to_one_is_one_image_pixel_per_device_pixel(compare, monkeypatch):
    compare.set_original(load_image("coffee.png"))
    monkeypatch.setattr(compare.original_view, "devicePixelRatioF", lambda: 2.0)  # a 2x screen
    compare.actual_size()
    assert compare.original_view.transform().m11() == pytest.approx(0.5) and compare.original_view.zoom_percent() == pytest.approx(100)
    assert compare.zoom_label.text() == "100 %"


def test_files_dropped_on_either_view_are_reported(compare, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    for view in (compare.original_view, compare.result_view):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "a.png"))])
        with qtbot.waitSignal(compare.filesDropped) as dropped:
            view.dropEvent(
                QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
            )
        assert dropped.args == [[str(tmp_path / "a.png")]]


def test_split_and_flick_show_the_result_over_the_original(compare):
    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    compare.set_result(255 - coffee)
    compare.set_mode("split")
    compare.split_slider.setValue(300)
    view = compare.original_view
    assert view.mode == "split" and view.split == pytest.approx(0.3) and not compare.result_view.isVisible()
    assert view._clip.path().boundingRect().width() == pytest.approx(0.3 * coffee.shape[1])
    compare.flick()
    assert view.mode == "flick" and compare.flicked and "Result" in compare.original_title.text()
    compare.flick()
    assert view.mode == "single" and not compare.flicked
    compare.set_mode("side")
    assert compare.result_view.isVisible()


def test_the_pixel_under_the_cursor_is_read_in_both_images(compare):
    image = np.zeros((100, 200, 3), np.uint8)
    image[10, 20] = (1, 2, 3)
    compare.set_original(image)
    compare.set_result(np.full((50, 100), 9, np.uint8))  # half the size, gray
    compare.original_view.cursorMoved.emit((20, 10))
    assert compare.readout.text() == "original 20, 10: B 1 G 2 R 3   ·   result 10, 5: v 9"
    compare.original_view.cursorMoved.emit(None)
    assert compare.readout.text().strip() == ""
    assert compare.result_info.text() == "result 100×50, 1 channel, uint8"


def test_overlays_draw_boxes_points_and_polygons(compare):
    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    shapes = {"boxes": [[10, 10, 50, 40]], "points": [[5, 5], [100, 80]], "polygons": [[[0, 0], [60, 0], [60, 60]]]}
    compare.set_result(coffee, shapes)
    assert compare.result_view.overlay_count() == 4 and compare.original_view.overlay_count() == 4


def test_the_placeholder_wraps_in_a_narrow_view_instead_of_scrolling(qtbot):
    from zmqproc.gui.views import ImageView

    view = ImageView("Open an image (File → Open, or File → Open sample), or drop files here")
    qtbot.addWidget(view)
    view.resize(900, 300)
    view.show()
    qtbot.waitExposed(view)
    wide = view.scene().sceneRect().height()
    view.resize(260, 300)
    qtbot.waitUntil(lambda: view.scene().sceneRect().width() <= view.viewport().width())
    assert not view.horizontalScrollBar().isVisible()
    assert view.scene().sceneRect().height() > wide, "the text took more lines, not more width"


def test_the_zoom_label_is_the_true_scale_after_a_mode_change_and_a_resize(compare, qtbot):
    """Issue 20, row 9: Split or a smaller window refit the image; the label followed only the user's zooms."""
    coffee = load_image("coffee.png")
    compare.set_original(coffee)
    compare.set_result(255 - coffee)

    def shown() -> float:
        return float(compare.zoom_label.text().rstrip(" %"))

    for change in (lambda: compare.set_mode("split"), lambda: compare.resize(420, 300), lambda: compare.set_mode("side")):
        change()
        qtbot.wait(50)  # the layout settles and the views refit
        assert shown() == pytest.approx(compare.original_view.zoom_percent(), abs=0.6)


def test_pixels_are_squares_above_one_to_one_and_smooth_below(compare):
    """Issue 20, row 10: nearest neighbour when zoomed in, so the pixel readout matches what is seen."""
    from PySide6.QtCore import Qt

    compare.set_original(load_image("coffee.png"))
    item = compare.original_view._item
    compare.fit()
    assert compare.original_view.zoom_percent() <= 100.5 and item.transformationMode() == Qt.TransformationMode.SmoothTransformation
    compare.zoom(8.0)
    assert compare.original_view.zoom_percent() > 100 and item.transformationMode() == Qt.TransformationMode.FastTransformation


def test_the_difference_view_shows_what_the_pipeline_changed(compare):
    """Issue 20, deliverable 4: |result - original| beside side, split and flick; the readout gives its values too."""
    from PySide6.QtCore import QPointF

    coffee = load_image("coffee.png")
    changed = coffee.copy()
    changed[100:120, 200:260] = 0  # what the "pipeline" did
    compare.set_original(coffee)
    compare.set_result(changed)
    compare.set_mode("diff")
    shown = compare.original_view.other
    assert compare.original_title.text() == "Difference |result − original|" and compare.original_view.mode == "flick"
    assert np.array_equal(shown[100:120, 200:260], coffee[100:120, 200:260]) and not shown[:100].any()
    center = compare.original_view.mapFromScene(210.5, 110.5)
    compare._show_pixel(compare.original_view, compare.original_view.image_point(QPointF(center)))
    assert "difference 210, 110: B " in compare.readout.text()
    compare.set_mode("side")
    assert compare.original_view.other is compare.result, "back to the result"
    compare.set_result(np.zeros((10, 10, 3), np.uint8))
    compare.set_mode("diff")
    assert compare.original_title.text().startswith("Difference: the result differs") and compare.original_view.mode == "single"


def test_16_bit_is_shown_from_its_percentiles_or_a_range_the_user_sets_and_alpha_over_a_checkerboard(compare):
    """Issue 20, deliverable 3: a dim 16-bit image is not black (>> 8 made 0-1000 all black); the readout keeps values."""
    from zmqproc.gui.compare import DisplayRangeDialog

    dim = np.tile(np.linspace(0, 1000, 200, dtype=np.uint16), (50, 1))  # 0..1000 of 65535
    compare.set_original(dim)

    def gray_at(x: int) -> int:
        return compare.original_view._item.pixmap().toImage().pixelColor(x, 10).red()

    assert gray_at(0) == 0 and gray_at(199) == 255 and 100 < gray_at(100) < 155, "auto: from its own percentiles"
    dialog = DisplayRangeDialog(compare)
    assert dialog.auto.isChecked() and not dialog.low.isEnabled()
    dialog.auto.setChecked(False)
    dialog.low.setValue(0)
    dialog.high.setValue(2000)
    dialog.accept()
    assert compare.display == (0.0, 2000.0) and 120 < gray_at(199) < 135, "1000 of 2000: mid gray"
    compare._show_pixel(compare.original_view, (199, 10))
    assert compare.readout.text() == "original 199, 10: v 1000", "the readout shows the image's own value"
    bad = DisplayRangeDialog(compare)
    bad.low.setValue(5)
    bad.high.setValue(5)
    bad.accept()
    assert compare.display == (0.0, 2000.0), "white must be above black: not taken"
    clear = np.zeros((20, 20, 4), np.uint8)
    compare.set_original(clear)
    assert compare.original_view._checker.isVisible()
    compare.set_original(np.zeros((20, 20, 3), np.uint8))
    assert not compare.original_view._checker.isVisible()
