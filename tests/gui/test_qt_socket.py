"""The Qt notifier adapter against a real server: every reply arrives, none twice, none missed."""

from __future__ import annotations

import numpy as np

from zmqproc.client.pipeline import to_steps
from zmqproc.gui.qt_socket import QZmqSocket
from zmqproc.images import describe_array
from zmqproc.protocol import decode_reply, encode_request, process_fields


def test_adapter_receives_1000_replies_none_missed(qtbot, endpoint):
    sock = QZmqSocket()
    sock.connect_to(endpoint)
    got: list[str] = []
    sock.received.connect(lambda frames: got.append(decode_reply([f.buffer for f in frames]).id))
    sent = [f"p{i}" for i in range(1000)]
    try:
        # Wait for the connection (IMMEDIATE: sends fail until a server is connected).
        qtbot.waitUntil(lambda: sock.send(encode_request("ping", sent[0])), timeout=5000)
        for i, request_id in enumerate(sent[1:]):
            assert sock.send(encode_request("ping", request_id))
            if i % 100 == 0:
                qtbot.wait(1)  # replies arrive while we still send: the edge a send consumes must not be lost
        qtbot.waitUntil(lambda: len(got) == 1000, timeout=20000)
        assert sorted(got) == sorted(sent)
    finally:
        sock.close()


def test_adapter_carries_image_frames_without_copy(qtbot, endpoint, astronaut):
    sock = QZmqSocket()
    sock.connect_to(endpoint)
    replies = []
    sock.received.connect(lambda frames: replies.append(decode_reply([f.buffer for f in frames])))
    desc, payload = describe_array(astronaut)
    request = encode_request("process", "img", process_fields(to_steps("invert"), desc), payload)
    try:
        qtbot.waitUntil(lambda: sock.send(request), timeout=5000)
        qtbot.waitUntil(lambda: len(replies) == 1, timeout=10000)
        reply = replies[0]
        assert reply.ok
        assert isinstance(reply.payload, memoryview)  # the frame's own buffer (copy=False)
        out = np.frombuffer(reply.payload, np.uint8).reshape(astronaut.shape)
        assert np.array_equal(out, 255 - astronaut)
    finally:
        sock.close()
