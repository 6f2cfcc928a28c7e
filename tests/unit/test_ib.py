"""The ib domain on hand-written sysfs trees in the kernel's formats ("4: ACTIVE", "5: LinkUp",
"400 Gb/sec (4X NDR)", "InfiniBand", ...), its simulated trees, and its fleet facts."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from clusterkit.models import NodeReport, NodeStatus, Status
from clusterkit.profiles import IB_COUNTERS, IbProfile, load_profile
from clusterkit.validate import ib
from clusterkit.validate.context import ProbeContext

H100 = load_profile("h100-sxm")

ACTIVE, DOWN, INIT = "4: ACTIVE", "1: DOWN", "2: INIT"
LINKUP, DISABLED, POLLING = "5: LinkUp", "3: Disabled", "2: Polling"
NDR, HDR, EDR = "400 Gb/sec (4X NDR)", "200 Gb/sec (4X HDR)", "100 Gb/sec (4X EDR)"


def port(state: str = ACTIVE, phys: str = LINKUP, rate: Optional[str] = NDR, layer: str = "InfiniBand",
         **counters: Optional[int]) -> dict[str, Any]:
    return {"state": state, "phys_state": phys, "rate": rate, "link_layer": layer,
            "counters": {c: counters.get(c, 0) for c in IB_COUNTERS}}


def device(*ports: dict[str, Any], fw: Optional[str] = "28.39.1002", numa: int = 0,
           hca: str = "MT4129") -> dict[str, Any]:
    return {"fw_ver": fw, "board_id": "MT_0000000838", "hca_type": hca, "numa_node": numa,
            "ports": list(ports) or [port()]}


def write_tree(root: Path, devices: dict[str, dict[str, Any]], *, modules: tuple[str, ...] = ("nvidia_peermem",),
               nvidia_taint: Optional[str] = "OE", nvidia_version: str = "565.57.01") -> Path:
    """A /sys look-alike: class/infiniband/<dev>/... and module/<name>/..., values with the
    kernel's trailing newline. A None value leaves the file out (unreadable)."""
    def put(path: Path, value: Any) -> None:
        if value is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    for name, d in devices.items():
        base = root / "class" / "infiniband" / name
        put(base / "fw_ver", d["fw_ver"])
        put(base / "board_id", d["board_id"])
        put(base / "hca_type", d["hca_type"])
        put(base / "device" / "numa_node", d["numa_node"])
        for i, p in enumerate(d["ports"], 1):
            pb = base / "ports" / str(i)
            pb.mkdir(parents=True, exist_ok=True)
            for key in ("state", "phys_state", "rate", "link_layer"):
                put(pb / key, p[key])
            for c, v in p["counters"].items():
                put(pb / "counters" / c, v)
    for mod in modules:
        put(root / "module" / mod / "refcnt", 0)
    if nvidia_version is not None:
        put(root / "module" / "nvidia" / "version", nvidia_version)
        put(root / "module" / "nvidia" / "taint", nvidia_taint)
    (root / "module").mkdir(parents=True, exist_ok=True)
    return root


def rails(n: int = 8, prefix: str = "mlx5_", **over: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {f"{prefix}{i}": device(numa=0 if i < n // 2 else 1) for i in range(n)}
    out.update(over)
    return out


def ctx_for(root: Path, tmp: Path, *, kernel: str = "5.15.0-125-generic", **kw: Any) -> ProbeContext:
    return ProbeContext.around(sysfs_root=str(root), state_dir=str(tmp / "state"),
                               kernel_release_fn=lambda: kernel, **kw)


def run(root: Path, tmp: Path, profile: Any = H100, **kw: Any) -> tuple[ib.IbMeasurement, list[Any]]:
    m = ib.probe(ctx_for(root, tmp, **kw), profile)
    return m, ib.judge(m, profile)


def bad(results: list[Any]) -> set[tuple[str, Optional[str], str]]:
    return {(r.check, r.subject, r.status.value) for r in results if r.status not in (Status.PASS, Status.SKIP)}


def one(results: list[Any], check: str, subject: Optional[str] = None) -> Any:
    found = [r for r in results if r.check == check and r.subject == subject]
    assert len(found) == 1, (check, subject, results)
    return found[0]


def with_ib(**changes: Any) -> Any:
    assert H100.ib is not None
    return H100.model_copy(update={"ib": H100.ib.model_copy(update=changes)})


# ----------------------------------------------------------------------------------- healthy
def test_a_healthy_node_passes_every_check_and_reports_its_facts(tmp_path):
    root = write_tree(tmp_path / "sys", rails())
    (root / "module" / "mlx5_core").mkdir(parents=True)
    (root / "module" / "mlx5_core" / "version").write_text("23.10-1.1.9\n")
    m, res = run(root, tmp_path)
    assert bad(res) == set()
    assert {r.status for r in res} == {Status.PASS}
    assert one(res, "ib.rails").message.startswith("8 InfiniBand rails (mlx5_0/1, mlx5_1/1")
    assert one(res, "ib.port.state", "mlx5_7/1").message == "ACTIVE, LinkUp"
    rate = one(res, "ib.port.rate", "mlx5_3/1")
    assert (rate.value, rate.threshold, rate.unit, rate.message) == (400.0, 400.0, "Gb/s", NDR)
    assert one(res, "ib.firmware", "mlx5_0").value == "28.39.1002"
    assert "first run here" in one(res, "ib.counters", "mlx5_0/1").message
    assert len([r for r in res if r.check == "ib.counters"]) == 8
    assert ib.facts(m) == {"hca_fw": "28.39.1002", "ofed_version": "23.10-1.1.9", "ib_rails": 8}
    assert m.devices[5].numa_node == 1 and m.devices[0].hca_type == "MT4129"
    assert not any(r.check == "ib.write_bw" for r in res)  # opt-in only


def test_rails_named_mlx5_ib0_to_7_are_found_and_named_as_read(tmp_path):
    root = write_tree(tmp_path / "sys", rails(prefix="mlx5_ib"))
    _, res = run(root, tmp_path)
    assert bad(res) == set()
    assert one(res, "ib.rails").value == 8
    assert {r.subject for r in res if r.check == "ib.port.state"} == {f"mlx5_ib{i}/1" for i in range(8)}
    assert {r.subject for r in res if r.check == "ib.firmware"} == {f"mlx5_ib{i}" for i in range(8)}


def test_roce_storage_ports_beside_ib_rails_are_not_rails_and_never_fail(tmp_path):
    storage = {"mlx5_8": device(port(DOWN, DISABLED, "40 Gb/sec (4X QDR)", "Ethernet", symbol_error=60000,
                                     link_downed=200), fw="22.38.1002", hca="MT4125"),
               "mlx5_9": device(port(rate=EDR, layer="Ethernet"), fw="22.38.1002", hca="MT4125")}
    root = write_tree(tmp_path / "sys", rails(**storage))
    m, res = run(root, tmp_path)
    assert bad(res) == set()
    assert one(res, "ib.rails").message.endswith("; 2 Ethernet ports not counted")
    assert not any(r.subject and r.subject.startswith(("mlx5_8", "mlx5_9")) for r in res)
    assert ib.facts(m)["hca_fw"] == "28.39.1002"  # the rails' firmware only
    # the same node judged as a RoCE fabric: the Ethernet ports are the rails now
    roce = with_ib(link_layer="Ethernet", rails=2, rate_gbps=100)
    res = ib.judge(m, roce)
    assert one(res, "ib.rails").message.startswith("2 Ethernet rails (mlx5_8/1, mlx5_9/1); 8 InfiniBand ports")
    assert bad(res) == {("ib.port.state", "mlx5_8/1", "fail"), ("ib.counters", "mlx5_8/1", "fail")}


def test_ports_on_a_dual_port_hca_are_rails_each(tmp_path):
    root = write_tree(tmp_path / "sys", {"mlx5_0": device(port(), port(state=DOWN, phys=POLLING))})
    _, res = run(root, tmp_path, profile=with_ib(rails=2))
    assert bad(res) == {("ib.port.state", "mlx5_0/2", "fail")}
    assert one(res, "ib.port.rate", "mlx5_0/2").status is Status.SKIP


# -------------------------------------------------------------------------------- each check
def test_rail_count_missing_rails_no_driver_and_unreadable_link_layers(tmp_path):
    root = write_tree(tmp_path / "a", rails(7))
    r = one(run(root, tmp_path)[1], "ib.rails")
    assert (r.status, r.value, r.threshold) == (Status.FAIL, 7, 8)
    assert "profile h100-sxm expects 8" in r.message
    empty = tmp_path / "empty" / "class" / "infiniband"
    empty.mkdir(parents=True)
    r = one(run(tmp_path / "empty", tmp_path)[1], "ib.rails")  # the RDMA class, without devices
    assert r.status is Status.FAIL and "no RDMA device under" in r.message
    res = run(tmp_path / "nothing", tmp_path)[1]  # no class/infiniband: the stack is not loaded
    assert [(x.check, x.status) for x in res] == [("ib.rails", Status.ERROR)]
    assert "the RDMA stack is not loaded" in res[0].message
    unread = rails(7, mlx5_7=device(port(layer=None)))  # type: ignore[arg-type]
    r = one(run(write_tree(tmp_path / "b", unread), tmp_path)[1], "ib.rails")
    assert r.status is Status.ERROR and "could not be read" in r.message  # unknown, not a missing rail


def test_port_state_fails_quoting_both_states(tmp_path):
    tree = rails(mlx5_1=device(port(DOWN, DISABLED)), mlx5_2=device(port(DOWN, POLLING)),
                 mlx5_3=device(port(INIT, LINKUP)))
    _, res = run(write_tree(tmp_path / "sys", tree), tmp_path)
    assert bad(res) == {("ib.port.state", f"mlx5_{i}/1", "fail") for i in (1, 2, 3)}
    assert one(res, "ib.port.state", "mlx5_1/1").message.startswith("state DOWN, physical state Disabled: ")
    assert one(res, "ib.port.state", "mlx5_2/1").message.startswith("state DOWN, physical state Polling: no link")
    assert "subnet manager" in one(res, "ib.port.state", "mlx5_3/1").message
    for i in (1, 2):  # a down port's rate means nothing: not judged twice
        assert one(res, "ib.port.rate", f"mlx5_{i}/1").status is Status.SKIP


def test_port_state_unreadable_is_error_not_fail(tmp_path):
    tree = rails(mlx5_4=device({**port(), "phys_state": None}))
    _, res = run(write_tree(tmp_path / "sys", tree), tmp_path)
    assert bad(res) == {("ib.port.state", "mlx5_4/1", "error")}
    assert one(res, "ib.port.state", "mlx5_4/1").message == "port phys_state could not be read"


def test_port_rate_below_the_profile_fails_and_unreadable_is_error(tmp_path):
    tree = rails(mlx5_1=device(port(rate=HDR)), mlx5_2=device(port(rate=None)), mlx5_3=device(port(rate="weird")))
    _, res = run(write_tree(tmp_path / "sys", tree), tmp_path)
    assert bad(res) == {("ib.port.rate", "mlx5_1/1", "fail"), ("ib.port.rate", "mlx5_2/1", "error"),
                        ("ib.port.rate", "mlx5_3/1", "error")}
    r = one(res, "ib.port.rate", "mlx5_1/1")
    assert (r.value, r.threshold) == (200.0, 400.0) and r.message.startswith("200 Gb/sec (4X HDR), below 400")
    assert ib.parse_rate("2.5 Gb/sec (1X SDR)") == 2.5 and ib.parse_rate("53.125 Gb/sec (1X HDR)") == 53.125


def test_counters_over_their_limits_fail_and_unreadable_ones_are_unknown(tmp_path):
    tree = rails(mlx5_4=device(port(symbol_error=5000, port_rcv_errors=1001)),
                 mlx5_5=device(port(link_downed=None)),
                 mlx5_6=device(port(symbol_error=999, excessive_buffer_overrun_errors=None,
                                    local_link_integrity_errors=15)))
    _, res = run(write_tree(tmp_path / "sys", tree), tmp_path)
    assert bad(res) == {("ib.counters", "mlx5_4/1", "fail"), ("ib.counters", "mlx5_5/1", "error"),
                        ("ib.counters", "mlx5_6/1", "fail")}
    r = one(res, "ib.counters", "mlx5_4/1")
    assert (r.value, r.threshold) == (5000, 1000)
    assert r.message == "symbol_error 5,000 > 1,000; port_rcv_errors 1,001 > 1,000"
    assert one(res, "ib.counters", "mlx5_5/1").message == "counters could not be read: link_downed (unknown, not zero)"
    msg = one(res, "ib.counters", "mlx5_6/1").message
    assert "local_link_integrity_errors 15 > 10 (saturated" in msg
    assert "unreadable: excessive_buffer_overrun_errors" in msg


def test_a_flap_between_two_runs_fails_the_second_run(tmp_path):
    root = write_tree(tmp_path / "sys", rails())
    first = run(root, tmp_path)[1]
    assert bad(first) == set()
    counters = root / "class" / "infiniband" / "mlx5_5" / "ports" / "1" / "counters"
    (counters / "link_downed").write_text("1\n")  # the link went down and came back
    m, res = run(root, tmp_path)
    assert bad(res) == {("ib.counters", "mlx5_5/1", "fail")}
    r = one(res, "ib.counters", "mlx5_5/1")
    assert r.message.startswith("link_downed +1 since the previous run") and r.message.endswith("(now 1)")
    assert (r.value, r.threshold) == (1, 0)
    assert m.devices[5].ports[0].previous == {c: 0 for c in IB_COUNTERS}
    # a third run without growth passes again: the total alone is not judged for link_downed
    assert bad(run(root, tmp_path)[1]) == set()
    # counters cleared (perfquery -R, driver reload): not a flap, and said so
    (counters / "link_downed").write_text("0\n")
    msg = one(run(root, tmp_path)[1], "ib.counters", "mlx5_5/1").message
    assert "went down since the previous run" in msg


def test_a_counter_unreadable_now_keeps_its_last_value_for_the_next_run(tmp_path):
    root = write_tree(tmp_path / "sys", rails())
    run(root, tmp_path)
    f = root / "class" / "infiniband" / "mlx5_2" / "ports" / "1" / "counters" / "link_downed"
    f.unlink()
    assert one(run(root, tmp_path)[1], "ib.counters", "mlx5_2/1").status is Status.ERROR
    f.write_text("2\n")
    assert one(run(root, tmp_path)[1], "ib.counters", "mlx5_2/1").message.startswith("link_downed +2")
    state = json.loads((tmp_path / "state" / ib.STATE_FILE).read_text())
    assert state["ports"]["mlx5_2/1"]["link_downed"] == 2 and state["version"] == 1


def test_a_saturated_counter_cannot_hide_growth(tmp_path):
    root = write_tree(tmp_path / "sys", rails(mlx5_1=device(port(link_downed=255))))
    run(root, tmp_path)
    r = one(run(root, tmp_path)[1], "ib.counters", "mlx5_1/1")
    assert r.status is Status.FAIL and "saturated at 255" in r.message


def test_a_broken_state_file_starts_over_instead_of_failing(tmp_path):
    root = write_tree(tmp_path / "sys", rails())
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / ib.STATE_FILE).write_text("{not json")
    m, res = run(root, tmp_path)
    assert bad(res) == set() and "unreadable" in (m.state_error or "")
    assert json.loads((tmp_path / "state" / ib.STATE_FILE).read_text())["ports"]


def test_firmware_differing_from_the_other_rails_warns_on_that_device_only(tmp_path):
    tree = rails(mlx5_5=device(fw="28.36.1010"), mlx5_6=device(fw=None))
    m, res = run(write_tree(tmp_path / "sys", tree), tmp_path)
    assert bad(res) == {("ib.firmware", "mlx5_5", "warn"), ("ib.firmware", "mlx5_6", "error")}
    r = one(res, "ib.firmware", "mlx5_5")
    assert (r.value, r.threshold) == ("28.36.1010", "28.39.1002")
    assert r.message == "firmware 28.36.1010, the node's other rails run 28.39.1002"
    assert ib.facts(m)["hca_fw"] == "28.36.1010, 28.39.1002"
    # a tie: the newer version is taken as the expected one
    half = {f"mlx5_{i}": device(fw="28.39.1002" if i % 2 else "28.36.1010") for i in range(8)}
    res = run(write_tree(tmp_path / "tie", half), tmp_path / "t")[1]
    assert bad(res) == {("ib.firmware", f"mlx5_{i}", "warn") for i in (0, 2, 4, 6)}


# --------------------------------------------------------------------------------------- gdr
@pytest.mark.parametrize("modules,taint,kernel,status,words", [
    (("nvidia_peermem",), "POE", "5.4.0-1", Status.PASS, "nvidia_peermem loaded"),
    (("nv_peer_mem",), "POE", "5.15.0", Status.PASS, "nvidia_peermem loaded"),
    ((), "OE", "6.8.0-1015-nvidia", Status.PASS, "dma-buf path available: kernel 6.8.0-1015-nvidia and the open"),
    ((), "POE", "6.8.0", Status.FAIL, "proprietary flavour (taint P)"),
    ((), "OE", "5.10.0-28", Status.FAIL, "predates RDMA dma-buf support (5.12)"),
    ((), None, "6.8.0", Status.ERROR, "cannot be told: module/nvidia/taint could not be read"),
    ((), "OE", "", Status.ERROR, "the kernel release could not be read"),
])
def test_gdr_needs_peermem_or_the_dmabuf_path(tmp_path, modules, taint, kernel, status, words):
    root = write_tree(tmp_path / "sys", rails(), modules=modules, nvidia_taint=taint)
    r = one(run(root, tmp_path, kernel=kernel)[1], "ib.gdr")
    assert r.status is status and words in r.message, r.message


def test_gdr_without_the_nvidia_module_or_any_module_list(tmp_path):
    root = write_tree(tmp_path / "sys", rails(), modules=(), nvidia_version=None)  # type: ignore[arg-type]
    r = one(run(root, tmp_path)[1], "ib.gdr")
    assert r.status is Status.FAIL and "the nvidia kernel module is not loaded" in r.message
    bare = write_tree(tmp_path / "bare", rails())
    shutil.rmtree(bare / "module")  # a sysfs root without module/: cannot tell
    r = one(run(bare, tmp_path)[1], "ib.gdr")
    assert r.status is Status.ERROR and "cannot tell" in r.message
    assert not any(x.check == "ib.gdr" for x in run(root, tmp_path, profile=with_ib(gdr_required=False))[1])


# ------------------------------------------------------------------------------ ib_write_bw
FAKE_PERFTEST = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(json.dumps(args) + "\n")
if "--help" in args:
    print("  --use_cuda=<cuda device id> Use CUDA specific device for GPUDirect RDMA testing")
    sys.exit(0)
dev = args[args.index("-d") + 1]
bw = json.load(open({bw!r}))[dev]
if not args[-1] == "localhost":
    print("* Waiting for client to connect... *")
    sys.exit(0)
if bw is None:
    print("Completion with error at client", file=sys.stderr)
    sys.exit(1)
print("                    RDMA_Write BW Test")
print(" #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]")
print(f" 8388608    5000           {{bw + 0.1:.2f}}             {{bw:.2f}}               0.005826")
print("-" * 87)
'''


def fake_perftest(tmp: Path, bw: dict[str, Optional[float]]) -> tuple[Path, Path]:
    tools, log = tmp / "tools", tmp / "perftest.log"
    tools.mkdir()
    (tmp / "bw.json").write_text(json.dumps(bw))
    script = tools / "ib_write_bw"
    script.write_text(FAKE_PERFTEST.format(python=sys.executable, log=str(log), bw=str(tmp / "bw.json")))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tools, log


def test_write_bw_loopback_per_rail_against_the_floor_and_the_best_rail(tmp_path):
    bw = {f"mlx5_{i}": 391.0 for i in range(8)}
    bw.update(mlx5_2=250.0, mlx5_3=None)
    tools, log = fake_perftest(tmp_path, bw)
    tree = rails(mlx5_7=device(port(DOWN, POLLING)))
    root = write_tree(tmp_path / "sys", tree)
    m, res = run(root, tmp_path, tool_path=[str(tools)], opt_in=frozenset({ib.WRITE_BW}))
    got = {r.subject: r for r in res if r.check == "ib.write_bw"}
    assert set(got) == {f"mlx5_{i}/1" for i in range(8)}
    assert got["mlx5_0/1"].status is Status.PASS and got["mlx5_0/1"].message == "391 Gb/s loopback (GPU memory)"
    assert got["mlx5_2/1"].status is Status.FAIL and "below the 380 Gb/s floor" in got["mlx5_2/1"].message
    assert got["mlx5_3/1"].status is Status.ERROR and "Completion with error" in got["mlx5_3/1"].message
    assert got["mlx5_7/1"].status is Status.SKIP  # port down: ib.port.state says so
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    client = next(c for c in calls if c[-1] == "localhost" and "mlx5_4" in c)
    assert client[:2] == ["-d", "mlx5_4"] and "--report_gbits" in client and "--use_cuda=4" in client
    server = next(c for c in calls if c[-1] != "localhost" and "mlx5_4" in c)
    assert server == client[:-1]  # the same device, port and options: a loopback
    assert not any("mlx5_7" in c for c in calls)
    # well below the node's other rails, though above the floor
    rel = with_ib(write_bw_gbps_min=None)
    m.write_bw[1].gbps = 300.0
    r = one(ib.judge(m, rel), "ib.write_bw", "mlx5_1/1")
    assert r.status is Status.FAIL and "below 0.9 x the node's best rail (391 Gb/s)" in r.message


def test_write_bw_uses_host_memory_when_there_is_no_gpudirect_path(tmp_path):
    tools, log = fake_perftest(tmp_path, {f"mlx5_{i}": 391.0 for i in range(8)})
    root = write_tree(tmp_path / "sys", rails(), modules=(), nvidia_taint="POE")
    _, res = run(root, tmp_path, tool_path=[str(tools)], opt_in=frozenset({ib.WRITE_BW}))
    assert one(res, "ib.write_bw", "mlx5_0/1").message == "391 Gb/s loopback (host memory)"
    assert not any("--use_cuda" in a for line in log.read_text().splitlines() for a in json.loads(line)
                   if a != "--help")


def test_write_bw_without_perftest_is_an_error_not_a_fail(tmp_path, monkeypatch):
    empty = tmp_path / "nothing"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    root = write_tree(tmp_path / "sys", rails())
    _, res = run(root, tmp_path, opt_in=frozenset({ib.WRITE_BW}))
    r = one(res, "ib.write_bw")
    assert r.status is Status.ERROR and "ib_write_bw not found" in r.message
    assert [x for x in res if x.check == "ib.write_bw"] == [r]


# -------------------------------------------------------------------------------- totality
def test_judge_is_total_when_any_field_is_unread():
    fields = ["link_layer", "state", "phys_state", "rate", "rate_gbps"]
    base = ib.IbPort(port=1, link_layer="InfiniBand", state=ACTIVE, phys_state=LINKUP, rate=NDR, rate_gbps=400.0,
                     counters={c: 0 for c in IB_COUNTERS})
    for k in range(len(fields) + 1):
        for unread in itertools.combinations(fields, k):
            p = base.model_copy(update={f: None for f in unread})
            for counters in ({c: None for c in IB_COUNTERS}, {c: 0 for c in IB_COUNTERS}):
                p2 = p.model_copy(update={"counters": counters, "previous": {c: 0 for c in IB_COUNTERS}})
                dev = ib.IbDevice(name="mlx5_0", fw_ver=None, ports=[p2])
                m = ib.IbMeasurement(devices=[dev], peermem=None, kernel=None, write_bw_requested=True,
                                     write_bw=[ib.WriteBwRun(device="mlx5_0", port=1)])
                res = ib.judge(m, with_ib(rails=1))
                failing = {r.check for r in res if r.status is Status.FAIL}
                # only ib.port.state may fail, and only on a state that was read as not active
                assert failing <= ({"ib.port.state"} if "state" not in unread and "phys_state" not in unread
                                   and ib.port_active(p2) is False else set()), (unread, res)
    assert ib.judge(ib.IbMeasurement(), H100)[0].check == "ib.rails"
    m = ib.IbMeasurement(error="cannot list /sys/class/infiniband: Permission denied")
    assert bad(ib.judge(m, H100)) == {("ib.rails", None, "error")}


def test_a_profile_without_ib_skips(tmp_path):
    prof = H100.model_copy(update={"ib": None})
    res = run(write_tree(tmp_path / "sys", rails()), tmp_path, profile=prof)[1]
    assert [(r.check, r.status) for r in res] == [("ib", Status.SKIP)]


def test_every_emitted_id_is_registered():
    from clusterkit.validate.registry import DOMAINS, node_checks

    assert DOMAINS["ib"] == "clusterkit.validate.ib"
    assert set(ib.CHECKS) | {"ib.probe"} <= set(node_checks())


# ------------------------------------------------------------------------------ simulation
def test_sim_tree_is_in_the_kernel_formats_and_follows_the_faults(tmp_path, monkeypatch):
    from clusterkit import sim
    from clusterkit.sim.context import rate_text, sim_context

    assert [rate_text(x) for x in (400, 200, 100, 56, 2.5, 150)] == [
        "400 Gb/sec (4X NDR)", "200 Gb/sec (4X HDR)", "100 Gb/sec (4X EDR)", "56 Gb/sec (4X FDR)",
        "2.5 Gb/sec (1X SDR)", "150 Gb/sec (4X)"]
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path))
    fleet = sim.parse_fleet(
        "nodes: 'n[1-2]'\nhardware: {ib: {prefix: mlx5_ib, storage_ports: 2}}\nfaults:\n"
        "  - {node: n1, kind: ib_port_polling, device: mlx5_ib2}\n"
        "  - {node: n1, kind: ib_rate, device: mlx5_ib3, value: 200}\n"
        "  - {node: n1, kind: ib_flap, device: mlx5_ib4, value: 3}\n"
        "  - {node: n1, kind: ib_fw, device: mlx5_ib5, value: '28.36.1010'}\n"
        "  - {node: n1, kind: nic_far, device: mlx5_ib1}\n"
        "  - {node: n2, kind: ib_missing, value: 6}\n"
        "  - {node: n2, kind: peermem_missing}\n", "t.yaml")
    ctx = sim_context(fleet.node("n1"), "k", deadline=time.monotonic() + 30)
    rd = ctx.read_sysfs
    assert rd("class/infiniband/mlx5_ib0/ports/1/state") == "4: ACTIVE"
    assert rd("class/infiniband/mlx5_ib2/ports/1/phys_state") == "2: Polling"
    assert rd("class/infiniband/mlx5_ib3/ports/1/rate") == "200 Gb/sec (4X HDR)"
    assert rd("class/infiniband/mlx5_ib5/fw_ver") == "28.36.1010"
    assert rd("class/infiniband/mlx5_ib8/ports/1/link_layer") == "Ethernet"
    assert rd("class/infiniband/mlx5_ib0/device/numa_node") == "0"
    assert rd("class/infiniband/mlx5_ib1/device/numa_node") == "1"  # nic_far: the other socket
    assert rd("module/nvidia_peermem/version") == "565.57.01" and rd("module/nvidia/taint") == "OE"
    assert rd("class/infiniband/mlx5_ib4/ports/1/counters/link_downed") == "3"
    ctx2 = sim_context(fleet.node("n1"), "k", deadline=time.monotonic() + 30)  # the next node-check
    assert ctx2.read_sysfs("class/infiniband/mlx5_ib4/ports/1/counters/link_downed") == "6"
    n2 = sim_context(fleet.node("n2"), "k", deadline=time.monotonic() + 30)
    names = sorted(os.listdir(n2.sysfs("class", "infiniband")))
    assert names == [f"mlx5_ib{i}" for i in range(6)] + ["mlx5_ib8", "mlx5_ib9"]
    assert not os.path.exists(n2.sysfs("module", "nvidia_peermem")) and n2.read_sysfs("module/nvidia/taint") == "POE"
    r = one(ib.judge(ib.probe(n2, H100), H100), "ib.gdr")
    assert r.status is Status.FAIL


def test_a_fault_on_a_device_the_fleet_does_not_have_is_refused_in_one_line():
    from clusterkit import sim
    from clusterkit.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        sim.parse_fleet("nodes: 'n[1-2]'\nfaults:\n  - {node: n1, kind: ib_rate, device: mlx5_8, value: 200}\n",
                        "f.yaml")
    assert str(e.value) == ("sim fleet f.yaml: faults.0.device: no RDMA device mlx5_8: the fleet's nodes have "
                            "mlx5_0 to mlx5_7 (hardware.ib: rails, prefix, storage_ports)")
    fleet = sim.parse_fleet("nodes: n1\nhardware: {ib: {storage_ports: 1}}\n"
                            "faults: [{node: n1, kind: ib_port_down, device: mlx5_8}]\n", "ok.yaml")
    assert fleet.hardware.ib.device_names()[-1] == "mlx5_8"


# ------------------------------------------------------------------------------ controller
def test_fleet_drift_of_hca_firmware_and_ofed():
    from clusterkit.validate.fleet import FLEET_CHECKS, judge_fleet

    def rep(name: str, **facts: Any) -> NodeReport:
        return NodeReport(node=name, status=NodeStatus.PASS, facts=facts)

    reports = [rep(f"n{i}", hca_fw="28.39.1002", ofed_version="23.10-1.1.9") for i in range(3)]
    reports.append(rep("n3", hca_fw="28.36.1010", ofed_version="23.10-1.1.9"))
    found = {f.check: f for f in judge_fleet(reports)}
    assert set(found) == {"fleet.drift.hca_fw"} and found["fleet.drift.hca_fw"].nodes == ["n3"]
    assert found["fleet.drift.hca_fw"].expected == "28.39.1002"
    assert {"fleet.drift.hca_fw", "fleet.drift.ofed_version"} <= set(FLEET_CHECKS)


def test_node_check_argv_passes_extra_options_through():
    from clusterkit.validate.controller import node_check_argv

    argv = node_check_argv(["clusterkit"], ["ib"], 120, ["--ib-bw"])
    assert argv[-1] == "--ib-bw" and argv[argv.index("--checks") + 1] == "ib"
    assert "--ib-bw" not in node_check_argv(["clusterkit"], None, 120)


def test_ib_profile_counters_are_known_and_sourced():
    for name in ("h100-sxm", "h200-sxm"):
        p = load_profile(name).ib
        assert isinstance(p, IbProfile) and p.rails == 8 and p.rate_gbps == 400
        assert set(p.counters_max) | set(p.counters_delta_max) <= set(ib.COUNTER_BITS)
        assert p.counters_delta_max["link_downed"] == 0
