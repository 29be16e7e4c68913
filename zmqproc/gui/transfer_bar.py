"""The progress of the window's job while its image or its result travels in parts: a bar for the status bar, and the
words to show beside it (:func:`~zmqproc.gui.messages.transfer`).

The session parts only what the link carries in more than about half a second, and the bar appears only for a job
that has lasted that long (or will), so a quick request never flashes it. It shows one way at a time: ↑ while the
image goes up, ↓ while the result comes down.
"""

from __future__ import annotations

import time

from PySide6.QtWidgets import QProgressBar, QWidget

from ..client.events import Progress
from . import messages

SHOW_AFTER_S = 0.5  # a transfer shorter than this shows no bar
STEPS = 1000


class TransferBar(QProgressBar):
    """Hidden until :meth:`moved` says a transfer of the job started at ``started`` is worth showing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, STEPS)
        self.setFixedSize(180, self.fontMetrics().height() + 2)  # no taller than the status bar's text, shown or not
        self.setTextVisible(True)
        self.hide()
        self._started = 0.0

    def start(self, started: float) -> None:
        """A new job (``started``: its time.monotonic()); nothing shown yet."""
        self._started = started
        self.stop()

    def stop(self) -> None:
        self.hide()
        self.setValue(0)

    def moved(self, progress: Progress) -> str | None:
        """A part moved: the bar follows it; the status text to show, or None while the transfer is too short to show."""
        uploading = progress.down == 0
        done, total = (progress.sent, progress.up) if uploading else (progress.received, progress.down)
        if total <= 0:
            return None
        eta = progress.eta
        if not self.isVisible() and time.monotonic() - self._started < SHOW_AFTER_S and eta is not None and eta < SHOW_AFTER_S:
            return None
        self.setFormat(("↑" if uploading else "↓") + " %p%")
        self.setValue(round(STEPS * done / total))
        self.show()
        return messages.transfer(done, total, progress.rate, uploading)
