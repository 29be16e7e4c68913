"""Every op on 1, 3 and 4 channel uint8 images; declarations drive validation and the ops reply."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import load_image
from zmqproc import ops
from zmqproc.errors import BadParams, TooLarge, UnknownOp
from zmqproc.protocol import Step

REQUIRED = {
    "identity", "grayscale", "invert", "gaussian_blur", "median_blur", "bilateral_filter", "canny", "sobel", "threshold",
    "equalize_hist", "clahe", "resize", "rotate", "flip", "sharpen", "sepia", "denoise", "detect_faces",
}  # fmt: skip
ONE_CHANNEL_OUT = {"grayscale", "canny", "sobel", "threshold"}


def variants():
    bgr = load_image("chelsea.png")[:120, :160].copy()
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 77
    return {"gray": gray, "gray3d": gray[:, :, None].copy(), "bgr": bgr, "bgra": bgra}


def test_registry_has_every_required_op():
    assert set(ops.REGISTRY) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("kind", ["gray", "gray3d", "bgr", "bgra"])
def test_op_handles_uint8_channels(name, kind):
    image = variants()[kind]
    image.setflags(write=False)  # raw input is a read-only view of the received frame
    out, results = ops.run_pipeline(image, ops.validate_pipeline([Step(name)]))
    assert out.dtype == np.uint8 and out.ndim in (2, 3) and isinstance(results, dict)
    if name in ONE_CHANNEL_OUT:
        assert out.ndim == 2
    elif name == "sepia":
        assert out.shape[2:] in ((3,), (4,))
    if name not in ("resize", "rotate"):
        assert out.shape[:2] == image.shape[:2]
    if name in ("invert", "bilateral_filter", "sharpen", "denoise", "sepia", "equalize_hist", "clahe") and kind == "bgra":
        assert out.shape[2] == 4 and (out[:, :, 3] == 77).all(), "alpha is kept"


def test_ops_compute_what_they_say():
    bgr = variants()["bgr"]
    run = lambda spec, img=bgr: ops.run_pipeline(img, ops.validate_pipeline([Step(*spec)]))[0]  # noqa: E731
    assert np.array_equal(run(("invert", {})), 255 - bgr)
    assert np.array_equal(run(("flip", {"mode": "vertical"})), bgr[::-1])
    assert run(("rotate", {"angle": 90})).shape == (160, 120, 3)
    assert run(("rotate", {"angle": 45, "expand": False})).shape == bgr.shape
    assert run(("resize", {"width": 80})).shape == (60, 80, 3)
    assert run(("resize", {"scale": 2.0})).shape == (240, 320, 3)
    assert set(np.unique(run(("threshold", {"method": "fixed", "thresh": 100})))) <= {0, 255}
    assert np.array_equal(run(("gaussian_blur", {"ksize": 7})), cv2.GaussianBlur(bgr, (7, 7), 0))
    otsu = ops.run_pipeline(bgr, ops.validate_pipeline([Step("threshold", {"method": "otsu"})]))[1]
    assert 0 < otsu["otsu_threshold"] < 255


def test_other_dtypes():
    f32 = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    out, _ = ops.run_pipeline(f32, ops.validate_pipeline([Step("gaussian_blur"), Step("flip"), Step("resize", {"scale": 0.5})]))
    assert out.dtype == np.float32 and out.shape == (10, 15, 3)
    u16 = np.full((10, 10), 1000, np.uint16)
    assert ops.run_pipeline(u16, ops.validate_pipeline([Step("invert")]))[0][0, 0] == 64535
    with pytest.raises(BadParams, match="canny takes uint8 images, not float32") as refused:
        ops.run_pipeline(f32, ops.validate_pipeline([Step("flip"), Step("canny")]))
    assert refused.value.details == {"step": 2, "op": "canny", "takes": ["uint8"], "dtype": "float32"}, "a client words it"
    assert {o["name"]: o["dtypes"] for o in ops.describe()}["canny"] == ["uint8"], "and can say it before sending"


def test_detect_faces_finds_the_astronaut():
    image = load_image("astronaut.png")
    out, results = ops.run_pipeline(image, ops.validate_pipeline([Step("detect_faces")]))
    assert len(results["faces"]) == 1
    x, y, w, h = results["faces"][0]
    assert abs(x - 177) < 10 and abs(y - 66) < 10
    assert np.array_equal(out, image), "by default the boxes are results only (the viewer draws them over the image)"
    drawn, _ = ops.run_pipeline(image, ops.validate_pipeline([Step("detect_faces", {"draw": True})]))
    assert not np.array_equal(drawn, image), "drawn into the image when asked"
    _, none = ops.run_pipeline(load_image("coffee.png"), ops.validate_pipeline([Step("detect_faces")]))
    assert none == {"faces": []}


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Step("gaussian_blur", {"ksize": 4}), "odd"),
        (Step("gaussian_blur", {"ksize": 101}), "between"),
        (Step("gaussian_blur", {"ksize": 5.0}), "must be an integer"),
        (Step("gaussian_blur", {"ksize": True}), "must be an integer"),
        (Step("canny", {"l2_gradient": 1}), "true or false"),
        (Step("flip", {"mode": "sideways"}), "one of"),
        (Step("flip", {"angle": 3}), "no parameter angle"),
        (Step("sharpen", {"amount": "lots"}), "must be a number"),
    ],
)
def test_param_validation(step, message):
    with pytest.raises(BadParams, match=message):
        ops.validate_pipeline([step])


def test_unknown_op():
    with pytest.raises(UnknownOp):
        ops.validate_pipeline([Step("identity"), Step("teleport")])


def test_floats_accept_ints_and_defaults_fill_in():
    ((_, params),) = ops.validate_pipeline([Step("gaussian_blur", {"sigma": 2})])
    assert params == {"ksize": 5, "sigma": 2.0} and isinstance(params["sigma"], float)


def test_growing_ops_check_the_pixel_limit_before_allocating():
    tiny = np.zeros((1, 1, 3), np.uint8)
    with pytest.raises(TooLarge, match="resize would make 4000x4000"):
        ops.run_pipeline(tiny, ops.validate_pipeline([Step("resize", {"width": 4000, "height": 4000})]), max_pixels=1_000_000)
    square = np.zeros((900, 900), np.uint8)
    with pytest.raises(TooLarge, match="rotate would make"):
        ops.run_pipeline(square, ops.validate_pipeline([Step("rotate", {"angle": 45})]), max_pixels=1_000_000)
    assert ops.run_pipeline(square, ops.validate_pipeline([Step("rotate", {"angle": 90})]), max_pixels=1_000_000)[0].shape == (900, 900)


def test_describe_is_enough_for_a_gui():
    listing = {o["name"]: o for o in ops.describe()}
    assert set(listing) == set(ops.REGISTRY)
    for o in listing.values():
        assert o["doc"]
        for p in o["params"].values():
            assert p["type"] in ("int", "float", "bool", "choice") and "default" in p
            if p["type"] in ("int", "float"):
                assert p["min"] <= p["default"] <= p["max"]
            if p["type"] == "choice":
                assert p["default"] in p["choices"]
