"""The wheel as a user installs it: outside the repository, not editable, console scripts that serve, ping and list ops.

By default the wheel is built here (no build isolation, so offline) into a fresh virtualenv that borrows the test
environment's dependencies through a ``.pth`` line (the editable zmqproc there is not activated by it). ``make
wheel-check`` sets ``ZMQPROC_WHEEL_VENV`` to a venv it made with ``pip install`` of an isolated build and its real
dependencies from the index; then that venv is tested as it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_until


def run(*cmd: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("ZMQPROC_WHEEL_VENV")
    if given:
        return Path(given).resolve()
    work = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", work / "dist", ROOT, cwd=work)
    (wheel,) = (work / "dist").glob("zmqproc-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", work / "venv", cwd=work)
    python = work / "venv" / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=work)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=work).stdout.strip()
    (Path(site) / "zmqproc_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return work / "venv"


def test_the_installed_package_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    where = run(venv / "bin" / "python", "-c", "import zmqproc; print(zmqproc.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT / "zmqproc")


def test_console_scripts_serve_ping_list_ops_and_process_a_sample(venv: Path, tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [venv / "bin" / "zmqproc-server", "--bind", endpoint, "--workers", "1"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        wait_until(lambda: "listening on" in server.stderr.readline(), 30, "the installed server listening")
        assert "pong from" in run(venv / "bin" / "zmqproc", "ping", "--server", endpoint, cwd=tmp_path).stdout
        listing = run(venv / "bin" / "zmqproc", "ops", "--server", endpoint, cwd=tmp_path).stdout
        assert re.search(r"^detect_faces\s", listing, re.M) and "ksize=5 [1..99, odd]" in listing
        out = tmp_path / "faces.png"
        zmqproc = venv / "bin" / "zmqproc"
        done = run(zmqproc, "process", "sample:astronaut", "-o", out, "--op", "detect_faces", "--server", endpoint, cwd=tmp_path)
        assert re.search(r"faces=\[\[\d+, \d+, \d+, \d+\]\]", done.stdout), "the Haar cascade loads and finds the one face"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


def test_the_viewer_script_starts(venv: Path, tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([venv / "bin" / "zmqproc-gui", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "sample:NAME" in done.stdout
