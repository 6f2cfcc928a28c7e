"""The ssh command line the OpenSSH transport builds, and how it reads ssh's failures.

No ssh runs here: command_line() is pure, classify() reads recorded OpenSSH 9.2 messages.
"""

from __future__ import annotations

import shlex

import pytest

from clusterkit.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    HostKeyError,
)
from clusterkit.models import Node
from clusterkit.transport import env_argv
from clusterkit.transport.openssh import OpenSSHTransport, classify, parse_jump


def opt(argv: list[str], name: str) -> list[str]:
    """Values of every ``-o Name=value`` before ``--``."""
    head = argv[: argv.index("--")]
    return [head[i + 1].split("=", 1)[1] for i, a in enumerate(head[:-1])
            if a == "-o" and head[i + 1].split("=", 1)[0] == name]


def flag(argv: list[str], name: str) -> list[str]:
    head = argv[: argv.index("--")]
    return [head[i + 1] for i, a in enumerate(head[:-1]) if a == name]


def test_strict_batch_and_no_tty_always():
    t = OpenSSHTransport()
    argv = t.command_line(Node(name="gpu-001"), ["clusterkit", "node-check"], timeout=60)
    assert argv[0] == "ssh"
    assert opt(argv, "BatchMode") == ["yes"]
    assert opt(argv, "StrictHostKeyChecking") == ["yes"]
    assert "-T" in argv[: argv.index("--")]
    assert opt(argv, "ConnectTimeout") == ["10"]
    assert opt(argv, "ServerAliveInterval") and opt(argv, "ServerAliveCountMax") == ["3"]
    assert "-F" not in argv and "-l" not in argv and "-i" not in argv and "-p" not in argv
    # host and command come after "--": nothing after it is read as an option
    assert argv[-3:] == ["--", "gpu-001", "clusterkit node-check"]


def test_accept_new_only_on_opt_in():
    node = Node(name="gpu-001")
    assert opt(OpenSSHTransport(accept_new=False).command_line(node, ["true"]),
               "StrictHostKeyChecking") == ["yes"]
    assert opt(OpenSSHTransport(accept_new=True).command_line(node, ["true"]),
               "StrictHostKeyChecking") == ["accept-new"]
    # nothing anywhere turns checking off
    argv = OpenSSHTransport(accept_new=True).command_line(node, ["true"])
    assert not any(a.lower().replace(" ", "") in ("stricthostkeychecking=no", "stricthostkeychecking=off")
                   for a in argv)


def test_connect_timeout_never_exceeds_the_deadline_and_is_whole_seconds():
    t = OpenSSHTransport(connect_timeout=10)
    assert opt(t.command_line(Node(name="n"), ["true"], timeout=3.2), "ConnectTimeout") == ["4"]
    assert opt(t.command_line(Node(name="n"), ["true"], timeout=0.01), "ConnectTimeout") == ["1"]
    assert opt(OpenSSHTransport(connect_timeout=1.5).command_line(Node(name="n"), ["true"]),
               "ConnectTimeout") == ["2"]


def test_config_identity_port():
    t = OpenSSHTransport(ssh_config="/etc/ck/ssh.conf", identity="/keys/id")
    argv = t.command_line(Node(name="gpu-031", host="10.1.4.31", port=2222), ["true"])
    assert flag(argv, "-F") == ["/etc/ck/ssh.conf"]
    assert flag(argv, "-i") == ["/keys/id"]
    assert flag(argv, "-p") == ["2222"]
    assert argv[-2] == "10.1.4.31"  # the address, not the report name


def test_login_user_precedence():
    node_with_user = Node(name="gpu-001", user="inventory-user")
    # explicit --user beats the inventory's user ...
    assert flag(OpenSSHTransport(user="cli-user").command_line(node_with_user, ["true"]), "-l") == ["cli-user"]
    # ... which beats ssh_config (ssh's own precedence: the command line wins over the file)
    assert flag(OpenSSHTransport().command_line(node_with_user, ["true"]), "-l") == ["inventory-user"]
    # and with neither, ssh_config (or the local user) decides: no -l at all
    assert flag(OpenSSHTransport().command_line(Node(name="gpu-001"), ["true"]), "-l") == []


@pytest.mark.parametrize("argv", [
    ["clusterkit", "node-check", "--profile", "p';touch /tmp/pwned;'.yaml"],
    ["echo", "$(touch /tmp/pwned)", "`id`", "a b", "'", '"', ";", "|", "&&", "\n", "*"],
    ["-oProxyCommand=touch /tmp/pwned"],
])
def test_remote_command_is_argv_quoted(argv):
    env = {"CLUSTERKIT_NODE": "gpu-001;reboot", "X": "$(id)"}
    cmd = OpenSSHTransport().command_line(Node(name="gpu-001"), argv, env)
    # one argument after the host, and the remote shell splits it back into exactly the argv
    assert cmd[-3:-1] == ["--", "gpu-001"]
    assert shlex.split(cmd[-1]) == env_argv(argv, env)
    assert shlex.split(cmd[-1])[:3] == ["env", "CLUSTERKIT_NODE=gpu-001;reboot", "X=$(id)"]


@pytest.mark.parametrize("host", [
    "-oProxyCommand=touch /tmp/pwned", "gpu-001;reboot", "gpu 001", "$(id)", "`id`", "a|b", "a\nb", "gpu-001\n",
    "user@gpu-001",
])
def test_hostile_addresses_are_refused_not_passed(host):
    t = OpenSSHTransport()
    with pytest.raises(ConnectError) as e:
        t.command_line(Node(name="gpu-001", host=host), ["true"])
    assert e.value.cause == "invalid host name"


@pytest.mark.parametrize("user", ["-oProxyCommand=x", "a;b", "$(id)", "a b", "x`id`", "ops\n"])
def test_hostile_users_are_refused(user):
    with pytest.raises(ConnectError):
        OpenSSHTransport(user=user).command_line(Node(name="gpu-001"), ["true"])
    with pytest.raises(ConnectError):
        OpenSSHTransport().command_line(Node(name="gpu-001", user=user), ["true"])


@pytest.mark.parametrize("host", ["gpu-001", "10.1.4.31", "fe80::1%eth0", "node_7.rack-2.example.org"])
def test_plain_addresses_pass(host):
    assert OpenSSHTransport().command_line(Node(name="n", host=host), ["true"])[-2] == host


def test_parse_jump():
    assert parse_jump("bastion") == [(None, "bastion", None)]
    assert parse_jump("ops@b1:2222,b2") == [("ops", "b1", 2222), (None, "b2", None)]
    assert parse_jump("ssh://ops@b1:22") == [("ops", "b1", 22)]
    assert parse_jump("[fe80::1]:2200") == [(None, "fe80::1", 2200)]


# ----------------------------------------------------------------------------- classify
def cls(stderr: str, stdout: str = "", rc: int = 255):
    return classify(rc, stdout, stderr, node="gpu-001", where="gpu-001", user="ops")


CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key for 127.0.30.1 has changed and you have requested strict checking.
Host key verification failed.
"""


@pytest.mark.parametrize("stderr,kind,cause", [
    (CHANGED, HostKeyError, "changed host key"),
    ("No ED25519 host key is known for 127.0.30.1 and you have requested strict checking.\n"
     "Host key verification failed.\n", HostKeyError, "unknown host key"),
    ("ops@127.0.30.1: Permission denied (publickey).\n", AuthError, "authentication refused (publickey)"),
    ("ssh: connect to host 127.0.30.50 port 22: Connection refused\n", ConnectError, "connection refused"),
    ("ssh: Could not resolve hostname nx.invalid: Name or service not known\n", ConnectError,
     "cannot resolve host"),
    ("Connection timed out during banner exchange\nConnection to 127.0.30.6 port 22 timed out\n",
     ConnectError, "no SSH banner"),
    ("ssh: connect to host 10.9.9.9 port 22: Connection timed out\n", ConnectError, "connect timed out"),
    # a bastion's MaxStartups drop, seen through ProxyJump
    ("kex_exchange_identification: Connection closed by remote host\n"
     "Connection closed by UNKNOWN port 65535\n", ConnectError, "connection closed during SSH handshake"),
    ("channel 0: open failed: connect failed: Connection refused\nstdio forwarding failed\n"
     "kex_exchange_identification: Connection closed by remote host\n", ConnectError, "connection refused"),
    ("Connection to 127.0.30.2 closed by remote host.\r\n", ConnectionLost,
     "connection lost while the command ran"),
    ("client_loop: send disconnect: Broken pipe\n", ConnectionLost, "connection lost while the command ran"),
    ("Timeout, server 127.0.30.2 not responding.\n", ConnectionLost, "connection lost while the command ran"),
])
def test_ssh_failures_map_onto_the_error_tree(stderr, kind, cause):
    err = cls(stderr)
    assert type(err) is kind and err.cause == cause
    assert "\n" not in str(err)
    assert "127.0.30" not in err.cause and "gpu-001" not in err.cause  # causes group nodes


def test_remote_exit_255_is_the_commands_own():
    assert cls("err\n", "out\n") is None  # `exit 255` on the node, no ssh message
    assert cls("cat: /x: Permission denied\n") is None  # not ssh's format
    assert classify(1, "", "Host key verification failed.\n", node="n", where="n") is None


def test_auth_hint_replaces_the_bare_refusal():
    err = classify(255, "", "ops@h: Permission denied (publickey).\n", node="n", where="h", user="ops",
                   auth_hint="identity /k is passphrase-protected and no agent holds it; load it with ssh-add")
    assert isinstance(err, AuthError) and "passphrase-protected" in str(err) and "ssh-add" in str(err)
    assert err.cause == "passphrase-protected identity not in agent"


def test_output_rides_on_the_error():
    err = cls("Connection to h closed by remote host.\n", "partial\n")
    assert isinstance(err, ConnectionLost) and err.stdout == "partial\n"
