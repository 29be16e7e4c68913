"""The pipeline editor: ops from the server's ``ops`` reply, controls generated from each parameter's declaration.

Steps can be switched off, dragged into another order, and every change can be
undone. A pipeline is saved and loaded as a preset: a JSON list of
``{"op", "params", "enabled"}`` maps (``--pipeline`` takes such a file too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..client.pipeline import to_steps, to_text
from ..protocol import Step

INT_LIMIT = 2**31 - 1
MAX_SLIDER_SPAN = 10**7  # wider ranges (seeds) get a spin box only
HISTORY = 100  # undo steps kept


@dataclass(frozen=True, slots=True)
class Entry:
    step: Step
    enabled: bool = True


def read_preset(text: str) -> list[Entry]:
    """Entries from a preset's JSON (a list of ``{"op", "params", "enabled"}``); ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a pipeline preset (JSON): {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and isinstance(d.get("op"), str) for d in data):
        raise ValueError('a pipeline preset is a JSON list of {"op": NAME, "params": {...}} maps')
    return [Entry(Step(d["op"], dict(d.get("params") or {})), bool(d.get("enabled", True))) for d in data]


def write_preset(entries: list[Entry]) -> str:
    return json.dumps([{"op": e.step.op, "params": e.step.params, "enabled": e.enabled} for e in entries], indent=2) + "\n"


def load_pipeline(spec: str) -> list[Entry]:
    """``--pipeline``'s argument: pipeline text, or the path of a ``.json`` preset."""
    if spec.endswith(".json"):
        return read_preset(Path(spec).read_text())
    return [Entry(step) for step in to_steps(spec)]


class OddSpinBox(QSpinBox):
    """A spin box that takes odd values only: an even number typed in is not accepted; leaving the box rounds it up."""

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        state, text, pos = super().validate(text, pos)
        if state == QValidator.State.Acceptable and int(text) % 2 == 0:
            state = QValidator.State.Intermediate
        return state, text, pos

    def fixup(self, text: str) -> str:
        try:
            value = int(text)
        except ValueError:
            return text
        value = value + 1 if value % 2 == 0 else value
        return str(min(self.maximum(), value) if value <= self.maximum() else value - 2)


class SpinSlider(QWidget):
    """A spin box with a slider beside it, for a number with both bounds declared; over a wide range (a span of
    LOG_SPAN or more) the slider is logarithmic, so a small drag is a small change wherever the value is."""

    STEPS = 1000
    LOG_SPAN = 1000

    def __init__(self, spin: QSpinBox | QDoubleSpinBox, odd: bool) -> None:
        super().__init__()
        self.spin, self._odd = spin, odd
        self.log = spin.maximum() - spin.minimum() >= self.LOG_SPAN
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, self.STEPS)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(spin)
        self._from_spin()
        spin.valueChanged.connect(lambda _v: self._from_spin())
        self.slider.valueChanged.connect(self._from_slider)

    def _from_spin(self) -> None:
        low, high = self.spin.minimum(), self.spin.maximum()
        if high <= low:
            fraction = 0.0
        elif self.log:
            fraction = math.log1p(self.spin.value() - low) / math.log1p(high - low)
        else:
            fraction = (self.spin.value() - low) / (high - low)
        self.slider.blockSignals(True)
        self.slider.setValue(round(fraction * self.STEPS))
        self.slider.blockSignals(False)

    def _from_slider(self, position: int) -> None:
        low, high = self.spin.minimum(), self.spin.maximum()
        fraction = position / self.STEPS
        value = low + (math.expm1(fraction * math.log1p(high - low)) if self.log else (high - low) * fraction)
        if isinstance(self.spin, QSpinBox):
            value = round(value)
            if self._odd and value % 2 == 0:
                value = value + 1 if value + 1 <= high else value - 1
        self.spin.setValue(value)  # type: ignore[arg-type]


def make_control(decl: dict[str, Any], value: Any) -> QWidget:
    """A spin box (with a slider when both bounds are declared), check box or combo box for one declared parameter."""
    kind = decl["type"]
    if kind == "bool":
        box = QCheckBox()
        box.setChecked(bool(value))
        return box
    if kind == "choice":
        combo = QComboBox()
        for choice in decl.get("choices", []):
            combo.addItem(str(choice), choice)
        combo.setCurrentIndex(max(0, combo.findData(value)))
        return combo
    if kind == "int":
        spin = OddSpinBox() if decl.get("odd") else QSpinBox()
        spin.setRange(int(decl.get("min", -INT_LIMIT)), int(decl.get("max", INT_LIMIT)))
        if decl.get("odd"):
            spin.setSingleStep(2)  # from an odd value, steps of 2 stay odd
        spin.setValue(int(value))
        return SpinSlider(spin, bool(decl.get("odd"))) if _slidable(decl) else spin
    dspin = QDoubleSpinBox()
    dspin.setDecimals(3)
    dspin.setRange(float(decl.get("min", -1e9)), float(decl.get("max", 1e9)))
    dspin.setSingleStep(max(0.001, (dspin.maximum() - dspin.minimum()) / 100) if "min" in decl and "max" in decl else 0.1)
    dspin.setValue(float(value))
    return SpinSlider(dspin, False) if _slidable(decl) else dspin


def _slidable(decl: dict[str, Any]) -> bool:
    """A slider where a drag makes sense: both bounds declared, and not a range so wide that it is an identifier (a
    seed from 0 to 2^31) rather than a quantity."""
    return "min" in decl and "max" in decl and float(decl["max"]) - float(decl["min"]) <= MAX_SLIDER_SPAN


def _inner(control: QWidget) -> QWidget:
    return control.spin if isinstance(control, SpinSlider) else control


def control_value(control: QWidget) -> Any:
    control = _inner(control)
    if isinstance(control, QCheckBox):
        return control.isChecked()
    if isinstance(control, QComboBox):
        return control.currentData()
    if isinstance(control, QSpinBox | QDoubleSpinBox):
        return control.value()
    raise TypeError(f"not a parameter control: {control!r}")


def control_changed(control: QWidget) -> Any:
    """The control's own change signal."""
    control = _inner(control)
    if isinstance(control, QCheckBox):
        return control.toggled
    if isinstance(control, QComboBox):
        return control.currentIndexChanged
    if isinstance(control, QSpinBox | QDoubleSpinBox):
        return control.valueChanged
    raise TypeError(f"not a parameter control: {control!r}")


class PipelineEditor(QWidget):
    """Add, remove, switch off, drag and reorder steps; the selected step's parameters in a generated form; undo/redo.

    ``changed`` fires on every edit of the pipeline sent (steps, order, on/off, a parameter); ``historyChanged``
    when what undo and redo can do changes.
    """

    changed = Signal()
    historyChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._decls: dict[str, dict[str, Any]] = {}
        self._entries: list[Entry] = []
        self._undo: list[list[Entry]] = []
        self._redo: list[list[Entry]] = []
        self._editing: tuple[int, str] | None = None  # (row, parameter) being edited: one undo step for a slider drag
        self.op_choice = QComboBox()  # searchable: type part of a name ("blur"), Enter adds the step
        self.op_search = QLineEdit()
        self.op_search.setPlaceholderText("search ops")
        self.op_search.setToolTip("the server's operations: type part of a name, Enter adds the step")
        self.op_choice.setLineEdit(self.op_search)
        self.op_choice.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        search = QCompleter(self.op_choice.model(), self.op_choice)
        self.op_choice.setCompleter(search)
        search.setFilterMode(Qt.MatchFlag.MatchContains)
        search.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        search.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.op_doc = QLabel()  # what the op in the box does, from its declaration
        self.op_doc.setWordWrap(True)
        self.add_button = QPushButton("Add")
        self.steps_list = QListWidget()
        self.steps_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.steps_list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.steps_list.setToolTip("drag to reorder; untick to switch a step off")
        self.steps_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # a long step is elided, whole in its tooltip
        self.steps_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.remove_button = QPushButton("Remove")
        self.up_button = QPushButton("Up")
        self.down_button = QPushButton("Down")
        self.params_box = QGroupBox("Parameters")
        self.params_form = QFormLayout(self.params_box)
        self._controls: dict[str, QWidget] = {}
        params_scroll = QScrollArea()  # its height does not change with the step selected: the buttons stay put
        params_scroll.setWidgetResizable(True)
        params_scroll.setWidget(self.params_box)
        params_scroll.setMinimumHeight(180)

        add_row = QHBoxLayout()
        add_row.addWidget(self.op_choice, 1)
        add_row.addWidget(self.add_button)
        move_row = QHBoxLayout()
        for button in (self.remove_button, self.up_button, self.down_button):
            move_row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(add_row)
        layout.addWidget(self.op_doc)
        layout.addWidget(self.steps_list, 1)
        layout.addLayout(move_row)
        layout.addWidget(params_scroll)

        self.add_button.clicked.connect(lambda: self.add_step(self.op_choice.currentText()))
        self.op_search.returnPressed.connect(lambda: self.add_step(self.op_choice.currentText()))
        self.op_choice.currentTextChanged.connect(self._show_op_doc)
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        self.steps_list.currentRowChanged.connect(self._show_params)
        self.steps_list.itemChanged.connect(self._on_item_changed)
        self.steps_list.model().rowsMoved.connect(lambda *_a: self._on_dragged())
        self.set_ops([])

    # -- state ----------------------------------------------------------------------

    def set_ops(self, ops: list[dict[str, Any]]) -> None:
        """The server's op list (its ``ops`` reply); the steps and the op chosen in the combo box are kept."""
        chosen = self.op_choice.currentText()
        self._decls = {o["name"]: o for o in ops}
        self.op_choice.clear()
        for o in ops:
            self.op_choice.addItem(o["name"])
            self.op_choice.setItemData(self.op_choice.count() - 1, o.get("doc", ""), Qt.ItemDataRole.ToolTipRole)
        if chosen:
            self.op_choice.setCurrentIndex(max(0, self.op_choice.findText(chosen)))
        self.op_choice.setEnabled(bool(ops))
        self.add_button.setEnabled(bool(ops))
        self._show_params(self.steps_list.currentRow())

    def _show_op_doc(self, name: str) -> None:
        decl = self._decls.get(name)
        self.op_doc.setText(f"{name}: {decl.get('doc') or 'no description'}" if decl else "")

    def steps(self) -> list[Step]:
        """The steps to send: those switched on, in order."""
        return [e.step for e in self._entries if e.enabled]

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def text(self) -> str:
        return to_text(self.steps())

    def set_steps(self, spec: Any) -> None:
        """Replace the pipeline (text, steps, or entries) without an undo step (a new start: settings, --pipeline)."""
        self._entries = spec if _are_entries(spec) else [Entry(s) for s in (to_steps(spec) if spec else [])]
        self._undo.clear()
        self._redo.clear()
        self._refresh(len(self._entries) - 1)
        self.historyChanged.emit()

    def load_preset(self, text: str) -> None:
        """Replace the pipeline by a preset's JSON (undoable); ValueError when it is not one."""
        entries = read_preset(text)
        self._edit(lambda: self._replace(entries), len(entries) - 1)

    def preset(self) -> str:
        return write_preset(self._entries)

    def add_step(self, name: str) -> None:
        if name not in self._decls:  # typed, and not (yet) an op's name
            return
        defaults = {k: p["default"] for k, p in self._decls.get(name, {}).get("params", {}).items()}
        self._edit(lambda: self._entries.append(Entry(Step(name, defaults))), len(self._entries))

    def remove_selected(self) -> None:
        row = self.steps_list.currentRow()
        if 0 <= row < len(self._entries):
            self._edit(lambda: self._entries.pop(row), min(row, len(self._entries) - 2))

    def move_selected(self, delta: int) -> None:
        row = self.steps_list.currentRow()
        other = row + delta
        if 0 <= row < len(self._entries) and 0 <= other < len(self._entries):
            entries = self._entries

            def swap() -> None:
                entries[row], entries[other] = entries[other], entries[row]

            self._edit(swap, other)

    def set_enabled(self, row: int, enabled: bool) -> None:
        if 0 <= row < len(self._entries) and self._entries[row].enabled != enabled:
            entry = self._entries[row]
            self._edit(lambda: self._entries.__setitem__(row, Entry(entry.step, enabled)), row)

    # -- undo -------------------------------------------------------------------------

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> None:
        self._travel(self._undo, self._redo)

    def redo(self) -> None:
        self._travel(self._redo, self._undo)

    def _travel(self, source: list[list[Entry]], target: list[list[Entry]]) -> None:
        if source:
            target.append(list(self._entries))
            self._entries = source.pop()
            self._editing = None
            self._refresh(min(self.steps_list.currentRow(), len(self._entries) - 1))
            self.historyChanged.emit()

    def _snapshot(self) -> None:
        self._undo.append(list(self._entries))
        del self._undo[:-HISTORY]
        self._redo.clear()
        self.historyChanged.emit()

    def _replace(self, entries: list[Entry]) -> None:
        self._entries[:] = entries

    def _edit(self, change: Any, select: int) -> None:
        self._snapshot()
        self._editing = None
        change()
        self._refresh(select)

    # -- view ---------------------------------------------------------------------

    def _refresh(self, select: int) -> None:
        self.steps_list.blockSignals(True)
        self.steps_list.clear()
        for entry in self._entries:
            item = QListWidgetItem(to_text([entry.step]))
            item.setToolTip(item.text())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDropEnabled)  # dropping onto an item would replace it
            item.setCheckState(Qt.CheckState.Checked if entry.enabled else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, entry)
            self.steps_list.addItem(item)
        self.steps_list.blockSignals(False)
        self.steps_list.setCurrentRow(select)
        self._show_params(select)
        self.changed.emit()

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        row = self.steps_list.row(item)
        if 0 <= row < len(self._entries):
            self.set_enabled(row, item.checkState() == Qt.CheckState.Checked)

    def _on_dragged(self) -> None:
        order = [self.steps_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.steps_list.count())]
        if order != self._entries:
            self._edit(lambda: self._replace(order), self.steps_list.currentRow())

    def _show_params(self, row: int) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self._controls = {}
        if not 0 <= row < len(self._entries):
            self.params_box.setTitle("Parameters")
            return
        step = self._entries[row].step
        decl = self._decls.get(step.op)
        self.params_box.setTitle(f"Parameters of {step.op}")
        if decl is None:
            return
        for name, p in decl.get("params", {}).items():
            control = make_control(p, step.params.get(name, p["default"]))
            control.setToolTip(p.get("doc", ""))
            control.setObjectName(f"param_{name}")
            control_changed(control).connect(lambda *_a, r=row, n=name: self._store_param(r, n))
            self._controls[name] = control
            self.params_form.addRow(name, control)

    def _store_param(self, row: int, name: str) -> None:
        if not 0 <= row < len(self._entries):
            return
        if self._editing != (row, name):  # a new edit; more moves of the same control join it
            self._snapshot()
            self._editing = (row, name)
        entry = self._entries[row]
        params = {**entry.step.params, name: control_value(self._controls[name])}
        self._entries[row] = Entry(Step(entry.step.op, params), entry.enabled)
        item = self.steps_list.item(row)
        if item is not None:
            self.steps_list.blockSignals(True)
            item.setText(to_text([self._entries[row].step]))
            item.setData(Qt.ItemDataRole.UserRole, self._entries[row])
            self.steps_list.blockSignals(False)
        self.changed.emit()


def _are_entries(spec: Any) -> bool:
    return isinstance(spec, list) and bool(spec) and all(isinstance(e, Entry) for e in spec)
