"""Image payloads: descriptors, checks before allocation, and array <-> frame conversion.

A raw frame becomes a numpy array without a copy (``np.frombuffer``), and an
array goes back on the wire as itself (it supports the buffer protocol).
Encoded files are sized from their headers before OpenCV decodes them, so a
small file that claims a huge image is refused instead of allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BadParams, BadRequest, DecodeFailed, TooLarge
from .formats import BY_NAME, ENCODED_FORMATS, FORMATS, RAW_DTYPES

CHANNELS = (1, 3, 4)
_DTYPE_NAMES = {np.dtype(name): name for name in RAW_DTYPES}  # numpy's dtype.name is slow for a hot path


def dtype_name(image: np.ndarray) -> str | None:
    """The wire name of an array's dtype, or None when it cannot travel raw."""
    return _DTYPE_NAMES.get(image.dtype)


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


PNG_FAST = [16, 1, 17, 3]  # cv2.IMWRITE_PNG_COMPRESSION 1, IMWRITE_PNG_STRATEGY RLE: 30 against 19 MB/s, and smaller
# than OpenCV's default on photos (0.53 against 0.60 of the pixels' bytes, 12 MP); lossless like any PNG
MAX_CLIENT_PIXELS = 1 << 30  # the most a client decodes or sends as a file (OpenCV's own ceiling; bigger goes as tiles)
MAX_JPEG_SCANS = 128  # a progressive JPEG re-decodes the whole image per scan: 6000 empty scans took 28 s of CPU


def parse_descriptor(value: object, payload: Any, max_pixels: int) -> ImageDescriptor:
    """Check a request's image descriptor against its payload frame and the pixel limit.

    An encoded file's descriptor gets the ``dtype`` and ``shape`` its decoder will
    produce, read from the file's own header: the server sizes the job from them
    before anything is decoded. ``payload`` an int: only its size is known yet (it comes in parts): an encoded file's
    descriptor is then its format alone, sized once the bytes are in.
    """
    if not isinstance(value, dict):
        raise BadRequest("'image' must be a map describing frame 1")
    fmt = value.get("format")
    if fmt in ENCODED_FORMATS:
        return ImageDescriptor(fmt) if isinstance(payload, int) else _sized(fmt, payload, max_pixels)
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
        raise TooLarge.over("pixels", pixels, max_pixels, f"image is {shape[1]}x{shape[0]} = {pixels} pixels, the limit is {max_pixels}")
    expected = pixels * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    size = payload if isinstance(payload, int) else len(payload)
    if size != expected:
        raise DecodeFailed(f"raw {dtype} {shape} needs {expected} bytes, frame 1 has {size}")
    return ImageDescriptor("raw", dtype, tuple(shape))


def describe_file(data: Any, max_pixels: int) -> ImageDescriptor:
    """An image file's format and what it decodes to, from its header alone: how a client checks a file before it decodes
    or sends it, by the rule the server applies before decoding (DecodeFailed: not an accepted image file, or a broken
    header; TooLarge: over ``max_pixels``)."""
    head = bytes(memoryview(data).cast("B")[:16])
    try:
        fmt = sniff_format(head)
    except ValueError as exc:
        raise DecodeFailed(f"it is {exc}" if head else "it is empty") from None
    return _sized(fmt, data, max_pixels, "it")


def _sized(fmt: str, payload: Any, max_pixels: int, what: str = "frame 1") -> ImageDescriptor:
    decoded, decoded_dtype = decoded_geometry(fmt, payload, what)
    height, width, _ = decoded
    if width * height > max_pixels:
        raise TooLarge.over(
            "pixels", width * height, max_pixels, f"{fmt} image is {width}x{height} = {width * height} pixels, the limit is {max_pixels}"
        )
    return ImageDescriptor(fmt, decoded_dtype, decoded)


def decoded_geometry(fmt: str, data: Any, what: str = "frame 1") -> tuple[tuple[int, int, int], str]:
    """((height, width, channels), dtype) that OpenCV's decoder will make of an encoded file, from its header alone.

    ``channels`` is an upper bound where the header leaves it open (a PNG
    palette may gain alpha). Raises DecodeFailed when the header is not of the
    announced format or its samples decode to a dtype the server does not take
    (e.g. TIFF float64), and TooLarge for a progressive JPEG with more than
    :data:`MAX_JPEG_SCANS` scans.
    """
    view = memoryview(data).cast("B")
    head = bytes(view[:64])  # PNG, BMP and WebP headers sit at the start
    try:
        if fmt == "png":
            return _png_geometry(head)
        if fmt == "bmp":
            return _bmp_geometry(head)
        if fmt == "webp":
            return _webp_geometry(head)
        if fmt == "jpeg":
            return _jpeg_geometry(view)
        return _tiff_geometry(view)
    except (ValueError, struct.error, LookupError, OverflowError):
        raise DecodeFailed(f"{what} is not a readable {fmt} file") from None


def _png_geometry(head: bytes) -> tuple[tuple[int, int, int], str]:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    channels = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(color)  # palette: 3, or 4 with a tRNS chunk; grey+alpha becomes BGRA
    if channels is None or depth not in (1, 2, 4, 8, 16):
        raise ValueError
    return (height, width, channels), "uint16" if depth == 16 else "uint8"


def _bmp_geometry(head: bytes) -> tuple[tuple[int, int, int], str]:
    if head[:2] != b"BM":
        raise ValueError
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
        width, height, _, bits = struct.unpack("<HHHH", head[18:26])
    else:
        width, height, _, bits = struct.unpack("<iiHH", head[18:30])
    return (abs(height), abs(width), 4 if bits == 32 else 3), "uint8"


def _webp_geometry(head: bytes) -> tuple[tuple[int, int, int], str]:
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise ValueError
    chunk = head[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return (h & 0x3FFF, w & 0x3FFF, 3), "uint8"
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1, 4), "uint8"
    if chunk == b"VP8X":
        return (int.from_bytes(head[27:30], "little") + 1, int.from_bytes(head[24:27], "little") + 1, 4), "uint8"
    raise ValueError


def _jpeg_geometry(view: memoryview) -> tuple[tuple[int, int, int], str]:
    """Walk the segments (EXIF, ICC, ... may fill many kilobytes) to the frame header, without copying; count the scans."""
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
            precision, height, width, components = struct.unpack_from(">BHHB", view, i + 4)
            if marker in (0xC2, 0xC6, 0xCA, 0xCE):  # progressive: each scan is a pass over the whole image
                # Entropy-coded data stuffs every 0xFF with 0x00: each FFDA is a start of scan (or metadata: over-counted only).
                scans = bytes(view[i:]).count(b"\xff\xda")
                if scans > MAX_JPEG_SCANS:
                    raise TooLarge.over(
                        "jpeg_scans", scans, MAX_JPEG_SCANS, f"progressive jpeg with {scans} scans, the limit is {MAX_JPEG_SCANS}"
                    )
            return (height, width, 1 if components == 1 else 3), "uint16" if precision > 8 else "uint8"
        i += 2 + length
    raise ValueError


_TIFF_DTYPES = {(1, 1): "uint8", (1, 2): "uint8", (1, 4): "uint8", (1, 8): "uint8", (1, 16): "uint16", (3, 32): "float32"}
_TIFF_TAGS = (256, 257, 258, 262, 277, 339)  # width, length, bits per sample, photometric, samples per pixel, sample format


def _tiff_geometry(view: memoryview) -> tuple[tuple[int, int, int], str]:
    """The first image file directory: sides, samples per pixel, bits per sample and sample format (uint, int, float)."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(view[:2]))
    if order is None or struct.unpack_from(order + "H", view, 2)[0] != 42:
        raise ValueError
    (ifd,) = struct.unpack_from(order + "I", view, 4)
    (count,) = struct.unpack_from(order + "H", view, ifd)
    tags: dict[int, int] = {}
    sizes = {1: 1, 3: 2, 4: 4}  # BYTE, SHORT, LONG: the types these tags use
    for n in range(min(count, 512)):
        tag, kind, values = struct.unpack_from(order + "HHI", view, ifd + 2 + 12 * n)
        size = sizes.get(kind)
        if tag not in _TIFF_TAGS or size is None or values < 1:
            continue
        at = ifd + 10 + 12 * n
        if size * values > 4:  # the values do not fit the entry, which holds their offset; read the first (samples alike)
            (at,) = struct.unpack_from(order + "I", view, at)
        tags[tag] = struct.unpack_from(order + {1: "B", 2: "H", 4: "I"}[size], view, at)[0]
    width, height = tags.get(256, 0), tags.get(257, 0)
    if not width or not height:
        raise ValueError
    samples, bits, sample_format = tags.get(277, 1), tags.get(258, 1), tags.get(339, 1)
    dtype = _TIFF_DTYPES.get((sample_format, bits))
    if dtype is None or samples > 4:
        kind = {1: "unsigned", 2: "signed", 3: "float"}.get(sample_format, f"format-{sample_format}")
        raise DecodeFailed(
            f"tiff with {samples} x {bits}-bit {kind} samples, refused before decoding: zmqproc takes 1-16 bit unsigned "
            "or 32-bit float samples (uint8, uint16, float32), at most 4 a pixel"
        )
    channels = 3 if tags.get(262) == 3 else {1: 1, 2: 4, 3: 3, 4: 4}[samples]  # palette: BGR; grey+alpha: BGRA
    return (height, width, channels), dtype


def decode_image(desc: ImageDescriptor, payload: Any) -> np.ndarray:
    """The pixels of a checked payload: a read-only view for raw, a decoded array otherwise."""
    if desc.format == "raw":
        assert desc.dtype is not None and desc.shape is not None
        return np.frombuffer(payload, dtype=desc.dtype).reshape(desc.shape)
    import cv2

    check_lengths(desc.format, payload)
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


MAX_PNG_CHUNKS = 1 << 20  # a 128 MiB PNG written by libpng has 16384; walking a million takes about 0.4 s


def check_lengths(fmt: str, data: Any, what: str = "frame 1") -> None:
    """Refuse (DecodeFailed) a PNG whose chunk lengths point past the file's end, before OpenCV decodes it.

    OpenCV's PNG reader allocates what a chunk's length claims before it reads
    it: an 18 KB file whose IDAT claims 2 GiB costs 2 GiB and 4 s, then fails.
    """
    if fmt != "png":
        return
    view = memoryview(data).cast("B")
    at, chunks = 8, 0
    while at + 8 <= len(view):
        (length,) = struct.unpack_from(">I", view, at)
        if at + 12 + length > len(view):
            raise DecodeFailed(f"{what} is a truncated or corrupt png: a chunk at byte {at} claims {length} bytes, past the end")
        if bytes(view[at + 4 : at + 8]) == b"IEND":
            return
        at += 12 + length
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise DecodeFailed(f"{what} is a png of more than {MAX_PNG_CHUNKS} chunks, refused before decoding")


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

    if dtype_name(image) not in BY_NAME[fmt].dtypes:
        raise BadParams(f"{fmt} cannot hold {image.dtype} pixels; ask for reply_format raw (or png for uint16)")
    try:
        ok, data = cv2.imencode(BY_NAME[fmt].suffix, image, PNG_FAST if fmt == "png" else [])
    except cv2.error:
        ok = False
    if not ok:
        raise BadParams(f"a {image.dtype} image with shape {list(image.shape)} cannot be encoded as {fmt}")
    return ImageDescriptor(fmt), data


def png_ratio(image: np.ndarray, bands: int = 4) -> float:
    """About how small :data:`PNG_FAST` makes ``image`` (bytes / pixel bytes), from a few bands of its rows (1/16 of it)."""
    import cv2

    height = image.shape[0]
    rows = max(1, height // (16 * bands))
    sample = np.concatenate([image[i * height // bands : i * height // bands + rows] for i in range(bands)])
    ok, data = cv2.imencode(".png", sample, PNG_FAST)
    return len(data) / sample.nbytes if ok else 1.0


def file_bytes(image: np.ndarray | bytes, fmt: str) -> bytes:
    """A result as a file's bytes: the server's own encoding as it came, or the pixels encoded here (BadParams when
    ``fmt`` cannot hold them)."""
    return image if isinstance(image, bytes) else bytes(encode_image(image, fmt)[1])


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


VIDEO_CODECS = {".mkv": "FFV1", ".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v"}  # what a video file is written with (FFV1: lossless)


@dataclass(frozen=True, slots=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int  # as the container says (0: unknown)


def read_video(path: str) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """A video file's rate, size and frame count, and its frames (BGR, in order); DecodeFailed when it will not open.
    The sound, if any, is not read."""
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DecodeFailed(f"{path} is not a video OpenCV can read")
    info = VideoInfo(
        capture.get(cv2.CAP_PROP_FPS) or 25.0,
        int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
    )

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return info, frames()


class VideoSink:
    """Frames written to ``path`` at ``fps`` (the codec from its suffix, see VIDEO_CODECS); the size is the first frame's."""

    def __init__(self, path: str, fps: float) -> None:
        suffix = path[path.rfind(".") :].lower()
        if suffix not in VIDEO_CODECS:
            raise BadParams(f"a video is written as {', '.join(VIDEO_CODECS)}, not {suffix!r}")
        self.path, self.fps, self.codec = path, fps, VIDEO_CODECS[suffix]
        self._writer: Any = None
        self.size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append a frame (BadParams when it is not 8-bit, or not the size of the first)."""
        import cv2

        if frame.dtype != np.uint8:
            raise BadParams(f"a video frame must be uint8, not {frame.dtype}")
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            fourcc = cv2.VideoWriter.fourcc(*self.codec)
            self._writer, self.size = cv2.VideoWriter(self.path, fourcc, self.fps, size, frame.ndim == 3), size
            if not self._writer.isOpened():
                raise BadParams(f"cannot write {self.path} with the {self.codec} codec")
        elif size != self.size:
            raise BadParams(f"a frame of {size[0]}x{size[1]} in a video of {self.size}")
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
