"""The container's hardening is stated once (deploy/hardening.toml) and said the same way by `make run-server`,
docker/compose.yaml and the Kubernetes manifests (deploy/kubernetes, the base and every overlay).

Each is read the way its tool reads it: the Makefile through `make` itself (`make -s docker-run-flags`, and the
`docker run` line `make -n run-server` would run), compose.yaml with its `${VAR:-default}` defaults, the manifests
rendered as kustomize renders them (tests/fixtures/kubernetes.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kubernetes import BASE, KUSTOMIZE, OVERLAYS, render, server_container
from zmqproc.server.budget import default_budget
from zmqproc.server.core import SHUTDOWN_GRACE_S

ROOT = Path(__file__).resolve().parents[2]
SPEC = tomllib.loads((ROOT / "deploy" / "hardening.toml").read_text())
Pod = tuple[dict[str, Any], dict[str, Any]]  # (pod spec, container `server`)
# `docker run` options that take a value (the rest of the options are switches)
DOCKER_VALUE_OPTIONS = {
    *("--tmpfs", "--cap-drop", "--cap-add", "--security-opt", "--pids-limit", "--memory", "--memory-swap", "--cpus", "--user", "-u"),
    *("--log-driver", "--log-opt", "--name", "-p", "-v", "-e", "--network", "--health-cmd"),
}
SIZES = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def size_bytes(text: str | int) -> int:
    """Docker's `1g`/`16m` (powers of 1024) and Kubernetes' `1Gi`/`16Mi` as bytes."""
    match = re.fullmatch(r"(\d+)([a-z]*)", str(text).lower())
    assert match and match.group(2) in SIZES, f"size {text!r}"
    return int(match.group(1)) * SIZES[match.group(2)]


def docker_tmpfs(spec: str) -> tuple[str, set[str], int]:
    """`/tmp:rw,nosuid,size=16m` -> ("/tmp", {"rw", "nosuid"}, 16 MiB)."""
    path, _, options = spec.partition(":")
    opts = set(options.split(","))
    (size,) = [o for o in opts if o.startswith("size=")]
    return path, opts - {size}, size_bytes(size.removeprefix("size="))


def make(*args: str) -> str:
    """`make ARGS` with the Makefile's own defaults (none of its variables taken from this environment)."""
    overrides = ("MEMORY", "WORKERS", "HOST", "PORT", "OPS", "DOCKER_NETWORK", "IMAGE", "MAKEFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in overrides}
    done = subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


class DockerRun:
    """The options of one `docker run` command line, as docker reads them."""

    def __init__(self, argv: list[str]) -> None:
        self.flags: dict[str, list[str]] = {}
        self.switches: set[str] = set()
        self.rest: list[str] = []
        it = iter(argv)
        for arg in it:
            name, eq, value = arg.partition("=")
            if name in DOCKER_VALUE_OPTIONS:
                self.flags.setdefault(name, []).append(value if eq else next(it))
            elif arg.startswith("-"):
                self.switches.add(arg)
            else:
                self.rest = [arg, *it]  # the image, then the server's arguments
        self.server_args = self.rest[1:]

    def one(self, flag: str) -> str:
        (value,) = self.flags[flag]
        return value


@pytest.fixture(scope="module")
def make_flags() -> DockerRun:
    """`make docker-run-flags`: what `make run-server` and the tests' containers get (tests/fixtures/docker.py)."""
    return DockerRun(shlex.split(make("docker-run-flags")))


@pytest.fixture(scope="module")
def run_server() -> DockerRun:
    """The `docker run` line `make run-server` runs (`make -n` prints it without running anything)."""
    lines = [shlex.split(line) for line in make("-n", "run-server").splitlines() if line.startswith("docker run ")]
    assert len(lines) == 1, lines
    return DockerRun(lines[0][2:])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/compose.yaml's `server` with every `${VAR:-default}` at its default (an empty environment)."""
    text = (ROOT / "docker" / "compose.yaml").read_text()
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)
    assert "${" not in text, "a compose variable without a default"
    return yaml.safe_load(text)["services"]["server"]


KUSTOMIZATIONS = [KUSTOMIZE, BASE, *OVERLAYS]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=[str(p.relative_to(ROOT)) for p in KUSTOMIZATIONS])
def pod(request: pytest.FixtureRequest) -> Pod:
    """(pod spec, container `server`) of the Deployment, rendered from the base and from each overlay."""
    return server_container(render(request.param))


def effective(pod_and_container: Pod, field: str) -> Any:
    """A security setting as the kubelet applies it: the container's own, else the pod's."""
    pod_spec, container = pod_and_container
    return container.get("securityContext", {}).get(field, pod_spec.get("securityContext", {}).get(field))


def test_the_image_user_is_the_stated_user() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(rf"useradd --uid {SPEC['user']['uid']} --user-group .* zmqproc\b", dockerfile)
    assert re.findall(r"^USER (\S+)", dockerfile, re.M)[-1] == "zmqproc"


def test_docker_and_compose_run_as_the_images_user(make_flags: DockerRun, run_server: DockerRun, compose: dict[str, Any]) -> None:
    for run in (make_flags, run_server):
        assert not {"--user", "-u"} & set(run.flags), "the image's USER (uid 10001) is the user"
        assert "--privileged" not in run.switches
    assert "user" not in compose and not compose.get("privileged")


def test_kubernetes_runs_as_the_images_user(pod: Pod) -> None:
    assert effective(pod, "runAsUser") == SPEC["user"]["uid"]
    assert effective(pod, "runAsGroup") == SPEC["user"]["gid"]
    assert effective(pod, "runAsNonRoot") is True
    assert not effective(pod, "privileged")
    assert pod[0]["automountServiceAccountToken"] is False  # no API token in a server that never uses one


def test_make_run_server_uses_the_flags_and_an_init(make_flags: DockerRun, run_server: DockerRun) -> None:
    assert run_server.flags.items() >= make_flags.flags.items() and run_server.switches >= make_flags.switches
    assert ("--init" in run_server.switches) is SPEC["privileges"]["init"]
    assert "--max-memory" not in run_server.server_args


def test_read_only_root_with_a_small_tmp(make_flags: DockerRun, compose: dict[str, Any], pod: Pod) -> None:
    fs = SPEC["filesystem"]
    tmp = (fs["tmp_path"], set(fs["tmp_docker_options"]), fs["tmp_size_bytes"])
    assert ("--read-only" in make_flags.switches) is fs["read_only_root"]
    assert [docker_tmpfs(t) for t in make_flags.flags["--tmpfs"]] == [tmp]
    assert compose["read_only"] is fs["read_only_root"]
    assert [docker_tmpfs(t) for t in compose["tmpfs"]] == [tmp]

    pod_spec, container = pod
    assert effective(pod, "readOnlyRootFilesystem") is fs["read_only_root"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == [fs["tmp_path"]], "/tmp is the only writable mount"
    tmp_volume = volumes[writable[0]["name"]]
    assert tmp_volume["emptyDir"]["medium"] == "Memory"  # a tmpfs, as Docker's
    assert size_bytes(tmp_volume["emptyDir"]["sizeLimit"]) == fs["tmp_size_bytes"]


def test_no_capabilities(make_flags: DockerRun, compose: dict[str, Any], pod: Pod) -> None:
    drop = SPEC["privileges"]["capabilities_drop"]
    assert make_flags.flags["--cap-drop"] == drop and "--cap-add" not in make_flags.flags
    assert compose["cap_drop"] == drop and "cap_add" not in compose
    capabilities = effective(pod, "capabilities")
    assert capabilities["drop"] == drop and not capabilities.get("add")


def test_no_privilege_gain_and_the_default_seccomp_profile(make_flags: DockerRun, compose: dict[str, Any], pod: Pod) -> None:
    assert SPEC["privileges"]["no_new_privileges"] and SPEC["privileges"]["seccomp"] == "RuntimeDefault"
    assert {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"} & set(make_flags.flags["--security-opt"])
    assert "no-new-privileges:true" in compose["security_opt"]
    # Docker applies its default seccomp profile unless told otherwise: nothing may tell it otherwise.
    for opt in make_flags.flags["--security-opt"] + compose["security_opt"]:
        assert not opt.startswith(("seccomp", "apparmor=unconfined", "label=disable")), opt
    assert effective(pod, "allowPrivilegeEscalation") is False
    assert effective(pod, "seccompProfile") == {"type": "RuntimeDefault"}


def test_an_init_reaps_orphans(compose: dict[str, Any], pod: Pod) -> None:
    assert compose["init"] is SPEC["privileges"]["init"]
    assert pod[0]["shareProcessNamespace"] is SPEC["privileges"]["init"]  # the pause process is PID 1


def test_memory_limit_the_server_budgets_from(make_flags: DockerRun, run_server: DockerRun, compose: dict[str, Any], pod: Pod) -> None:
    limit = SPEC["limits"]["memory_bytes"]
    assert not SPEC["limits"]["swap"]
    assert size_bytes(make_flags.one("--memory")) == size_bytes(make_flags.one("--memory-swap")) == limit
    assert size_bytes(compose["mem_limit"]) == size_bytes(compose["memswap_limit"]) == limit
    resources = pod[1]["resources"]
    assert size_bytes(resources["limits"]["memory"]) == size_bytes(resources["requests"]["memory"]) == limit
    # The server sizes its budget from the cgroup limit, so nobody passes --max-memory; the budget leaves room for /tmp
    # (memory-backed in both, and charged to the same cgroup) and for what the budget does not count.
    for args in (run_server.server_args, compose["command"], pod[1]["args"]):
        assert "--max-memory" not in args
    budget = default_budget(limit, 64 * 2**30)
    assert budget == limit * 4 // 5 and budget + SPEC["filesystem"]["tmp_size_bytes"] < limit


def workers(args: list[str]) -> str:
    return args[args.index("--workers") + 1]


def test_cpus_and_workers(make_flags: DockerRun, run_server: DockerRun, compose: dict[str, Any], pod: Pod) -> None:
    cpus = SPEC["limits"]["cpus"]
    # `make run-server` sets no CPU limit: its workers are the host's CPU count (WORKERS ?= nproc).
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    assert "--cpus" not in make_flags.flags and workers(run_server.server_args) == nproc
    assert float(compose["cpus"]) == cpus and workers(compose["command"]) == str(cpus)
    resources = pod[1]["resources"]
    assert float(resources["requests"]["cpu"]) == float(resources["limits"]["cpu"]) == cpus  # Guaranteed QoS
    # The server's default --workers counts the node's CPUs, not the pod's: the manifest must say it.
    assert workers(pod[1]["args"]) == str(cpus)


def test_docker_only_limits(make_flags: DockerRun, compose: dict[str, Any]) -> None:
    """Processes and logs: Docker and compose bound them per container; in Kubernetes the kubelet does, per node."""
    limits = SPEC["limits"]
    assert int(make_flags.one("--pids-limit")) == compose["pids_limit"] == limits["pids"]
    log_opts = dict(o.split("=", 1) for o in make_flags.flags["--log-opt"])
    assert make_flags.one("--log-driver") == compose["logging"]["driver"] == "json-file"
    assert log_opts == compose["logging"]["options"] == {"max-size": limits["log_max_size"], "max-file": str(limits["log_max_files"])}


def test_stop_grace_is_longer_than_the_servers(compose: dict[str, Any], pod: Pod) -> None:
    shutdown = SPEC["shutdown"]
    assert shutdown["server_grace_s"] == SHUTDOWN_GRACE_S < shutdown["stop_grace_s"]
    assert compose["stop_grace_period"] == f"{shutdown['stop_grace_s']}s"
    assert pod[0]["terminationGracePeriodSeconds"] == shutdown["stop_grace_s"]


def test_health_check_is_the_images(compose: dict[str, Any], pod: Pod) -> None:
    """Compose keeps the image's command (its own timing only); the Kubernetes probes exec the same command."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.M | re.S)
    assert match
    image_check = json.loads(match.group(1))
    assert "test" not in compose["healthcheck"]
    curve = "--curve-secret" in pod[1]["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = pod[1][probe]["exec"]["command"]
        if curve:  # a CURVE server refuses a plain ping: the same command with the probe's own key
            assert command[:2] == image_check[:2] and command[2].startswith(image_check[2] + " --curve-server-key ")
        else:
            assert command == image_check
