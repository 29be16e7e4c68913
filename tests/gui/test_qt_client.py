"""QtClient against real server processes: results, typed errors, cancel, timeouts, lost and regained."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_port
from tests.rawwire import holds, server_stats
from zmqproc import Client, ClientOptions
from zmqproc.errors import BadParams, Cancelled, ConnectionLost, MalformedReply, RequestTimeout, UnknownOp
from zmqproc.gui.messages import explain
from zmqproc.gui.qt_client import CONNECTED, CONNECTING, LOST, SLOW, QtClient

SLOW_WORK = "denoise:h=10,search_window=35,template_window=21"


def collect(client: QtClient) -> tuple[dict, dict]:
    done: dict = {}
    failed: dict = {}
    client.processed.connect(lambda rid, result: done.__setitem__(rid, result))
    client.failed.connect(lambda rid, err: failed.__setitem__(rid, err))
    return done, failed


def test_ops_and_process_match_the_library(qtbot, qt_client, endpoint, astronaut):
    with qtbot.waitSignal(qt_client.opsReceived, timeout=10000) as ops:
        qt_client.request_ops()
    assert {"grayscale", "gaussian_blur", "detect_faces"} <= {o["name"] for o in ops.args[0]}
    done, failed = collect(qt_client)
    pipeline = "grayscale;gaussian_blur:ksize=5"
    rid = qt_client.process(astronaut, pipeline)
    qtbot.waitUntil(lambda: rid in done or rid in failed, timeout=10000)
    assert not failed
    with Client(endpoint) as lib:
        expected = lib.process(astronaut, pipeline)
    assert np.array_equal(done[rid].image, expected)
    qtbot.waitUntil(lambda: qt_client.state == CONNECTED, timeout=5000)


@pytest.mark.parametrize(("pipeline", "error"), [("gaussian_blur:ksize=4", BadParams), ("no_such_op", UnknownOp)])
def test_error_replies_are_typed_and_explained(qtbot, qt_client, coffee, pipeline, error):
    done, failed = collect(qt_client)
    rid = qt_client.process(coffee, pipeline)
    qtbot.waitUntil(lambda: rid in failed, timeout=10000)
    assert isinstance(failed[rid], error)
    assert explain(failed[rid]).startswith(("A parameter does not fit. Step 1 (gaussian_blur): ksize must be odd", "Step 1: the server"))


def test_cancel_withdraws_queued_work(qtbot, start_server, astronaut):
    server = start_server("--workers", "1")
    client = QtClient([server.endpoint], timeout=30.0)
    try:
        done, failed = collect(client)
        big = np.ascontiguousarray(np.tile(astronaut, (3, 3, 1)))
        ids = [client.process(big, "bilateral_filter:d=15") for _ in range(6)]
        qtbot.waitUntil(lambda: holds(server.endpoint, running=1, queued=5), timeout=5000)
        for rid in ids[1:]:
            client.cancel(rid)
        qtbot.waitUntil(lambda: len(done) + len(failed) == len(ids), timeout=30000)
        cancelled = [rid for rid, err in failed.items() if isinstance(err, Cancelled)]
        assert len(cancelled) >= 3 and ids[0] in done
        assert explain(failed[cancelled[0]]) == "Cancelled."
    finally:
        client.close()


def test_request_times_out_without_server_and_the_state_turns_lost(qtbot):
    client = QtClient([f"tcp://127.0.0.1:{free_port()}"], timeout=0.3)
    try:
        done, failed = collect(client)
        rid = client.process(np.zeros((8, 8, 3), np.uint8), "invert")
        qtbot.waitUntil(lambda: rid in failed, timeout=3000)
        assert isinstance(failed[rid], RequestTimeout)
        assert client.state == CONNECTING
        qtbot.waitUntil(lambda: client.state == LOST, timeout=5000)  # after the grace (3 s)
    finally:
        client.close()


def test_the_only_server_gone_fails_pending_work_within_the_grace(qtbot, start_server, coffee):
    import signal
    import time

    server = start_server("--workers", "1")
    client = QtClient([server.endpoint], timeout=60.0)
    try:
        qtbot.waitUntil(lambda: client.state == CONNECTED, timeout=5000)
        done, failed = collect(client)
        ids = [client.process(coffee, SLOW_WORK) for _ in range(5)]
        qtbot.waitUntil(lambda: server_stats(server.endpoint)["in_flight"] > 0, timeout=5000)
        server.stop(signal.SIGKILL)
        gone = time.monotonic()
        qtbot.waitUntil(lambda: len(failed) == len(ids), timeout=10000)
        assert time.monotonic() - gone < 3.0 + 1.5, "the grace, not the 60 s deadline"
        assert all(isinstance(e, ConnectionLost) and server.endpoint in str(e) for e in failed.values())
        assert "no server reachable" in explain(failed[ids[0]]) and client.state == LOST
    finally:
        client.close()


def test_connection_lost_and_regained(qtbot):
    port = free_port()
    first = ServerProcess("--workers", "1", port=port)
    client = QtClient([first.endpoint], options=ClientOptions(keepalive=True, heartbeat=0.2), timeout=10.0)
    states: list[str] = []
    client.stateChanged.connect(lambda state, _rtt: states.append(state))
    restarted: list[str] = []
    client.serverRestarted.connect(restarted.append)
    second = None
    try:
        qtbot.waitUntil(lambda: client.state == CONNECTED, timeout=5000)
        first_epoch = client.epoch
        first.stop()
        qtbot.waitUntil(lambda: client.state == LOST, timeout=5000)
        second = ServerProcess("--workers", "1", port=port)
        qtbot.waitUntil(lambda: client.state == CONNECTED, timeout=10000)
        assert client.epoch == second.epoch != first_epoch
        assert restarted == [second.epoch]
        assert states.index(LOST) < len(states) - 1
        done, failed = collect(client)
        rid = client.process(np.zeros((4, 4, 3), np.uint8), "invert")
        qtbot.waitUntil(lambda: rid in done, timeout=5000)
    finally:
        client.close()
        first.stop()
        if second is not None:
            second.stop()


def test_two_endpoints_share_the_work_and_survive_one_dying(qtbot, start_server, coffee):
    import signal

    a, b = start_server("--workers", "1"), start_server("--workers", "1")
    client = QtClient([a.endpoint, b.endpoint], timeout=30.0)
    try:
        qtbot.waitUntil(lambda: client._session.up(0) and client._session.up(1), timeout=5000)
        done, failed = collect(client)
        ids = [client.process(coffee, "bilateral_filter:d=9") for _ in range(24)]  # at work when one dies; under the cap of 32
        qtbot.waitUntil(lambda: server_stats(a.endpoint)["in_flight"] > 0, timeout=5000)
        a.stop(signal.SIGKILL)  # its unanswered requests go to the other server
        qtbot.waitUntil(lambda: len(done) + len(failed) == len(ids), timeout=30000)
        assert not failed and set(done) == set(ids)
        assert client.resent >= 1
        with Client(b.endpoint) as lib:
            assert np.array_equal(done[ids[-1]].image, lib.process(coffee, "bilateral_filter:d=9"))
    finally:
        client.close()


def test_every_wire_code_and_client_error_has_a_sentence():
    from zmqproc.errors import ERROR_CODES, AuthenticationFailed, InvalidEndpoint, ServerCrashed, TunnelDied, error_from_wire
    from zmqproc.gui.messages import SENTENCES

    assert set(SENTENCES) == set(ERROR_CODES)
    assert explain(error_from_wire({"code": "busy", "message": "queue full"})) == SENTENCES["busy"], "retried until the deadline"
    assert "No server can be reached" in explain(ConnectionLost("gone")) and "No reply" in explain(RequestTimeout("x"))
    assert "crashed the server twice" in explain(ServerCrashed("x"))
    assert "CURVE keys" in explain(AuthenticationFailed("refused")) and "SSH tunnel" in explain(TunnelDied("x"))
    assert "Not a server address" in explain(InvalidEndpoint("'localhost:1' has no transport"))


def test_slow_indicator_and_cancel_before_sending(qtbot, endpoint):
    slow = QtClient([endpoint], options=ClientOptions(keepalive=True, slow_after=0.0))  # every round trip counts as slow
    nowhere = QtClient([f"tcp://127.0.0.1:{free_port()}"])
    try:
        qtbot.waitUntil(lambda: slow.state == SLOW and slow.rtt > 0, timeout=5000)
        done, failed = collect(nowhere)
        rid = nowhere.process(np.zeros((4, 4, 3), np.uint8), "invert")
        nowhere.cancel(rid)  # never sent (no server): withdrawn here, at once...
        assert rid not in failed and nowhere.in_flight == 0, "...and said from the event loop, never inside the call"
        qtbot.waitUntil(lambda: rid in failed, timeout=1000)
        assert isinstance(failed[rid], Cancelled)
    finally:
        slow.close()
        nowhere.close()


def test_an_error_in_a_slot_or_in_reading_a_reply_loses_no_request(qtbot, qt_client, coffee, monkeypatch):
    """The flake of a traceback inside the reply handler that lost the reply: every request still ends, exactly once."""
    from zmqproc.client import replies as replies_module

    def broken_slot(_rid, _result):
        raise RuntimeError("a bug in the application's slot")

    qt_client.processed.connect(broken_slot)
    done, failed = collect(qt_client)
    with qtbot.capture_exceptions() as raised:
        ids = [qt_client.process(coffee, "invert") for _ in range(3)]
        qtbot.waitUntil(lambda: len(done) == 3, timeout=10000)
    assert len(raised) == 3 and set(done) == set(ids) and qt_client.in_flight == 0
    monkeypatch.setattr(replies_module, "decode_processed", lambda reply: {}["image"])  # reading the reply raises KeyError
    rid = qt_client.process(coffee, "invert")
    qtbot.waitUntil(lambda: rid in failed, timeout=10000)
    assert isinstance(failed[rid], MalformedReply) and "KeyError" in str(failed[rid]) and qt_client.in_flight == 0


def test_processing_over_curve(qtbot, start_server, keys, coffee):
    from zmqproc.security import ClientCurve

    server = start_server("--workers", "1", *keys.server_args())
    client = QtClient([server.endpoint], curve=ClientCurve.load(keys.server_public, keys.client_secret), timeout=10.0)
    try:
        done, failed = collect(client)
        rid = client.process(coffee, "invert")
        qtbot.waitUntil(lambda: rid in done or rid in failed, timeout=10000)
        assert not failed and np.array_equal(done[rid].image, 255 - coffee)
    finally:
        client.close()
