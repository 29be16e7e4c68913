"""The operations registry: what each op declares (parameters, dtypes, cost, output geometry, result kinds), once.

Validation, the ``ops`` reply, the viewer's controls and the server's memory and
CPU estimates all come from these declarations. Ops are written as typed
functions with :func:`zmqproc.op` (:mod:`zmqproc.ops.declare`), the built-in ones
(:mod:`zmqproc.ops.builtin`) as much as plugins. An op takes an image (never
modified in place: raw input is a read-only view of the received frame) and
returns a new image, or an image and a dict of structured results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadParams, InternalError, TooLarge, UnknownOp
from ..images import dtype_name
from ..protocol import Limits, Step

DEFAULT_MAX_PIXELS = Limits().max_pixels


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter: ``type`` is int, float, bool or choice."""

    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    odd: bool = False
    doc: str = ""

    def check(self, name: str, value: Any) -> Any:
        if self.type == "bool":
            if not isinstance(value, bool):
                raise BadParams(f"{name} must be true or false, got {value!r}")
            return value
        if self.type == "choice":  # exact: 3.0 is not the choice 3, True is not the choice 1
            if not any(type(value) is type(c) and value == c for c in self.choices or ()):
                raise BadParams(f"{name} must be one of {', '.join(map(str, self.choices or ()))}, got {value!r}")
            return value
        numeric = (int,) if self.type == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise BadParams(f"{name} must be {'an integer' if self.type == 'int' else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every bounds check below
            raise BadParams(f"{name} must be a finite number, got {value}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise BadParams(f"{name} must be between {self.min} and {self.max}, got {value}")
        if self.odd and value % 2 == 0:
            raise BadParams(f"{name} must be odd, got {value}")
        return float(value) if self.type == "float" else value

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "default": self.default}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.odd:
            out["odd"] = True
        if self.doc:
            out["doc"] = self.doc
        return out


Shape = tuple[int, int, int]  # (height, width, channels); a 2-D image has 1 channel
Halo = int | Callable[[dict[str, Any]], int | None]  # pixels, or a function of the params (None: not tileable with them)


def is_pixel_count(value: object) -> bool:
    """An int (not a bool) of 0 or more: what a halo is."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class Op:
    """An operation and what it declares: parameters, dtypes, and what it costs.

    ``output`` names the rule (in :data:`OUTPUT_RULES`), or is the function, by
    which the output's (height, width, channels) follows from the input's and
    the params; the dtype never changes. ``scratch`` is the op's working memory beside its input
    and output, in multiples of the output's bytes. ``cost`` is its CPU time in
    nanoseconds per input byte at the default params, growing in proportion to
    the param named ``cost_param``. ``heavy`` ops never run inline in the
    server's socket loop; ``alias`` ops return their input itself (no new memory).
    The server sizes every job from these before it runs (:mod:`zmqproc.server.budget`).
    ``halo``: how far from an output pixel the input pixels it depends on lie, so that a tile
    padded by it gives the whole image's result exactly (None: never tiled); ``tile_dtypes``:
    the pixel types for which that holds (None: every one it takes).
    """

    name: str
    doc: str
    fn: Callable[..., Any]
    params: dict[str, Param] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ("uint8",)
    heavy: bool = False
    output: str | Callable[[Shape, dict[str, Any]], Shape] = "same"
    scratch: float = 1.0
    cost: float = 1.0
    cost_param: str | None = None
    alias: bool = False
    result_kinds: dict[str, str] = field(default_factory=dict)  # result key -> boxes, points or polygons (drawn by the viewer)
    source: str = "builtin"  # where it came from: builtin, or the plugin file, module or package (zmqproc.ops.plugins)
    halo: Halo | None = None
    tile_dtypes: tuple[str, ...] | None = None

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names are an error."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise BadParams(f"{self.name} has no parameter {', '.join(sorted(unknown))}; it takes {', '.join(self.params) or 'none'}")
        return {name: p.check(name, params[name]) if name in params else p.default for name, p in self.params.items()}

    def output_shape(self, shape: Shape, params: dict[str, Any]) -> Shape:
        rule = OUTPUT_RULES[self.output] if isinstance(self.output, str) else self.output
        return rule(shape, params)

    def cost_ns(self, nbytes: int, params: dict[str, Any]) -> float:
        """Estimated CPU time on an input of ``nbytes``."""
        scale = 1.0
        if self.cost_param is not None:
            scale = max(1.0, params[self.cost_param] / self.params[self.cost_param].default)
        return self.cost * scale * nbytes

    def check_dtype(self, dtype: str) -> None:
        """BadParams unless the op takes ``dtype`` images."""
        if dtype not in self.dtypes:
            details = {"op": self.name, "takes": list(self.dtypes), "dtype": dtype}
            raise BadParams(f"{self.name} takes {', '.join(self.dtypes)} images, not {dtype}", details=details)

    def run(self, image: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        self.check_dtype(dtype_name(image) or str(image.dtype))
        out = self.fn(image, **params)
        return out if isinstance(out, tuple) else (out, {})

    def halo_for(self, params: dict[str, Any], dtype: str) -> int:
        """The halo on ``dtype`` images with validated ``params``; BadParams (``tileable`` false) when it cannot be tiled."""
        self.check_dtype(dtype)
        refused = {"op": self.name, "tileable": False}
        if self.halo is None:
            raise BadParams("cannot be tiled: its result depends on the whole image", details=refused)
        if self.tile_dtypes is not None and dtype not in self.tile_dtypes:
            exact = ", ".join(self.tile_dtypes)
            message = f"cannot be tiled for {dtype} images: its result on them is not exactly the whole image's (it tiles {exact} images)"
            raise BadParams(message, details=refused)
        halo = self.halo(params) if callable(self.halo) else self.halo
        if halo is None:
            shown = ", ".join(f"{name}={value}" for name, value in params.items())
            raise BadParams(f"cannot be tiled with these parameters ({shown})", details=refused)
        if not is_pixel_count(halo):
            raise InternalError(f"{self.name}: its halo function gave {halo!r}, not a number of pixels")
        return halo

    def to_wire(self) -> dict[str, Any]:
        params = {n: p.to_wire() for n, p in self.params.items()}
        wire: dict[str, Any] = {"name": self.name, "doc": self.doc, "params": params, "source": self.source, "dtypes": list(self.dtypes)}
        wire["tileable"] = self.halo is not None
        if self.result_kinds:
            wire["results"] = dict(self.result_kinds)
        return wire


REGISTRY: dict[str, Op] = {}


def register(declared: Op) -> None:
    """Add an op to the registry; a name already taken is an error (no op shadows another)."""
    if declared.name in REGISTRY:
        raise ValueError(f"an op named {declared.name!r} exists already ({REGISTRY[declared.name].source})")
    REGISTRY[declared.name] = declared


def describe() -> list[dict[str, Any]]:
    """The ``ops`` reply: every op with its documented parameters."""
    return [o.to_wire() for o in REGISTRY.values()]


def validate_pipeline(steps: Sequence[Step]) -> list[tuple[Op, dict[str, Any]]]:
    """Resolve op names and check parameters before any work is queued; an error names the step (``step`` in its map)."""
    resolved = []
    for number, step in enumerate(steps, 1):
        found = REGISTRY.get(step.op)
        if found is None:
            details = {"step": number, "op": step.op}
            raise UnknownOp(f"step {number}: unknown op {step.op!r}; ask for 'ops' to see the list", details=details)
        try:
            resolved.append((found, found.validate(step.params)))
        except BadParams as err:
            raise _in_step(number, step.op, err) from None
    return resolved


def pipeline_halo(pipeline: Sequence[tuple[Op, dict[str, Any]]], dtype: str) -> int:
    """The halo of validated steps on ``dtype`` images, the sum of theirs; an error names the step that cannot be tiled."""
    total = 0
    for number, (step_op, params) in enumerate(pipeline, 1):
        try:
            total += step_op.halo_for(params, dtype)
        except BadParams as err:
            raise _in_step(number, step_op.name, err) from None
    return total


def _in_step(number: int, name: str, err: BadParams) -> BadParams:
    """``err`` raised by a pipeline's step, saying which (``step`` in its map)."""
    return BadParams(f"step {number} ({name}): {err.message}", details={**err.details, "step": number})


def result_kinds(pipeline: Sequence[tuple[Op, dict[str, Any]]], results: dict[str, Any]) -> dict[str, str]:
    """How the viewer draws each of ``results``, as the pipeline's ops declared it (boxes, points, polygons)."""
    return {key: kind for step_op, _ in pipeline for key, kind in step_op.result_kinds.items() if key in results}


def shape_of(image: np.ndarray) -> Shape:
    h, w = image.shape[:2]
    return h, w, 1 if image.ndim == 2 else image.shape[2]


def check_pixels(name: str, shape: Shape, max_pixels: int) -> None:
    h, w, _ = shape
    if h * w > max_pixels:
        raise TooLarge.over("pixels", w * h, max_pixels, f"{name} would make {w}x{h} = {w * h} pixels, the server's limit is {max_pixels}")


def run_pipeline(
    image: np.ndarray, pipeline: Sequence[tuple[Op, dict[str, Any]]], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply validated steps in order; results of all steps are merged; no step may make more than ``max_pixels``."""
    results: dict[str, Any] = {}
    for number, (step_op, params) in enumerate(pipeline, 1):
        check_pixels(step_op.name, step_op.output_shape(shape_of(image), params), max_pixels)
        try:
            image, found = step_op.run(image, params)
        except BadParams as err:  # the image does not suit this step (its dtype or channels)
            raise _in_step(number, step_op.name, err) from None
        results.update(found)
    return image, results


# --- how each op's output geometry follows from its input (Op.output names one) ---


def resized_shape(shape: Shape, params: dict[str, Any]) -> Shape:
    h, w, c = shape
    width, height, scale = params["width"], params["height"], params["scale"]
    if width == 0 and height == 0:
        width, height = round(w * scale), round(h * scale)
    elif width == 0:
        width = round(w * height / h)
    elif height == 0:
        height = round(h * width / w)
    return max(1, height), max(1, width), c


def rotated_shape(shape: Shape, params: dict[str, Any]) -> Shape:
    h, w, c = shape
    turn = params["angle"] % 360
    if not params["expand"] or turn == 0:
        return shape
    if turn in (90, 270):
        return w, h, c
    rad = math.radians(params["angle"])
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    return int(w * sin + h * cos + 0.5), int(h * sin + w * cos + 0.5), c


OUTPUT_RULES: dict[str, Callable[[Shape, dict[str, Any]], Shape]] = {
    "same": lambda shape, _: shape,
    "gray": lambda shape, _: (shape[0], shape[1], 1),
    "color": lambda shape, _: (shape[0], shape[1], 4 if shape[2] == 4 else 3),
    "resize": resized_shape,
    "rotate": rotated_shape,
}


ALL_DTYPES = ("uint8", "uint16", "float32")
