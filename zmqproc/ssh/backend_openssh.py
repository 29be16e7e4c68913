"""The OpenSSH backend: one ``ssh -N -L LOCAL.sock:FAR`` child per SSH session, checked end to end before it counts as open.

The child runs without a terminal (stdin /dev/null, ``BatchMode``), in the watchdog's process group (so it ends with
this process, even one killed by SIGKILL: zmqproc/ssh/local.py), and what it prints on stderr becomes the typed error.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import IO

from ..endpoints import Endpoint
from ..errors import TunnelAuthFailed, TunnelDied, TunnelError, TunnelUnreachable
from .local import local_ends
from .rules import SshOptions, key_is_encrypted, key_locked, openssh_command, openssh_version, ssh_failure

POLL = 0.02  # seconds between tries of the local socket while ssh starts


@functools.lru_cache(maxsize=8)
def installed_version(ssh: str) -> tuple[int, int] | None:
    """The OpenSSH version of the ``ssh`` binary, or None if it is not OpenSSH (or does not run)."""
    try:
        done = subprocess.run([ssh, "-V"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return openssh_version(done.stderr + done.stdout)


class OpenSSHSession:
    """One ssh child forwarding ``local_path`` to the server endpoint; a new one replaces it when it dies."""

    def __init__(self, ssh: str, version: tuple[int, int], options: SshOptions, endpoint: str, remote: Endpoint, local_path: str) -> None:
        self.command = openssh_command(ssh, version, local_path, remote, options)
        self.options, self.endpoint, self.local_path = options, endpoint, local_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Start ssh and wait until a connection through it is greeted by the server: typed errors within the timeout."""
        deadline = time.monotonic() + self.options.timeout
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (ssh writes here while it lives; closed in stop())
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            process_group=local_ends().process_group,
        )
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def run(self) -> TunnelError:
        """Wait until ssh exits (the connection dropped, keepalives unanswered, or :meth:`stop`); return why."""
        assert self.proc is not None
        code = self.proc.wait()
        lines = self.stderr().strip().splitlines()
        said = lines[-1] if lines else "no message"
        self.stop()
        return TunnelDied(f"ssh (tunnel to {self.endpoint} through {self.options.target}) exited with {code}: {said}")

    def stop(self) -> None:
        """End ssh (SIGTERM, SIGKILL after 2 s) and reap it; idempotent, and safe from two threads at once."""
        self._stopped = True
        with self._lock:  # close() and the tunnel's own thread (after ssh exited) may both stop it
            proc = self.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self._stderr is not None:
                self._stderr.close()

    def stderr(self) -> str:
        """What ssh has printed so far ("" once stopped)."""
        with self._lock:
            if self._stderr is None or self._stderr.closed:
                return ""
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")

    def _wait_ready(self, deadline: float) -> None:
        """Return once the forward works end to end; else the typed error ssh's words (or the timeout) say."""
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise self._failure(self.stderr())
            if self._stopped:
                raise TunnelDied("the tunnel was closed while it opened")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TunnelUnreachable(
                    f"no tunnel through {self.options.target} within the timeout (ssh said: {self.stderr().strip() or 'nothing'})"
                )
            greeted = self._probe(left)
            if greeted is None:
                time.sleep(POLL)  # ssh is not listening yet
                continue
            if greeted:
                return
            time.sleep(0.1)  # ssh closed our connection: the server end refused it; let ssh write its "open failed" line
            raise self._failure(self.stderr() or "open failed")

    def _probe(self, left: float) -> bool | None:
        """None: nothing listens yet; True: a ZMTP peer greeted (or stayed silent) through the tunnel; False: closed at once."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(max(0.1, min(left, 2.0)))
            try:
                probe.connect(self.local_path)
            except OSError:
                return None
            try:
                return probe.recv(1) != b""
            except TimeoutError:
                return True  # silent, but the channel opened
            except OSError:
                return False

    def _failure(self, stderr: str) -> TunnelError:
        error = ssh_failure(stderr, self.options.target, self.endpoint)
        if type(error) is TunnelAuthFailed and self.options.key and _encrypted(self.options.key):
            return key_locked(self.options.key, error)
        return error


def _encrypted(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return key_is_encrypted(f.read())
    except OSError:
        return False
