"""The tunnels' local ends, usable by their owner only, and cleaned up when this process ends, even by SIGKILL.

Every tunnel listens on a Unix socket in this process's private directory (mode 0700, made fresh under
``$XDG_RUNTIME_DIR`` or the temp directory), never on a TCP port: another local user cannot connect, and no port is
chosen, released and then squatted. A watchdog (``sh``, one per process, started with the first tunnel) waits on a
pipe that only this process holds; when the pipe closes (this process ended, however) it removes the directory and
signals its process group, which every ``ssh`` child joins at start: no ssh outlives the process that started it.
Where there are no Unix sockets, :func:`tcp_listener` binds a loopback port the forwarder keeps for its lifetime.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading

from .. import endpoints
from ..errors import InvalidEndpoint

# $1: the directory. `read` returns when the pipe's last writer (this process) is gone; then clean up, end the group.
WATCHDOG = 'read -r _; rm -rf -- "$1"; kill -TERM 0'
_lock = threading.Lock()
_ends: LocalEnds | None = None


def unix_sockets() -> bool:
    """Whether tunnels can listen on Unix sockets here (every POSIX system; not Windows)."""
    return os.name == "posix" and hasattr(socket, "AF_UNIX")


class LocalEnds:
    """This process's private socket directory and the watchdog that removes it (and ends the ssh children)."""

    def __init__(self) -> None:
        self.root = _private_dir()
        self._names = itertools.count(1)
        read_end, self._pipe = os.pipe()  # both ends close-on-exec: children other than the watchdog never hold it
        try:
            self.watchdog = subprocess.Popen(
                ["/bin/sh", "-c", WATCHDOG, "zmqproc-tunnel-watchdog", self.root],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=0,  # its own group (no Ctrl-C from the terminal); the ssh children join it
            )
        except BaseException:
            os.close(self._pipe)
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        finally:
            os.close(read_end)

    def socket_path(self) -> str:
        """A fresh socket path in the private directory (its ``ipc://`` form fits zmq's 107 bytes)."""
        return os.path.join(self.root, f"{next(self._names)}.sock")

    @property
    def process_group(self) -> int:
        """The group an ssh child joins (``Popen(process_group=...)``) so the watchdog can end it."""
        return self.watchdog.pid

    def close(self) -> None:
        """At exit: remove the directory and let the watchdog go (the tunnels are closed already)."""
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(timeout=2)


def local_ends() -> LocalEnds:
    """This process's LocalEnds, made with the first tunnel (a new one if the watchdog was killed)."""
    global _ends
    with _lock:
        if _ends is None or _ends.watchdog.poll() is not None:
            _ends = LocalEnds()
        return _ends


def shutdown_local_ends() -> None:
    """At exit, after the tunnels are closed: remove the directory and let the watchdog go."""
    global _ends
    with _lock:
        ends, _ends = _ends, None
    if ends is not None:
        ends.close()


def unix_listener(path: str) -> socket.socket:
    """A Unix socket listening at ``path`` (in the private directory, so only this user can connect)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(16)
    except BaseException:
        listener.close()
        raise
    return listener


def tcp_listener() -> socket.socket:
    """The fallback without Unix sockets: a 127.0.0.1 port bound by the forwarder and kept for its lifetime."""
    return socket.create_server(("127.0.0.1", 0), backlog=16)


def _private_dir() -> str:
    """A fresh directory only this user can enter, short enough that its sockets fit an ipc:// endpoint."""
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"):
        if not base or ":" in base or not os.path.isdir(base):  # ':' would split ssh's -L argument
            continue
        path = tempfile.mkdtemp(prefix="zmqproc-", dir=base)  # mode 0700, a name nobody could have prepared
        try:
            endpoints.parse(f"ipc://{path}/999999.sock")
        except InvalidEndpoint:
            os.rmdir(path)
            continue
        return path
    raise OSError("no directory for the tunnels' Unix sockets: $XDG_RUNTIME_DIR and the temp directory are missing or too long")
