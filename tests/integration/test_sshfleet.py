"""The real-sshd fleet itself, checked with the real OpenSSH client (and paramiko)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

import clusterkit
from tests.infra.sshfleet import FleetError, SshFleet, _marked, _proc_alive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NAMES = ["gpu-011", "gpu-012", "gpu-013", "gpu-014", "gpu-015"]


def _rack(name: str) -> dict[str, str]:
    return {"CLUSTERKIT_SIM": "builtin", "RACK": f"r{name[-2:]}"}


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, ssh_client) -> SshFleet:
    f = ssh_fleet_factory(NAMES, env=_rack, known_hosts_exclude=["gpu-013"],
                          known_hosts_wrong=["gpu-014"], unreachable=["gpu-015"])
    yield f
    f.stop()


def ssh(fleet: SshFleet, name: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(fleet.ssh_argv(name, *cmd), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def _env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_env_reaches_the_remote_command(fleet, node_venv):
    cp = ssh(fleet, "gpu-011", "env")
    assert cp.returncode == 0, cp.stderr
    env = _env(cp.stdout)
    assert env["CLUSTERKIT_NODE"] == "gpu-011"
    assert env["PATH"] == f"{node_venv}/bin:/usr/bin:/bin"
    assert env["PATH"].split(":")[0] == f"{node_venv}/bin"
    assert env["CLUSTERKIT_SIM"] == "builtin"
    assert env["RACK"] == "r11"  # per-node extra env from the callable
    assert env["USER"] == "ckuser"
    # the neighbour gets its own identity through its own sshd
    other = _env(ssh(fleet, "gpu-012", "env").stdout)
    assert (other["CLUSTERKIT_NODE"], other["RACK"]) == ("gpu-012", "r12")


def test_plain_user_runs_clusterkit_from_the_node_venv(fleet, node_venv):
    script = ("import clusterkit, os, sys; print(clusterkit.__file__); print(sys.prefix); "
              "print(os.geteuid())")
    cp = ssh(fleet, "gpu-012", "python", "-c", f'"{script}"')
    assert cp.returncode == 0, cp.stderr
    module_file, prefix, uid = cp.stdout.split()
    assert prefix == str(node_venv)
    assert module_file.startswith(f"{node_venv}/lib/")  # installed copy, not the working tree
    assert not module_file.startswith(str(REPO))
    assert int(uid) == pwd.getpwnam("ckuser").pw_uid != 0
    version = ssh(fleet, "gpu-012", "clusterkit", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"clusterkit, version {clusterkit.__version__}"


def test_unknown_host_key_is_refused(fleet):
    ip = fleet.nodes["gpu-013"].ip
    assert "gpu-013" not in fleet.known_hosts.read_text()
    cp = ssh(fleet, "gpu-013", "echo", "reached")
    assert cp.returncode == 255
    assert "reached" not in cp.stdout
    assert f"No ED25519 host key is known for {ip}" in cp.stderr
    assert "Host key verification failed." in cp.stderr


def test_changed_host_key_is_refused(fleet):
    cp = ssh(fleet, "gpu-014", "echo", "reached")
    assert cp.returncode == 255
    assert "reached" not in cp.stdout
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in cp.stderr
    listed = [ln for ln in fleet.known_hosts.read_text().splitlines() if ln.startswith("gpu-014,")]
    assert len(listed) == 1
    assert listed[0].split()[2] != fleet.nodes["gpu-014"].host_public.split()[1]


def test_unreachable_node_has_a_host_block_but_no_sshd(fleet):
    assert "Host gpu-015\n" in fleet.ssh_config.read_text()
    assert "gpu-015" not in fleet.pids and len(fleet.pids) == 4
    cp = ssh(fleet, "gpu-015", "true")
    assert cp.returncode == 255
    assert "Connection refused" in cp.stderr


def _paramiko_client(fleet: SshFleet) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _paramiko_connect(fleet: SshFleet, name: str) -> paramiko.SSHClient:
    node = fleet.nodes[name]
    client = _paramiko_client(fleet)
    client.connect(node.ip, port=node.port, username=fleet.user, key_filename=str(fleet.identity),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def test_known_hosts_serves_paramiko_strictly(fleet):
    client = _paramiko_connect(fleet, "gpu-011")
    try:
        _, out, _ = client.exec_command("echo $CLUSTERKIT_NODE", timeout=10)
        assert out.read().decode().strip() == "gpu-011"
    finally:
        client.close()
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _paramiko_connect(fleet, "gpu-013")
    with pytest.raises(paramiko.BadHostKeyException):
        _paramiko_connect(fleet, "gpu-014")


def test_sixteen_nodes_start_and_stop(ssh_fleet_factory, ssh_client):
    f = ssh_fleet_factory(16)
    assert f.names[0] == "gpu-001" and f.names[-1] == "gpu-016"
    assert len(f.pids) == 16 and len(set(f.pids.values())) == 16
    assert len({n.ip for n in f.nodes.values()}) == 16
    for name, pid in f.pids.items():
        assert os.readlink(f"/proc/{pid}/exe") == "/usr/sbin/sshd"
        # sshd retitles itself: "sshd: /usr/sbin/sshd -D -f <config> … [listener] …"
        assert str(f.nodes[name].config).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f.nodes[name].pidfile.read_text().strip() == str(pid)
    assert (f.workdir / "sshd.pids").read_text().count("\n") == 16
    for name in ("gpu-001", "gpu-016"):
        cp = ssh(f, name, "echo", "$CLUSTERKIT_NODE")
        assert (cp.returncode, cp.stdout.strip()) == (0, name), cp.stderr
    pids = dict(f.pids)
    endpoints = [(n.ip, n.port) for n in f.nodes.values()]
    f.stop()
    assert f.pids == {}
    assert [n for n, pid in pids.items() if _proc_alive(pid)] == []
    for ip, port in endpoints[:4]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, port), timeout=2).close()


def test_stop_and_restart_one_node(ssh_fleet_factory, ssh_client):
    f = ssh_fleet_factory(2)
    old = f.pids["gpu-002"]
    f.stop_node("gpu-002")
    assert not _proc_alive(old) and "gpu-002" not in f.pids
    assert "Connection refused" in ssh(f, "gpu-002", "true").stderr
    assert ssh(f, "gpu-001", "true").returncode == 0
    f.start_node("gpu-002")
    assert f.pids["gpu-002"] != old
    assert ssh(f, "gpu-002", "echo", "$CLUSTERKIT_NODE").stdout.strip() == "gpu-002"
    f.stop()


def test_stop_ends_commands_left_behind_by_a_client(ssh_fleet_factory, ssh_client):
    f = ssh_fleet_factory(1)
    client = subprocess.Popen(f.ssh_argv("gpu-001", "sleep", "300"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _marked(f.token) and time.monotonic() < deadline:
            time.sleep(0.05)
        sessions = _marked(f.token)
        assert sessions, "the remote sleep never started"
    finally:
        client.kill()  # the client gives up, like a controller hitting its timeout
        client.wait()
    f.stop()
    assert [pid for pid in sessions if _proc_alive(pid)] == []


def test_start_failure_reports_the_sshd_log(ssh_fleet_factory):
    with pytest.raises(FleetError, match="NoSuchOption"):
        ssh_fleet_factory(1, sshd_options=["NoSuchOption yes"], timeout=10)
