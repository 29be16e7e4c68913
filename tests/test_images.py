"""Image payloads: header sizing before decoding, raw views, encoding rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zmqproc.errors import BadParams, DecodeFailed, TooLarge
from zmqproc.images import (
    MAX_CLIENT_PIXELS,
    MAX_JPEG_SCANS,
    ImageDescriptor,
    check_lengths,
    decode_image,
    decoded_geometry,
    describe_array,
    describe_file,
    encode_image,
    sniff_format,
)

EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}


def encoded_size(fmt: str, data: bytes) -> tuple[int, int]:
    """(width, height) as decoded_geometry reads them from the header."""
    (height, width, _), _ = decoded_geometry(fmt, data)
    return width, height


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (20, 31)])
def test_encoded_size_reads_the_header(fmt, shape):
    data = cv2.imencode(EXT[fmt], np.full(shape, 99, np.uint8))[1].tobytes()
    assert encoded_size(fmt, data) == (shape[1], shape[0])
    assert sniff_format(data) == fmt


def test_jpeg_size_after_large_metadata_segments():
    plain = cv2.imencode(".jpg", np.zeros((8, 12, 3), np.uint8))[1].tobytes()
    app15 = b"\xff\xef" + (65535).to_bytes(2, "big") + b"\0" * 65533  # a 64 KiB metadata segment before the frame header
    data = plain[:2] + app15 * 2 + plain[2:]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (8, 12, 3)
    assert encoded_size("jpeg", data) == (12, 8)


def test_os2_bmp_size():
    import struct

    header = b"BM" + struct.pack("<IHHI", 26 + 12, 0, 0, 26) + struct.pack("<IHHHH", 12, 300, 200, 1, 24)
    assert encoded_size("bmp", header + b"\0" * 12) == (300, 200)


def test_lossless_webp_size():
    data = cv2.imencode(".webp", np.zeros((17, 23, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert data[12:16] == b"VP8L" and encoded_size("webp", data) == (23, 17)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 1), (np.uint8, 3), (np.uint16, 1), (np.uint16, 4)])
def test_decoded_geometry_includes_bit_depth_and_samples(fmt, dtype, channels):
    """What the decoder will make, read from the header: the server sizes the job before decoding."""
    image = np.zeros((7, 9, channels) if channels > 1 else (7, 9), dtype)
    data = cv2.imencode(EXT[fmt], image)[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    shape, name = decoded_geometry(fmt, data)
    assert name == decoded.dtype.name and shape[:2] == (7, 9)
    assert shape[2] >= (decoded.shape[2] if decoded.ndim == 3 else 1), "an upper bound of the channels"


def test_tiff_float32_is_sized_and_float64_refused_before_decoding():
    f32 = cv2.imencode(".tiff", np.zeros((6, 5, 3), np.float32))[1].tobytes()
    assert decoded_geometry("tiff", f32) == ((6, 5, 3), "float32") and sniff_format(f32) == "tiff"
    f64 = cv2.imencode(".tiff", np.zeros((6, 5, 4), np.float64))[1].tobytes()
    with pytest.raises(DecodeFailed, match="64-bit float samples, refused before decoding"):
        decoded_geometry("tiff", f64)


def test_jpeg_scan_bomb_is_refused_from_its_header():
    base = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert decoded_geometry("jpeg", base) == ((16, 16, 3), "uint8")
    sos = base.index(b"\xff\xda")
    empty_scan = b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00"  # one component, no coefficients: no entropy data
    bomb = base[:sos] + empty_scan * (MAX_JPEG_SCANS + 1) + base[sos:]
    with pytest.raises(TooLarge, match="scans"):
        decoded_geometry("jpeg", bomb)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp", "tiff"])
def test_wrong_magic_is_decode_failed(fmt):
    with pytest.raises(DecodeFailed):
        encoded_size(fmt, b"GIF89a" + b"\0" * 40)


def test_raw_decode_is_a_view_of_the_frame():
    buf = bytearray(range(24))
    image = decode_image(ImageDescriptor("raw", "uint8", (2, 4, 3)), buf)
    buf[0] = 200
    assert image[0, 0, 0] == 200 and image.shape == (2, 4, 3)


def test_encoded_round_trip_keeps_16_bit_png():
    image = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    desc, data = encode_image(image, "png")
    assert desc == ImageDescriptor("png")
    assert np.array_equal(decode_image(desc, data), image)


def test_truncated_file_does_not_decode():
    data = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))[1].tobytes()
    with pytest.raises(DecodeFailed):
        decode_image(ImageDescriptor("png"), data[:60])


@pytest.mark.parametrize(("dtype", "fmt"), [(np.float32, "png"), (np.uint16, "jpeg"), (np.float32, "webp")])
def test_formats_refuse_pixels_they_cannot_hold(dtype, fmt):
    with pytest.raises(BadParams, match=fmt):
        encode_image(np.zeros((4, 4), dtype), fmt)


def test_describe_array_copies_only_non_contiguous_arrays():
    image = np.zeros((10, 10, 3), np.uint8)
    assert describe_array(image)[1] is image
    desc, sent = describe_array(image[:, ::2])
    assert desc.shape == (10, 5, 3) and sent.flags.c_contiguous
    with pytest.raises(ValueError):
        describe_array(np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError):
        describe_array(np.zeros((4, 4, 2), np.uint8))


def test_describe_file_sizes_a_file_by_the_servers_rule_before_anything_is_decoded():
    from tests.hostile import client_side_files

    png = cv2.imencode(".png", np.zeros((5, 7), np.uint16))[1].tobytes()
    assert describe_file(png, 35) == ImageDescriptor("png", "uint16", (5, 7, 1))
    with pytest.raises(TooLarge, match="7x5 = 35 pixels, the limit is 34"):
        describe_file(png, 34)
    for name, (data, words) in client_side_files().items():
        if name != "truncated.png":  # its header is whole: only decoding finds the cut
            with pytest.raises((DecodeFailed, TooLarge), match=words):
                describe_file(data, MAX_CLIENT_PIXELS)


def test_a_tiff_with_zero_samples_a_pixel_is_decode_failed_from_its_header():
    """Found by scripts/fuzz.py: a KeyError here once ended the server's socket loop."""
    import struct

    data = bytearray(cv2.imencode(".tiff", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] == 277:  # SamplesPerPixel
            data[entry + 8 : entry + 10] = b"\0\0"
    with pytest.raises(DecodeFailed, match="not a readable tiff"):
        decoded_geometry("tiff", bytes(data))


def test_a_png_chunk_claiming_more_than_the_file_is_refused_before_opencv_allocates_it():
    """Found by scripts/fuzz.py: an 18 KB PNG whose IDAT claims 2 GiB cost OpenCV 2 GiB and 4 s."""
    import struct

    good = cv2.imencode(".png", np.full((64, 64, 3), 9, np.uint8))[1].tobytes()
    check_lengths("png", good)
    idat = good.index(b"IDAT") - 4
    bad = good[:idat] + struct.pack(">I", (1 << 31) - 1) + good[idat + 4 :]
    with pytest.raises(DecodeFailed, match="claims 2147483647 bytes, past the end"):
        decode_image(ImageDescriptor("png"), bad)


def test_video_read_back_as_written_and_a_sink_refuses_what_a_video_cannot_hold(tmp_path):
    from zmqproc.images import VideoSink, read_video

    sink = VideoSink(str(tmp_path / "v.mkv"), 10.0)
    frames = [np.full((16, 24, 3), 30 * i, np.uint8) for i in range(4)]
    for frame in frames:
        sink.write(frame)
    with pytest.raises(BadParams, match="a frame of 8x8 in a video of"):
        sink.write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BadParams, match="must be uint8"):
        sink.write(np.zeros((16, 24, 3), np.uint16))
    sink.close()
    info, read = read_video(str(tmp_path / "v.mkv"))
    assert (info.fps, info.width, info.height, info.frames) == (10.0, 24, 16, 4)
    assert all(np.array_equal(a, b) for a, b in zip(read, frames, strict=True))
    with pytest.raises(DecodeFailed, match="not a video"):
        read_video(str(tmp_path / "missing.mkv"))
