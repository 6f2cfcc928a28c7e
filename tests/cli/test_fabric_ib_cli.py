"""The ib domain as a user meets it: node-check on a real context with --sysfs-root (no
simulator, no NVML: --checks ib), and validate on a simulated fleet with every InfiniBand fault."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import ck, one_error_line
from tests.unit.test_ib import DISABLED, DOWN, HDR, POLLING, device, port, rails, write_tree


def flagged(doc: dict) -> set[tuple[str, str, str]]:
    return {(c["check"], c["subject"], c["status"]) for c in doc["checks"] if c["status"] not in ("pass", "skip")}


def test_node_check_flags_exactly_the_faulty_rails_and_nothing_on_storage_ports(tmp_path):
    storage = {"mlx5_8": device(port(DOWN, DISABLED, "40 Gb/sec (4X QDR)", "Ethernet", symbol_error=9000),
                                fw="22.38.1002", hca="MT4125"),
               "mlx5_9": device(port(rate="100 Gb/sec (4X EDR)", layer="Ethernet"), fw="22.38.1002", hca="MT4125")}
    tree = rails(mlx5_1=device(port(rate=HDR)), mlx5_2=device(port(DOWN, DISABLED)),
                 mlx5_3=device(port(DOWN, POLLING)), mlx5_4=device(port(symbol_error=4000, link_error_recovery=30)),
                 mlx5_5=device(fw="28.36.1010"), **storage)
    root = write_tree(tmp_path / "sys", tree)
    p = ck("node-check", "--sysfs-root", str(root), "--state-dir", str(tmp_path / "state"), "--checks", "ib",
           "--json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert flagged(doc) == {("ib.port.rate", "mlx5_1/1", "fail"), ("ib.port.state", "mlx5_2/1", "fail"),
                            ("ib.port.state", "mlx5_3/1", "fail"), ("ib.counters", "mlx5_4/1", "fail"),
                            ("ib.firmware", "mlx5_5", "warn")}
    assert not any((c["subject"] or "").startswith(("mlx5_8", "mlx5_9")) for c in doc["checks"])
    msgs = {(c["check"], c["subject"]): c["message"] for c in doc["checks"]}
    assert "Disabled" in msgs["ib.port.state", "mlx5_2/1"] and "Polling" in msgs["ib.port.state", "mlx5_3/1"]
    assert "simulated" not in doc["facts"] and doc["facts"]["hca_fw"] == "28.36.1010, 28.39.1002"
    rails_msg = msgs["ib.rails", None]
    assert rails_msg.startswith("8 InfiniBand rails") and "2 Ethernet ports not counted" in rails_msg


def test_node_check_on_a_healthy_tree_with_mlx5_ib_names_passes_every_ib_check(tmp_path):
    root = write_tree(tmp_path / "sys", rails(prefix="mlx5_ib"))
    p = ck("node-check", "--sysfs-root", str(root), "--state-dir", str(tmp_path / "state"), "--checks", "ib",
           "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {c["status"] for c in doc["checks"]} == {"pass"} and doc["status"] == "pass"
    assert {c["check"] for c in doc["checks"]} == {"ib.rails", "ib.port.state", "ib.port.rate", "ib.counters",
                                                   "ib.firmware", "ib.gdr"}
    assert "mlx5_ib7/1" in {c["subject"] for c in doc["checks"]}


FLEET = """\
name: ib-faults
profile: h100-sxm
nodes: [healthy, port-down, port-polling, rate, errors, flap, fw, missing, peermem, bw-slow]
hardware:
  ib: {storage_ports: 2}
faults:
  - {node: port-down, kind: ib_port_down, device: mlx5_1}
  - {node: port-polling, kind: ib_port_polling, device: mlx5_2}
  - {node: rate, kind: ib_rate, device: mlx5_3, value: 200}
  - {node: errors, kind: ib_errors, device: mlx5_4, value: 5000}
  - {node: flap, kind: ib_flap, device: mlx5_5}
  - {node: fw, kind: ib_fw, device: mlx5_6, value: "28.36.1010"}
  - {node: missing, kind: ib_missing, value: 7}
  - {node: peermem, kind: peermem_missing}
  - {node: bw-slow, kind: ib_bw_slow, device: mlx5_0, value: 250}
  - {node: bw-slow, kind: ib_port_down, device: mlx5_9}
"""


def bad_of(doc: dict) -> set[tuple[str, str, str | None, str]]:
    return {(n["node"], c["check"], c["subject"], c["status"])
            for n in doc["nodes"] for c in n["checks"] if c["status"] not in ("pass", "skip")}


def test_validate_sim_flags_every_ib_fault_with_its_id_and_subject(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    env = {"CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")}
    p = ck("validate", "--sim", str(fleet), "--checks", "ib", "--json", env=env)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert bad_of(doc) == {
        ("port-down", "ib.port.state", "mlx5_1/1", "fail"),
        ("port-polling", "ib.port.state", "mlx5_2/1", "fail"),
        ("rate", "ib.port.rate", "mlx5_3/1", "fail"),
        ("errors", "ib.counters", "mlx5_4/1", "fail"),
        ("fw", "ib.firmware", "mlx5_6", "warn"),
        ("missing", "ib.rails", None, "fail"),
        ("peermem", "ib.gdr", None, "fail"),
    }  # flap: first run, nothing to compare with yet; ib_bw_slow: --ib-bw only
    assert [(f["check"], f["nodes"]) for f in doc["fleet"]] == [("fleet.drift.hca_fw", ["fw"])]
    # the next run: the flap shows (link_downed grew), and --ib-bw measures every rail
    p = ck("validate", "--sim", str(fleet), "--checks", "ib", "--ib-bw", "--nodes", "healthy,flap,bw-slow",
           "--json", env=env)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert bad_of(doc) == {("flap", "ib.counters", "mlx5_5/1", "fail"),
                           ("bw-slow", "ib.write_bw", "mlx5_0/1", "fail")}
    bw = {(n["node"], c["subject"]): c for n in doc["nodes"] for c in n["checks"] if c["check"] == "ib.write_bw"}
    assert len(bw) == 24 and bw["healthy", "mlx5_7/1"]["value"] == 390.98
    assert "+1 since the previous run" in next(c["message"] for n in doc["nodes"] if n["node"] == "flap"
                                               for c in n["checks"] if c["check"] == "ib.counters" and
                                               c["status"] == "fail")


def test_a_fault_on_an_unknown_device_is_one_error_line(tmp_path):
    fleet = tmp_path / "bad.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: n2, kind: ib_port_down, device: mlx5_12}\n")
    p = ck("validate", "--sim", str(fleet))
    assert p.returncode == 2
    assert one_error_line(p).endswith("faults.0.device: no RDMA device mlx5_12: the fleet's nodes have mlx5_0 to "
                                      "mlx5_7 (hardware.ib: rails, prefix, storage_ports)")


def test_ib_checks_are_listed():
    doc = json.loads(ck("checks", "--json").stdout)
    assert {"ib.rails", "ib.port.state", "ib.port.rate", "ib.counters", "ib.firmware", "ib.gdr",
            "ib.write_bw"} <= set(doc["domains"]["ib"]["checks"])
    assert {"fleet.drift.hca_fw", "fleet.drift.ofed_version"} <= set(doc["fleet"])
