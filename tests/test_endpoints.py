"""The one endpoint parser: what users type, and a message that says what would work."""

from __future__ import annotations

import pytest

from zmqproc import endpoints
from zmqproc.endpoints import Endpoint
from zmqproc.errors import InvalidEndpoint


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("tcp://127.0.0.1:5555", Endpoint("tcp", "127.0.0.1", 5555)),
        ("  tcp://gpu-box.lab:80 ", Endpoint("tcp", "gpu-box.lab", 80)),
        ("tcp://[::1]:5599", Endpoint("tcp", "::1", 5599)),
        ("ipc:///run/zmqproc/zmqproc.sock", Endpoint("ipc", path="/run/zmqproc/zmqproc.sock")),
        ("ipc://@abstract", Endpoint("ipc", path="@abstract")),
    ],
)
def test_valid_endpoints_parse_and_print_back(text, parsed):
    assert endpoints.parse(text) == parsed
    assert str(parsed) == text.strip() and endpoints.check(text) == text.strip()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("localhost:5599", "write tcp://localhost:5599"),
        ("127.0.0.1:5599", "write tcp://127.0.0.1:5599"),
        ("[::1]:5599", "write tcp://[::1]:5599"),
        ("5599", "tcp://127.0.0.1:5599"),
        ("gpu-box", "tcp://gpu-box:5555"),
        ("/tmp/zmqproc.sock", "ipc:///tmp/zmqproc.sock"),
        ("", "empty"),
        ("tcp://localhost", "not tcp://HOST:PORT"),
        ("tcp://localhost:0", "between 1 and 65535"),
        ("tcp://localhost:99999", "between 1 and 65535"),
        ("tcp://*:5555", "not tcp://HOST:PORT"),
        ("ws://localhost:5555", "tcp:// and ipc://"),
        ("ipc://", "socket path"),
        ("ipc:///" + "x" * 200, "at most 107 bytes"),
        ("hello world", "tcp://127.0.0.1:5555"),
    ],
)
def test_mistakes_say_what_would_work(text, words):
    with pytest.raises(InvalidEndpoint) as err:
        endpoints.parse(text)
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)  # callers that catch ValueError keep working


def test_bind_endpoints_may_use_wildcards():
    assert endpoints.parse("tcp://*:5555", bind=True) == Endpoint("tcp", "*", 5555)
    assert endpoints.parse("tcp://127.0.0.1:*", bind=True) == Endpoint("tcp", "127.0.0.1", 0)
    assert endpoints.parse("tcp://127.0.0.1:0", bind=True) == Endpoint("tcp", "127.0.0.1", 0)
    assert str(endpoints.parse("tcp://0.0.0.0:5555", bind=True)) == "tcp://0.0.0.0:5555"
