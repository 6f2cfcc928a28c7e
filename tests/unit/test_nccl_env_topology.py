"""The NCCL environment (rails -> NCCL_IB_HCA, the socket interface, algorithm and debug
variables) and the switch topology (Slurm's topology.conf, inventory labels, the simulator).

Rails come from node reports made by the real ``clusterkit node-check --checks ib`` on simulated
nodes: a rail trained down to 100G (the simulator's ``ib_rate`` fault) and a rail flipped to
Ethernet (the simulator has no fault for one rail's link layer, so its generated sysfs tree is
copied and that one port's ``link_layer`` file rewritten, then read by the real probe through
``--sysfs-root``) are both left out of NCCL_IB_HCA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterkit.errors import ConfigError
from clusterkit.models import CheckResult, Node, NodeReport, NodeStatus, Status
from clusterkit.nccl import env, topology

ALL8 = [f"mlx5_{i}:1" for i in range(8)]


def node_check(tmp: Path, fleet: str, node: str = "gpu-001", *extra: str, sim: bool = True) -> NodeReport:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    e["CLUSTERKIT_SIM_ROOT"] = str(tmp / "sim")
    e["CLUSTERKIT_STATE_DIR"] = str(tmp / "state")
    if sim:
        path = tmp / "fleet.yaml"
        path.write_text(fleet)
        e["CLUSTERKIT_SIM"] = str(path)
        e["CLUSTERKIT_NODE"] = node
    p = subprocess.run([sys.executable, "-m", "clusterkit", "node-check", "--checks", "ib", "--json",
                        "--profile", "h100-sxm", *extra], capture_output=True, text=True, env=e, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.stdout.strip(), p.stderr
    return NodeReport.model_validate(json.loads(p.stdout.strip().splitlines()[-1]))


FLEET = """
name: rails
nodes: gpu-[001-002]
hardware: {ib: {storage_ports: 1}}
faults:
  - {node: gpu-001, device: mlx5_3, kind: ib_rate, value: 100}
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, NodeReport]:
    tmp = tmp_path_factory.mktemp("rails")
    out = {"gpu-001": node_check(tmp, FLEET, "gpu-001"), "gpu-002": node_check(tmp, FLEET, "gpu-002")}
    # gpu-002's sysfs tree as the simulator generated it, with mlx5_5's port flipped to Ethernet
    (tree,) = (tmp / "sim").glob("gpu-002-*/sys")
    flipped = tmp / "flipped"
    shutil.copytree(tree, flipped)
    (flipped / "class" / "infiniband" / "mlx5_5" / "ports" / "1" / "link_layer").write_text("Ethernet\n")
    out["flipped"] = node_check(tmp, FLEET, "gpu-002", "--sysfs-root", str(flipped), sim=False)
    return out


def test_rail_trained_down_to_100g_is_not_a_rail_for_nccl(reports):
    r = reports["gpu-001"]
    rate = {c.subject: c.status for c in r.checks if c.check == "ib.port.rate"}
    assert rate["mlx5_3/1"] is Status.FAIL  # the fabric check saw it ...
    assert env.rails_from_report(r) == [x for x in ALL8 if x != "mlx5_3:1"]  # ... and NCCL does not get it
    # the storage NIC's Ethernet port (mlx5_8) is no rail either: the ib checks never judge it
    assert "mlx5_8/1" not in rate


def test_rail_flipped_to_ethernet_is_left_out(reports):
    r = reports["flipped"]
    rails = {c.check: c for c in r.checks if c.check == "ib.rails"}
    assert rails["ib.rails"].status is Status.FAIL and rails["ib.rails"].value == 7
    assert not [c for c in r.checks if c.subject == "mlx5_5/1"]
    assert env.rails_from_report(r) == [x for x in ALL8 if x != "mlx5_5:1"]


def test_healthy_node_has_every_rail(reports):
    assert env.rails_from_report(reports["gpu-002"]) == ALL8


def test_ib_hca_is_the_exact_form_of_the_rails_good_on_every_node(reports):
    rails = {n: env.rails_from_report(r) for n, r in reports.items()}
    value = env.ib_hca_value(rails, ["gpu-001", "flipped"])
    assert value == "=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_4:1,mlx5_6:1,mlx5_7:1"
    assert env.ib_hca_value(rails, ["gpu-002"]) == "=" + ",".join(ALL8)
    assert env.ib_hca_value(rails, ["gpu-001", "unknown-node"]) is None
    assert env.ib_hca_value({"a": ["mlx5_0:1"], "b": ["mlx5_1:1"]}, ["a", "b"]) is None  # nothing in common
    assert env.ib_hca_value({"a": None}, ["a"]) is None


def test_ib_hca_sorts_naturally():
    rails = {"a": ["mlx5_10:1", "mlx5_2:1", "mlx5_1:1"]}
    assert env.ib_hca_value(rails, ["a"]) == "=mlx5_1:1,mlx5_2:1,mlx5_10:1"


def _report(checks: list[CheckResult]) -> NodeReport:
    return NodeReport(node="n1", status=NodeStatus.PASS, checks=checks)


def test_rails_unknown_when_the_ib_checks_did_not_run():
    assert env.rails_from_report(_report([])) is None
    assert env.rails_from_report(_report([CheckResult(check="ib", status=Status.SKIP)])) is None
    assert env.rails_from_report(_report([CheckResult(check="ib.rails", status=Status.ERROR,
                                                      message="cannot list")])) is None


def test_rails_down_port_and_unreadable_rate_are_left_out_and_old_reports_read_from_subjects():
    checks = [
        CheckResult(check="ib.port.state", subject="mlx5_0/1", device="mlx5_0", port=1, status=Status.PASS),
        CheckResult(check="ib.port.rate", subject="mlx5_0/1", device="mlx5_0", port=1, status=Status.PASS),
        CheckResult(check="ib.port.state", subject="mlx5_1/1", device="mlx5_1", port=1, status=Status.FAIL),
        CheckResult(check="ib.port.rate", subject="mlx5_1/1", device="mlx5_1", port=1, status=Status.SKIP),
        CheckResult(check="ib.port.state", subject="mlx5_2/1", device="mlx5_2", port=1, status=Status.PASS),
        CheckResult(check="ib.port.rate", subject="mlx5_2/1", device="mlx5_2", port=1, status=Status.ERROR),
        # a report without the structured fields: the subject says which port
        CheckResult(check="ib.port.state", subject="mlx5_3/2", status=Status.PASS),
        CheckResult(check="ib.port.rate", subject="mlx5_3/2", status=Status.SKIP, message="the profile sets no rate"),
    ]
    assert env.rails_from_report(_report(checks)) == ["mlx5_0:1", "mlx5_3:2"]


def test_nccl_env_sets_debug_only_when_asked():
    assert env.nccl_env() == {}
    assert env.nccl_env(algo="nvls") == {}
    assert env.nccl_env(algo="ring", ib_hca="=mlx5_0:1", socket_ifname="eth0") == {
        "NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0", "NCCL_IB_HCA": "=mlx5_0:1", "NCCL_SOCKET_IFNAME": "eth0"}
    dbg = env.nccl_env(debug=True)
    assert dbg == {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET"}
    assert not any(k.startswith("NCCL_DEBUG") for k in env.nccl_env(algo="ring", ib_hca="=x:1"))
    with pytest.raises(ConfigError):
        env.nccl_env(algo="tree")


def _nodes(*pairs: tuple[str, dict[str, str]]) -> list[Node]:
    return [Node(name=n, labels=labels) for n, labels in pairs]


def test_socket_ifname_from_the_inventory_label():
    assert env.socket_ifname_from_labels(_nodes(("a", {}), ("b", {}))) is None
    same = _nodes(("a", {"socket_ifname": "ens3"}), ("b", {"socket_ifname": "ens3"}))
    assert env.socket_ifname_from_labels(same) == "ens3"
    mixed = _nodes(("a", {"socket_ifname": "ens3"}), ("b", {"socket_ifname": "eth0"}))
    assert env.socket_ifname_from_labels(mixed) == "ens3,eth0"
    exact = _nodes(("a", {"socket_ifname": "=ens3"}), ("b", {"socket_ifname": "=ens10"}))
    assert env.socket_ifname_from_labels(exact) == "=ens3,ens10"
    with pytest.raises(ConfigError, match="set on a but not on b"):
        env.socket_ifname_from_labels(_nodes(("a", {"socket_ifname": "ens3"}), ("b", {})))
    with pytest.raises(ConfigError, match="not a network interface name"):
        env.socket_ifname_from_labels(_nodes(("a", {"socket_ifname": "ens3;reboot"})))
    with pytest.raises(ConfigError, match="mixes"):
        env.socket_ifname_from_labels(_nodes(("a", {"socket_ifname": "=ens3"}), ("b", {"socket_ifname": "eth0"})))


# --------------------------------------------------------------------------- topology
TOPOLOGY = """\
# leaf switches
SwitchName=leaf-a Nodes=gpu-[001-004]   # first rack
switchname=leaf-b nodes=gpu-[005-006],\\
gpu-008 LinkSpeed=400
SwitchName=spine Switches=leaf-a,leaf-b,leaf-c LinkSpeed=800

SWITCHNAME=leaf-c NODES=gpu-007 # gpu-009: out for repair
"""


def test_parse_topology_conf():
    leaves = topology.parse_topology_conf(TOPOLOGY)
    assert leaves == {"leaf-a": ["gpu-001", "gpu-002", "gpu-003", "gpu-004"],
                      "leaf-b": ["gpu-005", "gpu-006", "gpu-008"],
                      "leaf-c": ["gpu-007"]}
    assert topology.leaf_of(leaves)["gpu-008"] == "leaf-b"


def test_scontrol_show_topology_lines_parse_too():
    text = ("SwitchName=s0 Level=0 LinkSpeed=1 Nodes=tux[0-1]\n"
            "SwitchName=s1 Level=0 LinkSpeed=1 Nodes=tux[2-3]\n"
            "SwitchName=s2 Level=1 LinkSpeed=1 Switches=s[0-1]\n")
    assert topology.parse_topology_conf(text) == {"s0": ["tux0", "tux1"], "s1": ["tux2", "tux3"]}


@pytest.mark.parametrize("bad, why", [
    ("SwitchName=a Nodes=n1\nNodes=n2\n", "line 2: no SwitchName="),
    ("SwitchName=a Nodes=n[1-\n", "line 1: switch a: Nodes=: invalid hostlist"),
    ("SwitchName=a Nodes=n1 Speed=3\n", "line 1: unknown key 'Speed'"),
    ("SwitchName=a Nodes=n1\n# c\nSwitchName=a Nodes=n2\n", "line 3: switch a is defined twice (first on line 1)"),
    ("SwitchName=a Nodes=n[1-2]\nSwitchName=b Nodes=n2\n", "line 2: node n2 is under switch b and switch a"),
    ("SwitchName=top Switches=a,b\nSwitchName=a Nodes=n1\n", "line 1: switch top: Switches= names b"),
    ("SwitchName=a\n", "line 1: switch a has neither Nodes= nor Switches="),
    ("SwitchName=a Nodes=n1 stray\n", "line 1: expected key=value, found 'stray'"),
    ("BlockName=b1 Nodes=n[1-4]\n", "line 1: BlockName"),
])
def test_parse_topology_conf_errors_name_the_line(bad, why):
    with pytest.raises(ConfigError) as e:
        topology.parse_topology_conf(bad)
    assert why in str(e.value)


def test_from_labels():
    nodes = _nodes(("gpu-010", {"leaf": "ib-leaf-2"}), ("gpu-002", {"leaf": "ib-leaf-1"}),
                   ("gpu-001", {"leaf": "ib-leaf-1"}), ("gpu-003", {"rack": "r1"}))
    assert topology.from_labels(nodes) == {"ib-leaf-1": ["gpu-001", "gpu-002"], "ib-leaf-2": ["gpu-010"]}
    assert topology.from_labels(nodes, key="rack") == {"r1": ["gpu-003"]}
    assert topology.from_labels(_nodes(("a", {}))) == {}


def test_from_sim():
    from clusterkit.sim import parse_fleet

    class Fleet:  # a fleet with the simulator's switches map
        switches = {"leaf-a": "gpu-[001-002]", "leaf-b": "gpu-003"}

    assert topology.from_sim(Fleet()) == {"leaf-a": ["gpu-001", "gpu-002"], "leaf-b": ["gpu-003"]}
    assert topology.from_sim(parse_fleet("name: x\nnodes: gpu-[001-002]\n", "x")) == {}
    try:
        fleet = parse_fleet("name: x\nnodes: gpu-[001-004]\nswitches: {leaf-a: 'gpu-[001-002]', "
                            "leaf-b: 'gpu-[003-004]'}\n", "x")
    except ConfigError:
        pytest.skip("this simulator's fleets have no switches map")
    assert topology.from_sim(fleet) == {"leaf-a": ["gpu-001", "gpu-002"], "leaf-b": ["gpu-003", "gpu-004"]}
