"""NVLink domain: the GPUs' NVLinks and their registration with the NVSwitch fabric, through NVML.

What is read, per GPU (nvidia-ml-py, or the simulator's NVML):

- every link's state (``nvmlDeviceGetNvLinkState`` for link 0 … ``NVML_NVLINK_MAX_LINKS`` - 1;
  a link NVML calls invalid or not supported is not a link of this GPU);
- each active link's speed (``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_NVLINK_GET_SPEED``
  scoped to the link; where that field is not supported, the GPU's common speed
  ``NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON``), in MB/s;
- each link's CRC flit, CRC data, replay and recovery counters
  (``nvmlDeviceGetNvLinkErrorCounter``), and the same counters as the previous run on this node
  left them in the node's state directory (``nvlink-counters.json``), for the growth between runs;
- the GPU's fabric registration (``nvmlDeviceGetGpuFabricInfo`` into a
  ``c_nvmlGpuFabricInfo_t``): state and status, which Fabric Manager drives.

Every NVML call is made on its own, as in the ``gpu`` domain: NotSupported (or a function the
driver lacks) marks a value unsupported (``skip``), any other NVML error marks it unread
(``error``); a value that could not be read is never zero and never fails. Subjects are ``gpu3``
for a GPU and ``gpu3/link7`` for one NVLink: a check that passes is one result per GPU; what is
wrong with a link is one result per link.
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import NVLINK_COUNTERS, NvlinkProfile, Profile
from clusterkit.validate.subjects import on_gpu, on_link

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

NAME = "nvlink"
DOC = "NVLink and the NVSwitch fabric through NVML: active links, link speed, link error counters, fabric registration"
CHECKS: dict[str, str] = {
    "nvlink.nvml": "NVML could not be used, or a GPU could not be read: driver not loaded, GPU lost (error)",
    "nvlink.links": "active NVLinks per GPU below the profile's links_per_gpu (fail)",
    "nvlink.speed": "an NVLink slower than the profile's speed_gbps_min (fail)",
    "nvlink.errors": "NVLink CRC/replay/recovery counters above errors_max (warn), or grown by more than "
                     "errors_delta_max since the previous run on this node (fail)",
    "nvlink.fabric": "GPU not registered with the NVSwitch fabric, or registration failed: Fabric Manager (fail)",
}
#: the judged checks, in order (``nvlink.nvml`` is the probe's own)
JUDGED = ("nvlink.links", "nvlink.speed", "nvlink.errors", "nvlink.fabric")

#: counter name -> nvidia-ml-py's constant for nvmlDeviceGetNvLinkErrorCounter
COUNTER_CONSTANTS: dict[str, str] = {
    "crc_flit": "NVML_NVLINK_ERROR_DL_CRC_FLIT",
    "crc_data": "NVML_NVLINK_ERROR_DL_CRC_DATA",
    "replay": "NVML_NVLINK_ERROR_DL_REPLAY",
    "recovery": "NVML_NVLINK_ERROR_DL_RECOVERY",
}
#: the file in the node's state directory that keeps the counters between runs
STATE_FILE = "nvlink-counters.json"
STATE_VERSION = 1

# nvml.h values, for a stand-in without them (nvidia-ml-py has them all)
_FABRIC_STATES = {0: "not supported", 1: "not started", 2: "in progress", 3: "completed"}
_FABRIC_NOT_SUPPORTED, _FABRIC_NOT_STARTED, _FABRIC_IN_PROGRESS, _FABRIC_COMPLETED = 0, 1, 2, 3
_FI_GET_SPEED = 164  # NVML_FI_DEV_NVLINK_GET_SPEED: per link (scopeId = link), MB/s
_FI_SPEED_COMMON = 90  # NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON: all active links, MB/s
_NVML_SUCCESS, _NVML_NOT_SUPPORTED = 0, 3
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class NvLink(Record):
    model_config = ConfigDict(extra="forbid")

    link: int
    active: Optional[bool] = None  # None: the state could not be read
    speed_mbps: Optional[int] = None
    counters: dict[str, int] = Field(default_factory=dict)  # counter -> value since driver load
    previous: dict[str, int] = Field(default_factory=dict)  # the same at the previous run (if any)
    unsupported: list[str] = Field(default_factory=list)  # "speed" or a counter NVML does not support
    errors: dict[str, str] = Field(default_factory=dict)  # "state", "speed" or a counter -> NVML error


class NvlinkGpu(Record):
    model_config = ConfigDict(extra="forbid")

    index: int
    uuid: Optional[str] = None
    links: list[NvLink] = Field(default_factory=list)
    nvlink_unsupported: bool = False  # no link answered: NVLink not supported by this GPU/driver
    previous_at: Optional[float] = None  # when the previous run recorded this GPU's counters (epoch s)
    fabric_state: Optional[int] = None  # NVML_GPU_FABRIC_STATE_*
    fabric_status: Optional[int] = None  # an NVML return code; meaningful once state is completed
    fabric_status_text: Optional[str] = None
    fabric_clique: Optional[int] = None
    fabric_unsupported: bool = False
    fabric_error: Optional[str] = None
    lost: Optional[str] = None  # GPU_IS_LOST
    handle_error: Optional[str] = None  # no handle for another reason


class NvlinkMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    error: Optional[str] = None  # NVML itself could not be used
    count: Optional[int] = None
    gpus: list[NvlinkGpu] = Field(default_factory=list)
    measured_at: Optional[float] = None
    state_file: Optional[str] = None
    state_error: Optional[str] = None  # counters could not be kept between runs


Measurement = NvlinkMeasurement


# ------------------------------------------------------------------------------------- probe
def _nvml_text(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _classes(nvml: Any, *names: str) -> tuple[type[BaseException], ...]:
    return tuple(c for c in (getattr(nvml, n, None) for n in names)
                 if isinstance(c, type) and issubclass(c, BaseException))


#: nvml.h return codes nvidia-ml-py has no text for without the library
_RETURN_NAMES = {19: "In Use", 20: "Insufficient Memory", 21: "No Data", 22: "vGPU ECC Not Supported",
                 23: "Insufficient Resources", 24: "Frequency Not Supported", 25: "Argument Version Mismatch",
                 26: "Deprecated", 27: "Not Ready", 28: "GPU Not Found", 29: "Invalid State"}


def _return_text(nvml: Any, code: int) -> str:
    """An NVML return code as nvidia-ml-py names it ("Not Supported")."""
    if code in _RETURN_NAMES:
        return _RETURN_NAMES[code]
    try:
        text = _nvml_text(nvml.NVMLError(code))
    except Exception:  # noqa: BLE001 - a stand-in without NVMLError
        text = ""
    return text if text and not text.startswith("NVML Error with code") else f"NVML return code {code}"


def _field_value(v: Any) -> Optional[float]:
    attr = _VALUE_FIELDS.get(int(v.valueType))
    return None if attr is None else getattr(v.value, attr)


def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> NvlinkMeasurement:
    """Read every NVLink fact through the context's NVML, and keep the error counters for the
    next run. Never raises for NVML errors."""
    if profile is not None and profile.nvlink is None:
        return NvlinkMeasurement()  # nothing expected: nothing probed
    try:
        nvml = ctx.nvml()
        nvml.nvmlInit()
    except ImportError as e:
        return NvlinkMeasurement(error=f"nvidia-ml-py is not installed: {e}")
    except Exception as e:  # noqa: BLE001 - NVMLError (driver not loaded, library not found, ...)
        return NvlinkMeasurement(error=f"NVML could not initialise: {_nvml_text(e)}")
    try:
        m = _probe_initialised(nvml)
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass
    if m.count is not None and m.count >= 2:
        _exchange_state(ctx, m)
    return m


def _probe_initialised(nvml: Any) -> NvlinkMeasurement:
    m = NvlinkMeasurement(measured_at=round(time.time(), 3))
    try:
        m.count = int(nvml.nvmlDeviceGetCount())
    except Exception as e:  # noqa: BLE001
        m.error = f"GPU count: {_nvml_text(e)}"
        return m
    if m.count < 2:
        return m  # no NVLink peers: nothing to read
    for i in range(m.count):
        m.gpus.append(_probe_gpu(nvml, i))
    return m


def _probe_gpu(nvml: Any, i: int) -> NvlinkGpu:
    g = NvlinkGpu(index=i)
    skip_exc = _classes(nvml, "NVMLError_NotSupported", "NVMLError_FunctionNotFound")
    invalid_exc = _classes(nvml, "NVMLError_InvalidArgument")
    lost_exc = _classes(nvml, "NVMLError_GpuIsLost")
    try:
        h = nvml.nvmlDeviceGetHandleByIndex(i)
    except lost_exc as e:
        g.lost = _nvml_text(e)
        return g
    except Exception as e:  # noqa: BLE001 - permission, not found, unknown: not evidence
        g.handle_error = _nvml_text(e)
        return g

    def call(fn: Callable[[], Any], on_skip: Callable[[], None], on_error: Callable[[str], None]) -> Any:
        if g.lost:
            return None
        try:
            return fn()
        except skip_exc:
            on_skip()
        except lost_exc as e:
            g.lost = _nvml_text(e)
        except Exception as e:  # noqa: BLE001
            on_error(_nvml_text(e))
        return None

    try:
        g.uuid = _text(nvml.nvmlDeviceGetUUID(h)) or None
    except lost_exc as e:
        g.lost = _nvml_text(e)
        return g
    except Exception:  # noqa: BLE001 - only a key for the state file
        pass

    # links: their states
    max_links = int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))
    enabled = getattr(nvml, "NVML_FEATURE_ENABLED", 1)
    for link in range(max(0, min(max_links, 64))):
        try:
            st = nvml.nvmlDeviceGetNvLinkState(h, link)
        except invalid_exc:
            continue  # not a link of this GPU
        except skip_exc:
            continue  # no NVLink here: every link answers so on a PCIe card
        except lost_exc as e:
            g.lost = _nvml_text(e)
            return g
        except Exception as e:  # noqa: BLE001
            g.links.append(NvLink(link=link, errors={"state": _nvml_text(e)}))
            continue
        g.links.append(NvLink(link=link, active=(int(st) == int(enabled))))
    if not g.links:
        g.nvlink_unsupported = True
    else:
        _probe_speed(nvml, h, g, skip_exc, lost_exc)
        _probe_counters(nvml, h, g, call)
    _probe_fabric(nvml, h, g, call)
    return g


def _probe_speed(nvml: Any, h: Any, g: NvlinkGpu, skip_exc: tuple[type[BaseException], ...],
                 lost_exc: tuple[type[BaseException], ...]) -> None:
    active = [ln for ln in g.links if ln.active]
    if not active or g.lost:
        return
    ok = int(getattr(nvml, "NVML_SUCCESS", _NVML_SUCCESS))
    unsupported = int(getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", _NVML_NOT_SUPPORTED))
    per_link = int(getattr(nvml, "NVML_FI_DEV_NVLINK_GET_SPEED", _FI_GET_SPEED))
    common = int(getattr(nvml, "NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON", _FI_SPEED_COMMON))

    def record(ln: NvLink, v: Any) -> bool:
        """True when the value needs the common-speed fallback."""
        ret = int(v.nvmlReturn)
        if ret == ok:
            val = _field_value(v)
            if val is None or val <= 0:
                ln.errors["speed"] = f"NVML gave no usable speed ({val!r})"
            else:
                ln.speed_mbps = int(val)
            return False
        if ret == unsupported:
            return True
        ln.errors["speed"] = _return_text(nvml, ret)
        return False

    fallback: list[NvLink] = []
    to_common: tuple[type[BaseException], ...] = (TypeError, *skip_exc)  # TypeError: an old nvidia-ml-py
    try:
        values = nvml.nvmlDeviceGetFieldValues(h, [(per_link, ln.link) for ln in active])
        for ln, v in zip(active, values):
            if record(ln, v):
                fallback.append(ln)
    except to_common:
        fallback = list(active)
    except lost_exc as e:
        g.lost = _nvml_text(e)
        return
    except Exception as e:  # noqa: BLE001
        for ln in active:
            ln.errors["speed"] = _nvml_text(e)
        return
    if not fallback:
        return
    try:
        (v,) = nvml.nvmlDeviceGetFieldValues(h, [common])[:1]
    except skip_exc:
        for ln in fallback:
            ln.unsupported.append("speed")
        return
    except lost_exc as e:
        g.lost = _nvml_text(e)
        return
    except Exception as e:  # noqa: BLE001
        for ln in fallback:
            ln.errors["speed"] = _nvml_text(e)
        return
    for ln in fallback:
        if record(ln, v):
            ln.unsupported.append("speed")


def _probe_counters(nvml: Any, h: Any, g: NvlinkGpu, call: Callable[..., Any]) -> None:
    for ln in g.links:
        for name, const in COUNTER_CONSTANTS.items():
            code = getattr(nvml, const, None)
            if code is None:
                ln.unsupported.append(name)
                continue

            def skip(ln: NvLink = ln, name: str = name) -> None:
                ln.unsupported.append(name)

            def err(text: str, ln: NvLink = ln, name: str = name) -> None:
                ln.errors[name] = text

            v = call(lambda ln=ln, code=code: nvml.nvmlDeviceGetNvLinkErrorCounter(h, ln.link, code), skip, err)
            if v is not None:
                ln.counters[name] = int(v)
            if g.lost:
                return


def _probe_fabric(nvml: Any, h: Any, g: NvlinkGpu, call: Callable[..., Any]) -> None:
    cls = getattr(nvml, "c_nvmlGpuFabricInfo_t", None)
    if cls is None or g.lost:
        g.fabric_unsupported = cls is None
        return
    info = cls()

    def skip() -> None:
        g.fabric_unsupported = True

    def err(text: str) -> None:
        g.fabric_error = text

    def read() -> bool:
        nvml.nvmlDeviceGetGpuFabricInfo(h, ctypes.byref(info))  # fills `info`
        return True

    if not call(read, skip, err):
        return
    g.fabric_state = int(info.state)
    g.fabric_status = int(info.status)
    g.fabric_status_text = _return_text(nvml, g.fabric_status)
    g.fabric_clique = int(getattr(info, "cliqueId", 0))


# ------------------------------------------------------------------------- counters between runs
def _gpu_key(g: NvlinkGpu) -> str:
    return g.uuid or f"index{g.index}"


def _exchange_state(ctx: "ProbeContext", m: NvlinkMeasurement) -> None:
    """Attach the previous run's counters to ``m`` and store this run's in their place."""
    try:
        path = ctx.state_path(STATE_FILE)
    except OSError as e:
        m.state_error = f"state directory {ctx.state_dir}: {e.strerror or e}"
        return
    m.state_file = path
    old: dict[str, Any] = {}
    doc, problem = ctx.read_state(path)
    if problem:  # unreadable or corrupt: start again from this run
        m.state_error = f"{path}: {problem}; counted from this run on"
    elif isinstance(doc, dict) and doc.get("version") == STATE_VERSION and isinstance(doc.get("gpus"), dict):
        old = doc["gpus"]
    # GPUs of this run only (a swapped GPU's entry goes); one unread this run keeps its entry
    new: dict[str, Any] = {_gpu_key(g): old[_gpu_key(g)] for g in m.gpus if _gpu_key(g) in old}
    for g in m.gpus:
        key = _gpu_key(g)
        prev = old.get(key)
        if isinstance(prev, dict) and isinstance(prev.get("links"), dict):
            links = prev["links"]
            t = prev.get("time")
            g.previous_at = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
            for ln in g.links:
                counters = links.get(str(ln.link))
                if isinstance(counters, dict):
                    ln.previous = {k: int(v) for k, v in counters.items()
                                   if k in NVLINK_COUNTERS and isinstance(v, int) and not isinstance(v, bool)}
        read = {str(ln.link): dict(ln.counters) for ln in g.links if ln.counters}
        if read:
            new[key] = {"index": g.index, "time": m.measured_at, "links": read}
    problem = ctx.write_state(path, {"version": STATE_VERSION, "gpus": new})
    if problem:
        m.state_error = f"{path}: {problem}"


# ------------------------------------------------------------------------------------- judge
def judge(m: NvlinkMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts on an NVLink measurement against a profile. Total: a value that could not be
    read gives ``error`` (or ``skip`` when not supported), never a crash and never a ``fail``."""
    p = profile.nvlink
    if p is None:
        return [CheckResult(check=c, status=Status.SKIP, message=f"profile {profile.name} expects no NVLink")
                for c in JUDGED]
    if m.count is None:
        return [CheckResult(check="nvlink.nvml", status=Status.ERROR, message=m.error or "NVML gave no GPU count")]
    if m.count < 2:
        why = "no GPUs" if m.count == 0 else "a single GPU"
        return [CheckResult(check=c, status=Status.SKIP, message=f"{why}: no NVLink peers")
                for c in _enabled(p)]
    out: list[CheckResult] = []
    if m.error:
        out.append(CheckResult(check="nvlink.nvml", status=Status.ERROR, message=m.error))
    if m.state_error and "nvlink.errors" in _enabled(p):
        out.append(CheckResult(check="nvlink.errors", status=Status.ERROR,
                               message=f"NVLink counters cannot be kept between runs ({m.state_error}): growth "
                                       "is not judged; give node-check a writable --state-dir"))
    for g in m.gpus:
        out.extend(_judge_gpu(g, p))
    return out


def _enabled(p: NvlinkProfile) -> list[str]:
    out = ["nvlink.links"]
    if p.speed_gbps_min is not None:
        out.append("nvlink.speed")
    if p.errors_max or p.errors_delta_max:
        out.append("nvlink.errors")
    if p.fabric_required:
        out.append("nvlink.fabric")
    return out


def _ranges(links: list[int]) -> str:
    """[0, 1, 2, 5] -> 'links 0-2, 5' ('link 5' for one)."""
    nums = sorted(set(links))
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ("link " if len(nums) == 1 else "links ") + ", ".join(parts)


def _gbps(mbps: int) -> str:
    return f"{mbps / 1000:.3f} GB/s"


def _judge_gpu(g: NvlinkGpu, p: NvlinkProfile) -> list[CheckResult]:
    about = on_gpu(g.index)
    enabled = _enabled(p)
    out: list[CheckResult] = []

    def res(check: str, status: Status, message: str, value: Any = None, threshold: Any = None,
            unit: Optional[str] = None, link: Optional[int] = None) -> None:
        """A result about the GPU, or about one of its links (``link``)."""
        at = about if link is None else on_link(g.index, link)
        out.append(CheckResult(check=check, **at, status=status, value=value,
                               threshold=threshold, unit=unit, message=message))

    if g.lost:
        res("nvlink.nvml", Status.ERROR, f"GPU is not answering NVML: {g.lost} (see gpu.health)")
        return out
    if g.handle_error:
        res("nvlink.nvml", Status.ERROR, f"no NVML handle for this GPU: {g.handle_error}")
        return out
    if g.nvlink_unsupported:
        for c in enabled:
            if c != "nvlink.fabric":
                res(c, Status.SKIP, "NVLink not supported by this GPU/driver")
    else:
        _judge_links(g, p, res)
        if "nvlink.speed" in enabled:
            _judge_speed(g, p, res)
        if "nvlink.errors" in enabled:
            _judge_errors(g, p, res)
    if "nvlink.fabric" in enabled:
        _judge_fabric(g, res)
    return out


def _judge_links(g: NvlinkGpu, p: NvlinkProfile, res: Callable[..., None]) -> None:
    want = p.links_per_gpu
    active = [ln.link for ln in g.links if ln.active is True]
    down = [ln.link for ln in g.links if ln.active is False]
    unread = [ln for ln in g.links if ln.active is None]
    n = len(active)
    if n >= want:
        res("nvlink.links", Status.PASS, f"{n} NVLinks active", n, want, "links")
        return
    notes = []
    if down:
        notes.append(f"down: {_ranges(down)}")
    if unread:
        first = next(iter(unread[0].errors.values()), "no value")
        notes.append(f"state unread on {_ranges([ln.link for ln in unread])}: {first}")
    if n + len(unread) < want:
        missing = want - len(g.links)
        if missing > 0:
            notes.append(f"only {len(g.links)} links present")
        res("nvlink.links", Status.FAIL, f"{n} of {want} NVLinks active ({'; '.join(notes)})", n, want, "links")
    else:
        res("nvlink.links", Status.ERROR, f"{n} NVLinks known active, {'; '.join(notes)}", n, want, "links")


def _judge_speed(g: NvlinkGpu, p: NvlinkProfile, res: Callable[..., None]) -> None:
    floor = float(p.speed_gbps_min)  # type: ignore[arg-type]
    active = [ln for ln in g.links if ln.active is True]
    if not active:
        res("nvlink.speed", Status.SKIP, "no active NVLink to measure (see nvlink.links)")
        return
    known = [ln for ln in active if ln.speed_mbps is not None]
    unread = [ln for ln in active if ln.speed_mbps is None and "speed" not in ln.unsupported]
    slow = [ln for ln in known if ln.speed_mbps is not None and ln.speed_mbps / 1000.0 < floor]
    for ln in slow:
        mbps = int(ln.speed_mbps)  # type: ignore[arg-type]
        res("nvlink.speed", Status.FAIL, f"link {ln.link} at {_gbps(mbps)}, below {floor:g} GB/s",
            round(mbps / 1000.0, 3), floor, "GB/s", link=ln.link)
    if unread:
        first = unread[0].errors.get("speed", "NVML gave no value")
        res("nvlink.speed", Status.ERROR, f"speed unread on {_ranges([ln.link for ln in unread])}: {first}")
    elif not known:
        res("nvlink.speed", Status.SKIP, "NVLink speed not supported by this GPU/driver")
    elif not slow:
        low = min(int(ln.speed_mbps) for ln in known)  # type: ignore[arg-type]
        high = max(int(ln.speed_mbps) for ln in known)  # type: ignore[arg-type]
        at = _gbps(low) if low == high else f"{_gbps(low)} to {_gbps(high)}"
        res("nvlink.speed", Status.PASS, f"{len(known)} links at {at}", round(low / 1000.0, 3), floor, "GB/s")


def _judge_errors(g: NvlinkGpu, p: NvlinkProfile, res: Callable[..., None]) -> None:
    flagged = 0
    unread: dict[int, str] = {}
    read_any = False
    growth_known = False
    reset = []
    for ln in g.links:
        for c in NVLINK_COUNTERS:
            if c in ln.errors:
                unread.setdefault(ln.link, f"{c}: {ln.errors[c]}")
        if not ln.counters:
            continue
        read_any = True
        warn: list[str] = []
        fail: list[str] = []
        first_fail: Optional[tuple[int, int]] = None  # (value, threshold) shown with the result
        first_warn: Optional[tuple[int, int]] = None
        for c in NVLINK_COUNTERS:
            v = ln.counters.get(c)
            if v is None:
                continue
            prev = ln.previous.get(c)
            if prev is not None:
                if v >= prev:
                    growth_known = True
                    lim = p.errors_delta_max.get(c)
                    if lim is not None and v - prev > lim:
                        fail.append(f"{c} +{v - prev} since the previous run (max {lim})")
                        first_fail = first_fail or (v - prev, lim)
                elif ln.link not in reset:
                    reset.append(ln.link)
            lim = p.errors_max.get(c)
            if lim is not None and v > lim:
                warn.append(f"{c} {v} (max {lim})")
                first_warn = first_warn or (v, lim)
        shown = first_fail or first_warn
        if shown is not None:
            flagged += 1
            res("nvlink.errors", Status.FAIL if fail else Status.WARN, f"link {ln.link}: " + "; ".join(fail + warn),
                shown[0], shown[1], "errors", link=ln.link)
    if unread:
        links = sorted(unread)
        res("nvlink.errors", Status.ERROR, f"counters unread on {_ranges(links)}: {unread[links[0]]}")
        return
    if not read_any:
        res("nvlink.errors", Status.SKIP, "NVLink error counters not supported by this GPU/driver")
        return
    if flagged:
        return
    if reset:
        note = f" (counters restarted since the previous run on {_ranges(reset)}: driver reload or GPU reset; " \
               "their growth is judged from the next run)"
    elif growth_known:
        note = " or grown since the previous run"
    else:
        note = " (no previous run recorded: growth is judged from the next run)"
    res("nvlink.errors", Status.PASS, f"no NVLink error counter above its limit on {len(g.links)} links{note}",
        None, None, "errors")


def _judge_fabric(g: NvlinkGpu, res: Callable[..., None]) -> None:
    if g.fabric_error:
        res("nvlink.fabric", Status.ERROR, f"NVML query failed: {g.fabric_error}")
        return
    if g.fabric_unsupported:
        res("nvlink.fabric", Status.SKIP, "GPU fabric info not supported by this GPU/driver")
        return
    st = g.fabric_state
    if st is None:
        res("nvlink.fabric", Status.ERROR, "NVML gave no fabric state")
        return
    name = _FABRIC_STATES.get(st, f"unknown ({st})")
    if st == _FABRIC_NOT_SUPPORTED:
        res("nvlink.fabric", Status.SKIP, "GPU fabric not supported here (no NVSwitch fabric)", name)
    elif st == _FABRIC_COMPLETED:
        if g.fabric_status is None:
            res("nvlink.fabric", Status.ERROR, "fabric registration completed, but NVML gave no status", name)
        elif g.fabric_status == _NVML_SUCCESS:
            clique = f" (clique {g.fabric_clique})" if g.fabric_clique is not None else ""
            res("nvlink.fabric", Status.PASS, f"registered with the NVSwitch fabric{clique}", name, "completed")
        else:
            res("nvlink.fabric", Status.FAIL, "fabric registration completed with an error: "
                f"{g.fabric_status_text or g.fabric_status}", name, "completed")
    elif st in (_FABRIC_NOT_STARTED, _FABRIC_IN_PROGRESS):
        res("nvlink.fabric", Status.FAIL, f"fabric registration {name}, not completed: is nvidia-fabricmanager "
            "running? (CUDA answers \"system not yet initialized\")", name, "completed")
    else:
        res("nvlink.fabric", Status.ERROR, f"fabric state {name} not known to this clusterkit", name, "completed")


def facts(m: NvlinkMeasurement) -> dict[str, Any]:
    """No facts for fleet judges yet."""
    return {}
