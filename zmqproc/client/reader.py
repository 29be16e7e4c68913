"""A stream's source read on a thread of its own, so a source that blocks (a camera waiting for its next frame, a file to
read and check) never holds back the results that are ready meanwhile.

Each read is reported on the driver's event queue: ``(INPUT, value)``, ``(END,)`` at the source's end, ``(RAISED, exc)``
when reading it raised. At most ``ahead`` inputs are read and not yet :meth:`Reader.taken`, so memory stays bounded
whatever the source's length (and the two threads seldom wait for each other). ``live``: the source is read without
pause, a fresher input replacing one not taken yet (a camera's frames keep coming): ``(INPUT,)`` says one waits in
:meth:`Reader.take`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

INPUT, END, RAISED = "input", "end", "raised"
AHEAD = 4  # inputs read ahead at most (not live)


class Reader:
    def __init__(self, source: Iterator[Any], events: queue.SimpleQueue[Any], live: bool, ahead: int = AHEAD) -> None:
        self._source, self._events, self._live = source, events, live
        self._lock = threading.Lock()
        self._room = threading.Semaphore(ahead)
        self._slot: list[Any] = []  # live: the freshest input read and not taken yet
        self._passed_over = 0  # live: inputs replaced in the slot before they were taken
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="zmqproc-map-reader", daemon=True)
        self._thread.start()

    def taken(self) -> None:
        """Not live: an input read ahead is in the stream now; room for one more."""
        self._room.release()

    def take(self) -> tuple[Any, int]:
        """Live: the freshest input read, and how many were read before it and never taken."""
        with self._lock:
            value, passed = self._slot.pop(), self._passed_over
            self._passed_over = 0
        return value, passed

    def stop(self) -> None:
        """No more reads (one under way ends first: the thread is a daemon, never joined while a source blocks)."""
        self._stopped = True
        self._room.release()

    def _run(self) -> None:
        while True:
            if not self._live:
                self._room.acquire()
            if self._stopped:
                return
            try:
                value = next(self._source)
            except StopIteration:
                self._events.put((END,))
                return
            except BaseException as exc:  # the caller's source failed: map() raises it, as a direct read would
                self._events.put((RAISED, exc))
                return
            if not self._live:
                self._events.put((INPUT, value))
                continue
            with self._lock:
                fresh = not self._slot
                if not fresh:
                    self._slot.pop()
                    self._passed_over += 1
                self._slot.append(value)
            if fresh:
                self._events.put((INPUT,))
