"""The OpenSSH transport itself against real sshd nodes: command, environment and exit status,
deadlines with partial output, held stdin, close(), prepare()'s configuration errors, and one
shared connection per jump host."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from clusterkit.errors import CommandTimeout, ConfigError, ConnectionLost
from clusterkit.models import Node
from clusterkit.transport import fan_out
from clusterkit.transport.openssh import OpenSSHTransport


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, ssh_client):
    return ssh_fleet_factory(["ot-01", "ot-02"], env={"CLUSTERKIT_SIM": "builtin"})


@pytest.fixture()
def transport(fleet):
    t = OpenSSHTransport(ssh_config=str(fleet.ssh_config), connect_timeout=5)
    t.prepare([Node(name="ot-01"), Node(name="ot-02")])
    yield t
    t.close()


def test_command_env_and_exit_status(transport, tmp_path):
    marker = tmp_path / "pwned"
    argv = ["sh", "-c", 'echo "$CLUSTERKIT_NODE|$X|$1"; echo err >&2; exit 7', "sh", f"$(touch {marker})"]
    r = transport.run(Node(name="ot-01"), argv, timeout=20, env={"X": f"`touch {marker}`;'"})
    assert (r.rc, r.stdout, r.stderr) == (7, f"ot-01|`touch {marker}`;'|$(touch {marker})\n", "err\n")
    assert r.argv == argv and r.node == "ot-01"
    assert not marker.exists()


def test_exit_255_of_the_command_is_its_own(transport):
    r = transport.run(Node(name="ot-02"), ["sh", "-c", "echo out; exit 255"], timeout=20)
    assert (r.rc, r.stdout) == (255, "out\n")


def test_deadline_keeps_partial_output(transport):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        transport.run(Node(name="ot-01"), ["sh", "-c", "echo started; echo warn >&2; sleep 30"], timeout=1.5)
    assert time.monotonic() - t0 < 4
    assert e.value.stdout == "started\n" and e.value.stderr == "warn\n"
    assert e.value.cause == "did not finish within 1.5s" and not e.value.nothing_ran


def test_hold_stdin_keeps_the_input_open_until_the_command_ends(transport):
    node = Node(name="ot-02")
    # without hold_stdin the command sees end-of-file after the data
    r = transport.run(node, ["sh", "-c", "cat; echo eof"], timeout=20, stdin=b"profile\n")
    assert r.stdout == "profile\neof\n"
    # with it, the data arrives and the input stays open: `cat` never sees end-of-file ...
    with pytest.raises(CommandTimeout) as e:
        transport.run(node, ["sh", "-c", "cat; echo eof"], timeout=2, stdin=b"profile\n", hold_stdin=True)
    assert e.value.stdout == "profile\n"
    # ... while a command that reads what it needs and ends is not held up by it
    r = transport.run(node, ["sh", "-c", "head -n 1; echo done"], timeout=20, stdin=b"profile\n",
                      hold_stdin=True)
    assert (r.rc, r.stdout) == (0, "profile\ndone\n")


def test_close_ends_commands_in_flight(fleet):
    t = OpenSSHTransport(ssh_config=str(fleet.ssh_config))
    out: list[object] = []
    th = threading.Thread(target=lambda: out.append(_outcome(t, Node(name="ot-01"), ["sleep", "30"], 60)))
    th.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    t.close()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 3
    assert isinstance(out[0], ConnectionLost), out


def _outcome(t, node, argv, timeout):
    try:
        return t.run(node, argv, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - the test looks at it
        return e


def test_prepare_resolves_each_address_once(fleet):
    t = OpenSSHTransport(ssh_config=str(fleet.ssh_config))
    nodes = [Node(name="a", host="ot-01"), Node(name="b", host="ot-01"), Node(name="c", host="ot-02")]
    t.prepare(nodes)
    assert t.prepare_stats["hosts"] == 2
    assert t.resolved(nodes[0])["hostname"] == [fleet.nodes["ot-01"].ip]
    t.prepare(nodes)  # cached: a second prepare runs no ssh -G
    assert t.prepare_stats["hosts"] == 0
    t.close()


def _cfg(tmp_path: Path, text: str) -> str:
    p = tmp_path / "cfg"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("case", ["no_config", "no_identity", "bad_option", "bad_port", "kh_directory",
                                  "hostile_host", "hostile_user"])
def test_prepare_refuses_bad_configuration_in_one_line(case, fleet, tmp_path):
    nodes = [Node(name="ot-01")]
    kw: dict = {"ssh_config": str(fleet.ssh_config)}
    if case == "no_config":
        kw["ssh_config"] = str(tmp_path / "missing.conf")
        want = f"ssh config {tmp_path / 'missing.conf'}: no such file"
    elif case == "no_identity":
        kw["identity"] = str(tmp_path / "id_missing")
        want = f"identity {tmp_path / 'id_missing'}: no such file"
    elif case == "bad_option":
        kw["ssh_config"] = _cfg(tmp_path, "Host ot-01\n    HostNmae 127.0.0.1\n")
        want = "Bad configuration option: hostnmae"
    elif case == "bad_port":
        kw["ssh_config"] = _cfg(tmp_path, "Host *\n    Port twenty-two\n")
        want = "Bad port"
    elif case == "kh_directory":
        (tmp_path / "kh").mkdir()
        kw["ssh_config"] = _cfg(tmp_path, f"Host ot-01\n    UserKnownHostsFile {tmp_path / 'kh'}\n")
        want = f"known_hosts {tmp_path / 'kh'}: is a directory"
    elif case == "hostile_host":
        nodes = [Node(name="x", host="-oProxyCommand=touch /tmp/pwned")]
        want = "node x: refusing host"
    else:
        kw["user"] = "ops;reboot"
        want = "--user 'ops;reboot' is not a plain user name"
    t = OpenSSHTransport(**kw)
    with pytest.raises(ConfigError) as e:
        t.prepare(nodes)
    msg = str(e.value)
    assert want in msg and "\n" not in msg, msg
    if case in ("bad_option", "bad_port"):
        assert msg.startswith(f"ssh config {kw['ssh_config']}:")
    t.close()


@pytest.fixture(scope="module")
def jump_fleet(ssh_fleet_factory):
    return ssh_fleet_factory(["jump", "jt-01", "jt-02", "jt-03"], env={"CLUSTERKIT_SIM": "builtin"},
                             bastion="jump")


def test_nodes_behind_one_jump_host_share_one_connection(jump_fleet):
    fleet = jump_fleet
    nodes = [Node(name=n) for n in ("jt-01", "jt-02", "jt-03")]
    logins = fleet.bastion_logins()
    t = OpenSSHTransport(ssh_config=str(fleet.ssh_config), connect_timeout=5)
    t.prepare(nodes)
    wrapper = t._config_file()
    assert wrapper and wrapper != str(fleet.ssh_config)
    tmpdir = os.path.dirname(wrapper)
    assert os.stat(tmpdir).st_mode & 0o777 == 0o700
    text = Path(wrapper).read_text()
    assert "Host jump\n" in text and f'Include "{fleet.ssh_config}"' in text
    out = fan_out(t, nodes, ["sh", "-c", "echo $CLUSTERKIT_NODE"], timeout=30, fanout=8)
    assert {k: getattr(v, "stdout", v) for k, v in out.items()} == {n.name: f"{n.name}\n" for n in nodes}
    assert fleet.bastion_logins() - logins == 1
    pid = t._shared.hops["jump"].pid
    assert pid and os.path.exists(f"/proc/{pid}")
    t.close()
    assert not os.path.exists(tmpdir)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")  # the master is gone with the run


def test_single_node_behind_a_jump_host_needs_no_wrapper(jump_fleet):
    t = OpenSSHTransport(ssh_config=str(jump_fleet.ssh_config), connect_timeout=5)
    t.prepare([Node(name="jt-01")])
    assert t._config_file() == str(jump_fleet.ssh_config)
    assert t.run(Node(name="jt-01"), ["true"], timeout=20).rc == 0
    t.close()
