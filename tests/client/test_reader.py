"""A stream's source on a thread of its own: one input ahead on request, or (live) the freshest, its end and its failure
reported as events."""

from __future__ import annotations

import itertools
import queue
import threading

import pytest

from zmqproc.client.reader import END, INPUT, RAISED, Reader


def test_inputs_are_read_ahead_a_few_at_most():
    reads = []

    def source():
        for i in range(6):
            reads.append(i)
            yield i

    events: queue.SimpleQueue = queue.SimpleQueue()
    reader = Reader(source(), events, live=False, ahead=2)
    assert [events.get(timeout=5) for _ in range(2)] == [(INPUT, 0), (INPUT, 1)]
    with pytest.raises(queue.Empty):
        events.get(timeout=0.1)
    assert reads == [0, 1], "two ahead, none taken: the source is not read further"
    for i in range(2, 6):
        reader.taken()
        assert events.get(timeout=5) == (INPUT, i)
    reader.taken()
    assert events.get(timeout=5) == (END,)


def test_a_live_source_keeps_the_freshest_input_and_counts_the_ones_passed_over():
    made = threading.Semaphore(0)

    def camera():
        for i in itertools.count():
            yield i
            made.release()

    events: queue.SimpleQueue = queue.SimpleQueue()
    reader = Reader(camera(), events, live=True)
    assert events.get(timeout=5) == (INPUT,)
    for _ in range(20):
        assert made.acquire(timeout=5)
    value, passed_over = reader.take()
    assert value >= 19 and passed_over == value, "every input before the freshest was passed over"
    reader.stop()


def test_a_source_that_raises_reports_it_and_reads_no_more():
    def source():
        yield 1
        raise OSError("the camera is gone")

    events: queue.SimpleQueue = queue.SimpleQueue()
    Reader(source(), events, live=False)
    assert events.get(timeout=5) == (INPUT, 1)
    kind, error = events.get(timeout=5)
    assert kind == RAISED and isinstance(error, OSError)


def test_a_stopped_reader_reads_no_more():
    reads = []

    def source():
        for i in range(10):
            reads.append(i)
            yield i

    events: queue.SimpleQueue = queue.SimpleQueue()
    reader = Reader(source(), events, live=False, ahead=1)
    assert events.get(timeout=5) == (INPUT, 0)
    reader.stop()
    reader.taken()
    with pytest.raises(queue.Empty):
        events.get(timeout=0.2)
    assert reads == [0]
