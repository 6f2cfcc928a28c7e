"""The simulated fabric: fleet keys for NCCL faults and leaf switches, the bandwidth model, and the
generated nccl-tests / ib_write_bw stand-ins run as processes with the environment they read."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from clusterkit import sim
from clusterkit.errors import ConfigError
from clusterkit.nccl.judge import busbw_at
from clusterkit.parsers.nccl_tests import parse_nccl_tests
from clusterkit.parsers.perftest import parse_ib_write_bw
from clusterkit.sim import fabric
from clusterkit.sim.fabric import allreduce_busbw, fabric_view, hca_selected, ib_pair_gbps

GIB8 = 8 << 30
RING = {"NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0"}
RAILS = [f"mlx5_{i}" for i in range(8)]
NET8 = 8 * 48.5 * 0.95  # 8 NDR rails, two nodes, ring: 368.6 GB/s (capped at 368)


def view_of(faults: str = "", extra: str = "", nodes: str = "gpu-[001-008]") -> dict:
    text = f"name: t\nnodes: '{nodes}'\n{extra}"
    if faults:
        text += "faults:\n" + "".join(f"  - {line}\n" for line in faults.strip().splitlines())
    return fabric_view(sim.parse_fleet(text, "t.yaml"))


def near(x: float) -> object:
    return pytest.approx(x, rel=fabric.NOISE + 0.001)


def hca(*devices: str) -> dict[str, str]:
    return {**RING, "NCCL_IB_HCA": "=" + ",".join(f"{d}:1" for d in devices)}


# ------------------------------------------------------------------------------ the model
def test_one_node_is_nvls_unless_nvls_is_off_and_a_slow_node_divides_it():
    v = view_of("{node: gpu-002, kind: nccl_slow, value: 1.25}")
    assert allreduce_busbw(v, ["gpu-001"], {}) == near(478)
    for env in (RING, {"NCCL_NVLS_ENABLE": "0"}, {"NCCL_ALGO": "Ring"}, {"NCCL_ALGO": "^NVLS"}):
        assert allreduce_busbw(v, ["gpu-001"], env) == near(368), env
    assert allreduce_busbw(v, ["gpu-001"], {"NCCL_ALGO": "NVLS,Ring"}) == near(478)
    assert allreduce_busbw(v, ["gpu-002"], {}) == near(478 / 1.25)
    assert allreduce_busbw(v, ["gpu-002"], RING) == near(368 / 1.25)
    # the same nodes give the same figure; other nodes a slightly different one (noise)
    assert allreduce_busbw(v, ["gpu-001"], {}) == allreduce_busbw(v, ["gpu-001"], {})
    figures = {allreduce_busbw(v, [f"gpu-00{i}"], {}) for i in (1, 3, 4, 5)}
    assert len(figures) > 1 and all(abs(f / 478 - 1) <= fabric.NOISE for f in figures)


def test_two_nodes_ring_is_the_network_and_nvls_tree_goes_past_it():
    v = view_of()
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], RING) == near(368)  # 8 x 48.5 x 0.95, capped
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], {}) == near(478)  # NVLS-tree: min(478, 368.6 x 1.3)
    assert allreduce_busbw(v, ["gpu-001", "gpu-002", "gpu-003"], {}) == near(368)
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], hca(*RAILS)) == near(368)


def test_a_slow_node_slows_every_test_it_is_in():
    v = view_of("{node: gpu-002, kind: nccl_slow, value: 1.25}")
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], RING) == near(NET8 / 1.25)
    assert allreduce_busbw(v, ["gpu-001", "gpu-003"], RING) == near(368)


def test_hca_degraded_counts_only_while_nccl_uses_that_rail():
    v = view_of("{node: gpu-003, kind: hca_degraded, device: mlx5_3, value: 2}")
    pair = ["gpu-001", "gpu-003"]
    assert allreduce_busbw(v, pair, RING) == near(8 * 48.5 / 2 * 0.95)  # unset: every rail, mlx5_3 too
    assert allreduce_busbw(v, pair, hca(*RAILS)) == near(8 * 48.5 / 2 * 0.95)
    seven = [d for d in RAILS if d != "mlx5_3"]
    assert allreduce_busbw(v, pair, hca(*seven)) == near(7 * 48.5 * 0.95)
    assert allreduce_busbw(v, pair, {**RING, "NCCL_IB_HCA": "^mlx5_3"}) == near(7 * 48.5 * 0.95)
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], RING) == near(368)
    assert ib_pair_gbps(v, "gpu-001", "gpu-003", "mlx5_3") == pytest.approx(390.98 / 2, abs=0.01)
    assert ib_pair_gbps(v, "gpu-003", "gpu-001", "mlx5_3") == pytest.approx(390.98 / 2, abs=0.01)  # both ends
    assert ib_pair_gbps(v, "gpu-001", "gpu-003", "mlx5_2") == pytest.approx(390.98)


def test_a_100g_rail_left_in_nccl_ib_hca_halves_the_test_or_worse_and_excluded_it_does_not():
    v = view_of("{node: gpu-004, kind: ib_rate, device: mlx5_5, value: 100}")
    pair = ["gpu-001", "gpu-004"]
    left_in = allreduce_busbw(v, pair, hca(*RAILS))
    assert left_in == near(8 * 12.125 * 0.95) and left_in <= 368 / 2
    assert allreduce_busbw(v, pair, hca(*[d for d in RAILS if d != "mlx5_5"])) == near(7 * 48.5 * 0.95)
    assert ib_pair_gbps(v, "gpu-001", "gpu-004", "mlx5_5") == pytest.approx(97.75, abs=0.01)


def test_a_storage_port_is_used_when_nccl_ib_hca_is_unset():
    v = view_of(extra="hardware: {ib: {storage_ports: 1}}\n")
    pair = ["gpu-001", "gpu-002"]
    assert allreduce_busbw(v, pair, RING) == near(9 * 12.125 * 0.95)  # 8 rails + the 100G Ethernet port
    assert allreduce_busbw(v, pair, {**RING, "NCCL_IB_HCA": "mlx5"}) == near(9 * 12.125 * 0.95)  # prefix
    assert allreduce_busbw(v, pair, hca(*RAILS)) == near(368)
    assert allreduce_busbw(v, pair, {**RING, "NCCL_IB_HCA": "^mlx5_8"}) == near(368)


def test_down_ports_are_not_used_and_no_usable_device_falls_back_to_sockets():
    v = view_of("{node: gpu-002, kind: ib_port_down, device: mlx5_6}\n{node: gpu-003, kind: ib_missing, value: 6}")
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], RING) == near(7 * 48.5 * 0.95)
    assert allreduce_busbw(v, ["gpu-001", "gpu-003"], RING) == near(6 * 48.5 * 0.95)
    assert ib_pair_gbps(v, "gpu-001", "gpu-002", "mlx5_6") is None
    assert ib_pair_gbps(v, "gpu-001", "gpu-003", "mlx5_7") is None
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], {**RING, "NCCL_IB_HCA": "=mlx9_0"}) == near(fabric.SOCKET_GBPS)


def test_a_degraded_uplink_counts_only_for_tests_that_cross_leaves():
    v = view_of("{switch: leaf-b, kind: uplink_degraded, value: 2}",
                "switches: {leaf-a: 'gpu-[001-004]', leaf-b: 'gpu-[005-008]'}\n")
    assert v["leaves"] == {"leaf-a": [f"gpu-00{i}" for i in range(1, 5)],
                           "leaf-b": [f"gpu-00{i}" for i in range(5, 9)]} and v["uplinks"] == {"leaf-b": 2.0}
    assert allreduce_busbw(v, ["gpu-001", "gpu-002"], RING) == near(368)
    assert allreduce_busbw(v, ["gpu-005", "gpu-006"], RING) == near(368)  # under leaf-b, not crossing
    assert allreduce_busbw(v, ["gpu-001", "gpu-005"], RING) == near(8 * 48.5 * 0.95 / 2)
    assert ib_pair_gbps(v, "gpu-001", "gpu-005", "mlx5_0") == pytest.approx(390.98 / 2, abs=0.01)
    assert ib_pair_gbps(v, "gpu-005", "gpu-006", "mlx5_0") == pytest.approx(390.98)


def test_nccl_ib_hca_is_read_as_nccl_reads_it():
    assert hca_selected(None, "mlx5_3") and hca_selected("", "mlx5_3")
    assert hca_selected("mlx5_1", "mlx5_1") and hca_selected("mlx5_1", "mlx5_10")  # a prefix
    assert not hca_selected("=mlx5_1", "mlx5_10") and hca_selected("=mlx5_1:1", "mlx5_1")
    assert not hca_selected("=mlx5_1:2", "mlx5_1")  # port 2 of it: not port 1
    assert not hca_selected("^mlx5_1", "mlx5_1") and not hca_selected("^mlx5_1", "mlx5_12")
    assert hca_selected("^=mlx5_1", "mlx5_12") and not hca_selected("^=mlx5_1", "mlx5_1")
    assert fabric.parse_ib_hca("^=mlx5_0:1, mlx5_3") == (True, True, [("mlx5_0", 1), ("mlx5_3", None)])


def test_the_view_lists_only_faulted_nodes_and_stays_small_for_big_fleets():
    t0 = time.monotonic()
    v = view_of("{node: 'gpu-[0100-0101]', kind: nccl_slow, value: 1.1}\n{node: gpu-0777, kind: nccl_hang}",
                "switches: {a: 'gpu-[0001-0512]', b: 'gpu-[0513-1024]'}\n", nodes="gpu-[0001-1024]")
    assert time.monotonic() - t0 < 1.0
    assert sorted(v["nodes"]) == ["gpu-0100", "gpu-0101", "gpu-0777"]
    assert v["nodes"]["gpu-0777"]["hang"] and v["nodes"]["gpu-0100"]["slow"] == 1.1
    assert v["default"]["slow"] == 1.0 and not v["default"]["hang"] and len(v["default"]["rails"]) == 8
    assert len(json.dumps(v)) < 40_000
    assert fabric.node_entry(v, "gpu-0999") is v["default"]


def test_the_minimal_hostlist_expander_reads_what_slurm_prints():
    assert fabric._simple_expand("gpu-[001-003,007],node1") == ["gpu-001", "gpu-002", "gpu-003", "gpu-007", "node1"]
    assert fabric._simple_expand("n[8-10]") == ["n8", "n9", "n10"]
    assert fabric.expand("gpu-[001-002],gpu-001") == ["gpu-001", "gpu-002"]


# ------------------------------------------------------------------------------ fleet file
@pytest.mark.parametrize("text, message", [
    ("faults: [{switch: leaf-c, kind: uplink_degraded, value: 2}]\nswitches: {leaf-a: 'n[1-2]'}\n",
     "faults.0.switch: no leaf switch leaf-c: the fleet's switches are leaf-a"),
    ("faults: [{switch: leaf-a, kind: uplink_degraded, value: 2}]\n",
     "faults.0.switch: no leaf switch leaf-a: the fleet has no switches"),
    ("switches: {leaf-a: 'n[1-3]', leaf-b: 'n[3-4]'}\n",
     "switches.leaf-b: n3 is under leaf leaf-a too: a node sits under one leaf switch"),
    ("switches: {leaf-a: 'n[1-9]'}\n", "switches.leaf-a: n5 (and 4 more) is not a node of this fleet"),
    ("switches: {'leaf a': n1}\n", "switches: switch name 'leaf a'"),
    ("faults: [{switch: leaf-a, kind: uplink_degraded}]\nswitches: {leaf-a: n1}\n",
     "faults.0.value: uplink_degraded needs a value: a slow-down factor"),
    ("faults: [{node: n1, kind: nccl_slow}]\n", "faults.0.value: nccl_slow needs a value"),
    ("faults: [{node: n1, kind: nccl_slow, value: 0.5}]\n", "faults.0.value: nccl_slow takes a slow-down factor"),
    ("faults: [{node: n1, kind: hca_degraded, value: 2}]\n", "hca_degraded needs a device"),
    ("faults: [{node: n1, kind: hca_degraded, device: mlx5_9, value: 2}]\n", "faults.0.device: no RDMA device mlx5_9"),
    ("faults: [{node: n1, switch: leaf-a, kind: uplink_degraded, value: 2}]\nswitches: {leaf-a: n1}\n",
     "uplink_degraded takes no node: it acts on a leaf switch"),
    ("faults: [{kind: nccl_hang}]\n", "faults.0: nccl_hang needs a node"),
    ("faults: [{node: n1, switch: leaf-a, kind: nccl_hang}]\nswitches: {leaf-a: n1}\n",
     "nccl_hang takes no switch"),
    ("faults: [{node: n1, kind: nccl_init_fail, value: 1}]\n", "nccl_init_fail takes no value"),
])
def test_fleet_mistakes_are_one_line_each(text, message):
    with pytest.raises(ConfigError) as e:
        sim.parse_fleet("nodes: 'n[1-4]'\n" + text, "f.yaml")
    assert str(e.value).startswith("sim fleet f.yaml: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_fleet_with_switches_is_kept_checked_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "root"))
    path = tmp_path / "fleet.yaml"
    path.write_text("nodes: 'n[1-4]'\nswitches: {a: 'n[1-2]', b: 'n[3-4]'}\n"
                    "faults:\n  - {switch: b, kind: uplink_degraded, value: 1.5}\n"
                    "  - {node: n2, kind: hca_degraded, device: mlx5_0, value: 3}\n")
    first = sim.load_fleet(str(path))
    sim._CACHE.clear()
    again = sim.load_fleet(str(path))  # from the kept checked form
    assert again is not first and again.model_dump() == first.model_dump()
    assert again.leaves() == {"a": ["n1", "n2"], "b": ["n3", "n4"]}
    assert [f.node for f in again.faults] == [None, "n2"] and again.faults_for("n3") == []
    sim._CACHE.clear()


# ------------------------------------------------------------------------------ the stand-ins
FLEET = """name: fab
nodes: 'gpu-[001-008]'
switches: {leaf-a: 'gpu-[001-004]', leaf-b: 'gpu-[005-008]'}
faults:
  - {node: gpu-002, kind: nccl_slow, value: 1.25}
  - {node: gpu-003, kind: nccl_init_fail}
  - {node: gpu-004, kind: nccl_hang}
  - {node: gpu-006, kind: hca_degraded, device: mlx5_2, value: 2}
  - {switch: leaf-b, kind: uplink_degraded, value: 1.5}
"""


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fabric")
    fleet = tmp / "fleet.yaml"
    fleet.write_text(FLEET)
    old = os.environ.get("CLUSTERKIT_SIM_ROOT")
    os.environ["CLUSTERKIT_SIM_ROOT"] = str(tmp / "root")
    try:
        d = fabric.stand_in_dir(str(fleet))
        assert fabric.stand_in_dir(str(fleet)) == d  # written once
        view = json.loads((Path(d) / fabric.VIEW_FILE).read_text())
        yield Path(d), view, tmp
    finally:
        sim._CACHE.clear()
        if old is None:
            os.environ.pop("CLUSTERKIT_SIM_ROOT", None)
        else:
            os.environ["CLUSTERKIT_SIM_ROOT"] = old


def run(d: Path, tool: str, *args: str, timeout: float = 10, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(d / tool), *args], env={"PATH": os.environ.get("PATH", ""), **env},
                          capture_output=True, text=True, timeout=timeout)


def test_the_directory_holds_every_stand_in_and_a_racing_writer_keeps_the_first(stand_ins):
    d, view, _ = stand_ins
    assert {p.name for p in d.iterdir()} == set(fabric.TOOLS) | {fabric.VIEW_FILE, ".complete"}
    assert all(os.access(d / t, os.X_OK) for t in fabric.TOOLS)
    assert "import clusterkit" not in (d / "all_reduce_perf").read_text()
    before = (d / fabric.VIEW_FILE).stat().st_ino
    fabric.write_stand_ins(str(d), sim.parse_fleet(FLEET, "again"))  # another process, a moment later
    assert (d / fabric.VIEW_FILE).stat().st_ino == before
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".fabric-")]


def test_all_reduce_perf_prints_nccl_tests_text_the_parser_reads(stand_ins):
    d, view, _ = stand_ins
    r = run(d, "all_reduce_perf", "-b", "1G", "-e", "16G", "-f", "2", "-g", "1", "-d", "double",
            CLUSTERKIT_NODE="gpu-001", CLUSTERKIT_SIM_NODES="gpu-[001,005]", **RING)
    assert r.returncode == 0, r.stderr
    (run_,) = parse_nccl_tests(r.stdout).runs
    assert run_.ok and run_.collective == "all_reduce" and run_.nranks == 16
    assert [x.size_bytes for x in run_.rows] == [1 << 30, 2 << 30, 4 << 30, 8 << 30, 16 << 30]
    assert {dev.host for dev in run_.devices} == {"gpu-001", "gpu-005"}
    model = allreduce_busbw(view, ["gpu-001", "gpu-005"], RING)
    assert model == near(NET8 / 1.5)  # across leaves: leaf-b's uplink
    assert busbw_at(run_, GIB8) == model
    row = run_.rows[3].out_of_place
    assert row.algbw_gbps == pytest.approx(model * 16 / 30, abs=0.01)
    assert row.time_us == pytest.approx(GIB8 / (row.algbw_gbps * 1e3), rel=1e-3)  # consistent with it
    assert r.stdout.rstrip().endswith("#") and "# Avg bus bandwidth    : " in r.stdout


def test_one_node_defaults_to_this_node_and_nvls(stand_ins):
    d, view, _ = stand_ins
    r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", CLUSTERKIT_NODE="gpu-007")
    (run_,) = parse_nccl_tests(r.stdout).runs
    assert run_.nranks == 8 and {dev.host for dev in run_.devices} == {"gpu-007"}
    assert busbw_at(run_, GIB8) == allreduce_busbw(view, ["gpu-007"], {}) == near(478)
    r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", SLURMD_NODENAME="gpu-002", NCCL_NVLS_ENABLE="0")
    assert busbw_at(parse_nccl_tests(r.stdout).runs[0], GIB8) == near(368 / 1.25)


def test_slurm_variables_name_the_nodes_and_only_rank_0_prints(stand_ins):
    d, view, _ = stand_ins
    r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", SLURMD_NODENAME="gpu-005",
            SLURM_STEP_NODELIST="gpu-[005-006]", SLURM_JOB_NODELIST="gpu-[001-008]", SLURM_PROCID="0", **RING)
    (run_,) = parse_nccl_tests(r.stdout).runs
    assert {dev.host for dev in run_.devices} == {"gpu-005", "gpu-006"}
    assert busbw_at(run_, GIB8) == near(8 * 48.5 / 2 * 0.95)  # gpu-006's mlx5_2 at half
    r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", SLURM_JOB_NODELIST="gpu-[007-008]")
    assert parse_nccl_tests(r.stdout).runs[0].nranks == 16
    for var in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", SLURM_STEP_NODELIST="gpu-[005-006]", **{var: "3"})
        assert (r.returncode, r.stdout) == (0, ""), var
    r = run(d, "all_reduce_perf", CLUSTERKIT_SIM_NODES="gpu-[001,003]", SLURM_PROCID="9")
    assert (r.returncode, r.stdout) == (1, "")  # the test's status, silently


def test_json_output_file_parses_too(stand_ins):
    d, view, tmp = stand_ins
    out = tmp / "r.json"
    r = run(d, "all_reduce_perf", "-b", "4G", "-e", "8G", "-f", "2", "-J", str(out),
            CLUSTERKIT_SIM_NODES="gpu-[001-002]", **RING)
    assert r.returncode == 0, r.stderr
    parsed = parse_nccl_tests(out.read_text())
    assert parsed.format == "json"
    (run_,) = parsed.runs
    assert run_.ok and run_.test == "all_reduce_perf" and run_.nranks == 16
    assert busbw_at(run_, GIB8) == allreduce_busbw(view, ["gpu-001", "gpu-002"], RING) == near(NET8 / 1.25)
    assert busbw_at(parse_nccl_tests(r.stdout).runs[0], GIB8) == busbw_at(run_, GIB8)


@pytest.mark.parametrize("test", ["all_gather_perf", "reduce_scatter_perf", "alltoall_perf", "sendrecv_perf"])
def test_the_other_collectives_parse(stand_ins, test):
    d, view, _ = stand_ins
    r = run(d, test, "-b", "8G", "-e", "8G", CLUSTERKIT_SIM_NODES="gpu-[007-008]")
    assert r.returncode == 0, r.stderr
    (run_,) = parse_nccl_tests(r.stdout).runs
    assert run_.ok and run_.collective == test[:-5] and run_.nranks == 16
    assert busbw_at(run_, GIB8) == fabric.collective_busbw(view, test[:-5], ["gpu-007", "gpu-008"], {})


def test_init_failure_names_the_node_and_exits_1(stand_ins):
    d, view, _ = stand_ins
    r = run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", CLUSTERKIT_SIM_NODES="gpu-[001-004]")
    assert r.returncode == 1
    assert "gpu-003: Test NCCL failure common.cu:1279 'unhandled system error" in r.stdout
    (run_,) = parse_nccl_tests(r.stdout).runs
    assert run_.rows == [] and "#       size" not in r.stdout  # before the table: an init failure
    assert run_.error is not None and run_.error.startswith("gpu-003: Test NCCL failure")
    assert not run_.ok and " .. gpu-003 pid " in r.stdout


def test_a_hang_prints_the_header_and_never_finishes(stand_ins):
    d, view, _ = stand_ins
    with pytest.raises(subprocess.TimeoutExpired) as e:
        run(d, "all_reduce_perf", "-b", "8G", "-e", "8G", timeout=1.5, CLUSTERKIT_SIM_NODES="gpu-[004-005]")
    out = e.value.stdout
    text = out.decode() if isinstance(out, bytes) else (out or "")
    assert "# Collective test starting: all_reduce_perf" in text and "#       size         count" in text
    assert "Avg bus bandwidth" not in text
    (run_,) = parse_nccl_tests(text).runs
    assert not run_.complete and run_.rows == []


def test_usage_and_bad_options(stand_ins):
    d, _, _ = stand_ins
    r = run(d, "all_reduce_perf", "-h")
    assert r.returncode == 0 and "-J,--output_file" in r.stdout
    r = run(d, "all_reduce_perf", "-Q")
    assert r.returncode == 1 and "invalid option '-Q'" in r.stderr
    r = run(d, "all_reduce_perf", CLUSTERKIT_SIM_NODES="gpu-[001")
    assert r.returncode == 2 and "cannot read the test's nodes" in r.stderr and r.stdout == ""


def test_ib_write_bw_across_nodes_and_in_loopback(stand_ins):
    d, view, _ = stand_ins
    args = ["-d", "mlx5_2", "-p", "18517", "-s", "8388608", "--report_gbits", "-F"]
    server = run(d, "ib_write_bw", *args, CLUSTERKIT_NODE="gpu-006")
    assert server.returncode == 0 and parse_ib_write_bw(server.stdout).server
    far = run(d, "ib_write_bw", *args, "gpu-006", CLUSTERKIT_NODE="gpu-005")
    assert far.returncode == 0, far.stderr
    got = parse_ib_write_bw(far.stdout)
    assert got.rows[0].bw_avg_gbps == pytest.approx(390.98 / 2, abs=0.01)  # gpu-006's end degraded
    crossing = run(d, "ib_write_bw", *args, "gpu-006", CLUSTERKIT_NODE="gpu-001")
    assert parse_ib_write_bw(crossing.stdout).rows[0].bw_avg_gbps == pytest.approx(390.98 / 2 / 1.5, abs=0.01)
    healthy = run(d, "ib_write_bw", "-d", "mlx5_0", "--report_gbits", "gpu-002", CLUSTERKIT_NODE="gpu-001")
    assert parse_ib_write_bw(healthy.stdout).rows[0].bw_avg_gbps == pytest.approx(390.98, abs=0.01)
    loop = run(d, "ib_write_bw", *args, "localhost", CLUSTERKIT_NODE="gpu-006")
    assert parse_ib_write_bw(loop.stdout).rows[0].bw_avg_gbps == pytest.approx(390.98, abs=0.01)


def test_ib_write_bw_to_a_node_whose_port_is_down_cannot_connect(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path))
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults: [{node: n2, kind: ib_port_down, device: mlx5_1}]\n")
    d = Path(fabric.stand_in_dir(str(fleet)))
    sim._CACHE.clear()
    r = run(d, "ib_write_bw", "-d", "mlx5_1", "-p", "18600", "--report_gbits", "n2", CLUSTERKIT_NODE="n1")
    assert r.returncode == 1 and "Couldn't connect to n2:18600" in r.stderr and r.stdout == ""


def test_the_stand_ins_load_no_pydantic_and_share_the_loopback_figure(stand_ins):
    import sys

    from clusterkit.sim.context import WRITE_BW_EFFICIENCY

    assert fabric.WRITE_BW_EFFICIENCY == WRITE_BW_EFFICIENCY
    d, _, _ = stand_ins
    code = ("import importlib.util, io, contextlib, sys\n"
            f"spec = importlib.util.spec_from_file_location('f', {fabric.__file__!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    mod.stand_in_main('all_reduce_perf', ['-b', '8G', '-e', '8G'], {str(d / fabric.VIEW_FILE)!r})\n"
            f"    mod.stand_in_main('ib_write_bw', ['-d', 'mlx5_0', 'gpu-002'], {str(d / fabric.VIEW_FILE)!r})\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'yaml') or m == 'clusterkit.sim']\n"
            "print(heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ.get("PATH", ""),
                                                          "CLUSTERKIT_NODE": "gpu-001"},
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
