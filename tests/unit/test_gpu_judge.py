"""GPU judges: each fault gives exactly its check a fail/warn; broken queries never fail."""

from __future__ import annotations

from clusterkit.models import Status
from clusterkit.profiles import load_profile
from clusterkit.sim import parse_fleet
from clusterkit.sim.nvml import SimNVML
from clusterkit.validate import gpu
from clusterkit.validate.context import ProbeContext

PROFILE = load_profile("h100-sxm")


def verdicts(faults: str, node: str = "n1") -> dict[tuple[str, str | None], Status]:
    fleet = parse_fleet(f"nodes: n1\nfaults:\n{faults}", "t")
    results = gpu.judge(gpu.probe(ProbeContext.around(nvml=SimNVML(fleet.node(node)))), PROFILE)
    return {(r.check, r.subject): r.status for r in results}


def not_passing(v):
    return {k: s for k, s in v.items() if s not in (Status.PASS,)}


def test_healthy_node_all_pass():
    v = verdicts("  []")
    assert not_passing(v) == {}
    assert v[("gpu.count", None)] is Status.PASS
    # 8 GPUs x 14 per-GPU checks + the count
    assert len(v) == 1 + 8 * 14


def test_each_fault_hits_its_check_only():
    cases = {
        "{node: n1, gpu: 5, kind: ecc_uncorrectable, value: 2}": {("gpu.ecc.uncorrectable", "gpu5"): Status.FAIL,
                                                                  ("gpu.ecc.aggregate", "gpu5"): Status.WARN},
        "{node: n1, gpu: 2, kind: pcie_width, value: 8}": {("gpu.pcie.width", "gpu2"): Status.FAIL},
        "{node: n1, gpu: 1, kind: pcie_gen_max, value: 4}": {("gpu.pcie.gen", "gpu1"): Status.FAIL},
        "{node: n1, gpu: 0, kind: ecc_disabled}": {("gpu.ecc.mode", "gpu0"): Status.FAIL,
                                                    ("gpu.ecc.uncorrectable", "gpu0"): Status.SKIP,
                                                    ("gpu.ecc.aggregate", "gpu0"): Status.SKIP},
        "{node: n1, gpu: 4, kind: remap_pending}": {("gpu.remap.pending", "gpu4"): Status.FAIL,
                                                     ("gpu.remap.uncorrectable", "gpu4"): Status.WARN},
        "{node: n1, gpu: 4, kind: remap_failure}": {("gpu.remap.failure", "gpu4"): Status.FAIL},
        "{node: n1, gpu: 6, kind: temperature, value: 86}": {("gpu.temperature", "gpu6"): Status.WARN},
        "{node: n1, gpu: 6, kind: temperature, value: 88}": {("gpu.temperature", "gpu6"): Status.FAIL},
        "{node: n1, gpu: 7, kind: hw_power_brake}": {("gpu.clocks_event", "gpu7"): Status.FAIL},
        "{node: n1, gpu: 3, kind: power_limit, value: 500}": {("gpu.power.limit", "gpu3"): Status.WARN},
        "{node: n1, gpu: 3, kind: persistence_off}": {("gpu.persistence", "gpu3"): Status.WARN},
        "{node: n1, gpu: 2, kind: gpu_lost}": {("gpu.health", "gpu2"): Status.FAIL},
    }
    for fault, expected in cases.items():
        v = verdicts(f"  - {fault}")
        assert not_passing(v) == expected, fault


def test_gpu_missing_fails_count():
    v = verdicts("  - {node: n1, kind: gpu_missing, value: 7}")
    assert not_passing(v) == {("gpu.count", None): Status.FAIL}


def test_nvml_unavailable_is_error_never_fail():
    v = verdicts("  - {node: n1, kind: nvml_unavailable}")
    assert v == {("gpu.nvml", None): Status.ERROR}


def test_field_errors_are_errors_and_unsupported_is_skip():
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1"))))
    m.gpus[0].errors["pcie_width_current"] = "Unknown Error"
    m.gpus[0].unsupported.append("remapped_rows")
    v = {(r.check, r.subject): r.status for r in gpu.judge(m, PROFILE)}
    assert v[("gpu.pcie.width", "gpu0")] is Status.ERROR
    assert v[("gpu.remap.failure", "gpu0")] is Status.SKIP
    assert Status.FAIL not in v.values()


def test_wrong_model_and_small_memory_fail():
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1"))))
    m.gpus[0].name = "NVIDIA A100-SXM4-80GB"
    m.gpus[1].memory_total_mib = 40960
    v = {(r.check, r.subject): r for r in gpu.judge(m, PROFILE)}
    assert v[("gpu.model", "gpu0")].status is Status.FAIL
    assert v[("gpu.memory", "gpu1")].status is Status.FAIL and v[("gpu.memory", "gpu1")].value == 40960


def test_facts_for_drift():
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1"))))
    assert gpu.facts(m) == {"driver_version": "565.57.01", "cuda_version": "12.7", "gpu_count": 8,
                            "gpu_model": "NVIDIA H100 80GB HBM3", "vbios_version": "96.00.74.00.01"}


def test_driver_min_warns_on_older_driver():
    from clusterkit.profiles import parse_profile

    prof = parse_profile("name: p\ngpu: {count: 8, driver_min: '570.86.10'}\n", "p")
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1"))))
    r = [x for x in gpu.judge(m, prof) if x.check == "gpu.driver"]
    assert [(x.status, x.value, x.threshold) for x in r] == [(Status.WARN, "565.57.01", "570.86.10")]
    prof = parse_profile("name: p\ngpu: {count: 8, driver_min: '565.57.1'}\n", "p")
    assert [x.status for x in gpu.judge(m, prof) if x.check == "gpu.driver"] == [Status.PASS]
