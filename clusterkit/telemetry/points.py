"""The metrics schema: which points a run's report becomes (pure; docs/metrics.md).

Every point of one run carries the same timestamp, the run's start (``FleetReport.created``) at
millisecond precision, so a point written twice (a replay after a lost answer) overwrites itself:
same measurement, same tags, same timestamp. No two *different* points of one run share a
measurement and tag set (:func:`_disambiguate`).

Measurements:

``<domain>`` (``gpu``, ``nvlink``, ``ib``, ``storage``, ``stress``, ``xid``, ``topo``, ``system``,
``nccl``; the part of the check id before the first dot)
    one point per check result whose value is a number (not a bool): fields ``value``,
    ``threshold`` (when a number), ``status_code``.
``clusterkit_check``
    one point per check result: ``status_code``, ``status``, ``message``, ``value``/``threshold``
    (numbers), ``value_text`` (a value that is not a number: ``ACTIVE``, ``true``), ``unit``,
    ``run_id``, ``job_id``.
``clusterkit_node``
    one point per node: its status, check counts per status, duration, error kind and cause,
    and version facts (driver, CUDA, VBIOS, kernel, HCA firmware, OFED, GPU model and count).
``clusterkit_fleet``
    one point per fleet finding (drift, outliers, baselines).
``clusterkit_run``
    one point per run: node and check counts, exit code, duration, source, run_id, job_id.

Tags (low cardinality, named as Telegraf's and DCGM exporter's users join on): ``host``,
``partition``, ``profile``, ``check``, and the subject's structured fields ``gpu``,
``peer_gpu``, ``device``, ``port``, ``link``, ``path`` — straight from
:class:`~clusterkit.models.CheckResult`'s fields, never parsed out of the subject text. Run ids
and job ids are fields, never tags. Floats are written for every ``value``/``threshold``
(``8`` GPUs too): one field never changes type, which InfluxDB would refuse.

Status codes (:data:`STATUS_CODES`): pass 0, warn 1, fail 2, error 3, skip 4; a node that could
not be reached is 5 (:data:`NODE_STATUS_CODES`). Higher is worse up to 3.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import time as _time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.telemetry.lineproto import FieldValue, clean, encode_line

if TYPE_CHECKING:
    from clusterkit.models import CheckResult, FleetReport, NodeReport

#: check status -> ``status_code``
STATUS_CODES: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2, "error": 3, "skip": 4}
#: node status -> ``status_code`` of ``clusterkit_node``
NODE_STATUS_CODES: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2, "error": 3, "unreachable": 5}
#: the domains of clusterkit's checks (each one a measurement); a newer node's other domain is
#: written too when its name is a plain identifier
DOMAINS = ("gpu", "nvlink", "ib", "storage", "stress", "xid", "topo", "system", "nccl")
CHECK_MEASUREMENT = "clusterkit_check"
NODE_MEASUREMENT = "clusterkit_node"
FLEET_MEASUREMENT = "clusterkit_fleet"
RUN_MEASUREMENT = "clusterkit_run"
RESERVED_MEASUREMENTS = (CHECK_MEASUREMENT, NODE_MEASUREMENT, FLEET_MEASUREMENT, RUN_MEASUREMENT)
#: CheckResult fields that become tags, in this order
SUBJECT_TAGS = ("gpu", "peer_gpu", "device", "port", "link", "path")
#: facts of a node written as fields of clusterkit_node (strings)
FACT_FIELDS = ("driver_version", "cuda_version", "vbios_version", "kernel", "hca_fw", "ofed_version", "gpu_model")
#: string fields are cut to this many characters
MAX_TEXT = 1024

_DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ms: int

    def line(self) -> Optional[str]:
        """The point as one line of line protocol (None: no representable field)."""
        return encode_line(self.measurement, self.tags, self.fields, self.time_ms)

    def series(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What identifies the point's series: measurement and sorted tags."""
        return self.measurement, tuple(sorted(self.tags.items()))


def number(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite number (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def text(value: Any) -> str:
    """A string field's content: one line, at most :data:`MAX_TEXT` characters."""
    s = clean(str(value)).strip()
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "…"


def domain_of(check: str) -> Optional[str]:
    """The measurement of a check's numeric points: the part of its id before the first dot;
    None when that is not a plain lower-case name (or one of clusterkit's own measurements)."""
    head = check.split(".", 1)[0]
    if not _DOMAIN_RE.match(head) or head in RESERVED_MEASUREMENTS:
        return None
    return head


def time_ms_of(created: Optional[str]) -> int:
    """``FleetReport.created`` (ISO 8601) in milliseconds since the epoch (UTC when it names no
    zone); the current time when it is missing or unreadable."""
    if created:
        try:
            t = _dt.datetime.fromisoformat(created.strip().replace("Z", "+00:00"))
        except ValueError:
            t = None
        if t is not None:
            if t.tzinfo is None:
                t = t.replace(tzinfo=_dt.timezone.utc)
            return int(round(t.timestamp() * 1000))
    return now_ms()


def now_ms() -> int:
    return _time.time_ns() // 1_000_000


def _base(host: Optional[str], partition: Optional[str], profile: Optional[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for k, v in (("host", host), ("partition", partition), ("profile", profile)):
        if v:
            tags[k] = str(v)
    return tags


def subject_tags(c: "CheckResult") -> dict[str, str]:
    """The structured subject fields of a check result that are set, as tags."""
    tags: dict[str, str] = {}
    for name in SUBJECT_TAGS:
        v = getattr(c, name, None)
        if v is not None and v != "":
            tags[name] = str(v)
    return tags


def _disambiguate(tag_sets: Sequence[dict[str, str]], subjects: Sequence[Optional[str]]) -> None:
    """Make every tag set unique, in place. Results that share a tag set (two results of one
    check about the same structured subject: a report from a node older than structured
    subjects, or a check that reports one subject twice) get the subject text as an opaque
    ``subject`` tag (copied, not parsed); any still alike get ``n`` = 1, 2, … in report order."""
    def groups() -> list[list[int]]:
        seen: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(list)
        for i, t in enumerate(tag_sets):
            seen[tuple(sorted(t.items()))].append(i)
        return [g for g in seen.values() if len(g) > 1]

    clashes = groups()
    if not clashes:
        return
    for g in clashes:
        for i in g:
            s = subjects[i]
            if s:
                tag_sets[i]["subject"] = text(s)
    for g in groups():
        for k, i in enumerate(g, 1):
            tag_sets[i]["n"] = str(k)


def _check_points(c: "CheckResult", tags: dict[str, str], time_ms: int, *, run_id: Optional[str],
                  job_id: Optional[str], string_fields: bool) -> list[Point]:
    status = c.status.value if hasattr(c.status, "value") else str(c.status)
    code = STATUS_CODES.get(status, STATUS_CODES["error"])
    value, threshold = number(c.value), number(c.threshold)
    out: list[Point] = []
    domain = domain_of(c.check)
    if value is not None and domain is not None:
        dfields: dict[str, FieldValue] = {"value": value, "status_code": code}
        if threshold is not None:
            dfields["threshold"] = threshold
        out.append(Point(domain, dict(tags), dfields, time_ms))
    fields: dict[str, FieldValue] = {"status_code": code}
    if value is not None:
        fields["value"] = value
    if threshold is not None:
        fields["threshold"] = threshold
    if string_fields:
        fields["status"] = status
        if c.message:
            fields["message"] = text(c.message)
        if value is None and c.value is not None:
            fields["value_text"] = text(str(c.value).lower() if isinstance(c.value, bool) else c.value)
        if c.unit:
            fields["unit"] = text(c.unit)
        if run_id:
            fields["run_id"] = run_id
        if job_id:
            fields["job_id"] = str(job_id)
    out.append(Point(CHECK_MEASUREMENT, dict(tags), fields, time_ms))
    return out


def _node_point(node: "NodeReport", tags: dict[str, str], time_ms: int, *, run_id: Optional[str],
                job_id: Optional[str], string_fields: bool) -> Point:
    status = node.status.value if hasattr(node.status, "value") else str(node.status)
    fields: dict[str, FieldValue] = {"status_code": NODE_STATUS_CODES.get(status, NODE_STATUS_CODES["error"]),
                                     "checks": len(node.checks)}
    counts = {s: 0 for s in STATUS_CODES}
    for c in node.checks:
        s = c.status.value if hasattr(c.status, "value") else str(c.status)
        counts[s] = counts.get(s, 0) + 1
    for s in STATUS_CODES:
        fields[f"checks_{s}"] = counts[s]
    if node.duration_s is not None and number(node.duration_s) is not None:
        fields["duration_s"] = float(node.duration_s)
    gpu_count = node.facts.get("gpu_count")
    if isinstance(gpu_count, int) and not isinstance(gpu_count, bool):
        fields["gpu_count"] = gpu_count
    if string_fields:
        fields["status"] = status
        if node.error_kind:
            fields["error_kind"] = text(node.error_kind)
        if node.cause:
            fields["cause"] = text(node.cause)
        for fact in FACT_FIELDS:
            v = node.facts.get(fact)
            if v is not None and v != "":
                fields[fact] = text(v)
        if run_id:
            fields["run_id"] = run_id
        if job_id:
            fields["job_id"] = str(job_id)
    return Point(NODE_MEASUREMENT, tags, fields, time_ms)


def _node_profile(node: "NodeReport", default: Optional[str]) -> Optional[str]:
    p = node.facts.get("profile")
    return str(p) if isinstance(p, str) and p else default


def _nodes_points(nodes: Iterable["NodeReport"], *, partition: Optional[str], default_profile: Optional[str],
                  time_ms: int, run_id: Optional[str], job_id: Optional[str], string_fields: bool) -> list[Point]:
    pairs: list[tuple["CheckResult", dict[str, str]]] = []
    node_tags: list[tuple["NodeReport", dict[str, str]]] = []
    for node in nodes:
        base = _base(node.node, partition, _node_profile(node, default_profile))
        node_tags.append((node, base))
        for c in node.checks:
            pairs.append((c, {**base, "check": c.check, **subject_tags(c)}))
    _disambiguate([t for _, t in pairs], [c.subject for c, _ in pairs])
    _disambiguate([t for _, t in node_tags], [None] * len(node_tags))
    out: list[Point] = []
    for c, tags in pairs:
        out.extend(_check_points(c, tags, time_ms, run_id=run_id, job_id=job_id, string_fields=string_fields))
    for node, tags in node_tags:
        out.append(_node_point(node, tags, time_ms, run_id=run_id, job_id=job_id, string_fields=string_fields))
    return out


def report_points(report: "FleetReport", *, string_fields: bool = True) -> list[Point]:
    """Every point of a run (module docstring). ``string_fields=False`` leaves out the string
    fields (status words, messages, units, ids, versions): for stores that keep numbers only
    (VictoriaMetrics stores a string field as a series of zeros)."""
    time_ms = time_ms_of(report.created)
    run_id: Optional[str] = getattr(report, "run_id", None) or None
    job_id: Optional[str] = getattr(report, "job_id", None) or None
    partition: Optional[str] = getattr(report, "partition", None) or None
    out = _nodes_points(report.nodes, partition=partition, default_profile=report.profile, time_ms=time_ms,
                        run_id=run_id, job_id=job_id, string_fields=string_fields)
    out.extend(_fleet_points(report, partition=partition, time_ms=time_ms, run_id=run_id, job_id=job_id,
                             string_fields=string_fields))
    out.append(_run_point(report, partition=partition, time_ms=time_ms, run_id=run_id, job_id=job_id,
                          string_fields=string_fields))
    return out


def _fleet_points(report: "FleetReport", *, partition: Optional[str], time_ms: int, run_id: Optional[str],
                  job_id: Optional[str], string_fields: bool) -> list[Point]:
    if not report.fleet:
        return []
    tag_sets = [{**_base(None, partition, report.profile), "check": f.check} for f in report.fleet]
    _disambiguate(tag_sets, [None] * len(tag_sets))
    out: list[Point] = []
    for f, tags in zip(report.fleet, tag_sets):
        status = f.status.value if hasattr(f.status, "value") else str(f.status)
        fields: dict[str, FieldValue] = {"status_code": STATUS_CODES.get(status, STATUS_CODES["error"]),
                                         "nodes": len(f.nodes)}
        value, expected = number(f.value), number(f.expected)
        if value is not None:
            fields["value"] = value
        if expected is not None:
            fields["expected"] = expected
        if string_fields:
            fields["status"] = status
            if f.message:
                fields["message"] = text(f.message)
            if f.nodes:
                from clusterkit.hostlist import fold_display

                fields["node_list"] = text(fold_display(f.nodes))
            if value is None and f.value is not None:
                fields["value_text"] = text(f.value)
            if expected is None and f.expected is not None:
                fields["expected_text"] = text(f.expected)
            if run_id:
                fields["run_id"] = run_id
            if job_id:
                fields["job_id"] = str(job_id)
        out.append(Point(FLEET_MEASUREMENT, tags, fields, time_ms))
    return out


def _run_point(report: "FleetReport", *, partition: Optional[str], time_ms: int, run_id: Optional[str],
               job_id: Optional[str], string_fields: bool) -> Point:
    s = report.summary
    fields: dict[str, FieldValue] = {
        "nodes": s.nodes, "passed": s.passed, "warned": s.warned, "failed": s.failed, "errored": s.errored,
        "unreachable": s.unreachable, "skipped": len(report.skipped), "fleet_findings": len(report.fleet),
        "exit_code": s.exit_code, "interrupted": bool(s.interrupted), "internal_errors": s.internal_errors,
    }
    for st in STATUS_CODES:
        fields[f"checks_{st}"] = int(s.checks.get(st, 0))
    if report.duration_s is not None and number(report.duration_s) is not None:
        fields["duration_s"] = float(report.duration_s)
    if string_fields:
        if run_id:
            fields["run_id"] = run_id
        if job_id:
            fields["job_id"] = str(job_id)
        if report.source:
            fields["source"] = text(report.source)
        if report.clusterkit_version:
            fields["clusterkit_version"] = text(report.clusterkit_version)
    return Point(RUN_MEASUREMENT, _base(None, partition, report.profile), fields, time_ms)


def node_points(node: "NodeReport", *, partition: Optional[str] = None, profile: Optional[str] = None,
                time_ms: Optional[int] = None, run_id: Optional[str] = None, job_id: Optional[str] = None,
                string_fields: bool = True) -> list[Point]:
    """The points of one node's report (node-check, e.g. for Telegraf's ``inputs.exec`` with
    ``data_format = "influx"``): its check points and its ``clusterkit_node`` point, at
    ``time_ms`` (default: now). Telegraf reads the timestamps as nanoseconds unless its influx
    parser is told milliseconds (``influx_timestamp_precision``)."""
    return _nodes_points([node], partition=partition, default_profile=profile,
                         time_ms=now_ms() if time_ms is None else time_ms,
                         run_id=run_id, job_id=job_id, string_fields=string_fields)


def lines(points: Iterable[Point]) -> list[str]:
    """The points as lines of line protocol (points without a representable field dropped)."""
    out: list[str] = []
    for p in points:
        line = p.line()
        if line is not None:
            out.append(line)
    return out


def report_lines(report: "FleetReport", *, string_fields: bool = True) -> list[str]:
    return lines(report_points(report, string_fields=string_fields))
