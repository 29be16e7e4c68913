"""What a playing stream says about itself, Qt-free: frames shown per second, latency from capture to screen, drops."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

RATE_WINDOW_S = 2.0  # the frame rate is counted over the last this many seconds
LATENCY_WINDOW = 30  # the latency shown is the median of the last this many frames


@dataclass(slots=True)
class Meter:
    shown: int = 0
    _times: deque[float] = field(default_factory=deque)  # when frames were shown
    _read: deque[float] = field(default_factory=deque)  # when the source gave frames
    _latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def frame_read(self, now: float) -> None:
        _keep(self._read, now)

    def frame_shown(self, now: float, captured_at: float) -> None:
        self.shown += 1
        _keep(self._times, now)
        self._latencies.append(now - captured_at)

    def fps(self, now: float) -> float:
        """Frames shown per second over the last RATE_WINDOW_S (0 while fewer than two were)."""
        return _rate(self._times, now)

    def source_fps(self, now: float) -> float:
        """Frames the source gave per second (a camera's real rate, whatever it claims)."""
        return _rate(self._read, now)

    def latency_s(self) -> float | None:
        """Median time from capture to screen of the last frames shown."""
        return statistics.median(self._latencies) if self._latencies else None

    def text(self, now: float, dropped: int, failed: int) -> str:
        latency = self.latency_s()
        parts = [
            f"{self.fps(now):.1f} fps shown of {self.source_fps(now):.1f}",
            "latency —" if latency is None else f"latency {latency * 1000:.0f} ms",
            f"{dropped} dropped",
        ]
        if failed:
            parts.append(f"{failed} failed")
        return " · ".join(parts)


def _keep(times: deque[float], now: float) -> None:
    times.append(now)
    while times[0] < now - RATE_WINDOW_S:
        times.popleft()


def _rate(times: deque[float], now: float) -> float:
    recent = [t for t in times if t >= now - RATE_WINDOW_S]
    return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
