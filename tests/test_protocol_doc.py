"""docs/protocol.md's raw pyzmq example runs as written against a real server."""

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_raw_example_from_the_docs(endpoint):
    text = (ROOT / "docs" / "protocol.md").read_text()
    code = re.search(r"## A raw pyzmq client.*?```python\n(.*?)```", text, re.S).group(1)
    assert "import zmqproc" not in code and "from zmqproc" not in code
    code = code.replace("tcp://127.0.0.1:5555", endpoint)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.match(r"req-1 \(480, 640\) [\d.]+ ms", out.stdout), out.stdout
