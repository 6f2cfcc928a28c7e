"""ssh_config and authentication paths of the paramiko transport (``--transport paramiko``),
against real sshd nodes: ProxyJump through another node, --user/--identity given on the command
line, agent keys, a silent host. (tests/integration/test_ssh_sites.py runs the site variants
through both transports.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest


def clusterkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`clusterkit validate …` through the paramiko transport (what this file is about)."""
    if args and args[0] == "validate" and "--transport" not in args:
        args = ("validate", "--transport", "paramiko", *args[1:])
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory):
    return ssh_fleet_factory(["jump-01", "gpu-101", "gpu-102"], env={"CLUSTERKIT_SIM": "builtin"})


def _bare_config(fleet, tmp_path, *, keep_user: bool, keep_identity: bool, extra: str = "") -> str:
    """The fleet's ssh_config without User / IdentityFile lines, plus extra blocks."""
    out = []
    for line in fleet.ssh_config.read_text().splitlines():
        key = line.strip().split(" ", 1)[0].lower()
        if (key == "user" and not keep_user) or (key in ("identityfile", "identitiesonly") and not keep_identity):
            continue
        out.append(line)
    path = tmp_path / "ssh_config"
    path.write_text(extra + "\n" + "\n".join(out) + "\n")
    return str(path)


def test_proxyjump_through_another_node(fleet, tmp_path):
    # "hidden-102" is only reachable through jump-01 in this config; its host key is checked too
    ip = fleet.nodes["gpu-102"].ip
    extra = (f"Host hidden-102\n    HostName {ip}\n    ProxyJump jump-01\n    User {fleet.user}\n"
             f"    IdentityFile {fleet.identity}\n    UserKnownHostsFile {fleet.known_hosts}\n")
    cfg = _bare_config(fleet, tmp_path, keep_user=True, keep_identity=True, extra=extra)
    p = clusterkit("validate", "--nodes", "hidden-102", "--ssh-config", cfg, "--json", "--checks", "gpu.count")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["nodes"][0]["status"] == "pass" and doc["nodes"][0]["checks"][0]["value"] == 8
    # the jump host's sshd saw the forwarded connection: its log has no error and gpu-102 answered
    assert doc["nodes"][0]["facts"]["reported_name"] == "gpu-102"


def test_proxyjump_chain_and_unknown_key_behind_a_jump(fleet, tmp_path):
    ip = fleet.nodes["gpu-102"].ip
    extra = (f"Host two-hops\n    HostName {ip}\n    ProxyJump jump-01,gpu-101\n    User {fleet.user}\n"
             f"    IdentityFile {fleet.identity}\n    UserKnownHostsFile {fleet.known_hosts}\n"
             f"Host no-key\n    HostName {ip}\n    ProxyJump jump-01\n    User {fleet.user}\n"
             f"    IdentityFile {fleet.identity}\n    UserKnownHostsFile {tmp_path}/empty_known_hosts\n")
    (tmp_path / "empty_known_hosts").write_text("")
    cfg = _bare_config(fleet, tmp_path, keep_user=True, keep_identity=True, extra=extra)
    p = clusterkit("validate", "--nodes", "two-hops,no-key", "--ssh-config", cfg, "--json", "--checks", "gpu.count")
    doc = json.loads(p.stdout)
    by = {n["node"]: n for n in doc["nodes"]}
    assert by["two-hops"]["status"] == "pass", by["two-hops"]
    # the target's key is checked even behind a jump host that is itself trusted
    assert by["no-key"]["status"] == "unreachable" and by["no-key"]["error"].startswith("hostkey: unknown host key")
    assert p.returncode == 3


def test_user_and_identity_from_the_command_line(fleet, tmp_path):
    cfg = _bare_config(fleet, tmp_path, keep_user=False, keep_identity=False)
    base = ["validate", "--nodes", "gpu-101", "--ssh-config", cfg, "--json", "--checks", "gpu.count"]
    p = clusterkit(*base, "--user", fleet.user, "--identity", str(fleet.identity), env={"SSH_AUTH_SOCK": ""})
    assert p.returncode == 0, p.stderr
    p = clusterkit(*base, "--user", "nobody-here", "--identity", str(fleet.identity), env={"SSH_AUTH_SOCK": ""})
    doc = json.loads(p.stdout)
    assert p.returncode == 3 and doc["nodes"][0]["error"].startswith("auth: authentication failed")


def test_agent_keys(fleet, tmp_path):
    agent = subprocess.run(["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")], capture_output=True, text=True)
    if agent.returncode != 0:
        pytest.skip("ssh-agent unavailable")
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = {"SSH_AUTH_SOCK": str(tmp_path / "agent.sock")}
    try:
        subprocess.run(["ssh-add", str(fleet.identity)], check=True, capture_output=True, env={**os.environ, **env})
        cfg = _bare_config(fleet, tmp_path, keep_user=True, keep_identity=False)
        p = clusterkit("validate", "--nodes", "gpu-[101-102]", "--ssh-config", cfg, "--json",
                       "--checks", "gpu.count", env=env)
        assert p.returncode == 0, p.stderr
        assert [n["status"] for n in json.loads(p.stdout)["nodes"]] == ["pass", "pass"]
    finally:
        os.kill(pid, signal.SIGTERM)


def test_silent_host_respects_connect_timeout(tmp_path):
    """A host that accepts TCP but never speaks SSH: unreachable after --connect-timeout, quietly."""
    import socket
    import threading
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host silent\n    HostName 127.0.0.1\n    Port {port}\n"
                   f"    UserKnownHostsFile {tmp_path}/kh\n")
    try:
        t0 = time.monotonic()
        p = clusterkit("validate", "--nodes", "silent", "--ssh-config", str(cfg), "--json",
                       "--connect-timeout", "1.5", "--timeout", "30")
        took = time.monotonic() - t0
    finally:
        stop.set()
        th.join()
        for c in held:
            c.close()
        srv.close()
    doc = json.loads(p.stdout)
    assert p.returncode == 3 and doc["nodes"][0]["status"] == "unreachable"
    assert "banner" in doc["nodes"][0]["error"].lower() or "timed out" in doc["nodes"][0]["error"]
    assert took < 10, took
    assert "Traceback" not in p.stderr and "Exception" not in p.stderr


# ----------------------------------------------------------------------------- the transport API
# What `run` promises (clusterkit/transport/__init__.py), checked on the paramiko transport
# itself against real sshd nodes.

@pytest.fixture(scope="module")
def api(fleet):
    from clusterkit.transport.ssh import SSHTransport

    t = SSHTransport(ssh_config=str(fleet.ssh_config), connect_timeout=5)
    yield t
    t.close()


def _node(name: str):
    from clusterkit.models import Node

    return Node(name=name)


def test_env_reaches_the_command_as_values(api):
    r = api.run(_node("gpu-101"), ["sh", "-c", 'printf "%s|%s|%s" "$A" "$B" "$CLUSTERKIT_NODE"'],
                timeout=20, env={"A": "x y", "B": "$(id) ; `id`"})
    assert (r.rc, r.stdout) == (0, "x y|$(id) ; `id`|gpu-101")


def test_exit_status_signal_and_stderr(api):
    r = api.run(_node("gpu-101"), ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=20)
    assert (r.rc, r.stdout, r.stderr) == (7, "out\n", "err\n")
    # the login shell that runs the command is killed: sshd reports exit-signal TERM, which
    # becomes -15, as the local transport reports a signal
    r = api.run(_node("gpu-101"), ["sh", "-c", "kill -TERM $PPID; sleep 1"], timeout=20)
    assert r.rc == -15


def test_stdin_is_closed_unless_held(api):
    r = api.run(_node("gpu-101"), ["cat"], timeout=20, stdin=b"hello")
    assert (r.rc, r.stdout) == (0, "hello")
    # held open: a command that does not wait for end-of-file finishes on its own ...
    r = api.run(_node("gpu-101"), ["sh", "-c", "head -c 5; echo ' done'"], timeout=20,
                stdin=b"hello", hold_stdin=True)
    assert (r.rc, r.stdout) == (0, "hello done\n")
    # ... one that does runs until its deadline, its output kept
    from clusterkit.errors import CommandTimeout

    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as ei:
        api.run(_node("gpu-101"), ["cat"], timeout=1.5, stdin=b"hello", hold_stdin=True)
    assert 1.4 < time.monotonic() - t0 < 3
    assert ei.value.stdout == "hello"


def test_closing_the_connection_gives_the_command_end_of_file(api, fleet, tmp_path):
    import secrets

    marker = f"/tmp/ck-eof-{secrets.token_hex(6)}"
    from clusterkit.errors import CommandTimeout

    try:
        with pytest.raises(CommandTimeout) as ei:  # TERM ignored: only end-of-file ends `cat`
            api.run(_node("gpu-101"),
                    ["sh", "-c", f"trap '' TERM; echo ready; cat >/dev/null; touch {marker}"],
                    timeout=4, stdin=b"x", hold_stdin=True)
        assert ei.value.stdout == "ready\n"  # the trap was in place before the deadline
        end = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < end:
            time.sleep(0.05)
        assert os.path.exists(marker)
    finally:
        if os.path.exists(marker):
            os.unlink(marker)


def test_timeout_keeps_partial_output_and_stops_the_command(api, fleet):
    from clusterkit.errors import CommandTimeout

    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as ei:
        api.run(_node("gpu-101"), ["sh", "-c", "echo started; echo working >&2; exec sleep 47.25"],
                timeout=1.5)
    assert time.monotonic() - t0 < 2.5
    e = ei.value
    assert (e.stdout, e.stderr, e.cause) == ("started\n", "working\n", "did not finish within 1.5s")
    assert str(e) == "command did not finish within 1.5s"
    end = time.monotonic() + 5
    while fleet.node_processes("gpu-101", "sleep 47.25") and time.monotonic() < end:
        time.sleep(0.05)
    assert fleet.node_processes("gpu-101", "sleep 47.25") == []  # SIGTERM reached it


def test_connection_lost_mid_run_is_reported_at_once(ssh_fleet_factory):
    from clusterkit.errors import ConnectionLost
    from clusterkit.transport.ssh import SSHTransport

    f = ssh_fleet_factory(["lost-01"])
    t = SSHTransport(ssh_config=str(f.ssh_config), connect_timeout=5)
    got: list[object] = []
    th = threading.Thread(target=lambda: got.append(_outcome(
        t, "lost-01", ["sh", "-c", "echo started; exec sleep 38.5"], timeout=60)))
    th.start()
    end = time.monotonic() + 20
    while not f.node_processes("lost-01", "sleep 38.5") and time.monotonic() < end:
        time.sleep(0.05)
    killed = time.monotonic()
    f.stop_node("lost-01")
    th.join(15)
    assert not th.is_alive() and time.monotonic() - killed < 3
    e = got[0]
    assert isinstance(e, ConnectionLost) and e.cause == "connection lost", e
    assert e.stdout == "started\n" and not e.nothing_ran
    t.close()


def _outcome(t, name, argv, **kw):
    try:
        return t.run(_node(name), argv, **kw)
    except Exception as e:  # noqa: BLE001 - the outcome is what the test looks at
        return e


def test_one_shared_connection_per_jump_host(ssh_fleet_factory):
    """Every node behind a bastion rides one SSH connection to it (one handshake there, one
    forwarded channel per node); a bastion restart is met with a new connection."""
    from clusterkit.transport import fan_out
    from clusterkit.transport.ssh import SSHTransport

    names = [f"jn-{i:02d}" for i in range(1, 13)]
    f = ssh_fleet_factory(["jb", *names], env={"CLUSTERKIT_SIM": "builtin"}, bastion="jb")
    t = SSHTransport(ssh_config=str(f.ssh_config), connect_timeout=5)
    nodes = [_node(n) for n in names]
    t.prepare(nodes)
    before = f.bastion_logins()
    out = fan_out(t, nodes, ["sh", "-c", "echo $CLUSTERKIT_NODE"], timeout=30, fanout=64)
    assert {n: getattr(o, "stdout", o) for n, o in out.items()} == {n: f"{n}\n" for n in names}
    assert f.bastion_logins() - before == 1
    assert len(f.bastion_forwards()) >= len(names)
    # again: the same connection
    out = fan_out(t, nodes, ["true"], timeout=30, fanout=64)
    assert all(getattr(o, "rc", None) == 0 for o in out.values()), out
    assert f.bastion_logins() - before == 1
    # the bastion restarts: the dead connection is replaced once, for everybody
    f.stop_node("jb")
    f.start_node("jb")
    out = fan_out(t, nodes, ["true"], timeout=30, fanout=64)
    assert all(getattr(o, "rc", None) == 0 for o in out.values()), out
    assert f.bastion_logins() == 1  # its log starts afresh with the restart
    t.close()


def test_revoked_keys_and_unrelated_ca_lines(fleet, tmp_path):
    """@revoked refuses that key; a @cert-authority line (here in the global file, as in
    /etc/ssh/ssh_known_hosts) changes nothing for hosts whose plain key is listed."""
    from clusterkit.errors import HostKeyError
    from clusterkit.transport.ssh import SSHTransport

    ca = fleet.nodes["jump-01"].host_public.split()[:2]  # any key will do as the CA
    revoked = fleet.nodes["gpu-102"].host_public.split()[:2]
    user_kh = tmp_path / "kh"
    user_kh.write_text(fleet.known_hosts.read_text() + f"@revoked * {' '.join(revoked)}\n")
    global_kh = tmp_path / "global_kh"
    global_kh.write_text(f"@cert-authority * {' '.join(ca)}\n")
    cfg = fleet.ssh_config.read_text().replace(str(fleet.known_hosts), str(user_kh))
    cfg = cfg.replace("GlobalKnownHostsFile /dev/null", f"GlobalKnownHostsFile {global_kh}")
    (tmp_path / "cfg").write_text(cfg)
    t = SSHTransport(ssh_config=str(tmp_path / "cfg"), connect_timeout=5)
    t.prepare([_node("gpu-101"), _node("gpu-102")])
    assert t.run(_node("gpu-101"), ["true"], timeout=20).rc == 0
    with pytest.raises(HostKeyError) as ei:
        t.run(_node("gpu-102"), ["true"], timeout=20)
    assert ei.value.cause == "revoked host key" and "REVOKED" in str(ei.value)
    t.close()


def test_unknown_key_refused_then_accepted_on_request(fleet, tmp_path):
    from clusterkit.errors import HostKeyError
    from clusterkit.transport.ssh import SSHTransport

    kh = tmp_path / "kh"
    kh.write_text("")
    (tmp_path / "cfg").write_text(fleet.ssh_config.read_text().replace(str(fleet.known_hosts),
                                                                       str(kh)))
    strict = SSHTransport(ssh_config=str(tmp_path / "cfg"), connect_timeout=5)
    with pytest.raises(HostKeyError) as ei:
        strict.run(_node("gpu-101"), ["true"], timeout=20)
    assert ei.value.cause == "unknown host key" and "SHA256:" in str(ei.value)
    assert kh.read_text() == ""
    lenient = SSHTransport(ssh_config=str(tmp_path / "cfg"), connect_timeout=5, accept_new=True)
    assert lenient.run(_node("gpu-101"), ["true"], timeout=20).rc == 0
    assert fleet.nodes["gpu-101"].ip in kh.read_text()
    again = SSHTransport(ssh_config=str(tmp_path / "cfg"), connect_timeout=5)
    assert again.run(_node("gpu-101"), ["true"], timeout=20).rc == 0


RELAY = '''import os, select, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
fds = [0, s.fileno()]
while True:
    r, _, _ = select.select(fds, [], [])
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            fds.remove(0)
        else:
            s.sendall(d)
    if s.fileno() in r:
        d = s.recv(65536)
        if not d:
            break
        os.write(1, d)
'''


def test_proxycommand_runs_through_the_shell(fleet, tmp_path):
    """ProxyCommand is a shell command (as for ssh): tokens expanded, quotes and redirections
    work; the host key is still checked against the target's name."""
    from clusterkit.transport.ssh import SSHTransport

    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    node = fleet.nodes["gpu-102"]
    extra = (f"Host via-proxy\n    HostName {node.ip}\n    Port {node.port}\n"
             f"    ProxyCommand {sys.executable} '{relay}' %h %p 2>/dev/null\n"
             f"    User {fleet.user}\n    IdentityFile {fleet.identity}\n    IdentitiesOnly yes\n"
             f"    UserKnownHostsFile {fleet.known_hosts}\n")
    cfg = _bare_config(fleet, tmp_path, keep_user=True, keep_identity=True, extra=extra)
    t = SSHTransport(ssh_config=cfg, connect_timeout=5)
    t.prepare([_node("via-proxy")])
    r = t.run(_node("via-proxy"), ["sh", "-c", "echo $CLUSTERKIT_NODE"], timeout=20)
    assert (r.rc, r.stdout) == (0, "gpu-102\n")
    t.close()
