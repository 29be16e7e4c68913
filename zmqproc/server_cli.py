"""``zmqproc-server`` / ``server_main.py``: command line of the processing server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import endpoints
from .protocol import Limits


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Limits()
    p = argparse.ArgumentParser(prog="zmqproc-server", description="zmqproc processing server (ZeroMQ ROUTER).")
    p.add_argument("--bind", default="tcp://0.0.0.0:5555", help="endpoint to bind (default %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker threads (default: CPU count, %(default)s)")
    p.add_argument("--max-queue", type=int, default=64, help="queued requests before 'busy' (default %(default)s)")
    p.add_argument(
        "--max-client-queue",
        type=int,
        help="the most requests one connection is granted (default: its share, (max-queue + workers) / (active connections + 1))",
    )
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, in pixels (default %(default)s)")
    p.add_argument("--max-frame-bytes", type=int, default=defaults.max_frame_bytes, help="largest payload frame (default %(default)s)")
    p.add_argument("--opencv-threads", type=int, default=1, help="OpenCV's own threads per worker (default %(default)s)")
    p.add_argument("--curve-secret", metavar="FILE", help="CURVE: the server's NAME.key_secret (from `zmqproc keygen`)")
    p.add_argument("--curve-allow", metavar="DIR", help="CURVE: directory of the client public keys (*.key) let in")
    p.add_argument(
        "--ops",
        action="append",
        default=[],
        metavar="PATH_OR_MODULE",
        help="plugin ops: a .py file, a folder of them, or a module (repeatable; also $ZMQPROC_OPS, separated by ':')",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    args.ops += [spec for spec in os.environ.get("ZMQPROC_OPS", "").split(os.pathsep) if spec]
    if min(args.workers, args.max_queue, args.max_pixels, args.max_frame_bytes, args.max_client_queue or 1) < 1:
        p.error("--workers, --max-queue, --max-client-queue, --max-pixels and --max-frame-bytes must be positive")
    try:
        args.bind = endpoints.check(args.bind, bind=True)
    except ValueError as exc:
        p.error(f"--bind: {exc}")
    if (args.curve_secret is None) != (args.curve_allow is None):
        p.error("--curve-secret and --curve-allow go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # OpenCV reads its decoder limit when it is loaded: set it before cv2 (or anything importing it) is imported.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(args.max_pixels)
    import cv2
    import zmq

    from .plugins import PluginError, load
    from .security import ServerCurve
    from .server import Server, serve_until_signalled

    cv2.setNumThreads(args.opencv_threads)
    try:
        load(args.ops)  # before the server: its ops reply lists them
    except PluginError as exc:  # one line naming the plugin and the problem, no traceback
        print(f"zmqproc-server: cannot load plugin ops: {exc}", file=sys.stderr)
        return 2
    limits = Limits(max_frame_bytes=args.max_frame_bytes, max_pixels=args.max_pixels)
    try:
        curve = None if args.curve_secret is None else ServerCurve.load(args.curve_secret, args.curve_allow)
    except ValueError as exc:  # unreadable CURVE keys or allow-list: one clear line
        logging.getLogger("zmqproc.server").error("CURVE: %s", exc)
        return 1
    try:
        server = Server(args.bind, args.workers, args.max_queue, limits, max_client_queue=args.max_client_queue, curve=curve)
        serve_until_signalled(server)
    except zmq.ZMQError as exc:  # e.g. the port is taken: one clear line, no traceback
        logging.getLogger("zmqproc.server").error("cannot serve on %s: %s", args.bind, exc)
        return 1
    return 0
