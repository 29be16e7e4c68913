"""The server's flow-control ledger, sans I/O: what each connection is granted, and whether a request fits its grant.

docs/protocol.md ("Flow control") is the contract. Each connection (a ROUTER
identity) has an account: what it has outstanding (``process`` requests taken
and not yet answered, and their payload bytes) and the grants it was sent, by
``seq``. A connection's share of the server's capacity is ``capacity // (active
+ 1)``, where active connections are those with work outstanding or sent within
``idle_after``; the ``+ 1`` keeps room for a newcomer. A request is judged by
the grant it names (``credit_seq``), so lowering a share never turns a request
sent under a larger one into ``busy``. A connection whose replies go unread is
granted one request (:meth:`throttle`) until it reads them. Every grant says
the size of the parts in which the server takes and gives big payloads
(``part_bytes``, see "Payloads in parts").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..protocol import PART_BYTES, Credit

IDLE_AFTER_S = 10.0  # no work outstanding or sent for this long: the connection no longer takes a share
RETAIN_S = 300.0  # an account not heard from for this long (and with nothing outstanding) is forgotten
GRANT_HISTORY = 32  # grants kept per connection until one of its requests names a newer one
ACTIVE_RECOUNT_S = 0.05  # how stale the count of active connections may be


@dataclass(slots=True)
class _Account:
    current: Credit
    last_heard: float
    last_work: float = float("-inf")
    outstanding: int = 0
    outstanding_bytes: int = 0
    throttled: bool = False  # its replies go unread: granted one request until they are taken
    grants: OrderedDict[int, Credit] = field(default_factory=OrderedDict)


class CreditLedger:
    """Grants shares of ``max_requests`` outstanding requests and ``max_bytes`` payload bytes to the active connections."""

    def __init__(
        self,
        max_requests: int,
        max_bytes: int,
        max_share: int | None = None,
        idle_after: float = IDLE_AFTER_S,
        retain: float = RETAIN_S,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if max_requests < 1 or max_bytes < 1:
            raise ValueError("the server's capacity must be at least one request and one byte")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_share = max_share or max_requests  # no connection is granted more requests than this
        self.idle_after = idle_after
        self.retain = retain
        self.part_bytes = part_bytes  # advertised in every grant
        self.closing = False
        self._accounts: dict[bytes, _Account] = {}
        self._active = (float("-inf"), 0)  # (counted at, count)
        self._prune_at = 64  # forget gone accounts when there are this many (then twice as many): amortised O(1)

    def __len__(self) -> int:
        return len(self._accounts)

    def active(self, now: float) -> int:
        """Connections with work outstanding, or work sent within ``idle_after``."""
        counted_at, count = self._active
        if now - counted_at > ACTIVE_RECOUNT_S:
            count = sum(1 for a in self._accounts.values() if a.outstanding or now - a.last_work <= self.idle_after)
            self._active = (now, count)
        return count

    def credit(self, client: bytes, now: float) -> Credit:
        """The grant to send in a reply to ``client`` now; a new ``seq`` when its share changed."""
        account = self._account(client, now)
        requests, size = self._share(now)
        if account.throttled and requests:
            requests, size = 1, 1
        current = account.current
        if requests != current.requests or size != current.bytes:
            account.current = Credit(current.seq + 1, requests, size, self.part_bytes)
            account.grants[account.current.seq] = account.current
            while len(account.grants) > GRANT_HISTORY:
                account.grants.popitem(last=False)
        return account.current

    def admit(self, client: bytes, credit_seq: int | None, size: int, now: float) -> bool:
        """Take a ``process`` request of ``size`` payload bytes if it fits the grant it was sent under.

        Without ``credit_seq`` (a client that ignores credit), or naming a grant
        this ledger no longer knows, the current grant judges it.
        """
        account = self._account(client, now)
        if not account.outstanding and now - account.last_work > self.idle_after:
            self._active = (float("-inf"), 0)  # a connection becomes active: recount before the next grant
        account.last_work = now
        grant = account.grants.get(credit_seq) if credit_seq is not None else None
        if grant is None:
            grant = self.credit(client, now)
        if credit_seq is not None:  # one connection's requests arrive in order: it will not name an older grant again
            while account.grants and next(iter(account.grants)) < credit_seq:
                account.grants.popitem(last=False)
        if self.closing or not grant.admits(account.outstanding, account.outstanding_bytes, size):
            return False
        account.outstanding += 1
        account.outstanding_bytes += size
        return True

    def release(self, client: bytes, size: int, now: float) -> None:
        """A request taken by :meth:`admit` was answered."""
        account = self._accounts.get(client)
        if account is not None:
            account.outstanding -= 1
            account.outstanding_bytes -= size
            account.last_heard = now

    def throttle(self, client: bytes, throttled: bool) -> None:
        """Lower ``client``'s grant to one request while its replies go unread (True), or give its share back (False).

        Requests sent under an earlier grant are still judged by it.
        """
        account = self._accounts.get(client)
        if account is not None:
            account.throttled = throttled

    def outstanding(self, client: bytes) -> tuple[int, int]:
        """(requests, payload bytes) that ``client`` has outstanding here."""
        account = self._accounts.get(client)
        return (account.outstanding, account.outstanding_bytes) if account is not None else (0, 0)

    def close(self) -> None:
        """Shutting down: every grant sent from now on is 0 requests, and nothing more is admitted."""
        self.closing = True

    def _account(self, client: bytes, now: float) -> _Account:
        account = self._accounts.get(client)
        if account is None:
            if len(self._accounts) >= self._prune_at:
                self._forget_gone(now)
                self._prune_at = max(64, 2 * len(self._accounts))
            account = self._accounts[client] = _Account(Credit(0, 0, 0, self.part_bytes), now)
        account.last_heard = now
        return account

    def _forget_gone(self, now: float) -> None:
        gone = [c for c, a in self._accounts.items() if not a.outstanding and now - a.last_heard > self.retain]
        for client in gone:
            del self._accounts[client]

    def _share(self, now: float) -> tuple[int, int]:
        """(requests, bytes) of a connection's share now."""
        if self.closing:
            return 0, 0
        slots = max(1, self.active(now)) + 1
        return max(1, min(self.max_share, self.max_requests // slots)), max(1, self.max_bytes // slots)
