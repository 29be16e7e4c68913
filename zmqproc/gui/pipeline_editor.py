"""The pipeline editor: ops from the server's ``ops`` reply, controls generated from each parameter's declaration."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..pipeline import to_steps, to_text
from ..protocol import Step

INT_LIMIT = 2**31 - 1


class SpinSlider(QWidget):
    """A spin box with a slider beside it, for a number with both bounds declared."""

    STEPS = 1000

    def __init__(self, spin: QSpinBox | QDoubleSpinBox, odd: bool) -> None:
        super().__init__()
        self.spin, self._odd = spin, odd
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
        self.slider.blockSignals(True)
        self.slider.setValue(round((self.spin.value() - low) / (high - low) * self.STEPS) if high > low else 0)
        self.slider.blockSignals(False)

    def _from_slider(self, position: int) -> None:
        low, high = self.spin.minimum(), self.spin.maximum()
        value = low + (high - low) * position / self.STEPS
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
        spin = QSpinBox()
        spin.setRange(int(decl.get("min", -INT_LIMIT)), int(decl.get("max", INT_LIMIT)))
        if decl.get("odd"):
            spin.setSingleStep(2)  # from an odd value, steps of 2 stay odd
        spin.setValue(int(value))
        return SpinSlider(spin, bool(decl.get("odd"))) if "min" in decl and "max" in decl else spin
    dspin = QDoubleSpinBox()
    dspin.setDecimals(3)
    dspin.setRange(float(decl.get("min", -1e9)), float(decl.get("max", 1e9)))
    dspin.setSingleStep(max(0.001, (dspin.maximum() - dspin.minimum()) / 100) if "min" in decl and "max" in decl else 0.1)
    dspin.setValue(float(value))
    return SpinSlider(dspin, False) if "min" in decl and "max" in decl else dspin


def control_value(control: QWidget) -> Any:
    if isinstance(control, SpinSlider):
        control = control.spin
    if isinstance(control, QCheckBox):
        return control.isChecked()
    if isinstance(control, QComboBox):
        return control.currentData()
    if isinstance(control, QSpinBox | QDoubleSpinBox):
        return control.value()
    raise TypeError(f"not a parameter control: {control!r}")


def control_changed(control: QWidget) -> Any:
    """The control's own change signal."""
    if isinstance(control, SpinSlider):
        control = control.spin
    if isinstance(control, QCheckBox):
        return control.toggled
    if isinstance(control, QComboBox):
        return control.currentIndexChanged
    if isinstance(control, QSpinBox | QDoubleSpinBox):
        return control.valueChanged
    raise TypeError(f"not a parameter control: {control!r}")


class PipelineEditor(QWidget):
    """Add, remove and reorder steps; the selected step's parameters are edited in a generated form."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._decls: dict[str, dict[str, Any]] = {}
        self._steps: list[Step] = []
        self.op_choice = QComboBox()
        self.op_choice.setToolTip("operations offered by the server")
        self.add_button = QPushButton("Add")
        self.steps_list = QListWidget()
        self.remove_button = QPushButton("Remove")
        self.up_button = QPushButton("Up")
        self.down_button = QPushButton("Down")
        self.params_box = QGroupBox("Parameters")
        self.params_form = QFormLayout(self.params_box)
        self._controls: dict[str, QWidget] = {}

        add_row = QHBoxLayout()
        add_row.addWidget(self.op_choice, 1)
        add_row.addWidget(self.add_button)
        move_row = QHBoxLayout()
        for button in (self.remove_button, self.up_button, self.down_button):
            move_row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(add_row)
        layout.addWidget(self.steps_list, 1)
        layout.addLayout(move_row)
        layout.addWidget(self.params_box)

        self.add_button.clicked.connect(lambda: self.add_step(self.op_choice.currentText()))
        self.remove_button.clicked.connect(self.remove_selected)
        self.up_button.clicked.connect(lambda: self.move_selected(-1))
        self.down_button.clicked.connect(lambda: self.move_selected(1))
        self.steps_list.currentRowChanged.connect(self._show_params)
        self.set_ops([])

    # -- state ----------------------------------------------------------------------

    def set_ops(self, ops: list[dict[str, Any]]) -> None:
        """The server's op list (its ``ops`` reply); steps already in the pipeline are kept."""
        self._decls = {o["name"]: o for o in ops}
        self.op_choice.clear()
        for o in ops:
            self.op_choice.addItem(o["name"])
            self.op_choice.setItemData(self.op_choice.count() - 1, o.get("doc", ""), Qt.ItemDataRole.ToolTipRole)
        self.op_choice.setEnabled(bool(ops))
        self.add_button.setEnabled(bool(ops))
        self._show_params(self.steps_list.currentRow())

    def steps(self) -> list[Step]:
        return list(self._steps)

    def text(self) -> str:
        return to_text(self._steps)

    def set_steps(self, spec: Any) -> None:
        self._steps = to_steps(spec) if spec else []
        self._refresh(len(self._steps) - 1)

    def add_step(self, name: str) -> None:
        if not name:
            return
        defaults = {k: p["default"] for k, p in self._decls.get(name, {}).get("params", {}).items()}
        self._steps.append(Step(name, defaults))
        self._refresh(len(self._steps) - 1)

    def remove_selected(self) -> None:
        row = self.steps_list.currentRow()
        if 0 <= row < len(self._steps):
            del self._steps[row]
            self._refresh(min(row, len(self._steps) - 1))

    def move_selected(self, delta: int) -> None:
        row = self.steps_list.currentRow()
        other = row + delta
        if 0 <= row < len(self._steps) and 0 <= other < len(self._steps):
            self._steps[row], self._steps[other] = self._steps[other], self._steps[row]
            self._refresh(other)

    # -- view ---------------------------------------------------------------------

    def _refresh(self, select: int) -> None:
        self.steps_list.blockSignals(True)
        self.steps_list.clear()
        for step in self._steps:
            self.steps_list.addItem(to_text([step]))
        self.steps_list.blockSignals(False)
        self.steps_list.setCurrentRow(select)
        self._show_params(select)
        self.changed.emit()

    def _show_params(self, row: int) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self._controls = {}
        if not 0 <= row < len(self._steps):
            self.params_box.setTitle("Parameters")
            return
        step = self._steps[row]
        decl = self._decls.get(step.op)
        self.params_box.setTitle(f"Parameters of {step.op}")
        if decl is None:
            return
        for name, p in decl.get("params", {}).items():
            control = make_control(p, step.params.get(name, p["default"]))
            control.setToolTip(p.get("doc", ""))
            control.setObjectName(f"param_{name}")
            control_changed(control).connect(lambda *_a, r=row: self._store_params(r))
            self._controls[name] = control
            self.params_form.addRow(name, control)

    def _store_params(self, row: int) -> None:
        if 0 <= row < len(self._steps):
            params = {name: control_value(c) for name, c in self._controls.items()}
            self._steps[row] = Step(self._steps[row].op, params)
            item = self.steps_list.item(row)
            if item is not None:
                item.setText(to_text([self._steps[row]]))
            self.changed.emit()
