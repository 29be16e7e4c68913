"""How an image's pixels travel each way, chosen per request so that its result comes soonest: the one policy of the
library, the command line and the viewer (``transfer="auto"``). Lossless choices only; lossy JPEG only when a caller
asks for it.

Each way is costed on the link as the session knows it (:meth:`ClientSession.link`: the throughput its recent parts
measured, or, before any, a guess from the ping's round trip) with the codecs' speeds measured on this kind of
machine (docs/benchmarks.md, "Links"):

- up: ``raw`` (bytes / rate), the caller's ``file`` as it is (its bytes / rate + the server decoding it), or ``png``
  made here (encoding + bytes / rate + the server decoding it);
- down: ``raw``, or ``png`` made by the server (its encoding + bytes / rate + decoding here).

The PNG is the fast kind (:data:`zmqproc.images.PNG_FAST`): a 12 MP photo shrinks to about 0.55, at about 30 MB/s.
How well an image compresses is asked for (``ratio``) only when PNG could win at all: on a fast link nothing is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..formats import BY_NAME
from ..images import dtype_name

AUTO, RAW, PNG, FILE = "auto", "raw", "png", "file"

BLIND_BYTES = 4 << 20  # an image this big is not costed blind: a round trip is asked for first (1/3 s at 100 Mbit/s)
NEAR_RTT = 0.02  # before a rate is measured: a round trip under this is a local network (a loaded loopback's first
# ping took 6.5 ms here; a far link's round trip is tens of ms)...
GUESS_NEAR = 125e6  # ...guessed at 1 Gbit/s,
GUESS_FAR = 2.5e6  # and a longer one at 20 Mbit/s (bytes/s)
PNG_ENCODE = 30e6  # bytes of pixels per second, PNG_FAST (measured: 30 MB/s on a 12 MP photo-like image, this machine)
DECODE = {"png": 70e6, "jpeg": 250e6, "webp": 60e6, "bmp": 1e9, "tiff": 150e6}  # bytes of pixels per second
BEST_RATIO = 0.1  # no image is costed as compressing better than this before it is asked how well it does


@dataclass(frozen=True, slots=True)
class Link:
    """What the session knows of the way to the servers: ``rate`` in bytes/s (``measured``, or guessed), ``rtt`` in s
    (-1: no ping answered yet)."""

    rate: float
    rtt: float
    measured: bool

    @classmethod
    def known(cls, rate: float, rtt: float) -> Link:
        """From a measured rate (0: none yet, then guessed from ``rtt``; -1 or less: unknown, a local network)."""
        if rate > 0:
            return cls(rate, rtt, True)
        return cls(GUESS_FAR if rtt >= NEAR_RTT else GUESS_NEAR, rtt, False)

    @property
    def blind(self) -> bool:
        """Nothing measured yet, not even a round trip: a guess (near) that a big image should not be costed on."""
        return not self.measured and self.rtt < 0


class Ratios:
    """How small PNG made each pipeline's latest result (bytes / pixel bytes): what the next result of the same pipeline
    is costed at (a blur's result shrinks far more than the photo it was made from)."""

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}

    def learn(self, pipeline: str, png_bytes: int, pixel_bytes: int) -> None:
        if pixel_bytes > 0:
            self._latest[pipeline] = png_bytes / pixel_bytes

    def get(self, pipeline: str) -> float | None:
        return self._latest.get(pipeline)


def png_holds(image: np.ndarray) -> bool:
    """A PNG keeps these pixels exactly as they are (uint8 or uint16; 2-D, 3 or 4 channels), so it may carry them."""
    return dtype_name(image) in BY_NAME[PNG].dtypes and image.shape[2:] != (1,)


@dataclass(frozen=True, slots=True)
class Choice:
    """How the pixels go ``up`` (raw, png, file) and come ``down`` (raw, png), and the seconds that is costed at."""

    up: str
    down: str
    seconds: float


def choose(
    link: Link,
    raw_bytes: int,
    *,
    file: tuple[str, int] | None = None,
    ratio: Callable[[], float] | None = None,
    png_ok: bool = True,
    down_ratio: float | None = None,
) -> Choice:
    """The quickest lossless way for an image of ``raw_bytes`` of pixels (its result assumed as big), given the caller's
    ``file`` (format, bytes) if it has one, ``ratio()`` (PNG size / pixel bytes; asked at most once, and only if PNG could
    win), whether PNG can hold its pixels (``png_ok``: uint8 or uint16), and ``down_ratio``, how small PNG made this
    pipeline's last result (:class:`Ratios`; else the result is costed as compressing like the image)."""
    rate = link.rate

    def png(ratio: float) -> float:
        return raw_bytes / PNG_ENCODE + raw_bytes * ratio / rate + raw_bytes / DECODE["png"]

    up = {RAW: raw_bytes / rate}
    if file is not None:
        fmt, size = file
        up[FILE] = size / rate + raw_bytes / DECODE.get(fmt, DECODE["png"])
    down = {RAW: raw_bytes / rate}
    if png_ok and down_ratio is not None:
        down[PNG] = png(down_ratio)
    could = png_ok and png(BEST_RATIO) < max(min(up.values()), down[RAW] if down_ratio is None else 0.0)
    if could and ratio is not None:
        up[PNG] = png(image := ratio())
        if down_ratio is None:
            down[PNG] = png(image)
    way_up = min(up, key=up.__getitem__)
    way_down = min(down, key=down.__getitem__)
    return Choice(way_up, way_down, up[way_up] + down[way_down] + max(link.rtt, 0.0))
