"""What a playing stream says about itself: the rate shown and the source's, latency, drops."""

from __future__ import annotations

from zmqproc.gui.playback import Meter


def test_the_rates_latency_and_drops_in_words():
    meter = Meter()
    for i in range(31):  # the source gives 30 fps for a second; every third frame is shown 120 ms after its capture
        meter.frame_read(i / 30)
        if i % 3 == 0:
            meter.frame_shown(i / 30 + 0.12, i / 30)
    now = 30 / 30 + 0.12
    assert round(meter.fps(now), 1) == 10.0 and round(meter.source_fps(now), 1) == 30.0
    assert round(meter.latency_s(), 3) == 0.12
    assert meter.text(now, dropped=20, failed=0) == "10.0 fps shown of 30.0 · latency 120 ms · 20 dropped"


def test_an_old_rate_is_forgotten():
    meter = Meter()
    for i in range(10):
        meter.frame_shown(i / 10, i / 10)
    assert meter.fps(0.9) > 9 and meter.fps(10.0) == 0.0, "a stalled stream shows 0 fps, not its old rate"
    assert Meter().text(0.0, 0, 2) == "0.0 fps shown of 0.0 · latency — · 0 dropped · 2 failed"
