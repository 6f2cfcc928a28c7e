"""An NVML-shaped object driven by a :class:`clusterkit.sim.SimNode`.

It offers the ``nvml*`` functions the probes call, with nvidia-ml-py's signatures, return types
and error semantics: failures raise ``pynvml.NVMLError`` with the NVML return code, which
nvidia-ml-py turns into the matching ``NVMLError_*`` subclass (``NVMLError_NotSupported``,
``NVMLError_GpuIsLost``, ``NVMLError_Uninitialized``, …). Constants and exception classes are
nvidia-ml-py's own. A function the simulator does not model raises ``NVMLError_FunctionNotFound``,
as a driver too old for it would.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace
from typing import Any

import pynvml

from clusterkit.sim import SimNode


class SimHandle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<SimHandle gpu{self.index}>"


def _raise(code: int) -> None:
    raise pynvml.NVMLError(code)


class SimNVML:
    """Drop-in for the ``pynvml`` module, for one simulated node."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._spec = node.hardware.gpu
        self._init_count = 0

    # -- module-like fallbacks: constants, exception classes, unmodelled functions --------------
    def __getattr__(self, name: str) -> Any:
        attr = getattr(pynvml, name)
        if callable(attr) and name.startswith("nvml") and not isinstance(attr, type):
            def _not_found(*_a: Any, **_k: Any) -> Any:
                _raise(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

            return _not_found
        return attr

    # -- library ---------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self._node.hang_seconds:  # a hung driver: the call blocks
            import time

            time.sleep(self._node.hang_seconds)
        if self._node.fault("nvml_unavailable"):
            _raise(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        if self._init_count == 0:
            _raise(pynvml.NVML_ERROR_UNINITIALIZED)
        self._init_count -= 1

    def _check_init(self) -> None:
        if self._init_count == 0:
            _raise(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        f = self._node.fault("driver_version")
        return str(f.value) if f else self._spec.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check_init()
        return self._spec.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        f = self._node.fault("gpu_missing")
        return int(f.value) if f and f.value is not None else self._spec.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimHandle:
        self._check_init()
        if not isinstance(index, int) or index < 0 or index >= self.nvmlDeviceGetCount():
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return SimHandle(index)

    # -- per device --------------------------------------------------------------------------------
    def _dev(self, handle: Any) -> int:
        self._check_init()
        if not isinstance(handle, SimHandle):
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self._node.fault("gpu_lost", handle.index):
            _raise(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handle.index

    def _gpu_fault(self, kind: str, i: int):
        # A fault without `gpu` applies to every GPU of the node.
        return self._node.fault(kind, i)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._dev(handle)
        return self._spec.name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        i = self._dev(handle)
        digest = zlib.crc32(f"{self._node.name}/{i}".encode()) * 65537 % (16**12)
        return f"GPU-5ec0{i:04x}-0000-4000-8000-{digest:012x}"

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        i = self._dev(handle)
        num = int("".join(c for c in self._node.name if c.isdigit()) or "0") % 100000
        return f"165242{num:05d}{i:02d}"

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        i = self._dev(handle)
        bus = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB][i % 8] + (i // 8)
        return SimpleNamespace(busId=f"00000000:{bus:02X}:00.0", bus=bus, device=0, domain=0,
                               pciDeviceId=0x233010DE, pciSubSystemId=0x16C110DE)

    def nvmlDeviceGetVbiosVersion(self, handle: Any) -> str:
        i = self._dev(handle)
        f = self._gpu_fault("vbios_version", i)
        return str(f.value) if f else self._spec.vbios_version

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._dev(handle)
        total = self._spec.memory_total_mib * 1024 * 1024
        used = 545 * 1024 * 1024
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        i = self._dev(handle)
        if self._gpu_fault("persistence_off", i):
            return pynvml.NVML_FEATURE_DISABLED
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetEccMode(self, handle: Any) -> list[int]:
        i = self._dev(handle)
        if self._gpu_fault("ecc_disabled", i):
            return [pynvml.NVML_FEATURE_DISABLED, pynvml.NVML_FEATURE_DISABLED]
        return [pynvml.NVML_FEATURE_ENABLED, pynvml.NVML_FEATURE_ENABLED]

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter_type: int) -> int:
        i = self._dev(handle)
        if self._gpu_fault("ecc_disabled", i):
            _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return 0
        if error_type != pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        f = self._gpu_fault("ecc_uncorrectable", i)
        if f:
            return int(f.value or 1)
        agg = self._gpu_fault("ecc_aggregate", i)
        if agg and counter_type == pynvml.NVML_AGGREGATE_ECC:
            return int(agg.value or 1)
        return 0

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        i = self._dev(handle)
        unc = self._gpu_fault("remap_uncorrectable", i)
        pending = self._gpu_fault("remap_pending", i)
        failure = self._gpu_fault("remap_failure", i)
        return (0, int(unc.value or 1) if unc else (1 if pending else 0), 1 if pending else 0,
                1 if failure else 0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        i = self._dev(handle)
        mask = pynvml.nvmlClocksEventReasonGpuIdle
        if self._gpu_fault("hw_slowdown", i):
            mask |= pynvml.nvmlClocksEventReasonHwSlowdown
        if self._gpu_fault("hw_thermal_slowdown", i):
            mask |= pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown
        if self._gpu_fault("hw_power_brake", i):
            mask |= pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown
        return mask

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        i = self._dev(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        f = self._gpu_fault("temperature", i)
        return int(f.value) if f else self._spec.temperature_c + (i % 3)

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        self._dev(handle)
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            return self._spec.temp_slowdown_c
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
            return self._spec.temp_shutdown_c
        _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 0  # pragma: no cover

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        i = self._dev(handle)
        return int((self._spec.power_draw_w + i) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        i = self._dev(handle)
        f = self._gpu_fault("power_limit", i)
        return int(float(f.value) * 1000) if f else int(self._spec.power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        self._dev(handle)
        return int(self._spec.power_limit_w * 1000)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        i = self._dev(handle)
        f = self._gpu_fault("pcie_gen_max", i)
        # Idle GPUs train down to Gen1 to save power; that is normal.
        return min(1, int(f.value)) if f else 1

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        i = self._dev(handle)
        f = self._gpu_fault("pcie_gen_max", i)
        return int(f.value) if f else self._spec.pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        i = self._dev(handle)
        f = self._gpu_fault("pcie_width", i)
        return int(f.value) if f else self._spec.pcie_width

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        self._dev(handle)
        return self._spec.pcie_width
