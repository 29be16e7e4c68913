"""The paramiko backend: its transport socket, its cipher order, and exactly which secrets go where (a real sshd)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np
import paramiko
import pytest

from tests.conftest import wait_until
from zmqproc import Client
from zmqproc.errors import TunnelAuthFailed, TunnelKeyLocked
from zmqproc.ssh import tunnel as tunnel_module
from zmqproc.ssh.backend_paramiko import ParamikoSession, _transport, _TransportSocket
from zmqproc.ssh.rules import PREFERRED_CIPHERS, SshOptions, server_endpoint
from zmqproc.ssh.tunnel import open_tunnel


def keygen(path: Path, passphrase: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


def authorize(sshd, key: Path) -> None:
    with open(sshd.dir / "authorized_keys", "a") as f:
        f.write(Path(f"{key}.pub").read_text())


@pytest.fixture
def no_default_logins(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    return tmp_path / "home"


def test_the_transport_socket_reads_ahead_without_losing_or_reordering_a_byte():
    with socket.create_server(("127.0.0.1", 0)) as server:
        plain = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    sock = _TransportSocket.wrap(plain)
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    with peer, sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        peer.sendall(data)
        got, sizes = bytearray(), [16, 4, 32768 + 32, 1, 100_000]
        while len(got) < len(data):
            got += sock.recv(min(sizes[len(got) % len(sizes)], len(data) - len(got)))
        assert bytes(got) == data


def test_the_transport_offers_aes_gcm_first():
    a, b = socket.socketpair()
    with a, b:
        transport = _transport(a)
        assert transport.get_security_options().ciphers[:2] == PREFERRED_CIPHERS
        assert set(transport.get_security_options().ciphers) == set(paramiko.Transport(b).get_security_options().ciphers)


@pytest.mark.sshd
def test_a_session_negotiates_aes_gcm_with_sshd(sshd, endpoint):
    listener = socket.socket(socket.AF_UNIX)
    options = SshOptions(sshd.target, key=sshd.key, known_hosts=sshd.known_hosts, timeout=5.0)
    session = ParamikoSession(options, endpoint, server_endpoint(endpoint), listener)
    session.start()
    try:
        assert session._transport is not None and session._transport.local_cipher == PREFERRED_CIPHERS[0]
    finally:
        session.stop()
        session.run()  # returns at once: the session was stopped; it releases the connection
        listener.close()


@pytest.mark.sshd
def test_a_passphrase_unlocks_the_key_and_is_never_sent_as_a_password(sshd_password, endpoint, tmp_path, no_default_logins):
    sshd = sshd_password
    locked = keygen(tmp_path / "locked", "open sesame")
    authorize(sshd, locked)
    stranger = keygen(tmp_path / "stranger", sshd.password)  # its passphrase is the login password: never offer it as one
    base = {"known_hosts": sshd.known_hosts, "timeout": 5.0, "backend": "paramiko"}
    with (
        open_tunnel(endpoint, sshd.target, key=str(locked), key_passphrase="open sesame", **base) as tunnel,
        Client(tunnel.local_endpoint, timeout=5) as client,
    ):
        assert client.ping() > 0
    with pytest.raises(TunnelKeyLocked, match="encrypted: give its passphrase"):
        open_tunnel(endpoint, sshd.target, key=str(locked), **base)
    with pytest.raises(TunnelKeyLocked, match="wrong passphrase"):
        open_tunnel(endpoint, sshd.target, key=str(locked), key_passphrase="wrong", **base)
    with pytest.raises(TunnelAuthFailed, match="refused the login") as refused:
        open_tunnel(endpoint, sshd.target, key=str(stranger), key_passphrase=sshd.password, **base)
    assert not isinstance(refused.value, TunnelKeyLocked)
    assert sshd.logins("Accepted publickey") == 1 and sshd.logins("Failed password") == 0 and sshd.logins("Accepted password") == 0


@pytest.mark.sshd
def test_an_encrypted_default_key_asks_for_its_passphrase(sshd_password, endpoint, no_default_logins):
    sshd = sshd_password
    key = keygen(no_default_logins / ".ssh" / "id_ed25519", "open sesame")
    authorize(sshd, key)
    with pytest.raises(TunnelKeyLocked, match=r"id_ed25519 is encrypted"):
        open_tunnel(endpoint, sshd.target, known_hosts=sshd.known_hosts, backend="paramiko", timeout=5.0)
    with open_tunnel(endpoint, sshd.target, known_hosts=sshd.known_hosts, key_passphrase="open sesame", timeout=5.0) as tunnel:
        assert tunnel.backend == "paramiko" and tunnel.alive()


@pytest.mark.sshd
def test_without_unix_sockets_it_keeps_one_loopback_port_across_reopens(sshd, endpoint, monkeypatch):
    monkeypatch.setattr(tunnel_module, "unix_sockets", lambda: False)
    with open_tunnel(endpoint, sshd.target, key=sshd.key, known_hosts=sshd.known_hosts, timeout=5.0) as tunnel:
        assert tunnel.backend == "paramiko" and tunnel.local_endpoint.startswith("tcp://127.0.0.1:")
        with Client(tunnel.local_endpoint, timeout=10) as client:
            assert client.ping() > 0
            sshd.kill_sessions()
            wait_until(lambda: tunnel.state == "reconnecting", 5, "the dropped session")
            wait_until(lambda: tunnel.state == "open", 10, "the reopened session")
            assert client.ping() > 0  # the same port: the DEALER reconnected by itself
    assert tunnel.state == "closed"
