"""The CLI as a user runs it: subprocesses, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest


def ck(*args: str, env: dict[str, str] | None = None, input: str | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          env=full_env, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterkit: error: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_sim_demo_fails_exactly_on_the_injected_faults(tmp_path):
    p = ck("validate", "--sim", "--json", "--junit", str(tmp_path / "j.xml"))
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    bad = {(n["node"], c["check"], c["subject"], c["status"])
           for n in doc["nodes"] for c in n["checks"] if c["status"] != "pass"}
    assert bad == {("gpu-003", "gpu.ecc.uncorrectable", "gpu5", "fail"),
                   ("gpu-003", "gpu.ecc.aggregate", "gpu5", "warn"),
                   ("gpu-006", "gpu.pcie.width", "gpu2", "fail")}
    status = {n["node"]: n["status"] for n in doc["nodes"]}
    assert status == {f"gpu-00{i}": ("fail" if i in (3, 6) else "pass") for i in range(1, 9)}
    assert doc["fleet"] == [] and doc["summary"]["exit_code"] == 1 and doc["source"] == "sim:builtin"
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == 2


def test_sim_terminal_report_names_nodes_gpus_and_checks():
    p = ck("validate", "--sim")
    assert p.returncode == 1
    out = p.stdout
    fail_lines = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert len(fail_lines) == 2
    assert "gpu.ecc.uncorrectable" in fail_lines[0] and "gpu-003" in fail_lines[0] and "gpu5" in fail_lines[0]
    assert "gpu.pcie.width" in fail_lines[1] and "gpu-006" in fail_lines[1] and "x8" in fail_lines[1]
    assert "8 nodes: 6 pass, 0 warn, 2 fail, 0 error, 0 unreachable" in out


def test_sim_fleet_file_nodes_checks_and_exclude(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("name: mine\nprofile: h200-sxm\nnodes: 'h200-[01-04]'\nhardware:\n"
                     "  gpu: {name: NVIDIA H200, memory_total_mib: 143771}\n"
                     "faults:\n  - {node: h200-02, kind: disk_free_gib, value: 3}\n"
                     "  - {node: h200-04, gpu: 1, kind: pcie_width, value: 4}\n")
    p = ck("validate", "--sim", str(fleet), "--json", "--checks", "system", "--exclude", "h200-04")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert [n["node"] for n in doc["nodes"]] == ["h200-01", "h200-02", "h200-03"]
    assert doc["profile"] == "h200-sxm"
    assert {c["check"].split(".")[0] for n in doc["nodes"] for c in n["checks"]} == {"system"}
    assert [n["status"] for n in doc["nodes"]] == ["pass", "fail", "pass"]
    # a larger hostlist than the fleet lists: extra nodes are healthy simulated nodes
    p = ck("validate", "--sim", "--nodes", "gpu-[001-012]", "--json", "--checks", "gpu.pcie")
    doc = json.loads(p.stdout)
    assert len(doc["nodes"]) == 12 and doc["summary"]["failed"] == 1


def test_sim_unreachable_nvml_only_exits_3(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: n2, kind: nvml_unavailable}\n")
    p = ck("validate", "--sim", str(fleet), "--output", str(tmp_path / "r.json"))
    assert p.returncode == 3, p.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["nodes"][1]["checks"][0]["check"] == "gpu.nvml"
    assert doc["summary"]["errored"] == 1


@pytest.mark.parametrize("args, fragment", [
    (["validate"], "say which nodes"),
    (["validate", "--nodes", "gpu-[3-1]"], "gpu-[3-1]"),
    (["validate", "--nodes", "gpu-[001-"], "gpu-[001-"),
    (["validate", "--sim", "--profile", "b300"], "no such built-in profile"),
    (["validate", "--sim", "--checks", "gpu,disk"], "unknown check 'disk'"),
    (["validate", "--sim", "/nonexistent/fleet.yaml"], "cannot read"),
    (["validate", "--nodes", "a1", "--inventory", "x.yaml"], "exclusive"),
    (["validate", "--nodes", "a1", "--ssh-config", "/nonexistent/cfg"], "no such file"),
    (["validate", "--nodes", "a1", "--fanout", "0"], "fanout"),
    (["hosts", "gpu-[1-2"], "gpu-[1-2"),
    (["node-check", "--profile", "nope"], "no such built-in profile"),
    (["parse", "no-such-tool", "x"], "unknown tool"),
])
def test_bad_input_one_line_exit_2(args, fragment, tmp_path):
    p = ck(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and fragment in p.stderr


def test_malformed_inventory_and_profile_exit_2(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text("nodes:\n  - {name: gpu-001, port: twenty-two}\n")
    line = one_error_line(ck("validate", "--inventory", str(inv)))
    assert f"inventory {inv}: nodes.0.port" in line
    inv.write_text("nodes: [\n")
    assert f"inventory {inv} (line" in one_error_line(ck("validate", "--inventory", str(inv)))
    prof = tmp_path / "p.yaml"
    prof.write_text("name: p\ngpu: {count: 8, pcie_width: -4}\n")
    line = one_error_line(ck("validate", "--sim", "--profile", str(prof)))
    assert f"profile {prof}: gpu.pcie_width" in line
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: n1\nfaults:\n  - {node: n1, kind: cosmic_ray}\n")
    assert "faults.0.kind" in one_error_line(ck("validate", "--sim", str(fleet)))


def test_node_check_on_a_simulated_node():
    env = {"CLUSTERKIT_SIM": "builtin", "CLUSTERKIT_NODE": "gpu-006"}
    p = ck("node-check", "--json", env=env)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["schema"] == "clusterkit.node/v1" and doc["node"] == "gpu-006" and doc["status"] == "fail"
    assert doc["facts"]["gpu_count"] == 8 and doc["facts"]["driver_version"] == "565.57.01"
    assert doc["measurements"]["gpu"]["gpus"][2]["pcie_width_current"] == 8
    p = ck("node-check", env={**env, "CLUSTERKIT_NODE": "gpu-001"})
    assert p.returncode == 0 and p.stdout.strip().startswith("gpu-001: pass")
    # the profile can come on stdin, as the controller sends it
    p = ck("node-check", "--json", "--profile", "-", "--checks", "gpu.count",
           env={**env, "CLUSTERKIT_NODE": "gpu-001"}, input='{"name": "four", "gpu": {"count": 4}}')
    doc = json.loads(p.stdout)
    assert p.returncode == 1 and [(c["check"], c["value"], c["threshold"]) for c in doc["checks"]] == [
        ("gpu.count", 8, 4)]


def test_node_check_without_nvml_is_an_error_not_a_failure():
    # this machine has no NVIDIA driver: NVML cannot initialise -> error, exit 3 (the system
    # checks are skipped through --checks so the host's own size does not matter)
    p = ck("node-check", "--json", "--checks", "gpu")
    doc = json.loads(p.stdout)
    if doc["checks"] and doc["checks"][0]["check"] == "gpu.nvml":
        assert p.returncode == 3 and doc["status"] == "error"


def test_hosts_expand_and_fold():
    p = ck("hosts", "gpu-[001-003,010]")
    assert p.stdout.split() == ["gpu-001", "gpu-002", "gpu-003", "gpu-010"]
    p = ck("hosts", "--fold", "gpu-003", "gpu-001", "gpu-002", "gpu-010")
    assert p.stdout.strip() == "gpu-[001-003,010]"


def test_version_and_help():
    assert ck("--version").stdout.startswith("clusterkit, version")
    h = ck("validate", "--help").stdout
    for opt in ("--sim", "--nodes", "--inventory", "--exclude", "--ssh-config", "--user", "--identity",
                "--fanout", "--json", "--output", "--junit", "--accept-new-hostkeys"):
        assert opt in h


def test_terminal_report_survives_unfoldable_node_names(tmp_path):
    # names an inventory may hold but a hostlist cannot fold are listed as they are
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: 'n[1-2]', kind: disk_free_gib, value: 1}\n")
    p = ck("validate", "--sim", str(fleet), "--nodes", "n1,n2,n2")
    assert p.returncode == 1 and "n[1-2]" in p.stdout and "Traceback" not in p.stderr
    assert "2 nodes:" in p.stdout
