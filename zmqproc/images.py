"""Image payloads: descriptors, checks before allocation, and array <-> frame conversion.

A raw frame becomes a numpy array without a copy (``np.frombuffer``), and an
array goes back on the wire as itself (it supports the buffer protocol).
Encoded files are sized from their headers before OpenCV decodes them, so a
small file that claims a huge image is refused instead of allocated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadParams, BadRequest, DecodeFailed, TooLarge

RAW_DTYPES = ("uint8", "uint16", "float32")
ENCODED_FORMATS = ("png", "jpeg", "webp", "bmp", "tiff")
FORMATS = ("raw", *ENCODED_FORMATS)
CHANNELS = (1, 3, 4)
_DTYPE_NAMES = {np.dtype(name): name for name in RAW_DTYPES}  # numpy's dtype.name is slow for a hot path


def dtype_name(image: np.ndarray) -> str | None:
    """The wire name of an array's dtype, or None when it cannot travel raw."""
    return _DTYPE_NAMES.get(image.dtype)


_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}
# What each encoded format holds without OpenCV silently converting the pixels.
_ENCODABLE_DTYPES = {"png": ("uint8", "uint16"), "jpeg": ("uint8",), "webp": ("uint8",), "bmp": ("uint8",), "tiff": RAW_DTYPES}


@dataclass(frozen=True, slots=True)
class ImageDescriptor:
    """What frame 1 holds: ``raw`` pixels with dtype and shape, or an encoded file."""

    format: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        if self.format != "raw":
            return {"format": self.format}
        return {"format": "raw", "dtype": self.dtype, "shape": list(self.shape or ())}


def _positive_int(value: object) -> bool:
    return type(value) is int and value > 0


def parse_descriptor(value: object, payload: Any, max_pixels: int) -> ImageDescriptor:
    """Check a request's image descriptor against its payload frame and the pixel limit."""
    if not isinstance(value, dict):
        raise BadRequest("'image' must be a map describing frame 1")
    fmt = value.get("format")
    if fmt in ENCODED_FORMATS:
        width, height = encoded_size(fmt, payload)
        if width * height > max_pixels:
            raise TooLarge(f"{fmt} image is {width}x{height} = {width * height} pixels, the limit is {max_pixels}")
        return ImageDescriptor(fmt)
    if fmt != "raw":
        raise BadRequest(f"image format must be one of {', '.join(FORMATS)}")
    dtype, shape = value.get("dtype"), value.get("shape")
    if dtype not in RAW_DTYPES:
        raise BadRequest(f"raw dtype must be one of {', '.join(RAW_DTYPES)}")
    if not isinstance(shape, list) or len(shape) not in (2, 3) or not all(_positive_int(n) for n in shape):
        raise BadRequest("raw shape must be [h, w] or [h, w, c] with positive integers")
    if len(shape) == 3 and shape[2] not in CHANNELS:
        raise BadRequest("raw channel count must be 1, 3 or 4")
    pixels = shape[0] * shape[1]
    if pixels > max_pixels:
        raise TooLarge(f"image is {shape[1]}x{shape[0]} = {pixels} pixels, the limit is {max_pixels}")
    expected = pixels * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    if len(payload) != expected:
        raise DecodeFailed(f"raw {dtype} {shape} needs {expected} bytes, frame 1 has {len(payload)}")
    return ImageDescriptor("raw", dtype, tuple(shape))


def encoded_size(fmt: str, data: Any) -> tuple[int, int]:
    """(width, height) read from an encoded file's header; (0, 0) where the format hides it (tiff).

    Raises DecodeFailed when the header is not of the announced format. TIFF's
    size is left to OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``).
    """
    view = memoryview(data).cast("B")
    head = bytes(view[:64])  # every header but JPEG's sits at the start
    try:
        if fmt == "png":
            if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
                raise ValueError
            return struct.unpack(">II", head[16:24])
        if fmt == "bmp":
            if head[:2] != b"BM":
                raise ValueError
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
                return struct.unpack("<HH", head[18:22])
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if fmt == "webp":
            return _webp_size(head)
        if fmt == "jpeg":
            return _jpeg_size(view)
        if head[:4] not in (b"II*\x00", b"MM\x00*"):
            raise ValueError
        return 0, 0
    except (ValueError, struct.error, IndexError):
        raise DecodeFailed(f"frame 1 is not a readable {fmt} file") from None


def _webp_size(head: bytes) -> tuple[int, int]:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise ValueError
    chunk = head[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise ValueError


def _jpeg_size(view: memoryview) -> tuple[int, int]:
    """Walk the segments (EXIF, ICC, ... may fill many kilobytes) to the frame header, without copying."""
    if bytes(view[:2]) != b"\xff\xd8":
        raise ValueError
    i = 2
    while i + 9 < len(view):
        if view[i] != 0xFF:
            raise ValueError
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack_from(">H", view, i + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", view, i + 5)
            return width, height
        i += 2 + length
    raise ValueError


def decode_image(desc: ImageDescriptor, payload: Any) -> np.ndarray:
    """The pixels of a checked payload: a read-only view for raw, a decoded array otherwise."""
    if desc.format == "raw":
        assert desc.dtype is not None and desc.shape is not None
        return np.frombuffer(payload, dtype=desc.dtype).reshape(desc.shape)
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV raises (not returns None) past OPENCV_IO_MAX_IMAGE_PIXELS, e.g. a TIFF bomb
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise TooLarge(f"{desc.format} image is over the server's pixel limit") from None
        raise DecodeFailed(f"frame 1 did not decode as {desc.format}") from None
    if image is None:
        raise DecodeFailed(f"frame 1 did not decode as {desc.format}")
    if dtype_name(image) is None:
        raise DecodeFailed(f"decoded {desc.format} has dtype {image.dtype}, not one of {', '.join(RAW_DTYPES)}")
    return image


def describe_array(image: np.ndarray) -> tuple[ImageDescriptor, np.ndarray]:
    """Descriptor and C-contiguous array (copied only if it was not) for sending raw pixels."""
    name = dtype_name(image)
    if name is None:
        raise ValueError(f"dtype {image.dtype} cannot travel raw; use one of {', '.join(RAW_DTYPES)}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in CHANNELS):
        raise ValueError(f"shape {image.shape} is not (h, w) or (h, w, c) with c in 1, 3, 4")
    return ImageDescriptor("raw", name, tuple(image.shape)), np.ascontiguousarray(image)


def encode_image(image: np.ndarray, fmt: str) -> tuple[ImageDescriptor, Any]:
    """Descriptor and payload for a reply or request in ``fmt`` (raw: the array itself, no copy)."""
    if fmt == "raw":
        return describe_array(image)
    import cv2

    if dtype_name(image) not in _ENCODABLE_DTYPES[fmt]:
        raise BadParams(f"{fmt} cannot hold {image.dtype} pixels; ask for reply_format raw (or png for uint16)")
    try:
        ok, data = cv2.imencode(_EXTENSIONS[fmt], image)
    except cv2.error:
        ok = False
    if not ok:
        raise BadParams(f"a {image.dtype} image with shape {list(image.shape)} cannot be encoded as {fmt}")
    return ImageDescriptor(fmt), data


def payload_to_image(desc: dict[str, Any], payload: Any) -> np.ndarray | bytes:
    """Client side: a reply's payload as an array (raw) or the encoded file's bytes."""
    if desc.get("format") == "raw":
        return np.frombuffer(payload, dtype=desc["dtype"]).reshape(desc["shape"])
    return bytes(payload)


def sniff_format(data: bytes) -> str:
    """The encoded format of a file's bytes, from its magic number."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    raise ValueError("not a png, jpeg, webp, bmp or tiff file")
