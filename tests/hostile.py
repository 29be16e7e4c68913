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
