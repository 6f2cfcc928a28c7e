"""GPU domain: probe through NVML (nvidia-ml-py, or the simulator's NVML) and judge.

Every NVML call is made on its own: ``NVMLError_NotSupported`` marks the field unsupported
(its check is ``skip``), any other NVML error is recorded for that field (its check is
``error``) — a broken query never condemns a GPU. Only ``NVMLError_GpuIsLost`` is evidence
that a GPU stopped answering (``gpu.health`` fail). A handle that cannot be had for another
reason (NO_PERMISSION or NOT_FOUND when a cgroup hides devices under srun, an unknown error)
makes that GPU's checks ``error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile
from clusterkit.validate.subjects import on_gpu

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

NAME = "gpu"
DOC = "GPUs through NVML: count, model, memory, ECC, row remapping, clocks, temperature, power, PCIe"
CHECKS: dict[str, str] = {
    "gpu": "the profile expects no GPUs (skip)",
    "gpu.nvml": "NVML could not be used: driver not loaded, library missing (error)",
    "gpu.count": "GPUs visible vs the profile's count (fail)",
    "gpu.driver": "driver older than the profile's driver_min (warn)",
    "gpu.handle": "a GPU whose NVML handle could not be had for a reason other than GPU lost (error)",
    "gpu.health": "a GPU that stopped answering NVML: GPU_IS_LOST (fail)",
    "gpu.model": "product name vs the profile's models (fail)",
    "gpu.memory": "framebuffer size vs the profile's floor (fail)",
    "gpu.ecc.mode": "ECC disabled (fail)",
    "gpu.ecc.uncorrectable": "volatile uncorrectable ECC errors since driver load (fail)",
    "gpu.ecc.aggregate": "lifetime uncorrectable ECC errors (warn)",
    "gpu.remap.failure": "row remapping failed: no spare rows (fail)",
    "gpu.remap.pending": "a row remap waits for a GPU reset (fail)",
    "gpu.remap.uncorrectable": "rows remapped for uncorrectable errors (warn)",
    "gpu.persistence": "persistence mode off (warn)",
    "gpu.clocks_event": "hardware slowdown: thermal, power brake (fail); software thermal slowdown (warn)",
    "gpu.temperature": "at the max operating temperature (warn) / at slowdown (fail)",
    "gpu.power.limit": "enforced power limit below the profile's (warn)",
    "gpu.pcie.width": "PCIe link trained narrower than the profile's width (fail)",
    "gpu.pcie.gen": "the link cannot reach the profile's PCIe generation (fail)",
}

# Clocks-event reason bits (nvml.h nvmlClocksEventReason*), named as nvidia-smi names them.
CLOCKS_EVENT_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
HW_SLOWDOWN_REASONS = {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}


class GpuDevice(Record):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: Optional[str] = None
    uuid: Optional[str] = None
    serial: Optional[str] = None
    pci_bus_id: Optional[str] = None
    vbios_version: Optional[str] = None
    memory_total_mib: Optional[int] = None
    persistence_mode: Optional[bool] = None
    ecc_mode_current: Optional[bool] = None
    ecc_mode_pending: Optional[bool] = None
    ecc_volatile_uncorrectable: Optional[int] = None
    ecc_aggregate_uncorrectable: Optional[int] = None
    ecc_volatile_correctable: Optional[int] = None
    remapped_rows_correctable: Optional[int] = None
    remapped_rows_uncorrectable: Optional[int] = None
    remapped_rows_pending: Optional[bool] = None
    remapped_rows_failure: Optional[bool] = None
    clocks_event_reasons: Optional[int] = None
    clocks_event_active: list[str] = Field(default_factory=list)
    temperature_c: Optional[float] = None
    temp_slowdown_c: Optional[float] = None
    temp_shutdown_c: Optional[float] = None
    power_w: Optional[float] = None
    power_limit_w: Optional[float] = None
    power_default_limit_w: Optional[float] = None
    pcie_gen_current: Optional[int] = None
    pcie_gen_max: Optional[int] = None
    pcie_width_current: Optional[int] = None
    pcie_width_max: Optional[int] = None
    unsupported: list[str] = Field(default_factory=list)  # fields NVML says it does not support
    errors: dict[str, str] = Field(default_factory=dict)  # field -> NVML error text
    lost: Optional[str] = None  # the GPU stopped answering: NVML said GPU_IS_LOST
    handle_error: Optional[str] = None  # no handle for another reason (permission, not found, ...)


class GpuMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    error: Optional[str] = None  # NVML itself could not be used: every GPU check is `error`
    driver_version: Optional[str] = None
    cuda_driver_version: Optional[str] = None
    count: Optional[int] = None
    gpus: list[GpuDevice] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- probe
def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> GpuMeasurement:
    """Read every GPU fact through the context's NVML. Never raises for NVML errors."""
    try:
        nvml = ctx.nvml()
        nvml.nvmlInit()
    except ImportError as e:  # nvidia-ml-py missing
        return GpuMeasurement(error=f"nvidia-ml-py is not installed: {e}")
    except Exception as e:  # noqa: BLE001 - NVMLError (driver not loaded, library not found, ...)
        return GpuMeasurement(error=f"NVML could not initialise: {_nvml_text(e)}")
    try:
        return _probe_initialised(nvml)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _nvml_text(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _probe_initialised(nvml: Any) -> GpuMeasurement:
    m = GpuMeasurement()
    skip_exc = _classes(nvml, "NVMLError_NotSupported", "NVMLError_FunctionNotFound")
    lost_exc = _classes(nvml, "NVMLError_GpuIsLost")

    try:
        m.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
    except Exception as e:  # noqa: BLE001
        m.error = f"driver version: {_nvml_text(e)}"
    try:
        v = int(nvml.nvmlSystemGetCudaDriverVersion())
        m.cuda_driver_version = f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:  # noqa: BLE001 - optional fact
        pass
    try:
        m.count = int(nvml.nvmlDeviceGetCount())
    except Exception as e:  # noqa: BLE001
        m.error = f"GPU count: {_nvml_text(e)}"
        return m

    for i in range(m.count):
        dev = GpuDevice(index=i)
        m.gpus.append(dev)
        try:
            h = nvml.nvmlDeviceGetHandleByIndex(i)
        except lost_exc as e:
            dev.lost = _nvml_text(e)
            continue
        except Exception as e:  # noqa: BLE001 - permission, not found, unknown: not evidence
            dev.handle_error = _nvml_text(e)
            continue

        def get(field: str, fn: Callable[[], Any], dev: GpuDevice = dev) -> Any:
            if dev.lost:
                return None
            try:
                return fn()
            except skip_exc:
                dev.unsupported.append(field)
                return None
            except lost_exc as e:
                dev.lost = _nvml_text(e)
                return None
            except Exception as e:  # noqa: BLE001
                dev.errors[field] = _nvml_text(e)
                return None

        dev.name = _opt(get("name", lambda: _text(nvml.nvmlDeviceGetName(h))))
        dev.uuid = _opt(get("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(h))))
        dev.serial = _opt(get("serial", lambda: _text(nvml.nvmlDeviceGetSerial(h))))
        dev.pci_bus_id = _opt(get("pci_bus_id", lambda: _text(nvml.nvmlDeviceGetPciInfo(h).busId)))
        dev.vbios_version = _opt(get("vbios_version", lambda: _text(nvml.nvmlDeviceGetVbiosVersion(h))))
        mem = get("memory_total_mib", lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        dev.memory_total_mib = int(mem.total // (1024 * 1024)) if mem is not None else None
        pm = get("persistence_mode", lambda: nvml.nvmlDeviceGetPersistenceMode(h))
        dev.persistence_mode = None if pm is None else bool(pm)
        ecc = get("ecc_mode", lambda: nvml.nvmlDeviceGetEccMode(h))
        if ecc is not None:
            dev.ecc_mode_current, dev.ecc_mode_pending = bool(ecc[0]), bool(ecc[1])
        unc, cor = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
        vol, agg = nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC
        if dev.ecc_mode_current is not False:
            dev.ecc_volatile_uncorrectable = get(
                "ecc_volatile_uncorrectable", lambda: int(nvml.nvmlDeviceGetTotalEccErrors(h, unc, vol)))
            dev.ecc_aggregate_uncorrectable = get(
                "ecc_aggregate_uncorrectable", lambda: int(nvml.nvmlDeviceGetTotalEccErrors(h, unc, agg)))
            dev.ecc_volatile_correctable = get(
                "ecc_volatile_correctable", lambda: int(nvml.nvmlDeviceGetTotalEccErrors(h, cor, vol)))
        rr = get("remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(h))
        if rr is not None:
            (dev.remapped_rows_correctable, dev.remapped_rows_uncorrectable,
             pending, failure) = (int(rr[0]), int(rr[1]), rr[2], rr[3])
            dev.remapped_rows_pending, dev.remapped_rows_failure = bool(pending), bool(failure)
        reasons = get("clocks_event_reasons", lambda: int(_clocks_event_fn(nvml)(h)))
        if reasons is not None:
            dev.clocks_event_reasons = reasons
            dev.clocks_event_active = [n for bit, n in CLOCKS_EVENT_BITS.items() if reasons & bit]
        dev.temperature_c = get("temperature_c", lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)))
        dev.temp_slowdown_c = get("temp_slowdown_c", lambda: float(nvml.nvmlDeviceGetTemperatureThreshold(
            h, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)))
        dev.temp_shutdown_c = get("temp_shutdown_c", lambda: float(nvml.nvmlDeviceGetTemperatureThreshold(
            h, nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)))
        dev.power_w = _mw(get("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(h)))
        dev.power_limit_w = _mw(get("power_limit_w", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h)))
        dev.power_default_limit_w = _mw(get("power_default_limit_w",
                                            lambda: nvml.nvmlDeviceGetPowerManagementDefaultLimit(h)))
        dev.pcie_gen_current = get("pcie_gen_current", lambda: int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(h)))
        dev.pcie_gen_max = get("pcie_gen_max", lambda: int(nvml.nvmlDeviceGetMaxPcieLinkGeneration(h)))
        dev.pcie_width_current = get("pcie_width_current", lambda: int(nvml.nvmlDeviceGetCurrPcieLinkWidth(h)))
        dev.pcie_width_max = get("pcie_width_max", lambda: int(nvml.nvmlDeviceGetMaxPcieLinkWidth(h)))
    return m


def _classes(nvml: Any, *names: str) -> tuple[type[BaseException], ...]:
    return tuple(c for c in (getattr(nvml, n, None) for n in names)
                 if isinstance(c, type) and issubclass(c, BaseException))


def _clocks_event_fn(nvml: Any) -> Callable[[Any], int]:
    fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    return fn if fn is not None else nvml.nvmlDeviceGetCurrentClocksThrottleReasons


def _opt(v: Any) -> Any:
    return v if v not in ("", None) else None


def _mw(v: Any) -> float | None:
    return None if v is None else round(float(v) / 1000.0, 1)


Measurement = GpuMeasurement


# ------------------------------------------------------------------------------------- judge
def judge(m: GpuMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts on a GPU measurement against a profile."""
    p = profile.gpu
    if p is None:
        return [CheckResult(check="gpu", status=Status.SKIP, message=f"profile {profile.name} expects no GPUs")]
    if m.count is None:
        return [CheckResult(check="gpu.nvml", status=Status.ERROR,
                            message=m.error or "NVML gave no GPU count")]
    out: list[CheckResult] = []
    add = out.append
    count = m.count
    if count == p.count:
        add(CheckResult(check="gpu.count", status=Status.PASS, value=count, threshold=p.count,
                        message=f"{count} GPUs"))
    else:
        add(CheckResult(check="gpu.count", status=Status.FAIL, value=count, threshold=p.count,
                        message=f"{count} GPUs visible, profile {profile.name} expects {p.count}"))
    if m.error:
        add(CheckResult(check="gpu.nvml", status=Status.ERROR, message=m.error))
    if p.driver_min and m.driver_version:
        ok = _version(m.driver_version) >= _version(p.driver_min)
        add(CheckResult(check="gpu.driver", status=Status.PASS if ok else Status.WARN, value=m.driver_version,
                        threshold=p.driver_min, message=f"driver {m.driver_version}" +
                        ("" if ok else f", older than {p.driver_min}")))
    for d in m.gpus:
        out.extend(_judge_device(d, p))
    return out


def _version(v: str) -> tuple[int, ...]:
    """'565.57.01' -> (565, 57, 1); non-numeric parts count as 0."""
    return tuple(int(x) if x.isdigit() else 0 for x in v.strip().split("."))


def _judge_device(d: GpuDevice, p: Any) -> list[CheckResult]:
    """Every check of one GPU. Total: a value that could not be read gives ``error`` (NVML
    failed, or answered nothing) or ``skip`` (not supported) for its check, never a crash and
    never a ``fail``."""
    about = on_gpu(d.index)
    out: list[CheckResult] = []

    def res(check: str, status: Status, message: str, value: Any = None, threshold: Any = None,
            unit: str | None = None) -> None:
        out.append(CheckResult(check=check, **about, status=status, value=value,
                               threshold=threshold, unit=unit, message=message))

    def need(check: str, field: str, value: Any) -> bool:
        """True when ``value`` was read; else emit the check's error/skip and return False."""
        if field in d.errors:
            res(check, Status.ERROR, f"NVML query failed: {d.errors[field]}")
            return False
        if field in d.unsupported:
            res(check, Status.SKIP, "not supported by this GPU/driver")
            return False
        if value is None:
            res(check, Status.ERROR, f"NVML gave no value for {field}")
            return False
        return True

    if d.lost:
        res("gpu.health", Status.FAIL, f"GPU is not answering NVML: {d.lost}")
        return out
    if d.handle_error:
        res("gpu.handle", Status.ERROR, f"cannot open the GPU through NVML: {d.handle_error} "
            "(not evidence of a fault: permissions, or a cgroup hiding the device)")
        return out

    # model
    if need("gpu.model", "name", d.name):
        name = str(d.name)
        if p.model_patterns and not any(s.lower() in name.lower() for s in p.model_patterns):
            res("gpu.model", Status.FAIL, f"{name} is not one of {', '.join(p.model_patterns)}", value=name)
        else:
            res("gpu.model", Status.PASS, name, value=name)
    # memory
    if p.memory_total_mib_min is not None and need("gpu.memory", "memory_total_mib", d.memory_total_mib):
        ok = d.memory_total_mib >= p.memory_total_mib_min
        res("gpu.memory", Status.PASS if ok else Status.FAIL,
            f"{d.memory_total_mib} MiB" + ("" if ok else f", below {p.memory_total_mib_min} MiB"),
            d.memory_total_mib, p.memory_total_mib_min, "MiB")
    # ECC mode
    if p.ecc_required and need("gpu.ecc.mode", "ecc_mode", d.ecc_mode_current):
        if d.ecc_mode_current:
            res("gpu.ecc.mode", Status.PASS, "ECC enabled", True, True)
        else:
            pend = " (enabled pending reboot)" if d.ecc_mode_pending else ""
            res("gpu.ecc.mode", Status.FAIL, f"ECC disabled{pend}", False, True)
    # ECC counters
    if d.ecc_mode_current is False:
        res("gpu.ecc.uncorrectable", Status.SKIP, "ECC disabled: no error counters")
        res("gpu.ecc.aggregate", Status.SKIP, "ECC disabled: no error counters")
    else:
        if need("gpu.ecc.uncorrectable", "ecc_volatile_uncorrectable", d.ecc_volatile_uncorrectable):
            v = int(d.ecc_volatile_uncorrectable or 0)
            if v > 0:
                res("gpu.ecc.uncorrectable", Status.FAIL,
                    f"{v} volatile uncorrectable ECC error{'s' if v != 1 else ''} since driver load", v, 0,
                    "errors")
            else:
                res("gpu.ecc.uncorrectable", Status.PASS, "no volatile uncorrectable ECC errors", 0, 0, "errors")
        if need("gpu.ecc.aggregate", "ecc_aggregate_uncorrectable", d.ecc_aggregate_uncorrectable):
            a = int(d.ecc_aggregate_uncorrectable or 0)
            res("gpu.ecc.aggregate", Status.WARN if a > 0 else Status.PASS,
                f"{a} uncorrectable ECC errors over the GPU's life" if a else "no lifetime uncorrectable ECC errors",
                a, 0, "errors")
    # row remapping (one NVML call gives all three; unsupported or failed: one skip/error)
    if "remapped_rows" in d.errors or "remapped_rows" in d.unsupported:
        need("gpu.remap.failure", "remapped_rows", None)
    else:
        if d.remapped_rows_failure is None:
            res("gpu.remap.failure", Status.ERROR, "NVML gave no remap-failure flag")
        elif d.remapped_rows_failure:
            res("gpu.remap.failure", Status.FAIL, "row remapping failed: no spare rows left (RMA)", True, False)
        else:
            res("gpu.remap.failure", Status.PASS, "no row-remap failure", False, False)
        if d.remapped_rows_pending is None:
            res("gpu.remap.pending", Status.ERROR, "NVML gave no pending-remap flag")
        elif d.remapped_rows_pending:
            res("gpu.remap.pending", Status.FAIL, "a row remap is pending: reset the GPU to apply it", True, False)
        else:
            res("gpu.remap.pending", Status.PASS, "no pending row remap", False, False)
        if d.remapped_rows_uncorrectable is None:
            res("gpu.remap.uncorrectable", Status.ERROR, "NVML gave no remapped-row count")
        else:
            u = d.remapped_rows_uncorrectable
            res("gpu.remap.uncorrectable", Status.WARN if u >= p.remapped_uncorrectable_warn else Status.PASS,
                f"{u} rows remapped for uncorrectable errors (correctable: {d.remapped_rows_correctable or 0})",
                u, p.remapped_uncorrectable_warn, "rows")
    # persistence
    if p.persistence_required and need("gpu.persistence", "persistence_mode", d.persistence_mode):
        res("gpu.persistence", Status.PASS if d.persistence_mode else Status.WARN,
            "persistence mode enabled" if d.persistence_mode else "persistence mode disabled (slow first CUDA start)",
            d.persistence_mode, True)
    # clocks events (throttling)
    if need("gpu.clocks_event", "clocks_event_reasons", d.clocks_event_reasons):
        hw = sorted(set(d.clocks_event_active) & HW_SLOWDOWN_REASONS)
        if hw:
            res("gpu.clocks_event", Status.FAIL, f"hardware slowdown active: {', '.join(hw)}",
                d.clocks_event_reasons, None)
        elif "sw_thermal_slowdown" in d.clocks_event_active:
            res("gpu.clocks_event", Status.WARN, "software thermal slowdown active", d.clocks_event_reasons)
        else:
            res("gpu.clocks_event", Status.PASS,
                "no slowdown" + (f" ({', '.join(d.clocks_event_active)})" if d.clocks_event_active else ""),
                d.clocks_event_reasons)
    # temperature
    if (p.temp_warn_c is not None or p.temp_fail_c is not None) and \
            need("gpu.temperature", "temperature_c", d.temperature_c):
        t = float(d.temperature_c)  # type: ignore[arg-type]
        fail_at = p.temp_fail_c
        if d.temp_slowdown_c and (fail_at is None or d.temp_slowdown_c < fail_at):
            fail_at = d.temp_slowdown_c
        if fail_at is not None and t >= fail_at:
            res("gpu.temperature", Status.FAIL, f"{t:g} C at or above slowdown {fail_at:g} C", t, fail_at, "C")
        elif p.temp_warn_c is not None and t >= p.temp_warn_c:
            res("gpu.temperature", Status.WARN, f"{t:g} C at or above {p.temp_warn_c:g} C", t, p.temp_warn_c, "C")
        else:
            res("gpu.temperature", Status.PASS, f"{t:g} C", t, p.temp_warn_c, "C")
    # power limit
    if p.power_limit_w is not None and need("gpu.power.limit", "power_limit_w", d.power_limit_w):
        lim = float(d.power_limit_w)  # type: ignore[arg-type]
        drawing = f", drawing {d.power_w:g} W" if d.power_w is not None else ""
        if lim < p.power_limit_w * 0.98:
            res("gpu.power.limit", Status.WARN, f"power capped at {lim:g} W, profile expects {p.power_limit_w:g} W",
                lim, p.power_limit_w, "W")
        else:
            res("gpu.power.limit", Status.PASS, f"limit {lim:g} W{drawing}", lim, p.power_limit_w, "W")
    # PCIe
    if p.pcie_width is not None and need("gpu.pcie.width", "pcie_width_current", d.pcie_width_current):
        w = int(d.pcie_width_current)  # type: ignore[arg-type]
        if w < p.pcie_width:
            res("gpu.pcie.width", Status.FAIL, f"PCIe link trained at x{w}, expected x{p.pcie_width}", w,
                p.pcie_width, "lanes")
        else:
            res("gpu.pcie.width", Status.PASS, f"x{w}", w, p.pcie_width, "lanes")
    if p.pcie_gen is not None and need("gpu.pcie.gen", "pcie_gen_max", d.pcie_gen_max):
        g = int(d.pcie_gen_max)  # type: ignore[arg-type]
        cur = f" (now Gen{d.pcie_gen_current}; idle GPUs train down)" if d.pcie_gen_current else ""
        if g < p.pcie_gen:
            res("gpu.pcie.gen", Status.FAIL, f"link can reach only Gen{g}, expected Gen{p.pcie_gen}{cur}", g,
                p.pcie_gen, "gen")
        else:
            res("gpu.pcie.gen", Status.PASS, f"Gen{g} capable{cur}", g, p.pcie_gen, "gen")
    return out


def facts(m: GpuMeasurement) -> dict[str, Any]:
    """Node facts for fleet drift judges."""
    out: dict[str, Any] = {}
    if m.driver_version:
        out["driver_version"] = m.driver_version
    if m.cuda_driver_version:
        out["cuda_version"] = m.cuda_driver_version
    if m.count is not None:
        out["gpu_count"] = m.count
    names = sorted({d.name for d in m.gpus if d.name})
    if names:
        out["gpu_model"] = ", ".join(names)
    vb = sorted({d.vbios_version for d in m.gpus if d.vbios_version})
    if vb:
        out["vbios_version"] = ", ".join(vb)
    return out
