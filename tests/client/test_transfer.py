"""The transfer policy: the quickest lossless way each way, from the link as measured (or guessed) and the codecs' speeds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zmqproc import Client
from zmqproc.client.transfer import FILE, GUESS_FAR, GUESS_NEAR, PNG, RAW, Choice, Link, Ratios, choose
from zmqproc.images import png_ratio

MB = 1e6
PHOTO_12MP = 36_000_000


def photo(height: int = 600, width: int = 800) -> np.ndarray:
    rng = np.random.default_rng(1)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (7, 7), 0)


@pytest.mark.parametrize(
    ("rate", "up", "down"),
    [(125 * MB, RAW, RAW), (2.5 * MB, PNG, PNG)],
    ids=["1 Gbit/s: raw both ways", "20 Mbit/s: png both ways"],
)
def test_a_12_mp_photo_goes_raw_on_a_fast_link_and_as_png_on_a_slow_one(rate, up, down):
    choice = choose(Link(rate, 0.01, True), PHOTO_12MP, ratio=lambda: 0.55)
    assert (choice.up, choice.down) == (up, down)


def test_the_callers_jpeg_file_goes_as_it_is_when_that_is_quicker():
    fast = choose(Link(125 * MB, 0.002, True), PHOTO_12MP, file=("jpeg", 4_800_000), ratio=lambda: 0.55)
    slow = choose(Link(2.5 * MB, 0.12, True), PHOTO_12MP, file=("jpeg", 4_800_000), ratio=lambda: 0.55)
    assert fast.up == FILE and slow == Choice(FILE, PNG, slow.seconds)
    assert fast.seconds < slow.seconds


def test_how_well_the_image_compresses_is_asked_only_when_png_could_win():
    asked = []

    def ratio() -> float:
        asked.append(1)
        return 0.55

    choose(Link(1000 * MB, 0.0001, True), PHOTO_12MP, ratio=ratio)
    assert not asked, "loopback: no PNG could beat raw, no sample is encoded"
    choose(Link(2.5 * MB, 0.12, True), PHOTO_12MP, ratio=ratio)
    assert asked == [1]


def test_an_image_that_does_not_compress_goes_raw_and_png_only_where_it_can_hold_the_pixels():
    assert choose(Link(2.5 * MB, 0.12, True), PHOTO_12MP, ratio=lambda: 1.0).up == RAW
    assert choose(Link(2.5 * MB, 0.12, True), PHOTO_12MP, ratio=lambda: 0.3, png_ok=False) == Choice(RAW, RAW, pytest.approx(28.92))


def test_before_any_rate_is_measured_the_round_trip_tells_a_near_link_from_a_far_one():
    assert Link.known(0.0, 0.0004) == Link(GUESS_NEAR, 0.0004, False)
    assert Link.known(0.0, 0.06) == Link(GUESS_FAR, 0.06, False)
    assert Link.known(0.0, -1.0).rate == GUESS_NEAR and Link.known(0.0, -1.0).blind, "no ping answered yet: a blind guess"
    assert not Link.known(0.0, 0.06).blind and not Link.known(7 * MB, -1.0).blind
    assert Link.known(7 * MB, 0.06) == Link(7 * MB, 0.06, True)


def test_the_ratio_from_a_sample_is_close_to_the_whole_images():
    image = photo(1200, 1600)
    ok, whole = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    assert abs(png_ratio(image) - len(whole) / image.nbytes) < 0.05


@pytest.mark.parametrize("image", [photo(), photo()[:, :, 0], (photo().astype(np.uint16) * 257), np.dstack([photo(), photo()[:, :, :1]])])
@pytest.mark.parametrize("transfer", ["png", "raw", "auto"])
def test_whichever_way_the_pixels_travel_the_result_is_the_same_array(endpoint, image, transfer):
    with Client(endpoint, timeout=10) as client:
        expected = client.process(image, "invert", transfer="raw")
        got = client.process(image, "invert", transfer=transfer, details=True)
    assert got.image.dtype == expected.dtype and np.array_equal(got.image, expected)


def test_an_unknown_transfer_is_refused(endpoint):
    with Client(endpoint, timeout=10) as client, pytest.raises(ValueError, match="transfer"):
        client.process(photo(), "invert", transfer="zip")


def test_a_pipeline_whose_results_shrink_is_costed_by_what_its_last_result_came_to():
    """bench/link.py: a JPEG file up on 100 Mbit/s, the blurred 12 MP result came back raw (3.81 s) where PNG (0.37 of
    its bytes, not the photo's 0.55) was quicker (3.41 s)."""
    link = Link(12.5 * MB, 0.04, True)
    jpeg = ("jpeg", 4_800_000)
    assert choose(link, PHOTO_12MP, file=jpeg, ratio=lambda: 0.55).down == RAW
    ratios = Ratios()
    assert ratios.get("gaussian_blur:ksize=5") is None
    ratios.learn("gaussian_blur:ksize=5", 13_300_000, PHOTO_12MP)
    learned = ratios.get("gaussian_blur:ksize=5")
    assert choose(link, PHOTO_12MP, file=jpeg, ratio=lambda: 0.55, down_ratio=learned) == Choice(FILE, PNG, pytest.approx(3.35, abs=0.05))


def test_the_library_remembers_how_small_a_pipelines_png_results_came(endpoint):
    image = photo()
    with Client(endpoint, timeout=10) as client:
        client.process(image, "gaussian_blur:ksize=15", transfer="png")
        remembered = client._ratios.get("gaussian_blur:ksize=15")
    assert remembered is not None and 0 < remembered < png_ratio(image), "a blur's result shrinks more than the photo"
