"""The worker pool with real processes: shared-memory round trips, a killed job's worker replaced, a crash reported."""

from __future__ import annotations

import os
import select
import signal
import time

import numpy as np
import pytest

from zmqproc import ops
from zmqproc.images import ImageDescriptor
from zmqproc.protocol import Step
from zmqproc.server import work
from zmqproc.server.pool import Died, Finished, WorkerPool


def spec(image: np.ndarray, *steps: Step, reply: str = "raw") -> work.Spec:
    return work.Spec.of(ImageDescriptor("raw", image.dtype.name, image.shape), ops.validate_pipeline(list(steps)), reply, 10**8)


def next_events(pool: WorkerPool, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select(pool.fds(), [], [], 0.1)
        if events := pool.events():
            return events
    pytest.fail("no event from the pool")


def wait_idle(pool: WorkerPool, n: int) -> None:
    deadline = time.monotonic() + 20
    while pool.idle() < n:
        assert time.monotonic() < deadline, "workers did not come up"
        select.select(pool.fds(), [], [], 0.1)
        assert pool.events() == []


@pytest.fixture
def pool():
    p = WorkerPool(2)
    p.start()
    wait_idle(p, 2)
    yield p
    p.close()


def test_pixels_go_through_shared_memory_both_ways(pool):
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for _ in range(3):  # the segments are reused
        pool.submit(1, spec(image, Step("invert")), image, image.nbytes)
        (done,) = next_events(pool)
        assert isinstance(done, Finished) and done.outcome.code == "ok" and done.segment is not None
        out = np.frombuffer(done.outcome.result, np.uint8).reshape(image.shape)
        assert np.array_equal(out, 255 - image) and done.outcome.fields["image"]["shape"] == [480, 640, 3]
        del out
        done.outcome.result.release()
        pool.release(done.segment)


def test_an_encoded_reply_larger_than_its_estimate_comes_through_the_pipe(pool):
    image = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # noise: a PNG larger than 64 KiB
    pool.submit(2, spec(image, Step("identity"), reply="png"), image, 16)
    (done,) = next_events(pool)
    assert done.outcome.code == "ok" and done.segment is None and bytes(done.outcome.result[:4]) == b"\x89PNG"


def test_errors_come_back_typed(pool):
    image = np.zeros((8, 8), np.float32)
    pool.submit(3, spec(image, Step("invert")), image, 256)
    (done,) = next_events(pool)
    assert done.outcome.code == "bad_params" and "invert takes uint8, uint16" in done.outcome.error.message


def test_a_killed_job_is_stopped_at_once_and_its_worker_replaced(pool):
    image = np.random.default_rng(2).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    pool.submit(4, spec(image, Step("denoise", {"search_window": 35, "template_window": 21})), image, image.nbytes)
    started = time.monotonic()
    pool.kill(4)
    (died,) = next_events(pool)
    assert died == Died(4, -signal.SIGKILL) and time.monotonic() - started < 1
    wait_idle(pool, 2)
    assert pool.started == 3
    small = np.zeros((4, 4, 3), np.uint8)
    pool.submit(5, spec(small, Step("invert")), small, small.nbytes)
    (done,) = next_events(pool)
    assert done.job == 5 and done.outcome.code == "ok"


def test_a_worker_that_dies_by_itself_is_reported_with_its_job(pool):
    image = np.random.default_rng(3).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    pool.submit(6, spec(image, Step("denoise", {"search_window": 35})), image, image.nbytes)
    for pid in pool.pids():
        os.kill(pid, signal.SIGSEGV)  # as if an op crashed
    died: list = []
    while len(died) < 2:
        died += next_events(pool)
    assert Died(6, -signal.SIGSEGV) in died and Died(None, -signal.SIGSEGV) in died
    wait_idle(pool, 2)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] in "ZX"
    except OSError:  # gone between the open and the read (ProcessLookupError), or before it
        return True


@pytest.mark.parametrize("size", [(4, 4, 3), (1200, 1600, 3)], ids=["cached-segments", "new-segments"])
def test_a_job_given_to_a_worker_already_dead_is_reported_undelivered(pool, size):
    image = np.zeros(size, np.uint8)
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)  # between jobs: nothing has noticed yet
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pool.pids()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pool.submit(7, spec(image, Step("invert")), image, image.nbytes)  # the pipe is broken: no exception reaches the caller
    died: list = []
    while len(died) < 2:
        died += next_events(pool)
    assert Died(7, -signal.SIGKILL, delivered=False) in died and Died(None, -signal.SIGKILL) in died
    wait_idle(pool, 2)
    pool.submit(8, spec(image, Step("invert")), image, image.nbytes)
    (done,) = next_events(pool)
    assert done.job == 8 and done.outcome.code == "ok"


def test_a_segment_is_unmapped_after_a_failed_job_whatever_it_raised(pool):
    """The reproducer's cause: an error's traceback held a view of the input segment, so the next remap failed."""
    import cv2

    small = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))[1]
    broken = small[: len(small) // 2]
    big = cv2.imencode(".png", np.random.default_rng(4).integers(0, 256, (1500, 2000, 3), dtype=np.uint8))[1]
    for job, payload, expected in (
        (1, small, "ok"),
        (2, broken, "decode_failed"),
        (3, big, "ok"),
        (4, broken, "decode_failed"),
        (5, big, "ok"),
    ):
        pool.submit(
            job, work.Spec.of(ImageDescriptor("png"), ops.validate_pipeline([Step("identity")]), "raw", 10**8), payload, 2000 * 1500 * 3
        )
        (done,) = next_events(pool)
        assert (done.job, done.outcome.code) == (job, expected)
        if done.segment is not None:
            done.outcome.result.release()
            pool.release(done.segment)
    assert pool.started == 2, "no worker died"
