"""What one ``process`` job does: decode the pixels, run the pipeline, encode the reply. Inline or in a worker process.

A job travels to a worker as a small picklable :class:`Spec` (the pixels go
through shared memory, see :mod:`zmqproc.server.pool`); ops are named, not pickled, and
found in the worker's own registry. :func:`run` never raises: its
:class:`Outcome` is either the reply's fields and result, or a typed error (an
unexpected exception becomes ``internal`` with its traceback, for the server's
rate-limited log). An error comes back without its traceback: the traceback's
frames hold the job's pixels, which in a worker are a view of shared memory that
must be unmapped when the job ends.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InternalError, ProcessingError
from ..images import ImageDescriptor, decode_image, encode_image
from ..ops import registry as ops


@dataclass(frozen=True, slots=True)
class Spec:
    image: ImageDescriptor
    steps: tuple[tuple[str, dict[str, Any]], ...]  # op names and validated params
    reply_format: str
    max_pixels: int

    @classmethod
    def of(cls, image: ImageDescriptor, pipeline: list[tuple[ops.Op, dict[str, Any]]], reply_format: str, max_pixels: int) -> Spec:
        return cls(image, tuple((o.name, p) for o, p in pipeline), reply_format, max_pixels)


@dataclass(slots=True)
class Outcome:
    """``code`` ok: ``fields`` (image descriptor, server_ms, results) and ``result`` (an array or encoded bytes)."""

    code: str
    fields: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: ProcessingError | None = None
    traceback: str | None = None  # an unexpected exception's, to be logged


def run(spec: Spec, payload: Any) -> Outcome:
    started = time.monotonic()
    try:
        image = decode_image(spec.image, payload)
        pipeline = [(ops.REGISTRY[name], params) for name, params in spec.steps]
        result, findings = ops.run_pipeline(image, pipeline, spec.max_pixels)
        desc, data = encode_image(result, spec.reply_format)
        fields: dict[str, Any] = {"image": desc.to_wire(), "server_ms": round((time.monotonic() - started) * 1000, 3)}
        if findings:
            fields["results"] = findings
            kinds = ops.result_kinds(pipeline, findings)
            if kinds:
                fields["result_kinds"] = kinds
        return Outcome("ok", fields, data)
    except ProcessingError as err:
        err.__traceback__ = err.__context__ = err.__cause__ = None
        return Outcome(err.code, error=err)
    except Exception as exc:
        bug = InternalError(f"{type(exc).__name__} inside the server (logged); it keeps serving")
        return Outcome(bug.code, error=bug, traceback=traceback.format_exc())


def result_bytes(result: Any) -> int:
    return int(result.nbytes) if isinstance(result, np.ndarray) else len(result)


def set_opencv_threads(count: int) -> None:
    """How many threads OpenCV's own calls use in this process (parallelism comes from the worker processes)."""
    import cv2

    cv2.setNumThreads(count)
