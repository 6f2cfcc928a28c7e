"""An NVML-shaped object driven by a :class:`clusterkit.sim.SimNode`.

It offers the ``nvml*`` functions the probes call, with nvidia-ml-py's signatures, return types
and error semantics: failures raise ``pynvml.NVMLError`` with the NVML return code, which
nvidia-ml-py turns into the matching ``NVMLError_*`` subclass (``NVMLError_NotSupported``,
``NVMLError_GpuIsLost``, ``NVMLError_Uninitialized``, …). Constants and exception classes are
nvidia-ml-py's own. A function the simulator does not model raises ``NVMLError_FunctionNotFound``,
as a driver too old for it would.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from types import SimpleNamespace
from typing import Any, Optional

import pynvml

from clusterkit.sim import SimNode

#: the file in the simulated node's state directory that counts node-check runs (nvlink_errors
#: counters grow by their value on every run)
RUNS_FILE = "sim-nvlink-runs"


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

    def __init__(self, node: SimNode, state_dir: Optional[str] = None) -> None:
        self._node = node
        self._spec = node.hardware.gpu
        self._init_count = 0
        # nvidia-ml-py counts nvmlInit/nvmlShutdown under a lock: probes of several domains
        # share one NVML and run in threads
        self._lock = threading.Lock()
        #: where the run counter lives (the simulated node's state directory); None: no growth
        self._state_dir = state_dir
        self._run: Optional[int] = None

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
        with self._lock:
            self._init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._init_count == 0:
                _raise(pynvml.NVML_ERROR_UNINITIALIZED)
            self._init_count -= 1

    def _check_init(self) -> None:
        if self._init_count == 0:
            _raise(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return str(self._node.driver_version)

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

    # -- NVLink and the NVSwitch fabric -----------------------------------------------------------
    def _links(self) -> int:
        return int(self._spec.nvlink_links)

    def _link(self, handle: Any, link: Any) -> tuple[int, int]:
        """(gpu, link) for a valid link of an NVLink GPU; NVML's errors otherwise."""
        i = self._dev(handle)
        if self._links() == 0:
            _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if not isinstance(link, int) or isinstance(link, bool) or not 0 <= link < self._links():
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return i, link

    def _link_active(self, i: int, link: int) -> bool:
        f = self._gpu_fault("nvlink_down", i)
        down = int(f.value or 1) if f else 0
        return link < self._links() - down  # the highest-numbered links go down

    def _link_speed_mbps(self, i: int) -> int:
        f = self._gpu_fault("nvlink_speed", i)
        return int(round(float(f.value) * 1000)) if f else int(self._spec.nvlink_speed_mbps)

    def _run_number(self) -> int:
        """Which node-check run this is on the simulated node (1, 2, …): counted once per
        SimNVML in the node's state directory; always 1 without one."""
        with self._lock:
            if self._run is None:
                run = 1
                if self._state_dir:
                    path = os.path.join(self._state_dir, RUNS_FILE)
                    try:
                        with open(path, encoding="utf-8") as fh:
                            run = int(fh.read().strip() or 0) + 1
                    except (OSError, ValueError):
                        run = 1
                    try:
                        os.makedirs(self._state_dir, exist_ok=True)
                        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
                        with open(tmp, "w", encoding="utf-8") as fh:
                            fh.write(f"{run}\n")
                        os.replace(tmp, path)
                    except OSError:
                        pass
                self._run = run
            return self._run

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        i, link = self._link(handle, link)
        return pynvml.NVML_FEATURE_ENABLED if self._link_active(i, link) else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: Any, link: int, counter: int) -> int:
        i, link = self._link(handle, link)
        known = (pynvml.NVML_NVLINK_ERROR_DL_REPLAY, pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
                 pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT, pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
                 pynvml.NVML_NVLINK_ERROR_DL_ECC_DATA)
        if counter not in known:
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        f = self._gpu_fault("nvlink_errors", i)
        if f and link == 0 and counter != pynvml.NVML_NVLINK_ERROR_DL_ECC_DATA:
            return int(f.value) * self._run_number()
        return 0

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[Any]) -> Any:
        i = self._dev(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        now_us = int(time.time() * 1_000_000)
        for n, field in enumerate(fieldIds):
            v = values[n]
            try:
                (v.fieldId, v.scopeId) = field
            except TypeError:
                v.fieldId = field
            v.timestamp = now_us
            v.latencyUsec = 0
            v.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            v.nvmlReturn = pynvml.NVML_SUCCESS
            links = self._links()
            if v.fieldId == pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT:
                if links == 0:
                    v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                else:
                    v.value.uiVal = links
            elif v.fieldId == pynvml.NVML_FI_DEV_NVLINK_GET_SPEED:
                if links == 0:
                    v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                elif v.scopeId >= links:
                    v.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
                else:
                    v.value.uiVal = self._link_speed_mbps(i) if self._link_active(i, v.scopeId) else 0
            elif v.fieldId == pynvml.NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON:
                if links == 0:
                    v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                else:
                    v.value.uiVal = self._link_speed_mbps(i)
            else:
                v.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetGpuFabricInfo(self, handle: Any, gpuFabricInfo: Any) -> int:
        """Fills the ``c_nvmlGpuFabricInfo_t`` passed in (as nvidia-ml-py: by ``ctypes.byref``,
        a pointer, or the structure itself) and returns NVML_SUCCESS."""
        self._dev(handle)
        info = getattr(gpuFabricInfo, "_obj", None)  # ctypes.byref(...)
        if info is None:
            info = getattr(gpuFabricInfo, "contents", gpuFabricInfo)  # ctypes.pointer(...)
        for n in range(len(info.clusterUuid)):
            info.clusterUuid[n] = 0
        info.cliqueId = 0
        if self._links() == 0 or self.nvmlDeviceGetCount() < 2:
            # no NVSwitch fabric: a PCIe card, or a single GPU
            info.state = pynvml.NVML_GPU_FABRIC_STATE_NOT_SUPPORTED
            info.status = pynvml.NVML_SUCCESS
        elif self._node.fault("fabric_incomplete"):
            # Fabric Manager not running: registration never completes ("In Progress");
            # CUDA answers "system not yet initialized"
            info.state = pynvml.NVML_GPU_FABRIC_STATE_IN_PROGRESS
            info.status = pynvml.NVML_ERROR_NOT_READY
        else:
            info.state = pynvml.NVML_GPU_FABRIC_STATE_COMPLETED
            info.status = pynvml.NVML_SUCCESS
        return pynvml.NVML_SUCCESS


# ------------------------------------------------------------------------------ nvidia-smi topo -m
def rdma_devices(node: SimNode) -> list[tuple[str, bool]]:
    """The node's RDMA devices, in order: ``(name, is_compute_rail)``. Rails are
    ``{prefix}{i}`` for the rails present (``ib_missing`` leaves the first ``value``); storage
    ports follow, named after all the configured rails (``{prefix}{rails + k}``)."""
    ib = node.hardware.ib
    f = node.fault("ib_missing")
    rails = ib.rail_names(int(f.value) if f is not None else None)
    return [(name, True) for name in rails] + [(name, False) for name in ib.storage_names()]


def _cpu_lists(cpus: int) -> tuple[str, str]:
    """CPU affinity of NUMA node 0 and 1 on a two-socket host with SMT (224 CPUs:
    0-55,112-167 and 56-111,168-223), as nvidia-smi prints them."""
    if cpus % 4 == 0 and cpus >= 4:
        q = cpus // 4
        return f"0-{q - 1},{2 * q}-{3 * q - 1}", f"{q}-{2 * q - 1},{3 * q}-{cpus - 1}"
    half = max(1, cpus // 2)
    return f"0-{half - 1}", (f"{half}-{cpus - 1}" if cpus > half else f"0-{half - 1}")


def topo_matrix(node: SimNode) -> str:
    """``nvidia-smi topo -m`` of the simulated node, in the layout of a real 8x H100 capture:
    GPUs 0-3 on NUMA node 0 and 4-7 on 1, GPUs in pairs under one PCIe switch, one compute rail
    under each GPU's switch (PIX to its GPU, PXB to the other GPU of the pair), a storage NIC's
    ports on NUMA node 0. ``p2p_degraded`` turns a GPU's pairs to SYS; ``nic_far`` moves a NIC
    to the other socket (SYS to its GPU)."""
    spec = node.hardware.gpu
    board = spec.count  # where things sit; gpu_missing hides GPUs, it does not move the NICs
    missing = node.fault("gpu_missing")
    count = int(missing.value) if missing and missing.value is not None else board
    split = (board + 1) // 2  # GPUs below it are on NUMA node 0

    def gpu_numa(g: int) -> int:
        return 0 if g < split else 1

    # every device's place: (NUMA node, PCIe switch)
    place: dict[str, tuple[int, str]] = {f"GPU{g}": (gpu_numa(g), f"sw{g // 2}") for g in range(count)}
    nics = rdma_devices(node)
    rail_gpu: dict[str, int] = {}
    for n, (dev, rail) in enumerate(nics):
        name = f"NIC{n}"
        if rail and board:
            r = int(dev[len(node.hardware.ib.prefix):])
            g = r % board
            rail_gpu[name] = g
            numa, switch = gpu_numa(g), f"sw{g // 2}"
        else:
            numa, switch = 0, "storage"
        if any(f.kind == "nic_far" and f.device == dev for f in node.faults):
            numa, switch = 1 - numa, f"far-{dev}"  # cabled to the other socket's PCIe tree
        place[name] = (numa, switch)
    devices = [f"GPU{g}" for g in range(count)] + [f"NIC{n}" for n in range(len(nics))]
    degraded = {g for g in range(count) if node.fault("p2p_degraded", g)}

    def link(a: str, b: str) -> str:
        if a == b:
            return " X "
        if a.startswith("GPU") and b.startswith("GPU"):
            if int(a[3:]) in degraded or int(b[3:]) in degraded:
                return "SYS"
            if spec.nvlink_links:
                return f"NV{spec.nvlink_links}"
        (na, sa), (nb, sb) = place[a], place[b]
        nic, gpu = (a, b) if a.startswith("NIC") else (b, a)
        if gpu.startswith("GPU") and rail_gpu.get(nic) == int(gpu[3:]) and sa == sb:
            return "PIX"
        if sa == sb:
            return "PIX" if sa == "storage" else "PXB"
        return "NODE" if na == nb else "SYS"

    cpu0, cpu1 = _cpu_lists(node.hardware.system.cpus)
    lines = ["\t" + "\t".join(devices + ["CPU Affinity", "NUMA Affinity", "GPU NUMA ID"])]
    for d in devices:
        row = [d] + [link(d, other) for other in devices]
        if d.startswith("GPU"):
            numa = place[d][0]
            row += [cpu0 if numa == 0 else cpu1, str(numa), "", "N/A"]
        else:
            row += ["", "", "", ""]
        lines.append("\t".join(row))
    lines += ["", "Legend:", "",
              "  X    = Self",
              "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
              "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
              "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
              "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
              "  PIX  = Connection traversing at most a single PCIe bridge",
              "  NV#  = Connection traversing a bonded set of # NVLinks"]
    if nics:
        lines += ["", "NIC Legend:", ""]
        lines += [f"  NIC{n}: {dev}" for n, (dev, _rail) in enumerate(nics)]
    return "\n".join(lines) + "\n"
