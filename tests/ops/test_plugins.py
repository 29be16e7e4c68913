"""Loading plugin ops from files, folders and modules; every way a plugin can be broken is one line naming it."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmqproc import ops
from zmqproc.ops import plugins
from zmqproc.ops.plugins import PluginError

GOOD = """
from typing import Annotated
import numpy as np
from zmqproc import op, Range

@op
def {name}(image: np.ndarray, amount: Annotated[int, Range(0, 255)] = 10) -> np.ndarray:
    \"\"\"Brighten by a fixed amount.\"\"\"
    return np.clip(image.astype(np.int16) + amount, 0, 255).astype(np.uint8)
"""


@pytest.fixture(autouse=True)
def registry(monkeypatch) -> Iterator[None]:
    """What a test loads is forgotten after it (the ops, their modules, and what worker processes would load)."""
    before, modules = dict(ops.REGISTRY), set(sys.modules)
    monkeypatch.setattr(plugins, "_loaded", {"specs": [], "entry_points": False})
    yield
    ops.REGISTRY.clear()
    ops.REGISTRY.update(before)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_a_folder_and_a_module_load_and_say_where_each_op_came_from(tmp_path, monkeypatch):
    one = write(tmp_path / "one.py", GOOD.format(name="brighten"))
    folder = tmp_path / "more"
    folder.mkdir()
    write(folder / "a.py", GOOD.format(name="brighten_a"))
    write(folder / "b.py", GOOD.format(name="brighten_b"))
    write(folder / "_private.py", "raise RuntimeError('never imported')")
    write(tmp_path / "pkgop.py", GOOD.format(name="brighten_m"))
    monkeypatch.syspath_prepend(str(tmp_path))
    added = plugins.load([str(one), str(folder), "pkgop"], entry_points=False)
    assert added == {"brighten": str(one), "brighten_a": str(folder / "a.py"), "brighten_b": str(folder / "b.py"), "brighten_m": "pkgop"}
    assert ops.REGISTRY["brighten_a"].to_wire()["source"] == str(folder / "a.py")
    assert ops.REGISTRY["invert"].source == "builtin"


def test_two_plugins_may_share_a_file_name(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write(tmp_path / "x" / "ops.py", GOOD.format(name="from_x"))
    b = write(tmp_path / "y" / "ops.py", GOOD.format(name="from_y"))
    assert set(plugins.load([str(a), str(b)], entry_points=False)) == {"from_x", "from_y"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("def broken(:\n    pass\n", "bad.py:1: syntax error"),
        ("import no_such_package_here\n", "bad.py:1: ModuleNotFoundError: No module named 'no_such_package_here'"),
        ("x = 1\nraise ValueError('at import')\n", "bad.py:2: ValueError: at import"),
        ("from zmqproc import op\n@op\ndef f(image, k: str = 'a'):\n    return image\n", "bad.py:2: OpDeclarationError: "),
        (GOOD.format(name="invert"), "bad.py:6: ValueError: an op named 'invert' exists already"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_the_file_and_the_problem(tmp_path, text, words):
    bad = write(tmp_path / "bad.py", text)
    with pytest.raises(PluginError) as err:
        plugins.load([str(bad)], entry_points=False)
    message = str(err.value)
    assert message.startswith(str(bad)) and words.removeprefix("bad.py") in message and "\n" not in message
    assert set(ops.REGISTRY) >= {"invert"} and "f" not in ops.REGISTRY


@pytest.mark.parametrize("spec", ["missing.py", "no_such_plugin_module"])
def test_a_plugin_that_does_not_exist_is_named(tmp_path, spec):
    with pytest.raises(PluginError, match="no such file"):
        plugins.load([str(tmp_path / spec) if spec.endswith(".py") else spec], entry_points=False)


def test_installed_packages_are_found_through_the_entry_point_group(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "zmqproc_demo_ops").mkdir(parents=True)
    write(site / "zmqproc_demo_ops" / "__init__.py", GOOD.format(name="brighten_ep"))
    dist = site / "zmqproc_demo_ops-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zmqproc-demo-ops\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[zmqproc.ops]\ndemo = zmqproc_demo_ops\n")
    monkeypatch.syspath_prepend(str(site))
    assert plugins.load([]) == {"brighten_ep": "zmqproc-demo-ops (entry point demo)"}
