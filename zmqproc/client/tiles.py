"""Tiles of a big image, sans I/O: which part of the image each request carries (its core plus the pipeline's halo),
and how the results are put back together, exactly.

An op whose output pixel depends only on the input pixels within ``halo`` of it gives, on a tile padded by ``halo``
(clipped at the image's edges, where the op sees the same edge as on the whole image), the whole-image result at
every pixel of the tile's core: the core is cropped out and placed. A pipeline's halo is the sum of its steps'.
Results beyond pixels come back in image coordinates; an object (box, point, polygon) found in two tiles' halos is
kept once, by the tile whose core holds its centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadParams
from .replies import TilePlan
from .stream import Item

MIN_TILE = 64  # a smaller tile costs more in requests than it gains
AUTO_TILE_RANGE = (512, 4096)
TILES_PER_WORKER = 4  # tile="auto": enough tiles that every worker stays busy to the end...
AUTO_TILE_BYTES = 8 << 20  # ...each of at most about this many bytes: a server holds a few tiles and an op's working
# copies of each (denoise's are 7x its tile), so its memory stays a small part of a huge image's


@dataclass(frozen=True, slots=True)
class Tile:
    """``core``: the rows and columns of the result this tile gives, (y0, y1, x0, x1); ``padded``: what is sent, the core
    with its halo, clipped to the image."""

    index: int
    core: tuple[int, int, int, int]
    padded: tuple[int, int, int, int]

    @property
    def inner(self) -> tuple[slice, slice]:
        """Where the core lies in the padded tile's result."""
        y0, y1, x0, x1 = self.core
        py0, _, px0, _ = self.padded
        return slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0)


def grid(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """Tiles of ``tile`` x ``tile`` pixels (the last row and column smaller) covering the image, each padded by ``halo``."""
    if tile < 1:
        raise ValueError("a tile is at least 1 pixel wide")
    tiles: list[Tile] = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            padded = (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo))
            tiles.append(Tile(len(tiles), (y0, y1, x0, x1), padded))
    return tiles


def auto_tile(
    height: int, width: int, halo: int, workers: int, max_pixels: int, max_frame_bytes: int, pixel_bytes: int, share: bool = True
) -> int | None:
    """``tile="auto"``: a tile size when tiling pays (the image exceeds what a server takes, or, with ``share``, several
    workers can share it: at least TILES_PER_WORKER tiles each, of AUTO_TILE_BYTES at most), else None (process whole)."""
    pixels = height * width
    too_big = pixels > max_pixels or pixels * pixel_bytes > max_frame_bytes
    side = math.isqrt(pixels // max(1, TILES_PER_WORKER * workers))
    side = max(AUTO_TILE_RANGE[0], min(AUTO_TILE_RANGE[1], math.isqrt(AUTO_TILE_BYTES // pixel_bytes), side))
    while side > MIN_TILE and ((side + 2 * halo) ** 2 > max_pixels or (side + 2 * halo) ** 2 * pixel_bytes > max_frame_bytes):
        side //= 2
    shareable = share and workers > 1 and pixels >= 2 * AUTO_TILE_RANGE[0] ** 2
    if not too_big and not (shareable and side < max(height, width)):
        return None
    smallest = MIN_TILE if too_big else AUTO_TILE_RANGE[0]
    return _even(height, width, side, smallest, halo, workers, max_pixels, max_frame_bytes, pixel_bytes)


def _even(
    height: int, width: int, side: int, smallest: int, halo: int, workers: int, max_pixels: int, max_frame_bytes: int, pixel_bytes: int
) -> int:
    """A tile size from ``side`` down to ``smallest`` that cuts the image evenly into a multiple of ``workers`` tiles (no
    last tile runs alone while the other workers idle), if one is near; else ``side``."""
    longest = max(height, width)
    first = -(-longest // side)
    for across in range(first, first + 8):
        size = -(-longest // across)
        count = -(-height // size) * -(-width // size)
        fits = (size + 2 * halo) ** 2 <= max_pixels and (size + 2 * halo) ** 2 * pixel_bytes <= max_frame_bytes
        if size < smallest:
            break
        if count % max(1, workers) == 0 and fits:
            return size
    return side


def pixel_bytes(image: np.ndarray) -> int:
    """Bytes per pixel, all channels."""
    return image.itemsize * (1 if image.ndim == 2 else image.shape[2])


def cut(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The padded tile, contiguous (what a request carries without another copy)."""
    y0, y1, x0, x1 = tile.padded
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def tile_inputs(image: np.ndarray, tiles: list[Tile]) -> Iterator[np.ndarray]:
    """Each tile's input, made only when it is pulled (memory: the tiles in flight, not a copy of the image)."""
    return (cut(image, t) for t in tiles)


class Assembly:
    """The result of a tiled image, put together tile by tile as they arrive (in any order)."""

    def __init__(self, height: int, width: int, tiles: list[Tile]) -> None:
        self.height, self.width, self.tiles = height, width, tiles
        self.image: np.ndarray | None = None
        self.results: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}
        self.placed = 0

    @property
    def complete(self) -> bool:
        return self.placed == len(self.tiles)

    def place(self, tile: Tile, result: np.ndarray, results: dict[str, Any] | None = None, kinds: dict[str, str] | None = None) -> None:
        """A tile's result: its core into the image; its findings, in image coordinates, into the results."""
        py0, py1, px0, px1 = tile.padded
        if result.shape[:2] != (py1 - py0, px1 - px0):
            raise ValueError(f"tile {tile.index}: a {result.shape[1]}x{result.shape[0]} result for a {px1 - px0}x{py1 - py0} tile")
        if self.image is None:
            self.image = np.zeros((self.height, self.width, *result.shape[2:]), result.dtype)  # lazily zero: unplaced tiles show black
        elif result.shape[2:] != self.image.shape[2:] or result.dtype != self.image.dtype:
            raise ValueError(f"tile {tile.index}: its result's channels or pixel type differ from the other tiles'")
        y0, y1, x0, x1 = tile.core
        self.image[y0:y1, x0:x1] = result[tile.inner]
        self.placed += 1
        kinds = kinds or {}
        for key, value in (results or {}).items():
            kind = kinds.get(key)
            if kind is None:  # not a drawable finding: one value per tile, in tile order
                self.results.setdefault(key, [None] * len(self.tiles))[tile.index] = value
                continue
            self.kinds[key] = kind
            self.results.setdefault(key, []).extend(_in_image(kind, value, tile))


def _in_image(kind: str, found: Any, tile: Tile) -> list[Any]:
    """Objects a tile found, moved to image coordinates; those whose centre lies outside the tile's core are another
    tile's (seen here in the halo) and left out."""
    y0, y1, x0, x1 = tile.core
    dy, dx = tile.padded[0], tile.padded[2]
    kept = []
    for obj in found if isinstance(found, list) else []:
        if kind == "boxes":
            x, y, w, h = obj[:4]
            centre = (x + dx + w / 2, y + dy + h / 2)
            moved = [x + dx, y + dy, w, h, *obj[4:]]
        elif kind == "points":
            centre = (obj[0] + dx, obj[1] + dy)
            moved = [obj[0] + dx, obj[1] + dy, *obj[2:]]
        else:  # polygons
            moved = [[p[0] + dx, p[1] + dy] for p in obj]
            centre = (sum(p[0] for p in moved) / max(1, len(moved)), sum(p[1] for p in moved) / max(1, len(moved)))
        if x0 <= centre[0] < x1 and y0 <= centre[1] < y1:
            kept.append(moved)
    return kept


def tile_size(
    plan: TilePlan, height: int, width: int, pixel_bytes: int, tile: int | str, servers: int = 1, share: bool = True
) -> int | None:
    """The tile size for an image: ``tile`` itself, or (``"auto"``) what :func:`auto_tile` says of what the servers
    said (``share``: also to spread it over their workers, not only when it is too big); None: send it whole."""
    if plan.halo is None:
        if tile == "auto":
            return None
        raise BadParams("the server does not tile images (a version from before tiling): process the image whole")
    if tile == "auto":
        return auto_tile(height, width, plan.halo, plan.workers * servers, plan.max_pixels, plan.max_frame_bytes, pixel_bytes, share)
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"tile must be a size in pixels or 'auto', not {tile!r}")
    return tile


class TiledJob:
    """One image as tiles of ``size`` padded by ``halo``, sans I/O: each tile's input, and the result put together as
    tiles end. Its drivers send :meth:`inputs` as a stream (unordered) and hand each item to :meth:`place`."""

    def __init__(self, image: np.ndarray, halo: int, size: int) -> None:
        height, width = image.shape[:2]
        self.image, self.halo, self.size = image, halo, size
        self.tiles = grid(height, width, size, halo)
        self.assembly = Assembly(height, width, self.tiles)
        self.server_ms = 0.0

    def inputs(self) -> Iterator[np.ndarray]:
        return tile_inputs(self.image, self.tiles)

    def place(self, item: Item) -> Tile:
        """A tile's outcome (its result a ``Processed``): placed, or its error raised (the image fails with it)."""
        if item.error is not None:
            raise item.error
        tile, done = self.tiles[item.index], item.result
        self.assembly.place(tile, done.image, done.results, done.result_kinds)
        self.server_ms += done.server_ms
        return tile
