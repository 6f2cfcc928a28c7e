"""Slurm parsers: sinfo (text tables, --json) and scontrol show node; fuzzing; CLI.

Fixtures named *slurm22.05.8* were captured from Debian's Slurm 22.05.8 running a four-node
test cluster on loopback (one node drained with a reason containing ':' and '=', one drained
while running a job, one whose slurmd was stopped until it went 'down*').
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.slurm import parse_scontrol_node, parse_sinfo, parse_state
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def _t(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


SINFO_2011 = "sinfo_slurm20.11_partition_drain.txt"
SINFO_N_TILDE = "sinfo_-N_down_tilde_powered_down_nodes.txt"
SINFO_R_2011 = "sinfo_-R_slurm20.11_low_realmemory_drain_reasons.txt"
SINFO_JSON_2108 = "sinfo_json_slurm21.08.5_openapi_v0.0.37_sanitized.json"
SINFO_2205 = "sinfo_slurm22.05.8_down_star_drng_drain_idle.txt"
SINFO_N_2205 = "sinfo_-N_slurm22.05.8_down_star_drain_trailing_spaces.txt"
SINFO_R_2205 = "sinfo_-R_slurm22.05.8_reason_with_colons_truncated.txt"
SINFO_L_2205 = "sinfo_-l_slurm22.05.8_date_line_long_states.txt"
SINFO_NEL_2205 = "sinfo_-Nel_slurm22.05.8_reason_column.txt"
SINFO_S_2205 = "sinfo_-s_slurm22.05.8_nodes_aiot.txt"
SINFO_JSON_2205 = "sinfo_json_slurm22.05.8_openapi_v0.0.38_drain_not_responding.json"
SCONTROL_2411 = "scontrol_show_node_idle_cloud_slurm24.11.7_reason_node_start_up.txt"
SCONTROL_2011 = "scontrol_show_node_slurm20.11.0_idle_drain_reason_low_realmemory_first_node_only.txt"
SCONTROL_2205 = "scontrol_show_node_slurm22.05.8_4_nodes_drain_down_not_responding.txt"
SCONTROL_O_2205 = "scontrol_-o_show_node_slurm22.05.8_4_nodes_reason_with_equals.txt"


# --------------------------------------------------------------------------- states
@pytest.mark.parametrize("raw,state,flags", [
    ("IDLE+DRAIN", "idle", ["DRAIN"]),
    ("IDLE+CLOUD", "idle", ["CLOUD"]),
    ("MIXED+DRAIN", "mixed", ["DRAIN"]),
    ("DOWN+NOT_RESPONDING", "down", ["NOT_RESPONDING"]),
    ("DOWN*+DRAIN", "down", ["NOT_RESPONDING", "DRAIN"]),
    ("down~", "down", ["POWERED_DOWN"]),
    ("idle*", "idle", ["NOT_RESPONDING"]),
    ("idle#", "idle", ["POWERING_UP"]),
    ("idle%", "idle", ["POWERING_DOWN"]),
    ("idle!", "idle", ["POWER_DOWN"]),
    ("alloc$", "allocated", ["MAINTENANCE"]),
    ("mix@", "mixed", ["REBOOT_REQUESTED"]),
    ("mix-", "mixed", ["PLANNED"]),
    ("drain", "drained", ["DRAIN"]),
    ("drng", "draining", ["DRAIN"]),
    ("drain*", "drained", ["DRAIN", "NOT_RESPONDING"]),
    ("ALLOCATED+", "allocated", ["COMPLETING"]),
    (["IDLE", "DRAIN"], "idle", ["DRAIN"]),
    (["DRAIN", "MIXED"], "mixed", ["DRAIN"]),
    ("", None, []),
])
def test_parse_state(raw, state, flags):
    assert parse_state(raw) == (state, flags)


# --------------------------------------------------------------------------- sinfo text
def test_sinfo_default_slurm2011_partition_drain():
    out = parse_sinfo(_t(SINFO_2011))
    assert out.format == "summary"
    (r,) = out.rows
    assert (r.partition, r.partition_default, r.avail, r.timelimit, r.nodes) == (
        "regular", True, "up", "infinite", 4)
    assert (r.state, r.state_flags, r.state_raw, r.nodelist) == (
        "drained", ["DRAIN"], "drain", "cu[201-204]")


def test_sinfo_N_powered_down_tilde():
    out = parse_sinfo(_t(SINFO_N_TILDE))
    assert out.format == "node"
    assert [r.nodelist for r in out.rows] == ["gpu-st-ml-1", "gpu-st-ml-2"]
    for r in out.rows:
        assert (r.nodes, r.partition, r.partition_default) == (1, "gpu", True)
        assert (r.state, r.state_flags, r.state_raw) == ("down", ["POWERED_DOWN"], "down~")


def test_sinfo_R_slurm2011_reason_with_spaces():
    out = parse_sinfo(_t(SINFO_R_2011))
    assert out.format == "reasons"
    assert [r.nodelist for r in out.rows] == ["cu201", "cu202", "cu203", "cu204"]
    assert {r.reason for r in out.rows} == {"Low RealMemory"}
    assert {r.user for r in out.rows} == {"root"}
    assert [r.timestamp for r in out.rows] == [
        "2022-05-18T17:20:20", "2022-05-18T17:22:33", "2022-05-18T17:22:44", "2022-05-18T17:22:54"]
    assert out.rows[0].state is None


def test_sinfo_default_slurm2205():
    out = parse_sinfo(_t(SINFO_2205))
    assert out.format == "summary" and len(out.rows) == 6
    r0, r1, r2, r3, r4, _ = out.rows
    assert (r0.partition, r0.state, r0.state_flags, r0.nodelist) == (
        "gpu", "down", ["NOT_RESPONDING"], "gpu-001")
    assert (r1.state, r1.state_flags, r1.nodelist) == ("draining", ["DRAIN"], "gpu-003")
    assert (r2.state, r2.state_flags, r2.nodelist) == ("drained", ["DRAIN"], "gpu-002")
    assert (r3.state, r3.state_flags) == ("idle", [])
    assert (r4.partition, r4.partition_default, r4.timelimit, r4.state_raw) == (
        "debug", False, "30:00", "down*")


def test_sinfo_N_slurm2205_trailing_spaces():
    out = parse_sinfo(_t(SINFO_N_2205))
    assert [(r.nodelist, r.partition, r.state_raw) for r in out.rows] == [
        ("gpu-001", "gpu", "down*"), ("gpu-001", "debug", "down*"), ("gpu-002", "gpu", "drain"),
        ("gpu-002", "debug", "drain"), ("gpu-003", "gpu", "drng"), ("gpu-004", "gpu", "idle")]


def test_sinfo_R_slurm2205_reason_with_colons():
    out = parse_sinfo(_t(SINFO_R_2205))
    got = {r.nodelist: (r.reason, r.user, r.timestamp) for r in out.rows}
    assert got == {
        "gpu-003": ("maintenance window", "root", "2026-11-22T03:16:30"),
        "gpu-001": ("Not responding", "root", "2026-11-22T03:18:31"),
        # sinfo -R prints REASON as %20E: the reason is cut at 20 characters
        "gpu-002": ("clusterkit: gpu.ecc:", "root", "2026-11-22T03:16:28"),
    }


def test_sinfo_long_slurm2205_date_line_and_long_states():
    out = parse_sinfo(_t(SINFO_L_2205))
    assert out.format == "summary" and len(out.rows) == 6
    r = out.rows[1]
    assert (r.state, r.state_flags, r.nodelist) == ("draining", ["DRAIN"], "gpu-003")
    assert r.fields["JOB_SIZE"] == "1-infinite" and r.fields["OVERSUBS"] == "NO"
    assert (out.rows[0].state, out.rows[0].state_flags) == ("down", ["NOT_RESPONDING"])


def test_sinfo_Nel_slurm2205_reason_last_column():
    out = parse_sinfo(_t(SINFO_NEL_2205))
    assert out.format == "node" and len(out.rows) == 6
    by = {(r.nodelist, r.partition): r for r in out.rows}
    assert by[("gpu-001", "gpu")].reason == "Not responding"
    assert by[("gpu-002", "debug")].reason == "clusterkit: gpu.ecc:"
    assert by[("gpu-003", "gpu")].reason == "maintenance window"
    assert by[("gpu-004", "gpu")].reason is None  # 'none'
    assert by[("gpu-004", "gpu")].fields["MEMORY"] == "64000"
    assert by[("gpu-002", "gpu")].state == "drained"


def test_sinfo_s_slurm2205_nodes_aiot():
    out = parse_sinfo(_t(SINFO_S_2205))
    assert [(r.partition, r.nodes, r.fields["NODES(A/I/O/T)"], r.nodelist) for r in out.rows] == [
        ("gpu", 4, "1/1/2/4", "gpu-[001-004]"), ("debug", 2, "0/0/2/2", "gpu-[001-002]")]


def test_sinfo_tabs_and_crlf():
    out = parse_sinfo(_t(SINFO_R_2011).replace("\n", "\r\n"))
    assert out.rows[3].nodelist == "cu204" and out.rows[3].reason == "Low RealMemory"
    out = parse_sinfo(_t(SINFO_2011).replace("     up   ", "\tup\t"))
    assert out.rows[0].avail == "up" and out.rows[0].nodes == 4


# --------------------------------------------------------------------------- sinfo JSON
def test_sinfo_json_slurm2108():
    out = parse_sinfo(_t(SINFO_JSON_2108))
    assert out.format == "json" and out.slurm_version == "21.08.5" and out.errors == []
    assert [(r.nodelist, r.state) for r in out.rows] == [
        ("cs2.example.company.com", "mixed"), ("cs3.example.company.com", "idle"),
        ("cs4.example.company.com", "allocated"), ("cs5.example.company.com", "down")]
    r = out.rows[0]
    assert (r.partition, r.partitions, r.reason, r.user, r.timestamp) == ("hw", ["hw"], None, None, None)
    assert r.fields["cpus"] == 64 and r.fields["real_memory"] == 500000


def test_sinfo_json_slurm2205_drain_and_not_responding():
    out = parse_sinfo(_t(SINFO_JSON_2205))
    assert out.slurm_version == "22.05.8"
    by = {r.nodelist: r for r in out.rows}
    n1, n2, n3, n4 = by["gpu-001"], by["gpu-002"], by["gpu-003"], by["gpu-004"]
    assert (n1.state, n1.state_flags, n1.reason, n1.user) == (
        "down", ["NOT_RESPONDING"], "Not responding", "root")
    assert n1.timestamp == "2026-11-22T03:18:31+00:00"
    assert n1.partitions == ["gpu", "debug"]
    assert (n2.state, n2.state_flags) == ("idle", ["DRAIN"])
    assert n2.reason == "clusterkit: gpu.ecc: Xid 48 count=3 on 0000:19:00"  # not truncated
    assert (n3.state, n3.state_flags, n3.reason) == ("mixed", ["DRAIN"], "maintenance window")
    assert (n4.state, n4.state_flags, n4.reason) == ("idle", [], None)


# Slurm >= 23.02 (data_parser) layout, constructed from its documented structure: one entry per
# partition and node state, states as flag lists; no recorded sample was available.
SINFO_JSON_2302 = json.dumps({
    "sinfo": [
        {"partition": {"name": "gpu"}, "node": {"state": ["IDLE", "DRAIN"]},
         "nodes": {"total": 2, "nodes": ["gpu-001", "gpu-002"]},
         "reason": {"description": "clusterkit: nvlink.links_active: 17/18", "user": "root",
                    "time": {"set": True, "infinite": False, "number": 1700000000}}},
        {"partition": {"name": "gpu"}, "node": {"state": ["MIXED"]},
         "nodes": {"total": 1, "nodes": ["gpu-003"]},
         "reason": {"description": "", "user": "", "time": {"set": True, "number": 0}}},
    ],
    "meta": {"slurm": {"version": {"major": "23", "minor": "11", "micro": "4"},
                       "release": "23.11.4"}},
    "errors": [], "warnings": [],
}, indent=2)


def test_sinfo_json_2302_layout():
    out = parse_sinfo(SINFO_JSON_2302)
    assert out.slurm_version == "23.11.4"
    a, b = out.rows
    assert (a.partition, a.nodes, a.nodelist, a.node_names) == (
        "gpu", 2, "gpu-[001-002]", ["gpu-001", "gpu-002"])
    assert (a.state, a.state_flags, a.reason, a.user) == (
        "idle", ["DRAIN"], "clusterkit: nvlink.links_active: 17/18", "root")
    assert a.timestamp == "2023-11-14T22:13:20+00:00"
    assert (b.state, b.state_flags, b.reason, b.user, b.timestamp) == ("mixed", [], None, None, None)


@pytest.mark.parametrize("text", [
    "", "\n  \n", '{"jobs": []}\n', "{ broken", "hello world\n",
    "NodeName=cu201 Arch=x86_64 CoresPerSocket=24\n",
    "partition avail timelimit\nfoo up 1\n",
])
def test_not_sinfo(text):
    with pytest.raises(ParseError):
        parse_sinfo(text)


# --------------------------------------------------------------------------- scontrol
def test_scontrol_slurm2411_cloud_parallelcluster():
    out = parse_scontrol_node(_t(SCONTROL_2411))
    assert out.format == "multi-line"
    (n,) = out.nodes
    assert (n.name, n.state, n.state_flags, n.state_raw) == ("gpu-st-ml-1", "idle", ["CLOUD"], "IDLE+CLOUD")
    assert (n.reason, n.reason_user, n.reason_time) == ("Node start up", "root", "2026-03-11T11:05:51")
    assert n.gres == "gpu:rtxproserver6000:1" and n.partitions == ["compute-gpu"]
    assert (n.cpu_tot, n.cpu_alloc, n.real_memory_mb, n.free_mem_mb) == (32, 0, 249036, 239612)
    assert n.features == ["static", "g7e.8xlarge", "dist-ml", "efa", "gpu"]
    assert n.fields["InstanceId"] == "i-0cba89ff05359cd2f"
    assert n.fields["InstanceType"] == "g7e.8xlarge"
    assert n.fields["OS"] == "Linux 6.8.0-1045-aws #47~22.04.1-Ubuntu SMP Thu Jan 29 21:28:23 UTC 2026"
    assert n.fields["CfgTRES"] == "cpu=32,mem=249036M,billing=32"
    assert n.fields["AllocTRES"] == ""


def test_scontrol_slurm2011_idle_drain():
    out = parse_scontrol_node(_t(SCONTROL_2011))
    (n,) = out.nodes
    assert (n.name, n.state, n.state_flags) == ("cu201", "idle", ["DRAIN"])
    assert (n.reason, n.reason_user, n.reason_time) == ("Low RealMemory", "root", "2022-05-18T17:20:20")
    assert n.gres is None and n.partitions == ["regular"] and n.features == []
    assert (n.cpu_tot, n.real_memory_mb) == (48, 186000)
    assert n.fields["Comment"] == "(null)" and n.fields["ExtSensorsTemp"] == "n/s"


def test_scontrol_slurm2205_multi_and_one_line_agree():
    multi = parse_scontrol_node(_t(SCONTROL_2205))
    one = parse_scontrol_node(_t(SCONTROL_O_2205))
    assert (multi.format, one.format) == ("multi-line", "one-line")
    for out in (multi, one):
        by = {n.name: n for n in out.nodes}
        assert list(by) == ["gpu-001", "gpu-002", "gpu-003", "gpu-004"]
        assert (by["gpu-001"].state, by["gpu-001"].state_flags) == ("down", ["NOT_RESPONDING"])
        assert (by["gpu-001"].reason, by["gpu-001"].reason_time) == ("Not responding", "2026-11-22T03:18:31")
        n2 = by["gpu-002"]
        assert (n2.state, n2.state_flags) == ("idle", ["DRAIN"])
        assert n2.reason == "clusterkit: gpu.ecc: Xid 48 count=3 on 0000:19:00"
        assert (n2.reason_user, n2.reason_time) == ("root", "2026-11-22T03:16:28")
        assert "count" not in n2.fields  # 'count=3' belongs to the reason
        assert (by["gpu-003"].state, by["gpu-003"].state_flags) == ("mixed", ["DRAIN"])
        assert by["gpu-003"].alloc_mem_mb == 64000 and by["gpu-003"].partitions == ["gpu"]
        assert (by["gpu-004"].state, by["gpu-004"].reason) == ("idle", None)
        assert n2.gres == "gpu:h100:8" and n2.partitions == ["gpu", "debug"] and n2.cpu_tot == 16
        assert n2.fields["OS"] == "Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0"
    assert [n.fields for n in multi.nodes] == [n.fields for n in one.nodes]


def test_scontrol_one_line_built_from_fixture():
    # `scontrol -o show node` form constructed by joining the 20.11 fixture's lines with
    # spaces (Reason is followed by Comment=(null) on the same line here).
    multi = parse_scontrol_node(_t(SCONTROL_2011))
    joined = " ".join(ln.strip() for ln in _t(SCONTROL_2011).splitlines() if ln.strip()) + "\n"
    one = parse_scontrol_node(joined + joined.replace("cu201", "cu202"))
    assert one.format == "one-line" and [n.name for n in one.nodes] == ["cu201", "cu202"]
    assert one.nodes[0].fields == multi.nodes[0].fields
    assert one.nodes[0].reason == "Low RealMemory" and one.nodes[0].fields["Comment"] == "(null)"
    assert one.nodes[1].line_no == 2


def test_scontrol_multi_line_reason():
    # A reason holding newlines: scontrol prints its further lines indented by 7 more spaces
    # (constructed in that layout from the 20.11 fixture).
    text = _t(SCONTROL_2011).replace(
        "Reason=Low RealMemory [root@2022-05-18T17:20:20]\n",
        "Reason=Low RealMemory [root@2022-05-18T17:20:20]\n          dimm B2 count=3\n")
    (n,) = parse_scontrol_node(text).nodes
    assert n.reason == "Low RealMemory\ndimm B2 count=3"
    assert (n.reason_user, n.reason_time) == ("root", "2022-05-18T17:20:20")
    assert "count" not in n.fields and n.fields["Comment"] == "(null)"


def test_scontrol_not_found_message():
    out = parse_scontrol_node("Node nosuch not found\n")  # what scontrol prints (2>&1)
    assert out.nodes == [] and out.errors == ["Node nosuch not found"]


@pytest.mark.parametrize("text", [
    "", "hello\n", _t(SINFO_2011), '{"nodes": []}\n',
    "NodeName=cu201 Arch=x86_64\n   this line has no key value pairs\n",
])
def test_not_scontrol(text):
    with pytest.raises(ParseError):
        parse_scontrol_node(text)


# --------------------------------------------------------------------------- fuzz
_SINFO_ALL = [_t(n) for n in (SINFO_2011, SINFO_N_TILDE, SINFO_R_2011, SINFO_JSON_2108,
                              SINFO_2205, SINFO_R_2205, SINFO_L_2205, SINFO_NEL_2205,
                              SINFO_S_2205, SINFO_JSON_2205)] + [SINFO_JSON_2302]
_SCONTROL_ALL = [_t(n) for n in (SCONTROL_2411, SCONTROL_2011, SCONTROL_2205, SCONTROL_O_2205)]


@settings(max_examples=80, deadline=None)
@given(mutated(_SINFO_ALL))
def test_fuzz_sinfo(text):
    assert_only_parse_error(parse_sinfo, text)


@settings(max_examples=60, deadline=None)
@given(mutated(_SCONTROL_ALL))
def test_fuzz_scontrol(text):
    assert_only_parse_error(parse_scontrol_node, text)


# --------------------------------------------------------------------------- CLI


def test_cli_sinfo_json():
    r = _cli("sinfo", str(FIX / SINFO_N_TILDE), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "node"
    row = doc["rows"][0]
    for key in ("partition", "state", "state_flags", "nodelist", "nodes", "reason", "user",
                "timestamp"):
        assert key in row
    assert row["state_flags"] == ["POWERED_DOWN"]


def test_cli_scontrol_json():
    r = _cli("scontrol-node", str(FIX / SCONTROL_2011), "--json")
    assert r.returncode == 0, r.stderr
    node = json.loads(r.stdout)["nodes"][0]
    assert (node["name"], node["state"], node["state_flags"], node["reason"]) == (
        "cu201", "idle", ["DRAIN"], "Low RealMemory")
    for key in ("reason_user", "reason_time", "gres", "partitions", "cpu_tot", "real_memory_mb",
                "fields"):
        assert key in node


@pytest.mark.parametrize("tool,other", [
    ("sinfo", FIX / SCONTROL_2011),
    ("scontrol-node", FIX / SINFO_R_2011),
])
def test_cli_wrong_tool_exit_2(tool, other):
    r = _cli(tool, str(other))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
