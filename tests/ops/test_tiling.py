"""Tiles give exactly the whole image's result: every tileable built-in op, alone and in pipelines of up to three, on
every pixel type it tiles; why each op or pixel type declared not tileable is not; and the error naming it."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.conftest import load_image
from zmqproc import ops
from zmqproc.client import tiles
from zmqproc.errors import BadParams
from zmqproc.ops import builtin
from zmqproc.ops.registry import pipeline_halo
from zmqproc.protocol import Step

BUILTIN = {name: o for name, o in ops.REGISTRY.items() if o.fn.__module__ == builtin.__name__}
NEVER_TILED = {"bilateral_filter", "canny", "clahe", "detect_faces", "equalize_hist", "flip", "resize", "rotate"}
TILEABLE = sorted(set(BUILTIN) - NEVER_TILED)


def tiled(image: np.ndarray, pipeline: list[tuple[ops.Op, dict[str, Any]]], tile: int, halo: int) -> np.ndarray:
    """The pipeline run on each padded tile apart, the cores put together: what a tiling client gets."""
    height, width = image.shape[:2]
    grid = tiles.grid(height, width, tile, halo)
    assembly = tiles.Assembly(height, width, grid)
    for t in grid:
        assembly.place(t, ops.run_pipeline(tiles.cut(image, t), pipeline)[0])
    assert assembly.complete and assembly.image is not None
    return assembly.image


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Byte for byte: float32 bit patterns too (-0.0 is not 0.0)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def make_image(seed: int, height: int, width: int, channels: int, dtype: str, smooth: bool) -> np.ndarray:
    """Noise over the whole range, or a smooth field with a little noise (where denoise and blurs weigh neighbours)."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if smooth:
        coarse = rng.random((max(1, height // 8), max(1, width // 8), channels), dtype=np.float32)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).reshape(shape)
        unit = np.clip(field + rng.normal(0.0, 0.02, shape).astype(np.float32), 0.0, 1.0)
    else:
        unit = rng.random(shape, dtype=np.float32)
    if dtype == "float32":
        return (unit - 0.5) * 2000.0
    top = np.iinfo(dtype).max
    return np.rint(unit * top).astype(dtype)


def param_values(p: ops.Param) -> st.SearchStrategy[Any]:
    """Any value within the parameter's declaration."""
    if p.type == "bool":
        return st.booleans()
    if p.type == "choice":
        return st.sampled_from(p.choices)
    if p.type == "float":
        return st.floats(p.min, p.max, allow_nan=False)
    low, high = int(p.min), int(p.max)
    if p.odd:
        return st.integers(low // 2, (high - 1) // 2).map(lambda k: 2 * k + 1)
    return st.integers(low, high)


def tiled_dtypes(o: ops.Op) -> tuple[str, ...]:
    """The pixel types ``o`` declares it tiles."""
    return o.tile_dtypes or o.dtypes


def tiles_with(o: ops.Op, raw: dict[str, Any], dtype: str) -> bool:
    """Whether ``o`` declares itself tileable with these params on ``dtype`` images."""
    try:
        o.halo_for(o.validate(raw), dtype)
    except BadParams:
        return False
    return True


@st.composite
def tiling_cases(draw: st.DrawFn) -> tuple[list[Step], str, np.ndarray, int]:
    first = draw(st.sampled_from(TILEABLE))  # each op as likely as another to be in the pipeline
    dtype = draw(st.sampled_from(tiled_dtypes(BUILTIN[first])))
    names = [first, *draw(st.lists(st.sampled_from([n for n in TILEABLE if dtype in tiled_dtypes(BUILTIN[n])]), max_size=2))]
    steps = []
    for name in names:
        o = BUILTIN[name]
        raw = draw(st.fixed_dictionaries({n: param_values(p) for n, p in o.params.items()}).filter(lambda r, o=o: tiles_with(o, r, dtype)))
        steps.append(Step(name, raw))
    side = 48 if any(BUILTIN[n].heavy for n in names) else 200  # denoise runs once per tile: smaller images keep the file fast
    height, width = draw(st.integers(1, side)), draw(st.integers(1, side))
    tile = draw(st.integers(max(1, -(-max(height, width) // 8)), max(height, width) + 2))  # at most 64 tiles, down to 1 pixel
    channels = draw(st.sampled_from([1, 3, 4]))
    image = make_image(draw(st.integers(0, 2**32 - 1)), height, width, channels, dtype, draw(st.booleans()))
    return steps, dtype, image, tile


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(tiling_cases())
def test_tiles_give_the_whole_images_result_exactly(case):
    steps, dtype, image, tile = case
    pipeline = ops.validate_pipeline(steps)
    halo = pipeline_halo(pipeline, dtype)
    note(f"{image.shape} {dtype}, tile {tile}, halo {halo}")
    whole, _ = ops.run_pipeline(image, pipeline)
    assert identical(tiled(image, pipeline, tile, halo), whole)


@pytest.mark.parametrize(
    ("step", "halo", "smooth"),
    [
        (Step("gaussian_blur", {"ksize": 9}), 4, False),
        (Step("median_blur", {"ksize": 7}), 3, False),
        (Step("sobel", {"ksize": 1}), 1, False),  # a 3-tap derivative
        (Step("sobel", {"ksize": 5}), 2, False),
        (Step("sharpen", {"sigma": 1.0}), 3, False),  # OpenCV's kernel from sigma alone: cvRound(1.0 * 6 + 1) | 1 = 7 taps
        (Step("denoise", {"template_window": 5, "search_window": 7}), 5, True),  # noise has no similar patches to weigh
    ],
)
def test_each_halo_is_as_small_as_exactness_allows(step, halo, smooth):
    """The property above shows the halos are enough; one pixel less is not."""
    pipeline = ops.validate_pipeline([step])
    assert pipeline_halo(pipeline, "uint8") == halo
    image = make_image(7, 60, 70, 1, "uint8", smooth)
    whole, _ = ops.run_pipeline(image, pipeline)
    assert identical(tiled(image, pipeline, 20, halo), whole)
    assert not identical(tiled(image, pipeline, 20, halo - 1), whole)


def test_a_pipelines_halo_is_the_sum_of_its_steps():
    steps = [Step("grayscale"), Step("gaussian_blur", {"ksize": 9}), Step("median_blur", {"ksize": 5}), Step("threshold")]
    assert pipeline_halo(ops.validate_pipeline(steps), "uint8") == 0 + 4 + 2 + 0


def _photo() -> np.ndarray:
    return load_image("chelsea.png")[:160, :240].copy()


def _noise(height: int, width: int, channels: int, dtype: str) -> np.ndarray:
    return make_image(1, height, width, channels, dtype, smooth=False)


@pytest.mark.parametrize(
    ("step", "dtype", "image", "tile", "halo", "threads"),
    [
        # float32: the vector loop and its scalar tail round differently, so the last bits depend on a pixel's column
        pytest.param(
            Step("gaussian_blur", {"ksize": 7}), "float32", lambda: _noise(40, 101, 1, "float32"), 32, 12, None, id="gaussian_float32"
        ),
        pytest.param(Step("grayscale"), "float32", lambda: _noise(40, 101, 3, "float32"), 32, 12, None, id="grayscale_float32"),
        # uint8 bilateral: a tile under 16 pixels wide gets OpenCV's own code, wider images Intel IPP's (1 apart) ...
        pytest.param(Step("bilateral_filter", {"d": 3}), "uint8", lambda: _noise(64, 40, 1, "uint8"), 36, 4, None, id="bilateral_narrow"),
        # ... and with more than one OpenCV thread IPP cuts an image bigger than its L2 cache into stripes of rows, which
        # differ at their seams when thinner than the kernel: a halo of 32 (12 would reach) does not help
        pytest.param(
            Step("bilateral_filter", {"d": 24}), "uint8", lambda: _noise(96, 8192, 3, "uint8"), 512, 32, 2, id="bilateral_stripes"
        ),
        # hysteresis follows an edge as far as it goes; Otsu's level is the whole image's
        pytest.param(Step("canny", {"threshold1": 20.0, "threshold2": 300.0}), "uint8", _photo, 64, 32, None, id="canny"),
        pytest.param(Step("threshold", {"method": "otsu"}), "uint8", _photo, 64, 32, None, id="threshold_otsu"),
    ],
)
def test_what_is_declared_not_tileable_would_not_tile_exactly(step, dtype, image, tile, halo, threads):
    image, pipeline = image(), ops.validate_pipeline([step])
    with pytest.raises(BadParams, match="cannot be tiled"):
        pipeline_halo(pipeline, dtype)
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads or before)
    try:
        whole, _ = ops.run_pipeline(image, pipeline)
        pieces = tiled(image, pipeline, tile, halo)
    finally:
        cv2.setNumThreads(before)
    assert not identical(pieces, whole)


def test_the_ops_that_are_never_tiled_are_those_declaring_no_halo():
    assert {name for name, o in BUILTIN.items() if o.halo is None} == NEVER_TILED
    assert {o["name"] for o in ops.describe() if o["name"] in BUILTIN and not o["tileable"]} == NEVER_TILED, "the ops reply says so"


@pytest.mark.parametrize("name", sorted(NEVER_TILED))
def test_a_step_that_cannot_be_tiled_is_named_with_the_reason(name):
    pipeline = ops.validate_pipeline([Step("identity"), Step(name)])
    with pytest.raises(BadParams) as refused:
        pipeline_halo(pipeline, "uint8")
    assert refused.value.message == f"step 2 ({name}): cannot be tiled: its result depends on the whole image"
    assert refused.value.details == {"step": 2, "op": name, "tileable": False}


@pytest.mark.parametrize(
    ("step", "dtype", "message"),
    [
        (
            Step("threshold", {"method": "otsu"}),
            "uint8",
            "step 1 (threshold): cannot be tiled with these parameters (method=otsu, thresh=127, maxval=255, type=binary)",
        ),
        (
            Step("gaussian_blur"),
            "float32",
            "step 1 (gaussian_blur): cannot be tiled for float32 images: its result on them is not exactly the whole image's"
            " (it tiles uint8, uint16 images)",
        ),
        (
            Step("grayscale"),
            "float32",
            "step 1 (grayscale): cannot be tiled for float32 images: its result on them is not exactly the whole image's"
            " (it tiles uint8, uint16 images)",
        ),
    ],
)
def test_parameters_or_a_pixel_type_that_cannot_be_tiled_are_named(step, dtype, message):
    with pytest.raises(BadParams) as refused:
        pipeline_halo(ops.validate_pipeline([step]), dtype)
    assert refused.value.message == message
    assert refused.value.details == {"step": 1, "op": step.op, "tileable": False}


def test_a_pixel_type_the_op_does_not_take_is_that_error():
    with pytest.raises(BadParams) as refused:
        pipeline_halo(ops.validate_pipeline([Step("identity"), Step("invert")]), "float32")
    assert refused.value.message == "step 2 (invert): invert takes uint8, uint16 images, not float32"
    assert refused.value.details == {"step": 2, "op": "invert", "takes": ["uint8", "uint16"], "dtype": "float32"}
