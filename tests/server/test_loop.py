"""The server as a raw pyzmq client sees it: every kind, every error code, limits, shutdown."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from tests.conftest import wait_until
from tests.rawwire import RawDealer, holds, process_header, server_stats

HELPER_OPS = str(Path(__file__).parent.parent / "server_with_failing_op.py")


@pytest.fixture
def raw(endpoint):
    dealer = RawDealer(endpoint)
    yield dealer
    dealer.close()


def error_code(reply):
    header, frames = reply
    assert header["status"] == "error" and frames == []
    assert isinstance(header["error"]["message"], str) and header["error"]["message"]
    return header["error"]["code"]


def test_ping_answers_time_and_epoch(raw, server):
    header, frames = raw.call({"v": 1, "id": "p1", "kind": "ping"})
    assert header["status"] == "ok" and header["id"] == "p1" and header["v"] == 1
    assert abs(header["time"] - time.time()) < 5 and header["epoch"] == server.epoch and frames == []


def test_ops_lists_declared_params(raw):
    header, _ = raw.call({"v": 1, "id": "o1", "kind": "ops"})
    ops = {o["name"]: o for o in header["ops"]}
    assert {"identity", "gaussian_blur", "detect_faces", "threshold"} <= set(ops)
    ksize = ops["gaussian_blur"]["params"]["ksize"]
    assert ksize["type"] == "int" and ksize["default"] == 5 and ksize["min"] == 1 and ksize["max"] == 99
    assert ops["threshold"]["params"]["method"]["choices"] == ["fixed", "otsu"]


def test_process_raw_round_trip(raw):
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    header, frames = raw.call(process_header("r1", [48, 64, 3], [{"op": "invert"}]), image.tobytes())
    assert header["status"] == "ok" and header["id"] == "r1"
    assert header["image"] == {"format": "raw", "dtype": "uint8", "shape": [48, 64, 3]}
    assert header["server_ms"] >= 0
    out = np.frombuffer(frames[0], np.uint8).reshape(48, 64, 3)
    assert np.array_equal(out, 255 - image)


def test_process_encoded_default_reply_is_same_format(raw, coffee):
    import cv2

    png = cv2.imencode(".png", coffee)[1].tobytes()
    header, frames = raw.call({"v": 1, "id": "e1", "kind": "process", "pipeline": [{"op": "grayscale"}], "image": {"format": "png"}}, png)
    assert header["image"] == {"format": "png"}
    decoded = cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, cv2.cvtColor(coffee, cv2.COLOR_BGR2GRAY))


def test_stats_counts(raw):
    raw.call({"v": 1, "id": "s0", "kind": "nonsense"})
    header, _ = raw.call({"v": 1, "id": "s1", "kind": "stats"})
    assert header["status"] == "ok"
    for key in ("requests", "ok", "errors", "in_flight", "queue_length", "uptime_s"):
        assert key in header
    assert header["errors"].get("unknown_kind", 0) >= 1 and header["requests"] >= 2


@pytest.mark.parametrize(
    ("raw_header", "code"),
    [
        (b"\xc1not msgpack", "bad_request"),
        (msgpack.packb([1, 2, 3]), "bad_request"),
        (msgpack.packb({"v": 1, "kind": "ping"}), "bad_request"),
        (msgpack.packb({"v": 1, "id": "", "kind": "ping"}), "bad_request"),
        (msgpack.packb({"v": 1, "id": "x" * 129, "kind": "ping"}), "bad_request"),
        (msgpack.packb({"v": 1, "id": 7, "kind": "ping"}), "bad_request"),
    ],
)
def test_unreadable_headers_answer_with_nil_id(raw, raw_header, code):
    reply = raw.call(None, raw_header=raw_header)
    assert error_code(reply) == code and reply[0]["id"] is None


@pytest.mark.parametrize(
    ("header", "payload", "code"),
    [
        ({"v": 2, "kind": "ping"}, [], "unsupported_version"),
        ({"v": "1", "kind": "ping"}, [], "unsupported_version"),
        ({"kind": "ping"}, [], "bad_request"),
        ({"v": 1, "kind": "dance"}, [], "unknown_kind"),
        ({"v": 1, "kind": 5}, [], "bad_request"),
        ({"v": 1, "kind": "ping"}, [b"extra"], "bad_request"),
        ({"v": 1, "kind": "cancel"}, [], "bad_request"),
        (process_header("", [2, 2, 3]), [], "bad_request"),
        ({**process_header("", [2, 2, 3]), "pipeline": []}, [b"\0" * 12], "bad_request"),
        (process_header("", [2, 2, 3], [{"op": "nope"}]), [b"\0" * 12], "unknown_op"),
        (process_header("", [2, 2, 3], [{"op": "gaussian_blur", "params": {"ksize": 4}}]), [b"\0" * 12], "bad_params"),
        (process_header("", [2, 2, 3], [{"op": "gaussian_blur", "params": {"size": 3}}]), [b"\0" * 12], "bad_params"),
        (
            process_header("", [2, 2, 3], [{"op": "median_blur"}], image={"format": "raw", "dtype": "float32", "shape": [2, 2]}),
            [b"\0" * 16],
            "bad_params",
        ),
        (process_header("", [2, 2, 3]), [b"\0" * 11], "decode_failed"),
        (process_header("", [2, 2, 5]), [b"\0" * 20], "bad_request"),
        (process_header("", [2, 2, 3], image={"format": "gif"}), [b"GIF89a"], "bad_request"),
        (process_header("", [2, 2, 3], image={"format": "png"}), [b"not a png at all"], "decode_failed"),
        (process_header("", [2, 2, 3], reply_format="gif"), [b"\0" * 12], "bad_request"),
        (process_header("", [2, 2, 3], deadline_ms=-1), [b"\0" * 12], "bad_request"),
        (process_header("", [2, 2, 3], pipeline=[{"op": "identity"}] * 17), [b"\0" * 12], "bad_request"),
        (
            process_header("", [2, 2, 3], reply_format="jpeg", image={"format": "raw", "dtype": "float32", "shape": [2, 2]}),
            [b"\0" * 16],
            "bad_params",
        ),
    ],
)
def test_each_malformed_request_gets_its_code_and_id(raw, header, payload, code):
    header = {**header, "id": "bad-1"}
    reply = raw.call(header, *payload)
    assert error_code(reply) == code
    assert reply[0]["id"] == "bad-1"


def test_png_announcing_a_huge_image_is_too_large_before_decoding(raw):
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    reply = raw.call({"v": 1, "id": "bomb", "kind": "process", "pipeline": [{"op": "identity"}], "image": {"format": "png"}}, png)
    assert error_code(reply) == "too_large"


def test_growing_pipelines_meet_the_pixel_limit_and_do_not_hold_up_the_loop(start_server):
    srv = start_server("--workers", "1", "--max-pixels", "1000000")
    dealer, other = RawDealer(srv.endpoint), RawDealer(srv.endpoint)
    try:
        grow = [{"op": "resize", "params": {"width": 999, "height": 1000}}] + [{"op": "rotate", "params": {"angle": 45}}] * 2
        assert error_code(dealer.call(process_header("g", [1, 1, 3], grow), b"\0" * 3)) == "too_large"
        blur = [{"op": "resize", "params": {"width": 999, "height": 1000}}] + [{"op": "gaussian_blur", "params": {"ksize": 99}}] * 6
        dealer.send(process_header("slow", [1, 1, 3], blur), b"\0" * 3)
        header, _ = other.call({"v": 1, "id": "p", "kind": "ping"})  # answered by the loop while a worker blurs
        assert header["status"] == "ok" and not dealer.sock.poll(0), "the ping did not wait for the blur"
        done, _ = dealer.recv()
        assert done["id"] == "slow" and done["status"] == "ok" and done["image"]["shape"] == [1000, 999, 3]
    finally:
        dealer.close()
        other.close()


def test_limits_from_the_command_line(start_server):
    srv = start_server("--workers", "1", "--max-pixels", "100", "--max-frame-bytes", "1000")
    dealer = RawDealer(srv.endpoint)
    try:
        assert error_code(dealer.call(process_header("a", [11, 10, 1]), b"\0" * 110)) == "too_large"
        assert error_code(dealer.call(process_header("b", [10, 10, 3], image={"format": "png"}), b"\0" * 1001)) == "too_large"
        assert (
            error_code(dealer.call(None, raw_header=msgpack.packb({"v": 1, "id": "c", "kind": "ping", "pad": "x" * 70000}))) == "too_large"
        )
        header, _ = dealer.call(process_header("d", [10, 10, 1]), b"\0" * 100)
        assert header["status"] == "ok"
    finally:
        dealer.close()


SLOW = [{"op": "denoise", "params": {"h": 10, "search_window": 35, "template_window": 21}}]


def slow_request(request_id, **extra):
    image = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    return process_header(request_id, [200, 200, 3], SLOW, **extra), image.tobytes()


def test_a_client_ignoring_its_credit_gets_busy_at_once_and_ping_still_answered(start_server):
    srv = start_server("--workers", "1", "--max-queue", "4")
    dealer = RawDealer(srv.endpoint)
    try:
        dealer.send(*slow_request("q0"))
        wait_until(lambda: holds(srv.endpoint, running=1, queued=0), what="the worker taking q0")
        grant = dealer.call({"v": 1, "id": "p", "kind": "ping"})[0]["credit"]
        assert grant["requests"] == (4 + 1) // 2, "one active connection: half the capacity, the rest kept for newcomers"
        for i in range(1, grant["requests"] + 3):  # three more than the grant leaves room for
            dealer.send(*slow_request(f"q{i}"))
        replies = {}
        while len(replies) < 3:
            header, _ = dealer.recv()
            replies[header["id"]] = header
        assert {h["error"]["code"] for h in replies.values()} == {"busy"}, "busy replies come before any work is done"
        header, _ = dealer.call({"v": 1, "id": "alive", "kind": "ping"})
        assert header["id"] == "alive" and header["status"] == "ok"
        for _ in range(grant["requests"]):
            header, _ = dealer.recv()
            assert header["status"] == "ok"
    finally:
        dealer.close()


def test_requests_within_the_credit_they_name_are_never_busy(start_server):
    srv = start_server("--workers", "1", "--max-queue", "6")
    polite, newcomer = RawDealer(srv.endpoint), RawDealer(srv.endpoint)
    try:
        first = polite.call({"v": 1, "id": "p", "kind": "ping"})[0]["credit"]
        assert first["seq"] >= 1 and first["requests"] == (6 + 1) // 2
        for i in range(first["requests"]):  # the whole grant, named
            polite.send(*slow_request(f"a{i}", credit_seq=first["seq"]))
        wait_until(lambda: holds(srv.endpoint, running=1, queued=first["requests"] - 1), what="the grant taken")
        newcomer.send(*slow_request("n0"))  # a second active connection halves the shares...
        wait_until(lambda: holds(srv.endpoint, running=1, queued=first["requests"]), what="the newcomer's request taken")
        later = polite.call({"v": 1, "id": "p2", "kind": "ping"})[0]["credit"]
        assert later["seq"] > first["seq"] and later["requests"] < first["requests"]
        codes = [polite.recv()[0]["status"] for _ in range(first["requests"])] + [newcomer.recv()[0]["status"]]
        assert codes == ["ok"] * (first["requests"] + 1), "...but what was sent under the larger grant is served, and the newcomer too"
    finally:
        polite.close()
        newcomer.close()


def test_deadline_passed_in_the_queue_is_answered_timeout(start_server):
    srv = start_server("--workers", "1")
    dealer = RawDealer(srv.endpoint)
    try:
        dealer.send(*slow_request("first"))
        dealer.send(*slow_request("late", deadline_ms=1))
        codes = {}
        for _ in range(2):
            header, _ = dealer.recv()
            codes[header["id"]] = header["status"] if header["status"] == "ok" else header["error"]["code"]
        assert codes == {"first": "ok", "late": "timeout"}
    finally:
        dealer.close()


def test_cancel_drops_queued_work(start_server):
    srv = start_server("--workers", "1")
    dealer = RawDealer(srv.endpoint)
    try:
        dealer.send(*slow_request("running"))
        dealer.send(*slow_request("queued"))
        wait_until(lambda: holds(srv.endpoint, running=1, queued=1), what="one request running, one queued")
        dealer.send({"v": 1, "id": "c1", "kind": "cancel", "target": "queued"})
        dealer.send({"v": 1, "id": "c2", "kind": "cancel", "target": "never-sent"})
        replies = {}
        for _ in range(4):
            header, _ = dealer.recv()
            replies[header["id"]] = header
        assert replies["queued"]["error"]["code"] == "cancelled"
        assert replies["c1"]["status"] == "ok" and replies["c1"]["cancelled"] is True
        assert replies["c2"]["cancelled"] is False
        assert replies["running"]["status"] == "ok"
    finally:
        dealer.close()


def test_cancel_only_reaches_the_same_clients_work(start_server):
    srv = start_server("--workers", "1")
    owner, other = RawDealer(srv.endpoint), RawDealer(srv.endpoint)
    try:
        owner.send(*slow_request("running"))
        owner.send(*slow_request("mine"))
        wait_until(lambda: holds(srv.endpoint, running=1, queued=1), what="one request running, one queued")
        header, _ = other.call({"v": 1, "id": "c", "kind": "cancel", "target": "mine"})
        assert header["cancelled"] is False
        ids = {owner.recv()[0]["id"] for _ in range(2)}
        assert ids == {"running", "mine"}
    finally:
        owner.close()
        other.close()


def test_exception_in_an_op_is_internal_and_the_server_keeps_serving(start_server):
    srv = start_server("--workers", "1", script=HELPER_OPS)
    dealer = RawDealer(srv.endpoint)
    try:
        reply = dealer.call(process_header("boom", [2, 2, 3], [{"op": "explode"}]), b"\0" * 12)
        assert error_code(reply) == "internal" and reply[0]["id"] == "boom"
        header, _ = dealer.call(process_header("after", [2, 2, 3]), b"\0" * 12)
        assert header["status"] == "ok"
    finally:
        dealer.close()
    srv.stop()
    assert "Traceback" in srv.output() and "RuntimeError: deliberate failure" in srv.output()


def test_replies_to_a_client_that_left_are_dropped_and_counted(start_server):
    srv = start_server("--workers", "1")
    leaving = RawDealer(srv.endpoint)
    leaving.send(*slow_request("orphan"))
    wait_until(lambda: holds(srv.endpoint, running=1, queued=0), what="the worker taking the request")
    leaving.close()
    wait_until(lambda: server_stats(srv.endpoint)["dropped_replies"] == 1, what="the reply to the gone client being dropped")
    assert server_stats(srv.endpoint)["in_flight"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_work_in_flight_and_exits_zero_within_5s(start_server, sig):
    srv = start_server("--workers", "1")
    dealer = RawDealer(srv.endpoint)
    try:
        for i in range(3):
            dealer.send(*slow_request(f"w{i}"))
        wait_until(lambda: holds(srv.endpoint, running=1, queued=2), what="w0 running, two queued")
        results = {}

        def collect():
            for _ in range(3):
                header, _ = dealer.recv()
                results[header["id"]] = header["status"] if header["status"] == "ok" else header["error"]["code"]

        reader = threading.Thread(target=collect)
        reader.start()
        started = time.monotonic()
        code = srv.stop(sig)
        elapsed = time.monotonic() - started
        reader.join(timeout=5)
        assert code == 0 and elapsed < 5.0
        assert set(results) == {"w0", "w1", "w2"}, "every request in flight is answered"
        assert set(results.values()) <= {"ok", "busy"}
    finally:
        dealer.close()


def test_no_input_stops_the_server(raw):
    rng = np.random.default_rng(7)
    for _ in range(300):
        frames = [bytes(rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8)) for _n in range(rng.integers(1, 4))]
        raw.sock.send_multipart(frames)
    replies = 0
    while replies < 300:
        header, _ = raw.recv()
        assert header["status"] == "error"
        replies += 1
    header, _ = raw.call({"v": 1, "id": "still", "kind": "ping"})
    assert header["status"] == "ok"


def test_port_taken_is_one_clear_line(server):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run(
        [sys.executable, "server_main.py", "--bind", server.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 1
    assert "cannot serve on" in out.stderr and "Traceback" not in out.stderr


def test_zmq_socket_identity_never_reaches_the_client(raw):
    raw.sock.send_multipart([msgpack.packb({"v": 1, "id": "i", "kind": "ping"})])
    frames = raw.sock.recv_multipart()
    assert len(frames) == 1 and msgpack.unpackb(frames[0])["id"] == "i"
    assert raw.sock.type == zmq.DEALER
