"""The operations: what a server can run, declared once.

The registry (``registry``: parameters, pixel types, cost, output geometry, result kinds, halos), the ``@op``
declarations that turn a typed function into a registered op (``declare``), the built-in ops (``builtin``, registered
here, the one place that loads them), plugin loading (``plugins``) and what the server's workers import first
(``preload``).

Never imports the client, the server, SSH or the viewer: a server runs ops, ops know nothing of servers.
"""

from . import builtin  # noqa: F401  (registers the built-in ops)
from .registry import REGISTRY, Op, Param, describe, pipeline_halo, register, result_kinds, run_pipeline, validate_pipeline

__all__ = ["REGISTRY", "Op", "Param", "describe", "pipeline_halo", "register", "result_kinds", "run_pipeline", "validate_pipeline"]
