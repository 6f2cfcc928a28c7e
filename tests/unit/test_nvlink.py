"""NVLink domain: every check on the simulator's NVML with each fault, on hand-built NVML
stand-ins (errors, NotSupported, a single GPU), counters compared across two runs through the
state directory, and judges that are total (unread values never fail)."""

from __future__ import annotations

import ctypes
import json
import os

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit.models import Status
from clusterkit.profiles import load_profile, parse_profile
from clusterkit.sim import parse_fleet
from clusterkit.sim.nvml import SimNVML
from clusterkit.validate import nvlink
from clusterkit.validate.context import ProbeContext

H100 = load_profile("h100-sxm")
H200 = load_profile("h200-sxm")
CHECKS = ("nvlink.links", "nvlink.speed", "nvlink.errors", "nvlink.fabric")


def sim(faults: str = "[]", hardware: str = "", node: str = "n1", state_dir=None) -> SimNVML:
    fleet = parse_fleet(f"nodes: 'n[1-2]'\n{hardware}faults: {faults}\n", "t")
    return SimNVML(fleet.node(node), state_dir=str(state_dir) if state_dir else None)


def run(nvml, state_dir, profile=H100):
    m = nvlink.probe(ProbeContext.around(nvml=nvml, state_dir=str(state_dir)), profile)
    return m, nvlink.judge(m, profile)


def verdicts(results) -> dict[tuple[str, str | None], Status]:
    return {(r.check, r.subject): r.status for r in results}


def not_passing(results) -> dict[tuple[str, str | None], Status]:
    return {k: s for k, s in verdicts(results).items() if s is not Status.PASS}


# ------------------------------------------------------------------------------ the simulator
def test_healthy_node_passes_every_check_on_every_gpu(tmp_path):
    m, res = run(sim(), tmp_path)
    assert not_passing(res) == {}
    assert verdicts(res) == {(c, f"gpu{i}"): Status.PASS for c in CHECKS for i in range(8)}
    by = {(r.check, r.subject): r for r in res}
    assert by[("nvlink.links", "gpu0")].value == 18 and by[("nvlink.links", "gpu0")].threshold == 18
    assert by[("nvlink.speed", "gpu0")].message == "18 links at 26.562 GB/s"
    assert by[("nvlink.speed", "gpu0")].value == 26.562 and by[("nvlink.speed", "gpu0")].unit == "GB/s"
    assert "no previous run recorded" in by[("nvlink.errors", "gpu0")].message
    assert by[("nvlink.fabric", "gpu0")].message == "registered with the NVSwitch fabric (clique 0)"
    assert len(m.gpus[0].links) == 18 and m.gpus[0].uuid.startswith("GPU-")
    # the counters are kept for the next run, per GPU uuid and link
    doc = json.loads((tmp_path / nvlink.STATE_FILE).read_text())
    assert doc["version"] == 1 and doc["gpus"][m.gpus[0].uuid]["links"]["17"] == {
        "crc_flit": 0, "crc_data": 0, "replay": 0, "recovery": 0}
    assert nvlink.probe(ProbeContext.around(nvml=sim(), state_dir=str(tmp_path)), H200).gpus  # same on H200


@pytest.mark.parametrize("fault, expected", [
    ("{node: n1, gpu: 3, kind: nvlink_down, value: 2}", {("nvlink.links", "gpu3"): Status.FAIL}),
    ("{node: n1, gpu: 6, kind: nvlink_down}", {("nvlink.links", "gpu6"): Status.FAIL}),
    ("{node: n1, gpu: 1, kind: nvlink_speed, value: 20}",
     {("nvlink.speed", f"gpu1/link{k}"): Status.FAIL for k in range(18)}),
    ("{node: n1, gpu: 5, kind: nvlink_errors, value: 1000}", {("nvlink.errors", "gpu5/link0"): Status.WARN}),
    ("{node: n1, kind: fabric_incomplete}", {("nvlink.fabric", f"gpu{i}"): Status.FAIL for i in range(8)}),
    # faults of the topology domain leave NVLink alone
    ("{node: n1, gpu: 2, kind: p2p_degraded}", {}),
    ("{node: n2, gpu: 2, kind: nvlink_down}", {}),
])
def test_each_fault_trips_exactly_its_check(tmp_path, fault, expected):
    _, res = run(sim(f"[{fault}]"), tmp_path)
    assert not_passing(res) == expected


def test_fault_messages_name_the_links_and_the_fix(tmp_path):
    _, res = run(sim("[{node: n1, gpu: 3, kind: nvlink_down, value: 2}, {node: n1, kind: fabric_incomplete},"
                     " {node: n1, gpu: 1, kind: nvlink_speed, value: 20}]"), tmp_path)
    by = {(r.check, r.subject): r for r in res}
    links = by[("nvlink.links", "gpu3")]
    assert links.message == "16 of 18 NVLinks active (down: links 16-17)" and links.value == 16
    # a down link is not measured for speed; the GPU's other links still pass
    assert by[("nvlink.speed", "gpu3")].status is Status.PASS and by[("nvlink.speed", "gpu3")].message.startswith("16 ")
    speed = by[("nvlink.speed", "gpu1/link7")]
    assert speed.message == "link 7 at 20.000 GB/s, below 26 GB/s" and speed.value == 20.0 and speed.threshold == 26.0
    assert ("nvlink.speed", "gpu1") not in by  # no pass next to the failing links
    fab = by[("nvlink.fabric", "gpu0")]
    assert "in progress, not completed" in fab.message and "nvidia-fabricmanager" in fab.message
    assert "system not yet initialized" in fab.message


# ------------------------------------------------------------------------------ two runs
def test_error_counters_growing_between_runs_fail_on_the_second_run(tmp_path):
    faults = "[{node: n1, gpu: 4, kind: nvlink_errors, value: 5}]"
    _, first = run(sim(faults, state_dir=tmp_path), tmp_path)
    assert not_passing(first) == {}  # 5 is under every errors_max, and there is no previous run
    _, second = run(sim(faults, state_dir=tmp_path), tmp_path)  # the next node-check: 10 now
    assert not_passing(second) == {("nvlink.errors", "gpu4/link0"): Status.FAIL}
    r = next(r for r in second if r.subject == "gpu4/link0")
    assert r.message == ("link 0: crc_data +5 since the previous run (max 0); "
                         "recovery +5 since the previous run (max 0)")
    assert (r.value, r.threshold) == (5, 0)
    # the other GPUs compared too, and saw no growth
    other = next(r for r in second if r.subject == "gpu0" and r.check == "nvlink.errors")
    assert other.status is Status.PASS and "or grown since the previous run" in other.message
    assert (tmp_path / "sim-nvlink-runs").read_text().strip() == "2"


def test_counters_that_went_backwards_restart_the_comparison(tmp_path):
    _, _ = run(sim("[{node: n1, gpu: 0, kind: nvlink_errors, value: 50}]"), tmp_path)
    _, res = run(sim(), tmp_path)  # counters back to 0: the driver was reloaded
    r = next(r for r in res if r.subject == "gpu0" and r.check == "nvlink.errors")
    assert r.status is Status.PASS and "counters restarted since the previous run on link 0" in r.message


def test_an_unwritable_or_corrupt_state_file_is_an_error_never_a_failure(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / nvlink.STATE_FILE).write_text("{not json")
    m, res = run(sim(), state)
    assert m.state_error and "counted from this run on" in m.state_error
    assert not_passing(res) == {("nvlink.errors", None): Status.ERROR}
    _, res = run(sim(), state)  # rewritten: fine again
    assert not_passing(res) == {}
    blocker = tmp_path / "file"
    blocker.write_text("")
    m, res = run(sim(), blocker / "sub")  # the state "directory" cannot be created
    assert not_passing(res) == {("nvlink.errors", None): Status.ERROR}
    assert "--state-dir" in next(r.message for r in res if r.status is Status.ERROR)


# ------------------------------------------------------------------------------ hand-built NVML
class Nvml(SimNVML):
    """The simulator's NVML with chosen calls answering chosen NVML errors."""

    def __init__(self, fail: dict[str, int] | None = None, gpus: int = 8, **kw):
        fleet = parse_fleet(f"nodes: n1\nhardware: {{gpu: {{count: {gpus}}}}}\n", "t")
        super().__init__(fleet.node("n1"), **kw)
        self.fail = fail or {}

    def __getattribute__(self, name):
        fail = object.__getattribute__(self, "__dict__").get("fail", {})
        if name in fail:
            code = fail[name]

            def failing(*_a, **_k):
                raise pynvml.NVMLError(code)

            return failing
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("gpus, why", [(1, "a single GPU: no NVLink peers"), (0, "no GPUs: no NVLink peers")])
def test_single_gpu_skips_every_check_with_the_reason(tmp_path, gpus, why):
    m, res = run(Nvml(gpus=gpus), tmp_path)
    assert [(r.check, r.status, r.message) for r in res] == [(c, Status.SKIP, why) for c in CHECKS]
    assert not (tmp_path / nvlink.STATE_FILE).exists()


def test_nvml_unavailable_is_one_error(tmp_path):
    _, res = run(sim("[{node: n1, kind: nvml_unavailable}]"), tmp_path)
    assert [(r.check, r.status, r.message) for r in res] == [
        ("nvlink.nvml", Status.ERROR, "NVML could not initialise: Driver Not Loaded")]


def test_no_nvlink_section_in_the_profile_skips(tmp_path):
    prof = parse_profile("name: pcie\ngpu: {count: 8}\n", "p")
    _, res = run(sim(), tmp_path, prof)
    assert {(r.check, r.status) for r in res} == {(c, Status.SKIP) for c in CHECKS}


def test_gpus_without_nvlink_skip_the_link_checks(tmp_path):
    # a PCIe card: NvLinkState answers Not Supported, fabric state "not supported"
    _, res = run(sim(hardware="hardware: {gpu: {nvlink_links: 0}}\n"), tmp_path)
    v = verdicts(res)
    assert set(v.values()) == {Status.SKIP} and len(v) == 8 * 4
    assert {r.message for r in res if r.check == "nvlink.links"} == {"NVLink not supported by this GPU/driver"}


@pytest.mark.parametrize("call, code, check, status", [
    ("nvmlDeviceGetNvLinkErrorCounter", pynvml.NVML_ERROR_UNKNOWN, "nvlink.errors", Status.ERROR),
    ("nvmlDeviceGetNvLinkErrorCounter", pynvml.NVML_ERROR_NOT_SUPPORTED, "nvlink.errors", Status.SKIP),
    ("nvmlDeviceGetNvLinkErrorCounter", pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, "nvlink.errors", Status.SKIP),
    ("nvmlDeviceGetNvLinkState", pynvml.NVML_ERROR_UNKNOWN, "nvlink.links", Status.ERROR),
    ("nvmlDeviceGetNvLinkState", pynvml.NVML_ERROR_NOT_SUPPORTED, "nvlink.links", Status.SKIP),
    ("nvmlDeviceGetGpuFabricInfo", pynvml.NVML_ERROR_UNKNOWN, "nvlink.fabric", Status.ERROR),
    ("nvmlDeviceGetGpuFabricInfo", pynvml.NVML_ERROR_NOT_SUPPORTED, "nvlink.fabric", Status.SKIP),
    ("nvmlDeviceGetFieldValues", pynvml.NVML_ERROR_UNKNOWN, "nvlink.speed", Status.ERROR),
    ("nvmlDeviceGetFieldValues", pynvml.NVML_ERROR_NOT_SUPPORTED, "nvlink.speed", Status.SKIP),
])
def test_a_failing_call_is_error_and_not_supported_is_skip(tmp_path, call, code, check, status):
    _, res = run(Nvml({call: code}), tmp_path)
    assert Status.FAIL not in verdicts(res).values()
    assert {(r.check, r.subject, r.status) for r in res if r.check == check} == {
        (check, f"gpu{i}", status) for i in range(8)}
    if call == "nvmlDeviceGetNvLinkState" and status is Status.SKIP:  # no link: nothing else to judge
        assert {r.check for r in res if r.status is not Status.SKIP} == {"nvlink.fabric"}


def test_gpu_lost_and_handle_errors_are_errors(tmp_path):
    class Lost(Nvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            if index == 2:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if index == 3:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
            return super().nvmlDeviceGetHandleByIndex(index)

    _, res = run(Lost(), tmp_path)
    assert not_passing(res) == {("nvlink.nvml", "gpu2"): Status.ERROR, ("nvlink.nvml", "gpu3"): Status.ERROR}
    assert "see gpu.health" in next(r.message for r in res if r.subject == "gpu2")


def test_per_link_speed_not_supported_falls_back_to_the_common_speed(tmp_path):
    class Common(Nvml):
        def nvmlDeviceGetFieldValues(self, handle, fieldIds):
            values = super().nvmlDeviceGetFieldValues(handle, fieldIds)
            for v in values:
                if v.fieldId == pynvml.NVML_FI_DEV_NVLINK_GET_SPEED:
                    v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                elif v.fieldId == pynvml.NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON:
                    v.value.uiVal = 25000
            return values

    m, res = run(Common(), tmp_path)
    assert {ln.speed_mbps for ln in m.gpus[0].links} == {25000}
    assert verdicts(res)[("nvlink.speed", "gpu0/link0")] is Status.FAIL


def test_fabric_completed_with_an_error_status_fails(tmp_path):
    class Failed(Nvml):
        def nvmlDeviceGetGpuFabricInfo(self, handle, info):
            super().nvmlDeviceGetGpuFabricInfo(handle, info)
            info._obj.status = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES if handle.index == 1 else 0
            if handle.index == 2:
                info._obj.state = pynvml.NVML_GPU_FABRIC_STATE_NOT_STARTED
            if handle.index == 3:
                info._obj.state = 77  # a state a newer driver may add
            return pynvml.NVML_SUCCESS

    _, res = run(Failed(), tmp_path)
    assert not_passing(res) == {("nvlink.fabric", "gpu1"): Status.FAIL, ("nvlink.fabric", "gpu2"): Status.FAIL,
                                ("nvlink.fabric", "gpu3"): Status.ERROR}
    msg = {r.subject: r.message for r in res if r.check == "nvlink.fabric"}
    assert msg["gpu1"] == "fabric registration completed with an error: Insufficient Resources"
    assert msg["gpu2"].startswith("fabric registration not started")


def test_sim_fabric_info_fills_the_structure_like_nvml():
    nvml = sim("[{node: n1, kind: fabric_incomplete}]")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    info = pynvml.c_nvmlGpuFabricInfo_t()
    assert nvml.nvmlDeviceGetGpuFabricInfo(h, ctypes.byref(info)) == pynvml.NVML_SUCCESS
    assert info.state == pynvml.NVML_GPU_FABRIC_STATE_IN_PROGRESS
    direct = pynvml.c_nvmlGpuFabricInfo_t()
    ok = sim()
    ok.nvmlInit()
    ok.nvmlDeviceGetGpuFabricInfo(ok.nvmlDeviceGetHandleByIndex(0), ctypes.pointer(direct))
    assert (direct.state, direct.status) == (pynvml.NVML_GPU_FABRIC_STATE_COMPLETED, pynvml.NVML_SUCCESS)
    # field values: nvidia-ml-py's array of c_nvmlFieldValue_t, with per-field return codes
    vals = ok.nvmlDeviceGetFieldValues(h, [(pynvml.NVML_FI_DEV_NVLINK_GET_SPEED, 0),
                                           (pynvml.NVML_FI_DEV_NVLINK_GET_SPEED, 30),
                                           pynvml.NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON,
                                           pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, 1])
    assert isinstance(vals[0], pynvml.c_nvmlFieldValue_t)
    assert [(v.nvmlReturn, v.value.uiVal if v.nvmlReturn == 0 else None) for v in vals] == [
        (0, 26562), (pynvml.NVML_ERROR_INVALID_ARGUMENT, None), (0, 26562), (0, 18),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, None)]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        ok.nvmlDeviceGetNvLinkState(h, 18)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        sim().nvmlDeviceGetNvLinkState(h, 0)


def test_sim_counter_file_is_per_run_not_per_call(tmp_path):
    nvml = sim("[{node: n1, gpu: 0, kind: nvlink_errors, value: 3}]", state_dir=tmp_path)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    crc = pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA
    assert [nvml.nvmlDeviceGetNvLinkErrorCounter(h, 0, crc) for _ in range(3)] == [3, 3, 3]
    assert nvml.nvmlDeviceGetNvLinkErrorCounter(h, 1, crc) == 0
    again = sim("[{node: n1, gpu: 0, kind: nvlink_errors, value: 3}]", state_dir=tmp_path)
    again.nvmlInit()
    assert again.nvmlDeviceGetNvLinkErrorCounter(h, 0, crc) == 6
    assert os.path.exists(tmp_path / "sim-nvlink-runs")


# ------------------------------------------------------------------------------ totality
_HEALTHY: dict = {}


def _healthy(tmp_path_factory) -> nvlink.NvlinkMeasurement:
    if "m" not in _HEALTHY:
        d = tmp_path_factory.mktemp("nv")
        run(sim(), d)  # a previous run, so that growth is judged too
        _HEALTHY["m"] = run(sim(), d)[0]
    return _HEALTHY["m"].model_copy(deep=True)


_DAMAGE = st.lists(st.tuples(
    st.sampled_from(["state", "speed", "speed_unsupported", "counter", "counter_unsupported", "previous",
                     "fabric_state", "fabric_status", "fabric_error", "fabric_unsupported", "lost",
                     "handle", "uuid", "count"]),
    st.integers(0, 7), st.integers(0, 17), st.sampled_from(["crc_flit", "crc_data", "replay", "recovery"])),
    max_size=12)


@settings(max_examples=150, deadline=None)
@given(damage=_DAMAGE)
def test_judge_is_total_unread_values_never_fail(tmp_path_factory, damage):
    m = _healthy(tmp_path_factory)
    for what, gi, li, counter in damage:
        g = m.gpus[gi]
        ln = g.links[li] if li < len(g.links) else None
        if what == "state" and ln:
            ln.active = None
            ln.errors["state"] = "Unknown Error"
        elif what == "speed" and ln:
            ln.speed_mbps = None
            ln.errors["speed"] = "Unknown Error"
        elif what == "speed_unsupported" and ln:
            ln.speed_mbps = None
            ln.unsupported.append("speed")
        elif what == "counter" and ln:
            ln.counters.pop(counter, None)
            ln.errors[counter] = "Unknown Error"
        elif what == "counter_unsupported" and ln:
            ln.counters.pop(counter, None)
            ln.unsupported.append(counter)
        elif what == "previous" and ln:
            ln.previous.pop(counter, None)
        elif what == "fabric_state":
            g.fabric_state = None
        elif what == "fabric_status":
            g.fabric_status = None
        elif what == "fabric_error":
            g.fabric_state, g.fabric_error = None, "Unknown Error"
        elif what == "fabric_unsupported":
            g.fabric_state, g.fabric_unsupported = None, True
        elif what == "lost":
            g.lost = "GPU is lost"
        elif what == "handle":
            g.handle_error = "Insufficient Permissions"
        elif what == "uuid":
            g.uuid = None
        elif what == "count":
            m.count = None
    res = nvlink.judge(m, H100)  # never raises
    assert Status.FAIL not in {r.status for r in res}, [r for r in res if r.status is Status.FAIL]
    assert {r.check for r in res} <= set(nvlink.CHECKS)
    # every GPU is still accounted for: a verdict, an error or a skip
    if m.count is not None:
        assert {r.subject.split("/")[0] for r in res if r.subject} == {f"gpu{i}" for i in range(8)}
