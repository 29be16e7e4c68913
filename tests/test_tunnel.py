"""SSH tunnels through a real OpenSSH sshd to real server processes, for both backends; the pure helpers on their own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, free_port, wait_until
from tests.rawwire import holds
from zmqproc import Client
from zmqproc.cli import main
from zmqproc.errors import (
    HostKeyChanged,
    HostKeyUnknown,
    TunnelAuthFailed,
    TunnelDied,
    TunnelError,
    TunnelTargetRefused,
    TunnelUnreachable,
)
from zmqproc.tunnel import choose_backend, open_tunnel, openssh_command, parse_endpoint, parse_ssh_target, ssh_failure

BACKENDS = ["paramiko", "openssh"]
SLOW = "denoise:h=10,search_window=35,template_window=21"


def ssh_children() -> list[int]:
    """``ssh`` processes whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if comm == "ssh" and int(rest[1]) == os.getpid() and rest[0] != "Z":
                found.append(int(entry.name))
    return found


def tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("zmqproc-tunnel") or type(t).__name__ == "Transport"]


def options(sshd, **extra):
    return {"key": sshd.key, "known_hosts": sshd.known_hosts, "timeout": 5.0, **extra}


# -- pure helpers ------------------------------------------------------------------------------


def test_parse_ssh_target():
    assert parse_ssh_target("ann@example.org:2222") == ("ann", "example.org", 2222)
    assert parse_ssh_target("ann@[::1]:2222") == ("ann", "::1", 2222)
    assert parse_ssh_target("bob@host") == ("bob", "host", 22)
    assert parse_ssh_target("host")[1:] == ("host", 22)
    for bad in ("", "ann@", "ann@host:port", "ann@host:22:33"):
        with pytest.raises(ValueError):
            parse_ssh_target(bad)


def test_parse_endpoint():
    assert parse_endpoint("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    assert parse_endpoint("tcp://[::1]:5555") == ("::1", 5555)
    for bad in ("ipc:///tmp/x", "tcp://*:5555", "tcp://host", "127.0.0.1:5555"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_choose_backend():
    assert choose_backend("auto", None, "/usr/bin/ssh") == "openssh"
    assert choose_backend("auto", "secret", "/usr/bin/ssh") == "paramiko"
    assert choose_backend("auto", None, None) == "paramiko"
    assert choose_backend("paramiko", None, "/usr/bin/ssh") == "paramiko"
    with pytest.raises(ValueError, match="keys only"):
        choose_backend("openssh", "secret", "/usr/bin/ssh")
    with pytest.raises(ValueError, match="unknown SSH backend"):
        choose_backend("putty", None, None)


def test_openssh_command_never_prompts_and_exits_on_failure():
    cmd = openssh_command(
        "ssh", 40000, ("10.0.0.5", 5555), ("ann", "gw", 2222), key="/k", known_hosts="/kh", accept_new_host_key=False, timeout=7
    )
    assert cmd[:6] == ["ssh", "-N", "-T", "-L", "127.0.0.1:40000:10.0.0.5:5555", "-p"] and cmd[-2:] == ["--", "ann@gw"]
    expected = ("BatchMode=yes", "ExitOnForwardFailure=yes", "StrictHostKeyChecking=yes", 'UserKnownHostsFile="/kh"', "ConnectTimeout=7")
    assert all(option in cmd for option in expected)
    assert "ServerAliveInterval" in " ".join(cmd) and cmd[cmd.index("-i") : cmd.index("-i") + 2] == ["-i", "/k"]
    new = openssh_command("ssh", 1, ("::1", 5), ("a", "h", 22), key=None, known_hosts=None, accept_new_host_key=True, timeout=1)
    assert "StrictHostKeyChecking=accept-new" in new and "127.0.0.1:1:[::1]:5" in new and "-i" not in new


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("root@127.0.0.1: Permission denied (publickey).\n", TunnelAuthFailed),
        ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\n", HostKeyUnknown),
        ("Host key verification failed.\n", HostKeyUnknown),
        ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n", HostKeyChanged),
        ("ssh: connect to host 127.0.0.1 port 1: Connection refused\n", TunnelUnreachable),
        ("ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n", TunnelUnreachable),
        ("channel 2: open failed: connect failed: Connection refused\n", TunnelTargetRefused),
        ("something new\n", TunnelError),
    ],
)
def test_ssh_failure_maps_stderr_to_typed_errors(stderr, error):
    err = ssh_failure(stderr, "root@gw", "tcp://127.0.0.1:5555")
    assert type(err) is error and "root@gw" in str(err)


# -- through a real sshd -----------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_process_through_tunnel(sshd, endpoint, astronaut, backend):
    with Client(endpoint, ssh=sshd.target, ssh_key=sshd.key, ssh_known_hosts=sshd.known_hosts, ssh_backend=backend) as client:
        (tunnel,) = client.tunnels
        assert tunnel.backend == backend and tunnel.local_endpoint != endpoint and tunnel.alive()
        np.testing.assert_array_equal(client.process(astronaut, "invert"), 255 - astronaut)
        assert client.ping() > 0
    assert not tunnel.alive() and ssh_children() == [] and tunnel_threads() == []
    with pytest.raises(TunnelDied, match="closed"):
        tunnel.check()
    tunnel.close()  # idempotent


@pytest.mark.sshd
def test_auto_picks_openssh_for_keys(sshd, endpoint):
    with open_tunnel(endpoint, sshd.target, **options(sshd)) as tunnel:
        assert tunnel.backend == "openssh"


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_key_is_an_auth_error(sshd, endpoint, backend):
    started = time.monotonic()
    with pytest.raises(TunnelAuthFailed, match="refused the login"):
        open_tunnel(endpoint, sshd.target, backend=backend, **options(sshd, key=sshd.wrong_key))
    assert time.monotonic() - started < 5 and ssh_children() == [] and tunnel_threads() == []


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_host_key_is_refused_unless_accepted(sshd, endpoint, tmp_path, backend):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with pytest.raises(HostKeyUnknown, match="accept"):
        open_tunnel(endpoint, sshd.target, backend=backend, **options(sshd, known_hosts=str(known_hosts)))
    assert known_hosts.read_text() == ""
    with open_tunnel(endpoint, sshd.target, backend=backend, accept_new_host_key=True, **options(sshd, known_hosts=str(known_hosts))):
        pass
    host_key = Path(sshd.known_hosts).read_text().split()
    assert host_key[2] in known_hosts.read_text()  # the host name may be hashed (Debian's HashKnownHosts yes)
    with open_tunnel(endpoint, sshd.target, backend=backend, **options(sshd, known_hosts=str(known_hosts))):
        pass  # now known: no option needed


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_host_key_is_refused_even_when_accepting_new_ones(sshd, endpoint, tmp_path, backend):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(HostKeyChanged, match="does not match"):
        open_tunnel(endpoint, sshd.target, backend=backend, accept_new_host_key=True, **options(sshd, known_hosts=str(known_hosts)))


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_ssh_port_and_refused_server_port(sshd, endpoint, backend):
    started = time.monotonic()
    with pytest.raises(TunnelUnreachable, match="refused"):
        open_tunnel(endpoint, f"{sshd.user}@127.0.0.1:{free_port()}", backend=backend, **options(sshd))
    with pytest.raises(TunnelTargetRefused, match="could not connect"):
        open_tunnel(f"tcp://127.0.0.1:{free_port()}", sshd.target, backend=backend, **options(sshd))
    assert time.monotonic() - started < 5 and ssh_children() == [] and tunnel_threads() == []


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_sshd_killed_mid_session_ends_the_pending_request(sshd, start_server, astronaut, backend):
    server = start_server("--workers", "1")
    big = np.tile(astronaut, (2, 2, 1))  # about 6 s of denoise: still pending when sshd dies
    client = Client(server.endpoint, timeout=4.0, ssh=sshd.target, ssh_key=sshd.key, ssh_known_hosts=sshd.known_hosts, ssh_backend=backend)
    try:
        (tunnel,) = client.tunnels
        assert client.ping() > 0
        future = client.submit(big, SLOW)
        wait_until(lambda: holds(server.endpoint, running=1, queued=0), what="the server taking the request")
        started = time.monotonic()
        sshd.kill()
        with pytest.raises(TunnelDied):  # at the request's deadline, the dead tunnel is named as the cause
            future.result(timeout=10)
        assert time.monotonic() - started < 4.0 + 1.0
        wait_until(lambda: not tunnel.alive(), 5, "the tunnel noticing its death")
        with pytest.raises(TunnelDied):
            tunnel.check()
    finally:
        client.close()
        sshd.restart()
    assert ssh_children() == [] and tunnel_threads() == []


@pytest.mark.sshd
def test_openssh_child_is_ended_at_interpreter_exit(sshd, endpoint):
    script = (
        "import sys; from zmqproc.tunnel import open_tunnel\n"
        "t = open_tunnel(sys.argv[1], sys.argv[2], key=sys.argv[3], known_hosts=sys.argv[4], backend='openssh')\n"
        "print(t.pid, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, endpoint, sshd.target, sshd.key, sshd.known_hosts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid = int(out.stdout)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 2, "the ssh child ending with its interpreter")


@pytest.mark.sshd
def test_cli_process_through_ssh(sshd, endpoint, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = ["process", "sample:astronaut", "-o", str(out), "--op", "invert", "--server", endpoint, "--ssh", sshd.target]
    assert main([*args, "--ssh-key", sshd.key, "--ssh-known-hosts", sshd.known_hosts, "--ssh-backend", "paramiko"]) == 0
    assert out.stat().st_size > 0 and "wrote" in capsys.readouterr().out
    assert main([*args, "--ssh-key", sshd.wrong_key, "--ssh-known-hosts", sshd.known_hosts]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("zmqproc: ") and "refused the login" in err and len(err.splitlines()) == 1


@pytest.mark.sshd
def test_key_and_known_hosts_paths_expand_the_home_directory(sshd, endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "id").write_bytes(Path(sshd.key).read_bytes())
    (tmp_path / "kh").write_text(Path(sshd.known_hosts).read_text())
    with open_tunnel(endpoint, sshd.target, key="~/id", known_hosts="~/kh", backend="paramiko", timeout=5) as tunnel:
        assert tunnel.alive()
