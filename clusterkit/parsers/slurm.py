"""Slurm node views: ``sinfo`` (text tables and ``--json``) and ``scontrol show node``.

Node states are split the same way everywhere: ``state`` is the base state, lowercased
(``idle``, ``down``, ``mixed``, ``allocated``, ...), ``state_flags`` the upper-case flags
(``DRAIN``, ``CLOUD``, ``NOT_RESPONDING``, ``POWERED_DOWN``, ...), ``state_raw`` what was
printed. sinfo's suffix characters become flags (``*`` NOT_RESPONDING, ``~`` POWERED_DOWN,
``#`` POWERING_UP, ``!`` POWER_DOWN, ``%`` POWERING_DOWN, ``$`` MAINTENANCE,
``@`` REBOOT_REQUESTED, ``^`` REBOOT_ISSUED, ``-`` PLANNED), and sinfo's compact names are
spelled out (``alloc`` -> ``allocated``, ``mix`` -> ``mixed``). sinfo prints a drained node as
``drain``/``drng`` without its base state: those become ``drained``/``draining`` with flag
``DRAIN``, so ``"DRAIN" in state_flags`` is the one test for "drained or draining" across all
formats.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Optional

from clusterkit.record import ConfigDict, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines

_SUFFIX_FLAGS = {
    "*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "!": "POWER_DOWN",
    "%": "POWERING_DOWN", "$": "MAINTENANCE", "@": "REBOOT_REQUESTED", "^": "REBOOT_ISSUED",
    "-": "PLANNED",
}
_SHORT_STATES = {
    "alloc": "allocated", "comp": "completing", "drng": "draining", "drain": "drained",
    "failg": "failing", "futr": "future", "mix": "mixed", "npc": "perfctrs", "plnd": "planned",
    "pow_dn": "power_down", "pow_up": "powering_up", "resv": "reserved", "unk": "unknown",
    "inval": "invalid", "maint": "maint", "blocked": "blocked",
}
_BASE_STATES = ("IDLE", "ALLOCATED", "MIXED", "DOWN", "FUTURE", "UNKNOWN", "ERROR", "COMPLETING")
_ELISIONS = ("...", "[...]", "…", "[…]")


def parse_state(raw: Any) -> tuple[Optional[str], list[str]]:
    """(base state lowercased, flags) of a state: 'IDLE+DRAIN', 'down~', ['IDLE', 'DRAIN']."""
    if isinstance(raw, list):
        words = [w.strip() for w in raw if isinstance(w, str) and w.strip()]
        if not words:
            return None, []
        base = next((w for w in words if w.upper() in _BASE_STATES), words[0])
        flags = [w.upper() for w in words if w is not base]
        state, more = parse_state(base)
        return state, _dedupe(more + flags)
    if not isinstance(raw, str) or not raw.strip():
        return None, []
    flags = []
    parts = raw.strip().split("+")
    head, rest = parts[0], parts[1:]
    if rest and rest[-1] == "":  # 'ALLOCATED+' = allocated and completing
        rest = rest[:-1]
        flags.append("COMPLETING")
    base, sfx = _strip_suffixes(head)
    flags = sfx + flags
    for p in rest:
        word, sfx = _strip_suffixes(p)
        if word:
            flags.append(word.upper())
        flags.extend(sfx)
    state = base.lower()
    state = _SHORT_STATES.get(state, state)
    if state in ("drained", "draining"):
        flags.insert(0, "DRAIN")
    return state or None, _dedupe(flags)


def _strip_suffixes(word: str) -> tuple[str, list[str]]:
    flags: list[str] = []
    while word and word[-1] in _SUFFIX_FLAGS:
        flags.insert(0, _SUFFIX_FLAGS[word[-1]])
        word = word[:-1]
    return word, flags


def _dedupe(items: list[str]) -> list[str]:
    seen: list[str] = []
    for i in items:
        if i not in seen:
            seen.append(i)
    return seen


def _null(v: Optional[str]) -> Optional[str]:
    if v is None:
        return None
    v = v.strip()
    return None if v in ("", "(null)", "none", "None", "N/A", "n/a") else v


def _int(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == v and abs(v) < 1e18:
        return int(v)
    if isinstance(v, dict):  # Slurm >= 23.02: {"set": true, "infinite": false, "number": N}
        if v.get("set") is False or v.get("infinite") is True:
            return None
        v = v.get("number")
        return _int(v) if not isinstance(v, dict) else None
    if isinstance(v, str) and v.strip().isdecimal() and len(v.strip()) < 19:
        return int(v.strip())
    return None


def _epoch(v: Any) -> Optional[str]:
    n = _int(v)
    if not n or n < 0:
        return None
    try:
        return _dt.datetime.fromtimestamp(n, tz=_dt.timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


# =========================================================================== sinfo
class SinfoRow(Record):
    """One line of a sinfo table, or one entry of ``sinfo --json``."""

    model_config = ConfigDict(extra="forbid")

    partition: Optional[str] = None  # without sinfo's default-partition '*'
    partition_default: bool = False
    partitions: list[str] = []  # JSON node layout: every partition of the node
    avail: Optional[str] = None
    timelimit: Optional[str] = None
    nodes: Optional[int] = None
    state: Optional[str] = None
    state_flags: list[str] = []
    state_raw: Optional[str] = None
    nodelist: Optional[str] = None  # the hostlist expression as printed
    node_names: list[str] = []  # JSON only: the names as listed
    reason: Optional[str] = None
    user: Optional[str] = None
    timestamp: Optional[str] = None
    cluster: Optional[str] = None
    fields: dict[str, Any] = {}  # every column / JSON scalar as printed


class SinfoOutput(ParsedOutput):
    format: str  # "summary" | "node" | "reasons" | "json" | "custom"
    slurm_version: Optional[str] = None
    rows: list[SinfoRow] = []
    errors: list[str] = []

    def summary(self) -> str:
        by: dict[str, int] = {}
        for r in self.rows:
            if r.state is not None:
                key = r.state + "".join(f"+{f}" for f in r.state_flags)
                by[key] = by.get(key, 0) + (r.nodes if r.nodes is not None else 1)
        head = f"sinfo ({self.format}): {len(self.rows)} row(s)"
        if by:
            head += "; nodes by state: " + ", ".join(f"{k}={v}" for k, v in by.items())
        lines = [head]
        for r in self.rows:
            if r.reason or "DRAIN" in r.state_flags or r.state in ("down", "fail", "failing"):
                text = f"  {r.nodelist or '?'}:"
                if r.state_raw or r.state:
                    text += f" {r.state_raw or r.state}"
                if r.reason:
                    text += f" {r.reason!r}" + (f" by {r.user}" if r.user else "") \
                        + (f" at {r.timestamp}" if r.timestamp else "")
                lines.append(text)
        return "\n".join(lines)


_COLUMN_ATTR = {
    "PARTITION": "partition", "AVAIL": "avail", "TIMELIMIT": "timelimit", "NODES": "nodes",
    "STATE": "state", "NODELIST": "nodelist", "HOSTNAMES": "nodelist", "REASON": "reason",
    "USER": "user", "TIMESTAMP": "timestamp", "NODES(A/I/O/T)": "nodes_aiot",
}
_ANCHORS = {"PARTITION", "NODELIST", "HOSTNAMES", "STATE", "REASON", "NODES"}
_FREE_TEXT = {"REASON", "COMMENT"}
_HEADER_TOKEN = re.compile(r"^[A-Z][A-Z0-9_:()/%]*$")
_DATE_LINE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \d{4}$")
_TOKEN = re.compile(r"\S+")


def _is_header(s: str) -> bool:
    toks = s.split()
    return (len(toks) >= 2 and all(_HEADER_TOKEN.match(t) for t in toks)
            and any(t in _ANCHORS for t in toks))


def _split_row(line: str, cols: list[tuple[str, int, int]]) -> Optional[list[Optional[str]]]:
    """Values of one table line under ``cols`` [(name, start, end)]; None if it cannot fit."""
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(line)]
    n = len(cols)
    if len(toks) == n:
        return [t[2] for t in toks]
    free = [i for i, c in enumerate(cols) if c[0] in _FREE_TEXT]
    if len(toks) > n and len(free) == 1:
        k = free[0]
        right = n - k - 1
        left_toks, right_toks = toks[:k], toks[len(toks) - right:] if right else []
        mid = toks[k:len(toks) - right]
        middle = line[mid[0][0]:mid[-1][1]]
        row: list[Optional[str]] = [t[2] for t in left_toks]
        row.append(middle)
        row.extend(t[2] for t in right_toks)
        return row
    if not toks:
        return None
    # Fall back on the header's column positions (missing or extra words).
    vals: list[list[tuple[int, int]]] = [[] for _ in cols]
    for ts, te, _ in toks:
        best, best_key = 0, None
        for i, (_, cs, ce) in enumerate(cols):
            overlap = min(te, ce) - max(ts, cs)
            dist = 0 if overlap > 0 else max(cs - te, ts - ce)
            key = (-overlap, dist) if overlap > 0 else (1, dist)
            if best_key is None or key < best_key:
                best, best_key = i, key
        vals[best].append((ts, te))
    return [line[v[0][0]:v[-1][1]] if v else None for v in vals]


def _fill_row(row: SinfoRow, name: str, value: Optional[str]) -> None:
    row.fields[name] = value
    attr = _COLUMN_ATTR.get(name)
    if attr is None or value is None:
        return
    if attr == "partition":
        row.partition_default = value.endswith("*")
        row.partition = value.rstrip("*") or None
        row.partitions = [row.partition] if row.partition else []
    elif attr == "nodes_aiot":
        total = value.rsplit("/", 1)[-1]
        row.nodes = int(total) if value.count("/") == 3 and total.isdecimal() and len(total) < 12 \
            else None
    elif attr == "nodes":
        row.nodes = int(value) if value.isdecimal() and len(value) < 12 else None
    elif attr == "state":
        row.state_raw = value
        row.state, row.state_flags = parse_state(value)
    elif attr in ("reason",):
        row.reason = _null(value)
    elif attr == "timestamp":
        row.timestamp = None if value in ("Unknown", "(null)") else value
    else:
        setattr(row, attr, value)


def _sinfo_text(lines: list[str]) -> SinfoOutput:
    cols: Optional[list[tuple[str, int, int]]] = None
    fmt = None
    rows: list[SinfoRow] = []
    cluster: Optional[str] = None
    first: Optional[tuple[int, str]] = None
    for no, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s in _ELISIONS:
            continue
        if first is None:
            first = (no, ln)
        if s.startswith("CLUSTER: "):
            cluster = s[len("CLUSTER: "):].strip() or None
            continue
        if _is_header(s):
            cols = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(ln)]
            names = [c[0] for c in cols]
            this = ("reasons" if "REASON" in names and names[0] == "REASON" else
                    "node" if names[0] in ("NODELIST", "HOSTNAMES") else
                    "summary" if names[:1] == ["PARTITION"] else "custom")
            if fmt is None:
                fmt = this
            continue
        if cols is None:
            if _DATE_LINE.match(s) and not rows:  # 'sinfo -l' prints the time first
                continue
            raise fail("sinfo", "no sinfo header line (PARTITION/NODELIST/STATE ...) before data",
                       no, ln)
        vals = _split_row(ln, cols)
        if vals is None:
            raise fail("sinfo", "line does not fit the header's columns", no, ln)
        row = SinfoRow(cluster=cluster)
        for (name, _, _), v in zip(cols, vals):
            _fill_row(row, name, v)
        rows.append(row)
    if fmt is None:
        raise fail("sinfo", "empty output" if first is None else "not sinfo output: no header line",
                   *(first or (None, None)))
    return SinfoOutput(format=fmt, rows=rows)


def _scalars(d: dict) -> dict[str, Any]:
    return {k: v for k, v in d.items()
            if isinstance(v, (str, int, float, bool)) or v is None}


def _sinfo_json(text: str, first_no: int, first_line: str) -> SinfoOutput:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        all_lines = text.split("\n")
        n = min(max(e.lineno, 1), len(all_lines))
        raise fail("sinfo", f"invalid JSON: {e.msg}", n, all_lines[n - 1]) from None
    except (ValueError, RecursionError):
        raise fail("sinfo", "invalid JSON", first_no, first_line) from None
    if not isinstance(data, dict) or not (isinstance(data.get("sinfo"), list)
                                          or isinstance(data.get("nodes"), list)):
        raise fail("sinfo", "JSON without a 'sinfo' or 'nodes' list: not sinfo --json",
                   first_no, first_line)
    out = SinfoOutput(format="json")
    meta = data.get("meta")
    if isinstance(meta, dict):
        slurm = meta.get("Slurm") or meta.get("slurm")
        if isinstance(slurm, dict):
            rel = slurm.get("release")
            ver = slurm.get("version")
            if isinstance(rel, str):
                out.slurm_version = rel
            elif isinstance(ver, dict):
                parts = [ver.get(k) for k in ("major", "minor", "micro")]
                if all(isinstance(p, (int, str)) for p in parts):
                    out.slurm_version = ".".join(str(p) for p in parts)
    errs = data.get("errors")
    if isinstance(errs, list):
        for err in errs:
            if isinstance(err, dict):
                msg = err.get("description") or err.get("error")
                out.errors.append(str(msg) if msg is not None else json.dumps(err))
            elif isinstance(err, str):
                out.errors.append(err)
    if isinstance(data.get("sinfo"), list):  # Slurm >= 23.02 (data_parser)
        for entry in data["sinfo"]:
            if isinstance(entry, dict):
                out.rows.append(_json_sinfo_entry(entry))
    else:  # Slurm 20.11 - 22.05 (openapi v0.0.3x): one entry per node
        for node in data["nodes"]:
            if isinstance(node, dict):
                out.rows.append(_json_node(node))
    return out


def _raw_state(raw: Any) -> Optional[str]:
    if isinstance(raw, list):
        return "+".join(w for w in raw if isinstance(w, str)) or None
    return raw if isinstance(raw, str) else None


def _as_dict(v: Any) -> dict[Any, Any]:
    """``v`` if it is a JSON object, else an empty one."""
    return v if isinstance(v, dict) else {}


def _json_node(node: dict) -> SinfoRow:
    name = node.get("name") if isinstance(node.get("name"), str) else None
    parts = [p for p in node.get("partitions") or [] if isinstance(p, str)] \
        if isinstance(node.get("partitions"), list) else []
    raw_state = node.get("state")
    state, flags = parse_state(raw_state)
    extra = node.get("state_flags")
    if isinstance(extra, list):
        flags = _dedupe(flags + [f.upper() for f in extra if isinstance(f, str)])
    reason = node.get("reason")
    user = node.get("reason_set_by_user")
    return SinfoRow(
        partition=parts[0] if parts else None, partitions=parts, nodes=1 if name else None,
        state=state, state_flags=flags,
        state_raw=_raw_state(raw_state),
        nodelist=name, node_names=[name] if name else [],
        reason=_null(reason) if isinstance(reason, str) else None,
        user=user if isinstance(user, str) and user else None,
        timestamp=_epoch(node.get("reason_changed_at")),
        fields=_scalars(node),
    )


def _json_sinfo_entry(entry: dict) -> SinfoRow:
    part = _as_dict(entry.get("partition"))
    pname = part.get("name") if isinstance(part.get("name"), str) else None
    nodes = _as_dict(entry.get("nodes"))
    names = [n for n in nodes.get("nodes") or [] if isinstance(n, str)] \
        if isinstance(nodes.get("nodes"), list) else []
    node = _as_dict(entry.get("node"))
    raw_state = node.get("state")
    state, flags = parse_state(raw_state)
    reason = _as_dict(entry.get("reason"))
    desc = reason.get("description")
    user = reason.get("user")
    nodelist = None
    if names:
        from clusterkit.errors import ClusterkitError
        from clusterkit.hostlist import fold

        try:
            nodelist = fold(names, sort=False)
        except ClusterkitError:
            nodelist = ",".join(names)
    return SinfoRow(
        partition=pname, partitions=[pname] if pname else [],
        nodes=_int(nodes.get("total")) if nodes.get("total") is not None else (len(names) or None),
        state=state, state_flags=flags,
        state_raw=_raw_state(raw_state),
        nodelist=nodelist, node_names=names,
        reason=_null(desc) if isinstance(desc, str) else None,
        user=user if isinstance(user, str) and user else None,
        timestamp=_epoch(reason.get("time")),
        fields=_scalars(entry),
    )


def parse_sinfo(text: str) -> SinfoOutput:
    """Parse ``sinfo`` text (default, ``-N``, ``-R``, ``-l``, ``-s``, ``-o`` with a header) or
    ``--json``."""
    lines = split_lines(text)
    for no, ln in enumerate(lines, 1):
        if ln.strip():
            if ln.lstrip().startswith("{"):
                return _sinfo_json("\n".join(lines), no, ln)
            break
    return _sinfo_text(lines)


# =========================================================================== scontrol
class ScontrolNode(Record):
    model_config = ConfigDict(extra="forbid")

    name: str
    state: Optional[str] = None
    state_flags: list[str] = []
    state_raw: Optional[str] = None
    reason: Optional[str] = None
    reason_user: Optional[str] = None
    reason_time: Optional[str] = None
    gres: Optional[str] = None
    partitions: list[str] = []
    features: list[str] = []
    cpu_tot: Optional[int] = None
    cpu_alloc: Optional[int] = None
    real_memory_mb: Optional[int] = None
    alloc_mem_mb: Optional[int] = None
    free_mem_mb: Optional[int] = None
    line_no: int
    fields: dict[str, str] = {}  # every Key=value as printed


class ScontrolNodeOutput(ParsedOutput):
    format: str  # "multi-line" | "one-line"
    nodes: list[ScontrolNode] = []
    errors: list[str] = []  # e.g. 'Node cu999 not found'

    def summary(self) -> str:
        lines = [f"scontrol show node ({self.format}): {len(self.nodes)} node(s)"]
        for n in self.nodes:
            st = (n.state or "?") + "".join(f"+{f}" for f in n.state_flags)
            text = f"  {n.name}: {st}"
            if n.reason:
                text += f" - {n.reason}" + (f" [{n.reason_user}@{n.reason_time}]"
                                            if n.reason_user or n.reason_time else "")
            lines.append(text)
        lines.extend(f"  error: {e}" for e in self.errors)
        return "\n".join(lines)


_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_]*)=")
_REST_OF_LINE = {"Reason", "Comment", "Extra", "OS"}
_NOT_FOUND = re.compile(r"^Node \S+ not found$")


def _key_values(line: str, one_line: bool) -> dict[str, str]:
    """Key=value pairs of one line; values run to the next ' Key=' token."""
    res: dict[str, str] = {}
    keys = list(_KEY.finditer(line))
    i = 0
    while i < len(keys):
        m = keys[i]
        key, vstart = m.group(1), m.end()
        if key in _REST_OF_LINE and not one_line:
            res[key] = line[vstart:].strip()
            break
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        nxt = i + 1
        if key == "Reason" and one_line:
            # 'Reason=Low RealMemory [root@2022-05-18T17:20:20] Comment=...': up to the ']'.
            close = line.find("]", vstart)
            if close >= 0 and "@" in line[vstart:close]:
                end = close + 1
                while nxt < len(keys) and keys[nxt].start() < end:
                    nxt += 1
        res[key] = line[vstart:end].strip()
        i = nxt
    return res


def _split_reason(value: Optional[str]) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """'Low RealMemory [root@2022-05-18T17:20:20]' -> ('Low RealMemory', 'root', '2022-...').

    A multi-line reason has the ``[user@time]`` at the end of its first line.
    """
    v = _null(value)
    if v is None:
        return None, None, None
    head, nl, rest = v.partition("\n")
    head = head.rstrip()
    if head.endswith("]"):
        open_ = head.rfind("[")
        inner = head[open_ + 1:-1] if open_ >= 0 else ""
        if open_ >= 0 and "@" in inner:
            user, _, when = inner.partition("@")
            text = head[:open_].strip() + (nl + rest if rest else "")
            return text or None, user or None, when or None
    return v, None, None


def _node_from(fields: dict[str, str], line_no: int) -> ScontrolNode:
    state, flags = parse_state(fields.get("State"))
    reason, ruser, rtime = _split_reason(fields.get("Reason"))
    parts = _null(fields.get("Partitions"))
    feats = _null(fields.get("AvailableFeatures") or fields.get("Features"))
    return ScontrolNode(
        name=fields.get("NodeName", ""), state=state, state_flags=flags,
        state_raw=fields.get("State"), reason=reason, reason_user=ruser, reason_time=rtime,
        gres=_null(fields.get("Gres")),
        partitions=[p for p in parts.split(",") if p] if parts else [],
        features=[f for f in feats.split(",") if f] if feats else [],
        cpu_tot=_int(fields.get("CPUTot")), cpu_alloc=_int(fields.get("CPUAlloc")),
        real_memory_mb=_int(fields.get("RealMemory")), alloc_mem_mb=_int(fields.get("AllocMem")),
        free_mem_mb=_int(fields.get("FreeMem")), line_no=line_no, fields=fields,
    )


def parse_scontrol_node(text: str) -> ScontrolNodeOutput:
    """Parse ``scontrol show node`` (multi-line blocks) or ``scontrol -o show node``."""
    lines = split_lines(text)
    # Per block: first line number, key lines, continuation lines of a multi-line Reason.
    blocks: list[tuple[int, list[str], list[str]]] = []
    errors: list[str] = []
    first: Optional[tuple[int, str]] = None
    in_reason = False
    for no, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s in _ELISIONS:
            continue
        if first is None:
            first = (no, ln)
        if s.startswith("NodeName="):
            blocks.append((no, [s], []))
            in_reason = False
            continue
        if _NOT_FOUND.match(s):
            errors.append(s)
            continue
        if not blocks:
            raise fail("scontrol-node", "expected 'NodeName=...' first: not scontrol show node "
                       "output", no, ln)
        # scontrol prints the further lines of a multi-line reason indented by 7 more spaces.
        indent = len(ln) - len(ln.lstrip())
        if in_reason and (indent >= 8 or not _KEY.search(s)):
            blocks[-1][2].append(s)
            continue
        if not _KEY.search(s):
            raise fail("scontrol-node", "line without any Key=value", no, ln)
        in_reason = s.startswith("Reason=")
        blocks[-1][1].append(s)
    if not blocks and not errors:
        raise fail("scontrol-node", "empty output" if first is None else "no 'NodeName=' block",
                   *(first or (None, None)))
    one_line = bool(blocks) and all(len(b) == 1 and not c for _, b, c in blocks)
    nodes = []
    for no, blines, cont in blocks:
        fields: dict[str, str] = {}
        for bl in blines:
            fields.update(_key_values(bl, one_line))
        if cont and "Reason" in fields:
            fields["Reason"] = "\n".join([fields["Reason"], *cont])
        nodes.append(_node_from(fields, no))
    return ScontrolNodeOutput(format="one-line" if one_line else "multi-line", nodes=nodes,
                              errors=errors)
