"""The server's bounded, fair work queue (no sockets): shared by the socket loop and the workers.

Each client (a ROUTER identity) has its own FIFO, capped; the workers take
jobs round-robin across clients, so one client flooding the server gets
``busy`` and waits its turn while another client's work still gets served.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .protocol import Request


@dataclass(slots=True)
class Job:
    client: bytes
    request: Request
    pipeline: list[tuple[Any, dict[str, Any]]]
    received: float
    deadline: float | None
    size: int = 0  # payload bytes, as counted by the credit ledger


class QueueFull(Exception):
    """The job was not queued; ``reason`` says which limit it hit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkQueue:
    """At most ``maxlen`` queued jobs in all, ``per_client`` of them from any one client."""

    def __init__(self, maxlen: int, per_client: int | None = None) -> None:
        self.maxlen = maxlen
        self.per_client = per_client or maxlen
        self._by_client: dict[bytes, deque[Job]] = {}
        self._turns: deque[bytes] = deque()  # clients with queued jobs, in serving order
        self._size = 0
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return self._size

    def put(self, job: Job) -> None:
        """Queue ``job`` or raise QueueFull."""
        with self._cond:
            if self._size >= self.maxlen:
                raise QueueFull(f"the queue is full ({self.maxlen} requests)")
            mine = self._by_client.get(job.client)
            if mine is not None and len(mine) >= self.per_client:
                raise QueueFull(f"this client already has {self.per_client} requests queued")
            if mine is None:
                mine = self._by_client[job.client] = deque()
                self._turns.append(job.client)
            mine.append(job)
            self._size += 1
            self._cond.notify()

    def get(self) -> Job | None:
        """The next job, round-robin across clients; None once the queue is closed and empty."""
        with self._cond:
            while not self._size and not self._closed:
                self._cond.wait()
            if not self._size:
                return None
            client = self._turns.popleft()
            mine = self._by_client[client]
            job = mine.popleft()
            if mine:
                self._turns.append(client)
            else:
                del self._by_client[client]
            self._size -= 1
            return job

    def withdraw(self, client: bytes, request_id: str) -> Job | None:
        """Remove a queued job of ``client`` (a cancel); None if it is not queued."""
        with self._cond:
            mine = self._by_client.get(client)
            for job in mine or ():
                if job.request.id == request_id:
                    assert mine is not None
                    mine.remove(job)
                    self._size -= 1
                    if not mine:
                        del self._by_client[client]
                        self._turns.remove(client)
                    return job
        return None

    def withdraw_all(self) -> list[Job]:
        with self._cond:
            jobs = [job for client in self._turns for job in self._by_client[client]]
            self._by_client.clear()
            self._turns.clear()
            self._size = 0
            return jobs

    def close(self) -> None:
        """Wake the workers: get() returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
