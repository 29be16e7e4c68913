"""Image payloads: header sizing before decoding, raw views, encoding rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zmqproc.errors import BadParams, DecodeFailed
from zmqproc.images import ImageDescriptor, decode_image, describe_array, encode_image, encoded_size, payload_to_image, sniff_format

EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}


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


def test_tiff_is_left_to_opencvs_limit():
    data = cv2.imencode(".tiff", np.zeros((5, 5), np.uint8))[1].tobytes()
    assert encoded_size("tiff", data) == (0, 0) and sniff_format(data) == "tiff"


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


def test_payload_to_image():
    raw = payload_to_image({"format": "raw", "dtype": "uint16", "shape": [2, 3]}, np.arange(6, dtype=np.uint16).tobytes())
    assert raw.dtype == np.uint16 and raw.shape == (2, 3) and raw[1, 2] == 5
    assert payload_to_image({"format": "png"}, memoryview(b"abc")) == b"abc"
