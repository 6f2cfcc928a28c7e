"""The xid domain as a user meets it: `clusterkit node-check --checks xid --kernel-log FILE` on
saved (constructed) kernel logs, and `clusterkit validate --sim FLEET --checks xid` with `xid`
and `sxid` faults printed by the simulator's stand-in `dmesg`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "dmesg-xid"
DMESG_T = FIX / "constructed_dmesg_T_hgx_xid79_xid94_window_calltrace.txt"
JOURNAL_ISO = FIX / "constructed_journal_short_iso_xid149_xid45_caused_by_sxid.txt"
JOURNAL_CAT = FIX / "constructed_journal_cat_xid48_63_94_no_time.txt"

HGX = "name: hgx\nnodes: gpu-[001-002]\n"
NO_GPUS = "name: bare\nnodes: gpu-[001-002]\nhardware: {gpu: {count: 0}}\n"


def ck(*args: str, tmp: Path, fleet: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env["CLUSTERKIT_SIM_ROOT"] = str(tmp / "sim")
    env["CLUSTERKIT_STATE_DIR"] = str(tmp / "state")
    if fleet is not None:  # a simulated node: SimNVML maps the PCI addresses (or has no GPUs)
        path = tmp / "fleet.yaml"
        path.write_text(fleet)
        env["CLUSTERKIT_SIM"] = str(path)
        env["CLUSTERKIT_NODE"] = "gpu-001"
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


def node_check(log: Path | str, *extra: str, tmp: Path, fleet: str | None = HGX) -> tuple[int, dict]:
    p = ck("node-check", "--checks", "xid", "--kernel-log", str(log), "--json", *extra, tmp=tmp, fleet=fleet)
    assert p.stdout.strip(), p.stderr
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1])


def not_passing(doc: dict) -> dict[tuple[str, str | None], tuple[str, object]]:
    return {(c["check"], c["subject"]): (c["status"], c["value"]) for c in doc["checks"] if c["status"] != "pass"}


def test_saved_dmesg_T_fails_on_actionable_xids_with_action_class_and_gpu_subject(tmp_path):
    rc, doc = node_check(DMESG_T, tmp=tmp_path)
    assert rc == 1 and doc["status"] == "fail"
    assert not_passing(doc) == {
        ("xid.events", "gpu0"): ("fail", "reboot"),
        ("xid.events", "gpu2"): ("warn", "monitor"),
        ("xid.events", "gpu3"): ("fail", "reset_gpu"),
        ("xid.events", "0000:e1:00"): ("fail", "reset_gpu"),
    }
    checks = {(c["check"], c["subject"]): c for c in doc["checks"]}
    assert "Xid 79 (GPU has fallen off the bus) x1" in checks["xid.events", "gpu0"]["message"]
    assert checks["xid.log", None]["status"] == "pass"
    assert {c["check"] for c in doc["checks"]} == {"xid.log", "xid.events", "xid.sxid"}
    folded = doc["measurements"]["xid"]["groups"]
    (g94,) = [g for g in folded if g["xid"] == 94]
    assert (g94["count"], g94["first"], g94["last"]) == (3, "Mon Nov 30 03:00:00 2026", "Mon Nov 30 03:05:00 2026")


def test_without_nvml_gpus_the_subject_is_the_pci_address(tmp_path):
    rc, doc = node_check(JOURNAL_CAT, tmp=tmp_path, fleet=NO_GPUS)
    assert rc == 1
    assert not_passing(doc) == {("xid.events", "0000:18:00"): ("fail", "reset_gpu")}


def test_journal_xid45_under_its_cause_and_sxid_and_the_window_option(tmp_path):
    rc, doc = node_check(JOURNAL_ISO, tmp=tmp_path)
    assert rc == 1
    assert not_passing(doc) == {
        ("xid.events", "gpu1"): ("warn", "monitor"),
        ("xid.events", "gpu6"): ("fail", "reset_gpu"),
        ("xid.events", "gpu7"): ("fail", "reset_gpu"),
        ("xid.sxid", "0000:07:00.0"): ("fail", "reboot"),
        ("xid.sxid", "0000:05:00.0"): ("warn", "monitor"),
    }
    # six minutes back from the log's last line (10:05:00): the plain Xid 45 at 09:40 drops out
    rc, doc = node_check(JOURNAL_ISO, "--xid-window", "0.1", tmp=tmp_path)
    assert rc == 1 and ("xid.events", "gpu1") not in not_passing(doc)
    assert doc["measurements"]["xid"]["outside_window"] == 1


def test_unreadable_kernel_log_is_an_error_never_a_failure(tmp_path):
    rc, doc = node_check(tmp_path / "no-such.log", tmp=tmp_path)
    assert rc == 3 and doc["status"] == "error"
    (c,) = doc["checks"]
    assert (c["check"], c["status"]) == ("xid.log", "error") and "no-such.log" in c["message"]


def test_bad_window_is_a_usage_error(tmp_path):
    p = ck("node-check", "--checks", "xid", "--kernel-log", str(DMESG_T), "--xid-window", "0", tmp=tmp_path,
           fleet=HGX)
    assert p.returncode == 2 and "--xid-window" in p.stderr


FLEET = """\
name: xid
profile: h100-sxm
nodes: [healthy, xid-node, sxid-node]
faults:
  - {node: xid-node, gpu: 3, kind: xid, value: 79}
  - {node: sxid-node, kind: sxid, value: 24007}
"""


def test_validate_sim_flags_exactly_the_xid_and_sxid_faults(tmp_path):
    fleet = tmp_path / "xid.yaml"
    fleet.write_text(FLEET)
    p = ck("validate", "--sim", str(fleet), "--checks", "xid", "--json", tmp=tmp_path)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    flagged = {(n["node"], c["check"], c["subject"], c["status"], c["value"])
               for n in doc["nodes"] for c in n["checks"] if c["status"] != "pass"}
    assert flagged == {("xid-node", "xid.events", "gpu3", "fail", "reboot"),
                       ("sxid-node", "xid.sxid", "0000:05:00.0", "fail", "reboot")}
    status = {n["node"]: n["status"] for n in doc["nodes"]}
    assert status == {"healthy": "pass", "xid-node": "fail", "sxid-node": "fail"}
    healthy = next(n for n in doc["nodes"] if n["node"] == "healthy")
    assert {(c["check"], c["subject"]) for c in healthy["checks"]} == {
        ("xid.log", None), ("xid.sxid", None), *{("xid.events", f"gpu{i}") for i in range(8)}}
