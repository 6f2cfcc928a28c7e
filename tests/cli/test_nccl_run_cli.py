"""`clusterkit nccl single` and `clusterkit nccl localize` on simulated fleets, run as a user
would: rail discovery through node-check, the simulator's stand-in all_reduce_perf and
ib_write_bw (real output formats), the real parsers, the localizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def ck(*args: str, root: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERKIT_", "SLURM_"))}
    env["CLUSTERKIT_SIM_ROOT"] = root
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def fleet(tmp_path, faults: list[dict], n: int = 16, switches: bool = True) -> str:
    """gpu-[001-n]; with switches, leaves of 4 nodes (leaf-1 ... leaf-4 for 16 nodes): with three
    leaves or more, every uplink is crossed by tests to two different other leaves."""
    doc: dict = {"name": "nccl", "nodes": f"gpu-[001-{n:03d}]", "faults": faults}
    if switches:
        doc["switches"] = {f"leaf-{i // 4 + 1}": f"gpu-[{i + 1:03d}-{i + 4:03d}]" for i in range(0, n, 4)}
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


def test_single_flags_the_slow_node_against_the_floor(tmp_path):
    f = fleet(tmp_path, [{"node": "gpu-003", "kind": "nccl_slow", "value": 2}], n=4, switches=False)
    p = ck("nccl", "single", "--sim", f, "--json", root=str(tmp_path / "sim"))
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    by = {n["node"]: {c["check"]: c for c in n["checks"]} for n in doc["nodes"]}
    assert set(by) == {"gpu-001", "gpu-002", "gpu-003", "gpu-004"}
    nvls = by["gpu-003"]["nccl.single.nvls"]
    assert nvls["status"] == "fail" and nvls["threshold"] == 440
    assert 230 < nvls["value"] < 250  # 478 / 2
    ring = by["gpu-001"]["nccl.single.ring"]
    assert ring["status"] == "pass" and 360 < ring["value"] < 375
    assert by["gpu-003"]["nccl.single.ring"]["status"] == "fail"
    assert all(c["status"] == "pass" for n in ("gpu-001", "gpu-002", "gpu-004") for c in by[n].values())


def test_single_hang_is_an_error_not_a_failure(tmp_path):
    f = fleet(tmp_path, [{"node": "gpu-002", "kind": "nccl_hang"}], n=3, switches=False)
    p = ck("nccl", "single", "--sim", f, "--json", "--algo", "ring", "--test-timeout", "2",
           root=str(tmp_path / "sim"))
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)
    st = {n["node"]: n["status"] for n in doc["nodes"]}
    assert st == {"gpu-001": "pass", "gpu-002": "error", "gpu-003": "pass"}


@pytest.mark.parametrize("case", ["slow", "uplink", "hca", "init"])
def test_localize_finds_each_fault_in_three_rounds(tmp_path, case):
    faults = {
        "slow": [{"node": "gpu-005", "kind": "nccl_slow", "value": 2}],
        "uplink": [{"switch": "leaf-2", "kind": "uplink_degraded", "value": 2}],
        "hca": [{"node": "gpu-011", "kind": "hca_degraded", "device": "mlx5_3", "value": 4}],
        "init": [{"node": "gpu-014", "kind": "nccl_init_fail"}],
    }[case]
    p = ck("nccl", "localize", "--sim", fleet(tmp_path, faults), "--json", "--test-timeout", "5",
           root=str(tmp_path / "sim"))
    doc = json.loads(p.stdout)
    assert len(doc["rounds"]) <= 3
    bad_nodes = {b["node"] for b in doc["bad_nodes"]}
    bad_links = {(b["node"], b["device"]) for b in doc["bad_links"]}
    bad_up = {b["switch"] for b in doc["bad_uplinks"]}
    expect = {
        "slow": ({"gpu-005"}, set(), set(), "gpu-005"),
        "uplink": (set(), set(), {"leaf-2"}, ""),
        "hca": (set(), {("gpu-011", "mlx5_3")}, set(), "gpu-011"),
        "init": ({"gpu-014"}, set(), set(), "gpu-014"),
    }[case]
    assert (bad_nodes, bad_links, bad_up) == expect[:3], p.stderr
    assert doc["exclude"] == expect[3]
    assert p.returncode == 1
    assert all(b["evidence"] for b in doc["bad_nodes"] + doc["bad_links"] + doc["bad_uplinks"])
    if case == "init":
        assert doc["bad_nodes"][0]["kind"] == "init_fail"


def test_localize_healthy_fleet_exits_0_with_a_terminal_summary(tmp_path):
    p = ck("nccl", "localize", "--sim", fleet(tmp_path, []), root=str(tmp_path / "sim"))
    assert p.returncode == 0, p.stderr
    assert "healthy: 16 nodes" in p.stdout
    assert "exclude: (none)" in p.stdout


def test_usage_errors_are_one_line_exit_2(tmp_path):
    root = str(tmp_path / "sim")
    p = ck("nccl", "localize", root=root)
    assert p.returncode == 2 and "say which nodes" in p.stderr and "Traceback" not in p.stderr
    p = ck("nccl", "single", "--nodes", "gpu-001", "--launcher", "sim", root=root)
    assert p.returncode == 2 and "--launcher sim goes with --sim" in p.stderr
    p = ck("nccl", "localize", "--sim", "--nodes", "gpu-001", root=root)
    assert p.returncode == 2 and "at least 2 nodes" in p.stderr
    p = ck("nccl", "single", "--sim", "--message-size", "lots", root=root)
    assert p.returncode == 2 and "--message-size" in p.stderr
