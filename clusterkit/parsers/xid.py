"""NVIDIA Xid (GPU) and SXid (NVSwitch) events in a kernel log.

Reads plain ``dmesg``, ``dmesg --decode`` (``kern  :warn  : `` prefix), ``--time-format iso``
(``2024-11-15T12:02:03,470068+00:00``), ``[  123.456789]`` uptime stamps, ``dmesg -T``,
``journalctl -k`` / syslog (``Jan 21 02:21:33 host kernel: ...``) lines. Every ``NVRM: Xid``
and ``SXid`` line is one event (the driver prints several lines for one fault, e.g. three per
SM exception for Xid 13; counts are of lines, as grep would count them). Other kernel lines
are ignored. The action for each Xid comes from ``clusterkit/data/xid_catalog.yaml``.

A text in which no line looks like a kernel log line at all raises ParseError; an empty text
or a kernel log without Xid lines parses to zero events.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Optional

from clusterkit.record import ConfigDict, Record

from clusterkit.errors import ConfigError
from clusterkit.parsers.base import ParsedOutput, fail, split_lines

TOOL = "dmesg-xid"

ACTIONS = ("monitor", "reset_gpu", "reboot", "isolate")
# Severity order for "worst action": unknown ranks above monitor (an unexplained Xid is
# worth a look) and below anything the catalog says needs a reset.
_RANK = {"monitor": 1, "unknown": 2, "reset_gpu": 3, "reboot": 4, "isolate": 5}


# --------------------------------------------------------------------------- catalog
class XidInfo(Record):
    """One catalog entry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    action: str
    note: Optional[str] = None
    action_by_message: dict[str, str] = {}


class XidCatalog(Record):
    model_config = ConfigDict(extra="forbid")

    version: str
    source: str
    xid: dict[int, XidInfo]
    sxid: dict[str, XidInfo]  # "fatal" / "non_fatal"


@functools.lru_cache(maxsize=1)
def load_catalog() -> XidCatalog:
    """The packaged Xid catalog (read once, on first use)."""
    from clusterkit.config import package_text, packaged

    try:
        raw = package_text("clusterkit", "data", "xid_catalog.yaml")
    except OSError as e:  # pragma: no cover - packaging fault
        raise ConfigError(f"xid catalog unreadable: {e}") from None
    if raw is None:  # pragma: no cover - packaging fault
        raise ConfigError("xid catalog missing from the package")
    data = packaged(raw)  # its parsed form, unless the file was edited: no YAML parser then
    if data is None:
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:  # pragma: no cover - packaging fault
            raise ConfigError(f"xid catalog unreadable: {e}") from None
    if not isinstance(data, dict):  # pragma: no cover - packaging fault
        raise ConfigError("xid catalog: not a mapping")
    try:
        cat = XidCatalog(
            version=str(data.get("version")),
            source=str(data.get("source")),
            xid={k: XidInfo(**v) for k, v in data.items() if isinstance(k, int)},
            sxid={k: XidInfo(**v) for k, v in (data.get("sxid") or {}).items()},
        )
    except (TypeError, ValueError) as e:  # pragma: no cover - packaging fault
        raise ConfigError(f"xid catalog: {e}") from None
    for info in [*cat.xid.values(), *cat.sxid.values()]:
        for act in [info.action, *info.action_by_message.values()]:
            if act not in ACTIONS:  # pragma: no cover - packaging fault
                raise ConfigError(f"xid catalog: unknown action {act!r}")
    return cat


def classify(xid: int, message: str = "") -> tuple[Optional[str], str]:
    """(short name, action) of an Xid; ("unknown" action when the catalog lacks it)."""
    info = load_catalog().xid.get(xid)
    if info is None:
        return None, "unknown"
    action = info.action
    if info.action_by_message:
        # Xid 154: "... changed from 0x0 (None) to 0x1 (GPU Reset Required)": the target.
        target = message.rsplit(" to ", 1)[-1]
        for key, act in info.action_by_message.items():
            if key in target:
                action = act
                break
    return info.name, action


def worst(actions: list[str]) -> Optional[str]:
    """The most severe of ``actions`` (None for none)."""
    return max(actions, key=lambda a: _RANK.get(a, 0)) if actions else None


# --------------------------------------------------------------------------- models
class XidEvent(Record):
    model_config = ConfigDict(extra="forbid")

    xid: int
    sxid: bool = False
    pci: str
    name: Optional[str] = None
    action: str
    severity: Optional[str] = None  # SXid: "fatal" / "non-fatal" (from the line or its event)
    message: str
    pid: Optional[int] = None
    process: Optional[str] = None
    timestamp: Optional[str] = None  # wall clock as printed (ISO, syslog or dmesg -T)
    uptime_s: Optional[float] = None  # "[  123.456789]" seconds since boot
    host: Optional[str] = None  # journalctl / syslog host name
    line_no: int


class XidDevice(Record):
    model_config = ConfigDict(extra="forbid")

    pci: str
    sxid: bool = False
    counts: dict[int, int]
    worst_action: str


class XidOutput(ParsedOutput):
    events: list[XidEvent] = []
    counts: dict[int, int] = {}  # Xid -> lines
    sxid_counts: dict[int, int] = {}  # SXid -> lines
    devices: list[XidDevice] = []
    worst_action: Optional[str] = None
    catalog_version: str

    def summary(self) -> str:
        if not self.events:
            return "dmesg-xid: no Xid/SXid events"
        lines = [f"dmesg-xid: {len(self.events)} event line(s) on {len(self.devices)} device(s); "
                 f"worst action: {self.worst_action}"]
        first: dict[tuple[bool, int], XidEvent] = {}
        for e in self.events:
            first.setdefault((e.sxid, e.xid), e)
        for (sx, x), e in sorted(first.items()):
            n = (self.sxid_counts if sx else self.counts)[x]
            lines.append(f"  {'SXid' if sx else 'Xid'} {x} ({e.name or 'not in catalog'}) x{n} -> "
                         f"{e.action}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- line grammar
_XID = re.compile(
    # MIG attribution follows the address: "(PCI:0000:1b:00 GPU-I:02 GPU-CI:00)"
    r"\b(S?Xid) \((?:PCI:)?([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)"
    r"(?: GPU-I:\d{1,3})?(?: GPU-CI:\d{1,3})?\): "
    r"(\d{1,6})\b,?\s*(.*)$"
)
_FACILITY = re.compile(
    r"^\s*(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|local[0-7])"
    r"\s*:\s*(?:emerg|alert|crit|err|warn|notice|info|debug)\s*:\s?"
)
_RAW_LEVEL = re.compile(r"^<\d{1,3}>")
_ISO = re.compile(r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+")
_SYSLOG = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)\s+")
_HOST_KERNEL = re.compile(r"^(\S+) kernel: ")
_UPTIME = re.compile(r"^\[\s*(\d{1,10}\.\d{1,9})\]\s*")
_CTIME = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]\s*")
_ANY_BRACKET = re.compile(r"^\[[^\]]{1,40}\]")
_JOURNAL_META = ("-- Logs begin at", "-- Journal begins at", "-- No entries --", "-- Boot ")
_SEVERITY = re.compile(r"^(Non-fatal|Fatal|Nonfatal|Non-Fatal)\b,?\s*", re.IGNORECASE)


def _looks_like_kernel_line(s: str) -> bool:
    if (_FACILITY.match(s) or _RAW_LEVEL.match(s) or _ISO.match(s) or _SYSLOG.match(s)
            or _ANY_BRACKET.match(s)):
        return True
    return "kernel:" in s or "NVRM" in s or "nvidia-nvswitch" in s or s.startswith(_JOURNAL_META)


def _prefix_fields(prefix: str) -> dict[str, Any]:
    """timestamp / uptime_s / host from what precedes the driver tag on the line."""
    res: dict[str, Any] = {}
    p = prefix.lstrip()
    m = _FACILITY.match(p)
    if m:
        p = p[m.end():]
    m = _RAW_LEVEL.match(p)
    if m:
        p = p[m.end():]
    m = _ISO.match(p) or _SYSLOG.match(p)
    if m:
        res["timestamp"] = m.group(1)
        p = p[m.end():]
        mh = _HOST_KERNEL.match(p)
        if mh:
            res["host"] = mh.group(1)
            p = p[mh.end():]
    elif p.startswith("kernel: "):
        p = p[len("kernel: "):]
    m = _CTIME.match(p)
    if m:
        res["timestamp"] = m.group(1)
        p = p[m.end():]
    m = _UPTIME.match(p)
    if m:
        res["uptime_s"] = float(m.group(1))
    return res


def _split_pid_name(rest: str) -> tuple[Optional[int], Optional[str], str]:
    """'pid=1248209, name=python3.10, Ch 00000008' -> (1248209, 'python3.10', 'Ch 00000008')."""
    pid: Optional[int] = None
    name: Optional[str] = None
    if rest.startswith("pid="):
        i = rest.find(", ")
        tok = rest[4:] if i < 0 else rest[4:i]
        rest = "" if i < 0 else rest[i + 2:]
        tok = tok.strip("'\"")
        if tok.isdecimal() and len(tok) < 12:
            pid = int(tok)
        if rest.startswith("name="):
            j = rest.find(", ")
            nm = rest[5:] if j < 0 else rest[5:j]
            rest = "" if j < 0 else rest[j + 2:]
            if nm and nm != "<unknown>":
                name = nm
    return pid, name, rest.strip()


# --------------------------------------------------------------------------- parse
def parse_xid(text: str) -> XidOutput:
    """Xid/SXid events of a kernel log; ParseError when the text is not a kernel log."""
    cat = load_catalog()
    lines = split_lines(text)
    events: list[XidEvent] = []
    saw_log_line = False
    first_nonempty: Optional[tuple[int, str]] = None
    sxid_severity: dict[tuple[str, int], str] = {}
    for no, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s:
            continue
        if first_nonempty is None:
            first_nonempty = (no, ln)
        if not saw_log_line and _looks_like_kernel_line(s):
            saw_log_line = True
        if "Xid (" not in ln:
            continue
        m = _XID.search(ln)
        if not m:
            continue
        kind, pci, code, rest = m.group(1), m.group(2).lower(), int(m.group(3)), m.group(4)
        fields = _prefix_fields(ln[: m.start()])
        if kind == "SXid":
            sev = None
            ms = _SEVERITY.match(rest)
            if ms:
                sev = "fatal" if ms.group(1).lower() == "fatal" else "non-fatal"
                sxid_severity[(pci, code)] = sev
            else:
                sev = sxid_severity.get((pci, code))
            info = cat.sxid.get("fatal" if sev == "fatal" else "non_fatal") if sev else None
            events.append(XidEvent(
                xid=code, sxid=True, pci=pci, severity=sev, message=rest.strip(),
                name=info.name if info else None, action=info.action if info else "unknown",
                line_no=no, **fields))
        else:
            pid, proc, msg = _split_pid_name(rest)
            name, action = classify(code, msg)
            events.append(XidEvent(xid=code, pci=pci, name=name, action=action, message=msg,
                                   pid=pid, process=proc, line_no=no, **fields))
        saw_log_line = True
    if first_nonempty is not None and not saw_log_line:
        raise fail(TOOL, "no kernel log line (no timestamp, facility, 'kernel:' or NVRM tag): "
                   "not a kernel log", *first_nonempty)

    counts: dict[int, int] = {}
    sxid_counts: dict[int, int] = {}
    per_dev: dict[tuple[str, bool], dict[int, int]] = {}
    dev_actions: dict[tuple[str, bool], list[str]] = {}
    for e in events:
        target = sxid_counts if e.sxid else counts
        target[e.xid] = target.get(e.xid, 0) + 1
        d = per_dev.setdefault((e.pci, e.sxid), {})
        d[e.xid] = d.get(e.xid, 0) + 1
        acts = dev_actions.setdefault((e.pci, e.sxid), [])
        if e.action not in acts:
            acts.append(e.action)
    devices = []
    for (pci, sx), c in per_dev.items():
        dev_worst = worst(dev_actions[(pci, sx)])
        assert dev_worst is not None  # every device has >= 1 event, hence >= 1 action
        devices.append(XidDevice(pci=pci, sxid=sx, counts=c, worst_action=dev_worst))
    return XidOutput(events=events, counts=counts, sxid_counts=sxid_counts, devices=devices,
                     worst_action=worst([d.worst_action for d in devices]),
                     catalog_version=cat.version)
