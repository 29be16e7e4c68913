"""The client library: futures for every request, a DEALER per endpoint, and the session that decides.

``process`` blocks for one result; ``submit`` returns a :class:`concurrent.futures.Future` so many requests can be in
flight. Every request ends with its result, a typed :class:`~zmqproc.errors.ProcessingError` from the server, or a
:class:`~zmqproc.errors.ClientError` (RequestTimeout, ConnectionLost, ServerCrashed, ...), never a hang. What is sent
where and when, retries, resends and giving up are the :class:`~zmqproc.client.session.ClientSession`'s rules; this module only
moves frames, time and futures.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from ..endpoints import check as check_endpoint
from ..errors import BadParams, Cancelled, ConnectionLost, RequestTimeout, ZmqprocError
from ..images import MAX_CLIENT_PIXELS, ImageDescriptor, decode_image, describe_file, dtype_name, encode_image, png_ratio, sniff_format
from ..security import ClientCurve
from ..zmqflags import POLLIN, POLLOUT, readable, recv_frames
from . import dealer, discovery
from .events import Fail, Progress, Resolve, RouteAdded, RouteRetired
from .pipeline import PipelineSpec, to_steps, to_text
from .reader import END, INPUT, RAISED, Reader
from .replies import Processed
from .session import ClientOptions, ClientSession
from .stream import Item, Stream
from .tiles import TiledJob, pixel_bytes, tile_size
from .transfer import AUTO, BLIND_BYTES, PNG, RAW, Link, Ratios, choose, png_holds

if TYPE_CHECKING:
    from ..ssh.tunnel import Tunnel

__all__ = ["Client", "ClientOptions", "Processed"]

log = logging.getLogger("zmqproc.client")
STREAM_POLL_S = 0.05  # map(): how long it waits for news before it looks again (credit may have come meanwhile)
_ENDS = (Resolve, Fail)  # the session's events that end a future


class Client:
    """Talk to one or more zmqproc servers (several endpoints share the work, no broker).

    Each endpoint gets its own DEALER and monitor, so the session knows which server holds which request.
    Whoever waits drives the sockets (leader/followers): a thread blocked in :meth:`process`, :meth:`ping`, ...
    sends, polls and receives itself while no other thread does, so a lone caller pays no thread hand-off; the
    client's own thread drives while futures from :meth:`submit` wait with nobody blocked on them. Only the thread
    holding the I/O lock touches a socket; the session is guarded by another lock.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        timeout: float = 10.0,
        *,
        options: ClientOptions | None = None,
        context: zmq.Context[Any] | None = None,
        curve_server_key: str | os.PathLike[str] | None = None,
        curve_client_key: str | os.PathLike[str] | None = None,
        ssh: str | None = None,
        ssh_key: str | None = None,
        ssh_password: str | None = None,
        ssh_key_passphrase: str | None = None,
        ssh_backend: str = "auto",
        ssh_known_hosts: str | None = None,
        ssh_accept_new_host_key: bool = False,
    ) -> None:
        """``timeout``: seconds a request may take; ``options``: grace, heartbeat, memory bound (:class:`ClientOptions`).

        CURVE: ``curve_server_key`` is the server's public key (file or Z85 text), ``curve_client_key`` this client's
        secret key file. ``ssh="user@host[:port]"``: each endpoint (as seen from that host) through a tunnel this client owns.
        """
        self.endpoints = [check_endpoint(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)]
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        curve = ClientCurve.load(curve_server_key, curve_client_key)  # key errors before any socket exists
        self.timeout = timeout
        self.options = options or ClientOptions()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.tunnels: list[Tunnel] = []
        if ssh:
            from ..ssh.tunnel import open_tunnels  # paramiko loads only for SSH users: a health probe stays light

            self.tunnels = open_tunnels(
                self.endpoints,
                ssh,
                key=ssh_key,
                password=ssh_password,
                key_passphrase=ssh_key_passphrase,
                backend=ssh_backend,
                known_hosts=ssh_known_hosts,
                accept_new_host_key=ssh_accept_new_host_key,
                timeout=timeout,
                on_state_change=lambda _tunnel, _state: self._wake(),  # the driver reads the new state at once
            )
        routes, services = (self.endpoints, self.endpoints) if ssh else discovery.expand(self.endpoints)  # names: far side's
        self._session = ClientSession(routes, self.options, time.monotonic(), services)
        self._lock = threading.Lock()  # guards the session and the futures
        self._wanted = threading.Condition(self._lock)  # the client's thread waits here for work nobody drives
        self._room = threading.Condition(self._lock)  # submit waits here while waiting work is over its memory bound
        self._io = threading.Lock()  # held by the one thread that drives the sockets
        self._driver: int | None = None  # that thread's ident (futures' callbacks run on it)
        self._futures: dict[str, tuple[Future[Any], Callable[[Any], Any]]] = {}
        self._watchers: dict[str, Callable[[Progress], None]] = {}  # on_transfer callbacks, by request
        self._ratios = Ratios()  # how small PNG made each pipeline's results (the transfer policy's memory)
        self._closed = False
        self._curve, self._keys = curve is not None, curve
        self._ctx = context or zmq.Context.instance()
        local = [t.local_endpoint for t in self.tunnels] or routes
        self._links: list[tuple[zmq.Socket[Any], zmq.Socket[Any]] | None] = [
            dealer.open_dealer(self._ctx, endpoint, curve) for endpoint in local
        ]  # by route; None once retired
        self._wakeup: float | None = None
        self._items: list[tuple[Any, int]] = []  # what the driver polls
        self._poll_items()
        self._found: list[tuple[str, list[str]]] = []  # look-ups of the names since the driver's last step
        names = [] if ssh else discovery.named(self.endpoints)
        period = self.options.rediscover
        self._rediscovery = discovery.Rediscovery(names, period, self._rediscovered) if names and period > 0 else None
        self._polling = False  # the driver sleeps in zmq_poll: new work must wake it
        self._fresh = False  # work was submitted since the driver's last step
        self._thread = threading.Thread(target=self._run, name="zmqproc-client", daemon=True)
        self._thread.start()

    # -- the API ----------------------------------------------------------------

    def submit(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        *,
        reply_format: str | None = None,
        timeout: float | None = None,
        details: bool = False,
        on_transfer: Callable[[Progress], None] | None = None,
        transfer: str = "auto",
    ) -> Future[Any]:
        """Send an image (array: raw, without a copy; bytes: an encoded file) through ``pipeline``.

        The future's result is the processed array (or encoded bytes), or a :class:`Processed` with ``details=True``.
        Do not modify the array until the future is done: it is sent without a copy. Cancelling the future withdraws
        the request (the server stops it if it runs). With ``options.max_waiting_bytes``, this blocks while that much
        payload already waits to be sent. A payload or result big for the link travels in parts: the future's
        ``transfer`` is then the latest :class:`~zmqproc.client.events.Progress` (bytes up and down, rate, ETA), and
        ``on_transfer(progress)`` is called with each (on the thread that drives the sockets: keep it short).

        ``transfer``: how an array and its result travel when ``reply_format`` is not given: ``"auto"`` the quickest
        lossless way on the link as measured (raw, or PNG made here and by the server; see
        :mod:`~zmqproc.client.transfer`), ``"raw"`` or ``"png"``; the result is the same array whichever way it came.
        """
        t = self.timeout if timeout is None else timeout
        self._wait_for_room(t)
        payload, reply_format, convert = self._travel(image, pipeline, reply_format, transfer, details)
        build = lambda now: self._session.submit_process(payload, pipeline, t, now, reply_format)  # noqa: E731
        return self._start(build, convert, True, on_transfer)

    def process(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        *,
        reply_format: str | None = None,
        timeout: float | None = None,
        details: bool = False,
        tile: int | str | None = None,
        progress: Callable[[int, int], None] | None = None,
        on_transfer: Callable[[Progress], None] | None = None,
        transfer: str = "auto",
    ) -> Any:
        """Send and wait (see :meth:`submit`): the processed image, or a typed error.

        ``tile``: a size in pixels, or ``"auto"``: the image goes as tiles, each padded by the halo the servers say the
        pipeline needs, spread over every connected server's workers, and the result is put together exactly as the
        whole image's (see :mod:`~zmqproc.client.tiles`). ``"auto"`` tiles when the image is more than a server takes,
        or when several workers can share it (not through SSH, where a file goes smaller whole), and sends it whole
        otherwise (a file is decoded here only to be tiled; tiles travel raw and their result is an array, whatever
        ``reply_format`` asks of a whole image). ``timeout`` covers the whole image; ``progress(done, total)`` is
        called as tiles are placed; ``on_transfer`` and ``transfer`` as :meth:`submit` says, for an image sent whole.
        """
        t = self.timeout if timeout is None else timeout
        if tile is not None:
            return self._process_tiled(image, pipeline, tile, t, details, reply_format, progress, on_transfer, transfer)
        payload, reply_format, convert = self._travel(image, pipeline, reply_format, transfer, details)
        build = lambda now: self._session.submit_process(payload, pipeline, t, now, reply_format)  # noqa: E731
        return self._wait(self._start(build, convert, on_transfer=on_transfer), t)

    def map(
        self,
        images: Iterable[np.ndarray | bytes],
        pipeline: PipelineSpec,
        *,
        ordered: bool = True,
        latest: bool = False,
        reply_format: str | None = None,
        timeout: float | None = None,
        details: bool = False,
        deadline: float | None = None,
        lean: bool = False,
        transfer: str = "auto",
    ) -> Generator[Item, None, None]:
        """Process a sequence: an :class:`~zmqproc.client.stream.Item` per input (its ``result`` as :meth:`submit`'s
        future gives it, or its ``error``: one failure does not end the stream), in input order unless ``ordered`` is
        False. Inputs are pulled only as the servers' credit allows, so memory stays bounded however long ``images``
        is; the work spreads over every connected server. ``latest``: for a source faster than the processing (a
        camera), an input that cannot go out at once is replaced by the next (a dropped input has no item: a gap in the
        indexes), and only as many requests are out as the
        servers work on at once, so the age of a result stays about one processing time (see
        :mod:`~zmqproc.client.stream`). Closing the iterator (``break``) withdraws what is still out. ``deadline`` (a
        ``time.monotonic()`` value): every request ends by then, whatever ``timeout`` says. ``lean``: only as many out
        as the servers work on at once, none dropped (the servers then hold little of the sequence: a huge image's tiles).
        ``transfer``: how each array travels, as :meth:`submit` says.
        """
        t = self.timeout if timeout is None else timeout
        stream = Stream(ordered, latest, t, lean)
        events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()  # the reader's and the requests' news
        futures: dict[str, Future[Any]] = {}

        def send(image: np.ndarray | bytes) -> str:
            left = t if deadline is None else max(0.001, min(t, deadline - time.monotonic()))
            future = self.submit(image, pipeline, reply_format=reply_format, timeout=left, details=True, transfer=transfer)
            request_id: str = future.request_id  # type: ignore[attr-defined]
            futures[request_id] = future
            future.add_done_callback(functools.partial(_report, events, request_id))
            return request_id

        reader = Reader(iter(images), events, live=latest)
        ahead: collections.deque[Any] = collections.deque()  # inputs read and not yet in the stream (not live)
        asked = time.monotonic()  # when the caller last asked for an item: what a live result's wait is judged by
        try:
            while not stream.over():
                try:
                    event = events.get(timeout=STREAM_POLL_S)
                    while True:
                        self._stream_event(stream, reader, ahead, futures, event, details)
                        event = events.get_nowait()
                except queue.Empty:
                    pass
                now = time.monotonic()
                while True:
                    if ahead and stream.wants_input():
                        stream.pulled(ahead.popleft(), now)
                        reader.taken()
                    stream.advance(None, self._room_for, send, now)
                    if stream.to_send() is not None or not ahead:
                        break
                for item in stream.ready(now, asked):
                    yield item
                    asked = time.monotonic()
        finally:
            reader.stop()
            for request_id in stream.cancel():
                futures[request_id].cancel()

    @staticmethod
    def _stream_event(
        stream: Stream,
        reader: Reader,
        ahead: collections.deque[Any],
        futures: dict[str, Future[Any]],
        event: tuple[Any, ...],
        details: bool,
    ) -> None:
        """One piece of news for :meth:`map`'s stream: an input read, the source's end or failure, a request's end."""
        kind = event[0]
        if kind == INPUT:
            if len(event) > 1:
                ahead.append(event[1])
            else:  # live: the freshest frame
                value, passed_over = reader.take()
                stream.passed_over(passed_over)
                stream.pulled(value, time.monotonic())
        elif kind == END:
            stream.exhausted = True
        elif kind == RAISED:
            raise event[1]
        else:
            request_id, at, result, error = event
            futures.pop(request_id, None)
            service_s = result.server_ms / 1000 if result is not None else None
            value = result if details or result is None else result.image
            stream.finished(request_id, value, error, now=at, service_s=service_s)

    def _process_tiled(
        self,
        image: np.ndarray | bytes,
        pipeline: PipelineSpec,
        tile: int | str,
        t: float,
        details: bool,
        reply_format: str | None,
        progress: Callable[[int, int], None] | None,
        on_transfer: Callable[[Progress], None] | None,
        transfer: str,
    ) -> Any:
        deadline = time.monotonic() + t
        if isinstance(image, np.ndarray):
            (height, width), dtype, each = image.shape[:2], dtype_name(image) or "", pixel_bytes(image)
        else:  # a file: its size from its header; decoded only if it goes as tiles
            desc = describe_file(image, MAX_CLIENT_PIXELS)
            assert desc.shape is not None and desc.dtype is not None
            (height, width, channels), dtype = desc.shape, desc.dtype
            each = np.dtype(dtype).itemsize * channels
        try:
            plan = self._wait(self._start(lambda now: self._session.submit_tile_plan(pipeline, dtype, t, now), _same), t)
        except BadParams as exc:
            if tile != "auto" or exc.details.get("tileable") is not False:
                raise
            plan = None  # not a pipeline to tile: whole, as asked
        share = not self.tunnels  # through SSH a file travels smaller whole than as raw tiles: tile only what must be
        size = None if plan is None else tile_size(plan, height, width, each, tile, max(1, len(self.connected)), share)
        left = max(0.001, deadline - time.monotonic())
        if plan is None or size is None:
            return self.process(
                image, pipeline, timeout=left, details=details, reply_format=reply_format, on_transfer=on_transfer, transfer=transfer
            )
        pixels = image if isinstance(image, np.ndarray) else decode_image(ImageDescriptor(sniff_format(image[:16])), image)
        job = TiledJob(pixels, plan.halo or 0, size)
        tiles = self.map(job.inputs(), pipeline, ordered=False, timeout=t, details=True, deadline=deadline, lean=True, transfer=RAW)
        with contextlib.closing(tiles) as items:
            for item in items:
                job.place(item)  # a tile's error is the image's: closing the stream withdraws the other tiles
                if progress is not None:
                    progress(job.assembly.placed, len(job.tiles))
        result = job.assembly
        assert result.image is not None
        return Processed(result.image, result.results, job.server_ms, self.epoch, result.kinds) if details else result.image

    def _travel(
        self, image: np.ndarray | bytes, pipeline: PipelineSpec, reply_format: str | None, transfer: str, details: bool
    ) -> tuple[np.ndarray | bytes, str | None, Callable[[Any], Any]]:
        """What to send for ``image``, the reply format to ask, and how a reply becomes what the caller gets."""
        if transfer not in (AUTO, RAW, PNG):
            raise ValueError(f"transfer must be auto, raw or png, not {transfer!r}")
        png_ok = isinstance(image, np.ndarray) and png_holds(image)
        if not isinstance(image, np.ndarray) or reply_format is not None or transfer == RAW or not png_ok:
            return image, reply_format, _processed(details)
        if transfer == PNG:
            up = down = PNG
        else:
            with self._lock:
                link = self._session.link()
            if link.blind and image.nbytes >= BLIND_BYTES:  # a new client: its hello ping not answered yet
                with contextlib.suppress(ZmqprocError):
                    link = Link.known(0.0, self.ping(timeout=min(self.timeout, 5.0)))
            down_ratio = self._ratios.get(_key(pipeline))
            choice = choose(link, image.nbytes, ratio=lambda: png_ratio(image), png_ok=png_ok, down_ratio=down_ratio)
            up, down = choice.up, choice.down
        payload = encode_image(image, PNG)[1].tobytes() if up == PNG else image
        return payload, down, self._from_png(details, _key(pipeline)) if down == PNG else _processed(details)

    def _from_png(self, details: bool, pipeline: str) -> Callable[[Processed], Any]:
        """A result that came as PNG (for the link's sake), as the pixels it holds; how small it was is remembered."""

        def convert(value: Processed) -> Any:
            pixels = decode_image(ImageDescriptor(PNG), value.image)
            self._ratios.learn(pipeline, len(value.image), pixels.nbytes)
            return dataclasses.replace(value, image=pixels) if details else pixels

        return convert

    def _room_for(self, image: np.ndarray | bytes) -> bool:
        with self._lock:
            return self._session.room_for(image.nbytes if isinstance(image, np.ndarray) else len(image))

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time to a server, in seconds."""
        return float(self._call("ping", timeout))

    def ops(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The server's operations with their declared parameters."""
        return list(self._call("ops", timeout))

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The server's counters (requests, ok, errors by code, in flight, queue length, uptime, epoch)."""
        return dict(self._call("stats", timeout))

    def stats_each(self, timeout: float | None = None) -> dict[str, dict[str, Any] | BaseException]:
        """Each replica's counters (see :meth:`replicas`), by endpoint; the error for one that did not answer."""
        t = self.timeout if timeout is None else timeout
        with self._lock:
            routes = list(zip(self._session.present_routes(), [e for e, _, _ in self._session.replicas()], strict=True))

        def ask(route: int) -> Callable[[float], str]:
            return lambda now: self._session.submit("stats", t, now, route=route)

        futures = [(endpoint, self._start(ask(route), _same, True)) for route, endpoint in routes]
        out: dict[str, dict[str, Any] | BaseException] = {}
        for endpoint, future in futures:
            try:
                out[endpoint] = dict(self._wait(future, t))
            except Exception as exc:  # one replica's silence is its entry, not the end of the listing
                out[endpoint] = exc
        return out

    @property
    def epoch(self) -> str | None:
        """The epoch of the server instance that answered last."""
        return self._session.epoch

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._session)

    @property
    def resent(self) -> int:
        """Requests sent again after a lost connection, a server restart, ``busy`` or a silent server."""
        return self._session.resent

    @property
    def connected(self) -> list[str]:
        """The endpoints whose connection is up now (handshake done, not dropped since)."""
        self._catch_up()
        with self._lock:
            return [endpoint for i, endpoint in enumerate(self._session.endpoints) if self._session.up(i)]

    def replicas(self) -> list[tuple[str, str, float]]:
        """Each server connection (one per address the endpoints resolve to): its endpoint, state (connecting,
        connected, slow, lost, draining) and last ping round trip (-1: none yet); a drained address is left out once
        closed."""
        self._catch_up()
        with self._lock:
            return self._session.replicas()

    def _catch_up(self) -> None:
        """If nobody drives the sockets: read what the monitors and discovery reported meanwhile."""
        if self._io.acquire(blocking=False):
            try:
                if not self._closed:
                    self._step()
            finally:
                self._io.release()

    def close(self) -> None:
        """Fail what is still pending with ConnectionLost and stop the I/O thread (and the SSH tunnels)."""
        for tunnel in self.tunnels:
            tunnel.close()
        if self._rediscovery is not None:
            self._rediscovery.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wanted.notify()
            self._room.notify_all()
        self._wake()
        if threading.get_ident() not in (self._thread.ident, self._driver):
            self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests and futures ----------------------------------------------------------

    def _start(
        self,
        build: Callable[[float], str],
        convert: Callable[[Any], Any],
        hand_over: bool = False,
        on_transfer: Callable[[Progress], None] | None = None,
    ) -> _Future:
        """Register a request and its future; ``hand_over``: nobody will wait on it here, so the driver must send it."""
        future = _Future(self)
        with self._lock:
            if self._closed:
                raise ConnectionLost("the client is closed")
            future.request_id = build(time.monotonic())
            self._futures[future.request_id] = (future, convert)
            if on_transfer is not None:
                self._watchers[future.request_id] = on_transfer
            wake = self._input(hand_over)
        if wake:
            self._wake()
        return future

    def _input(self, hand_over: bool) -> bool:
        """New work for the driver (the caller holds the lock): True when the driver sleeps in poll and must be woken
        (once: the work submitted until it is awake finds it awake)."""
        self._fresh = True
        if hand_over and self._driver is None:
            self._wanted.notify()  # nobody drives: the client's thread will
        wake, self._polling = self._polling, False
        return wake

    def _call(self, kind: str, timeout: float | None) -> Any:
        t = self.timeout if timeout is None else timeout
        return self._wait(self._start(lambda now: self._session.submit(kind, t, now), _same), t)

    def _withdraw(self, request_id: str) -> None:
        """A cancelled future: the session withdraws its request (a ``cancel`` if a server has it)."""
        with self._lock:
            self._futures.pop(request_id, None)
            if self._closed:
                return
            self._session.cancel(request_id, time.monotonic())
            wake = self._input(True)
        if wake:
            self._wake()

    def _wait_for_room(self, timeout: float) -> None:
        if self.options.max_waiting_bytes is None or self._driver == threading.get_ident():
            return
        with self._lock:
            self._room.wait_for(lambda: self._closed or self._session.has_room(), timeout=timeout)

    def _wait(self, future: Future[Any], timeout: float) -> Any:
        """Drive the sockets until ``future`` is done, unless another thread drives them already."""
        if self._driver == threading.get_ident():  # a blocking call from a done-callback of the driving thread
            self._drive(until=future)
        elif self._io.acquire(blocking=False):
            try:
                self._drive(until=future)
            finally:
                self._io.release()
                with self._lock:
                    if self._session.active and not self._closed:
                        self._wanted.notify()  # what others submitted meanwhile: the client's thread goes on with it
        else:
            with self._lock:
                wake = self._input(True)  # another thread drives (or is about to): it sends this at once
            if wake:
                self._wake()
        # Every future ends by its deadline (whoever drives expires it); the margin only guards against a dead thread.
        try:
            return future.result(timeout=timeout + 5.0)
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout) or future.done():
                raise
            raise RequestTimeout(f"no reply within {timeout} s") from None

    # -- driving the sockets -----------------------------------------------------------------

    def _run(self) -> None:
        """The client's thread: drives the sockets while requests wait and no caller drives them."""
        try:
            while True:
                with self._lock:
                    while not self._closed and not self._session.active:
                        self._wanted.wait()
                    if self._closed:
                        break
                with self._io:
                    self._drive(until=None)
        except Exception:
            log.exception("client I/O thread failed")
        finally:
            with self._io:
                self._shutdown()

    def _drive(self, until: Future[Any] | None) -> None:
        """Turns until ``until`` is done, or (None) until no request waits; the caller holds ``_io``."""
        outer, self._driver = self._driver, threading.get_ident()
        try:
            ready: dict[Any, int] | None = None  # what the last poll found; None: look at every socket
            while True:
                self._step(ready)
                if self._closed or (until.done() if until is not None else not self._session.active):
                    return
                ready = self._poll()
        finally:
            self._driver = outer

    def _step(self, ready: dict[Any, int] | None = None) -> None:
        """Read what the sockets have, let time pass, send what the session says, end the futures it ended."""
        now = time.monotonic()
        with self._lock:
            session = self._session
            for service, found in self._found:
                session.discovered(service, found, now)
            self._found.clear()
            for route, link in enumerate(self._links):
                if link is None:
                    continue
                sock, monitor = link
                if ready is None or monitor in ready:
                    while readable(monitor):
                        dealer.monitor_input(session, route, recv_frames(monitor), session.endpoints[route], self._curve, now)
                flags = POLLIN if ready is None else ready.get(sock, 0)
                if flags & POLLOUT:
                    session.writable(route, now)
                known = ready is not None  # the poll found it readable: no look before the first message
                while flags & POLLIN and (known or readable(sock)):
                    known = False
                    session.receive(route, [f.buffer for f in recv_frames(sock)], now)
            dealer.turn(session, self.tunnels, lambda route, frames: dealer.send(self._sock(route), frames), now)
            self._fresh = False
            if self.options.max_waiting_bytes is not None:
                self._room.notify_all()
            done, moving, routes = [], [], []
            for e in session.events():
                if isinstance(e, RouteAdded | RouteRetired):
                    routes.append(e)
                elif isinstance(e, _ENDS):
                    done.append((self._futures.pop(e.request_id, None), e))
                    self._watchers.pop(e.request_id, None)
                elif isinstance(e, Progress) and e.request_id in self._futures:
                    future = self._futures[e.request_id][0]
                    assert isinstance(future, _Future)
                    future.transfer = e
                    moving.append((self._watchers.get(e.request_id), e))
            if routes:
                self._routes_changed(routes)
            self._wakeup = session.next_wakeup()
        for watcher, progress in moving:
            if watcher is not None:
                watcher(progress)
        for entry, event in done:
            if entry is not None:
                _end(entry, event)

    def _sock(self, route: int) -> zmq.Socket[Any]:
        link = self._links[route]
        assert link is not None  # the session sends nothing on a retired route
        return link[0]

    def _poll_items(self) -> None:
        self._items = [(self._wake_r.fileno(), POLLIN)]
        for link in self._links:
            if link is not None:
                self._items += [(link[0], POLLIN), (link[1], POLLIN)]

    def _rediscovered(self, service: str, endpoints: list[str]) -> None:
        """A look-up's result (on the discovery thread): the driver hands it to the session in its next step."""
        with self._lock:
            self._found.append((service, endpoints))
            wake = self._input(False)
        if wake:
            self._wake()

    def _routes_changed(self, events: list[Any]) -> None:
        """Sockets for the routes discovery added, closed for those it retired (the caller holds the lock)."""
        for event in events:
            if isinstance(event, RouteAdded):
                assert event.route == len(self._links)
                self._links.append(dealer.open_dealer(self._ctx, event.endpoint, self._keys))
            elif isinstance(event, RouteRetired) and (link := self._links[event.route]) is not None:
                dealer.close_dealer(*link)
                self._links[event.route] = None
        self._poll_items()

    def _poll(self) -> dict[Any, int]:
        """Wait until a socket has something, or the session's next wakeup; what is ready."""
        items = self._items
        if any(self._session.blocked(route) for route in range(len(self._links))):
            items = [(self._wake_r.fileno(), POLLIN)]
            for route, link in enumerate(self._links):
                if link is not None:
                    items += [(link[0], POLLIN | POLLOUT if self._session.blocked(route) else POLLIN), (link[1], POLLIN)]
        wakeup = self._wakeup
        with self._lock:
            self._polling = not self._fresh  # submitted since the last step: look, do not sleep
            timeout = 0 if self._fresh else -1 if wakeup is None else max(0, int((wakeup - time.monotonic()) * 1000) + 1)
        try:
            ready = dict(zmq.zmq_poll(items, timeout))
        finally:
            with self._lock:
                self._polling = False
        if self._wake_r.fileno() in ready:
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass
        return ready

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a wake-up is already pending, or the client is closing
            self._wake_w.send(b"\0")

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            dealer.close_session(self._session, self._links, "the client was closed before the reply arrived")
            done = [(self._futures.pop(e.request_id, None), e) for e in self._session.events() if isinstance(e, Fail)]
            self._room.notify_all()
        for entry, event in done:
            if entry is not None:
                _end(entry, event)
        self._wake_r.close()
        self._wake_w.close()


class _Future(Future[Any]):
    """A request's future: cancelling it withdraws the request (a ``cancel`` if a server has it)."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client
        self.request_id = ""
        self.transfer: Progress | None = None  # the latest progress of a payload or result in parts

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._client._withdraw(self.request_id)
        return True


def _same(value: Any) -> Any:
    return value


def _image(value: Processed) -> Any:
    return value.image


def _processed(details: bool) -> Callable[[Processed], Any]:
    return _same if details else _image


def _key(pipeline: PipelineSpec) -> str:
    """A pipeline as the text that names it (what results are remembered by)."""
    return pipeline if isinstance(pipeline, str) else to_text(to_steps(pipeline))


def _end(entry: tuple[Future[Any], Callable[[Any], Any]], event: Resolve | Fail) -> None:
    """End a future with the session's verdict, unless the caller cancelled it meanwhile."""
    future, convert = entry
    with contextlib.suppress(InvalidStateError):
        if isinstance(event, Fail):
            future.set_exception(event.error)
        else:
            future.set_result(convert(event.value))


def _report(events: queue.SimpleQueue[tuple[Any, ...]], request_id: str, future: Future[Any]) -> None:
    """A map's request ended: its outcome, and when (not when the caller gets to it: the rate a stream is tuned by)."""
    events.put((request_id, time.monotonic(), *_outcome(future)))


def _outcome(future: Future[Any]) -> tuple[Any, BaseException | None]:
    """A done future's result or error (a cancelled one: Cancelled)."""
    if future.cancelled():
        return None, Cancelled("cancelled")
    error = future.exception()
    return (None, error) if error is not None else (future.result(), None)
