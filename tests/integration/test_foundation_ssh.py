"""The foundation's promises over real SSH, through both transports: no node-check outlives
the controller or its deadline, --timeout bounds the connection too, configuration errors stop
the run before any node is contacted, partial output of a cut-off node is kept, and a dead rack
is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra.sshfleet import SilentListener

TRANSPORTS = ["openssh", "paramiko"]


def clusterkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def fleet_file():
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="clusterkit-it-"))  # the node user must read it
    os.chmod(d, 0o755)
    f = d / "fleet.yaml"
    f.write_text("nodes: 'gpu-[201-206]'\nfaults:\n  - {node: gpu-202, kind: hang, value: 300}\n")
    f.chmod(0o644)
    yield f
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, fleet_file):
    return ssh_fleet_factory([f"gpu-{i}" for i in range(201, 207)], env={"CLUSTERKIT_SIM": str(fleet_file)},
                             unreachable=["gpu-204", "gpu-205", "gpu-206"])


def _node_pids(fleet, node: str) -> list[int]:
    """Processes on the 'node' (sessions of this fleet's sshd) that run as that node."""
    from tests.infra.sshfleet import MARKER_ENV

    want = {f"{MARKER_ENV}={fleet.token}".encode(), f"CLUSTERKIT_NODE={node}".encode()}
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if want <= env and b"node-check" in cmd:
            out.append(int(pid))
    return out


def _stably_gone(fleet, node: str, seconds: float) -> bool:
    """True once no node-check has run as ``node`` for ``seconds`` on end."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _node_pids(fleet, node):
            return False
        time.sleep(0.05)
    return True


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ctrl_c_leaves_no_node_check_running_on_the_nodes(fleet, transport, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "validate", "--nodes", "gpu-[201-202]",
                             "--ssh-config", str(fleet.ssh_config), "--transport", transport, "--timeout", "120",
                             "--output", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        assert _wait(lambda: len(_node_pids(fleet, "gpu-202")) > 0, 30), "the hung node-check never started"
        # gpu-201 answers in a second or two: wait until its node-check has been gone for a
        # while (it may also not have started yet when gpu-202's is first seen)
        assert _wait(lambda: _stably_gone(fleet, "gpu-201", 2.0), 60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {n["node"]: (n["status"], n["error"]) for n in doc["nodes"]} == {
        "gpu-201": ("pass", None), "gpu-202": ("error", "interrupted before this node answered")}
    assert _wait(lambda: _node_pids(fleet, "gpu-202") == [], 10), "node-check still runs on gpu-202"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_node_that_hangs_reports_by_its_deadline_and_stops(fleet, transport):
    t0 = time.monotonic()
    p = clusterkit("validate", "--nodes", "gpu-[201-202]", "--ssh-config", str(fleet.ssh_config),
                   "--transport", transport, "--timeout", "6", "--json")
    assert time.monotonic() - t0 < 15
    doc = json.loads(p.stdout)
    n = {x["node"]: x for x in doc["nodes"]}
    assert p.returncode == 3, p.stderr
    assert n["gpu-202"]["error_kind"] == "deadline"
    probes = {c["check"]: c["status"] for c in n["gpu-202"]["checks"]}
    assert probes["gpu.probe"] == "error" and probes["system.disk.free"] == "pass"
    assert _wait(lambda: _node_pids(fleet, "gpu-202") == [], 5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_output_of_a_cut_off_command_is_kept(fleet, transport):
    # a "clusterkit" that prints a line and never finishes
    p = clusterkit("validate", "--nodes", "gpu-201", "--ssh-config", str(fleet.ssh_config),
                   "--transport", transport, "--timeout", "3", "--json",
                   "--remote-command", "sh -c 'echo started-probing; exec sleep 30'")
    node = json.loads(p.stdout)["nodes"][0]
    assert node["status"] == "error" and node["error_kind"] == "timeout", node
    assert "started-probing" in (node["output_tail"] or "")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_rack_is_one_line_without_addresses(fleet, transport):
    p = clusterkit("validate", "--nodes", "gpu-[201,204-206]", "--ssh-config", str(fleet.ssh_config),
                   "--transport", transport, "--timeout", "20", "--connect-timeout", "5")
    assert p.returncode == 3, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("UNREACHABLE")]
    assert len(lines) == 1 and "gpu-[204-206]" in lines[0], p.stdout
    assert "127.0." not in lines[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeout_bounds_the_connection_too(transport, tmp_path):
    silent = SilentListener("127.0.0.1", 0)
    cfg = tmp_path / "cfg"
    (tmp_path / "kh").write_text("")
    cfg.write_text(f"Host silent\n    HostName 127.0.0.1\n    Port {silent.port}\n"
                   f"    UserKnownHostsFile {tmp_path}/kh\n    BatchMode yes\n")
    try:
        t0 = time.monotonic()
        p = clusterkit("validate", "--nodes", "silent", "--ssh-config", str(cfg), "--transport", transport,
                       "--timeout", "1.5", "--connect-timeout", "8", "--json")
        took = time.monotonic() - t0
    finally:
        silent.stop()
    assert p.returncode == 3 and took < 5, (took, p.stderr)
    assert json.loads(p.stdout)["nodes"][0]["status"] in ("unreachable", "error")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_configuration_errors_stop_the_run_before_any_connection(transport, tmp_path):
    silent = SilentListener("127.0.0.1", 0)
    (tmp_path / "kh").write_text("")
    good = f"HostName 127.0.0.1\n    Port {silent.port}\n    UserKnownHostsFile {tmp_path}/kh\n"
    try:
        cfg = tmp_path / "bad-port"
        cfg.write_text(f"Host a\n    {good}Host b\n    HostName 127.0.0.1\n    Port abc\n")
        p = clusterkit("validate", "--nodes", "a,b", "--ssh-config", str(cfg), "--transport", transport)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("clusterkit: error:") and "Traceback" not in p.stderr
        cfg2 = tmp_path / "ok"
        cfg2.write_text(f"Host a\n    {good}")
        p = clusterkit("validate", "--nodes", "a", "--ssh-config", str(cfg2), "--transport", transport,
                       "--identity", str(tmp_path / "no-such-key"))
        assert p.returncode == 2 and "no-such-key" in p.stderr
        time.sleep(0.3)
        assert silent.accepted == 0
    finally:
        silent.stop()
