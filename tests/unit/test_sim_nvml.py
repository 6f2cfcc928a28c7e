"""The simulated NVML behaves like nvidia-ml-py: same calls, same error classes."""

from __future__ import annotations

import pynvml
import pytest

from clusterkit.sim import SimFleet, parse_fleet
from clusterkit.sim.nvml import SimNVML
from clusterkit.validate import gpu
from clusterkit.validate.context import ProbeContext

FLEET = """
name: t
profile: h100-sxm
nodes: "n[1-4]"
faults:
  - {node: n2, gpu: 3, kind: ecc_uncorrectable, value: 4}
  - {node: n2, gpu: 1, kind: gpu_lost}
  - {node: n3, kind: nvml_unavailable}
  - {node: n4, kind: gpu_missing, value: 7}
  - {node: "n[1-2]", gpu: 0, kind: hw_thermal_slowdown}
"""


@pytest.fixture()
def fleet() -> SimFleet:
    return parse_fleet(FLEET, "test")


def test_uninitialised_calls_raise_uninitialized(fleet):
    nvml = SimNVML(fleet.node("n1"))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlShutdown()


def test_counts_handles_and_invalid_index(fleet):
    nvml = SimNVML(fleet.node("n1"))
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 8
    h = nvml.nvmlDeviceGetHandleByIndex(7)
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    assert nvml.nvmlDeviceGetMemoryInfo(h).total == 81559 * 1024 * 1024
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(8)
    # constants come from nvidia-ml-py itself
    assert nvml.NVML_TEMPERATURE_GPU == pynvml.NVML_TEMPERATURE_GPU
    # a function the simulator does not model answers like an old driver would
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        nvml.nvmlDeviceGetFanSpeed(h)


def test_faults_surface_through_nvml(fleet):
    nvml = SimNVML(fleet.node("n2"))
    nvml.nvmlInit()
    h3 = nvml.nvmlDeviceGetHandleByIndex(3)
    unc = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert nvml.nvmlDeviceGetTotalEccErrors(h3, unc, pynvml.NVML_VOLATILE_ECC) == 4
    assert nvml.nvmlDeviceGetTotalEccErrors(nvml.nvmlDeviceGetHandleByIndex(2), unc, pynvml.NVML_VOLATILE_ECC) == 0
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(1))
    reasons = nvml.nvmlDeviceGetCurrentClocksEventReasons(nvml.nvmlDeviceGetHandleByIndex(0))
    assert reasons & pynvml.nvmlClocksEventReasonHwThermalSlowdown


def test_nvml_unavailable_is_driver_not_loaded(fleet):
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        SimNVML(fleet.node("n3")).nvmlInit()


def test_probe_records_lost_gpu_and_counts(fleet):
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(fleet.node("n2"))))
    assert m.count == 8 and m.driver_version == "565.57.01" and m.cuda_driver_version == "12.7"
    assert m.gpus[1].lost == "GPU is lost"
    assert m.gpus[3].ecc_volatile_uncorrectable == 4
    assert m.gpus[0].clocks_event_active == ["gpu_idle", "hw_slowdown", "hw_thermal_slowdown"]
    assert gpu.probe(ProbeContext.around(nvml=SimNVML(fleet.node("n4")))).count == 7
    m3 = gpu.probe(ProbeContext.around(nvml=SimNVML(fleet.node("n3"))))
    assert m3.count is None and "Driver Not Loaded" in m3.error


def test_unknown_node_is_healthy_default(fleet):
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(fleet.node("zz-999"))))
    assert m.count == 8
    assert all(d.ecc_volatile_uncorrectable == 0 and d.pcie_width_current == 16 for d in m.gpus)
    assert len({d.uuid for d in m.gpus}) == 8
