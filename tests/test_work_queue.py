"""The fair, bounded work queue (no sockets)."""

import threading

import pytest

from zmqproc.protocol import Request
from zmqproc.work_queue import Job, QueueFull, WorkQueue


def job(client: bytes, request_id: str) -> Job:
    return Job(client, Request(request_id, "process"), [], 0.0, None)


def test_limits():
    q = WorkQueue(maxlen=3, per_client=2)
    q.put(job(b"a", "1"))
    q.put(job(b"a", "2"))
    with pytest.raises(QueueFull, match="this client"):
        q.put(job(b"a", "3"))
    q.put(job(b"b", "1"))
    with pytest.raises(QueueFull, match="queue is full"):
        q.put(job(b"c", "1"))
    assert len(q) == 3


def test_round_robin_across_clients():
    q = WorkQueue(maxlen=10)
    for request_id in "123":
        q.put(job(b"flood", request_id))
    q.put(job(b"polite", "x"))
    order = [(j.client, j.request.id) for j in (q.get() for _ in range(4))]
    assert order == [(b"flood", "1"), (b"polite", "x"), (b"flood", "2"), (b"flood", "3")]


def test_withdraw_only_the_clients_own_job():
    q = WorkQueue(maxlen=10)
    q.put(job(b"a", "1"))
    q.put(job(b"b", "1"))
    assert q.withdraw(b"c", "1") is None
    assert q.withdraw(b"b", "1").client == b"b"
    assert q.withdraw(b"b", "1") is None
    assert len(q) == 1 and q.get().client == b"a"


def test_close_releases_waiting_workers_after_the_rest():
    q = WorkQueue(maxlen=10)
    q.put(job(b"a", "1"))
    got = []
    workers = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
    for w in workers:
        w.start()
    q.close()
    for w in workers:
        w.join(5)
    assert sorted(j.request.id if j else "none" for j in got) == ["1", "none", "none"]


def test_withdraw_all():
    q = WorkQueue(maxlen=10)
    q.put(job(b"a", "1"))
    q.put(job(b"b", "2"))
    assert {j.request.id for j in q.withdraw_all()} == {"1", "2"} and len(q) == 0
