"""``zmqproc-gui`` / ``python gui_app.py``: the viewer, and its scripted mode for demos, docs and tests.

Scripted mode: ``--server EP --open FILE --pipeline TEXT --process --screenshot OUT.png
--quit-when-done`` opens the real window, runs the job, saves a screenshot of the
whole window once the result is shown and exits 0 (1, with the reason in one
sentence on stderr, if processing failed; within a few seconds when no server
answers). ``--open FILE_OR_DIR ... --batch --output-dir DIR [--name-pattern PAT]
[--format F] --quit-when-done`` runs a batch in the real window, writes each
result as it arrives, prints the summary line and exits 0 when every file
succeeded, 1 otherwise (the others still written). ``--pipeline`` takes pipeline
text or a preset's .json file. ``--curve-server-key FILE --curve-secret FILE``
connect with CURVE. ``--open CLIP.mkv`` (or ``--camera 0|URL``) plays a stream;
with ``--screenshot OUT.png --quit-when-done`` the window is saved once
``--frames N`` processed frames were shown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from ..endpoints import check as check_endpoint
from ..formats import ENCODED_FORMATS
from ..security import ClientCurve
from .compare import MODES
from .connection import ConnectionSettings
from .helpers import expand_paths
from .pipeline_editor import load_pipeline
from .window import MainWindow


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zmqproc-gui", description="The zmqproc desktop viewer.")
    p.add_argument("--server", action="append", default=[], metavar="EP", help="server endpoint (repeatable; default: the saved ones)")
    p.add_argument(
        "--open", action="append", default=[], metavar="FILE", help="image(s) to open, or sample:NAME (several fill the batch list)"
    )
    p.add_argument("--pipeline", help='pipeline text, e.g. "grayscale;gaussian_blur:ksize=5", or a preset .json file')
    p.add_argument(
        "--transfer", choices=["auto", "raw", "encoded"], help="raw pixels, the encoded file, or auto (the quickest lossless way)"
    )
    p.add_argument("--curve-server-key", metavar="FILE", help="CURVE: the server's public key (NAME.key or its Z85 text)")
    p.add_argument("--curve-secret", metavar="FILE", help="CURVE: this viewer's NAME.key_secret (only the path is saved)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take (default %(default)s)")
    p.add_argument("--process", action="store_true", help="process the opened image at once")
    p.add_argument("--batch", action="store_true", help="process every opened file (folders: their images) as a batch")
    p.add_argument("--compare", choices=list(MODES), help="how original and result are shown (default: side by side)")
    p.add_argument("--live", action="store_true", help="start with Live on: every pipeline change is processed at once")
    p.add_argument("--output-dir", metavar="DIR", help="--batch: write the results here (default: a new folder in the cache)")
    p.add_argument("--name-pattern", metavar="PAT", help="--batch: result file names, e.g. {stem}_{pipeline}.{ext}")
    p.add_argument("--format", choices=ENCODED_FORMATS, help="--batch: the results' file format (default png)")
    p.add_argument("--camera", metavar="SRC", help="play a camera: its index (0, 1, ...) or a stream URL (http://..., rtsp://...)")
    p.add_argument("--frames", type=int, default=30, help="a stream: take the screenshot / quit after this many processed frames")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window once the result is shown")
    p.add_argument("--quit-when-done", action="store_true", help="exit after processing (0 ok, 1 failed)")
    return p


class Script:
    """Drives the scripted mode: waits for the result or the batch (and the op list, for a complete window), then quits."""

    def __init__(self, window: MainWindow, args: argparse.Namespace) -> None:
        self.window, self.args = window, args
        self.outcome: tuple[bool, str] | None = None
        self.exit_code = 0
        self._done = False
        window.jobFinished.connect(self._finished)
        window.batch_panel.finished.connect(lambda summary, level: self._finished(level == "ok", summary))
        window.client.opsReceived.connect(lambda _ops: self._finished(*self.outcome) if self.outcome else None)
        if window.player.active:  # a stream: done after --frames processed frames, or at its end
            self._watch = QTimer(window)
            self._watch.timeout.connect(self._stream_progress)
            self._watch.start(100)
        # A scripted run always ends: each request ends by its deadline (sooner when no server answers); this is a guard.
        files = len(window.batch_panel.paths) if args.batch else 1
        QTimer.singleShot(round((args.timeout * files + 5) * 1000), lambda: self._finished(False, "gave up waiting for the result"))

    def _stream_progress(self) -> None:
        player = self.window.player
        if player.meter.shown >= self.args.frames or not player.active:
            self._watch.stop()
            self._finished(player.meter.shown > 0, f"{player.meter.shown} processed frames shown: {player.stats.text()}")

    def _finished(self, ok: bool, message: str) -> None:
        self.outcome = self.outcome or (ok, message)
        complete = self.window.ops or not self.outcome[0]
        QTimer.singleShot(200 if complete else 3000, self._finish)  # let the window paint; the op list may still come

    def _finish(self) -> None:
        if self._done or self.outcome is None:
            return
        self._done = True
        ok, message = self.outcome
        if self.args.screenshot and not self.window.grab().save(self.args.screenshot):
            ok, message = False, f"could not write the screenshot {self.args.screenshot}"
        print(message if ok else f"zmqproc-gui: {message}", file=sys.stdout if ok else sys.stderr)
        self.exit_code = 0 if ok else 1
        if self.args.quit_when_done:
            QApplication.exit(self.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    connection = None
    try:
        pipeline = load_pipeline(args.pipeline) if args.pipeline is not None else None
    except (OSError, ValueError) as exc:
        print(f"zmqproc-gui: bad --pipeline: {exc}", file=sys.stderr)
        return 2
    try:
        if args.server or args.curve_server_key or args.curve_secret:
            connection = ConnectionSettings([check_endpoint(e) for e in args.server] or ConnectionSettings().endpoints)
            connection.curve_server_key, connection.curve_secret = args.curve_server_key or "", args.curve_secret or ""
            ClientCurve.load(connection.curve_server_key or None, connection.curve_secret or None)
    except ValueError as exc:  # InvalidEndpoint, an unreadable key file: one sentence, no traceback
        print(f"zmqproc-gui: {exc}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("zmqproc")
    app.setApplicationName("viewer")
    window = MainWindow(connection=connection, timeout=args.timeout)
    app.aboutToQuit.connect(window.player.stop)  # a quit without closing the window: the reader's thread ends first
    if pipeline is not None:
        window.editor.set_steps(pipeline)
    if args.transfer:
        window.transfer.setCurrentIndex(window.transfer.findData(args.transfer))
    if args.compare:
        window.compare.set_mode(args.compare)
    panel = window.batch_panel
    if args.output_dir:
        panel.folder.setText(args.output_dir)
    if args.name_pattern:
        panel.pattern.setText(args.name_pattern)
    if args.format:
        panel.format.setCurrentIndex(panel.format.findData(args.format))
    window.show()
    if args.open:
        files = expand_paths(args.open)
        window.open_files(files)
        if args.batch and len(files) == 1:
            panel.set_paths(files)  # a batch of one
        if window.original is None and not window.player.active and args.quit_when_done and not args.batch:  # a batch names its own
            print(f"zmqproc-gui: cannot open {args.open[0]}", file=sys.stderr)
            return 1
    if args.camera is not None and not window.open_camera(args.camera) and args.quit_when_done:
        print(f"zmqproc-gui: {window.notice.text()}", file=sys.stderr)
        return 1
    if window.player.active and (args.screenshot or args.quit_when_done):
        watcher = Script(window, args)
        app.exec()
        return watcher.exit_code
    if args.live:
        window.live.setChecked(True)
    if args.process or args.batch:
        script = Script(window, args) if (args.screenshot or args.quit_when_done) else None
        QTimer.singleShot(0, window.start_batch if args.batch else window.process)
        code = app.exec()
        return script.exit_code if script is not None else code
    return app.exec()
