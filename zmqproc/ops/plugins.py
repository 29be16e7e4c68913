"""Plugin ops: Python files, folders of them and importable modules (``--ops``), and installed packages (entry points).

A plugin is any module whose functions are decorated with ``@zmqproc.op``:
importing it registers them. :func:`load` imports what it is given and records
where each new op came from (``zmqproc ops`` shows it). Anything that keeps a
plugin from loading (no such file, a syntax or import error, a signature that
cannot be served, a name another op has) is one :class:`PluginError` naming the
file and the problem: the server stops at start with that line, not a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from . import registry as ops

ENTRY_POINT_GROUP = "zmqproc.ops"
WORKER_ENV = "ZMQPROC_WORKER_PLUGINS"  # what this process loaded, for its worker processes (zmqproc.ops.preload)
log = logging.getLogger("zmqproc.ops.plugins")
_loaded: dict[str, Any] = {"specs": [], "entry_points": False}


class PluginError(Exception):
    """A plugin that cannot be loaded; the message is one line naming it and the problem."""


def load(specs: Sequence[str], *, entry_points: bool = True) -> dict[str, str]:
    """Import each ``spec`` (a .py file, a folder of them, or a module name), then the ``zmqproc.ops`` entry points.

    Returns {op name: where it came from} for the ops they added.
    """
    added: dict[str, str] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not files:
                log.warning("--ops %s: the folder holds no .py file", spec)
            for file in files:
                added |= _register(str(file), partial(_import_file, file))
        elif path.suffix == ".py" or path.exists():
            if not path.is_file():
                raise PluginError(f"{spec}: no such file")
            added |= _register(str(path), partial(_import_file, path))
        else:
            added |= _register(spec, partial(_import_module, spec))
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            where = f"{point.dist.name if point.dist else '?'} (entry point {point.name})"
            added |= _register(where, partial(_import_module, point.module))
    _loaded["specs"] += list(specs)
    _loaded["entry_points"] |= entry_points
    return added


def for_workers() -> str:
    """What :mod:`zmqproc.ops.preload` loads in a worker process: the plugins loaded here (JSON, for an environment variable)."""
    return json.dumps(_loaded)


def _register(source: str, do_import: Callable[[], ModuleType]) -> dict[str, str]:
    before = set(ops.REGISTRY)
    try:
        do_import()
    except PluginError:
        raise
    except SyntaxError as exc:
        raise PluginError(f"{exc.filename or source}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        raise PluginError(f"{source}{_line_in(source, exc)}: {type(exc).__name__}: {exc}") from None
    new = set(ops.REGISTRY) - before
    if not new:
        log.warning("%s declares no op (no function decorated with @zmqproc.op)", source)
    for name in new:
        ops.REGISTRY[name] = replace(ops.REGISTRY[name], source=source)
    log.info("%s: %s", source, ", ".join(sorted(new)) or "no ops")
    return dict.fromkeys(sorted(new), source)


def _import_file(path: Path) -> ModuleType:
    """Import a file as a module of its own (a name unique to its path, so two plugins may share a file name)."""
    resolved = path.resolve()
    name = f"zmqproc_plugin_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:  # loaded already (the same file named twice)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise PluginError(f"{name}: no such file, folder or importable module") from None
        raise


def _line_in(source: str, exc: BaseException) -> str:
    """``:LINE`` of the innermost frame of ``exc`` that ran in the plugin's own file, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(Path(source).resolve())]
    return f":{frames[-1].lineno}" if frames else ""
