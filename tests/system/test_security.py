"""CURVE (IronHouse) against real server processes: allowed, unknown and wrong keys, restarts, keygen."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq.auth

from tests.conftest import ROOT, ServerProcess, free_port
from tests.fixtures.curve import Keys
from zmqproc.client.threaded import Client
from zmqproc.errors import AuthenticationFailed, ConnectionLost
from zmqproc.security import ClientCurve, generate_keypair, load_keypair, load_public_key


def test_allowed_key_gets_served(start_server, keys: Keys, astronaut: np.ndarray) -> None:
    srv = start_server("--workers", "1", *keys.server_args())
    assert "CURVE on: server public key" in srv.output() and "1 client keys allowed" in srv.output()
    with Client(srv.endpoint, timeout=10, curve_server_key=keys.server_public, curve_client_key=keys.client_secret) as c:
        assert c.ping() < 10
        assert np.array_equal(c.process(astronaut, "invert"), 255 - astronaut)
    # the server key also works as its Z85 text, the form one pastes into a config
    z85 = zmq.auth.load_certificate(keys.server_public)[0].decode()
    with Client(srv.endpoint, timeout=10, curve_server_key=z85, curve_client_key=keys.client_secret) as c:
        c.ping()


def test_unknown_key_is_refused_quickly(start_server, keys: Keys, astronaut: np.ndarray) -> None:
    srv = start_server("--workers", "1", *keys.server_args())
    with Client(srv.endpoint, timeout=10, curve_server_key=keys.server_public, curve_client_key=keys.stranger_secret) as c:
        started = time.monotonic()
        future = c.submit(astronaut, "invert")
        with pytest.raises(AuthenticationFailed, match="not in the server's allow-list"):
            future.result(timeout=15)
        assert time.monotonic() - started < 5, "a refused key must not wait for the whole timeout"
        # lost for good: a later request ends with the same typed error at once
        with pytest.raises(AuthenticationFailed):
            c.ping(timeout=0.5)
    # a client without CURVE is not served either, and is told why
    # (the mismatch itself, or, when the server hangs up before the client's greeting is through, a handshake cut short)
    with Client(srv.endpoint, timeout=5) as plain, pytest.raises((AuthenticationFailed, ConnectionLost), match="CURVE keys"):
        plain.ping()
    # nothing of theirs reached the server application: it counts only the allowed client's requests
    with Client(srv.endpoint, timeout=10, curve_server_key=keys.server_public, curve_client_key=keys.client_secret) as c:
        assert c.stats()["requests"] == 2  # its hello ping (which brings the connection's credit) and this stats


def test_wrong_server_key_is_a_clear_error_within_the_timeout(start_server, keys: Keys) -> None:
    srv = start_server("--workers", "1", *keys.server_args())
    impostor_public, _ = generate_keypair("impostor", keys.dir)
    with Client(srv.endpoint, timeout=3, curve_server_key=impostor_public, curve_client_key=keys.client_secret) as c:
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed, match="server public key is wrong"):
            c.ping()
        # at the deadline: a wrong key looks like a server still starting (peer cuts the handshake), which libzmq retries
        assert time.monotonic() - started < 3 + 0.5


def test_curve_client_against_a_plain_server(endpoint: str, keys: Keys) -> None:
    with (
        Client(endpoint, timeout=3, curve_server_key=keys.server_public, curve_client_key=keys.client_secret) as c,
        pytest.raises(AuthenticationFailed, match="does not use CURVE"),
    ):
        c.ping()


def test_curve_client_keeps_working_after_a_server_restart(keys: Keys) -> None:
    """NetGear loses its keys on reconnect; libzmq keeps them on the socket, so this must just work."""
    port = free_port()
    first = ServerProcess("--workers", "1", *keys.server_args(), port=port)
    second = None
    try:
        with Client(first.endpoint, timeout=10, curve_server_key=keys.server_public, curve_client_key=keys.client_secret) as c:
            c.ping()
            assert c.epoch == first.epoch
            assert first.stop() == 0
            second = ServerProcess("--workers", "1", *keys.server_args(), port=port)
            c.ping()
            assert c.epoch == second.epoch != first.epoch
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_server_refuses_to_start_with_unusable_curve_options(keys: Keys, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "server_main.py", "--bind", f"tcp://127.0.0.1:{free_port()}", *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)

    half = run("--curve-secret", str(keys.server_secret))
    assert half.returncode == 2 and "go together" in half.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_clients = run("--curve-secret", str(keys.server_secret), "--curve-allow", str(empty))
    assert no_clients.returncode == 1 and "holds no *.key file" in no_clients.stderr
    public_only = run("--curve-secret", str(keys.server_public), "--curve-allow", str(keys.allow))
    assert public_only.returncode == 1 and "holds no secret key" in public_only.stderr


def test_keygen_cli(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "zmqproc", "keygen", "laptop", "--dir", str(tmp_path / "keys")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    public, secret = tmp_path / "keys" / "laptop.key", tmp_path / "keys" / "laptop.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text() and "secret-key" in secret.read_text()
    pub, sec = load_keypair(secret)
    assert load_public_key(public) == pub and len(pub) == len(sec) == 40
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr
    assert secret.read_bytes() and load_keypair(secret) == (pub, sec)  # never overwritten


def test_key_loading_errors(keys: Keys) -> None:
    with pytest.raises(ValueError, match="both"):
        ClientCurve.load(keys.server_public, None)
    with pytest.raises(ValueError, match="neither a key file"):
        load_public_key("not-a-key")
    with pytest.raises(ValueError, match="holds no secret key"):
        load_keypair(keys.server_public)
    assert ClientCurve.load(None, None) is None
