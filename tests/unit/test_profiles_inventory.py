"""Profiles and inventories: built-ins load with their figures; malformed files give one line."""

from __future__ import annotations

import pytest

from clusterkit.errors import ConfigError
from clusterkit.inventory import exclude, parse_inventory
from clusterkit.profiles import builtin_names, load_profile, parse_profile


def test_builtin_profiles_carry_reference_figures():
    assert builtin_names() == ["h100-sxm", "h200-sxm"]
    h100, h200 = load_profile("h100-sxm"), load_profile("h200-sxm")
    assert (h100.gpu.count, h100.gpu.pcie_gen, h100.gpu.pcie_width, h100.gpu.power_limit_w) == (8, 5, 16, 700)
    assert h100.gpu.memory_total_mib_min <= 81559 < h200.gpu.memory_total_mib_min <= 143771
    assert h200.gpu.model_patterns == ["H200"]


@pytest.mark.parametrize("text, fragment", [
    ("name: x\ngpu: {count: eight}\n", "gpu.count"),
    ("name: x\ngpu: {count: 8, colour: blue}\n", "gpu.colour"),
    ("name: x\ngpu: [1, 2\n", "line"),
    ("- just a list\n", "mapping"),
    ("gpu: {count: 8}\n", "name"),
])
def test_malformed_profile_one_line(text, fragment):
    with pytest.raises(ConfigError) as e:
        parse_profile(text, "my.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("profile my.yaml") and fragment in msg


def test_missing_profile_names_builtins(tmp_path):
    with pytest.raises(ConfigError, match="h100-sxm, h200-sxm"):
        load_profile("b200-sxm")
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\ngpu: {count: 1, model_patterns: [H200]}\n")
    assert load_profile(str(p)).gpu.count == 1


def test_inventory_expands_hostlists_and_merges_defaults():
    nodes = parse_inventory(
        "defaults: {user: ops, port: 2222, labels: {site: a}}\n"
        "nodes:\n"
        "  - {name: 'gpu-[001-003]', labels: {rack: r1}}\n"
        "  - {name: gpu-010, host: 10.0.0.10, port: 22, profile: h200-sxm}\n", "inv.yaml")
    assert [n.name for n in nodes] == ["gpu-001", "gpu-002", "gpu-003", "gpu-010"]
    assert nodes[0].user == "ops" and nodes[0].port == 2222 and nodes[0].labels == {"site": "a", "rack": "r1"}
    assert nodes[3].address == "10.0.0.10" and nodes[3].port == 22 and nodes[3].profile == "h200-sxm"
    assert [n.name for n in exclude(nodes, "gpu-[002-003]")] == ["gpu-001", "gpu-010"]


@pytest.mark.parametrize("text, fragment", [
    ("nodes: [{name: a, port: x}]", "nodes.0.port"),
    ("nodes: [{name: a, hots: b}]", "nodes.0.hots"),
    ("nodes: [{name: 'a[1-2]', host: 1.2.3.4}]", "'host' given for 2 nodes"),
    ("nodes: [{name: a}, {name: a}]", "listed twice"),
    ("nodes: []", "no nodes"),
    ("[a, b]", "mapping"),
    ("nodes: [{name: 'gpu-[3-1]'}]", "gpu-[3-1]"),
])
def test_malformed_inventory_one_line(text, fragment):
    with pytest.raises(Exception) as e:
        parse_inventory(text, "inv.yaml")
    assert getattr(e.value, "exit_code", None) == 2
    assert "\n" not in str(e.value) and fragment in str(e.value)
