"""ssh_config and authentication paths of the SSH transport, against real sshd nodes:
ProxyJump through another node, --user/--identity given on the command line, agent keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest


def clusterkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
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
