"""Every fabric fault kind through `clusterkit validate` over real sshd nodes: each node's
node-check reads its own simulated NVLink, topology and InfiniBand hardware (NVML stand-in,
generated sysfs, stand-in nvidia-smi and ib_write_bw) and the controller flags exactly the
faulty check and subject. A second run sees counters that grew between runs (flaps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

FLEET = """\
name: fabric-ssh
profile: h100-sxm
nodes: [healthy, nvlink-down, nvlink-speed, nvlink-errors, fabric-incomplete, p2p-degraded, nic-far,
        port-down, port-polling, rate, errors, flap, fw, missing, peermem, bw-slow]
faults:
  - {node: nvlink-down, gpu: 3, kind: nvlink_down, value: 2}
  - {node: nvlink-speed, gpu: 1, kind: nvlink_speed, value: 20}
  - {node: nvlink-errors, gpu: 5, kind: nvlink_errors, value: 1000}
  - {node: fabric-incomplete, kind: fabric_incomplete}
  - {node: p2p-degraded, gpu: 2, kind: p2p_degraded}
  - {node: nic-far, device: mlx5_3, kind: nic_far}
  - {node: port-down, kind: ib_port_down, device: mlx5_1}
  - {node: port-polling, kind: ib_port_polling, device: mlx5_2}
  - {node: rate, kind: ib_rate, device: mlx5_3, value: 200}
  - {node: errors, kind: ib_errors, device: mlx5_4, value: 5000}
  - {node: flap, kind: ib_flap, device: mlx5_5}
  - {node: fw, kind: ib_fw, device: mlx5_6, value: "28.36.1010"}
  - {node: missing, kind: ib_missing, value: 7}
  - {node: peermem, kind: peermem_missing}
  - {node: bw-slow, kind: ib_bw_slow, device: mlx5_0, value: 250}
"""
NODES = ["healthy", "nvlink-down", "nvlink-speed", "nvlink-errors", "fabric-incomplete", "p2p-degraded",
         "nic-far", "port-down", "port-polling", "rate", "errors", "flap", "fw", "missing", "peermem", "bw-slow"]


@pytest.fixture(scope="module")
def shared():
    d = Path(tempfile.mkdtemp(prefix="clusterkit-fabric-"))
    os.chmod(d, 0o755)
    (d / "fleet.yaml").write_text(FLEET)
    (d / "fleet.yaml").chmod(0o644)
    sim_root = d / "sim"  # fresh simulated nodes: no earlier run's counters
    sim_root.mkdir()
    os.chmod(sim_root, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, shared):
    return ssh_fleet_factory(NODES, env={"CLUSTERKIT_SIM": str(shared / "fleet.yaml"),
                                         "CLUSTERKIT_SIM_ROOT": str(shared / "sim")})


def validate(fleet, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    p = subprocess.run([sys.executable, "-m", "clusterkit", "validate", "--ssh-config", str(fleet.ssh_config),
                        "--timeout", "60", "--json", *args], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=180)
    assert p.returncode == 1, p.stderr
    return json.loads(p.stdout)


def flagged(doc: dict) -> set[tuple[str, str, str | None, str]]:
    return {(n["node"], c["check"], c["subject"], c["status"])
            for n in doc["nodes"] for c in n["checks"] if c["status"] not in ("pass", "skip")}


def test_every_fabric_fault_over_ssh(fleet):
    doc = validate(fleet, "--nodes", ",".join(NODES), "--checks", "nvlink,topo,ib")
    assert flagged(doc) == {
        ("nvlink-down", "nvlink.links", "gpu3", "fail"),
        *{("nvlink-speed", "nvlink.speed", f"gpu1/link{k}", "fail") for k in range(18)},
        ("nvlink-errors", "nvlink.errors", "gpu5/link0", "warn"),
        *{("fabric-incomplete", "nvlink.fabric", f"gpu{i}", "fail") for i in range(8)},
        *{("p2p-degraded", "topo.p2p", pair, "fail")
          for pair in ("gpu0-gpu2", "gpu1-gpu2", "gpu2-gpu3", "gpu2-gpu4", "gpu2-gpu5", "gpu2-gpu6", "gpu2-gpu7")},
        ("nic-far", "topo.nic_affinity", "mlx5_3", "fail"),
        ("port-down", "ib.port.state", "mlx5_1/1", "fail"),
        ("port-polling", "ib.port.state", "mlx5_2/1", "fail"),
        ("rate", "ib.port.rate", "mlx5_3/1", "fail"),
        ("errors", "ib.counters", "mlx5_4/1", "fail"),
        ("fw", "ib.firmware", "mlx5_6", "warn"),
        ("missing", "ib.rails", None, "fail"),
        ("peermem", "ib.gdr", None, "fail"),
    }  # flap and nvlink error growth: nothing to compare with yet; ib_bw_slow: --ib-bw only
    assert [(f["check"], f["nodes"]) for f in doc["fleet"]] == [("fleet.drift.hca_fw", ["fw"])]

    # the next run: counters grew since the first (a flap; NVLink data errors), and --ib-bw measures
    again = validate(fleet, "--nodes", "healthy,flap,nvlink-errors,bw-slow", "--checks", "nvlink.errors,ib",
                     "--ib-bw")
    assert flagged(again) == {("flap", "ib.counters", "mlx5_5/1", "fail"),
                              ("nvlink-errors", "nvlink.errors", "gpu5/link0", "fail"),
                              ("bw-slow", "ib.write_bw", "mlx5_0/1", "fail")}
