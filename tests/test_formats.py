"""The one table of image formats, and the places that read it agree with what OpenCV and the server do."""

from __future__ import annotations

import numpy as np
import pytest

from zmqproc import formats
from zmqproc.images import ImageDescriptor, decode_image, decoded_geometry, encode_image, sniff_format
from zmqproc.protocol import REPLY_FORMATS


@pytest.mark.parametrize("fmt", formats.TABLE, ids=lambda f: f.name)
def test_each_format_round_trips_every_pixel_type_it_declares(fmt):
    for dtype in fmt.dtypes:
        image = (np.arange(6 * 5 * 3) % 200).astype(dtype).reshape(6, 5, 3)
        _, data = encode_image(image, fmt.name)
        data = bytes(data)
        assert sniff_format(data) == fmt.name and formats.for_path("x" + fmt.suffix.upper()) is fmt
        (height, width, channels), decoded_dtype = decoded_geometry(fmt.name, data)
        decoded = decode_image(ImageDescriptor(fmt.name), data)
        assert (height, width, decoded_dtype) == (6, 5, dtype) and decoded.dtype == np.dtype(dtype)
        assert channels >= decoded.shape[2] == 3, "the header's channel count is an upper bound (WebP may add alpha)"


def test_what_the_protocol_the_viewer_and_the_command_line_read_comes_from_the_table():
    assert REPLY_FORMATS == ("raw", "png", "jpeg", "webp")
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tiff", ".tif"} == formats.SUFFIXES
    assert formats.for_path("photo.JPEG").name == "jpeg" and formats.for_path("notes.txt") is None
