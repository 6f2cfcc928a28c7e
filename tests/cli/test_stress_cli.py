"""The stress domain as a user meets it: validate on a simulated fleet with --stress (the real
probe through the simulator's stand-ins: worker, dcgmi, gpu_burn), node-check on a machine
without GPU tools, and the opt-in rules (--stress, or a stress check named in --checks)."""

from __future__ import annotations

import importlib.util
import json

from tests.cli.test_cli import ck

FLEET = """\
name: stress-faults
profile: h100-sxm
nodes: [healthy, gemm-slow, gemm-sibling, hbm-slow, dcgm-fail]
faults:
  - {node: gemm-slow, gpu: 3, kind: gemm_slow, value: 2}
  - {node: gemm-sibling, gpu: 1, kind: gemm_slow, value: 1.15}
  - {node: hbm-slow, gpu: 6, kind: hbm_slow, value: 1.5}
  - {node: dcgm-fail, gpu: 2, kind: dcgm_fail, value: Memory}
"""


def bad_of(doc: dict) -> set[tuple[str, str, str | None, str]]:
    return {(n["node"], c["check"], c["subject"], c["status"])
            for n in doc["nodes"] for c in n["checks"] if c["status"] not in ("pass", "skip")}


def test_validate_sim_stress_flags_exactly_the_injected_faults(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {"CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")}
    p = ck("validate", "--sim", str(fleet), "--stress", "--checks", "stress", "--json", env=env)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert bad_of(doc) == {
        ("gemm-slow", "stress.gemm", "gpu3", "fail"),
        ("gemm-sibling", "stress.gemm", "gpu1", "fail"),
        ("hbm-slow", "stress.hbm", "gpu6", "fail"),
        ("dcgm-fail", "stress.dcgm", "gpu2", "fail"),
    }
    status = {n["node"]: n["status"] for n in doc["nodes"]}
    assert status == {"healthy": "pass", "gemm-slow": "fail", "gemm-sibling": "fail", "hbm-slow": "fail",
                      "dcgm-fail": "fail"}
    checks = {(n["node"], c["check"], c["subject"]): c for n in doc["nodes"] for c in n["checks"]}
    assert {c for _, c, _ in checks} == {"stress.gemm", "stress.hbm", "stress.dcgm", "stress.gpu_burn"}
    assert len([k for k in checks if k[0] == "healthy"]) == 32  # 8 GPUs x 4 checks
    slow = checks["gemm-slow", "stress.gemm", "gpu3"]
    assert slow["value"] < 400 and slow["threshold"] == 650 and "floor of profile h100-sxm" in slow["message"]
    sibling = checks["gemm-sibling", "stress.gemm", "gpu1"]
    assert sibling["value"] > 650 and "of the node's other GPUs" in sibling["message"]
    hbm = checks["hbm-slow", "stress.hbm", "gpu6"]
    assert hbm["unit"] == "GB/s" and hbm["value"] < 2400
    dcgm = checks["dcgm-fail", "stress.dcgm", "gpu2"]
    assert dcgm["message"].startswith("dcgmi diag -r 2: GPU Memory failed on GPU 2: ")
    healthy = checks["healthy", "stress.gemm", "gpu0"]
    assert 785 < healthy["value"] < 800 and healthy["unit"] == "TFLOPS"
    assert checks["healthy", "stress.hbm", "gpu7"]["value"] > 2850
    # the figures are fleet figures: GEMM and HBM samples of every node
    assert all(n["facts"].get("stress_backend") == "clusterkit-sim (stand-in)" for n in doc["nodes"])


def test_naming_a_stress_check_turns_it_on_and_nothing_else(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {"CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim"), "CLUSTERKIT_SIM": str(fleet),
           "CLUSTERKIT_NODE": "dcgm-fail"}
    p = ck("node-check", "--checks", "stress.dcgm", "--json", env=env)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert {c["check"] for c in doc["checks"]} == {"stress.dcgm"}
    assert [(c["subject"], c["status"]) for c in doc["checks"] if c["status"] != "pass"] == [("gpu2", "fail")]
    # without --stress and without naming one, no stress check runs
    p = ck("validate", "--sim", str(fleet), "--checks", "gpu", "--json", env={"CLUSTERKIT_SIM_ROOT": str(tmp_path / "s")})
    assert p.returncode == 0, p.stderr
    assert not any(c["check"].startswith("stress") for n in json.loads(p.stdout)["nodes"] for c in n["checks"])


def test_node_check_without_gpu_tools_skips_with_the_reason(tmp_path):
    """A real context (no simulator), no dcgmi, no gpu_burn, and here no torch: every stress
    check skips, none fails, and the node is not failed."""
    if importlib.util.find_spec("torch") or importlib.util.find_spec("cupy"):
        return  # this machine has a GPU library: tests/gpu covers it
    prof = tmp_path / "two.json"
    prof.write_text(json.dumps({"name": "two-gpus", "gpu": {"count": 2}}))
    empty = tmp_path / "empty"
    empty.mkdir()
    p = ck("node-check", "--stress", "--checks", "stress", "--profile", str(prof), "--json",
           "--state-dir", str(tmp_path / "state"), env={"PATH": str(empty)})
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {(c["check"], c["subject"], c["status"]) for c in doc["checks"]} == {
        ("stress.gemm", "gpu0", "skip"), ("stress.gemm", "gpu1", "skip"), ("stress.hbm", "gpu0", "skip"),
        ("stress.hbm", "gpu1", "skip"), ("stress.gpu_burn", None, "skip"), ("stress.dcgm", None, "skip")}
    msgs = {c["check"]: c["message"] for c in doc["checks"]}
    assert "neither torch nor cupy" in msgs["stress.gemm"] and "dcgmi not found" in msgs["stress.dcgm"]


def test_stress_checks_are_listed_and_stress_is_an_option():
    doc = json.loads(ck("checks", "--json").stdout)
    assert set(doc["domains"]["stress"]["checks"]) >= {"stress.gemm", "stress.hbm", "stress.dcgm", "stress.gpu_burn"}
    assert "--stress" in ck("node-check", "--help").stdout and "--stress" in ck("validate", "--help").stdout
