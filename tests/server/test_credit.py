"""The server's flow-control ledger on its own: shares, grants by seq, and the promise that named grants are honoured."""

from __future__ import annotations

from zmqproc.protocol import PART_BYTES, Credit
from zmqproc.server.credit import CreditLedger

A, B, C = b"a", b"b", b"c"


def test_one_connection_gets_half_the_capacity_and_the_rest_waits_for_newcomers():
    ledger = CreditLedger(max_requests=10, max_bytes=1000)
    assert ledger.credit(A, 0.0) == Credit(seq=1, requests=5, bytes=500, part_bytes=PART_BYTES)
    assert ledger.credit(A, 0.1) == Credit(seq=1, requests=5, bytes=500, part_bytes=PART_BYTES), "unchanged share, same grant"


def test_every_grant_says_the_size_of_parts_even_the_first_one_while_shutting_down():
    ledger = CreditLedger(max_requests=10, max_bytes=1000)
    assert ledger.credit(A, 0.0).to_wire()["part_bytes"] == PART_BYTES == 1 << 20
    ledger.close()
    closed = ledger.credit(B, 0.0)
    assert (closed.requests, closed.part_bytes) == (0, PART_BYTES)
    assert CreditLedger(10, 1000, part_bytes=4096).credit(A, 0.0).part_bytes == 4096


def test_shares_shrink_as_connections_become_active_and_grow_back_when_they_idle():
    ledger = CreditLedger(max_requests=12, max_bytes=1200, idle_after=10.0)
    assert ledger.admit(A, None, 10, 0.0) and ledger.admit(B, None, 10, 0.0)
    shrunk = ledger.credit(A, 1.0)
    assert (shrunk.requests, shrunk.bytes) == (4, 400) and shrunk.seq == 2  # 12 // (2 active + 1)
    ledger.release(A, 10, 1.0)
    ledger.release(B, 10, 1.0)
    assert ledger.credit(A, 12.0).requests == 6, "both idle again: one slot for A, one kept free"


def test_a_request_is_judged_by_the_grant_it_names_so_shrinking_never_makes_it_busy():
    ledger = CreditLedger(max_requests=8, max_bytes=10**6)
    big = ledger.credit(A, 0.0)
    assert big.requests == 4
    for _ in range(2):
        assert ledger.admit(A, big.seq, 1, 0.0)
    assert ledger.admit(B, None, 1, 0.0) and ledger.admit(C, None, 1, 0.0)  # two more active: shares of 8 // 4 = 2
    small = ledger.credit(A, 1.0)
    assert small.requests == 2 and small.seq > big.seq
    assert ledger.admit(A, big.seq, 1, 1.0) and ledger.admit(A, big.seq, 1, 1.0), "sent under the larger grant: taken"
    assert not ledger.admit(A, big.seq, 1, 1.0), "but not beyond it"
    assert not ledger.admit(A, small.seq, 1, 1.0), "and a request naming the newer grant is judged by it"


def test_once_a_newer_grant_is_named_the_older_ones_are_forgotten():
    ledger = CreditLedger(max_requests=8, max_bytes=10**6)
    old = ledger.credit(A, 0.0)
    assert ledger.admit(B, None, 1, 0.0) and ledger.admit(C, None, 1, 0.0)
    new = ledger.credit(A, 1.0)
    assert ledger.admit(A, new.seq, 1, 1.0)
    # naming the old grant again (a client breaking the order) falls back to the current one
    assert ledger.admit(A, old.seq, 1, 1.0) and not ledger.admit(A, old.seq, 1, 1.0)


def test_without_credit_seq_the_current_grant_judges_so_a_raw_flood_is_bounded():
    ledger = CreditLedger(max_requests=6, max_bytes=10**6)
    taken = [ledger.admit(A, None, 100, 0.0) for _ in range(10)]
    assert taken == [True] * 3 + [False] * 7
    assert ledger.outstanding(A) == (3, 300)


def test_bytes_bound_the_work_but_a_lone_request_fits_whatever_its_size():
    ledger = CreditLedger(max_requests=100, max_bytes=1000)  # 500 bytes for one connection
    assert ledger.admit(A, None, 5000, 0.0), "nothing outstanding: one request of any size"
    assert not ledger.admit(A, None, 1, 0.0)
    ledger.release(A, 5000, 0.0)
    assert ledger.admit(A, None, 300, 0.0) and ledger.admit(A, None, 200, 0.0) and not ledger.admit(A, None, 1, 0.0)


def test_shutting_down_grants_nothing_and_takes_nothing():
    ledger = CreditLedger(max_requests=4, max_bytes=1000)
    before = ledger.credit(A, 0.0)
    ledger.close()
    after = ledger.credit(A, 0.1)
    assert after.requests == 0 and after.seq > before.seq
    assert not ledger.admit(A, before.seq, 1, 0.1) and not ledger.admit(B, None, 1, 0.1)


def test_a_share_is_capped_by_max_share():
    assert CreditLedger(max_requests=100, max_bytes=1000, max_share=4).credit(A, 0.0).requests == 4


def test_gone_connections_are_forgotten_but_not_while_they_have_work_out():
    ledger = CreditLedger(max_requests=4, max_bytes=100, retain=60.0)
    assert ledger.admit(A, None, 1, 0.0)
    for i in range(300):  # connections that came and went
        ledger.credit(b"old%d" % i, 1.0)
    for i in range(300):  # later ones: making their accounts prunes those not heard from for `retain`
        ledger.credit(b"new%d" % i, 100.0)
    assert len(ledger) < 400, "the ledger stays bounded by the connections heard from lately"
    assert ledger.outstanding(A) == (1, 1), "a connection with work out is kept, however old"
