"""Terminal sink: a FleetReport as text a person reads, with failures folded by check.

Layout (plain text when ``color=False``)::

    clusterkit report · source nodes:gpu-[001-008] · profile h100-sxm · 8 nodes · 42.0 s

    FAIL   gpu.ecc.uncorrectable  gpu-[003-004]
             gpu-003  gpu5: 2 volatile uncorrectable ECC errors
             gpu-004  gpu1: 1 volatile uncorrectable ECC errors
    FAIL   nvlink.links_active  gpu-007 (gpu2: 17 of 18 links active)
    ERROR  dcgm.diag  gpu-005 (dcgmi: command not found)
    UNREACHABLE  gpu-[006,008] (connection refused)
    WARN   fleet.drift.driver  gpu-[005-008] (fleet: driver 535.104.05, majority 550.54.15)

    8 nodes: 5 pass, 0 warn, 2 fail, 0 error, 1 unreachable — exit 1

Sections come in this order: failures, errors, unreachable nodes, warnings; each groups the
results of one check (or, for unreachable nodes, one error message) on one line with the
nodes folded into a hostlist expression, and lists the per-node details beneath when there is
more than one. Passing and skipped checks appear only with ``verbose=True``, which also prints
every node and a table of its checks. Every string that came from a node is cleaned of
control characters first, so a hostile or garbled output cannot drive the terminal.

``ProgressReporter`` is the progress bar the controller shows on stderr while nodes finish.
rich is imported only when something is actually rendered.
"""

from __future__ import annotations

import re
import shutil
import threading
from typing import TYPE_CHECKING, Any, Iterable, Optional

from clusterkit.models import (
    FleetFinding,
    FleetReport,
    NodeReport,
    NodeStatus,
    Status,
    Summary,
)

if TYPE_CHECKING:  # pragma: no cover
    from rich.text import Text

#: Detail lines shown beneath one grouped check before "… and N more".
MAX_DETAILS = 10

_STYLE = {
    "FAIL": "bold red",
    "ERROR": "bold magenta",
    "UNREACHABLE": "bold magenta",
    "WARN": "bold yellow",
    "PASS": "green",
    "SKIP": "dim",
}
_LABEL_WIDTH = len("ERROR") + 1

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\r\n]+")


def clean(text: Any) -> str:
    """One printable line: line breaks and tabs become spaces, other control characters
    (ESC, NUL, BEL, C1 codes) are shown escaped as ``\\x1b`` instead of being sent."""
    s = "" if text is None else str(text)
    s = _LINE_BREAKS.sub(" ", s)
    return _CONTROL.sub(_escape, s).strip()


def _escape(m: "re.Match[str]") -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def no_color_requested() -> bool:
    """True when the user asked for no colour (https://no-color.org: NO_COLOR set, non-empty)."""
    import os

    return bool(os.environ.get("NO_COLOR"))


def _fold(names: Iterable[str]) -> str:
    from clusterkit.hostlist import fold_display

    return fold_display(names)


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def describe(check: Any) -> str:
    """One line for one CheckResult: ``subject: message``, or the measured value when there is
    no message. The subject is not repeated when the message already starts with it."""
    message = clean(check.message)
    subject = clean(check.subject) if check.subject else ""
    if not message:
        unit = f" {check.unit}" if check.unit else ""
        if check.value is not None:
            message = f"value {_fmt_scalar(check.value)}{unit}"
            if check.threshold is not None:
                message += f" (threshold {_fmt_scalar(check.threshold)}{unit})"
            message = clean(message)
        else:
            message = check.status.value
    if subject and not message.startswith(subject):
        return f"{subject}: {message}"
    return message


def describe_finding(f: FleetFinding) -> str:
    """One line for one fleet finding: its message, or the value against the expected one."""
    message = clean(f.message)
    if not message:
        parts = []
        if f.value is not None:
            parts.append(_fmt_scalar(f.value))
        if f.expected is not None:
            parts.append(f"expected {_fmt_scalar(f.expected)}")
        message = ", ".join(clean(p) for p in parts) or f.status.value
    return f"fleet: {message}"


def unreachable_reason(node: NodeReport) -> str:
    """Why a node was unreachable, in words that do not depend on the node, so that nodes
    refused for the same reason group together: its ``cause`` (no address, no name) when the
    report has one, else its error with its own name taken out."""
    if node.cause:
        kind = f"{node.error_kind}: " if node.error_kind and node.error_kind != "unreachable" else ""
        return clean(f"{kind}{node.cause}")
    msg = clean(node.error) or "unreachable"
    name = node.node
    for prefix in (f"{name}: ", f"{name}:"):
        if msg.startswith(prefix):
            msg = msg[len(prefix):].strip() or "unreachable"
            break
    if name and name in msg:
        msg = msg.replace(name, "<node>")
    return msg


def effective_summary(report: FleetReport) -> tuple[Summary, list[NodeReport]]:
    """The report's summary and its nodes in natural order. A report that was never
    finalized (its summary counts no nodes) is summarised here, without changing it."""
    if report.summary.nodes == len(report.nodes):
        from clusterkit.hostlist import natural_key

        return report.summary, sorted(report.nodes, key=lambda n: natural_key(n.node))
    copy = report.model_copy(update={"nodes": list(report.nodes)})
    copy.finalize()
    return copy.summary, copy.nodes


class _Group:
    """The results of one check (or one unreachable reason) over the nodes that had them."""

    __slots__ = ("key", "details", "nodes", "fleet")

    def __init__(self, key: str) -> None:
        self.key = key
        self.details: list[tuple[str, str]] = []  # (node, text)
        self.nodes: list[str] = []
        self.fleet: list[str] = []  # fleet-finding lines (they carry their own nodes)


def _group_checks(nodes: list[NodeReport], status: Status) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    for n in nodes:
        for c in n.checks:
            if c.status is not status:
                continue
            g = groups.get(c.check)
            if g is None:
                g = groups[c.check] = _Group(c.check)
            if not g.nodes or g.nodes[-1] != n.node:
                g.nodes.append(n.node)
            g.details.append((n.node, describe(c)))
    return groups


def _node_run_errors(nodes: list[NodeReport]) -> dict[str, _Group]:
    """Reachable nodes whose node-check reported that not everything ran (NodeReport.error)."""
    groups: dict[str, _Group] = {}
    for n in nodes:
        if n.status is NodeStatus.UNREACHABLE or not n.error:
            continue
        g = groups.setdefault("node.run", _Group("node.run"))
        g.nodes.append(n.node)
        g.details.append((n.node, clean(n.error)))
    return groups


class _Writer:
    """Builds rich Text lines; no markup is ever parsed (hostlists contain brackets)."""

    def __init__(self, color: bool) -> None:
        from rich.text import Text

        self._Text = Text
        self.color = color
        self.lines: list[Text] = []

    def text(self) -> "Text":
        return self._Text()

    def blank(self) -> None:
        if self.lines and self.lines[-1].plain != "":
            self.lines.append(self._Text(""))

    def label(self, t: "Text", word: str) -> None:
        t.append(word.ljust(_LABEL_WIDTH), style=_STYLE.get(word, ""))
        t.append(" ")

    def group(self, word: str, g: _Group) -> None:
        """One line per check: the label, the check, the folded nodes; details beneath."""
        if g.nodes:
            t = self.text()
            self.label(t, word)
            t.append(clean(g.key), style="bold")
            t.append("  ")
            t.append(clean(_fold(g.nodes)), style="cyan")
            if len(g.details) == 1:
                t.append(f" ({g.details[0][1]})")
                self.lines.append(t)
            else:
                self.lines.append(t)
                self._details(g.details)
        for line in g.fleet:
            self.lines.append(self._fleet_line(word, g.key, line))

    def _fleet_line(self, word: str, check: str, line: str) -> "Text":
        t = self.text()
        self.label(t, word)
        t.append(clean(check), style="bold")
        t.append("  ")
        t.append(line)
        return t

    def _details(self, details: list[tuple[str, str]]) -> None:
        indent = " " * (_LABEL_WIDTH + 3)
        width = max(len(clean(n)) for n, _ in details[:MAX_DETAILS])
        for node, text in details[:MAX_DETAILS]:
            t = self._Text(indent)
            t.append(clean(node).ljust(width), style="cyan")
            t.append("  ")
            t.append(text)
            self.lines.append(t)
        if len(details) > MAX_DETAILS:
            self.lines.append(
                self._Text(f"{indent}… and {len(details) - MAX_DETAILS} more", style="dim"))


def _header(report: FleetReport, summary: Summary) -> str:
    parts = ["clusterkit report"]
    if report.source:
        parts.append(f"source {clean(report.source)}")
    if report.profile:
        parts.append(f"profile {clean(report.profile)}")
    parts.append(f"{summary.nodes} node" + ("" if summary.nodes == 1 else "s"))
    if report.duration_s is not None:
        parts.append(f"{report.duration_s:.1f} s")
    if report.created:
        parts.append(clean(report.created))
    return " · ".join(parts)


def summary_line(summary: Summary) -> str:
    """``8 nodes: 6 pass, 0 warn, 2 fail, 0 error, 0 unreachable — exit 1``"""
    noun = "node" if summary.nodes == 1 else "nodes"
    return (f"{summary.nodes} {noun}: {summary.passed} pass, {summary.warned} warn, "
            f"{summary.failed} fail, {summary.errored} error, "
            f"{summary.unreachable} unreachable — exit {summary.exit_code}")


def _checks_line(summary: Summary) -> Optional[str]:
    if not summary.checks:
        return None
    order = [s.value for s in (Status.PASS, Status.WARN, Status.FAIL, Status.ERROR, Status.SKIP)]
    counts = [f"{summary.checks[k]} {k}" for k in order if summary.checks.get(k)]
    counts += [f"{v} {clean(k)}" for k, v in sorted(summary.checks.items()) if k not in order]
    total = sum(summary.checks.values())
    return f"{total} check result{'' if total == 1 else 's'}: " + ", ".join(counts)


def _verbose_nodes(w: _Writer, nodes: list[NodeReport]) -> list[Any]:
    """Renderables for every node: a status line and a table of its checks."""
    from rich.table import Table

    out: list[Any] = []
    for n in nodes:
        t = w.text()
        word = n.status.value.upper()
        w.label(t, word)
        t.append(clean(n.node), style="bold cyan")
        extras = []
        if n.duration_s is not None:
            extras.append(f"{n.duration_s:.1f} s")
        if n.error:
            extras.append(clean(n.error))
        if extras:
            t.append("  " + " · ".join(extras))
        out.append(t)
        if not n.checks:
            continue
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                      padding=(0, 1), width=None, expand=False)
        for col in ("status", "check", "subject", "value", "threshold", "message"):
            table.add_column(col, overflow="fold")
        for c in n.checks:
            unit = f" {clean(c.unit)}" if c.unit else ""
            value = "" if c.value is None else clean(_fmt_scalar(c.value)) + unit
            thr = "" if c.threshold is None else clean(_fmt_scalar(c.threshold)) + unit
            table.add_row(
                w._Text(c.status.value, style=_STYLE.get(c.status.value.upper(), "")),
                w._Text(clean(c.check)), w._Text(clean(c.subject)),
                w._Text(value), w._Text(thr), w._Text(clean(c.message)),
            )
        out.append(_Indented(table, _LABEL_WIDTH + 3))
    return out


class _Indented:
    """Wraps a renderable with a left margin (rich.padding without importing it eagerly)."""

    def __init__(self, renderable: Any, left: int) -> None:
        self.renderable = renderable
        self.left = left

    def __rich__(self) -> Any:
        from rich.padding import Padding

        return Padding(self.renderable, (0, 0, 0, self.left))


def render_terminal(
    report: FleetReport,
    *,
    verbose: bool = False,
    color: Optional[bool] = None,
    width: Optional[int] = None,
) -> str:
    """Render ``report`` for a terminal and return the text.

    ``color=None`` colours only when stdout is a terminal; ``color=False`` gives plain text.
    Lines are never wrapped (a hostlist or message stays on its line, grep-able); ``width``
    only bounds the check tables of ``verbose`` output (default: the terminal's width).
    """
    import io
    import sys

    from rich.console import Console

    if color is None:
        color = sys.stdout.isatty() and not no_color_requested()
    if width is None:
        width = shutil.get_terminal_size((120, 24)).columns
    summary, nodes = effective_summary(report)
    w = _Writer(bool(color))

    w.lines.append(w._Text(_header(report, summary), style="bold"))
    w.blank()

    fleet_by_status: dict[Status, dict[str, list[str]]] = {}
    for f in report.fleet:
        line = clean(_fold(f.nodes)) + f" ({describe_finding(f)})" if f.nodes else describe_finding(f)
        fleet_by_status.setdefault(f.status, {}).setdefault(f.check, []).append(line)

    def section(word: str, status: Status, groups: dict[str, _Group]) -> None:
        for check, lines in fleet_by_status.get(status, {}).items():
            groups.setdefault(check, _Group(check)).fleet.extend(lines)
        for key in sorted(groups):
            w.group(word, groups[key])

    section("FAIL", Status.FAIL, _group_checks(nodes, Status.FAIL))
    errors = _group_checks(nodes, Status.ERROR)
    errors.update(_node_run_errors(nodes))
    section("ERROR", Status.ERROR, errors)

    unreachable: dict[str, _Group] = {}
    for n in nodes:
        if n.status is NodeStatus.UNREACHABLE:
            reason = unreachable_reason(n)
            g = unreachable.setdefault(reason, _Group(reason))
            g.nodes.append(n.node)
            g.details.append((n.node, clean(n.error) or reason))
    for reason in sorted(unreachable, key=lambda r: (-len(unreachable[r].nodes), r)):
        g = unreachable[reason]
        t = w.text()
        w.label(t, "UNREACHABLE")
        t.append(clean(_fold(g.nodes)), style="cyan")
        t.append(f" ({reason})")
        w.lines.append(t)

    section("WARN", Status.WARN, _group_checks(nodes, Status.WARN))
    if verbose:
        section("SKIP", Status.SKIP, _group_checks(nodes, Status.SKIP))
    w.blank()

    buf = io.StringIO()
    console = Console(
        file=buf,
        width=max(40, int(width)),
        color_system="truecolor" if color else None,
        force_terminal=bool(color),
        no_color=not color,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
        soft_wrap=True,
    )
    for text_line in w.lines:
        console.print(text_line)
    if verbose:
        console.print(w._Text("Nodes", style="bold underline"))
        for item in _verbose_nodes(w, nodes):
            if isinstance(item, _Indented):
                console.print(item, soft_wrap=False, crop=False)
            else:
                console.print(item)
        console.print(w._Text(""))
    checks = _checks_line(summary)
    if checks:
        console.print(w._Text(checks, style="dim"))
    style = "bold red" if summary.exit_code == 1 else "bold yellow" if summary.exit_code else "bold green"
    console.print(w._Text(summary_line(summary), style=style))
    # Tables pad their last column; trailing blanks help nobody.
    return "".join(line.rstrip(" ") + "\n" for line in buf.getvalue().splitlines())


class ProgressReporter:
    """Progress of a fan-out on stderr: ``done/total`` and the failures so far.

    ``ProgressReporter(total, enabled)``; ``advance(node, status)`` from any thread once per
    finished node; ``close()`` once (also a context manager). Disabled, it does nothing and
    imports nothing; the controller enables it only when stderr is a terminal. ``file``
    redirects the bar (tests).
    """

    def __init__(self, total: int, enabled: bool, *, file: Any = None) -> None:
        self.total = int(total)
        self.enabled = bool(enabled)
        self.done = 0
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._progress: Any = None
        self._task: Any = None
        if not self.enabled:
            return
        import sys

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=file if file is not None else sys.stderr, highlight=False,
                          no_color=no_color_requested())
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[bad]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("nodes", total=self.total, bad="")
        self._progress.start()

    @property
    def failed(self) -> int:
        return self.counts.get(NodeStatus.FAIL.value, 0)

    def _bad_text(self) -> str:
        parts = [f"{self.counts[k]} {k}" for k in ("fail", "error", "unreachable")
                 if self.counts.get(k)]
        return " · ".join(parts)

    def advance(self, node: str, status: Any) -> None:
        """One more node finished with ``status`` (a NodeStatus or its value)."""
        key = getattr(status, "value", status)
        key = str(key) if key is not None else "unknown"
        with self._lock:
            if self._closed:
                return
            self.done += 1
            self.counts[key] = self.counts.get(key, 0) + 1
            if self._progress is not None:
                self._progress.update(self._task, advance=1, bad=self._bad_text())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._progress is not None:
                self._progress.stop()

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
