"""A sequence on the Qt event loop, against a real server: every input in order, an unsendable one its own failed
item, one ``ended``; cancel withdraws what is out."""

from __future__ import annotations

import numpy as np

from zmqproc.gui.qt_stream import QtStream


def test_a_pulled_sequence_ends_once_with_every_item_in_order(qtbot, qt_client):
    inputs = [np.full((16, 16), i, np.uint8) for i in range(40)]
    inputs[5] = b"junk"  # not an image this client can send
    stream = QtStream(qt_client, "invert", source=iter(inputs))
    items, ended = [], []
    stream.itemReady.connect(items.append)
    stream.ended.connect(lambda: ended.append(True))
    stream.start()
    qtbot.waitUntil(lambda: bool(ended), timeout=10000)
    qtbot.wait(50)
    assert [i.index for i in items] == list(range(40)) and ended == [True]
    assert not items[5].ok and all(np.array_equal(i.result.image, 255 - inputs[i.index]) for i in items if i.index != 5)


def test_cancel_withdraws_what_is_out_and_ends(qtbot, qt_client):
    big = np.zeros((1500, 2000, 3), np.uint8)
    stream = QtStream(qt_client, "denoise", source=iter([big] * 50))
    ended = []
    stream.ended.connect(lambda: ended.append(True))
    stream.start()
    qtbot.waitUntil(lambda: stream.stream.in_flight > 0, timeout=5000)
    stream.cancel()
    qtbot.waitUntil(lambda: bool(ended), timeout=15000)
    assert stream.stream.progress.pulled < 50, "nothing more was pulled after cancel"
