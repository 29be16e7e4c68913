"""The tunnel's rules on their own: targets, options, backend choice, ssh's command line and words, key files, reopening."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from zmqproc.endpoints import Endpoint
from zmqproc.errors import (
    HostKeyChanged,
    HostKeyUnknown,
    InvalidEndpoint,
    TunnelAuthFailed,
    TunnelDied,
    TunnelError,
    TunnelKeyLocked,
    TunnelTargetRefused,
    TunnelUnreachable,
)
from zmqproc.ssh.rules import (
    Reopen,
    SshOptions,
    SshTarget,
    choose_backend,
    key_is_encrypted,
    key_locked,
    openssh_command,
    openssh_version,
    parse_ssh_target,
    server_endpoint,
    ssh_failure,
)

TCP = Endpoint("tcp", "127.0.0.1", 5555)
IPC = Endpoint("ipc", path="/run/zmqproc/zmqproc.sock")
NEW = (9, 2)


def test_parse_ssh_target():
    assert parse_ssh_target("ann@example.org:2222") == ("ann", "example.org", 2222)
    assert parse_ssh_target("ann@[::1]:2222") == SshTarget("ann", "::1", 2222)
    assert parse_ssh_target("bob@host") == ("bob", "host", 22)
    assert parse_ssh_target("host")[1:] == ("host", 22)
    assert str(parse_ssh_target("ann@[::1]:2222")) == "ann@[::1]:2222"
    for bad in ("", "ann@", "ann@host:port", "ann@host:22:33", "ann@host:0", "ann@host:70000"):
        with pytest.raises(ValueError):
            parse_ssh_target(bad)


def test_server_endpoint_takes_tcp_and_absolute_unix_sockets():
    assert server_endpoint("tcp://127.0.0.1:5555") == TCP
    assert server_endpoint("tcp://[::1]:5555") == Endpoint("tcp", "::1", 5555)
    assert server_endpoint("ipc:///run/zmqproc/zmqproc.sock") == IPC
    for bad, words in (("127.0.0.1:5555", "write tcp://"), ("tcp://*:5555", "not tcp://HOST:PORT"), ("ipc://@abstract", "absolute path")):
        with pytest.raises(InvalidEndpoint, match=words):
            server_endpoint(bad)


def test_options_keep_secrets_out_of_their_repr_and_check_what_they_can():
    options = SshOptions("ann@gw", key="/k", password="hunter2", key_passphrase="open sesame")
    assert "hunter2" not in repr(options) and "open sesame" not in repr(options) and "/k" in repr(options)
    assert options.ssh_target == ("ann", "gw", 22) and options.has_secrets and not SshOptions("gw").has_secrets
    with pytest.raises(ValueError, match="unknown SSH backend"):
        SshOptions("gw", backend="putty")
    with pytest.raises(ValueError, match="SSH target"):
        SshOptions("ann@")
    with pytest.raises(ValueError, match="positive"):
        SshOptions("gw", keepalive=0)


def test_openssh_version():
    assert openssh_version("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026") == (9, 2)
    assert openssh_version("OpenSSH_for_Windows_8.1p1, LibreSSL 3.0.2") == (8, 1)
    assert openssh_version("Dropbear v2022.83") is None


def test_choose_backend():
    keys, password, passphrase = SshOptions("gw"), SshOptions("gw", password="pw"), SshOptions("gw", key_passphrase="pp")
    assert choose_backend(keys, TCP, NEW, True) == "openssh"
    assert choose_backend(password, TCP, NEW, True) == choose_backend(passphrase, TCP, NEW, True) == "paramiko"
    assert choose_backend(keys, TCP, None, True) == choose_backend(keys, TCP, (6, 6), True) == "paramiko"
    assert choose_backend(keys, TCP, NEW, False) == "paramiko"  # no Unix sockets: paramiko's loopback port
    assert choose_backend(SshOptions("gw", backend="paramiko"), TCP, NEW, True) == "paramiko"
    assert choose_backend(keys, IPC, NEW, True) == "openssh"  # a Unix socket at the far end: OpenSSH only
    for options, remote, version, unix, words in [
        (SshOptions("gw", backend="openssh", password="pw"), TCP, NEW, True, "keys and ssh-agent only"),
        (SshOptions("gw", backend="openssh", key_passphrase="pp"), TCP, NEW, True, "keys and ssh-agent only"),
        (SshOptions("gw", backend="openssh"), TCP, None, True, "on PATH"),
        (SshOptions("gw", backend="openssh"), TCP, (6, 6), True, ">= 6.7"),
        (SshOptions("gw", backend="openssh"), TCP, NEW, False, "lacks"),
        (SshOptions("gw", backend="paramiko"), IPC, NEW, True, "needs the openssh backend"),
        (password, IPC, NEW, True, "far end needs it"),
    ]:
        with pytest.raises(ValueError, match=words):
            choose_backend(options, remote, version, unix)


def test_openssh_command_listens_owner_only_never_prompts_and_exits_on_failure():
    options = SshOptions("ann@gw:2222", key="/k", known_hosts="/kh", timeout=7, keepalive=5)
    cmd = openssh_command("ssh", NEW, "/run/user/1/zmqproc-x/1.sock", Endpoint("tcp", "10.0.0.5", 5555), options)
    assert cmd[:7] == ["ssh", "-N", "-T", "-L", "/run/user/1/zmqproc-x/1.sock:10.0.0.5:5555", "-p", "2222"]
    assert cmd[-2:] == ["--", "ann@gw"] and cmd[cmd.index("-i") : cmd.index("-i") + 2] == ["-i", "/k"]
    expected = [
        "BatchMode=yes",
        "ExitOnForwardFailure=yes",
        "StreamLocalBindMask=0177",
        "StreamLocalBindUnlink=yes",
        "StrictHostKeyChecking=yes",
        'UserKnownHostsFile="/kh"',
        "ConnectTimeout=7",
        "ServerAliveInterval=5",
        "ServerAliveCountMax=3",
        "IdentitiesOnly=yes",
        "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    ]
    assert all(option in cmd for option in expected)
    new = openssh_command("ssh", (8, 0), "/p/1.sock", Endpoint("tcp", "::1", 5), SshOptions("a@h", accept_new_host_key=True, keepalive=0.2))
    assert "StrictHostKeyChecking=accept-new" in new and "/p/1.sock:[::1]:5" in new and "-i" not in new
    assert "ServerAliveInterval=1" in new and not any(arg.startswith("Ciphers") for arg in new)  # 8.0 lacks Ciphers=^
    unix = openssh_command("ssh", NEW, "/p/1.sock", IPC, SshOptions("a@h"))
    assert "/p/1.sock:/run/zmqproc/zmqproc.sock" in unix


def test_openssh_command_is_what_this_ssh_accepts():
    """ssh -G parses the options (and prints the result) without connecting: no option is misspelt or unknown."""
    cmd = openssh_command("ssh", NEW, "/tmp/zmqproc-x/1.sock", TCP, SshOptions("ann@gw:2222", key="/k", known_hosts="/kh"))
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client")
    shown = subprocess.run([cmd[0], "-G", *cmd[1:]], capture_output=True, text=True, timeout=10)
    assert shown.returncode == 0, shown.stderr
    assert "streamlocalbindunlink yes" in shown.stdout and "batchmode yes" in shown.stdout


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("root@127.0.0.1: Permission denied (publickey).\n", TunnelAuthFailed),
        ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\n", HostKeyUnknown),
        ("Host key verification failed.\n", HostKeyUnknown),
        ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n", HostKeyChanged),
        ("ssh: connect to host 127.0.0.1 port 1: Connection refused\n", TunnelUnreachable),
        ("ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n", TunnelUnreachable),
        ("Connection to 127.0.0.1 closed by remote host.\n", TunnelUnreachable),
        ("channel 2: open failed: connect failed: Connection refused\n", TunnelTargetRefused),
        ("unix_listener: cannot bind to path /x/1.sock: Permission denied\n", TunnelError),
        ("something new\n", TunnelError),
    ],
)
def test_ssh_failure_maps_stderr_to_typed_errors(stderr, error):
    err = ssh_failure(stderr, "root@gw", "tcp://127.0.0.1:5555")
    assert type(err) is error and ("root@gw" in str(err) or "local socket" in str(err))


def test_a_refused_login_with_an_encrypted_key_asks_for_its_passphrase():
    locked = key_locked("/k", TunnelAuthFailed("root@gw refused the login"))
    assert isinstance(locked, TunnelKeyLocked) and isinstance(locked, TunnelAuthFailed)
    assert "refused the login" in str(locked) and "passphrase" in str(locked) and "/k" in str(locked)


@pytest.mark.parametrize(
    ("fmt", "passphrase", "encrypted"),
    [
        ("openssh", "", False),
        ("openssh", "open sesame", True),
        ("PEM", "", False),
        ("PEM", "open sesame", True),
        ("PKCS8", "open sesame", True),
    ],
)
def test_key_is_encrypted_knows_the_key_formats_ssh_keygen_writes(tmp_path, fmt, passphrase, encrypted):
    key = tmp_path / "id"
    kind = ["-t", "ed25519"] if fmt == "openssh" else ["-t", "rsa", "-b", "1024", "-m", fmt]
    subprocess.run(["ssh-keygen", "-q", *kind, "-N", passphrase, "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    assert key_is_encrypted(key.read_bytes()) is encrypted
    assert not key_is_encrypted(b"not a key") and not key_is_encrypted(
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n-----END OPENSSH PRIVATE KEY-----"
    )


def test_reopen_backs_off_to_a_cap_and_stops_at_a_final_refusal():
    reopen = Reopen(first=0.25, cap=2.0)
    died = TunnelDied("gone")
    assert [reopen.delay(died) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert reopen.delay(TunnelUnreachable("refused")) == 2.0 and reopen.delay(TunnelTargetRefused("server down")) == 2.0
    reopen.opened()
    assert reopen.delay(died) == 0.25
    for final in (TunnelAuthFailed("no"), TunnelKeyLocked("locked"), HostKeyChanged("changed"), HostKeyUnknown("unknown")):
        assert reopen.delay(final) is None


def test_no_paramiko_import():
    """The rules load without paramiko (the CLI and the viewer use them; so does the OpenSSH backend)."""
    code = "import sys, zmqproc.ssh.tunnel, zmqproc.ssh.rules; assert 'paramiko' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
