"""The fair work queue (no sockets, no threads): round-robin across clients, a client not ready keeps its turn."""

from dataclasses import dataclass

from zmqproc.server.work_queue import WorkQueue


@dataclass
class J:
    client: bytes
    request_id: str
    size: int = 1


def test_round_robin_across_clients():
    q: WorkQueue[J] = WorkQueue()
    for request_id in "123":
        q.put(J(b"flood", request_id))
    q.put(J(b"polite", "x"))
    order = [(j.client, j.request_id) for j in (q.take() for _ in range(4))]
    assert order == [(b"flood", "1"), (b"polite", "x"), (b"flood", "2"), (b"flood", "3")]
    assert q.take() is None and len(q) == 0


def test_a_job_that_does_not_fit_lets_the_next_clients_job_go_and_keeps_its_place():
    q: WorkQueue[J] = WorkQueue()
    q.put(J(b"big", "1", size=100))
    q.put(J(b"small", "1"))
    q.put(J(b"small", "2"))
    fits = lambda j: j.size <= 10  # noqa: E731
    assert q.ready(fits)
    assert q.take(fits).client == b"small"
    assert q.take(fits).request_id == "2"
    assert not q.ready(fits) and q.take(fits) is None
    assert q.take().client == b"big", "its turn comes once it fits"


def test_withdraw_only_the_clients_own_job():
    q: WorkQueue[J] = WorkQueue()
    q.put(J(b"a", "1"))
    q.put(J(b"b", "1"))
    assert q.withdraw(b"c", "1") is None
    assert q.withdraw(b"b", "1").client == b"b"
    assert q.withdraw(b"b", "1") is None
    assert len(q) == 1 and q.take().client == b"a"


def test_withdraw_where():
    q: WorkQueue[J] = WorkQueue()
    for client, request_id in ((b"a", "1"), (b"b", "2"), (b"a", "3")):
        q.put(J(client, request_id))
    assert [j.request_id for j in q.withdraw_where(lambda j: j.client == b"a")] == ["1", "3"]
    assert len(q) == 1 and [j.request_id for j in q] == ["2"]
    assert len(q.withdraw_where(lambda _: True)) == 1 and len(q) == 0 and q.take() is None


def test_put_first_goes_ahead_of_every_client():
    q: WorkQueue[J] = WorkQueue()
    q.put(J(b"a", "1"))
    q.put(J(b"b", "1"))
    q.put(J(b"b", "2"))
    q.put_first(J(b"b", "0"))
    q.put_first(J(b"c", "0"))
    order = [(j.client, j.request_id) for j in iter(q.take, None)]
    assert order == [(b"c", "0"), (b"b", "0"), (b"a", "1"), (b"b", "1"), (b"b", "2")]
