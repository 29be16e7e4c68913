"""The server in Docker: the image, its healthcheck, `docker stop`, compose replicas and a client through SSH.

Real engine, real image (built by the ``docker_image`` fixture with ``make wheels docker-build``), ports
published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.docker import (
    LABEL,
    ROOT,
    Container,
    compose_command,
    docker,
    free_port_range,
    wait_healthy,
)
from tests.hostile import tiff_claiming
from zmqproc import Client, ops
from zmqproc.client.pipeline import to_steps

pytestmark = pytest.mark.docker

PIPELINE = "grayscale;gaussian_blur:ksize=5;canny:threshold1=50,threshold2=150"


def expected(image: np.ndarray, pipeline: str) -> tuple[np.ndarray, dict]:
    return ops.run_pipeline(image, ops.validate_pipeline(to_steps(pipeline)))


def assert_processed_right(client: Client, image: np.ndarray) -> None:
    """A real photo through a pipeline matches the same pipeline run here; the face cascade ships in the image."""
    out = client.process(image, PIPELINE, timeout=20)
    want, _ = expected(image, PIPELINE)
    assert out.shape == want.shape and out.dtype == want.dtype
    assert np.count_nonzero(out != want) <= want.size // 1000  # the image's OpenCV may be a patch release apart
    found = client.process(image, "detect_faces", details=True, timeout=20)
    assert len(found.results["faces"]) == 1


@pytest.fixture(scope="module")
def running(docker_image: str) -> Iterator[Container]:
    """One healthy container shared by the tests that only send it work."""
    from tests.conftest import free_port

    container = Container(docker_image, "--workers", "2", port=free_port())
    try:
        container.wait_healthy()
        yield container
    finally:
        container.remove()


def test_image_is_server_only_non_root_and_exec_form(docker_image: str) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", docker_image))
    assert config["Entrypoint"] == ["zmqproc-server", "--bind", "tcp://0.0.0.0:5555"]  # exec form: the server is PID 1
    assert "5555/tcp" in config["ExposedPorts"]
    assert 'exec zmqproc ping --server "$ZMQPROC_HEALTH_ENDPOINT"' in config["Healthcheck"]["Test"][-1]
    assert "ZMQPROC_HEALTH_ENDPOINT=tcp://127.0.0.1:5555" in config["Env"]
    assert config["User"] not in ("", "root", "0")
    probe = (
        "import importlib.metadata as m, importlib.util as u, os, re\n"
        "needed = [re.split('[<>=!~ ;]', r)[0] for r in m.requires('zmqproc') if 'extra ==' not in r and 'paramiko' not in r]\n"
        "versions = [m.version(name) for name in needed]  # raises when one is missing\n"
        "print(os.getuid(), len(versions), u.find_spec('PySide6') is None, u.find_spec('pip') is None, u.find_spec('paramiko') is None)"
    )
    out = docker("run", "--rm", "--label", LABEL, "--entrypoint", "python", docker_image, "-c", probe)
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # every server dependency installed; no Qt, no pip, no paramiko (client-only: SSH tunnels) in the final image
    assert out == f"10001 {len(runtime) - 1} True True True"


def test_the_container_is_hardened_and_the_image_has_no_setuid_programs(running: Container, docker_image: str) -> None:
    host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", running.id))
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 128 and host["Memory"] == 1 << 30 and host["LogConfig"]["Config"] == {"max-file": "3", "max-size": "10m"}
    assert "/tmp" in host["Tmpfs"]
    privileged = docker(
        "run", "--rm", "--label", LABEL, "--user", "0", "--entrypoint", "find", docker_image, "/", "-xdev", "-type", "f", "-perm", "/6000"
    )
    assert privileged == "", f"setuid/setgid programs left in the image: {privileged}"
    assert "memory budget 819 MiB" in running.logs(), "the server sized its budget from the container's limit"


def test_a_hostile_tiff_does_not_kill_the_container(running: Container) -> None:
    """A float64 TIFF claiming 6324 x 6324 x 4 (1.2 GiB decoded) OOM-killed the old 1 GiB container: now refused unread."""
    from tests.rawwire import RawDealer

    dealer = RawDealer(running.endpoint, timeout_ms=20000)
    try:
        header = {"v": 1, "kind": "process", "pipeline": [{"op": "identity"}], "image": {"format": "tiff"}}
        for i in range(3):
            reply, _ = dealer.call({**header, "id": f"t{i}"}, tiff_claiming(6324, 6324, np.zeros((4, 4, 4), np.float64)))
            assert reply["error"]["code"] == "decode_failed", reply
    finally:
        dealer.close()
    state = running.state()
    assert state["Running"] and not state["OOMKilled"]
    with Client(running.endpoint, timeout=20) as client:
        assert client.ping() < 20


def test_healthcheck_turns_healthy_and_a_photo_comes_back_right(running: Container, astronaut: np.ndarray) -> None:
    assert running.state()["Health"]["Status"] == "healthy"
    with Client(running.endpoint, timeout=20) as client:
        assert_processed_right(client, astronaut)


def test_client_started_with_the_container_waits_for_the_server(start_container, coffee: np.ndarray) -> None:
    """Right after `docker run`, docker-proxy accepts and closes connections until the server listens: not a refusal."""
    container = start_container("--workers", "1")
    with Client(container.endpoint, timeout=30) as client:
        assert client.process(coffee, "invert", timeout=30).shape == coffee.shape
    assert "listening on" in container.logs()


def test_host_network_binds_loopback_turns_healthy_and_processes(start_container, astronaut: np.ndarray) -> None:
    """`--network host` (no docker-proxy): the server binds the host's 127.0.0.1:PORT, the healthcheck follows it."""
    container = start_container("--workers", "2", host_network=True)
    container.wait_healthy()
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{container.port:04X}" in listening  # 127.0.0.1, not 0.0.0.0
    assert f"00000000:{container.port:04X}" not in listening
    with Client(container.endpoint, timeout=20) as client:
        assert_processed_right(client, astronaut)


def test_port_is_published_on_loopback_only(running: Container) -> None:
    bindings = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Ports}}", running.id))["5555/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(running.port)}]


def test_docker_stop_ends_the_server_gracefully(start_container, coffee: np.ndarray) -> None:
    container = start_container("--workers", "1")
    container.wait_healthy()
    with Client(container.endpoint, timeout=20) as client:
        futures = [client.submit(coffee, "median_blur:ksize=5") for _ in range(4)]
        assert all(f.result(timeout=20).shape == coffee.shape for f in futures)
    # -t 10: had the server ignored SIGTERM, docker would SIGKILL it after 10 s and the exit code would be 137.
    assert container.stop(grace=10) == 0
    assert "stopped: " in container.logs()


@pytest.mark.parametrize("network", ["", "host"])
def test_make_run_server_stops_cleanly_on_ctrl_c(docker_image: str, network: str) -> None:
    """`make run-server` in the foreground; Ctrl-C (SIGINT to the terminal's process group) stops the server and removes the container."""
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run-server", f"IMAGE={docker_image}", f"PORT={port}", "WORKERS=1", f"DOCKER_NETWORK={network}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "listening on tcp://" in line:
                break
        assert lines and "listening on" in lines[-1], "".join(lines)
        with Client(f"tcp://127.0.0.1:{port}", timeout=10) as client:
            client.ping()
        os.killpg(proc.pid, signal.SIGINT)
        lines += proc.stdout.readlines()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    left = docker("ps", "-a", "-q", "--filter", f"name=zmqproc-server-{port}").split()
    if left:
        docker("rm", "-f", *left)
    assert re.search(r"stopped: \d+ requests, \d+ ok", "".join(lines)), "".join(lines)
    assert left == []  # --rm: nothing left behind


def test_through_ssh_tunnel_to_the_published_port(running: Container, sshd, astronaut: np.ndarray) -> None:
    """The README's deployment: the container publishes on the server host's loopback, the client comes in over SSH."""
    with Client(running.endpoint, timeout=20, ssh=sshd.target, ssh_key=sshd.key, ssh_known_hosts=sshd.known_hosts) as client:
        assert client.tunnels, "the client did not open a tunnel"
        assert_processed_right(client, astronaut)


@pytest.fixture
def compose_replicas(docker_image: str) -> Iterator[list[str]]:
    """docker/compose.yaml scaled to two replicas on two consecutive ports; their endpoints. Taken down afterwards."""
    from tests.conftest import require_or_skip

    compose = compose_command()
    if compose is None:
        require_or_skip("docker", "neither `docker compose` nor `docker-compose` runs")
    first = free_port_range(2)
    env = {**os.environ, "IMAGE": docker_image, "PORTS": f"{first}-{first + 1}", "HEALTH_INTERVAL": "1s", "CPUS": "1", "WORKERS": "1"}
    project = ["-p", f"zmqproc-test-{uuid.uuid4().hex[:8]}", "-f", str(ROOT / "docker" / "compose.yaml")]

    def run(*args: str) -> str:
        done = subprocess.run([*compose, *project, *args], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    try:
        run("up", "-d", "--no-build", "--scale", "server=2")
        ids = run("ps", "-q").split()
        assert len(ids) == 2
        for container_id in ids:
            wait_healthy(container_id)
        yield [f"tcp://127.0.0.1:{port}" for port in (first, first + 1)]
    finally:
        run("down", "--timeout", "10")


def test_compose_replicas_behind_one_client_both_get_work(compose_replicas: list[str], coffee: np.ndarray) -> None:
    """Every reply names the server instance (epoch) that made it: both replicas must appear, and count the work."""
    epochs = []
    for endpoint in compose_replicas:
        with Client(endpoint, timeout=10) as one:
            one.ping()
            epochs.append(one.epoch)
    assert len(set(epochs)) == 2
    made_by: Counter[str] = Counter()
    with Client(compose_replicas, timeout=20) as client:
        for _ in range(5):  # rounds of concurrent work: a connection still coming up may miss the first round
            futures = [client.submit(coffee, "gaussian_blur:ksize=9", details=True) for _ in range(8)]
            made_by.update(f.result(timeout=30).epoch for f in futures)
            if min(made_by[e] for e in epochs) >= 3:
                break
    assert min(made_by[e] for e in epochs) >= 3, f"work per replica {made_by}: the client did not spread it"
    for endpoint, epoch in zip(compose_replicas, epochs, strict=True):
        with Client(endpoint, timeout=10) as one:
            assert one.stats()["ok"] >= made_by[epoch]  # the replica's own counters saw that work


DEMO_PACKAGE = {
    "pyproject.toml": """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "zmqproc-demo-ops"
version = "1.0"

[project.entry-points."zmqproc.ops"]
demo = "zmqproc_demo_ops"
""",
    "zmqproc_demo_ops/__init__.py": '''
import numpy as np
from zmqproc import op


@op
def swap_channels(image: np.ndarray) -> np.ndarray:
    """Reverse the channel order (BGR to RGB)."""
    return np.ascontiguousarray(image[:, :, ::-1])
''',
}


def test_plugin_ops_from_a_mounted_folder_and_from_a_derived_image(start_container, docker_image: str, tmp_path: Path) -> None:
    import sys

    coffee = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    mounted = start_container("--workers", "1", docker_args=["-v", f"{ROOT / 'examples' / 'ops'}:/ops:ro", "-e", "ZMQPROC_OPS=/ops"])
    package = tmp_path / "package"
    for name, text in DEMO_PACKAGE.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(package)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    derived = f"zmqproc-test-plugins:{uuid.uuid4().hex[:8]}"
    docker(
        "build",
        "-q",
        "-f",
        str(ROOT / "docker" / "plugins.Dockerfile"),
        "--build-arg",
        f"BASE={docker_image}",
        "-t",
        derived,
        str(wheels),
        timeout=300,
    )
    try:
        installed = start_container("--workers", "1", image=derived)
        mounted.wait_healthy()
        installed.wait_healthy()
        with Client(mounted.endpoint, timeout=30) as client:
            listing = {o["name"]: o for o in client.ops()}
            assert listing["quantize"]["source"] == "/ops/quantize.py" and listing["count_blobs"]["results"] == {"centroids": "points"}
            assert len(client.process(coffee, "quantize:colors=4", details=True).results["palette"]) == 4  # in a worker process
        with Client(installed.endpoint, timeout=30) as client:
            assert {o["name"]: o["source"] for o in client.ops()}["swap_channels"] == "zmqproc-demo-ops (entry point demo)"
            assert np.array_equal(client.process(coffee, "swap_channels"), coffee[:, :, ::-1])
    finally:
        docker("image", "rm", "-f", derived)  # the untagged image goes with its container (start_container removes it)
