"""The client library against real server processes: results, futures, deadlines, typed errors."""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import zmq

from tests.conftest import free_port, wait_until
from tests.rawwire import holds, server_stats
from zmqproc import BadParams, Client, ConnectionLost, RequestTimeout, UnknownOp

SLOW = "denoise:h=10,search_window=35,template_window=21"


@pytest.fixture
def client(endpoint):
    with Client(endpoint, timeout=10) as c:
        yield c


def test_process_array_in_array_out(client, astronaut):
    out = client.process(astronaut, [("grayscale", {}), ("gaussian_blur", {"ksize": 5})])
    expected = cv2.GaussianBlur(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    assert out.shape == expected.shape and np.array_equal(out, expected)


def test_pipeline_spec_forms_are_equivalent(client, coffee):
    a = client.process(coffee, "grayscale;gaussian_blur:ksize=7")
    b = client.process(coffee, ["grayscale", ("gaussian_blur", {"ksize": 7})])
    c = client.process(coffee, [{"op": "grayscale"}, {"op": "gaussian_blur", "params": {"ksize": 7}}])
    assert np.array_equal(a, b) and np.array_equal(b, c)


def test_encoded_bytes_in_and_out(client, coffee):
    png = cv2.imencode(".png", coffee)[1].tobytes()
    out = client.process(png, "flip:mode=vertical")
    assert isinstance(out, bytes) and out[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED), cv2.flip(coffee, 0))
    raw = client.process(png, "identity", reply_format="raw")
    assert np.array_equal(raw, coffee)
    jpeg = client.process(coffee, "identity", reply_format="jpeg")
    assert jpeg[:2] == b"\xff\xd8"


def test_details_carry_results_and_server_time(client, astronaut):
    found = client.process(astronaut, "detect_faces", details=True)
    assert found.server_ms > 0 and found.epoch == client.epoch
    assert len(found.results["faces"]) == 1
    x, y, w, h = found.results["faces"][0]
    assert abs(x - 177) < 10 and abs(y - 66) < 10 and abs(w - 95) < 15


def test_many_futures_in_flight(client, coffee):
    futures = [client.submit(coffee, f"rotate:angle={a}") for a in (0, 90, 180, 270) * 10]
    results = [f.result(timeout=30) for f in futures]
    assert [r.shape[:2] for r in results[:4]] == [(400, 600), (600, 400), (400, 600), (600, 400)]
    assert client.in_flight == 0


def test_submit_from_many_threads(client):
    images = [np.full((32, 32), i, np.uint8) for i in range(64)]
    out: dict[int, np.ndarray] = {}

    def work(i):
        out[i] = client.process(images[i], "invert")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(np.array_equal(out[i], 255 - images[i]) for i in range(64))


def test_blocking_calls_inside_done_callbacks(client, coffee):
    seen = []

    def chain(future):  # runs on whichever thread drives the sockets
        seen.append((future.result().shape, client.ping() > 0, client.process(coffee, "invert").shape))

    futures = [client.submit(coffee, "grayscale") for _ in range(3)]
    for f in futures:
        f.add_done_callback(chain)
    assert np.array_equal(client.process(coffee, "flip", timeout=5), cv2.flip(coffee, 1))
    for f in futures:
        f.result(timeout=10)
    wait_until(lambda: len(seen) == 3, what="three chained callbacks")
    assert seen == [((400, 600), True, (400, 600, 3))] * 3


def test_typed_errors(client, coffee):
    with pytest.raises(UnknownOp) as err:
        client.process(coffee, "no_such_op")
    assert err.value.code == "unknown_op" and "no_such_op" in str(err.value)
    with pytest.raises(BadParams, match="ksize must be odd"):
        client.process(coffee, "gaussian_blur:ksize=4")
    with pytest.raises(BadParams, match="uint8"):
        client.process(coffee.astype(np.float32), "median_blur")


def test_ping_ops_stats(client, server):
    assert 0 < client.ping() < 1.0
    assert client.epoch == server.epoch
    names = [o["name"] for o in client.ops()]
    assert "detect_faces" in names and len(names) >= 18
    stats = client.stats()
    assert stats["requests"] >= 1 and "errors" in stats and stats["epoch"] == server.epoch


def test_no_server_is_a_timeout_not_a_hang():
    with Client(f"tcp://127.0.0.1:{free_port()}", timeout=0.5) as c:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            c.process(np.zeros((8, 8), np.uint8), "identity")
        with pytest.raises(TimeoutError):
            c.ping()
        assert time.monotonic() - started < 3


def test_silent_server_is_a_timeout():
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=0.5) as c:
            future = c.submit(np.zeros((8, 8), np.uint8), "identity")
            with pytest.raises(RequestTimeout):
                future.result(timeout=5)
    finally:
        silent.close(linger=0)


def test_a_port_that_hangs_up_on_every_handshake_is_named_as_the_cause() -> None:
    """What a stopped container's docker-proxy does: accept, then close. The caller learns that, not a bare timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                listener.accept()[0].close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with Client(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=10) as c:
            started = time.monotonic()
            with pytest.raises(ConnectionLost, match="closed every connection during the handshake"):
                c.ping()
            assert time.monotonic() - started < 8, "the grace ends it, not the request's timeout"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_late_reply_is_dropped_and_the_client_goes_on(start_server, coffee):
    srv = start_server("--workers", "1")
    with Client(srv.endpoint, timeout=0.3) as c:
        with pytest.raises(RequestTimeout):
            c.process(coffee, SLOW)
        wait_until(lambda: server_stats(srv.endpoint)["ok"] == 1, what="the late reply")
        assert np.array_equal(c.process(coffee, "identity", timeout=10), coffee)


def test_cancelling_a_future_withdraws_queued_work(start_server, coffee):
    srv = start_server("--workers", "1")
    with Client(srv.endpoint, timeout=30) as c:
        running = c.submit(coffee, SLOW)
        queued = c.submit(coffee, SLOW)
        wait_until(lambda: holds(srv.endpoint, running=1, queued=1), what="one request running, one queued")
        assert queued.cancel()
        running.result(timeout=30)
        wait_until(lambda: c.stats()["errors"].get("cancelled") == 1, what="the server answering the withdrawn request")


def test_a_burst_beyond_the_servers_credit_waits_in_the_client_instead_of_busy(start_server, coffee):
    srv = start_server("--workers", "1", "--max-queue", "1")
    with Client(srv.endpoint, timeout=30) as c:
        futures = [c.submit(coffee, "median_blur:ksize=5") for _ in range(40)]
        assert all(f.result(timeout=30).shape == coffee.shape for f in futures)
        stats = c.stats()
    assert "busy" not in stats["errors"], "the client kept within its grant"


def test_close_ends_pending_requests(start_server, coffee):
    srv = start_server("--workers", "1")
    c = Client(srv.endpoint, timeout=30)
    future = c.submit(coffee, SLOW)
    c.close()
    assert isinstance(future.exception(timeout=5), ConnectionLost)
    with pytest.raises(ConnectionLost):
        c.ping()


def test_several_endpoints_share_the_work(start_server, coffee):
    a, b = start_server("--workers", "1"), start_server("--workers", "1")
    with Client([a.endpoint, b.endpoint], timeout=30) as c:
        wait_until(lambda: len(c.connected) == 2, what="both connections up")
        for _ in range(2):  # the first wave also brings each server's credit; the second is shared out by it
            for f in [c.submit(coffee, "gaussian_blur:ksize=9") for _ in range(20)]:
                f.result(timeout=30)
    for srv in (a, b):
        with Client(srv.endpoint) as one:
            assert one.stats()["ok"] >= 5


# -- sequences: Client.map (issue 21) ---------------------------------------------------------------


def test_map_yields_every_input_in_order_with_errors_as_items_and_pulls_only_as_credit_allows(endpoint):
    pulled = []

    def frames():
        for i in range(200):
            pulled.append(i)
            yield b"not an image" if i == 7 else np.full((64, 64, 3), i % 256, np.uint8)

    seen_ahead = []
    with Client(endpoint) as client:
        items = client.map(frames(), "invert")
        out = []
        for item in items:
            seen_ahead.append(len(pulled) - item.index)  # inputs pulled but not yet handed out
            out.append(item)
    assert [i.index for i in out] == list(range(200))
    assert [i.ok for i in out].count(False) == 1 and isinstance(out[7].error, ValueError), "not an image: its own item"
    assert all(np.array_equal(i.result, np.full((64, 64, 3), 255 - i.index % 256, np.uint8)) for i in out if i.ok)
    assert max(seen_ahead) <= 70, f"memory bounded by the server's credit, not by the source ({max(seen_ahead)} ahead)"


def test_breaking_out_of_map_withdraws_what_is_still_out(start_server, coffee):
    server = start_server("--workers", "1")
    heavy = "denoise:search_window=21,template_window=7"
    with Client(server.endpoint, timeout=60) as client:
        for item in client.map((coffee for _ in range(20)), heavy):
            assert item.ok
            break  # the user has seen enough
        wait_until(lambda: server_stats(server.endpoint)["in_flight"] == 0, 10, "the server dropping the rest")
        assert server_stats(server.endpoint)["errors"].get("cancelled", 0) >= 1


SLOW_OP = '''
import time
from zmqproc import op

@op
def slow(image):
    """Sleep 100 ms, then give the image back: a processing three times slower than a 30 fps source."""
    time.sleep(0.1)
    return image
'''


def camera(fps: float, frames: int, captured: dict[int, float]) -> Iterator[np.ndarray]:
    """Frames as a camera gives them: a read blocks until the next one is made."""
    start = time.monotonic()
    for i in range(frames):
        time.sleep(max(0.0, start + i / fps - time.monotonic()))
        captured[i] = time.monotonic()
        yield np.full((48, 64, 3), i, np.uint8)


def test_live_map_keeps_the_age_of_results_bounded_when_processing_is_slower_than_the_source(start_server, tmp_path):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_OP)
    server = start_server("--workers", "1", "--ops", str(plugin))
    captured: dict[int, float] = {}
    with Client(server.endpoint, timeout=30) as client:
        frames = camera(30, 90, captured)  # 3 s
        shown = [(item.index, time.monotonic() - captured[item.index]) for item in client.map(frames, "slow", latest=True)]
    ages = [age for _, age in shown[3:]]
    indexes = [index for index, _ in shown]
    assert indexes == sorted(indexes), "in order"
    assert 15 <= len(shown) <= 40, f"{len(shown)} of 90 shown: about one per 100 ms, the rest dropped"
    assert max(ages) < 0.45, f"ages {[round(a, 2) for a in ages]}: stale frames were queued"


def test_a_source_that_blocks_does_not_hold_back_the_results_ready_meanwhile(server):
    """10 frames a second, identity: each result goes out as it comes, not once the next frame has been read."""
    captured: dict[int, float] = {}
    with Client(server.endpoint, timeout=10) as client:
        lags = [time.monotonic() - captured[item.index] for item in client.map(camera(10, 20, captured), "identity")]
    assert len(lags) == 20 and statistics.median(lags) < 0.05, f"lags {[round(lag, 3) for lag in lags]}"


def test_a_live_consumer_slower_than_the_source_gets_what_was_captured_as_it_asked(server):
    """30 frames a second, a consumer that spends 100 ms on each result: what ended while it was busy is 100 ms old
    when it asks again; the frame read as it asks is due in a round trip, and is what it gets."""
    captured: dict[int, float] = {}
    ages = []
    with Client(server.endpoint, timeout=10) as client:
        for item in client.map(camera(30, 90, captured), "identity", latest=True):
            ages.append(time.monotonic() - captured[item.index])
            time.sleep(0.1)
    assert len(ages) >= 15 and statistics.median(ages[2:]) < 0.07, f"ages {[round(age, 3) for age in ages]}"


def test_a_slow_sequence_does_not_queue_its_requests_past_their_timeout(start_server, tmp_path):
    """40 inputs at 100 ms each on one worker, 2 s per request: the whole credit (33) out at once would leave the last
    ones 3.3 s in the server's queue; the stream keeps out only what the server finishes in half the timeout, at the
    rate the server gives results (not the rate a busy caller happens to take them at)."""
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_OP)
    server = start_server("--workers", "1", "--ops", str(plugin))
    items = []
    with Client(server.endpoint, timeout=2.0) as client:
        for item in client.map((np.full((8, 8), i, np.uint8) for i in range(40)), "slow"):
            items.append(item)
            if item.index == 10:
                time.sleep(1.0)  # the caller is busy (a big file to write): results pile up meanwhile
    assert [i.error for i in items if not i.ok] == [] and len(items) == 40


def test_results_come_out_while_a_slow_source_still_gives_inputs(endpoint):
    """A 30 fps source through a fast server: each result is handed out soon after its frame, not once the credit is full."""
    captured: dict[int, float] = {}

    def camera():
        start = time.monotonic()
        for i in range(45):
            time.sleep(max(0.0, start + i / 30 - time.monotonic()))
            captured[i] = time.monotonic()
            yield np.full((48, 64, 3), i, np.uint8)

    with Client(endpoint) as client:
        ages = [time.monotonic() - captured[item.index] for item in client.map(camera(), "invert")]
    assert len(ages) == 45 and max(ages) < 0.3, f"results waited up to {max(ages):.2f} s behind the source"


def test_a_big_image_reports_its_transfer_up_and_down(endpoint):
    """A fresh connection does not know its link's rate: 36 MB go in parts, and each part's answer is progress."""
    image = (np.arange(3000 * 4000 * 3) % 253).astype(np.uint8).reshape(3000, 4000, 3)
    seen = []
    with Client(endpoint, timeout=30) as c:
        future = c.submit(image, "invert", on_transfer=seen.append)
        assert np.array_equal(future.result(timeout=30), 255 - image)
    assert future.transfer is seen[-1] and seen[-1].request_id == future.request_id
    ups = [p.sent for p in seen if p.down == 0]
    downs = [p.received for p in seen if p.down]
    assert ups == sorted(ups) and ups[-1] == image.nbytes and seen[0].up == image.nbytes
    assert downs == sorted(downs) and downs[-1] == image.nbytes == seen[-1].down
    assert seen[-1].rate > 0 and seen[-1].eta == 0
