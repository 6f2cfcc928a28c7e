"""JUnit XML sink: a FleetReport as test results for Jenkins, GitLab and other CI.

Naming scheme (stable from run to run, so CI can track the history of one test):

- one ``<testsuite name="clusterkit.validate">`` inside ``<testsuites>``;
- one ``<testcase>`` per node × check × subject: ``classname`` is the node name with dots
  replaced by underscores (``gpu-003``; ``gpu-003.example.com`` → ``gpu-003_example_com``, as
  Jenkins would otherwise read the dots as packages), ``name`` is the check id with the subject
  in brackets when there is one: ``gpu.ecc.uncorrectable[gpu5]``, ``ib.port.rate[mlx5_2/1]``,
  ``system.kernel``;
- several results of the same node, check and subject are one testcase with the worst status
  (fail > error > warn > skip > pass) and all their messages;
- an unreachable node is one testcase ``node.reachable`` with ``<error type="unreachable">``;
  a reachable node whose node-check says that not everything ran (``NodeReport.error``) adds a
  testcase ``node.run`` with ``<error type="incomplete">``;
- fleet findings are testcases with ``classname="fleet"`` and ``name`` = the finding's check
  (findings of one check merge like node results); the nodes concerned are in the message;
- should two testcases still share classname and name (a node literally named ``fleet``, or
  ``a.b`` next to ``a_b``), the later one gets `` #2``, `` #3`` appended, in report order.

Statuses: fail → ``<failure type="check">``, error → ``<error type="check">``, skip →
``<skipped>``, warn → a passing testcase with the message in ``<system-out>``, pass → a bare
testcase. Every string is stripped of the characters XML 1.0 forbids (NUL, ESC, other C0
controls, lone surrogates, U+FFFE/U+FFFF), which are shown escaped (``\\x1b``) instead, so the
file always parses.
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Optional

from clusterkit.models import FleetReport, NodeReport, NodeStatus, Status

SUITE_NAME = "clusterkit.validate"
FLEET_CLASSNAME = "fleet"

# Everything outside XML 1.0's Char production: #x9 | #xA | #xD | [#x20-#xD7FF] |
# [#xE000-#xFFFD] | [#x10000-#x10FFFF].
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Worst first, for merging several results into one testcase.
_RANK = {Status.FAIL: 5, Status.ERROR: 4, Status.WARN: 3, Status.SKIP: 2, Status.PASS: 1}


def xml_safe(text: Any) -> str:
    """``text`` with every character XML 1.0 cannot carry replaced by a visible escape."""
    s = "" if text is None else str(text)

    def esc(m: "re.Match[str]") -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _XML_FORBIDDEN.sub(esc, s)


def classname_for(node: str) -> str:
    """The testcase classname of a node: its name, dots replaced by underscores."""
    return node.replace(".", "_")


def testcase_name(check: str, subject: Optional[str]) -> str:
    """``check[subject]``, or just ``check`` when there is no subject."""
    return f"{check}[{subject}]" if subject else check


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class _Case:
    """One testcase being assembled from one or more results."""

    __slots__ = ("classname", "name", "results")

    def __init__(self, classname: str, name: str) -> None:
        self.classname = classname
        self.name = name
        self.results: list[tuple[Status, str, str, str]] = []  # (status, message, detail, type)

    @property
    def status(self) -> Status:
        return max((r[0] for r in self.results), key=_RANK.__getitem__)


def _check_detail(c: Any) -> str:
    lines = []
    if c.subject:
        lines.append(f"subject: {c.subject}")
    unit = f" {c.unit}" if c.unit else ""
    if c.value is not None:
        lines.append(f"value: {_fmt(c.value)}{unit}")
    if c.threshold is not None:
        lines.append(f"threshold: {_fmt(c.threshold)}{unit}")
    if c.message:
        lines.append(f"message: {c.message}")
    return "\n".join(lines)


def _message_of(c: Any) -> str:
    if c.message:
        return c.message
    if c.value is not None:
        unit = f" {c.unit}" if c.unit else ""
        thr = f" (threshold {_fmt(c.threshold)}{unit})" if c.threshold is not None else ""
        return f"{_fmt(c.value)}{unit}{thr}"
    return c.status.value


def _node_cases(n: NodeReport) -> list[_Case]:
    cls = classname_for(n.node)
    cases: dict[str, _Case] = {}
    out: list[_Case] = []

    def case(name: str) -> _Case:
        k = cases.get(name)
        if k is None:
            k = cases[name] = _Case(cls, name)
            out.append(k)
        return k

    if n.status is NodeStatus.UNREACHABLE:
        msg = n.error or "unreachable"
        case("node.reachable").results.append((Status.ERROR, msg, msg, "unreachable"))
    elif n.error:
        case("node.run").results.append((Status.ERROR, n.error, n.error, "incomplete"))
    for c in n.checks:
        case(testcase_name(c.check, c.subject)).results.append(
            (c.status, _message_of(c), _check_detail(c), "check"))
    return out


def _fleet_cases(report: FleetReport) -> list[_Case]:
    cases: dict[str, _Case] = {}
    out: list[_Case] = []
    for f in report.fleet:
        k = cases.get(f.check)
        if k is None:
            k = cases[f.check] = _Case(FLEET_CLASSNAME, f.check)
            out.append(k)
        nodes = ", ".join(f.nodes)
        msg = f.message or (f"{_fmt(f.value)}, expected {_fmt(f.expected)}"
                            if f.value is not None or f.expected is not None else f.status.value)
        detail = [f"nodes: {nodes}"] if f.nodes else []
        if f.value is not None:
            detail.append(f"value: {_fmt(f.value)}")
        if f.expected is not None:
            detail.append(f"expected: {_fmt(f.expected)}")
        if f.message:
            detail.append(f"message: {f.message}")
        if f.nodes:
            msg = f"{msg} (nodes: {nodes})"
        k.results.append((f.status, msg, "\n".join(detail), "check"))
    return out


def _unique(cases: Iterable[_Case]) -> list[_Case]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in cases:
        key = (c.classname, c.name)
        i = 1
        while key in seen:
            i += 1
            key = (c.classname, f"{c.name} #{i}")
        seen.add(key)
        c.name = key[1]
        out.append(c)
    return out


def _timestamp(created: str) -> str:
    """JUnit's timestamp: ISO 8601 in UTC without offset (the Ant schema's pattern)."""
    try:
        t = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        t = _dt.datetime.now(_dt.timezone.utc)
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t.replace(microsecond=0).isoformat()


def _set(el: ET.Element, **attrs: Any) -> None:
    for k, v in attrs.items():
        el.set(k, xml_safe(v))


def _emit(suite: ET.Element, case: _Case) -> Status:
    el = ET.SubElement(suite, "testcase")
    _set(el, classname=case.classname, name=case.name)
    status = case.status
    worst = [r for r in case.results if r[0] is status]
    message = "; ".join(dict.fromkeys(r[1] for r in worst))
    body = "\n\n".join(r[2] for r in case.results if r[2])
    if status is Status.FAIL:
        sub = ET.SubElement(el, "failure")
        _set(sub, message=message, type=worst[0][3])
        sub.text = xml_safe(body)
    elif status is Status.ERROR:
        sub = ET.SubElement(el, "error")
        _set(sub, message=message, type=worst[0][3])
        sub.text = xml_safe(body)
    elif status is Status.SKIP:
        sub = ET.SubElement(el, "skipped")
        _set(sub, message=message)
    elif status is Status.WARN:
        sub = ET.SubElement(el, "system-out")
        sub.text = xml_safe("WARN: " + message + ("\n" + body if body else ""))
    return status


def render_junit(report: FleetReport) -> str:
    """Render ``report`` as a JUnit XML document (UTF-8 text with an XML declaration)."""
    from clusterkit.hostlist import natural_key

    nodes = sorted(report.nodes, key=lambda n: natural_key(n.node))
    cases: list[_Case] = []
    for n in nodes:
        cases.extend(_node_cases(n))
    cases.extend(_fleet_cases(report))
    cases = _unique(cases)

    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite")
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("schema", report.schema_),
        ("clusterkit_version", report.clusterkit_version),
        ("source", report.source),
        ("profile", report.profile),
        ("exit_code", report.summary.exit_code if report.summary.nodes == len(report.nodes)
         else None),
    ):
        if value not in (None, ""):
            _set(ET.SubElement(props, "property"), name=name, value=value)
    if not len(props):
        suite.remove(props)

    counts = {Status.FAIL: 0, Status.ERROR: 0, Status.SKIP: 0}
    for c in cases:
        st = _emit(suite, c)
        if st in counts:
            counts[st] += 1
    duration = f"{report.duration_s or 0.0:.3f}"
    attrs = dict(
        tests=len(cases),
        failures=counts[Status.FAIL],
        errors=counts[Status.ERROR],
        skipped=counts[Status.SKIP],
        time=duration,
    )
    _set(root, name="clusterkit", **attrs)
    _set(suite, name=SUITE_NAME, **attrs, timestamp=_timestamp(report.created))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
