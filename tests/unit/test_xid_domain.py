"""The xid domain: Xid/SXid events of the kernel log in a window, folded per subject, judged by
the catalog's action class; NVML maps PCI addresses to GPU indices; an unreadable log is an
error, never a failure. The kernel logs are constructed (tests/fixtures/dmesg-xid/CONSTRUCTED.md
and the inline texts below) in the layouts of the captured fixtures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clusterkit.models import Status
from clusterkit.parsers.xid import parse_xid
from clusterkit.profiles import Profile, XidProfile, load_profile, parse_profile
from clusterkit.validate import xid
from clusterkit.validate.context import ProbeContext

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "dmesg-xid"
DMESG_T = FIX / "constructed_dmesg_T_hgx_xid79_xid94_window_calltrace.txt"
RAW = FIX / "constructed_dmesg_raw_xid119_gsp_rpc_history_calltrace.txt"
JOURNAL_ISO = FIX / "constructed_journal_short_iso_xid149_xid45_caused_by_sxid.txt"
JOURNAL_CAT = FIX / "constructed_journal_cat_xid48_63_94_no_time.txt"

#: an HGX board's GPUs as NVML (and the simulator) reports their PCI addresses
HGX = {f"0000:{b:02x}:00": i for i, b in enumerate((0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB))}
PROFILE = load_profile("h100-sxm")
NOW = dt.datetime(2026, 11, 30, 12, 0, 0).timestamp()


def _file(path: Path, **kw: Any) -> xid.XidMeasurement:
    return xid.measure(path.read_text(encoding="utf-8"), str(path), live=False, now=NOW,
                       gpu_by_pci=kw.pop("gpu_by_pci", HGX), **kw)


def results(m: xid.XidMeasurement) -> dict[tuple[str, str | None], Any]:
    out: dict[tuple[str, str | None], Any] = {}
    for r in xid.judge(m, PROFILE):
        assert (r.check, r.subject) not in out, f"two results for {r.check} {r.subject}"
        assert r.check in xid.CHECKS
        out[r.check, r.subject] = r
    return out


def flagged(m: xid.XidMeasurement) -> dict[tuple[str, str | None], tuple[str, Any]]:
    return {k: (r.status.value, r.value) for k, r in results(m).items() if r.status is not Status.PASS}


def group(m: xid.XidMeasurement, subject: str, code: int, sxid: bool = False) -> xid.XidGroup:
    (g,) = [g for g in m.groups if g.subject == subject and g.xid == code and g.sxid == sxid]
    return g


# --------------------------------------------------------------------------- dmesg -T (saved)
def test_dmesg_T_window_runs_back_from_the_files_last_timestamp():
    m = _file(DMESG_T)
    assert m.error is None and not m.live
    assert m.reference == "the log's last timestamp (Mon Nov 30 04:10:12 2026)"
    # Xid 13 (3 lines) at 02:10:11 is one second before the window; Xid 31 at 02:10:12 is on its edge
    assert m.outside_window == 3
    assert flagged(m) == {
        ("xid.events", "gpu0"): ("fail", "reboot"),  # Xid 79 fallen off the bus
        ("xid.events", "gpu2"): ("warn", "monitor"),  # Xid 31 MMU fault, on the window's edge
        ("xid.events", "gpu3"): ("fail", "reset_gpu"),  # Xid 94 x3, folded
        ("xid.events", "0000:e1:00"): ("fail", "reset_gpu"),  # Xid 62, no GPU index for it
    }
    r = results(m)
    assert r["xid.events", "gpu1"].status is Status.PASS  # its Xid 13 is outside the window
    assert r["xid.sxid", None].status is Status.PASS
    assert r["xid.log", None].status is Status.PASS and "3 Xid/SXid lines before the window" in r["xid.log", None].message
    g = group(m, "gpu3", 94)
    assert (g.count, g.first, g.last, g.action) == (3, "Mon Nov 30 03:00:00 2026", "Mon Nov 30 03:05:00 2026",
                                                    "reset_gpu")
    assert "Xid 94 (Contained ECC error) x3, Mon Nov 30 03:00:00 2026 to Mon Nov 30 03:05:00 2026" in \
        r["xid.events", "gpu3"].message
    # the crash-dump lines, the kernel warning and its call trace are not events
    assert group(m, "gpu0", 79).count == 1 and group(m, "gpu0", 79).message == "GPU has fallen off the bus."
    assert "NVML does not map it" in r["xid.events", "0000:e1:00"].message
    assert {g.subject for g in m.groups} == {"gpu0", "gpu2", "gpu3", "0000:e1:00"}


def test_a_longer_window_takes_the_older_events_in():
    m = _file(DMESG_T, window_h=3)
    assert m.outside_window == 0
    assert flagged(m)["xid.events", "gpu1"] == ("warn", "monitor")
    assert group(m, "gpu1", 13).count == 3  # three lines of one SM exception
    assert "window 3 h" in results(m)["xid.log", None].message


# --------------------------------------------------------------------------- plain dmesg (uptime)
def test_raw_dmesg_xid119_gsp_timeout_with_rpc_history_and_call_trace():
    m = _file(RAW)
    assert m.reference == "the log's last uptime stamp (9200.000000 s)"
    # [1999.999999] is just outside a 2 h window back from [9200.000000]; [2000.000000] is on its edge
    assert m.outside_window == 2
    assert flagged(m) == {("xid.events", "gpu4"): ("warn", "monitor"),
                          ("xid.events", "gpu5"): ("fail", "reset_gpu")}
    g = group(m, "gpu5", 119)
    assert g.count == 3  # the RPC history tables, the call trace and the rate-limit line are not events
    assert (g.first, g.last) == ("9000.123456 s after boot", "9200.000000 s after boot")
    assert g.name == "GSP RPC Timeout"
    assert g.message.startswith("Timeout after 6s of waiting for RPC response from GPU5 GSP!")
    assert group(m, "gpu4", 43).count == 1


# --------------------------------------------------------------------------- journal short-iso
def test_journal_xid45_is_reported_under_the_nvlink_xid_it_names():
    m = _file(JOURNAL_ISO)
    assert m.reference == "the log's last timestamp (2026-11-30T10:05:00+0000)"
    assert m.outside_window == 0
    assert flagged(m) == {
        ("xid.events", "gpu1"): ("warn", "monitor"),  # a plain Xid 45 stays Xid 45
        ("xid.events", "gpu6"): ("fail", "reset_gpu"),  # Xid 149 + two Xid 45 caused by it; Xid 154
        ("xid.events", "gpu7"): ("fail", "reset_gpu"),  # only an Xid 45 caused by 149: reported as 149
        ("xid.sxid", "0000:07:00.0"): ("fail", "reboot"),  # fatal SXid 20034
        ("xid.sxid", "0000:05:00.0"): ("warn", "monitor"),  # non-fatal SXid 12028
    }
    g = group(m, "gpu6", 149)
    assert (g.count, g.via_xid45, g.name, g.action) == (3, 2, "NVLink NETIR error", "reset_gpu")
    assert not [x for x in m.groups if x.xid == 45 and x.subject in ("gpu6", "gpu7")]
    g7 = group(m, "gpu7", 149)
    assert (g7.count, g7.via_xid45, g7.first) == (1, 1, "2026-11-30T09:59:59+0000")
    assert group(m, "gpu6", 154).action == "reset_gpu"
    assert group(m, "gpu1", 45).action == "monitor"
    msg = results(m)["xid.events", "gpu6"].message
    assert "Xid 149 (NVLink NETIR error) x3" in msg and "2 of them Xid 45 cleanup caused by it" in msg
    sx = group(m, "0000:07:00.0", 20034, sxid=True)
    assert (sx.count, sx.severity, sx.action) == (3, "fatal", "reboot")
    assert group(m, "0000:05:00.0", 12028, sxid=True).severity == "non-fatal"
    assert "SXid 20034 fatal (NVSwitch fatal error) x3" in results(m)["xid.sxid", "0000:07:00.0"].message


def test_xid154_takes_the_action_of_its_latest_line():
    text = ("2026-11-30T10:00:00+0000 n kernel: NVRM: Xid (PCI:0000:18:00): 154, GPU recovery action changed "
            "from 0x0 (None) to 0x1 (GPU Reset Required)\n"
            "2026-11-30T10:01:00+0000 n kernel: NVRM: Xid (PCI:0000:18:00): 154, GPU recovery action changed "
            "from 0x1 (GPU Reset Required) to 0x0 (None)\n")
    m = xid.measure(text, "f", live=False, now=NOW, gpu_by_pci=HGX)
    assert group(m, "gpu0", 154).count == 2 and flagged(m) == {("xid.events", "gpu0"): ("warn", "monitor")}


# --------------------------------------------------------------------------- journal without time
@pytest.mark.parametrize("live", [False, True])
def test_journal_without_timestamps_every_line_counts(live):
    m = xid.measure(JOURNAL_CAT.read_text(), "journalctl -k -o cat", live=live, now=NOW, gpu_by_pci=HGX)
    if not live:
        assert m.reference == "no timestamps: every line counts"
    assert m.outside_window == 0
    assert flagged(m) == {("xid.events", "gpu0"): ("fail", "reset_gpu")}
    assert [(g.xid, g.count, g.action, g.first) for g in m.groups] == [
        (48, 1, "reset_gpu", None), (63, 1, "monitor", None), (94, 3, "reset_gpu", None)]
    msg = results(m)["xid.events", "gpu0"].message
    assert msg.index("Xid 48") < msg.index("Xid 63")  # worst actions first


# --------------------------------------------------------------------------- live: back from now
def _ctime(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%a %b %d %H:%M:%S %Y")


def test_live_window_runs_back_from_now_with_edges():
    def line(t: float, bus: str, code: int) -> str:
        return f"[{_ctime(t)}] NVRM: Xid (PCI:0000:{bus}:00): {code}, pid='<unknown>', name=<unknown>, x\n"

    text = (line(NOW - 7201, "18", 79)  # one second outside
            + line(NOW - 7200, "2a", 48)  # on the edge: inside
            + line(NOW + 60, "3a", 95)  # stamped after now (a clock step): inside
            + f"[{_ctime(NOW - 30000)}] a much older line that is not an Xid\n")
    m = xid.measure(text, "dmesg -T", live=True, now=NOW, gpu_by_pci=HGX)
    assert m.reference.startswith("now (")
    assert m.outside_window == 1
    assert set(flagged(m)) == {("xid.events", "gpu1"), ("xid.events", "gpu2")}
    narrow = xid.measure(text, "dmesg -T", live=True, now=NOW, gpu_by_pci=HGX, window_h=0.5)
    assert set(flagged(narrow)) == {("xid.events", "gpu2")} and narrow.outside_window == 2


def test_syslog_stamps_without_a_year_across_new_year():
    text = ("Dec 31 20:00:00 gpu-001 kernel: NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, "
            "GPU has fallen off the bus.\n"
            "Dec 31 23:30:00 gpu-001 kernel: NVRM: Xid (PCI:0000:2a:00): 74, pid=1234, name=python, NVLink: "
            "fatal error detected on link 3(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)\n"
            "Jan  1 00:10:00 gpu-001 kernel: mlx5_core 0000:18:00.0: port 1 link up\n")
    m = xid.measure(text, "saved.log", live=False, now=dt.datetime(2027, 1, 1, 1, 0).timestamp(), gpu_by_pci=HGX)
    assert m.outside_window == 1  # Dec 31 20:00 is 4 h 10 min before the last line
    assert flagged(m) == {("xid.events", "gpu1"): ("fail", "reset_gpu")}


def test_window_setting_profile_and_default():
    assert PROFILE.xid is not None and PROFILE.xid.window_h == 2
    assert load_profile("h200-sxm").xid.window_h == 2
    assert xid.window_hours(Profile(name="bare")) == xid.DEFAULT_WINDOW_H == 2.0
    assert xid.window_hours(Profile(name="p", xid=XidProfile(window_h=6))) == 6.0
    assert parse_profile("name: p\nxid: {window_h: 0.25}\n", "p.yaml").xid.window_h == 0.25
    from clusterkit.errors import ConfigError

    for bad in ("xid: {window_h: 0}", "xid: {window: 2}"):
        with pytest.raises(ConfigError):
            parse_profile(f"name: p\n{bad}\n", "p.yaml")


# --------------------------------------------------------------------------- NVML subjects
class FakeNVML:
    """GPU 0 answers with its bus id; GPU 1 is lost; nvmlInit can be made to fail."""

    def __init__(self, init_error: Exception | None = None) -> None:
        self.init_error = init_error
        self.shutdown = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        if h == 1:
            raise RuntimeError("GPU is lost")
        return SimpleNamespace(busId=b"00000000:2A:00.0")


TWO = ("[ 100.000000] NVRM: Xid (PCI:0000:2a:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
       "[ 101.000000] NVRM: Xid (PCI:0000:3a:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double "
       "bit error (DBE) has been detected on GPU in the framebuffer.\n")


def test_nvml_maps_pci_to_gpu_index_and_falls_back_to_the_pci_address(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(TWO)
    nvml = FakeNVML()
    m = xid.probe(ProbeContext.around(nvml=nvml, kernel_log_file=str(log)), PROFILE)
    assert m.gpu_by_pci == {"0000:2a:00": 0} and "GPU 1: GPU is lost" in (m.nvml_error or "")
    assert nvml.shutdown == 1
    assert flagged(m) == {("xid.events", "gpu0"): ("fail", "reboot"),
                          ("xid.events", "0000:3a:00"): ("fail", "reset_gpu")}


def test_without_nvml_every_subject_is_a_pci_address(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(TWO)
    m = xid.probe(ProbeContext.around(nvml=FakeNVML(RuntimeError("Driver Not Loaded")), kernel_log_file=str(log)),
                  PROFILE)
    assert m.gpu_by_pci == {} and "Driver Not Loaded" in (m.nvml_error or "")
    assert set(flagged(m)) == {("xid.events", "0000:2a:00"), ("xid.events", "0000:3a:00")}
    empty = tmp_path / "empty.log"
    empty.write_text("[ 1.0] Linux version 5.15.0\n")
    none = xid.probe(ProbeContext.around(nvml=FakeNVML(RuntimeError("Driver Not Loaded")),
                                         kernel_log_file=str(empty)), PROFILE)
    r = results(none)
    assert r["xid.events", None].status is Status.PASS and "Driver Not Loaded" in r["xid.events", None].message


def test_a_hung_nvml_does_not_hold_back_the_kernel_log(tmp_path, monkeypatch):
    import threading

    gate = threading.Event()

    class Hung(FakeNVML):
        def nvmlInit(self) -> None:
            gate.wait(30)

    log = tmp_path / "kern.log"
    log.write_text(TWO)
    monkeypatch.setattr(xid, "NVML_WAIT_S", 0.2)
    try:
        m = xid.probe(ProbeContext.around(nvml=Hung(), kernel_log_file=str(log)), PROFILE)
    finally:
        gate.set()
    assert "did not answer" in (m.nvml_error or "")
    assert set(flagged(m)) == {("xid.events", "0000:2a:00"), ("xid.events", "0000:3a:00")}


@pytest.mark.parametrize("text,key", [("00000000:18:00.0", "0000:18:00"), ("0000:DB:00", "0000:db:00"),
                                      ("0001:0a:1f.3", "0001:0a:1f"), ("nonsense", None)])
def test_pci_key(text, key):
    assert xid.pci_key(text) == key


def test_simulator_stand_in_prints_xids_on_simnvml_bus_ids():
    from clusterkit.sim import SimFleet, SimGpuSpec, SimHardware
    from clusterkit.sim.nvml import SimNVML
    from clusterkit.sim.tools import gpu_pci

    node = SimFleet(hardware=SimHardware(gpu=SimGpuSpec(count=16))).node("gpu-001")
    nvml = SimNVML(node)
    nvml.nvmlInit()
    for i in range(16):
        bus = nvml.nvmlDeviceGetPciInfo(nvml.nvmlDeviceGetHandleByIndex(i)).busId
        assert xid.pci_key(bus) == gpu_pci(i)


@pytest.mark.parametrize("flag", ["-T", None])
def test_simulated_dmesg_fault_lines_are_inside_the_window(flag, tmp_path, monkeypatch, capsys):
    from clusterkit.sim import tools

    fleet = tmp_path / "f.yaml"
    fleet.write_text("name: f\nnodes: [a, b]\nfaults:\n  - {node: a, gpu: 3, kind: xid, value: 79}\n"
                     "  - {node: a, kind: sxid, value: 24007}\n  - {node: b, kind: xid, value: 13}\n")
    monkeypatch.setenv("CLUSTERKIT_SIM", str(fleet))
    monkeypatch.setenv("CLUSTERKIT_NODE", "a")
    assert tools.dmesg([flag] if flag else []) == 0
    out = capsys.readouterr().out
    assert "NVRM: Xid (PCI:0000:5d:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus." in out
    assert "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, " in out
    # -T is read live (back from now); a saved plain dmesg runs back from its last stamp
    m = xid.measure(out, "dmesg", live=flag is not None, gpu_by_pci=HGX)
    assert m.error is None and m.outside_window == 0
    assert flagged(m) == {("xid.events", "gpu3"): ("fail", "reboot"),
                          ("xid.sxid", "0000:05:00.0"): ("fail", "reboot")}
    monkeypatch.setenv("CLUSTERKIT_NODE", "b")  # every GPU of the node
    tools.dmesg(["-T"])
    m = xid.measure(capsys.readouterr().out, "dmesg -T", live=True, gpu_by_pci=HGX)
    assert {k: v for k, v in flagged(m).items()} == {("xid.events", f"gpu{i}"): ("warn", "monitor") for i in range(8)}


def test_mig_attributed_xid_lines_parse():
    out = parse_xid("[ 5.0] NVRM: Xid (PCI:0000:2a:00 GPU-I:02 GPU-CI:00): 43, pid=1, name=python3, Ch 00000008\n")
    (e,) = out.events
    assert (e.pci, e.xid, e.pid) == ("0000:2a:00", 43, 1)


# --------------------------------------------------------------------------- no log: error, never fail
def only_log_error(m: xid.XidMeasurement) -> str:
    (r,) = xid.judge(m, PROFILE)
    assert (r.check, r.status) == ("xid.log", Status.ERROR)
    return r.message


def test_unreadable_saved_log_is_an_error(tmp_path):
    m = xid.probe(ProbeContext.around(nvml=FakeNVML(), kernel_log_file=str(tmp_path / "missing.log")), PROFILE)
    assert "No such file or directory" in only_log_error(m)


def test_no_dmesg_and_no_journal_is_an_error(monkeypatch):
    ctx = ProbeContext.around(nvml=FakeNVML())
    why = "dmesg: read kernel buffer failed: Operation not permitted; journalctl: not found"
    monkeypatch.setattr(ctx, "kernel_log", lambda: (None, why))
    m = xid.probe(ctx, PROFILE)
    assert m.live and only_log_error(m) == f"no kernel log could be read: {why}"


@pytest.mark.parametrize("text", ["", "-- No entries --\n"])
def test_a_live_log_with_nothing_in_it_is_an_error(text):
    assert "no kernel log lines" in only_log_error(xid.measure(text, "journalctl -k", live=True))


def test_text_that_is_not_a_kernel_log_is_an_error():
    assert "not a kernel log" in only_log_error(xid.measure("hello world\n", "saved.txt", live=False))


def test_judge_is_total_and_an_error_never_fails():
    for m in (xid.XidMeasurement(), xid.XidMeasurement(error="x"), xid.XidMeasurement(lines=3),
              xid.XidMeasurement(groups=[xid.XidGroup(subject="0000:01:00", pci="0000:01:00", xid=999,
                                                      action="unknown", count=1)])):
        res = xid.judge(m, PROFILE)
        assert res and all(r.check in xid.CHECKS for r in res)
        if m.error:
            assert all(r.status is Status.ERROR for r in res)
    unknown = xid.XidMeasurement(groups=[xid.XidGroup(subject="gpu0", pci="0000:18:00", gpu=0, xid=999,
                                                      action="unknown", count=2)])
    assert flagged(unknown) == {("xid.events", "gpu0"): ("warn", "unknown")}


# --------------------------------------------------------------------------- registry
def test_registered_and_selected():
    from clusterkit.validate.registry import DOMAINS, node_checks, select

    assert DOMAINS["xid"] == "clusterkit.validate.xid"
    assert {"xid.log", "xid.events", "xid.sxid", "xid.probe"} <= set(node_checks())
    assert select(["xid.events"]).domains == ["xid"]
    assert "xid" in select(None).domains  # runs by default
    assert xid.facts(xid.XidMeasurement()) == {}
