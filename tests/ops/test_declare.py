"""@op: typed signatures become the ops reply's parameter schema; bad signatures fail at import, naming the parameter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import numpy as np
import pytest

from zmqproc import ops
from zmqproc.errors import BadParams, InternalError
from zmqproc.ops.declare import OpDeclarationError, Range, op
from zmqproc.protocol import Step


@pytest.fixture
def registry() -> Iterator[None]:
    """Ops registered by a test are removed after it."""
    before = dict(ops.REGISTRY)
    yield
    ops.REGISTRY.clear()
    ops.REGISTRY.update(before)


def test_a_typed_function_becomes_an_op_with_the_usual_schema(registry):
    @op
    def posterize(
        image: np.ndarray,
        levels: Annotated[int, Range(2, 64), "values per channel"] = 4,
        mode: Literal["floor", "mid"] = "floor",
        strength: Annotated[float, Range(0.0, 1.0)] = 1.0,
        keep_alpha: bool = True,
    ) -> np.ndarray:
        """Reduce each channel to `levels` values.

        The second paragraph is for readers of the code only.
        """
        step = 256 // levels
        return (image // step) * step + (step // 2 if mode == "mid" else 0)

    wire = ops.REGISTRY["posterize"].to_wire()
    assert wire == {
        "name": "posterize",
        "doc": "Reduce each channel to `levels` values.",
        "params": {
            "levels": {"type": "int", "default": 4, "min": 2, "max": 64, "doc": "values per channel"},
            "mode": {"type": "choice", "default": "floor", "choices": ["floor", "mid"]},
            "strength": {"type": "float", "default": 1.0, "min": 0.0, "max": 1.0},
            "keep_alpha": {"type": "bool", "default": True},
        },
        "source": "builtin",  # registered by hand here; zmqproc.ops.plugins records the file a plugin came from
        "dtypes": ["uint8"],  # the default: what a client checks before sending
        "tileable": False,  # it declares no halo
    }
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    served, _ = ops.run_pipeline(image, ops.validate_pipeline([Step("posterize", {"levels": 8, "mode": "mid"})]))
    assert np.array_equal(served, posterize(image, levels=8, mode="mid")), "the plain function computes what the server does"


def test_declared_params_are_validated_like_the_builtins(registry):
    @op(name="step_blur", odd=["ksize"])
    def blur(image: np.ndarray, ksize: Annotated[int, Range(1, 31)] = 3) -> np.ndarray:
        return image

    for params, words in (({"ksize": 4}, "odd"), ({"ksize": 33}, "between"), ({"ksize": "3"}, "integer"), ({"size": 3}, "no parameter")):
        with pytest.raises(BadParams, match=words):
            ops.validate_pipeline([Step("step_blur", params)])
    assert ops.REGISTRY["step_blur"].to_wire()["params"]["ksize"]["odd"] is True


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def f(image, k: str = 'a'): ...", "parameter 'k' is declared str"),
        ("def f(image, k: int): ...", "parameter 'k' needs a default"),
        ("def f(image, k=3): ...", "parameter 'k' has no annotation"),
        ("def f(image, *rest: int): ...", "parameter 'rest'"),
        ("def f(image, k: Annotated[int, Range(1, 5)] = 9): ...", "default 9 is not a valid int"),
        ("def f(image, k: Literal['a', 'b'] = 'c'): ...", "parameter 'k': a Literal"),
        ("def f(image, k: Literal[1.5, 2.5] = 1.5): ...", "parameter 'k': a Literal"),
        ("def f(image, k: Annotated[bool, Range(0, 1)] = True): ...", "Range applies to int and float"),
        ("def f(): ...", "image as its first parameter"),
        ("def f(image, k: 'Missing' = 1): ...", "cannot read its annotations"),
    ],
)
def test_a_signature_that_cannot_be_served_fails_at_import_naming_the_function_and_parameter(registry, source, words):
    namespace = {"Annotated": Annotated, "Literal": Literal, "Range": Range, "np": np}
    exec(source, namespace)  # a function as a plugin module defines it
    with pytest.raises(OpDeclarationError, match=words) as err:
        op(namespace["f"])
    assert str(err.value).startswith("f: ") and "f" not in ops.REGISTRY


def test_decorator_arguments_are_checked_too(registry):
    def f(image: np.ndarray, k: int = 1) -> np.ndarray:
        return image

    with pytest.raises(OpDeclarationError, match="odd= names x"):
        op(odd=["x"])(f)
    with pytest.raises(OpDeclarationError, match="dtypes= float64"):
        op(dtypes=["float64"])(f)
    with pytest.raises(OpDeclarationError, match="results= kinds {'mask': 'image'}"):
        op(results={"mask": "image", "boxes": "boxes"})(f)
    op(name="with_kinds", results={"found": "boxes"})(f)
    assert ops.REGISTRY["with_kinds"].to_wire()["results"] == {"found": "boxes"}


def test_tiling_declarations_are_checked_too(registry):
    def f(image: np.ndarray, k: int = 1) -> np.ndarray:
        return image

    for halo in (-1, 1.5, True, "2"):
        with pytest.raises(OpDeclarationError, match=r"f: halo= .* is not a number of pixels \(an int >= 0\) or a function of the params"):
            op(halo=halo)(f)
    with pytest.raises(OpDeclarationError, match=r"f: tile_dtypes= names float32, not some of the dtypes it takes \(uint8\)"):
        op(halo=0, tile_dtypes=["float32"])(f)
    with pytest.raises(OpDeclarationError, match=r"f: tile_dtypes= names none, not some"):
        op(halo=0, tile_dtypes=[])(f)
    with pytest.raises(OpDeclarationError, match=r"f: tile_dtypes= without halo= \(an op without a halo is never tiled\)"):
        op(tile_dtypes=["uint8"])(f)
    assert "f" not in ops.REGISTRY


def test_a_halo_follows_the_params_and_the_pixel_type(registry):
    @op(dtypes=["uint8", "uint16", "float32"], halo=lambda p: None if p["radius"] > 4 else p["radius"], tile_dtypes=["uint8", "uint16"])
    def spread(image: np.ndarray, radius: Annotated[int, Range(0, 9)] = 2) -> np.ndarray:
        return image

    declared = ops.REGISTRY["spread"]
    assert declared.to_wire()["tileable"] is True
    assert declared.halo_for({"radius": 3}, "uint16") == 3
    for params, dtype, words in (
        ({"radius": 5}, "uint8", r"with these parameters \(radius=5\)"),
        ({"radius": 3}, "float32", "for float32 images"),
    ):
        with pytest.raises(BadParams, match=f"cannot be tiled {words}") as refused:
            declared.halo_for(params, dtype)
        assert refused.value.details == {"op": "spread", "tileable": False}


def test_a_halo_function_giving_no_pixel_count_is_an_internal_error(registry):
    @op(halo=lambda p: -1)
    def broken(image: np.ndarray) -> np.ndarray:
        return image

    with pytest.raises(InternalError, match="broken: its halo function gave -1, not a number of pixels"):
        ops.REGISTRY["broken"].halo_for({}, "uint8")


def test_a_name_cannot_be_taken_twice(registry):
    with pytest.raises(ValueError, match="'invert' exists already"):

        @op
        def invert(image: np.ndarray) -> np.ndarray:
            return image
