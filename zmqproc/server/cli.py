"""``zmqproc-server`` / ``server_main.py``: command line of the processing server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import endpoints
from ..protocol import Limits
from .budget import default_budget, format_size, parse_size

CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v2, v1


def memory_limits() -> tuple[int | None, int]:
    """(this container's cgroup memory limit or None, the machine's memory) in bytes."""
    limit = None
    for path in CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = int(text)
            break
    return limit, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Limits()
    p = argparse.ArgumentParser(prog="zmqproc-server", description="zmqproc processing server (ZeroMQ ROUTER).")
    p.add_argument("--bind", default="tcp://0.0.0.0:5555", help="endpoint to bind (default %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count, %(default)s)")
    p.add_argument("--max-queue", type=int, default=64, help="queued requests before 'busy' (default %(default)s)")
    p.add_argument(
        "--max-client-queue",
        type=int,
        help="the most requests one connection is granted (default: its share, (max-queue + workers) / (active connections + 1))",
    )
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, in pixels (default %(default)s)")
    p.add_argument("--max-frame-bytes", type=int, default=defaults.max_frame_bytes, help="largest payload frame (default %(default)s)")
    p.add_argument(
        "--max-memory",
        type=_size,
        help="the whole server's memory budget, e.g. 600M or 4G (default: 80%% of the container's memory limit, else half the machine's)",
    )
    p.add_argument(
        "--job-timeout", type=float, default=60.0, help="a job still running after this many seconds is stopped (default %(default)s)"
    )
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
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off; needs the metrics extra, which the image has)",
    )
    p.add_argument(
        "--metrics-bind",
        metavar="HOST",
        help="the address the metrics endpoint listens on (default: --bind's host, so 0.0.0.0 in the image; 127.0.0.1 for ipc://)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    args.ops += [spec for spec in os.environ.get("ZMQPROC_OPS", "").split(os.pathsep) if spec]
    if min(args.workers, args.max_queue, args.max_pixels, args.max_frame_bytes, args.max_client_queue or 1) < 1:
        p.error("--workers, --max-queue, --max-client-queue, --max-pixels and --max-frame-bytes must be positive")
    if not args.job_timeout > 0:
        p.error("--job-timeout must be positive")
    try:
        args.bind = endpoints.check(args.bind, bind=True)
    except ValueError as exc:
        p.error(f"--bind: {exc}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        p.error("--metrics-port must be between 0 and 65535 (0: any free port)")
    if args.metrics_bind is not None and args.metrics_port is None:
        p.error("--metrics-bind needs --metrics-port")
    if args.metrics_port is not None and args.metrics_bind is None:
        args.metrics_bind = metrics_host(args.bind)
    if (args.curve_secret is None) != (args.curve_allow is None):
        p.error("--curve-secret and --curve-allow go together")
    return args


def metrics_host(bind: str) -> str:
    """The metrics endpoint's default address: the host the server binds (``*`` is every address), 127.0.0.1 for ipc://."""
    endpoint = endpoints.parse(bind, bind=True)
    if endpoint.scheme != "tcp":
        return "127.0.0.1"
    return "0.0.0.0" if endpoint.host == "*" else endpoint.host


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("zmqproc.server")
    if args.max_memory is None:
        cgroup, machine = memory_limits()
        args.max_memory = default_budget(cgroup, machine)
        where = (
            f"80% of the cgroup limit {format_size(cgroup)}"
            if cgroup is not None and cgroup < machine
            else f"half of {format_size(machine)}"
        )
        log.info("--max-memory not given: %s (%s)", format_size(args.max_memory), where)
    # OpenCV reads its decoder limit when it is loaded: set it before cv2 (or anything importing it) is imported.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(args.max_pixels)
    import zmq

    from ..ops.plugins import PluginError, load
    from ..security import ServerCurve
    from .loop import Server, serve_until_signalled
    from .work import set_opencv_threads

    set_opencv_threads(args.opencv_threads)  # the socket loop runs light jobs itself
    try:
        load(args.ops)  # before the server: its ops reply lists them
    except PluginError as exc:  # one line naming the plugin and the problem, no traceback
        print(f"zmqproc-server: cannot load plugin ops: {exc}", file=sys.stderr)
        return 2
    limits = Limits(max_frame_bytes=args.max_frame_bytes, max_pixels=args.max_pixels)
    try:
        curve = None if args.curve_secret is None else ServerCurve.load(args.curve_secret, args.curve_allow)
    except ValueError as exc:  # unreadable CURVE keys or allow-list: one clear line
        log.error("CURVE: %s", exc)
        return 1
    exporter = None
    if args.metrics_port is not None:
        try:
            from .exporter import Exporter
        except ImportError as exc:  # the metrics extra is not installed
            log.error("--metrics-port needs prometheus-client: pip install 'zmqproc[metrics]' (%s)", exc)
            return 2
        try:
            exporter = Exporter(args.metrics_bind, args.metrics_port)
        except OSError as exc:  # the port is taken, or the address is not this machine's
            log.error("cannot serve metrics on %s port %d: %s", args.metrics_bind, args.metrics_port, exc.strerror or exc)
            return 1
        log.info("metrics on %s", exporter.url)
    server = Server(
        args.bind, args.workers, args.max_queue, limits, max_client_queue=args.max_client_queue, curve=curve,
        max_memory=args.max_memory, job_timeout=args.job_timeout, opencv_threads=args.opencv_threads,
        metrics=None if exporter is None else exporter.publish,
    )  # fmt: skip
    try:
        serve_until_signalled(server)
    except zmq.ZMQError as exc:  # e.g. the port is taken: one clear line, no traceback
        log.error("cannot serve on %s: %s", args.bind, exc)
        return 1
    except ValueError as exc:  # a budget too small for the server itself
        log.error("%s", exc)
        return 1
    finally:
        if exporter is not None:
            exporter.close()
    return 0
