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
