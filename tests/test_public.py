"""The public surface, which the layout must not move: the names, the commands, and a plugin written as docs/plugins.md says."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import numpy as np

from tests.conftest import ROOT


def documented_plugin() -> str:
    """The first Python block of docs/plugins.md ("Write an op in five minutes"), as a user would copy it."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    return textwrap.dedent(block)


def test_the_public_names_import_from_where_the_docs_say():
    import zmqproc
    from zmqproc import Client, ClientOptions, OpDeclarationError, Processed, ProcessingError, Range, ZmqprocError, op
    from zmqproc.client import Client as SameClient

    assert SameClient is Client and callable(op) and Range(1, 2) and issubclass(OpDeclarationError, Exception)
    assert ClientOptions().grace == 3.0 and Processed and issubclass(ProcessingError, ZmqprocError)
    assert set(zmqproc.__all__) <= set(dir(zmqproc)) | {"op", "Range", "OpDeclarationError"}


def test_a_plugin_written_the_documented_way_loads_and_runs_as_the_docs_test_it(tmp_path):
    """docs/plugins.md, "Testing your op", in a process of its own (loading registers ops process-wide)."""
    (tmp_path / "my_ops.py").write_text(documented_plugin())
    script = f"""
import numpy as np
from zmqproc import ops, plugins
from zmqproc.protocol import Step

plugins.load([{str(tmp_path / "my_ops.py")!r}], entry_points=False)
image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
out, results = ops.run_pipeline(image, ops.validate_pipeline([Step("posterize", {{"levels": 8}})]))
print(out.tolist() == ((image // 32) * 32).tolist(), results)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "{}"], out.stderr


def test_the_commands_keep_their_names():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("zmqproc")}
    assert set(scripts) >= {"zmqproc", "zmqproc-server", "zmqproc-gui"}
    for name in ("zmqproc", "zmqproc-server", "zmqproc-gui"):
        module, _, function = scripts[name].partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), name
    for argv in (["-m", "zmqproc", "--help"], ["server_main.py", "--help"], ["gui_app.py", "--help"]):
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage" in out.stdout, (argv, out.stderr)


def test_the_ops_package_answers_as_the_ops_module_did():
    from zmqproc import ops

    assert "gaussian_blur" in ops.REGISTRY and np is not None
    assert [op.name for op, _ in ops.validate_pipeline([])] == []
