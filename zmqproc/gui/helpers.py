"""The viewer's Qt-free helpers (testable without a display): image files read as the server would check them, folders
listed, batch outputs named and encoded, and results as the viewer draws and lists them."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..client.pipeline import PipelineSpec, to_steps
from ..errors import ProcessingError
from ..formats import BY_NAME, images_in
from ..images import MAX_CLIENT_PIXELS, check_lengths, describe_file, file_bytes, sniff_format
from ..protocol import RESULT_KINDS, Step
from .messages import pixel_type_sentence

DEFAULT_PATTERN = "{stem}_{pipeline}.{ext}"
FIELDS = ("stem", "pipeline", "ext", "index")
STATS_SAMPLE = 16_000_000  # region statistics of a bigger region are taken over an even sample of this many pixels


def check_pattern(pattern: str) -> str:
    """A file-name pattern with only known fields; ValueError naming the fields otherwise."""
    names = re.findall(r"{([^{}]*)}", pattern)
    unknown = [n for n in names if n not in FIELDS]
    if unknown or not pattern.strip() or "/" in pattern:
        raise ValueError(f"a name pattern is a file name with fields among {{{'}, {'.join(FIELDS)}}}, e.g. {DEFAULT_PATTERN}")
    return pattern


@dataclass(frozen=True)
class BatchOutput:
    """Where results go: ``folder``, named by ``pattern`` (fields: stem, pipeline, ext, index), in ``fmt``."""

    folder: Path
    pattern: str = DEFAULT_PATTERN
    fmt: str = "png"

    def __post_init__(self) -> None:
        check_pattern(self.pattern)
        if self.fmt not in BY_NAME:
            raise ValueError(f"the output format is one of {', '.join(BY_NAME)}")

    def name(self, source: str, pipeline: PipelineSpec, index: int) -> str:
        ops = "-".join(step.op for step in to_steps(pipeline)) or "identity"
        name = self.pattern.format(stem=Path(source).stem, pipeline=ops, ext=BY_NAME[self.fmt].suffix.lstrip("."), index=index + 1)
        return re.sub(r"[\\/:*?\"<>|]", "_", name)


def encode_for_disk(image: np.ndarray | bytes, fmt: str) -> bytes:
    """The bytes of a result file: the server's own encoding as it came, or the pixels encoded here."""
    try:
        return file_bytes(image, fmt)
    except ProcessingError as exc:
        raise ValueError(exc.message) from None


def read_image(path: str) -> np.ndarray:
    """Decode an image file with its own pixel type and channels (16-bit, float, alpha kept); ValueError in words for
    anything else.

    The file is sized from its header first (the server's rule), so an empty,
    broken or bomb file costs neither the memory nor the time it claims.
    """
    data = read_file(path)
    try:
        check_lengths(sniff_format(data[:16].tobytes()), data, "it")
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except ProcessingError as exc:
        raise ValueError(exc.message) from None
    except cv2.error:
        image = None
    if image is None:
        raise ValueError("it is truncated or corrupt: OpenCV cannot decode it")
    return image


def read_file(path: str) -> np.ndarray:
    """An image file's bytes, checked by :func:`describe_file` (ValueError in words)."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ValueError(exc.strerror or "the file cannot be read") from None
    try:
        describe_file(data, MAX_CLIENT_PIXELS)
    except ProcessingError as exc:
        raise ValueError(exc.message) from None
    return data


def result_array(image: np.ndarray | bytes) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("the server's encoded result does not decode")
    return decoded


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; a folder stands for the images in it (sorted)."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        files += [str(f) for f in images_in(p)] if p.is_dir() else [path]
    return files


def neighbour(path: str, step: int) -> str | None:
    """The image ``step`` places after ``path`` in its folder (by name, wrapping around); None if it is the only one."""
    p = Path(path)
    folder = images_in(p.parent) if p.parent.is_dir() else []
    if p not in folder or len(folder) < 2:
        return None
    return str(folder[(folder.index(p) + step) % len(folder)])


def shapes(results: dict[str, Any], kinds: dict[str, str]) -> dict[str, list[Any]]:
    """What the view draws: every result of a drawn kind, by kind."""
    drawn: dict[str, list[Any]] = {kind: [] for kind in RESULT_KINDS}
    for key, value in results.items():  # in the order result_rows lists them: a row's link is an index here
        kind = kinds.get(key)
        if kind in drawn and isinstance(value, list):
            drawn[kind] += value
    return drawn


Link = tuple[str, int]  # a drawn result: its kind and its index among that kind's shapes


def result_rows(results: dict[str, Any], kinds: dict[str, str], shown: int = 50) -> list[tuple[str, Link | None]]:
    """The results as the Results tab lists them, each drawn one with its :data:`Link` to the overlay it is."""
    rows: list[tuple[str, Link | None]] = []
    seen = dict.fromkeys(RESULT_KINDS, 0)
    for key, value in results.items():
        kind = kinds.get(key)
        if kind in seen and isinstance(value, list):
            noun = {"boxes": "box", "points": "point", "polygons": "polygon"}[kind]
            rows.append((f"{key}: {len(value)} {noun}{'' if len(value) == 1 else ('es' if noun == 'box' else 's')} (drawn)", None))
            rows += [(f"    {_short(item)}", (kind, seen[kind] + i)) for i, item in enumerate(value[:shown])]
            seen[kind] += len(value)
        else:
            rows.append((f"{key}: {_short(value)}", None))
    return rows


def results_csv(results: dict[str, Any]) -> str:
    """The results as CSV: one row per value, or per item of a list (key, index, value as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "index", "value"])
    for key, value in results.items():
        for index, item in enumerate(value) if isinstance(value, list) else [("", value)]:
            writer.writerow([key, index, json.dumps(item)])
    return out.getvalue()


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pixel_type_problem(steps: list[Step], ops: list[dict[str, Any]], image: np.ndarray) -> str | None:
    """Why the first step cannot take ``image``'s pixel type (from the server's ``ops`` reply), in words; None if it can
    (or the server does not say). Later steps see what earlier ones made, which only the server knows."""
    declared = next((o for o in ops if steps and o.get("name") == steps[0].op), None)
    takes = declared.get("dtypes") if declared else None
    if not isinstance(takes, list) or str(image.dtype) in takes:
        return None
    return pixel_type_sentence(1, steps[0].op, takes, str(image.dtype))


Region = tuple[int, int, int, int]  # x, y, width, height in image pixels


@dataclass(frozen=True)
class ChannelStats:
    """One channel of a region: its name, statistics and histogram (``bins`` counts from ``low`` to ``high``)."""

    name: str
    minimum: float
    maximum: float
    mean: float
    std: float
    counts: np.ndarray
    low: float
    high: float


def region_stats(image: np.ndarray, region: Region | None, bins: int = 256) -> list[ChannelStats]:
    """Per-channel statistics and histograms of ``region`` of ``image`` (all of it when None), in the image's own values:
    8-bit over 0-255, others over the region's own range (NaN and infinities left out); over STATS_SAMPLE pixels, of
    an even sample of them."""
    x, y, w, h = region or (0, 0, image.shape[1], image.shape[0])
    step = max(1, math.ceil(math.sqrt(w * h / STATS_SAMPLE)))  # a huge region: every step-th pixel
    part = image[y : y + h : step, x : x + w : step]
    planes = [part] if part.ndim == 2 else [part[:, :, c] for c in range(part.shape[2])]
    names = {1: ["v"], 3: ["B", "G", "R"], 4: ["B", "G", "R", "A"]}[len(planes)]
    found = []
    for name, plane in zip(names, planes, strict=True):
        values = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane.ravel()
        if values.size == 0:
            continue
        low, high = (0.0, 255.0) if plane.dtype == np.uint8 else (float(values.min()), float(values.max()))
        counts, _ = np.histogram(values, bins=bins, range=(low, high if high > low else low + 1))
        stats = float(values.min()), float(values.max()), float(values.mean()), float(values.std())
        found.append(ChannelStats(name, *stats, counts, low, high))
    return found


def pipeline_problems(steps: list[Step], ops: list[dict[str, Any]]) -> list[str]:
    """What a server with these ``ops`` (its ``ops`` reply) would refuse in ``steps``, one sentence each; [] when
    nothing (or the ops are not known yet)."""
    if not ops:
        return []
    declared = {o.get("name"): o for o in ops}
    problems = []
    for number, step in enumerate(steps, 1):
        op = declared.get(step.op)
        if op is None:
            problems.append(f"Step {number}: the server does not offer {step.op!r}.")
            continue
        for name, value in step.params.items():
            decl = op.get("params", {}).get(name)
            if decl is None:
                problems.append(f"Step {number} ({step.op}) has no parameter {name!r}.")
            elif decl.get("odd") and isinstance(value, int) and value % 2 == 0:
                problems.append(f"Step {number} ({step.op}): {name} must be odd, not {value}.")
            elif isinstance(value, int | float) and not decl.get("min", value) <= value <= decl.get("max", value):
                problems.append(f"Step {number} ({step.op}): {name} must be from {decl.get('min')} to {decl.get('max')}, not {value}.")
    return problems
