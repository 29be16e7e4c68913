"""Discovery in the session, sans I/O: a name's addresses come and go (issue 24); new ones get work, gone ones drain."""

from __future__ import annotations

from tests.client.test_session import FakeServer, Rig
from zmqproc.client.events import RouteAdded, RouteRetired
from zmqproc.client.session import ClientSession

NAME = "tcp://zmqproc.svc:5555"


def rig_of(*addresses: str) -> Rig:
    """A Rig whose routes are the addresses of one name."""
    rig = Rig(routes=len(addresses))
    rig.session = ClientSession(list(addresses), rig.session.options, rig.now, services=[NAME] * len(addresses))
    return rig


def found(rig: Rig, *addresses: str) -> list[object]:
    """The name resolves to these now: the session's route events (the Rig gets a server for each new route)."""
    rig.session.discovered(NAME, list(addresses), rig.now)
    events = rig.session.events()
    for event in events:
        if isinstance(event, RouteAdded):
            rig.servers.append(FakeServer(epoch=f"E{event.route}"))
    rig.events += events
    return [e for e in events if isinstance(e, RouteAdded | RouteRetired)]


def test_a_new_address_becomes_a_route_and_gets_work():
    rig = rig_of("tcp://127.0.0.2:5555")
    rig.connect()
    assert found(rig, "tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555") == [RouteAdded(1, "tcp://127.0.0.3:5555")]
    rig.connect(1)
    rig.submit(6)
    assert rig.held(0) == rig.held(1) == 3, "the fewest outstanding first: the new replica takes its share"
    assert [e for e, _, _ in rig.session.replicas()] == ["tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555"]


def test_a_gone_address_drains_its_work_then_is_retired_and_gets_nothing_new():
    rig = rig_of("tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555")
    rig.connect()
    out = rig.submit(4)
    assert rig.held(0) == rig.held(1) == 2
    assert found(rig, "tcp://127.0.0.2:5555") == []
    assert ("tcp://127.0.0.3:5555", "draining", rig.session.routes[1].rtt) in rig.session.replicas()
    more = rig.submit(2)
    assert rig.held(1) == 2 and rig.held(0) == 4, "nothing new goes to a draining route"
    rig.answer(1)
    assert RouteRetired(1) in rig.events and not rig.session.up(1)
    while rig.held(0):
        rig.answer(0)
    assert sorted(rig.results) == sorted(out + more), "nothing lost"
    assert [e for e, _, _ in rig.session.replicas()] == ["tcp://127.0.0.2:5555"]


def test_a_gone_replica_that_died_holding_work_has_it_resent_to_the_others():
    rig = rig_of("tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555")
    rig.connect()
    out = rig.submit(4)
    found(rig, "tcp://127.0.0.2:5555")
    rig.session.disconnected(1, rig.now)  # the replica was deleted with its address
    rig.pump()
    assert RouteRetired(1) in rig.events
    while rig.held(0):
        rig.answer(0)
    assert sorted(rig.results) == sorted(out)


def test_a_name_that_resolves_to_nothing_keeps_the_last_addresses_and_one_that_comes_back_is_not_drained():
    rig = rig_of("tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555")
    rig.connect()
    assert found(rig) == []
    assert [s for _, s, _ in rig.session.replicas()] == ["connected", "connected"]
    rig.submit(2)  # one on each
    found(rig, "tcp://127.0.0.2:5555")
    assert found(rig, "tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555") == [], "back before it was closed: the same route"
    rig.submit(2)
    assert rig.held(0) == rig.held(1) == 2


def test_a_retired_address_that_comes_back_is_a_new_route_and_state_ignores_the_retired():
    rig = rig_of("tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555")
    rig.connect()
    assert found(rig, "tcp://127.0.0.2:5555") == [], "retired in the driver's next turn"
    rig.pump()
    assert RouteRetired(1) in rig.events
    rig.session.disconnected(0, rig.now)
    rig.advance(1.0)
    assert found(rig, "tcp://127.0.0.2:5555", "tcp://127.0.0.3:5555") == [RouteAdded(2, "tcp://127.0.0.3:5555")]
    rig.connect(0, 2)
    assert rig.session.state[0] == "connected"
    (one,) = rig.submit(1)
    rig.answer(0)
    rig.answer(2)
    assert one in rig.results
