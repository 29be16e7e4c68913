"""The server's fair work queue (no sockets, no threads): one FIFO per client, served round-robin across clients.

How much each client may have queued is the credit ledger's business
(:mod:`zmqproc.server.credit`); this only orders the admitted work, so a client with
many queued jobs waits its turn while another client's job goes next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def client(self) -> bytes: ...

    @property
    def request_id(self) -> str: ...


J = TypeVar("J", bound=Queued)


class WorkQueue(Generic[J]):
    def __init__(self) -> None:
        self._by_client: dict[bytes, deque[J]] = {}
        self._turns: deque[bytes] = deque()  # clients with queued jobs, in serving order
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[J]:
        for client in self._turns:
            yield from self._by_client[client]

    def put(self, job: J) -> None:
        mine = self._by_client.get(job.client)
        if mine is None:
            mine = self._by_client[job.client] = deque()
            self._turns.append(job.client)
        mine.append(job)
        self._size += 1

    def put_first(self, job: J) -> None:
        """Queue ``job`` ahead of everything (work that was started and must start again)."""
        mine = self._by_client.get(job.client)
        if mine is None:
            mine = self._by_client[job.client] = deque()
        else:
            self._turns.remove(job.client)
        self._turns.appendleft(job.client)
        mine.appendleft(job)
        self._size += 1

    def take(self, ready: Callable[[J], bool] = lambda _: True) -> J | None:
        """The first client's oldest job, round-robin; a client whose oldest job is not ``ready`` keeps its turn for later."""
        for _ in range(len(self._turns)):
            client = self._turns[0]
            self._turns.rotate(-1)
            mine = self._by_client[client]
            if ready(mine[0]):
                job = mine.popleft()
                self._size -= 1
                if not mine:
                    del self._by_client[client]
                    self._turns.remove(client)
                return job
        return None

    def ready(self, ready: Callable[[J], bool]) -> bool:
        """Whether :meth:`take` would return a job."""
        return any(ready(self._by_client[client][0]) for client in self._turns)

    def withdraw(self, client: bytes, request_id: str) -> J | None:
        """Remove a queued job of ``client`` (a cancel); None if it is not queued."""
        mine = self._by_client.get(client)
        for job in mine or ():
            if job.request_id == request_id:
                assert mine is not None
                mine.remove(job)
                self._size -= 1
                self._forget_if_empty(client)
                return job
        return None

    def withdraw_where(self, doomed: Callable[[J], bool]) -> list[J]:
        """Remove and return every queued job for which ``doomed`` is true (deadlines passed, shutdown)."""
        removed = []
        for client in list(self._turns):
            mine = self._by_client[client]
            keep = deque(j for j in mine if not doomed(j))
            if len(keep) != len(mine):
                removed += [j for j in mine if doomed(j)]
                self._by_client[client] = keep
                self._size -= len(mine) - len(keep)
                self._forget_if_empty(client)
        return removed

    def _forget_if_empty(self, client: bytes) -> None:
        mine = self._by_client[client]
        if not mine:
            del self._by_client[client]
            self._turns.remove(client)
