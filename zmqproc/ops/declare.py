"""Op declarations read from typed signatures: ``@op`` turns a plain function into a served operation.

::

    @op
    def posterize(image: np.ndarray, levels: Annotated[int, Range(2, 64)] = 4,
                  mode: Literal["floor", "mid"] = "floor") -> np.ndarray:
        \"\"\"Reduce each channel to `levels` values.\"\"\"

``int``, ``float`` and ``bool`` parameters, bounded by ``Range(min, max)`` in
``Annotated``, and ``Literal[...]`` choices become the same parameter schema the
``ops`` reply has always had; a plain string in ``Annotated`` is the parameter's
doc, the docstring's first paragraph the op's. What a signature cannot say goes
into decorator arguments. The function itself stays a plain callable: calling it
locally computes exactly what the server computes. A signature that cannot be
served is an :class:`OpDeclarationError` naming the function and the parameter,
raised when the module is imported.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, overload

from ..protocol import RESULT_KINDS
from . import registry as ops

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__zmqproc_op__"  # the registered ops.Op, on the decorated function


class OpDeclarationError(TypeError):
    """A function whose signature cannot be served as an op."""


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds of a number parameter, inclusive; None leaves a side open."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class Declared:
    """What a signature cannot say, given to the decorator (see :func:`op`)."""

    name: str | None = None
    odd: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("uint8",)
    heavy: bool = False
    results: Mapping[str, str] = field(default_factory=dict)
    output: str | Callable[[ops.Shape, dict[str, Any]], ops.Shape] = "same"
    scratch: float = 1.0
    cost: float = 1.0
    cost_param: str | None = None
    alias: bool = False
    halo: ops.Halo | None = None
    tile_dtypes: tuple[str, ...] | None = None


@overload
def op(fn: F, /) -> F: ...
@overload
def op(
    *,
    name: str | None = None,
    odd: Iterable[str] = (),
    dtypes: Iterable[str] = ("uint8",),
    heavy: bool = False,
    results: Mapping[str, str] | None = None,
    output: str | Callable[[ops.Shape, dict[str, Any]], ops.Shape] = "same",
    scratch: float = 1.0,
    cost: float = 1.0,
    cost_param: str | None = None,
    alias: bool = False,
    halo: ops.Halo | None = None,
    tile_dtypes: Iterable[str] | None = None,
) -> Callable[[F], F]: ...
def op(fn: F | None = None, /, **declared: Any) -> F | Callable[[F], F]:
    """Register ``fn`` as an op (``@op`` or ``@op(...)``) and return it unchanged.

    ``name``: the op's name (default: the function's). ``odd``: int parameters
    that take odd values only. ``dtypes``: the pixel types it accepts (``uint8``,
    ``uint16``, ``float32``). ``heavy``: slow even on small images (never run in
    the server's socket loop). ``results``: the kind of each result key the
    viewer can draw (``boxes`` [[x, y, w, h], ...], ``points`` [[x, y], ...],
    ``polygons`` [[[x, y], ...], ...]); other results are listed as they are.
    For the server's memory and CPU budget (:class:`zmqproc.ops.Op`): ``output``,
    how the output's (height, width, channels) follows from the input's (a rule
    name: same, gray, color, resize, rotate; or a function of the shape and the
    params); ``scratch``, working memory in multiples of the output's bytes;
    ``cost``, CPU nanoseconds per input byte, growing with param ``cost_param``;
    ``alias``, it returns its input itself. For tiling a big image (docs/plugins.md,
    Tiling): ``halo``, how far in pixels an output pixel's inputs reach (an int, or a
    function of the validated params returning one, or None: not with these params);
    an op without one is never tiled; ``tile_dtypes``, the pixel types for which
    tiles give exactly the whole image's result (default: all of ``dtypes``).
    """

    def register(f: F) -> F:
        fields: dict[str, Any] = {k: v if v is None or k not in ("odd", "dtypes", "tile_dtypes") else tuple(v) for k, v in declared.items()}
        declared_op = declare(f, Declared(**fields))
        ops.register(declared_op)
        setattr(f, ATTRIBUTE, declared_op)
        return f

    return register if fn is None else register(fn)


def declare(fn: Callable[..., Any], declared: Declared = Declared()) -> ops.Op:
    """The ops.Op that ``fn``'s signature, docstring and ``declared`` describe (not registered)."""
    where = fn.__qualname__
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a name in an annotation that does not resolve
        raise OpDeclarationError(f"{where}: cannot read its annotations ({exc})") from None
    parameters = list(inspect.signature(fn).parameters.values())
    if not parameters or parameters[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise OpDeclarationError(f"{where}: an op takes the image as its first parameter")
    odd = set(declared.odd)
    params = {p.name: _param(where, p, hints.get(p.name, inspect.Parameter.empty), p.name in odd) for p in parameters[1:]}
    unknown = odd - set(params)
    if unknown:
        raise OpDeclarationError(f"{where}: odd= names {', '.join(sorted(unknown))}, which it does not take")
    bad = set(declared.dtypes) - set(ops.ALL_DTYPES)
    if bad:
        raise OpDeclarationError(f"{where}: dtypes= {', '.join(sorted(bad))} cannot travel (one of {', '.join(ops.ALL_DTYPES)})")
    kinds = {key: kind for key, kind in declared.results.items() if kind not in RESULT_KINDS}
    if kinds:
        raise OpDeclarationError(f"{where}: results= kinds {kinds} are not among {', '.join(RESULT_KINDS)}")
    if isinstance(declared.output, str) and declared.output not in ops.OUTPUT_RULES:
        raise OpDeclarationError(f"{where}: output= {declared.output!r} is not a rule ({', '.join(ops.OUTPUT_RULES)}) or a function")
    if declared.cost_param is not None and params.get(declared.cost_param, ops.Param("bool", False)).type not in ("int", "float"):
        raise OpDeclarationError(f"{where}: cost_param= {declared.cost_param!r} is not one of its number parameters")
    _check_tiling(where, declared)
    doc = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    return ops.Op(
        declared.name or fn.__name__,
        doc,
        fn,
        params,
        declared.dtypes,
        declared.heavy,
        declared.output,
        declared.scratch,
        declared.cost,
        declared.cost_param,
        declared.alias,
        result_kinds=dict(declared.results),
        halo=declared.halo,
        tile_dtypes=declared.tile_dtypes,
    )


def _check_tiling(where: str, declared: Declared) -> None:
    halo, tile_dtypes = declared.halo, declared.tile_dtypes
    if halo is not None and not callable(halo) and not ops.is_pixel_count(halo):
        raise OpDeclarationError(f"{where}: halo= {halo!r} is not a number of pixels (an int >= 0) or a function of the params")
    if tile_dtypes is None:
        return
    if halo is None:
        raise OpDeclarationError(f"{where}: tile_dtypes= without halo= (an op without a halo is never tiled)")
    if not tile_dtypes or not set(tile_dtypes) <= set(declared.dtypes):
        named = ", ".join(tile_dtypes) or "none"
        raise OpDeclarationError(f"{where}: tile_dtypes= names {named}, not some of the dtypes it takes ({', '.join(declared.dtypes)})")


def _param(where: str, p: inspect.Parameter, hint: Any, odd: bool) -> ops.Param:
    what = f"{where}: parameter {p.name!r}"
    if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY):
        raise OpDeclarationError(f"{what}: op parameters are named (no *args, **kwargs or positional-only)")
    if p.default is inspect.Parameter.empty:
        raise OpDeclarationError(f"{what} needs a default (the ops reply and the viewer start from it)")
    bounds, doc = Range(), ""
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Range):
                bounds = extra
            elif isinstance(extra, str):
                doc = extra
    default = p.default
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if not all(type(c) in (str, int) for c in choices) or default not in choices:
            raise OpDeclarationError(f"{what}: a Literal choice holds str or int values, its default among them")
        return ops.Param("choice", default, choices=choices, doc=doc)
    kinds = {bool: "bool", int: "int", float: "float"}
    if hint is inspect.Parameter.empty:
        raise OpDeclarationError(f"{what} has no annotation; declare it int, float, bool or Literal[...]")
    if hint not in kinds:
        shown = getattr(hint, "__name__", repr(hint))
        raise OpDeclarationError(f"{what} is declared {shown}; an op parameter is int, float, bool or Literal[...]")
    kind = kinds[hint]
    if kind == "bool" and bounds != Range() or kind != "int" and odd:
        raise OpDeclarationError(f"{what}: Range applies to int and float, odd= to int")
    if not _fits(kind, default, bounds, odd):
        raise OpDeclarationError(f"{what}: the default {default!r} is not a valid {kind} within its declaration")
    return ops.Param(kind, default, bounds.min, bounds.max, odd=odd, doc=doc)


def _fits(kind: str, value: Any, bounds: Range, odd: bool) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)) or not math.isfinite(value):
        return False
    within = (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)
    return within and (not odd or value % 2 == 1)
