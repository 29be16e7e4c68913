"""Pipeline specs as people write them."""

import pytest

from zmqproc.client.pipeline import parse_step, parse_value, to_steps, to_text
from zmqproc.protocol import Step


def test_text_spec():
    steps = to_steps("grayscale; gaussian_blur:ksize=5,sigma=1.5 ;canny:l2_gradient=true;threshold:method=otsu")
    assert steps == [
        Step("grayscale"),
        Step("gaussian_blur", {"ksize": 5, "sigma": 1.5}),
        Step("canny", {"l2_gradient": True}),
        Step("threshold", {"method": "otsu"}),
    ]
    assert to_steps(to_text(steps)) == steps


def test_other_forms():
    assert to_steps(["flip", ("rotate", {"angle": 90}), {"op": "invert"}, Step("sepia")]) == [
        Step("flip"),
        Step("rotate", {"angle": 90}),
        Step("invert"),
        Step("sepia"),
    ]


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("-2.5", -2.5), ("False", False), ("on", True), ("otsu", "otsu")])
def test_values(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


@pytest.mark.parametrize("text", ["blur:ksize", ":ksize=3", "blur:=3"])
def test_malformed_steps(text):
    with pytest.raises(ValueError):
        parse_step(text)
