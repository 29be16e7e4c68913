"""The link emulator (scripts/link.py) is the link it claims to be: bytes in order and complete, at its rate after its
delay, each way."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import load_script


@pytest.fixture
def echo_server():
    """A TCP server that sends back what it gets."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()


@pytest.mark.parametrize(("rate_mbit", "delay_ms", "megabytes"), [(20, 60, 3), (100, 20, 10)])
def test_a_transfer_takes_its_bytes_over_the_rate_plus_the_delay(echo_server, rate_mbit, delay_ms, megabytes):
    data = bytes(range(256)) * (megabytes * 4096)
    with load_script("link").link(echo_server, rate_mbit, delay_ms) as relay:
        sock = socket.create_connection(("127.0.0.1", relay.port))
        got = bytearray()
        started = time.monotonic()
        threading.Thread(target=sock.sendall, args=(data,), daemon=True).start()
        while len(got) < len(data):
            chunk = sock.recv(1 << 20)
            assert chunk, "the link closed early"
            got += chunk
        took = time.monotonic() - started
        sock.close()
    assert got == data
    ideal = len(data) * 8 / (rate_mbit * 1e6) + 2 * delay_ms / 1000  # there and back, pipelined: the rate once
    assert ideal * 0.98 <= took <= ideal * 1.15, f"{took:.2f} s for an ideal {ideal:.2f} s"


def test_cut_drops_the_connection(echo_server):
    with load_script("link").link(echo_server, 100, 1) as relay:
        sock = socket.create_connection(("127.0.0.1", relay.port))
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        relay.cut()
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the far end is gone"
