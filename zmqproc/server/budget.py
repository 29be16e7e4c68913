"""The server's memory budget, sans I/O: sizes as people write them, how the budget is split, and each job's peak bytes.

``--max-memory`` is the whole server's budget: the processes' own footprint
(measured at start), the workers' cached transfer buffers, the payloads of
queued requests (what the credit grants cover), and the jobs. Every job reserves
its :class:`Estimate` ``peak`` before it runs and keeps its ``reply`` reserved
until libzmq has let go of the reply; a job whose peak is over the jobs' part can
never run and is answered ``too_large`` with the figures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TooLarge
from ..images import ImageDescriptor
from ..ops.registry import Op, check_pixels

MiB = 1 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ITEMSIZE = {"uint8": 1, "uint16": 2, "float32": 4}
DECODER_SCRATCH = 0.25  # a decoder's own buffers (rows, strips, tiles), as a part of the image it makes
ENCODED_REPLY_SLACK = 64 * 1024  # a PNG of incompressible pixels is a little larger than the pixels
ENCODE_COST_NS = {"png": 7.0, "jpeg": 2.0, "webp": 50.0, "bmp": 1.0, "tiff": 7.0}  # CPU per pixel byte, to encode or decode


def parse_size(text: str) -> int:
    """Bytes from ``600M``, ``4G``, ``1.5g``, ``512k`` or a plain number (binary units: 1M = 2**20)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 600M, 4G, 1073741824)")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return size


def format_size(n: float) -> str:
    return f"{n / MiB:.0f} MiB" if abs(n) < 10 * 1024 * MiB else f"{n / (1024 * MiB):.1f} GiB"


def default_budget(cgroup_limit: int | None, machine_bytes: int) -> int:
    """80 % of the container's memory limit when one is set, else half the machine's memory."""
    if cgroup_limit is not None and cgroup_limit < machine_bytes:
        return cgroup_limit * 4 // 5
    return machine_bytes // 2


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """How ``total`` bytes are split; ``jobs`` is what running jobs and unread replies may reserve."""

    total: int
    baseline: int  # the server's processes as started (measured)
    buffers: int  # the workers' cached transfer buffers
    queued: int  # payloads of queued requests: the credit ledger grants shares of this
    jobs: int

    @classmethod
    def split(cls, total: int, baseline: int, buffers: int, max_frame_bytes: int) -> BudgetPlan:
        free = total - baseline - buffers
        if free < 16 * MiB:
            raise ValueError(
                f"--max-memory {format_size(total)} leaves {format_size(free)} for work beside the server's own "
                f"{format_size(baseline)} and {format_size(buffers)} of worker buffers; give it more"
            )
        queued = min(free // 4, 4 * max_frame_bytes)
        return cls(total, baseline, buffers, queued, free - queued)

    def describe(self) -> str:
        return (
            f"memory budget {format_size(self.total)}: {format_size(self.baseline)} the server's processes, "
            f"{format_size(self.buffers)} worker buffers, {format_size(self.queued)} queued payloads, "
            f"{format_size(self.jobs)} running jobs and unread replies"
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one job will hold at most (``peak``), what its reply holds until sent (``reply``), and its CPU cost."""

    peak: int
    reply: int
    cost_ns: float
    peak_at: str  # where the peak is, for the too_large message


def nbytes(shape: tuple[int, int, int], dtype: str) -> int:
    h, w, c = shape
    return h * w * c * _ITEMSIZE[dtype]


def estimate(
    image: ImageDescriptor,
    payload_bytes: int,
    pipeline: Sequence[tuple[Op, dict[str, Any]]],
    reply_format: str,
    max_pixels: int,
) -> Estimate:
    """Size a checked job from its descriptor and its ops' declarations; TooLarge if a step would pass ``max_pixels``.

    Held throughout: the payload (the worker's copy of it). Then, phase by phase:
    the decoded image and the decoder's scratch; each step's input, output and
    scratch (an earlier image is freed once the next one exists); the reply
    (raw: the result copied out; encoded: the encoder's buffer and its copy).
    """
    assert image.dtype is not None and image.shape is not None
    dtype = image.dtype
    h, w, *c = image.shape
    shape = (h, w, c[0] if c else 1)
    decoded = nbytes(shape, dtype)
    current = 0 if image.format == "raw" else decoded  # raw pixels are a view of the payload
    peak, peak_at = payload_bytes + int(current * (1 + DECODER_SCRATCH)), "decoding"
    cost = 0.0
    for i, (step, params) in enumerate(pipeline, 1):
        out_shape = step.output_shape(shape, params)
        check_pixels(step.name, out_shape, max_pixels)
        cost += step.cost_ns(max(nbytes(shape, dtype), nbytes(out_shape, dtype)), params)  # a resize up costs by its output
        out = 0 if step.alias else nbytes(out_shape, dtype)
        held = payload_bytes + current + out + int(step.scratch * nbytes(out_shape, dtype))
        if held > peak:
            peak, peak_at = held, f"step {i} ({step.name}, {out_shape[1]}x{out_shape[0]}x{out_shape[2]} {dtype})"
        shape, current = out_shape, (current if step.alias else out)
    result = nbytes(shape, dtype)
    if reply_format == "raw":
        reply, encoding = result, result
    else:
        reply = result + result // 50 + ENCODED_REPLY_SLACK
        encoding = 2 * reply
        cost += result * ENCODE_COST_NS.get(reply_format, 50.0)
    held = payload_bytes + current + encoding
    if held > peak:
        peak, peak_at = held, f"the {reply_format} reply"
    if image.format != "raw":
        cost += decoded * ENCODE_COST_NS.get(image.format, 50.0)
    return Estimate(peak, reply, cost, peak_at)


def check_fits(job: Estimate, plan: BudgetPlan) -> None:
    """TooLarge, with the figures, for a job that could not run even on an idle server."""
    if job.peak > plan.jobs:
        raise TooLarge(
            f"this job needs about {format_size(job.peak)} at its peak ({job.peak_at}); "
            f"the server's budget for running jobs is {format_size(plan.jobs)} (--max-memory {format_size(plan.total)})",
            details={"limit": "memory_bytes", "value": job.peak, "allowed": plan.jobs},
        )
