"""Live preview in the viewer (issue 14): from a parameter change to its result on the screen, for a 12 MP photo.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/live_preview.py [--changes 12] [--pipeline gaussian_blur]

The real window (offscreen) with Live on, a server process with default settings on this machine, raw transfer.
Each change sets the spin box of the step's parameter, as dragging the slider does; the time runs until the
window has shown the result (QImage made, views updated: ``jobFinished``). Its parts: Live's pause before sending
(LIVE_DELAY_MS, so a drag sends once), and the rest. The baseline, measured in the same run: the same request by
the library (`Client.process`), the round trip without the viewer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from PySide6.QtCore import QEventLoop, QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.harness import zmqproc_server  # noqa: E402
from zmqproc import Client, samples  # noqa: E402
from zmqproc.gui.window import LIVE_DELAY_MS, MainWindow  # noqa: E402

PIPELINES = {"gaussian_blur": ("gaussian_blur", "ksize", (9, 11)), "sharpen": ("sharpen", "amount", (1.0, 1.5))}


def wait_for(app: QApplication, condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("the viewer did not get there in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=12)
    parser.add_argument("--pipeline", choices=list(PIPELINES), default="gaussian_blur")
    args = parser.parse_args()
    op, param, values = PIPELINES[args.pipeline]
    photo = cv2.resize(cv2.imread(str(samples.path("astronaut"))), (4000, 3000), interpolation=cv2.INTER_CUBIC)  # 12 MP
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp, zmqproc_server(2) as endpoint:
        path = str(Path(tmp) / "photo.png")
        cv2.imwrite(path, photo)
        with Client(endpoint, timeout=60) as lib:
            lib.process(photo, f"{op}:{param}={values[0]}")  # warm up
            baseline = []
            for i in range(args.changes):
                started = time.perf_counter()
                lib.process(photo, f"{op}:{param}={values[i % 2]}")
                baseline.append(time.perf_counter() - started)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)  # not the user's viewer settings
        window = MainWindow([endpoint], timeout=60.0)
        window.resize(1400, 900)
        window.show()
        wait_for(app, lambda: bool(window.ops))
        window.transfer.setCurrentIndex(window.transfer.findData("raw"))
        window.open_files([path])
        window.editor.set_steps(f"{op}:{param}={values[1]}")
        window.editor.steps_list.setCurrentRow(0)
        outcomes: list[tuple[bool, str]] = []
        window.jobFinished.connect(lambda ok, message: outcomes.append((ok, message)))
        window.live.setChecked(True)
        wait_for(app, lambda: len(outcomes) == 1)  # the first result, before any timing
        spin = window.editor._controls[param]
        spin = getattr(spin, "spin", spin)
        latencies = []
        for i in range(args.changes):
            before = len(outcomes)
            started = time.perf_counter()
            spin.setValue(values[i % 2])
            wait_for(app, lambda before=before: len(outcomes) > before)
            latencies.append(time.perf_counter() - started)
            assert outcomes[-1][0], outcomes[-1][1]
        window.close()
    delay = LIVE_DELAY_MS / 1000
    med, med_lib = statistics.median(latencies), statistics.median(baseline)
    p90 = sorted(latencies)[int(0.9 * (len(latencies) - 1))]
    print(f"12 MP photo (4000x3000x3), {op} ({param} {values[0]} <-> {values[1]}), raw transfer, {args.changes} changes")
    print("server: 2 workers, default settings, on this machine")
    print(f"change -> result shown: median {med * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms (of which Live's pause {delay * 1000:.0f} ms)")
    print(f"library round trip (baseline): median {med_lib * 1000:.0f} ms")
    print(f"viewer beyond the pause and the round trip: {(med - delay - med_lib) * 1000:.0f} ms")
    print(f"(result - pause) / library round trip: {(med - delay) / med_lib:.2f}x")


if __name__ == "__main__":
    main()
