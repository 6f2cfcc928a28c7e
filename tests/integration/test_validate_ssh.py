"""`clusterkit validate` over real SSH, as a user runs it: a subprocess against real sshd nodes.

Each node is a real OpenSSH server on its own loopback address whose sessions carry
CLUSTERKIT_SIM (the fleet file below) and CLUSTERKIT_NODE, so node-check on each node reads its
own simulated hardware. Everything above the hardware is the real code path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FLEET_YAML = """
name: integration
profile: h100-sxm
nodes: "gpu-[001-019]"
faults:
  - {node: gpu-002, gpu: 5, kind: ecc_uncorrectable, value: 2}
  - {node: gpu-003, gpu: 2, kind: pcie_width, value: 8}
  - {node: gpu-004, gpu: 4, kind: remap_pending}
  - {node: gpu-005, kind: gpu_missing, value: 7}
  - {node: gpu-006, kind: nvml_unavailable}
  - {node: gpu-007, gpu: 1, kind: temperature, value: 86}
  - {node: gpu-008, kind: driver_version, value: "550.90.12"}
  - {node: gpu-009, kind: disk_free_gib, value: 5}
  - {node: gpu-010, gpu: 7, kind: hw_power_brake}
  - {node: gpu-011, gpu: 0, kind: ecc_disabled}
  - {node: gpu-012, kind: memory_gib, value: 512}
  - {node: gpu-013, kind: hang, value: 120}
"""

# node -> (node status, {(check, subject): status} of every check that is not pass)
EXPECTED = {
    "gpu-001": ("pass", {}),
    "gpu-002": ("fail", {("gpu.ecc.uncorrectable", "gpu5"): "fail", ("gpu.ecc.aggregate", "gpu5"): "warn"}),
    "gpu-003": ("fail", {("gpu.pcie.width", "gpu2"): "fail"}),
    "gpu-004": ("fail", {("gpu.remap.pending", "gpu4"): "fail", ("gpu.remap.uncorrectable", "gpu4"): "warn"}),
    "gpu-005": ("fail", {("gpu.count", None): "fail"}),
    "gpu-006": ("error", {("gpu.nvml", None): "error", ("nvlink.nvml", None): "error",
                          ("topo.nvidia_smi", None): "error"}),
    "gpu-007": ("warn", {("gpu.temperature", "gpu1"): "warn"}),
    "gpu-008": ("pass", {}),
    "gpu-009": ("fail", {("system.disk.free", "/"): "fail"}),
    "gpu-010": ("fail", {("gpu.clocks_event", "gpu7"): "fail"}),
    "gpu-011": ("fail", {("gpu.ecc.mode", "gpu0"): "fail", ("gpu.ecc.uncorrectable", "gpu0"): "skip",
                         ("gpu.ecc.aggregate", "gpu0"): "skip"}),
    "gpu-012": ("warn", {("system.memory", None): "warn"}),  # a smaller build: warn, not fail
    # NVML hangs: node-check's deadline ends the two domains that use it
    "gpu-013": ("error", {("gpu.probe", None): "error", ("nvlink.probe", None): "error"}),
    "gpu-014": ("pass", {}),
    "gpu-015": ("pass", {}),
    "gpu-016": ("pass", {}),
    "gpu-017": ("unreachable", {}),  # host key not in known_hosts
    "gpu-018": ("unreachable", {}),  # host key changed
    "gpu-019": ("unreachable", {}),  # nothing listens
}


def clusterkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def public_dir():
    d = Path(tempfile.mkdtemp(prefix="clusterkit-it-"))
    os.chmod(d, 0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, public_dir):
    fleet_file = public_dir / "fleet.yaml"
    fleet_file.write_text(FLEET_YAML)
    fleet_file.chmod(0o644)
    return ssh_fleet_factory(sorted(EXPECTED), env={"CLUSTERKIT_SIM": str(fleet_file)},
                             known_hosts_exclude=["gpu-017"], known_hosts_wrong=["gpu-018"],
                             unreachable=["gpu-019"])


@pytest.fixture(scope="module")
def full_run(fleet, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    p = clusterkit("validate", "--nodes", "gpu-[001-019]", "--ssh-config", str(fleet.ssh_config),
                   "--timeout", "20", "--connect-timeout", "3", "--json", "--output", str(out / "r.json"),
                   "--junit", str(out / "r.xml"))
    return p, json.loads((out / "r.json").read_text()), ET.parse(out / "r.xml").getroot()


def test_every_node_gets_exactly_its_verdicts(full_run):
    proc, report, _ = full_run
    assert proc.returncode == 1, proc.stderr
    assert report["schema"] == "clusterkit.report/v1"
    by_node = {n["node"]: n for n in report["nodes"]}
    assert sorted(by_node) == sorted(EXPECTED)
    for name, (status, odd) in EXPECTED.items():
        node = by_node[name]
        got = {(c["check"], c["subject"]): c["status"] for c in node["checks"] if c["status"] != "pass"}
        assert (node["status"], got) == (status, odd), name
    # a healthy node ran the whole profile: gpu (1 count + 14 checks x 8 GPUs), 4 system checks,
    # nvlink (links, speed, errors, fabric x 8 GPUs), topo (p2p + 8 rail NICs),
    # ib (rails, gdr + state, rate, counters, firmware x 8 rails), storage (mount, free, inodes
    # of /), xid (log, events x 8 GPUs, sxid); stress is opt-in
    assert len(by_node["gpu-001"]["checks"]) == \
        (1 + 14 * 8) + 4 + 4 * 8 + (1 + 8) + (2 + 4 * 8) + 3 + (1 + 8 + 1)
    assert report["summary"]["failed"] == 7 and report["summary"]["unreachable"] == 3
    assert report["summary"]["exit_code"] == 1


def test_transport_failures_are_reported_with_their_cause(full_run):
    _, report, _ = full_run
    by_node = {n["node"]: n for n in report["nodes"]}
    assert by_node["gpu-017"]["error"].startswith("hostkey: unknown host key")
    assert by_node["gpu-018"]["error"].startswith("hostkey: host key for") and "CHANGED" in by_node["gpu-018"]["error"]
    assert by_node["gpu-019"]["error"].startswith("unreachable: cannot connect")
    # the hung probe is cut off by node-check's own deadline, inside the controller's --timeout
    assert by_node["gpu-013"]["error"] == "node-check reached its deadline before every probe finished"
    assert by_node["gpu-013"]["error_kind"] == "deadline"
    # nothing ran on refused nodes: no checks, no facts
    for name in ("gpu-017", "gpu-018", "gpu-019"):
        assert by_node[name]["checks"] == [] and by_node[name]["facts"] == {}


def test_fleet_judges_see_drift_and_count(full_run):
    _, report, _ = full_run
    found = {f["check"]: f for f in report["fleet"]}
    assert found["fleet.drift.driver_version"]["nodes"] == ["gpu-008"]
    assert found["fleet.drift.driver_version"]["expected"] == "565.57.01"
    assert found["fleet.gpu_count"]["nodes"] == ["gpu-005"]
    assert set(found) == {"fleet.drift.driver_version", "fleet.gpu_count"}


def test_junit_has_a_case_per_node_and_check(full_run):
    _, report, suite = full_run
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase")
    fails = [c for c in cases if c.find("failure") is not None]
    errors = [c for c in cases if c.find("error") is not None]
    assert int(suite.get("failures")) == len(fails) > 0
    assert int(suite.get("errors")) == len(errors)
    failing_classes = {c.get("classname") for c in fails}
    assert {"gpu-002", "gpu-003", "gpu-011"} <= {x.split(".")[-1] for x in failing_classes} | failing_classes


def test_terminal_report_groups_failures(fleet):
    p = clusterkit("validate", "--nodes", "gpu-[001-003,005]", "--ssh-config", str(fleet.ssh_config),
                   "--timeout", "20")
    assert p.returncode == 1, p.stderr
    assert "gpu.ecc.uncorrectable" in p.stdout and "gpu-002" in p.stdout
    assert "gpu.pcie.width" in p.stdout and "gpu-003" in p.stdout
    assert "gpu-001" not in p.stdout.split("gpu.pcie.width")[1].splitlines()[0]


def test_unreachable_only_exits_3(fleet):
    p = clusterkit("validate", "--nodes", "gpu-[001,014,019]", "--ssh-config", str(fleet.ssh_config),
                   "--json", "--timeout", "20", "--connect-timeout", "3")
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)
    assert [(n["node"], n["status"]) for n in doc["nodes"]] == [
        ("gpu-001", "pass"), ("gpu-014", "pass"), ("gpu-019", "unreachable")]


def test_accept_new_hostkeys_is_an_explicit_opt_in(fleet, tmp_path):
    cfg = fleet.ssh_config.read_text().replace(str(fleet.known_hosts), str(tmp_path / "kh"))
    (tmp_path / "cfg").write_text(cfg)
    # same known_hosts: gpu-017 missing from it, gpu-018 listed with another key
    (tmp_path / "kh").write_text(fleet.known_hosts.read_text())
    base = ["validate", "--nodes", "gpu-[017-018]", "--ssh-config", str(tmp_path / "cfg"), "--json",
            "--timeout", "20"]
    strict = json.loads(clusterkit(*base).stdout)
    assert [n["status"] for n in strict["nodes"]] == ["unreachable", "unreachable"]
    p = clusterkit(*base, "--accept-new-hostkeys")
    doc = json.loads(p.stdout)
    by = {n["node"]: n for n in doc["nodes"]}
    assert by["gpu-017"]["status"] == "pass"  # unknown key: accepted and recorded
    assert by["gpu-018"]["status"] == "unreachable" and "CHANGED" in by["gpu-018"]["error"]
    assert fleet.nodes["gpu-017"].ip in (tmp_path / "kh").read_text()


def test_hostile_names_and_arguments_run_nothing(fleet, tmp_path):
    marker = tmp_path / "pwned"
    inv = tmp_path / "inv.yaml"
    # no blanks: a hostlist splits on them, as Slurm's does
    hostile = f"gpu-001;touch${{IFS}}{marker};$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`'\""
    inv.write_text(json.dumps({"nodes": [{"name": hostile, "host": "gpu-001"}]}))
    p = clusterkit("validate", "--inventory", str(inv), "--ssh-config", str(fleet.ssh_config),
                   "--json", "--timeout", "20")
    doc = json.loads(p.stdout)
    assert doc["nodes"][0]["node"] == hostile and doc["nodes"][0]["status"] == "pass", p.stderr
    p = clusterkit("validate", "--nodes", "gpu-001", "--ssh-config", str(fleet.ssh_config), "--json",
                   "--remote-command", f"clusterkit $(touch {marker}) ; touch {marker}", "--timeout", "20")
    doc = json.loads(p.stdout)
    assert p.returncode == 3 and doc["nodes"][0]["status"] == "error"
    assert "refused its input" in doc["nodes"][0]["error"]
    weird_profile = tmp_path / f"p';touch {marker.name};'.yaml"
    weird_profile.write_text("name: weird\ngpu: {count: 8, model_patterns: [H100]}\n")
    p = clusterkit("validate", "--nodes", "gpu-001", "--ssh-config", str(fleet.ssh_config), "--json",
                   "--profile", str(weird_profile), "--timeout", "20")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["profile"] == "weird"
    assert not marker.exists()
