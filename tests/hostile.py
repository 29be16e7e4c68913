"""Hostile files for the tests that attack the server: small on the wire, huge (or costly) once decoded."""

from __future__ import annotations

import struct

import cv2
import numpy as np


def tiff_claiming(width: int, height: int, pixels: np.ndarray | None = None) -> bytes:
    """A TIFF of ``pixels`` (default 4x4 BGR uint8) whose header claims ``width`` x ``height``.

    Decoded as claimed, a 6324 x 6324 float64 RGBA one (``np.zeros((4, 4, 4), np.float64)``) is 1.2 GiB.
    """
    ok, encoded = cv2.imencode(".tiff", np.zeros((4, 4, 3), np.uint8) if pixels is None else pixels)
    assert ok
    data = bytearray(encoded.tobytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        value = {256: width, 257: height, 278: height}.get(tag)  # width, length, rows per strip
        if value is not None:
            data[entry + 8 : entry + 12] = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", min(value, 65535), 0)
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): 100000 x 100000 is 30 GB decoded."""
    import zlib

    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def client_side_files() -> dict[str, tuple[bytes, str]]:
    """Broken files a user may open or send, each with the words the client answers them with."""
    good = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))[1].tobytes()
    return {
        "empty.jpg": (b"", "it is empty"),
        "text.png": (b"hello, not an image", "it is not a png, jpeg, webp, bmp or tiff file"),
        "header-cut.png": (good[:20], "it is not a readable png file"),
        "truncated.png": (good[: len(good) // 2], "truncated or corrupt"),
        "bomb.png": (png_claiming(100_000, 100_000), "100000x100000 = 10000000000 pixels"),
        "float64.tiff": (cv2.imencode(".tiff", np.zeros((6, 5, 4), np.float64))[1].tobytes(), "64-bit float samples"),
    }
