"""Xid domain: NVIDIA Xid (GPU) and SXid (NVSwitch) events in the kernel log, within a window.

What is read: ``ctx.kernel_log()``: ``node-check --kernel-log FILE``, else ``dmesg -T``, else
``journalctl -k`` (where ``dmesg`` is restricted); on a simulated node the stand-in ``dmesg``.
Lines are parsed by :mod:`clusterkit.parsers.xid` (every kernel-log layout it knows: ``dmesg``,
``dmesg -T``, ``--time-format iso``, ``--decode``, journal ``short``/``short-iso``/``cat``).

Window: only events within ``window_h`` hours (profile ``xid.window_h``, default 2; ``node-check
--xid-window HOURS``) count. The window runs back from *now* for a live log, and from the file's
last timestamp for a saved log (``--kernel-log``). Lines without a timestamp (``journalctl -o
cat``) are inside it. ``[ 123.456]`` stamps (seconds since boot, plain ``dmesg``) are measured
against the log's last such stamp, live or saved: the node's uptime is not in the log. An event
stamped after the reference (a clock step) is inside.

Action classes come from the versioned catalog (``clusterkit/data/xid_catalog.yaml``):
``isolate``, ``reset_gpu`` and ``reboot`` are actionable (``fail``); ``monitor`` and Xids the
catalog does not know are ``warn``. An Xid 45 line that says ``caused by previous Xid N`` (the
driver's root-cause note on preemptive cleanup) is reported under Xid N. Repeated events are
folded per subject and Xid: a count of lines, the first and the last time. Xid 154 takes the
action its latest line states (the recovery action the GPU needs now).

Subjects: ``gpuN`` when NVML maps the event's PCI address to a GPU index, else the PCI address
(``0000:19:00``); SXid subjects are the NVSwitch's PCI address (``0000:05:00.0``).

No kernel log readable is ``xid.log`` error, never a failure: an unreadable log is not evidence.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile
from clusterkit.validate.subjects import on_gpu

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.parsers.xid import XidEvent
    from clusterkit.validate.context import ProbeContext

NAME = "xid"
DOC = "Xid (GPU) and SXid (NVSwitch) events in the kernel log within a window, by the catalog's action class"
CHECKS: dict[str, str] = {
    "xid.log": "the kernel log could not be read: dmesg restricted and no journal, unreadable file (error)",
    "xid.events": "Xid events in the window per GPU (or PCI address): isolate/reset_gpu/reboot (fail), "
                  "monitor or not in the catalog (warn)",
    "xid.sxid": "NVSwitch SXid events in the window per switch: fatal (fail), non-fatal (warn)",
}

DEFAULT_WINDOW_H = 2.0
#: the longest the probe waits for NVML's PCI map (subjects fall back to PCI addresses)
NVML_WAIT_S = 10.0
#: action classes that take the GPU/node out of service: ``fail``
ACTIONABLE = frozenset({"isolate", "reset_gpu", "reboot"})
_CAUSED_BY = re.compile(r"caused by previous Xid\s+(\d{1,6})", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MAX_MESSAGE = 200


class XidGroup(Record):
    """Repeated events folded: one subject, one (root-cause) Xid or SXid."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    pci: str
    gpu: Optional[int] = None
    sxid: bool = False
    xid: int  # the root cause: for an Xid 45 "caused by previous Xid N" line, N
    name: Optional[str] = None
    action: str
    severity: Optional[str] = None  # SXid: fatal / non-fatal
    count: int  # lines in the window
    via_xid45: int = 0  # of them, Xid 45 lines naming this Xid as their cause
    first: Optional[str] = None  # time of the first line, as printed
    last: Optional[str] = None
    message: str = ""  # the first line's message (cut to 200 characters)


class XidMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    source: str = ""
    error: Optional[str] = None  # no kernel log could be read (or it was not one)
    live: bool = True
    lines: int = 0
    window_h: float = DEFAULT_WINDOW_H
    reference: Optional[str] = None  # what the window runs back from, in words
    catalog_version: Optional[str] = None
    gpu_by_pci: dict[str, int] = Field(default_factory=dict)  # "0000:18:00" -> GPU index (NVML)
    nvml_error: Optional[str] = None
    groups: list[XidGroup] = Field(default_factory=list)
    outside_window: int = 0  # Xid/SXid lines older than the window


Measurement = XidMeasurement


# ------------------------------------------------------------------------------------- probe
def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> XidMeasurement:
    """Read the kernel log and NVML's PCI map; fold the events of the window. Never raises."""
    window_h = window_hours(profile)
    # NVML only names the subjects: a hung driver must not keep the log's evidence from being
    # judged, so the map is made in a thread and waited for a bounded time
    found: list[tuple[dict[str, int], Optional[str]]] = []
    mapper = threading.Thread(target=lambda: found.append(_nvml_pci_map(ctx)), name="ck-xid-nvml", daemon=True)
    mapper.start()
    text, source = ctx.kernel_log()
    wait = max(0.0, min(NVML_WAIT_S, ctx.time_left() - 2.0))
    mapper.join(wait)
    gpu_by_pci, nvml_error = found[0] if found else ({}, f"NVML did not answer within {wait:g}s")
    if text is None:
        return XidMeasurement(source=source, error=f"no kernel log could be read: {source}",
                              window_h=window_h, gpu_by_pci=gpu_by_pci, nvml_error=nvml_error,
                              live=not ctx.kernel_log_file)
    return measure(text, source, window_h=window_h, live=not ctx.kernel_log_file, now=time.time(),
                   gpu_by_pci=gpu_by_pci, nvml_error=nvml_error)


def window_hours(profile: Optional[Profile]) -> float:
    section = getattr(profile, "xid", None) if profile is not None else None
    value = getattr(section, "window_h", None)
    return float(value) if value is not None else DEFAULT_WINDOW_H


def pci_key(address: str) -> Optional[str]:
    """'00000000:18:00.0' (NVML), '0000:18:00' (Xid line) -> '0000:18:00'; None if not PCI."""
    m = re.match(r"^\s*([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})(?:\.[0-7])?\s*$", address)
    if not m:
        return None
    return f"{int(m.group(1), 16):04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}"


def _nvml_pci_map(ctx: "ProbeContext") -> tuple[dict[str, int], Optional[str]]:
    """PCI address -> GPU index through NVML; ({}, why) when NVML cannot say."""
    try:
        nvml = ctx.nvml()
        nvml.nvmlInit()
    except ImportError as e:
        return {}, f"nvidia-ml-py is not installed: {e}"
    except Exception as e:  # noqa: BLE001 - NVMLError: driver not loaded, ...
        return {}, f"NVML could not initialise: {' '.join(str(e).split()) or type(e).__name__}"
    out: dict[str, int] = {}
    why: Optional[str] = None
    try:
        for i in range(int(nvml.nvmlDeviceGetCount())):
            try:
                bus = nvml.nvmlDeviceGetPciInfo(nvml.nvmlDeviceGetHandleByIndex(i)).busId
                key = pci_key(bus.decode("ascii", "replace") if isinstance(bus, bytes) else str(bus))
                if key is not None:
                    out[key] = i
            except Exception as e:  # noqa: BLE001 - a lost GPU keeps its events under the PCI address
                why = why or f"GPU {i}: {' '.join(str(e).split()) or type(e).__name__}"
    except Exception as e:  # noqa: BLE001
        why = f"GPU count: {' '.join(str(e).split()) or type(e).__name__}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - best effort
            pass
    return out, why


# ------------------------------------------------------------------------------------- time
def _epoch(local: _dt.datetime) -> float:
    """A wall-clock datetime as epoch seconds (naive: the node's local time, as dmesg -T prints)."""
    return local.timestamp()


def _iso_epoch(text: str) -> Optional[float]:
    s = text.strip().replace(",", ".")
    m = re.match(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", s)
    if not m:
        return None
    frac = (m.group(3) + "000000")[:7] if m.group(3) else ""  # microseconds: 6 digits
    tz = m.group(4) or ""
    if tz == "Z":
        tz = "+00:00"
    elif tz and ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        return _epoch(_dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{tz}"))
    except ValueError:
        return None


def _ctime_epoch(text: str) -> Optional[float]:
    """'Tue Jan 21 02:21:33 2025' (dmesg -T, local time)."""
    parts = text.split()
    if len(parts) != 5 or parts[1] not in _MONTHS:
        return None
    try:
        hh, mm, ss = (int(x) for x in parts[3].split(":"))
        return _epoch(_dt.datetime(int(parts[4]), _MONTHS[parts[1]], int(parts[2]), hh, mm, ss))
    except ValueError:
        return None


def _syslog_epoch(text: str, year: int) -> Optional[float]:
    """'Jan 21 02:21:33' (journalctl short, syslog: local time, no year)."""
    parts = text.split()
    if len(parts) != 3 or parts[0] not in _MONTHS:
        return None
    try:
        hh, mm, ss = (int(x) for x in parts[2].split(":"))
        return _epoch(_dt.datetime(year, _MONTHS[parts[0]], int(parts[1]), hh, mm, ss))
    except ValueError:  # Feb 29 in a year without it
        return None


def _wall(stamp: Optional[str], year: int) -> Optional[float]:
    if not stamp:
        return None
    if stamp[:4].isdigit():
        return _iso_epoch(stamp)
    if stamp.count(":") == 2 and len(stamp.split()) == 5:
        return _ctime_epoch(stamp)
    return _syslog_epoch(stamp, year)


def _stamps(line: str) -> tuple[Optional[str], Optional[float]]:
    """(wall-clock stamp as printed, uptime seconds) of one kernel-log line."""
    from clusterkit.parsers.xid import _prefix_fields

    f = _prefix_fields(line)
    return f.get("timestamp"), f.get("uptime_s")


def _year_for(stamp: str, now: float) -> int:
    """The year of a year-less syslog stamp: this year, or last year when this year's date is
    more than a day ahead of ``now``."""
    year = _dt.datetime.fromtimestamp(now).year
    e = _syslog_epoch(stamp, year)
    return year - 1 if e is not None and e > now + 86400 else year


# ------------------------------------------------------------------------------------- measure
def measure(text: str, source: str, *, window_h: float = DEFAULT_WINDOW_H, live: bool = True,
            now: Optional[float] = None, gpu_by_pci: Optional[dict[str, int]] = None,
            nvml_error: Optional[str] = None) -> XidMeasurement:
    """Pure: the events of ``text`` inside the window, folded per subject and Xid.

    ``live``: the log was read from the node now (``dmesg``, ``journalctl``): the window runs
    back from ``now`` (epoch seconds). Else it is a saved file: the window runs back from its
    last timestamp."""
    from clusterkit.errors import ParseError
    from clusterkit.parsers.base import split_lines
    from clusterkit.parsers.xid import classify, load_catalog, parse_xid

    now = time.time() if now is None else now
    pcimap = dict(gpu_by_pci or {})
    m = XidMeasurement(source=source, live=live, window_h=window_h, gpu_by_pci=pcimap, nvml_error=nvml_error,
                       catalog_version=load_catalog().version)
    lines = split_lines(text)
    m.lines = sum(1 for ln in lines if ln.strip() and not ln.startswith("-- "))
    if m.lines == 0 and live:
        m.error = (f"{source} gave no kernel log lines (a cleared ring buffer, or no permission to read "
                   "the journal)")
        return m
    try:
        parsed = parse_xid(text)
    except ParseError as err:
        m.error = f"{source}: not a kernel log: {err}"
        return m

    # the references: now for a live log, else the last wall-clock stamp; the last uptime stamp
    last_wall_text: Optional[str] = None
    last_uptime: Optional[float] = None
    for ln in reversed(lines):
        if "[" not in ln and ":" not in ln:
            continue
        stamp, up = _stamps(ln)
        if last_wall_text is None and stamp:
            last_wall_text = stamp
        if last_uptime is None and up is not None:
            last_uptime = up
        if last_wall_text is not None and last_uptime is not None:
            break
    if live:
        ref_wall: Optional[float] = now
        year = _dt.datetime.fromtimestamp(now).year
        m.reference = f"now ({_dt.datetime.fromtimestamp(now).strftime('%Y-%m-%d %H:%M:%S')})"
    else:
        year = _year_for(last_wall_text, now) if last_wall_text else _dt.datetime.fromtimestamp(now).year
        ref_wall = _wall(last_wall_text, year)
        m.reference = (f"the log's last timestamp ({last_wall_text})" if ref_wall is not None
                       else "the log's last uptime stamp" if last_uptime is not None else None)
    if m.reference is None:
        m.reference = "no timestamps: every line counts"
    elif last_uptime is not None and ref_wall is None:
        m.reference = f"the log's last uptime stamp ({last_uptime:.6f} s)"
    window_s = window_h * 3600.0

    def inside(e: "XidEvent") -> bool:
        if e.timestamp:
            t = _wall(e.timestamp, year)
            if t is not None and ref_wall is not None:
                if t > ref_wall + 86400 and not e.timestamp[:4].isdigit() and len(e.timestamp.split()) == 3:
                    t = _wall(e.timestamp, year - 1)  # a syslog stamp from last December
                    if t is None:
                        return True
                return ref_wall - t <= window_s
        if e.uptime_s is not None and last_uptime is not None:
            return last_uptime - e.uptime_s <= window_s
        return True  # no timestamp (journalctl -o cat): inside

    groups: dict[tuple[str, bool, int], XidGroup] = {}
    for e in parsed.events:
        if not inside(e):
            m.outside_window += 1
            continue
        key_pci = e.pci if e.sxid else (pci_key(e.pci) or e.pci)
        gpu = None if e.sxid else pcimap.get(key_pci)
        subject = f"gpu{gpu}" if gpu is not None else key_pci
        xid, name, action, via45 = e.xid, e.name, e.action, 0
        if not e.sxid and e.xid == 45:
            cm = _CAUSED_BY.search(e.message)
            if cm and int(cm.group(1)) != 45:
                xid = int(cm.group(1))
                name, action = classify(xid)
                via45 = 1
        when = e.timestamp or (f"{e.uptime_s:.6f} s after boot" if e.uptime_s is not None else None)
        key = (subject, e.sxid, xid)
        g = groups.get(key)
        if g is None:
            g = groups[key] = XidGroup(subject=subject, pci=key_pci, gpu=gpu, sxid=e.sxid, xid=xid, name=name,
                                       action=action, severity=e.severity, count=0, first=when,
                                       message=_short(e.message))
        g.count += 1
        g.via_xid45 += via45
        g.last = when or g.last
        if g.first is None:
            g.first = when
        if name and not g.name:
            g.name = name
        if e.sxid and e.severity and g.severity != "fatal":
            g.severity = e.severity
        if not via45 and xid == 154:
            g.action = action  # the recovery action the GPU needs now: the latest line's
        elif _rank(action) > _rank(g.action):
            g.action = action
    m.groups = list(groups.values())
    return m


def _rank(action: str) -> int:
    from clusterkit.parsers.xid import _RANK

    return _RANK.get(action, 0)


def _short(text: str) -> str:
    t = " ".join(text.split())
    return t if len(t) <= _MAX_MESSAGE else t[: _MAX_MESSAGE - 1] + "…"


# ------------------------------------------------------------------------------------- judge
def _status(g: XidGroup) -> Status:
    if g.sxid:
        return Status.FAIL if g.action in ACTIONABLE else Status.WARN
    return Status.FAIL if g.action in ACTIONABLE else Status.WARN


def _describe(g: XidGroup) -> str:
    kind = "SXid" if g.sxid else "Xid"
    sev = f" {g.severity}" if g.sxid and g.severity else ""
    name = f" ({g.name})" if g.name else " (not in the catalog)"
    times = ""
    if g.first and g.last and g.first != g.last:
        times = f", {g.first} to {g.last}"
    elif g.first:
        times = f", at {g.first}"
    via = f", {g.via_xid45} of them Xid 45 cleanup caused by it" if g.via_xid45 else ""
    msg = f": {g.message}" if g.message else ""
    return f"{kind} {g.xid}{sev}{name} x{g.count}{times}{via} -> {g.action}{msg}"


def judge(m: XidMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts on the folded events of the window. Total: an unreadable log is ``xid.log``
    error and nothing else, never a ``fail``."""
    if m.error:
        return [CheckResult(check="xid.log", status=Status.ERROR, message=m.error)]
    win = f"{m.window_h:g} h"
    out = [CheckResult(check="xid.log", status=Status.PASS, value=m.source,
                       message=f"{m.lines} kernel log lines from {m.source}; window {win} back from {m.reference}"
                       + (f"; {m.outside_window} Xid/SXid lines before the window not counted"
                          if m.outside_window else ""))]
    worst_first = sorted(m.groups, key=lambda g: (-_rank(g.action), g.xid))
    by_subject: dict[str, list[XidGroup]] = {}
    for g in worst_first:
        if not g.sxid:
            by_subject.setdefault(g.subject, []).append(g)
    gpu_subjects = [on_gpu(i) for i in sorted(set(m.gpu_by_pci.values()))]
    for at in gpu_subjects:
        if at["subject"] not in by_subject:
            out.append(CheckResult(check="xid.events", **at, status=Status.PASS, value="none",
                                   message=f"no Xid in the last {win}"))
    if not gpu_subjects and not by_subject:
        note = f" (NVML: {m.nvml_error})" if m.nvml_error else ""
        out.append(CheckResult(check="xid.events", status=Status.PASS, value="none",
                               message=f"no Xid in the last {win}{note}"))
    for subj in sorted(by_subject, key=_subject_order):
        gs = by_subject[subj]
        status = Status.FAIL if any(_status(g) is Status.FAIL for g in gs) else Status.WARN
        where = "" if gs[0].gpu is not None else " (PCI address: NVML does not map it to a GPU)"
        # the subject is the GPU when NVML maps the address to one (then every group of it does)
        out.append(CheckResult(check="xid.events", subject=subj, gpu=gs[0].gpu, status=status, value=gs[0].action,
                               message="; ".join(_describe(g) for g in gs) + where))
    sx: dict[str, list[XidGroup]] = {}
    for g in worst_first:
        if g.sxid:
            sx.setdefault(g.subject, []).append(g)
    if not sx:
        out.append(CheckResult(check="xid.sxid", status=Status.PASS, value="none",
                               message=f"no NVSwitch SXid in the last {win}"))
    for subj in sorted(sx):
        gs = sx[subj]
        status = Status.FAIL if any(_status(g) is Status.FAIL for g in gs) else Status.WARN
        out.append(CheckResult(check="xid.sxid", subject=subj, status=status, value=gs[0].action,
                               message="; ".join(_describe(g) for g in gs)))
    return out


def _subject_order(subject: str) -> tuple[int, int, str]:
    if subject.startswith("gpu") and subject[3:].isdigit():
        return (0, int(subject[3:]), "")
    return (1, 0, subject)


def facts(m: XidMeasurement) -> dict[str, Any]:
    """No fleet facts: events are judged per node (the catalog version is in the measurement)."""
    return {}
