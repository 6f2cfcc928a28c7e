"""Parser for ``perfquery`` (infiniband-diags): port counters of one or more ports.

Reads any mix of sections::

    # Port counters: Lid 12 port 1 (CapMask: 0x1600)                 perfquery
    # Port extended counters: Lid 2052 port 1 (CapMask: 0x5300 ...)  perfquery -x
    # PortRcvErrorDetails counters: Lid 1719 port 1                  perfquery -E
    # PortXmitDiscardDetails counters: ...                           perfquery -D

each followed by ``Name:.........value`` lines (decimal or ``0x`` hex). Port 255 is perfquery's
"all ports" (``-a``) aggregate. ``counters`` keeps the names as printed; old releases' short
names (``SymbolErrors``, ``XmtDiscards``, ``XmtData`` ...) are mapped to today's names for
``errors``, ``xmit_wait`` and the byte counts.

Per section, ``errors`` holds the non-zero *error* counters (symbol errors, link recoveries,
link downs, receive/transmit errors and discards, ...). ``PortXmitWait`` is congestion (time
the port had data to send but no credits), not an error, and is reported separately as
``xmit_wait``. ``PortXmitData``/``PortRcvData`` count 4-byte words (IBA: "octets divided by
4"), so ``xmit_bytes``/``rcv_bytes`` are those times 4.
"""

from __future__ import annotations

import re
from typing import Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines

TOOL = "perfquery"

#: Counters whose non-zero value is evidence of a link or port problem.
ERROR_COUNTERS: tuple[str, ...] = (
    "SymbolErrorCounter",
    "LinkErrorRecoveryCounter",
    "LinkDownedCounter",
    "PortRcvErrors",
    "PortRcvRemotePhysicalErrors",
    "PortRcvSwitchRelayErrors",
    "PortXmitDiscards",
    "PortXmitConstraintErrors",
    "PortRcvConstraintErrors",
    "LocalLinkIntegrityErrors",
    "ExcessiveBufferOverrunErrors",
    "VL15Dropped",
    # perfquery -E (PortRcvErrorDetails): the breakdown of PortRcvErrors
    "PortLocalPhysicalErrors",
    "PortMalformedPktErrors",
    "PortBufferOverrunErrors",
    "PortDLIDMappingErrors",
    "PortVLMappingErrors",
    "PortLoopingErrors",
    # perfquery -D (PortXmitDiscardDetails): the breakdown of PortXmitDiscards
    "PortInactiveDiscards",
    "PortNeighborMTUDiscards",
    "PortSwLifetimeLimitDiscards",
    "PortSwHOQLifetimeLimitDiscards",
)
_ERROR_SET = frozenset(ERROR_COUNTERS)
#: Short names printed by old perfquery releases (OFED 1.x) -> the names used since.
OLD_NAMES: dict[str, str] = {
    "SymbolErrors": "SymbolErrorCounter",
    "LinkRecovers": "LinkErrorRecoveryCounter",
    "LinkDowned": "LinkDownedCounter",
    "RcvErrors": "PortRcvErrors",
    "RcvRemotePhysErrors": "PortRcvRemotePhysicalErrors",
    "RcvSwRelayErrors": "PortRcvSwitchRelayErrors",
    "XmtDiscards": "PortXmitDiscards",
    "XmtConstraintErrors": "PortXmitConstraintErrors",
    "RcvConstraintErrors": "PortRcvConstraintErrors",
    "LinkIntegrityErrors": "LocalLinkIntegrityErrors",
    "ExcBufOverrunErrors": "ExcessiveBufferOverrunErrors",
    "XmtData": "PortXmitData",
    "RcvData": "PortRcvData",
    "XmtPkts": "PortXmitPkts",
    "RcvPkts": "PortRcvPkts",
    "XmtWait": "PortXmitWait",
}
#: Congestion, not an error: ticks the port had data to send and no credit.
CONGESTION_COUNTER = "PortXmitWait"
ALL_PORTS = 255


class CounterSection(Record):
    """One ``# ... counters: Lid L port P`` block."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="'port', 'port_extended', 'port_rcv_error_details', ...")
    title: str = Field(description="the section title as printed, e.g. 'Port extended'")
    lid: Optional[int] = None
    port: Optional[int] = None
    all_ports: bool = False
    cap_mask: Optional[str] = None
    counters: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, int] = Field(default_factory=dict, description="non-zero error counters")
    xmit_wait: Optional[int] = Field(default=None, description="PortXmitWait (congestion ticks)")
    xmit_bytes: Optional[int] = None
    rcv_bytes: Optional[int] = None


class PerfQuery(ParsedOutput):
    """All counter sections of one perfquery output."""

    sections: list[CounterSection] = Field(default_factory=list)
    errors: dict[str, int] = Field(
        default_factory=dict,
        description="non-zero error counters over all ports (max per port over sections, summed "
        "over ports)",
    )
    xmit_wait: Optional[int] = Field(default=None, description="PortXmitWait summed over ports")
    error: Optional[str] = Field(default=None, description="perfquery's own failure message")
    warnings: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        lines = [f"perfquery: {len(self.sections)} counter sections"]
        if self.error:
            lines.append(f"error: {self.error}")
        for s in self.sections:
            where = f"lid {s.lid if s.lid is not None else '?'} port "
            where += "ALL" if s.all_ports else str(s.port if s.port is not None else "?")
            errs = ", ".join(f"{k}={v}" for k, v in s.errors.items()) or "no errors"
            wait = f"; PortXmitWait={s.xmit_wait}" if s.xmit_wait is not None else ""
            lines.append(f"{s.title} ({where}): {len(s.counters)} counters, {errs}{wait}")
        return "\n".join(lines)


_LID = re.compile(r"\bLid\s+(\d+)", re.I)
_PORT = re.compile(r"\bport\s+(\d+)", re.I)
_CAPMASK = re.compile(r"CapMask\s*:\s*(0x[0-9a-fA-F]+)")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _section_title(s: str) -> Optional[tuple[str, str]]:
    """'# Port extended counters: Lid 2 port 1 (...)' -> ('Port extended', 'Lid 2 port 1 (...)')."""
    if not s.startswith("#"):
        return None
    body = s[1:]
    idx = body.lower().find("counters")
    if idx <= 0 or not body[idx - 1].isspace():
        return None
    after = body[idx + len("counters"):].lstrip()
    if not after.startswith(":"):
        return None
    title = " ".join(body[:idx].split())
    return (title, after[1:].strip()) if title else None


def _counter(s: str) -> Optional[tuple[str, str]]:
    """'PortXmitData:........123' -> ('PortXmitData', '123'); None if not that shape."""
    name, sep, rest = s.partition(":")
    name = name.strip()
    if not sep or not _NAME.match(name):
        return None
    value = rest.lstrip(". \t")
    if not value or len(value.split()) != 1:
        return None
    return name, value
_ELISION = re.compile(r"^(\[?\s*(\.{3,}|…)\s*\]?|\[\s*(snip|truncated|elided|cut)\s*\])$", re.I)


def _slug(title: str) -> str:
    """'Port extended' -> 'port_extended'; 'PortRcvErrorDetails' -> 'port_rcv_error_details'."""
    out: list[str] = []
    prev = ""
    for ch in title:
        if ch.isalnum():
            if ch.isupper() and prev and (prev.islower() or prev.isdigit()):
                out.append("_")
            out.append(ch.lower())
        elif out and out[-1] != "_":
            out.append("_")
        prev = ch
    return "".join(out).strip("_") or "counters"


def _value(s: str) -> int:
    if s.lower().startswith("0x"):
        return int(s[2:], 16)
    if not s.isdigit():
        raise ValueError(s)
    return int(s)


def parse_perfquery(text: str) -> PerfQuery:
    """Parse ``perfquery`` / ``perfquery -x`` / ``perfquery -E`` (and mixes of them)."""
    if not isinstance(text, str):
        raise fail(TOOL, "input is not text")
    lines = split_lines(text)
    res = PerfQuery()
    cur: Optional[CounterSection] = None
    first: Optional[int] = None
    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s or _ELISION.match(s):
            continue
        if first is None:
            first = i
        sec = _section_title(s)
        if sec:
            title, rest = sec
            cur = CounterSection(kind=_slug(title), title=title)
            lm, pm, cm = _LID.search(rest), _PORT.search(rest), _CAPMASK.search(rest)
            cur.lid = int(lm.group(1)) if lm else None
            cur.port = int(pm.group(1)) if pm else None
            cur.all_ports = cur.port == ALL_PORTS or "all" in rest.lower().split()
            cur.cap_mask = cm.group(1) if cm else None
            res.sections.append(cur)
            continue
        low = s.lower()
        if "iberror" in low or low.startswith("ibpanic"):
            res.error = res.error or s
            continue
        if low.startswith("ibwarn") or "warning" in low:
            res.warnings.append(s)
            continue
        if cur is None:
            raise fail(TOOL, "expected a '# ... counters: Lid N port M' line", i + 1, raw)
        kv = _counter(s)
        if kv is None:
            raise fail(TOOL, "expected 'CounterName:....value'", i + 1, raw)
        try:
            cur.counters[kv[0]] = _value(kv[1])
        except ValueError:
            raise fail(TOOL, "counter value is not a number", i + 1, raw) from None
    ibwarns = [w for w in res.warnings if w.lower().startswith("ibwarn")]
    if not res.sections and res.error is None and ibwarns:
        # only infiniband-diags' own 'ibwarn: ...' lines: the query failed
        res.error = ibwarns[-1]
    if not res.sections and res.error is None:
        if first is None:
            raise fail(TOOL, "empty input: no perfquery output")
        raise fail(TOOL, "not perfquery output", first + 1, lines[first])
    _derive(res)
    return res


def _derive(res: PerfQuery) -> None:
    per_port_errors: dict[tuple, dict[str, int]] = {}
    per_port_wait: dict[tuple, int] = {}
    for s in res.sections:
        canon = {OLD_NAMES.get(k, k): v for k, v in s.counters.items()}
        s.errors = {k: v for k, v in canon.items() if k in _ERROR_SET and v}
        s.xmit_wait = canon.get(CONGESTION_COUNTER)
        if "PortXmitData" in canon:
            s.xmit_bytes = canon["PortXmitData"] * 4
        if "PortRcvData" in canon:
            s.rcv_bytes = canon["PortRcvData"] * 4
        key = (s.lid, s.port)
        acc = per_port_errors.setdefault(key, {})
        for k, v in s.errors.items():
            acc[k] = max(acc.get(k, 0), v)
        if s.xmit_wait is not None:
            per_port_wait[key] = max(per_port_wait.get(key, 0), s.xmit_wait)
    total: dict[str, int] = {}
    for acc in per_port_errors.values():
        for k, v in acc.items():
            total[k] = total.get(k, 0) + v
    res.errors = {k: total[k] for k in ERROR_COUNTERS if k in total}
    res.xmit_wait = sum(per_port_wait.values()) if per_port_wait else None
