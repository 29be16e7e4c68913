"""Fixtures for the viewer's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_window(qtbot, qt_settings):
    from zmqproc.gui.window import MainWindow

    def make(endpoint, timeout=60.0, pipeline=None):
        """The window, connected; with ``pipeline`` (text), once the server's ops came, that pipeline in the editor."""
        win = MainWindow([endpoint], timeout=timeout)
        qtbot.addWidget(win)
        win.resize(1200, 800)
        win.show()
        win.activateWindow()
        qtbot.waitUntil(win.isActiveWindow, timeout=5000)  # shortcuts (Ctrl+R, Esc) go to the active window, as for a user
        if pipeline is not None:
            from zmqproc.gui.pipeline_editor import load_pipeline

            qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
            win.editor.set_steps(load_pipeline(pipeline))
        return win

    return make
