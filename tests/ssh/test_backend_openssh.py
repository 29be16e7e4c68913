"""The OpenSSH backend: the installed ssh, its child's process group, encrypted keys, and a Unix socket at the far end."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess
from zmqproc import Client
from zmqproc.errors import TunnelKeyLocked
from zmqproc.ssh.backend_openssh import installed_version
from zmqproc.ssh.local import local_ends
from zmqproc.ssh.tunnel import open_tunnel


def test_installed_version():
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("no ssh client")
    assert installed_version(ssh) >= (6, 7)
    assert installed_version("/bin/true") is None and installed_version("/nonexistent/ssh") is None


@pytest.mark.sshd
def test_the_ssh_child_joins_the_watchdogs_group_and_runs_without_a_terminal(sshd, endpoint):
    with open_tunnel(endpoint, sshd.target, key=sshd.key, known_hosts=sshd.known_hosts, backend="openssh") as tunnel:
        assert tunnel.pid is not None and os.getpgid(tunnel.pid) == local_ends().process_group
        assert os.readlink(f"/proc/{tunnel.pid}/fd/0") == "/dev/null"
        cmdline = Path(f"/proc/{tunnel.pid}/cmdline").read_bytes().split(b"\0")
        assert f"{tunnel.local_endpoint[len('ipc://') :]}:{endpoint[len('tcp://') :]}".encode() in cmdline


@pytest.mark.sshd
def test_an_encrypted_key_without_an_agent_asks_for_its_passphrase(sshd_password, endpoint, tmp_path, monkeypatch):
    sshd = sshd_password
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", str(key)], check=True)
    with open(sshd.dir / "authorized_keys", "a") as f:
        f.write(Path(f"{key}.pub").read_text())
    with pytest.raises(TunnelKeyLocked, match="encrypted: give its passphrase"):
        open_tunnel(endpoint, sshd.target, key=str(key), known_hosts=sshd.known_hosts, backend="openssh", timeout=5.0)
    with open_tunnel(endpoint, sshd.target, key=str(key), key_passphrase="open sesame", known_hosts=sshd.known_hosts) as tunnel:
        assert tunnel.backend == "paramiko"  # auto: the passphrase goes to the backend that can use it


@pytest.mark.sshd
def test_a_unix_socket_at_the_far_end(sshd, astronaut):
    """The server bound on ipc:// on the SSH host: no TCP port there at all, OpenSSH forwards socket to socket."""
    far = os.path.join(tempfile.mkdtemp(prefix="zmqproc-far-"), "zmqproc.sock")
    server = ServerProcess("--workers", "1", "--bind", f"ipc://{far}")
    try:
        with Client(f"ipc://{far}", ssh=sshd.target, ssh_key=sshd.key, ssh_known_hosts=sshd.known_hosts) as client:
            (tunnel,) = client.tunnels
            assert tunnel.backend == "openssh"
            np.testing.assert_array_equal(client.process(astronaut, "invert"), 255 - astronaut)
    finally:
        server.stop()
        shutil.rmtree(os.path.dirname(far), ignore_errors=True)
