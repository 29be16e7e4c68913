"""The Qt notifier adapter against a real server: every reply arrives, none twice, none missed."""

from __future__ import annotations

import time

import numpy as np

from zmqproc.gui.qt_socket import QZmqSocket
from zmqproc.session import ClientSession


def test_adapter_receives_1000_replies_none_missed(qtbot, endpoint):
    sock = QZmqSocket()
    sock.connect_to(endpoint)
    session = ClientSession()
    got: list[str] = []

    def on_frames(frames):
        matched = session.receive([f.buffer for f in frames])
        assert matched is not None
        got.append(matched[0].id)

    sock.received.connect(on_frames)
    sent = []
    try:
        # Wait for the connection (IMMEDIATE: sends fail until a server is connected).
        first = session.request("ping", None, None, 10.0, time.monotonic())
        qtbot.waitUntil(lambda: sock.send(first.frames), timeout=5000)
        sent.append(first.id)
        for i in range(999):
            pending = session.request("ping", None, None, 30.0, time.monotonic())
            assert sock.send(pending.frames)
            sent.append(pending.id)
            if i % 100 == 0:
                qtbot.wait(1)  # replies arrive while we still send: the edge a send consumes must not be lost
        qtbot.waitUntil(lambda: len(got) == 1000, timeout=20000)
        assert sorted(got) == sorted(sent)
        assert len(session) == 0 and session.late_replies == 0
    finally:
        sock.close()


def test_adapter_carries_image_frames_without_copy(qtbot, endpoint, astronaut):
    sock = QZmqSocket()
    sock.connect_to(endpoint)
    session = ClientSession()
    replies = []
    sock.received.connect(lambda frames: replies.append(session.receive([f.buffer for f in frames])))
    try:
        pending = session.process_request(astronaut, "invert", 10.0, time.monotonic())
        qtbot.waitUntil(lambda: sock.send(pending.frames), timeout=5000)
        qtbot.waitUntil(lambda: len(replies) == 1, timeout=10000)
        _, reply = replies[0]
        assert reply.ok
        assert isinstance(reply.payload, memoryview)  # the frame's own buffer (copy=False)
        out = np.frombuffer(reply.payload, np.uint8).reshape(astronaut.shape)
        assert np.array_equal(out, 255 - astronaut)
    finally:
        sock.close()
