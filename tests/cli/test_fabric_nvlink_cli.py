"""`clusterkit validate --sim … --checks nvlink,topo`: each NVLink/topology fault kind on its own
node flags exactly its check and subject, end to end through node-check and the simulator's
stand-ins; a second run sees the NVLink error counters grow (the simulated node's state)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

FLEET = """\
name: fabric
profile: h100-sxm
nodes: [healthy, nvlink-down, nvlink-speed, nvlink-errors, fabric-incomplete, p2p-degraded, nic-far]
faults:
  - {node: nvlink-down, gpu: 3, kind: nvlink_down, value: 2}
  - {node: nvlink-speed, gpu: 1, kind: nvlink_speed, value: 20}
  - {node: nvlink-errors, gpu: 5, kind: nvlink_errors, value: 1000}
  - {node: fabric-incomplete, kind: fabric_incomplete}
  - {node: p2p-degraded, gpu: 2, kind: p2p_degraded}
  - {node: nic-far, device: mlx5_3, kind: nic_far}
"""


def ck(*args: str, root: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env["CLUSTERKIT_SIM_ROOT"] = root  # fresh simulated nodes: no earlier run's counters
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


def flagged(doc: dict) -> set[tuple[str, str, str | None, str]]:
    return {(n["node"], c["check"], c["subject"], c["status"])
            for n in doc["nodes"] for c in n["checks"] if c["status"] != "pass"}


def test_each_fault_flags_exactly_its_check_and_subject(tmp_path):
    fleet = tmp_path / "fabric.yaml"
    fleet.write_text(FLEET)
    root = str(tmp_path / "sim")
    p = ck("validate", "--sim", str(fleet), "--checks", "nvlink,topo", "--json", root=root)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert flagged(doc) == {
        ("nvlink-down", "nvlink.links", "gpu3", "fail"),
        *{("nvlink-speed", "nvlink.speed", f"gpu1/link{k}", "fail") for k in range(18)},
        ("nvlink-errors", "nvlink.errors", "gpu5/link0", "warn"),
        *{("fabric-incomplete", "nvlink.fabric", f"gpu{i}", "fail") for i in range(8)},
        *{("p2p-degraded", "topo.p2p", pair, "fail")
          for pair in ("gpu0-gpu2", "gpu1-gpu2", "gpu2-gpu3", "gpu2-gpu4", "gpu2-gpu5", "gpu2-gpu6", "gpu2-gpu7")},
        ("nic-far", "topo.nic_affinity", "mlx5_3", "fail"),
    }
    status = {n["node"]: n["status"] for n in doc["nodes"]}
    assert status == {"healthy": "pass", "nvlink-down": "fail", "nvlink-speed": "fail", "nvlink-errors": "warn",
                      "fabric-incomplete": "fail", "p2p-degraded": "fail", "nic-far": "fail"}
    checks = {c["check"] for n in doc["nodes"] for c in n["checks"]}
    assert checks == {"nvlink.links", "nvlink.speed", "nvlink.errors", "nvlink.fabric", "topo.p2p",
                      "topo.nic_affinity"}

    # the next run on the same nodes: link 0's counters grew by 1000 since the first
    p = ck("validate", "--sim", str(fleet), "--checks", "nvlink.errors", "--nodes", "nvlink-errors,healthy",
           "--json", root=root)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert flagged(doc) == {("nvlink-errors", "nvlink.errors", "gpu5/link0", "fail")}
    msg = next(c["message"] for n in doc["nodes"] for c in n["checks"] if c["subject"] == "gpu5/link0")
    assert "crc_data +1000 since the previous run (max 0)" in msg
