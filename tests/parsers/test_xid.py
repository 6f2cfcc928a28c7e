"""dmesg-xid parser: Xid/SXid lines in kernel logs, the Xid catalog, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.xid import ACTIONS, classify, load_catalog, parse_xid
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "dmesg-xid"
FLOOD = FIX / "dmesg_decode_iso_xid13_xid43_flood.txt"
REMAP = FIX / "dmesg_iso_xid48_63_94_dbe_row_remap_peermem.txt"
SLURM_FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- fixtures
def test_decode_iso_flood_xid13_xid43():
    out = parse_xid(_text(FLOOD))
    assert len(out.events) == 636
    assert out.counts == {13: 629, 43: 7}
    assert out.sxid_counts == {}
    assert {e.pci for e in out.events} == {"0000:38:00"}
    first = out.events[0]
    assert first.xid == 13 and first.line_no == 1
    assert first.timestamp == "2025-01-21T02:21:33,498559+00:00"
    assert first.pid is None and first.process is None  # pid='<unknown>', name=<unknown>
    assert first.message == "Graphics SM Warp Exception on (GPC 8, TPC 5, SM 0): Out Of Range Address"
    assert first.name == "Graphics Engine Exception" and first.action == "monitor"
    x43 = [e for e in out.events if e.xid == 43]
    assert [e.pid for e in x43[:3]] == [2815167, 2823801, 2839444]
    assert {e.process for e in x43} == {"pt_main_thread"}
    assert x43[-1].timestamp == "2025-01-21T04:41:44,287197+00:00"
    assert x43[0].message == "Ch 00000008"
    assert out.worst_action == "monitor"
    (dev,) = out.devices
    assert dev.counts == {13: 629, 43: 7} and dev.worst_action == "monitor"


def test_iso_dbe_row_remap_contained_ecc():
    out = parse_xid(_text(REMAP))
    assert out.counts == {48: 1, 63: 1, 94: 9}
    assert len(out.events) == 11  # the nvidia-peermem flood lines are not events
    dbe, remap = out.events[0], out.events[1]
    assert (dbe.xid, dbe.line_no, dbe.action) == (48, 11, "reset_gpu")
    assert dbe.pci == "0000:19:00"
    assert "physAddr 0x12bac1c3e0" in dbe.message
    assert (remap.xid, remap.action) == (63, "monitor")
    assert remap.message.startswith("Row Remapper: New row (0x00000012bac1c3e0)")
    x94 = [e for e in out.events if e.xid == 94]
    assert {e.action for e in x94} == {"reset_gpu"}
    assert x94[0].message == "Contained: SM (0x1). RST: No, D-RST: No" and x94[0].pid is None
    assert [e.pid for e in x94[1:]] == [1248209] * 8
    assert {e.process for e in x94[1:]} == {"python3.10"}
    assert [e.message for e in x94[1:3]] == ["Ch 00000008", "Ch 00000009"]
    assert out.worst_action == "reset_gpu"
    assert "Xid 94 (Contained ECC error) x9 -> reset_gpu" in out.summary()


# --------------------------------------------------------------------------- other layouts
# Constructed lines in the documented layouts of each log source (driver message text as the
# NVIDIA XID documentation shows it); no recorded sample of these Xids was available.
PLAIN = "[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
JOURNAL = (
    "-- Logs begin at Mon 2025-01-20 10:00:00 UTC, end at Tue 2025-01-21 03:00:00 UTC. --\n"
    "Jan 21 02:21:33 gpu-001 kernel: NVRM: Xid (PCI:0000:b3:00): 74, pid=1234, name=python, "
    "NVLink: fatal error detected on link 3(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)\n"
    "Jan 21 02:21:34 gpu-001 kernel: nvidia-nvswitch3: SXid (PCI:0000:c8:00.0): 24007, Fatal, "
    "Link 00 sourcetrack TCEN0 crumbstore ECC DBE Error\n"
    "Jan 21 02:21:34 gpu-001 kernel: nvidia-nvswitch3: SXid (PCI:0000:c8:00.0): 24007, "
    "Severity 1 Engine instance 00 Sub-engine instance 00\n"
    "Jan 21 02:21:35 gpu-001 kernel: nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, "
    "Link 32 egress non-posted PRIV error (First)\n"
)


def test_plain_dmesg_uptime_stamp():
    (e,) = parse_xid(PLAIN).events
    assert (e.xid, e.pci, e.action, e.uptime_s, e.timestamp) == (
        79, "0000:3b:00", "reboot", pytest.approx(1234.56789), None)
    assert e.message == "GPU has fallen off the bus."


def test_journalctl_xid_and_sxid():
    out = parse_xid(JOURNAL)
    x74, sx1, sx2, sx3 = out.events
    assert (x74.xid, x74.host, x74.timestamp, x74.pid, x74.process) == (
        74, "gpu-001", "Jan 21 02:21:33", 1234, "python")
    assert x74.action == "reset_gpu"
    assert sx1.sxid and sx1.xid == 24007 and sx1.pci == "0000:c8:00.0"
    assert sx1.severity == "fatal" and sx1.action == "reboot"
    # the follow-up line of the same SXid carries no severity word: it inherits the event's
    assert sx2.severity == "fatal" and sx2.action == "reboot"
    assert sx3.severity == "non-fatal" and sx3.action == "monitor"
    assert out.counts == {74: 1} and out.sxid_counts == {24007: 2, 12028: 1}
    assert out.worst_action == "reboot"
    assert len(out.devices) == 3


def test_decode_with_uptime_and_ctime_and_raw_level():
    text = ("kern  :warn  : [  812.123456] NVRM: Xid (PCI:0000:19:00): 92, pid='<unknown>', "
            "name=<unknown>, High single-bit ECC error rate\n"
            "[Tue Jan 21 02:21:33 2025] NVRM: Xid (PCI:0000:4e:00): 154, GPU recovery action "
            "changed from 0x0 (None) to 0x1 (GPU Reset Required)\n"
            "<4>[    5.100000] NVRM: Xid (0000:03:00): 250, a code the catalog does not know\n")
    a, b, c = parse_xid(text).events
    assert (a.xid, a.action, a.uptime_s) == (92, "monitor", pytest.approx(812.123456))
    assert (b.xid, b.action, b.timestamp) == (154, "reset_gpu", "Tue Jan 21 02:21:33 2025")
    assert (c.xid, c.pci, c.action, c.name) == (250, "0000:03:00", "unknown", None)


def test_empty_and_xid_free_logs():
    assert parse_xid("").events == []
    assert parse_xid("\n\n").worst_action is None
    peermem = "\n".join(ln for ln in _text(REMAP).splitlines() if "Xid" not in ln)
    out = parse_xid(peermem)
    assert out.events == [] and out.counts == {}


@pytest.mark.parametrize("text", [
    "hello world\n",
    "CA 'mlx5_0'\n\tCA type: MT4129\n\tNumber of ports: 1\n",
    '{\n  "fio version" : "fio-3.26"\n}\n',
])
def test_not_a_kernel_log(text):
    with pytest.raises(ParseError) as ei:
        parse_xid(text)
    assert ei.value.line_no == 1


def test_crlf():
    assert parse_xid(_text(REMAP).replace("\n", "\r\n")).counts == {48: 1, 63: 1, 94: 9}


# --------------------------------------------------------------------------- catalog
def test_catalog_is_versioned_and_valid():
    cat = load_catalog()
    assert cat.version and "XID Errors" in cat.source and "GPU Debug Guidelines" in cat.source
    assert set(ACTIONS) == {"isolate", "reset_gpu", "reboot", "monitor"}
    for info in cat.xid.values():
        assert info.action in ACTIONS and info.name
    assert load_catalog() is cat  # cached


@pytest.mark.parametrize("xid,action", [
    (13, "monitor"), (31, "monitor"), (43, "monitor"), (45, "monitor"), (48, "reset_gpu"),
    (63, "monitor"), (64, "isolate"), (74, "reset_gpu"), (79, "reboot"), (92, "monitor"),
    (94, "reset_gpu"), (95, "reset_gpu"), (119, "reset_gpu"), (120, "reset_gpu"),
    (149, "reset_gpu"), (9999, "unknown"),
])
def test_catalog_actions(xid, action):
    assert classify(xid)[1] == action


@pytest.mark.parametrize("msg,action", [
    ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "reboot"),
    ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "monitor"),
    ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "isolate"),
])
def test_xid154_action_follows_message(msg, action):
    assert classify(154, msg) == ("GPU Recovery Action Changed", action)


# --------------------------------------------------------------------------- fuzz
_ALL = [_text(REMAP), PLAIN + JOURNAL, _text(FLOOD)[:20000]]


@settings(max_examples=60, deadline=None)
@given(mutated(_ALL))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_xid, text)


# --------------------------------------------------------------------------- CLI


def test_cli_json_keys():
    r = _cli("dmesg-xid", str(REMAP), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ev = doc["events"][0]
    for key in ("xid", "pci", "message", "action", "timestamp", "pid", "process", "sxid", "name"):
        assert key in ev
    assert (ev["xid"], ev["action"]) == (48, "reset_gpu")
    assert doc["counts"] == {"48": 1, "63": 1, "94": 9}


def test_cli_wrong_tool_exit_2():
    other = SLURM_FIX / "sinfo_-R_slurm20.11_low_realmemory_drain_reasons.txt"
    r = _cli("dmesg-xid", str(other))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
