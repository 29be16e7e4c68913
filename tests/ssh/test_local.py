"""Owner-only local ends: the private directory, its sockets, and the watchdog that cleans up after a killed process."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, wait_until
from zmqproc import endpoints
from zmqproc.ssh.local import local_ends, unix_listener


def test_the_directory_is_private_fresh_and_its_sockets_fit_an_ipc_endpoint():
    ends = local_ends()
    mode = os.stat(ends.root).st_mode
    assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o700 and os.stat(ends.root).st_uid == os.getuid()
    path = ends.socket_path()
    assert path != ends.socket_path() and os.path.dirname(path) == ends.root
    endpoints.parse(f"ipc://{path}")  # at most 107 bytes
    listener = unix_listener(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and ends.watchdog.poll() is None
    finally:
        listener.close()
        os.unlink(path)


KILLED = """
import subprocess, sys, time
from zmqproc.ssh.local import local_ends
ends = local_ends()
child = subprocess.Popen(["sleep", "600"], process_group=ends.process_group)  # as an ssh child joins it
print(ends.root, child.pid, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_owner_ends_its_children_and_removes_the_directory():
    proc = subprocess.Popen([sys.executable, "-c", KILLED], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    root, child = proc.stdout.readline().split()
    assert Path(root).is_dir() and Path(f"/proc/{child}").exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not Path(root).exists(), 3, "the watchdog removing the directory")
    wait_until(lambda: not _running(int(child)), 3, "the watchdog ending the child")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
