"""SSH tunnels end to end, both backends, through a real OpenSSH sshd to real server processes.

Owner-only local ends (another local user cannot connect; nothing listens on TCP), no ssh left after a SIGKILL,
self-healing after sshd's sessions die, and the refusals that end it; the classic failures to open.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, free_port, require_or_skip, wait_until
from tests.procfs import descendants
from tests.rawwire import holds
from zmqproc import Client
from zmqproc.client.cli import main
from zmqproc.errors import HostKeyChanged, HostKeyUnknown, TunnelAuthFailed, TunnelDied, TunnelTargetRefused, TunnelUnreachable
from zmqproc.ssh.rules import SshOptions
from zmqproc.ssh.tunnel import open_tunnel

BACKENDS = ["paramiko", "openssh"]
SLOW = "denoise:h=10,search_window=35,template_window=21"


def processes(name: str) -> list[int]:
    """Live processes called ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.index("(") + 1 : stat.rindex(")")] == name and stat[stat.rindex(")") + 2] != "Z":
                found.append(int(entry.name))
    return found


def ssh_children() -> list[int]:
    """``ssh`` processes whose parent is this test process."""
    mine = []
    for pid in processes("ssh"):
        try:
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                mine.append(pid)
        except OSError:
            continue
    return mine


def tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("zmqproc-tunnel") or type(t).__name__ == "Transport"]


def options(sshd, **extra):
    return {"key": sshd.key, "known_hosts": sshd.known_hosts, "timeout": 5.0, **extra}


def client_of(sshd, endpoint, backend, **extra) -> Client:
    return Client(endpoint, ssh=sshd.target, ssh_key=sshd.key, ssh_known_hosts=sshd.known_hosts, ssh_backend=backend, **extra)


@pytest.fixture
def no_default_logins(tmp_path, monkeypatch):
    """No ~/.ssh keys and no ssh-agent: only what a test passes is offered."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


# -- use ------------------------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_process_through_tunnel(sshd, endpoint, astronaut, backend):
    with client_of(sshd, endpoint, backend) as client:
        (tunnel,) = client.tunnels
        assert tunnel.backend == backend and tunnel.local_endpoint.startswith("ipc://") and tunnel.state == "open" and tunnel.alive()
        np.testing.assert_array_equal(client.process(astronaut, "invert"), 255 - astronaut)
        assert client.ping() > 0
    assert tunnel.state == "closed" and not tunnel.alive() and ssh_children() == [] and tunnel_threads() == []
    assert not os.path.exists(tunnel.local_endpoint[len("ipc://") :])
    with pytest.raises(TunnelDied, match="closed"):
        tunnel.check()
    tunnel.close()  # idempotent


@pytest.mark.sshd
def test_auto_picks_openssh_for_keys_and_paramiko_for_secrets(sshd, endpoint):
    with open_tunnel(endpoint, sshd.target, **options(sshd)) as tunnel:
        assert tunnel.backend == "openssh"
    with open_tunnel(endpoint, SshOptions(sshd.target, key=sshd.key, known_hosts=sshd.known_hosts, key_passphrase="")) as tunnel:
        assert tunnel.backend == "paramiko"  # a passphrase (even an empty one) goes to paramiko: ssh's BatchMode takes none


# -- owner only, never orphaned ------------------------------------------------------------------

CLIENT = """
import json, sys
from zmqproc import Client
endpoint, target, key, known_hosts, backend = sys.argv[1:]
client = Client(endpoint, ssh=target, ssh_key=key, ssh_known_hosts=known_hosts, ssh_backend=backend)
client.ping()
print(json.dumps({"local": client.tunnels[0].local_endpoint}), flush=True)
sys.stdin.read()
"""


def start_client_process(sshd, endpoint, backend) -> tuple[subprocess.Popen[str], str]:
    """A client in a process of its own (what it listens on is all its own): (process, local socket path)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, endpoint, sshd.target, sshd.key, sshd.known_hosts, backend],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the client process did not open its tunnel"
    return proc, json.loads(line)["local"][len("ipc://") :]


def listening(pids: list[int]) -> tuple[list[str], list[int]]:
    """The Unix socket paths and TCP ports the processes ``pids`` listen on (from /proc/net/{unix,tcp,tcp6})."""
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir() if fds.exists() else []:
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()  # Num RefCount Protocol Flags Type St Inode [Path]
        if fields[6] in inodes and int(fields[3], 16) & 0x10000 and len(fields) > 7:  # __SO_ACCEPTCON: listening
            paths.append(fields[7])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()  # sl local_address rem_address st ... inode
            if fields[3] == "0A" and fields[9] in inodes:  # TCP_LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return paths, ports


def connect_as(user: str | None, kind: str, where: str) -> str:
    """What happens when ``user`` (None: this one) connects to a Unix socket path or a 127.0.0.1 port."""
    code = (
        "import socket, sys\n"
        "kind, where = sys.argv[1:]\n"
        "s = socket.socket(socket.AF_UNIX) if kind == 'unix' else socket.socket()\n"
        "try:\n"
        "    s.connect(where if kind == 'unix' else ('127.0.0.1', int(where)))\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, "/usr/bin/python3", "-c", code, kind, where], capture_output=True, text=True, timeout=20).stdout.strip()


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_another_local_user_cannot_connect_to_anything_the_client_listens_on(sshd, endpoint, backend):
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        require_or_skip("sshd", "a second local user, nobody, is needed to check who can reach a tunnel")
    if shutil.which("runuser") is None or not os.path.exists("/usr/bin/python3"):
        require_or_skip("sshd", "runuser and /usr/bin/python3 are needed to connect as another local user")
    proc, path = start_client_process(sshd, endpoint, backend)
    try:
        unix_paths, tcp_ports = listening([proc.pid, *descendants(proc.pid)])
        assert tcp_ports == []  # no TCP port at all, loopback or not
        assert unix_paths == [path]  # the tunnel's socket, in the ssh child (openssh) or the client (paramiko)
        assert connect_as(None, "unix", path) == "connected"  # its owner can
        assert connect_as("nobody", "unix", path) == "PermissionError"
        mode = os.stat(os.path.dirname(path)).st_mode & 0o777
        assert mode == 0o700 and os.stat(path).st_mode & 0o777 == 0o600
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)
    assert not os.path.exists(path)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_of_the_client_leaves_no_ssh_and_no_socket_directory(sshd, endpoint, backend):
    proc, path = start_client_process(sshd, endpoint, backend)
    children = [pid for pid in descendants(proc.pid) if pid in processes("ssh")]
    assert len(children) == (1 if backend == "openssh" else 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not set(children) & set(processes("ssh")), 3, "the ssh child ending with its client")
    wait_until(lambda: not os.path.exists(os.path.dirname(path)), 3, "the socket directory going")


@pytest.mark.sshd
def test_the_openssh_child_ends_at_interpreter_exit(sshd, endpoint):
    script = (
        "import sys; from zmqproc.ssh.tunnel import open_tunnel\n"
        "t = open_tunnel(sys.argv[1], sys.argv[2], key=sys.argv[3], known_hosts=sys.argv[4], backend='openssh')\n"
        "print(t.pid, t.local_endpoint, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, endpoint, sshd.target, sshd.key, sshd.known_hosts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, local = out.stdout.split()
    wait_until(lambda: int(pid) not in processes("ssh"), 2, "the ssh child ending with its interpreter")
    assert not os.path.exists(local[len("ipc://") :])


# -- self-healing --------------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tunnel_reopens_by_itself_after_sshd_died_for_3_s(sshd, endpoint, astronaut, backend):
    client = client_of(sshd, endpoint, backend, timeout=10)
    try:
        (tunnel,) = client.tunnels
        states: list[str] = []
        tunnel.on_state_change = lambda t, state: states.append(state)
        first_ssh = tunnel.pid
        np.testing.assert_array_equal(client.process(astronaut, "invert"), 255 - astronaut)
        sshd.kill()
        wait_until(lambda: tunnel.state == "reconnecting", 5, "the tunnel noticing the dropped session")
        with pytest.raises(TunnelDied, match="reconnecting"):
            tunnel.check()
        during = client.submit(astronaut, "invert", timeout=20)  # asked while sshd is down
        time.sleep(3)  # sshd stays down for 3 s: the scenario itself, not a wait for a condition
        sshd.start()
        restarted = time.monotonic()
        np.testing.assert_array_equal(client.process(astronaut, "invert", timeout=10), 255 - astronaut)
        np.testing.assert_array_equal(during.result(timeout=10), 255 - astronaut)
        assert time.monotonic() - restarted < 10
        assert tunnel.state == "open" and tunnel.error is None and states == ["reconnecting", "open"]
        assert client.endpoints == [endpoint] and tunnel.local_endpoint.startswith("ipc://")
        if backend == "openssh":
            assert tunnel.pid not in (None, first_ssh) and len(ssh_children()) == 1
    finally:
        client.close()
        if sshd.proc is None:
            sshd.start()
    assert ssh_children() == [] and tunnel_threads() == []


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_silent_session_is_noticed_by_keepalives_and_replaced(sshd, endpoint, backend):
    """sshd's session stopped (SIGSTOP): TCP stays up, nothing answers, like a network that drops everything."""
    with open_tunnel(endpoint, sshd.target, **options(sshd, backend=backend, keepalive=1.0)) as tunnel:
        stopped = sshd.kill_sessions(signal.SIGSTOP)
        try:
            wait_until(lambda: tunnel.state == "reconnecting", 10, "keepalives finding the session silent")
            wait_until(lambda: tunnel.state == "open", 10, "a new session")
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        with Client(tunnel.local_endpoint, timeout=5) as client:
            assert client.ping() > 0


@pytest.mark.sshd
def test_a_password_asked_once_logs_in_again_after_a_drop_and_a_changed_one_ends_it(sshd_password, endpoint, no_default_logins):
    sshd = sshd_password
    opened = {"known_hosts": sshd.known_hosts, "timeout": 5.0, "password": sshd.password, "backend": "paramiko"}
    with open_tunnel(endpoint, sshd.target, **opened) as tunnel:
        assert sshd.logins("Accepted password") == 1
        sshd.kill_sessions()
        wait_until(lambda: sshd.logins("Accepted password") == 2 and tunnel.state == "open", 10, "the same password logging in again")
        sshd.set_password("changed meanwhile")
        sshd.kill_sessions()
        wait_until(lambda: tunnel.state == "failed", 10, "the refused reopening")
        assert isinstance(tunnel.error, TunnelAuthFailed) and "refused the login" in str(tunnel.error)
        with pytest.raises(TunnelAuthFailed):
            tunnel.check()
        wait_until(lambda: "zmqproc-tunnel-paramiko" not in tunnel_threads(), 5, "the tunnel's thread ending")
        assert sshd.logins("Failed password") == 1  # tried once, never again
        assert not os.path.exists(tunnel.local_endpoint[len("ipc://") :])  # nothing listens any more


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_changed_host_key_ends_reopening(sshd_password, endpoint, backend):
    sshd = sshd_password
    with open_tunnel(endpoint, sshd.target, **options(sshd, backend=backend)) as tunnel:
        sshd.new_host_key()
        sshd.restart()
        wait_until(lambda: tunnel.state == "failed", 10, "the refused reopening")
        assert isinstance(tunnel.error, HostKeyChanged)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_sshd_down_for_good_fails_a_pending_request_at_its_deadline(sshd, start_server, astronaut, backend):
    server = start_server("--workers", "1")
    big = np.tile(astronaut, (2, 2, 1))  # about 6 s of denoise: still pending when sshd dies
    client = client_of(sshd, server.endpoint, backend, timeout=4.0)
    try:
        (tunnel,) = client.tunnels
        assert client.ping() > 0
        future = client.submit(big, SLOW)
        wait_until(lambda: holds(server.endpoint, running=1, queued=0), what="the server taking the request")
        started = time.monotonic()
        sshd.kill()
        with pytest.raises(TunnelDied, match="reconnecting"):  # at the request's deadline, the dropped tunnel is named as the cause
            future.result(timeout=10)
        assert time.monotonic() - started < 4.0 + 1.0 and tunnel.state == "reconnecting"
    finally:
        client.close()
        sshd.restart()
    assert ssh_children() == [] and tunnel_threads() == []


# -- refusals and failures to open ----------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_key_is_an_auth_error(sshd, endpoint, backend):
    started = time.monotonic()
    with pytest.raises(TunnelAuthFailed, match="refused the login"):
        open_tunnel(endpoint, sshd.target, backend=backend, **options(sshd, key=sshd.wrong_key))
    assert time.monotonic() - started < 5 and ssh_children() == [] and tunnel_threads() == []


@pytest.mark.sshd
def test_a_wrong_password_is_refused_once(sshd_password, endpoint, no_default_logins):
    sshd = sshd_password
    with pytest.raises(TunnelAuthFailed, match="refused the login"):
        open_tunnel(endpoint, sshd.target, password="wrong", known_hosts=sshd.known_hosts, timeout=5.0)
    assert sshd.logins("Failed password") == 1 and tunnel_threads() == []


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


# -- CLI and paths --------------------------------------------------------------------------------


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
def test_cli_takes_the_password_from_the_environment_or_asks_for_it(sshd_password, endpoint, monkeypatch, capsys, no_default_logins):
    sshd = sshd_password
    args = ["ping", "--server", endpoint, "--ssh", sshd.target, "--ssh-known-hosts", sshd.known_hosts, "--timeout", "5"]
    monkeypatch.setenv("ZMQPROC_SSH_PASSWORD", sshd.password)
    assert main(args) == 0
    monkeypatch.delenv("ZMQPROC_SSH_PASSWORD")
    asked: list[str] = []
    monkeypatch.setattr("zmqproc.client.cli.getpass.getpass", lambda prompt: asked.append(prompt) or sshd.password)
    assert main([*args, "--ssh-ask-password"]) == 0 and asked == [f"SSH password for {sshd.target}: "]
    assert main(args) == 1 and "refused the login" in capsys.readouterr().err  # no password: nothing asked unless told
    assert sshd.logins("Accepted password") == 2 and sshd.logins("Failed password") == 0 and len(asked) == 1


@pytest.mark.sshd
def test_key_and_known_hosts_paths_expand_the_home_directory(sshd, endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "id").write_bytes(Path(sshd.key).read_bytes())
    (tmp_path / "kh").write_text(Path(sshd.known_hosts).read_text())
    with open_tunnel(endpoint, sshd.target, key="~/id", known_hosts="~/kh", backend="paramiko", timeout=5) as tunnel:
        assert tunnel.alive()
