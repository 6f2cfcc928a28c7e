"""The user's YAML inputs (profiles, inventories, sim fleets) are refused when they are wrong.

Duplicate keys, alias bombs, oversized files and counts, sim fleets that contradict themselves,
booleans passed as numbers: each is one ``clusterkit: error:`` line naming the file and the
problem, exit 2, no traceback. Also: the profile's ``floor_status`` and the inventory's
``transport``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from clusterkit.config import load_yaml_model, read_text
from clusterkit.errors import ConfigError
from clusterkit.inventory import load_inventory, parse_inventory
from clusterkit.profiles import Profile, load_profile, parse_profile
from clusterkit.sim import parse_fleet


def ck(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          env=env, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def one_error(p: subprocess.CompletedProcess[str], path: object, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line: 'clusterkit: error: ... <path> ... <fragments>'."""
    assert p.returncode == 2, (p.returncode, p.stdout[-800:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith("clusterkit: error: "), line
    assert str(path) in line, line
    for f in fragments:
        assert f in line, (f, line)
    return line


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def bomb(levels: int = 7, indent: str = "") -> str:
    """A 'billion laughs' YAML mapping: 9**levels strings from a few hundred bytes."""
    lines = [f'{indent}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{indent}{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- 1. duplicate keys
def test_inventory_with_nodes_twice_is_refused_not_half_read(tmp_path):
    inv = write(tmp_path, "inv.yaml",
                "nodes:\n  - {name: a1.invalid}\ndefaults: {user: ops}\nnodes:\n  - {name: a2.invalid}\n")
    p = ck("validate", "--inventory", str(inv), "--connect-timeout", "1", "--timeout", "2")
    one_error(p, f"inventory {inv}", "duplicate key 'nodes'", "(line 4)", "first on line 1")


@pytest.mark.parametrize("text, line", [
    ("name: p\ngpu:\n  count: 8\n  pcie_width: 16\n  count: 4\n", 5),  # nested mapping
    ("name: p\nsystem:\n  paths:\n    - {path: /, free_gib_min: 1, path: /tmp}\n", 4),  # in a list
    ("name: p\ndescription: x\nname: q\n", 3),  # top level
])
def test_duplicate_key_at_any_depth_names_key_and_line(tmp_path, text, line):
    prof = write(tmp_path, "p.yaml", text)
    p = ck("validate", "--sim", "--profile", str(prof))
    one_error(p, f"profile {prof}", "duplicate key", f"(line {line})")


def test_duplicate_key_in_sim_fleet_and_json_profile():
    with pytest.raises(ConfigError, match=r"sim fleet f.yaml \(line 4\): duplicate key 'kind' \(first on line 3\)"):
        parse_fleet("nodes: n1\nfaults:\n  - {node: n1, kind: gpu_lost,\n     kind: gpu_lost}\n", "f.yaml")
    # JSON is YAML: the controller's JSON path must not take the last of two keys either
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        parse_profile('{"name": "a", "gpu": null, "name": "b"}', "<stdin>")


def test_merge_keys_may_still_override():
    p = parse_profile("name: p\ngpu:\n  <<: {count: 8, pcie_width: 16}\n  pcie_width: 8\n", "p.yaml")
    assert (p.gpu.count, p.gpu.pcie_width) == (8, 8)


# --------------------------------------------------------------------------- 2. sizes and aliases
def test_alias_bomb_refused_quickly_by_the_cli(tmp_path):
    fleet = write(tmp_path, "bomb.yaml", "nodes: n1\nfaults:\n  - node: n1\n    kind: load\n    value:\n"
                  + bomb(7, "      "))
    t0 = time.monotonic()
    p = ck("validate", "--sim", str(fleet), timeout=60)
    one_error(p, f"sim fleet {fleet}", "more than 500,000 YAML nodes")
    assert time.monotonic() - t0 < 20


def test_alias_bomb_refused_with_little_memory():
    text = "name: p\ndescription: x\nsystem:\n  paths: []\nx-bomb:\n" + bomb(7, "  ")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="YAML nodes"):
            load_yaml_model(text, Profile, "profile p.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak


def test_recursive_alias_and_deep_nesting_refused():
    with pytest.raises(ConfigError, match="alias \\*a refers to a node that contains it"):
        load_yaml_model("name: &a [1, *a]\n", Profile, "profile p.yaml")
    with pytest.raises(ConfigError, match="nested more than"):
        load_yaml_model("name: " + "[" * 600 + "]" * 600 + "\n", Profile, "profile p.yaml")


def test_file_larger_than_the_limit_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as fh:
        fh.write("# padding\n" * (16 * 1024 * 1024 // 10 + 1))
    with pytest.raises(ConfigError, match=r"inventory .*big.yaml: larger than 16 MiB"):
        read_text(str(big), "inventory")


def test_gpu_count_bounded_in_sim_fleet_and_profile(tmp_path):
    fleet = write(tmp_path, "f.yaml", "nodes: n1\nhardware: {gpu: {count: 100000}}\n")
    one_error(ck("validate", "--sim", str(fleet), "--checks", "system", timeout=60),
              f"sim fleet {fleet}", "hardware.gpu.count", "less than or equal to 64")
    prof = write(tmp_path, "p.yaml", "name: p\ngpu: {count: 100000}\n")
    one_error(ck("validate", "--sim", "--profile", str(prof)), f"profile {prof}", "gpu.count",
              "less than or equal to 64")
    assert parse_fleet("nodes: n1\nhardware: {gpu: {count: 64}}\n", "f").hardware.gpu.count == 64


@pytest.mark.parametrize("text, fragment", [
    ("nodes: n1\nhardware: {system: {cpus: 100000}}\n", "hardware.system.cpus"),
    ("nodes: n1\nhardware: {system: {disks: {" + ", ".join(f"/d{i}: {{}}" for i in range(300)) + "}}}\n",
     "hardware.system.disks"),
    ("nodes: n1\nfaults:\n" + "  - {node: n1, kind: load, value: 1}\n" * 10_001, "faults"),
    ("nodes: [" + ", ".join(["'n[1-60000]'"] * 20) + "]\n", "nodes.16: more than 1,000,000"),
    ("nodes: 'n[1-4]'\nfaults:\n" + "  - {node: 'n[1-4]', kind: load, value: 1}\n"
     + "  - {node: 'n[1-60000]', kind: load, value: 1}\n", "faults.1.node"),
])
def test_other_counts_bounded_in_sim_fleets(text, fragment):
    with pytest.raises(ConfigError) as e:
        parse_fleet(text, "f.yaml")
    assert str(e.value).startswith("sim fleet f.yaml: ") and fragment in str(e.value)


def test_inventory_names_bounded_in_all():
    text = "nodes:\n" + "".join(f"  - {{name: 'r{i}n[1-60000]'}}\n" for i in range(17))
    with pytest.raises(ConfigError, match=r"inventory i.yaml: nodes.16: more than 1,000,000 nodes"):
        parse_inventory(text, "i.yaml")


# --------------------------------------------------------------------------- 3. sim fleets
@pytest.mark.parametrize("text, fragment", [
    # a GPU the fleet's hardware does not have
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 8, kind: ecc_uncorrectable, value: 2}\n",
     "faults.0.gpu: no GPU 8"),
    ("nodes: n1\nhardware: {gpu: {count: 4}}\nfaults:\n  - {node: n1, gpu: 4, kind: gpu_lost}\n",
     "faults.0.gpu: no GPU 4"),
    # a node the fleet does not have, alone or in a hostlist
    ("nodes: 'n[1-2]'\nfaults:\n  - {node: n3, kind: gpu_lost}\n", "faults.0.node: n3 is not a node"),
    ("nodes: 'n[1-2]'\nfaults:\n  - {node: n1, kind: load, value: 1}\n  - {node: 'n[2-3]', kind: gpu_lost}\n",
     "faults.1.node: n3 is not a node"),
    # negative values where a count, a size or a duration is meant
    ("nodes: n1\nfaults:\n  - {node: n1, kind: hang, value: -5}\n", "faults.0.value: hang"),
    ("nodes: n1\nfaults:\n  - {node: n1, kind: memory_gib, value: -1}\n", "faults.0.value: memory_gib"),
    ("nodes: n1\nfaults:\n  - {node: n1, kind: ecc_uncorrectable, value: -2}\n", "faults.0.value"),
    ("nodes: n1\nhardware: {system: {memory_gib: -1}}\n", "hardware.system.memory_gib"),
    ("nodes: n1\nhardware: {system: {disks: {/: {total_gib: 10, free_gib: -1}}}}\n", "free_gib"),
    ("nodes: n1\nhardware: {gpu: {memory_total_mib: -1}}\n", "hardware.gpu.memory_total_mib"),
    # booleans are not numbers
    ("nodes: n1\nhardware: {gpu: {count: true}}\n", "hardware.gpu.count: Input should be a valid integer"),
    ("nodes: n1\nhardware: {system: {cpus: true}}\n", "hardware.system.cpus"),
    ("nodes: n1\nhardware: {system: {load1: false}}\n", "hardware.system.load1"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: true, kind: gpu_lost}\n", "faults.0.gpu"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 0, kind: pcie_width, value: true}\n", "faults.0.value: pcie_width"),
    # the value's type, per kind
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 0, kind: pcie_width, value: 8.5}\n", "faults.0.value: pcie_width"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 0, kind: pcie_width, value: 0}\n", "faults.0.value: pcie_width"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 0, kind: pcie_width}\n", "pcie_width needs a value"),
    ("nodes: n1\nfaults:\n  - {node: n1, kind: driver_version, value: 550.90}\n", "faults.0.value: driver_version"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 0, kind: temperature, value: hot}\n", "faults.0.value: temperature"),
    ("nodes: n1\nfaults:\n  - {node: n1, kind: gpu_missing, value: 9}\n", "faults.0.value: gpu_missing"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 1, kind: gpu_lost, value: 3}\n", "gpu_lost takes no value"),
    # path only where the kind takes one; gpu only on GPU faults
    ("nodes: n1\nfaults:\n  - {node: n1, kind: load, value: 3, path: /}\n", "faults.0.path: load takes no path"),
    ("nodes: n1\nfaults:\n  - {node: n1, gpu: 2, kind: memory_gib, value: 512}\n", "faults.0.gpu: memory_gib"),
])
def test_contradictory_sim_fleet_one_line_exit_2(tmp_path, text, fragment):
    fleet = write(tmp_path, "fleet.yaml", text)
    one_error(ck("validate", "--sim", str(fleet), timeout=60), f"sim fleet {fleet}", fragment)


def test_valid_sim_fleets_still_load():
    f = parse_fleet(
        "nodes: ['n[1-3]', login1]\n"
        "hardware: {gpu: {count: 4, power_limit_w: 600}, system: {memory_gib: 1007}}\n"
        "faults:\n"
        "  - {node: 'n[1-2]', gpu: 3, kind: temperature, value: 86.5}\n"
        "  - {node: 'n1,n3', kind: disk_free_gib, value: 12, path: /scratch}\n"
        "  - {node: n3, kind: driver_version, value: '550.90.07'}\n"
        "  - {node: login1, kind: hang}\n"
        "  - {node: n2, kind: ecc_uncorrectable}\n", "f")
    assert f.hardware.gpu.power_limit_w == 600.0 and isinstance(f.hardware.gpu.power_limit_w, float)
    assert [x.kind for x in f.faults_for("n3")] == ["disk_free_gib", "driver_version"]  # 'n1,n3' matches n3
    assert f.node("login1").hang_seconds == 3600.0


# --------------------------------------------------------------------------- 4. profiles
@pytest.mark.parametrize("text, fragment", [
    ("name: p\ngpu: {count: 8, temp_warn_c: 90, temp_fail_c: 87}\n", "temp_warn_c (90) is above temp_fail_c (87)"),
    ("name: p\ngpu: {count: true}\n", "gpu.count: Input should be a valid integer"),
    ("name: p\ngpu: {count: 8, pcie_gen: '5'}\n", "gpu.pcie_gen"),
    ("name: p\ngpu: {count: 8, power_limit_w: true}\n", "gpu.power_limit_w"),
    ("name: p\ngpu: {count: 8, ecc_required: 1}\n", "gpu.ecc_required"),
    ("name: p\nsystem: {memory_gib_min: true}\n", "system.memory_gib_min"),
    ("name: p\nsystem: {cpus_min: 96.0}\n", "system.cpus_min"),
])
def test_profile_refuses_inverted_temperatures_and_loose_numbers(tmp_path, text, fragment):
    prof = write(tmp_path, "p.yaml", text)
    one_error(ck("validate", "--sim", "--profile", str(prof)), f"profile {prof}", fragment)


def test_profile_still_takes_whole_numbers_for_float_fields():
    p = parse_profile("name: p\ngpu: {count: 8, power_limit_w: 700, temp_warn_c: 85, temp_fail_c: 85}\n"
                      "system: {memory_gib_min: 960, load_per_cpu_warn: 2}\n", "p")
    assert p.gpu.power_limit_w == 700.0 and p.system.memory_gib_min == 960.0 and p.system.load_per_cpu_warn == 2.0


# --------------------------------------------------------------------------- 5. floor_status
def test_floor_status_defaults_to_warn_and_builtins_pass_1tib_builds():
    assert parse_profile("name: p\n", "p").system.floor_status == "warn"
    assert parse_profile("name: p\nsystem: {floor_status: fail}\n", "p").system.floor_status == "fail"
    with pytest.raises(ConfigError, match="system.floor_status"):
        parse_profile("name: p\nsystem: {floor_status: hard}\n", "p")
    for name in ("h100-sxm", "h200-sxm"):
        s = load_profile(name).system
        assert s.floor_status == "warn"
        # a 1 TiB build reports about 1007 GiB; a node that lost a DIMM pair is still below
        assert 900 <= s.memory_gib_min <= 1007, (name, s.memory_gib_min)


# --------------------------------------------------------------------------- 6. inventory transport
def test_inventory_names_its_transport(tmp_path):
    from clusterkit.inventory import inventory_transport, load_inventory_file

    inv = write(tmp_path, "inv.yaml", "defaults: {transport: paramiko, user: ops}\nnodes: [{name: 'g[1-2]'}]\n")
    f = load_inventory_file(str(inv))
    assert f.transport == "paramiko" and [n.name for n in f.nodes] == ["g1", "g2"]
    assert inventory_transport(str(inv)) == "paramiko"
    assert [n.name for n in load_inventory(str(inv))] == ["g1", "g2"]  # the old call is unchanged
    plain = write(tmp_path, "plain.yaml", "nodes: [{name: g1}]\n")
    assert load_inventory_file(str(plain)).transport is None


def test_inventory_unknown_transport_and_loose_port_refused(tmp_path):
    inv = write(tmp_path, "inv.yaml", "defaults: {transport: telnet}\nnodes: [{name: g1}]\n")
    one_error(ck("validate", "--inventory", str(inv)), f"inventory {inv}", "defaults.transport",
              "'openssh' or 'paramiko'")
    inv.write_text("nodes: [{name: g1, port: true}]\n")
    one_error(ck("validate", "--inventory", str(inv)), f"inventory {inv}", "nodes.0.port")


def test_inventory_bad_hostlist_names_the_file():
    with pytest.raises(ConfigError, match=r"inventory i.yaml: nodes.1.name: invalid hostlist 'g\[3-1\]'"):
        parse_inventory("nodes: [{name: g1}, {name: 'g[3-1]'}]\n", "i.yaml")
