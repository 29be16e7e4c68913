"""The pipeline editor on its own (offscreen Qt): on/off, drag to reorder, undo/redo, presets, odd-only numbers."""

from __future__ import annotations

import pytest

OPS = [
    {"name": "identity", "doc": "", "params": {}},
    {"name": "invert", "doc": "", "params": {}},
    {"name": "gaussian_blur", "doc": "", "params": {"ksize": {"type": "int", "default": 5, "min": 1, "max": 99, "odd": True}}},
    {"name": "flip", "doc": "", "params": {"mode": {"type": "choice", "default": "horizontal", "choices": ["horizontal", "vertical"]}}},
]


@pytest.fixture
def editor(qtbot):
    from zmqproc.gui.pipeline_editor import PipelineEditor

    widget = PipelineEditor()
    qtbot.addWidget(widget)
    widget.set_ops(OPS)
    widget.set_steps("invert;gaussian_blur:ksize=5;flip")
    return widget


def test_a_step_switched_off_is_not_sent_but_kept(editor):
    from PySide6.QtCore import Qt

    editor.steps_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert editor.text() == "invert;flip" and len(editor.entries()) == 3
    editor.undo()
    assert editor.text() == "invert;gaussian_blur:ksize=5;flip"


def test_dragging_a_step_reorders_the_pipeline_and_can_be_undone(editor):
    from PySide6.QtCore import QModelIndex

    assert editor.steps_list.model().moveRow(QModelIndex(), 0, QModelIndex(), 3)  # what a drag and drop does
    assert [s.op for s in editor.steps()] == ["gaussian_blur", "flip", "invert"]
    editor.undo()
    assert [s.op for s in editor.steps()] == ["invert", "gaussian_blur", "flip"]
    editor.redo()
    assert [s.op for s in editor.steps()] == ["gaussian_blur", "flip", "invert"]


def test_undo_redo_walk_every_kind_of_edit_and_a_slider_drag_is_one_step(editor):
    editor.add_step("identity")
    editor.remove_selected()
    editor.steps_list.setCurrentRow(1)
    spin = editor._controls["ksize"].spin
    for value in (7, 9, 11):  # one drag of the slider: three changes, one undo step
        spin.setValue(value)
    assert editor.steps()[1].params["ksize"] == 11
    editor.undo()
    assert editor.steps()[1].params["ksize"] == 5
    editor.undo()  # the remove
    assert [s.op for s in editor.steps()][-1] == "identity"
    editor.undo()  # the add
    assert not editor.can_undo() and [s.op for s in editor.steps()] == ["invert", "gaussian_blur", "flip"]
    editor.redo()
    editor.redo()
    editor.redo()
    assert editor.steps()[1].params["ksize"] == 11 and not editor.can_redo()


def test_reloading_the_op_list_keeps_the_chosen_op(editor):
    editor.op_choice.setCurrentIndex(editor.op_choice.findText("flip"))
    editor.set_ops(OPS)
    assert editor.op_choice.currentText() == "flip"


def test_an_odd_only_box_does_not_accept_an_even_number(editor):
    from PySide6.QtGui import QValidator

    editor.steps_list.setCurrentRow(1)
    spin = editor._controls["ksize"].spin
    assert spin.validate("4", 1)[0] == QValidator.State.Intermediate and spin.validate("7", 1)[0] == QValidator.State.Acceptable
    assert spin.fixup("4") == "5" and spin.fixup("98") == "99"


def test_presets_round_trip_and_feed_pipeline_arguments(editor, tmp_path):
    from PySide6.QtCore import Qt

    from zmqproc.gui.pipeline_editor import load_pipeline, read_preset

    editor.steps_list.item(2).setCheckState(Qt.CheckState.Unchecked)
    path = tmp_path / "edges.json"
    path.write_text(editor.preset())
    entries = load_pipeline(str(path))
    assert entries == editor.entries() and [e.enabled for e in entries] == [True, True, False]
    editor.set_steps("identity")
    editor.load_preset(path.read_text())
    assert editor.entries() == entries
    editor.undo()
    assert editor.text() == "identity"
    assert [e.step.op for e in load_pipeline("grayscale;gaussian_blur:ksize=3")] == ["grayscale", "gaussian_blur"]
    for bad in ("{", '{"op": "x"}', '[{"params": {}}]'):
        with pytest.raises(ValueError, match="preset"):
            read_preset(bad)


def test_the_buttons_stay_put_whatever_the_selected_step_declares(qtbot, editor):
    editor.resize(300, 600)
    editor.show()
    qtbot.waitExposed(editor)
    editor.steps_list.setCurrentRow(0)  # invert: no parameters
    before = editor.remove_button.mapTo(editor, editor.remove_button.rect().topLeft())
    editor.steps_list.setCurrentRow(1)  # gaussian_blur: a parameter row
    qtbot.wait(10)
    assert editor.remove_button.mapTo(editor, editor.remove_button.rect().topLeft()) == before


def test_a_wide_range_slider_is_logarithmic_and_a_seed_gets_no_slider(qtbot):
    """Issue 20, row 8: count_blobs' min_area (1-100000) jumped 20 -> 850 on a 6-pixel drag; quantize's seed slider was useless."""
    from PySide6.QtWidgets import QSpinBox

    from zmqproc.gui.pipeline_editor import SpinSlider, make_control

    area = make_control({"type": "int", "default": 20, "min": 1, "max": 100000}, 20)
    qtbot.addWidget(area)
    assert isinstance(area, SpinSlider) and area.log
    width = 150  # pixels: a slider in the parameters panel; 6 pixels of it
    area.slider.setValue(area.slider.value() + round(6 / width * area.STEPS))
    assert 20 < area.spin.value() < 40, area.spin.value()  # a step of 0.2 decades, not 20 -> 850
    area.slider.setValue(area.STEPS)
    assert area.spin.value() == 100000, "the whole range is still reachable"
    ksize = make_control({"type": "int", "default": 5, "min": 1, "max": 99, "odd": True}, 5)
    qtbot.addWidget(ksize)
    assert isinstance(ksize, SpinSlider) and not ksize.log
    seed = make_control({"type": "int", "default": 0, "min": 0, "max": 2**31 - 1}, 0)
    qtbot.addWidget(seed)
    assert isinstance(seed, QSpinBox), "a number that names, not measures: typed, not dragged"


def test_the_op_list_is_searchable_and_says_what_an_op_does(qtbot, editor):
    """Issue 20, deliverable 4: type part of a name, see the matches and the op's description, Enter adds it."""
    from PySide6.QtCore import Qt

    ops = [*OPS, {"name": "median_blur", "doc": "Median of each pixel's neighbourhood.", "params": {}}]
    editor.set_ops(ops)
    editor.show()
    qtbot.keyClicks(editor.op_search, "BLUR")
    completer = editor.op_choice.completer()
    completer.setCompletionPrefix("BLUR")
    matches = [completer.completionModel().index(i, 0).data() for i in range(completer.completionCount())]
    assert matches == ["gaussian_blur", "median_blur"], "contains, any case"
    editor.op_choice.setCurrentText("median_blur")
    assert editor.op_doc.text() == "median_blur: Median of each pixel's neighbourhood."
    qtbot.keyClick(editor.op_search, Qt.Key.Key_Return)
    assert editor.steps()[-1].op == "median_blur"
    editor.op_choice.setCurrentText("no such op")
    qtbot.keyClick(editor.op_search, Qt.Key.Key_Return)
    assert editor.steps()[-1].op == "median_blur" and editor.op_doc.text() == "", "typing is not adding"
