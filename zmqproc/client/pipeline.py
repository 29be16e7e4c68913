"""Pipeline specs as people write them, turned into protocol steps.

Accepted: ``"grayscale;gaussian_blur:ksize=5,sigma=1.5"``, a list of names,
``(name, params)`` pairs or ``{"op": ..., "params": ...}`` maps, or Steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..protocol import Step

PipelineSpec = str | Iterable[Any]


def parse_value(text: str) -> Any:
    """A parameter value from text: bool, int, float, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_step(text: str) -> Step:
    """``name`` or ``name:key=value,key=value``."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameter {item!r} of {name!r} is not key=value")
        params[key.strip()] = parse_value(value)
    if not name:
        raise ValueError(f"step {text!r} has no op name")
    return Step(name, params)


def to_steps(spec: PipelineSpec) -> list[Step]:
    """Normalise any accepted pipeline spec to a list of Steps."""
    if isinstance(spec, str):
        return [parse_step(part) for part in spec.split(";") if part.strip()]
    steps = []
    for item in spec:
        if isinstance(item, Step):
            steps.append(item)
        elif isinstance(item, str):
            steps.append(parse_step(item))
        elif isinstance(item, dict):
            steps.append(Step(item["op"], dict(item.get("params") or {})))
        else:
            name, params = item
            steps.append(Step(name, dict(params or {})))
    return steps


def to_text(steps: Iterable[Step]) -> str:
    """The inverse of :func:`to_steps` for strings (for settings and command lines)."""
    parts = []
    for step in steps:
        args = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in step.params.items())
        parts.append(f"{step.op}:{args}" if args else step.op)
    return ";".join(parts)
