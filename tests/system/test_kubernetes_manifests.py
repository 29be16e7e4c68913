"""deploy/kubernetes, checked offline: rendered (tests/fixtures/kubernetes.py, and `kubectl kustomize` where installed),
validated against the API schemas of a pinned Kubernetes version (kubernetes-validate, strict: an unknown field is an
error), read for what the manifests promise (docs/deployment.md, "Kubernetes"), and the container's command run for real:
a server started with the rendered arguments, its keys and ops laid out as the kubelet mounts Secrets and ConfigMaps, and
the rendered probe command executed against it.

No cluster runs here (kind, k3s and minikube download their binaries); the hardening is checked against `make run-server`
and compose by test_hardening_agrees.py.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
import zmq.auth

from tests.conftest import ROOT, ServerProcess, free_port
from tests.fixtures.kubernetes import (
    BASE,
    COMPONENTS,
    KUSTOMIZE,
    OVERLAYS,
    Resource,
    by_kind,
    kubectl_kustomize,
    render,
    server_container,
)
from zmqproc.server.core import SHUTDOWN_GRACE_S

# The Kubernetes version the manifests are held to (kubernetes-validate ships the schemas of 1.25 to 1.37 in its 1.37
# release; pyproject.toml's dev extra asks for one that has this version's).
KUBERNETES_VERSION = "1.33.0"
LABELS = {"app.kubernetes.io/name": "zmqproc", "app.kubernetes.io/component": "server"}

RENDERINGS = {
    str(KUSTOMIZE.relative_to(ROOT)): (KUSTOMIZE, []),
    **{str(p.relative_to(ROOT)): (p, []) for p in OVERLAYS},
    **{f"base + {c.name}": (BASE, [c]) for c in COMPONENTS},
}


@pytest.fixture(scope="module", params=list(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> list[Resource]:
    folder, components = RENDERINGS[request.param]
    return render(folder, components)


@pytest.mark.parametrize("folder", [KUSTOMIZE, BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(ROOT)))
def test_rendering_matches_kubectl_kustomize(folder: Path) -> None:
    theirs = kubectl_kustomize(folder)
    if theirs is None:
        pytest.skip("kubectl is not installed: the manifests are rendered by tests/fixtures/kubernetes.py alone")
    assert by_kind(render(folder)) == by_kind(theirs)


def test_every_component_is_in_an_overlay() -> None:
    """overlays/all-options (validated below, as it is rendered by kubectl too) uses every component."""
    used = {(o / c).resolve() for o in OVERLAYS for c in _kustomization(o).get("components", [])}
    assert used >= set(COMPONENTS)


def _kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def test_manifests_validate_against_the_pinned_kubernetes(rendered: list[Resource]) -> None:
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_validation_rejects_a_mistake() -> None:
    """The validation is real: an unknown field, or a wrong type, in the Deployment fails it."""
    deployment = by_kind(render(BASE))["Deployment", "zmqproc"]
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "10s"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_a_headless_service_lists_every_ready_pod(rendered: list[Resource]) -> None:
    resources = by_kind(rendered)
    deployment = resources["Deployment", "zmqproc"]
    pod_spec, container = server_container(rendered)
    assert deployment["spec"]["template"]["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"] == LABELS
    service = resources["Service", "zmqproc"]["spec"]
    assert service["clusterIP"] == "None" and service["selector"] == LABELS and not service.get("publishNotReadyAddresses")
    (port,) = service["ports"]
    (container_port,) = [p for p in container["ports"] if p["name"] == "zmqproc"]  # components/metrics adds its own
    assert port["port"] == container_port["containerPort"] == 5555 and port["targetPort"] == container_port["name"]
    assert container["image"] == "zmqproc-server"  # as `make docker-build` tags it (Makefile: IMAGE ?= zmqproc-server)
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_replicas_are_the_autoscalers_and_leave_one_at_a_time(rendered: list[Resource]) -> None:
    resources = by_kind(rendered)
    deployment = resources["Deployment", "zmqproc"]["spec"]
    assert "replicas" not in deployment, "the HorizontalPodAutoscaler owns the count; `kubectl apply` must not reset it"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = resources["HorizontalPodAutoscaler", "zmqproc"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "zmqproc"}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    pdb = resources["PodDisruptionBudget", "zmqproc"]["spec"]
    assert pdb["selector"]["matchLabels"] == LABELS and pdb["maxUnavailable"] == 1
    _, container = server_container(rendered)
    assert "cpu" in container["resources"]["requests"]  # the HPA's utilisation is measured against it


def test_probes_and_grace(rendered: list[Resource]) -> None:
    pod_spec, container = server_container(rendered)
    assert pod_spec["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE_S + 1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        ping_timeout = float(command[2].split("--timeout ")[1].split()[0])
        assert container[probe]["timeoutSeconds"] > ping_timeout  # the ping gives up first and says why


def test_network_policy_admits_only_the_zmqproc_port() -> None:
    (component,) = [c for c in COMPONENTS if c.name == "network-policy"]
    rendered = render(BASE, [component])
    policy = by_kind(rendered)["NetworkPolicy", "zmqproc"]["spec"]
    _, container = server_container(rendered)
    assert policy["podSelector"]["matchLabels"] == LABELS and policy["policyTypes"] == ["Ingress"]
    ports = [p for rule in policy["ingress"] for p in rule["ports"]]
    assert ports == [{"protocol": "TCP", "port": container["ports"][0]["containerPort"]}]


def test_the_metrics_component_adds_its_port_flag_and_rule() -> None:
    """components/metrics: --metrics-port and a container port agree; with network-policy the rule admits that port too,
    and without it no NetworkPolicy appears (the patch is skipped, as kustomize skips it: `kubectl kustomize` of
    overlays/all-options is compared above)."""
    components = {c.name: c for c in COMPONENTS}
    alone = render(BASE, [components["metrics"]])
    assert not [r for r in alone if r["kind"] == "NetworkPolicy"]
    both = render(BASE, [components["network-policy"], components["metrics"]])
    pod_spec, container = server_container(both)
    args = container["args"]
    port = int(args[args.index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"zmqproc": 5555, "metrics": port}
    annotations = by_kind(both)["Deployment", "zmqproc"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/scrape"] == "true"
    policy = by_kind(both)["NetworkPolicy", "zmqproc"]["spec"]
    assert sorted(p["port"] for rule in policy["ingress"] for p in rule["ports"]) == [5555, port]
    assert "--metrics-bind" not in args, "the image binds 0.0.0.0, so the endpoint does too: reachable by the scraper"


def test_curve_keys_and_plugin_ops_are_mounted_read_only() -> None:
    pod_spec, container = server_container(render(OVERLAYS[0]))
    args = container["args"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}

    def source(path: str) -> dict[str, Any]:
        (mount,) = [m for p, m in mounts.items() if path == p or path.startswith(p + "/")]
        assert mount["readOnly"] is True, path
        return volumes[mount["name"]]

    secret_key = args[args.index("--curve-secret") + 1]
    assert source(secret_key)["secret"]["secretName"] == "zmqproc-curve"
    assert source(args[args.index("--curve-allow") + 1])["secret"]["secretName"] == "zmqproc-curve-allow"
    assert source(args[args.index("--ops") + 1])["configMap"]["name"] == "zmqproc-ops"
    assert pod_spec["securityContext"]["fsGroup"] == pod_spec["securityContext"]["runAsGroup"]  # uid 10001 reads the keys


def kubelet_volume(folder: Path, files: dict[str, bytes | Path]) -> None:
    """A Secret or ConfigMap volume as the kubelet writes it: the files in a timestamped folder, `..data` a link to it,
    and each name a link through `..data` (its atomic writer), the files 0440 as with fsGroup."""
    data = folder / "..2026_12_02_00_00_00.000000001"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content.read_bytes() if isinstance(content, Path) else content)
        (data / name).chmod(0o440)
        (folder / name).symlink_to(Path("..data") / name)
    (folder / "..data").symlink_to(data.name)


def test_the_rendered_container_serves_and_its_probe_passes(tmp_path: Path) -> None:
    """The all-options Deployment's arguments, with its mounts laid out locally, start a CURVE server with the plugin ops;
    the rendered probe command (the image's ping with the probe's key) passes, and the base's plain ping is refused."""
    pod_spec, container = server_container(render(OVERLAYS[0]))
    keys = tmp_path / "made"
    keys.mkdir()
    for name in ("server", "probe", "laptop"):
        zmq.auth.create_certificates(str(keys), name)
    mount_files = {
        "zmqproc-curve": {"server.key_secret": keys / "server.key_secret", "probe.key_secret": keys / "probe.key_secret"},
        "zmqproc-curve-allow": {"probe.key": keys / "probe.key", "laptop.key": keys / "laptop.key"},
        "zmqproc-ops": {"blobs.py": ROOT / "examples" / "ops" / "blobs.py"},
    }
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    local = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            continue
        name = volume["secret"]["secretName"] if "secret" in volume else volume["configMap"]["name"]
        local[mount["mountPath"]] = str(tmp_path / "mounts" / mount["name"])
        kubelet_volume(Path(local[mount["mountPath"]]), mount_files[name])

    def here(text: str) -> str:
        for path in sorted(local, key=len, reverse=True):
            text = text.replace(path, local[path])
        return text

    args = [here(a) for a in container["args"]]
    metrics_port = free_port()  # the rendered port is the pod's own; here, a free one on this machine
    args[args.index("--metrics-port") + 1] = str(metrics_port)
    server = ServerProcess(*args, "--opencv-threads", "1")
    try:
        log = server.output()
        assert "CURVE on" in log and "2 client keys allowed" in log, log
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as scraped:  # plain HTTP beside CURVE
            assert b"zmqproc_requests_total" in scraped.read()
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's zmqproc, as the image's
        env = {**os.environ, "ZMQPROC_HEALTH_ENDPOINT": server.endpoint, "PATH": path}
        probe = [here(part) for part in container["readinessProbe"]["exec"]["command"]]
        done = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=container["readinessProbe"]["timeoutSeconds"] + 10)
        assert done.returncode == 0, done.stdout + done.stderr
        plain = server_container(render(BASE))[1]["readinessProbe"]["exec"]["command"]
        refused = subprocess.run(plain, env=env, capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0, "a CURVE server must refuse the plain ping (why the curve component replaces it)"
        ops = subprocess.run(
            ["zmqproc", "ops", "--server", server.endpoint, "--curve-server-key", str(keys / "server.key"),
             "--curve-client-key", str(keys / "laptop.key_secret")],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ops.returncode == 0 and "count_blobs" in ops.stdout, ops.stdout + ops.stderr
    finally:
        code = server.stop(timeout=pod_spec["terminationGracePeriodSeconds"])
    assert code == 0, server.output()
