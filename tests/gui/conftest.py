"""Fixtures for the viewer's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_window(qtbot, qt_settings):
    from zmqproc.gui.window import MainWindow

    def make(endpoint, timeout=60.0):
        win = MainWindow([endpoint], timeout=timeout)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        win.activateWindow()
        qtbot.waitUntil(win.isActiveWindow, timeout=5000)  # shortcuts (Ctrl+R, Esc) go to the active window, as for a user
        return win

    return make
