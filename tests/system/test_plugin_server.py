"""A plugin written from docs/plugins.md, served by a real server process with --ops, as a user meets it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, load_image
from zmqproc import BadParams, Client, InternalError, ops
from zmqproc.ops import plugins

PLUGIN = '''
from typing import Annotated, Literal

import numpy as np
from zmqproc import Range, op


@op
def posterize(image: np.ndarray, levels: Annotated[int, Range(2, 64)] = 4, mode: Literal["floor", "mid"] = "floor") -> np.ndarray:
    """Reduce each channel to `levels` values."""
    step = 256 // levels
    out = (image // step) * step
    return out + step // 2 if mode == "mid" else out


@op
def fails(image: np.ndarray, when: Literal["always"] = "always") -> np.ndarray:
    """Raises, like a plugin with a bug."""
    raise ZeroDivisionError("a bug in the plugin")
'''


@pytest.fixture
def plugin_server(start_server, tmp_path):
    path = tmp_path / "my_ops.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return start_server("--workers", "1", "--ops", str(path), "--ops", str(ROOT / "examples" / "ops")), path


def test_a_plugin_is_listed_validated_computed_like_the_function_and_isolated(plugin_server):
    server, path = plugin_server
    with Client(server.endpoint, timeout=20) as client:
        listing = {o["name"]: o for o in client.ops()}
        assert listing["posterize"]["params"]["levels"] == {"type": "int", "default": 4, "min": 2, "max": 64}
        assert listing["posterize"]["source"] == str(path) and listing["invert"]["source"] == "builtin"
        for params, words in (({"levels": 1}, "between"), ({"levels": 4.0}, "integer"), ({"mode": "round"}, "one of")):
            with pytest.raises(BadParams, match=words):
                client.process(load_image("coffee.png"), [("posterize", params)])
        coffee = load_image("coffee.png")
        served = client.process(coffee, [("posterize", {"levels": 8, "mode": "mid"})])
        namespace: dict[str, object] = {}
        exec(compile(textwrap.dedent(PLUGIN).replace("@op\n", ""), "plain", "exec"), namespace)  # the same functions, undecorated
        assert np.array_equal(served, namespace["posterize"](coffee, levels=8, mode="mid"))
        with pytest.raises(InternalError):
            client.process(coffee, "fails")
        assert client.process(coffee, "invert").shape == coffee.shape, "the server keeps serving"
        found = client.process(load_image("hubble_deep_field.jpg"), "count_blobs:min_area=10", details=True)
        assert found.results["count"] > 50 and found.result_kinds == {"centroids": "points"}
        before, modules = dict(ops.REGISTRY), set(sys.modules)
        try:  # the example imported as a plain module here: calling it locally
            quantize = plugins._import_file(ROOT / "examples" / "ops" / "quantize.py").quantize
            local, palette = quantize(coffee, colors=4)
        finally:  # and forgotten again
            ops.REGISTRY.clear()
            ops.REGISTRY.update(before)
            for name in set(sys.modules) - modules:
                del sys.modules[name]
        heavy = client.process(coffee, "quantize:colors=4", details=True)  # heavy: it ran in a worker process
        assert np.array_equal(heavy.image, local) and heavy.results == palette
    server.stop()
    assert "ZeroDivisionError: a bug in the plugin" in server.output()


def test_zmqproc_ops_says_where_each_op_came_from(plugin_server):
    server, path = plugin_server
    listing = subprocess.run(
        [sys.executable, "-m", "zmqproc", "ops", "--server", server.endpoint], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert listing.returncode == 0 and f"[from {path}]" in listing.stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [("def broken(:\n", "my_ops.py:1: syntax error"), ("import not_installed_anywhere\n", "No module named 'not_installed_anywhere'")],
)
def test_a_broken_plugin_stops_the_server_with_one_line(tmp_path, text, words):
    path = tmp_path / "my_ops.py"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "server_main.py", "--bind", "tcp://127.0.0.1:0", "--ops", str(path), "--log-level", "warning"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("zmqproc-server: cannot load plugin ops: ") and str(path) in line and words in line
