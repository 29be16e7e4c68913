"""Tiles of a big image on their own (no sockets): the grid, the halo, putting results back, objects found twice, and
when "auto" tiles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zmqproc.client.replies import Processed, TilePlan
from zmqproc.client.stream import Item
from zmqproc.client.tiles import Assembly, TiledJob, auto_tile, cut, grid, tile_size
from zmqproc.errors import BadParams


@pytest.mark.parametrize(("height", "width", "tile", "halo"), [(100, 70, 32, 5), (64, 64, 64, 0), (9, 13, 4, 7), (1, 1, 8, 3)])
def test_the_cores_cover_the_image_once_and_the_padding_stays_inside(height, width, tile, halo):
    covered = np.zeros((height, width), np.uint8)
    for t in grid(height, width, tile, halo):
        y0, y1, x0, x1 = t.core
        covered[y0:y1, x0:x1] += 1
        py0, py1, px0, px1 = t.padded
        assert 0 <= py0 <= y0 and y1 <= py1 <= height and 0 <= px0 <= x0 and x1 <= px1 <= width
        assert (y0 - py0 == min(halo, y0)) and (px1 - x1 == min(halo, width - x1)), "the full halo wherever the image has it"
    assert (covered == 1).all()


def test_a_local_filter_on_padded_tiles_is_the_whole_image_result():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (97, 131, 3), np.uint8)
    whole = cv2.GaussianBlur(image, (9, 9), 0)
    tiles = grid(97, 131, 20, 4)  # a 9x9 kernel reaches 4 pixels
    out = Assembly(97, 131, tiles)
    for t in reversed(tiles):  # in any order
        out.place(t, cv2.GaussianBlur(cut(image, t), (9, 9), 0))
    assert out.complete and np.array_equal(out.image, whole)
    short = Assembly(97, 131, grid(97, 131, 20, 2))
    for t in short.tiles:
        short.place(t, cv2.GaussianBlur(cut(image, t), (9, 9), 0))
    assert not np.array_equal(short.image, whole), "a halo too small shows at the seams (so the test above can fail)"


def test_objects_come_back_in_image_coordinates_once():
    tiles = grid(100, 100, 50, 10)  # tile 1's core: x 50..100, y 0..50; padded from x 40
    out = Assembly(100, 100, tiles)
    kinds = {"faces": "boxes", "dots": "points", "shapes": "polygons"}
    left = {"faces": [[45, 5, 4, 4]], "dots": [[55, 5]], "shapes": [[[44, 1], [48, 1], [48, 3]]]}  # centres x 47 / 57 / 46.7
    right = {"faces": [[5, 5, 4, 4]], "dots": [[15, 5]], "shapes": [[[4, 1], [8, 1], [8, 3]]]}  # the same, seen from tile 1
    out.place(tiles[0], np.zeros((60, 60), np.uint8), left, kinds)
    out.place(tiles[1], np.zeros((60, 60), np.uint8), right, kinds)
    assert out.results["faces"] == [[45, 5, 4, 4]], "a box seen twice is kept by the tile whose core holds its centre"
    assert out.results["dots"] == [[55, 5]] and out.results["shapes"] == [[[44, 1], [48, 1], [48, 3]]]
    assert out.kinds == kinds


def test_other_results_are_one_value_per_tile():
    tiles = grid(10, 20, 10, 0)
    out = Assembly(10, 20, tiles)
    out.place(tiles[1], np.zeros((10, 10), np.uint8), {"mean": 2.0})
    out.place(tiles[0], np.zeros((10, 10), np.uint8), {"mean": 1.0})
    assert out.results == {"mean": [1.0, 2.0]}


def test_a_tile_whose_result_has_another_size_is_refused():
    tiles = grid(10, 10, 5, 0)
    with pytest.raises(ValueError, match="tile 0"):
        Assembly(10, 10, tiles).place(tiles[0], np.zeros((4, 5), np.uint8))


PLAN = TilePlan(halo=15, max_pixels=40_000_000, max_frame_bytes=128 << 20, workers=2)


def test_auto_tiles_what_a_server_would_refuse_with_tiles_it_takes():
    size = auto_tile(20000, 20000, 15, 2, PLAN.max_pixels, PLAN.max_frame_bytes, 3)
    assert size is not None and (size + 30) ** 2 * 3 <= PLAN.max_frame_bytes and size <= 4096
    small_server = auto_tile(4000, 4000, 100, 1, 1_000_000, 128 << 20, 3)
    assert small_server is not None and (small_server + 200) ** 2 <= 1_000_000


def test_auto_sends_whole_what_one_worker_does_best_or_what_is_small():
    assert auto_tile(3000, 4000, 15, 1, PLAN.max_pixels, PLAN.max_frame_bytes, 3) is None, "one worker: nothing to share"
    assert auto_tile(500, 600, 15, 4, PLAN.max_pixels, PLAN.max_frame_bytes, 3) is None, "too small to share"
    assert auto_tile(3000, 4000, 15, 2, PLAN.max_pixels, PLAN.max_frame_bytes, 3) is not None


def test_a_server_that_does_not_tile():
    old = TilePlan(None, 0, 0, 1)
    assert tile_size(old, 5000, 5000, 3, "auto") is None
    with pytest.raises(BadParams, match="does not tile"):
        tile_size(old, 5000, 5000, 3, 512)
    with pytest.raises(ValueError, match="a size in pixels"):
        tile_size(PLAN, 5000, 5000, 3, 0)


def test_a_tiled_job_places_items_and_a_failed_tile_fails_the_image():
    image = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    job = TiledJob(image, halo=2, size=16)
    inputs = list(job.inputs())
    assert len(inputs) == len(job.tiles) == 6 and all(i.flags.c_contiguous for i in inputs)
    for index, tile_input in enumerate(inputs):
        job.place(Item(index, Processed(tile_input.copy(), {}, 1.5, None)))
    assert np.array_equal(job.assembly.image, image) and job.server_ms == 9.0
    with pytest.raises(BadParams):
        TiledJob(image, 2, 16).place(Item(0, None, BadParams("step 1 (x): bad")))


def test_auto_cuts_evenly_into_a_multiple_of_the_workers():
    """A 5x5 grid on 2 workers leaves the last tile running alone: 7000x7000 goes as 6x6 tiles of 1167."""
    size = auto_tile(7000, 7000, 13, 2, PLAN.max_pixels, PLAN.max_frame_bytes, 3)
    assert size == 1167 and len(grid(7000, 7000, size, 13)) % 2 == 0


def test_auto_tiles_are_a_few_megabytes_whatever_the_image():
    """A server holds a few tiles and an op's copies of each: its memory must not grow with the image."""
    for side, each in ((10000, 3), (20000, 3), (20000, 1), (10000, 12)):
        size = auto_tile(side, side, 13, 2, PLAN.max_pixels, PLAN.max_frame_bytes, each)
        assert size is not None and 4 << 20 <= size * size * each <= 8 << 20, (side, each, size)
