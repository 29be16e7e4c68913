"""Servers found by DNS: an endpoint's host name stands for every address it resolves to, looked up again periodically.

A Kubernetes headless Service, Docker's service DNS or a round-robin name resolves to one address per replica; libzmq
alone would connect to the first. The drivers look names up here (the system's resolver: /etc/hosts, then DNS) and hand
the addresses to :meth:`ClientSession.discovered <zmqproc.client.session.ClientSession.discovered>`, which decides what
to connect and what to drain; :class:`Rediscovery` repeats the look-up every ``ClientOptions.rediscover`` seconds on a
thread of its own (a look-up may block on DNS), so new replicas get work within one period.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence

from ..endpoints import parse
from ..errors import InvalidEndpoint

log = logging.getLogger("zmqproc.client")


def addresses(endpoint: str) -> list[str] | None:
    """One endpoint per address ``endpoint``'s host name resolves to, in the resolver's order (empty: none); None for
    an endpoint that names no host to look up (``ipc://``, an IP address)."""
    parsed = parse(endpoint)
    if parsed.scheme != "tcp" or _literal(parsed.host):
        return None
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port, socket.AF_INET, socket.SOCK_STREAM)  # IPv4, as libzmq connects
    except (socket.gaierror, UnicodeError):
        return []
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        host = str(sockaddr[0])
        one = f"tcp://[{host}]:{parsed.port}" if family == socket.AF_INET6 else f"tcp://{host}:{parsed.port}"
        if one not in found:
            found.append(one)
    return found


def expand(endpoints: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every address of each endpoint (an endpoint without a name stands for itself), and for each the endpoint as given.

    Raises InvalidEndpoint for a name that resolves to nothing.
    """
    routes: list[str] = []
    services: list[str] = []
    for endpoint in endpoints:
        found = addresses(endpoint)
        if found == []:
            raise InvalidEndpoint(f"{endpoint}: {parse(endpoint).host} resolves to no address (no such host, or no replica is up)")
        for one in found or [endpoint]:
            routes.append(one)
            services.append(endpoint)
    return routes, services


def named(endpoints: Sequence[str]) -> list[str]:
    """The endpoints whose host is a name to look up again."""
    return [e for e in endpoints if (p := parse(e)).scheme == "tcp" and not _literal(p.host)]


class Rediscovery:
    """Looks ``services`` up every ``period`` seconds on its own thread; ``found(service, endpoints)`` with each result
    (called on that thread; an empty list: the name resolves to nothing now)."""

    def __init__(self, services: Sequence[str], period: float, found: Callable[[str, list[str]], None]) -> None:
        self.services, self.period, self._found = list(services), period, found
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zmqproc-discovery", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for service in self.services:
                try:
                    found = addresses(service) or []
                except Exception:  # a resolver fault must not end discovery
                    log.exception("looking %s up failed", service)
                    continue
                if self._stop.is_set():
                    return
                self._found(service, found)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
