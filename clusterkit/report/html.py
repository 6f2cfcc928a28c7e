"""HTML sink: a FleetReport as one self-contained page to open in a browser or attach to a ticket.

``render_html(report) -> str`` is pure (no I/O, no clock): the same report gives the same page.
The page needs nothing but itself: no network, no CDN, no web fonts; its one stylesheet and one
small script are inline, and a Content-Security-Policy (hashes of exactly those two blocks,
``default-src 'none'``) keeps the browser from fetching or running anything else, even should a
node's output ever get past the escaping.

Sections, in order (docs/reports.md, "HTML"):

- **summary**: source, profile, created, duration, node counts by status (failing and
  erroring nodes first and large), exit code and what it means;
- **heatmap**: nodes × check domains (``node`` first: unreachable or not everything ran; then
  gpu, system, nvlink, topo, ib, storage, xid, stress in the registry's order, then any other
  domain prefix the report holds, e.g. nccl). A cell is the worst status of that node's checks
  in that domain; a blue ring marks a node a fleet finding (outlier, drift, baseline) names in
  that domain. Nodes come in blocks of :data:`BLOCK`, each titled by its folded hostlist, that
  wrap across the page. Clicking a cell shows that node's results in that domain in the detail
  panel (one delegated listener; the results come from one inline JSON blob, strings and rows
  deduplicated, so a 1,024-node fleet stays a few MiB);
- **problems**: failures grouped by check with the nodes folded into hostlists, then errors,
  unreachable nodes grouped by cause, then warnings, as the terminal report groups them
  (:mod:`clusterkit.report.terminal`'s helpers);
- **distributions**: for every figure (:data:`clusterkit.validate.fleet.FIGURES`: ib.write_bw,
  stress.gemm, storage.fio.*, nccl busbw, …) a histogram of the per-subject values, with the
  threshold and the fleet median drawn, and the nodes a ``fleet.outlier.*`` finding names
  highlighted;
- **localization** (when the report carries a ``localization`` attribute: rounds as a table),
  **fleet findings**, **skipped nodes** and **Slurm actions** when there are any.

Everything from the report is escaped (node names and messages are untrusted): text through
:func:`html.escape` after control characters are shown as ``\\x1b``-style escapes, the inline
JSON with ``<``, ``>`` and ``&`` written as ``\\u003c``… so neither ``</script>`` nor ``<!--``
can end or change the blob. Without JavaScript every section but the heatmap's detail panel
works (the "only nodes with problems" filter is CSS).

Why inline SVG and not a bundled charting library: the charts are a few histograms and lines.
Written as SVG by Python they cost a few KiB, render without any script (the page reads the
same with JavaScript off, printed or in a mail client's preview), scale crisply, carry their
tooltips as ``<title>`` elements, and leave nothing to vendor, update or audit. A bundled
library (Chart.js ~200 KiB, Plotly ~3 MiB, minified) would outweigh the report of a small fleet,
need a script to show anything at all, and bring third-party code into a page that holds
untrusted strings.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterable, Optional

from clusterkit.models import FleetFinding, FleetReport, NodeReport, NodeStatus, Status, Summary

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.fleet import FigureGroup

__all__ = ["render_html", "BLOCK"]

#: nodes per heatmap block (blocks wrap across the page)
BLOCK = 32
#: fleets of at most this many nodes get large heatmap cells
LARGE_CELLS = 64
#: details shown beneath a grouped check before the rest fold into "N more"
SHOWN_DETAILS = 10
#: details written for one group at all (the JSON report holds every one)
MAX_GROUP_DETAILS = 500
#: a figure's samples drawn one by one when there are at most this many; above, only those of
#: the nodes a finding names (the histogram shows the rest)
MAX_DOTS = 400
#: histogram bins of a figure
BINS = 40

#: status -> heatmap cell class
_CELL = {"pass": "p", "warn": "w", "fail": "f", "error": "e", "skip": "s", "unreachable": "u", "none": "x"}
#: which status is worse (a cell takes the worst), and the cell class of each rank
_RANK = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.ERROR: 3, Status.FAIL: 4}
_RANK_CELL = ["s", "p", "w", "e", "f"]
_CHECK_STATUSES = ["pass", "warn", "fail", "error", "skip"]
_NODE_STATUSES = ["pass", "warn", "fail", "error", "unreachable"]
_EXIT_MEANING = {0: "healthy", 1: "a node or the fleet failed", 3: "incomplete: unreachable nodes or "
                 "checks that could not run", 4: "internal error", 130: "interrupted"}
#: which heatmap column a drift finding belongs to
_FACT_DOMAIN = {"driver_version": "gpu", "cuda_version": "gpu", "vbios_version": "gpu",
                "kernel": "system", "hca_fw": "ib", "ofed_version": "ib"}

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"[\t\r\n]+")


# ------------------------------------------------------------------------------ escaping
def _esc_char(m: "re.Match[str]") -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def _printable(text: Any, *, lines: bool = False) -> str:
    """Text with control characters (and lone surrogates) shown as escapes; one line unless
    ``lines``."""
    s = "" if text is None else str(text)
    if not lines:
        s = _LINE_BREAKS.sub(" ", s)
    return _CONTROL.sub(_esc_char, s)


def _h(text: Any, *, lines: bool = False) -> str:
    """HTML-escaped, printable text (for element content and quoted attributes)."""
    return html.escape(_printable(text, lines=lines), quote=True)


def _script_json(obj: Any) -> str:
    """JSON that can sit inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    (so no ``</script>`` and no ``<!--``), ASCII only."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _scalar(v: Any) -> Any:
    """A value as JSON can carry it to the page: non-finite floats and integers JavaScript
    cannot hold exactly become text."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if abs(v) <= 2**53 else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return _printable(v)


def _plain(v: Any, depth: int = 0) -> Any:
    """Free-form data (facts, localization rounds) as plain JSON values with printable text."""
    if depth > 8:
        return _printable(repr(v))
    if hasattr(v, "model_dump"):
        v = v.model_dump(mode="json")
    if isinstance(v, Mapping):
        return {_printable(k): _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x, depth + 1) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return _scalar(v)
    return _printable(v)


def _num(x: float) -> str:
    """A measured number for people: 2 decimals at most, no trailing zeros."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1e7:
        return f"{x:.4g}"
    text = f"{round(x, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _num(v)
    return str(v)


def _fold(names: Iterable[str]) -> str:
    from clusterkit.hostlist import fold_display

    return fold_display(names)


def _s(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ------------------------------------------------------------------------------ the model
def _domain_of(check: str) -> str:
    return check.split(".", 1)[0] or "?"


def _columns(nodes: list[NodeReport]) -> list[str]:
    """Heatmap columns: ``node``, then the registry's domains present, then other prefixes."""
    from clusterkit.validate.registry import DOMAINS

    present = {_domain_of(check) for check in {c.check for n in nodes for c in n.checks}}
    known = [d for d in DOMAINS if d in present]
    return ["node"] + known + sorted(present - set(known) - {"node"})


def _finding_column(check: str, columns: list[str]) -> int:
    parts = check.split(".")
    dom: Optional[str] = None
    if len(parts) > 2 and parts[1] in ("outlier", "baseline"):
        dom = parts[2]
    elif len(parts) > 2 and parts[1] == "drift":
        dom = _FACT_DOMAIN.get(parts[2])
    elif check == "fleet.gpu_count":
        dom = "gpu"
    return columns.index(dom) if dom in columns else 0


class _Table:
    """Values deduplicated into a list: ``add(key, value) -> index``."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._index: dict[Any, int] = {}

    def index(self, key: Any) -> Optional[int]:
        return self._index.get(key)

    def add(self, key: Any, value: Any) -> int:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.items)
            self.items.append(value)
        return i


def _runs(ids: list[int]) -> list[int]:
    """Row ids as [start, count, start, count, …]: nodes alike share long runs."""
    out: list[int] = []
    for i in ids:
        if out and out[-2] + out[-1] == i:
            out[-1] += 1
        else:
            out += [i, 1]
    return out


class _Model:
    """What the page shows, computed once: columns, cells, the JSON blob."""

    def __init__(self, report: FleetReport, nodes: list[NodeReport]) -> None:
        self.nodes = nodes
        self.columns = _columns(nodes)
        col = {d: i for i, d in enumerate(self.columns)}
        index = {n.node: i for i, n in enumerate(nodes)}
        strings = _Table()
        facts = _Table()
        rows: list[list[Any]] = []
        row_index: dict[tuple[Any, ...], int] = {}
        row_rank: list[int] = []
        col_of: dict[str, int] = {}

        def sid(text: Optional[str]) -> int:
            if text is None:
                return -1
            i = strings.index(text)
            return strings.add(text, _printable(text)) if i is None else i

        self.cells: list[list[str]] = []
        self.marked: list[set[int]] = [set() for _ in nodes]  # columns named by fleet findings
        blob_nodes: list[list[Any]] = []
        for n in nodes:
            worst: dict[int, int] = {}  # column -> rank of its worst status
            ids: list[int] = []
            for c in n.checks:
                v, t = c.value, c.threshold
                # the classes: True and 1 are equal as keys, not as values
                key = (c.check, c.subject, c.status, v.__class__, v, t.__class__, t, c.unit, c.message)
                rid = row_index.get(key)
                if rid is None:
                    d = col_of.get(c.check)
                    if d is None:
                        d = col_of[c.check] = col[_domain_of(c.check)]
                    rid = row_index[key] = len(rows)
                    rows.append([d, sid(c.check), sid(c.subject), _CHECK_STATUSES.index(c.status.value),
                                 _scalar(v), _scalar(t), sid(c.unit), sid(c.message)])
                    row_rank.append(_RANK[c.status])
                ids.append(rid)
                d, rank = rows[rid][0], row_rank[rid]
                if rank > worst.get(d, -1):
                    worst[d] = rank
            if n.status is NodeStatus.UNREACHABLE:
                cells = ["u"] * len(self.columns)
            else:
                node_cell = _RANK_CELL[worst[0]] if 0 in worst else "p"  # checks named node.*
                if n.error or n.status is NodeStatus.ERROR and not n.checks:
                    node_cell = "f" if node_cell == "f" else "e"
                cells = [node_cell]
                cells += [_RANK_CELL[worst[d]] if d in worst else "x" for d in range(1, len(self.columns))]
            self.cells.append(cells)
            plain_facts = _plain(n.facts)
            blob_nodes.append([
                _printable(n.node), _NODE_STATUSES.index(n.status.value),
                None if n.error is None else _printable(n.error),
                None if n.error_kind is None else _printable(n.error_kind),
                None if n.cause is None else _printable(n.cause),
                None if n.output_tail is None else _printable(n.output_tail, lines=True),
                _scalar(n.duration_s),
                facts.add(json.dumps(plain_facts, sort_keys=True), plain_facts),
                _runs(ids),
            ])
        findings: list[list[Any]] = []
        for f in report.fleet:
            d = _finding_column(f.check, self.columns)
            named = sorted({index[x] for x in f.nodes if x in index})
            for i in named:
                self.marked[i].add(d)
            findings.append([_printable(f.check), _CHECK_STATUSES.index(f.status.value), _scalar(f.value),
                             _scalar(f.expected), _printable(f.message), named, d])
        self.blob = {
            "v": 1,
            "dom": self.columns,
            "st": _CHECK_STATUSES,
            "ns": _NODE_STATUSES,
            "s": strings.items,
            "r": rows,
            "f": facts.items,
            "n": blob_nodes,
            "ff": findings,
        }


# ------------------------------------------------------------------------------ sections
def _summary(report: FleetReport, summary: Summary) -> str:
    from clusterkit.report.terminal import summary_line

    def card(cls: str, count: Any, label: str, big: bool = False) -> str:
        zero = " zero" if count == 0 else ""
        return (f'<div class="card {cls}{" big" if big else ""}{zero}"><b>{_h(count)}</b>'
                f"<span>{_h(label)}</span></div>")

    exit_cls = "f" if summary.exit_code == 1 else "p" if summary.exit_code == 0 else "e"
    cards = [
        card("f", summary.failed, "failed", True),
        card("e", summary.errored, "error", True),
        card("u", summary.unreachable, "unreachable", True),
        card("w", summary.warned, "warn"),
        card("p", summary.passed, "pass"),
        f'<div class="card {exit_cls} exit"><b>exit {_h(summary.exit_code)}</b>'
        f"<span>{_h(_EXIT_MEANING.get(summary.exit_code, ''))}</span></div>",
    ]
    meta = [("source", report.source or "—"), ("profile", report.profile or "—"),
            ("nodes", str(summary.nodes)), ("created", report.created or "—"),
            ("duration", "—" if report.duration_s is None else f"{report.duration_s:.1f} s")]
    for label, attr in (("partition", "partition"), ("Slurm job", "job_id"), ("run id", "run_id")):
        value = getattr(report, attr, None)  # newer fields: absent from an older model
        if value:
            meta.append((label, str(value)))
    if report.clusterkit_version:
        meta.append(("clusterkit", report.clusterkit_version))
    if summary.interrupted:
        meta.append(("interrupted", "yes: the report covers the nodes that answered"))
    if summary.internal_errors:
        meta.append(("internal errors", f"{summary.internal_errors} (a bug in clusterkit: please report it)"))
    dl = "".join(f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in meta)
    checks = ""
    if summary.checks:
        order = _CHECK_STATUSES[2:4] + _CHECK_STATUSES[1:2] + _CHECK_STATUSES[:1] + _CHECK_STATUSES[4:]
        parts = [f'<span class="t {_CELL.get(k, "x")}">{_h(summary.checks[k])} {_h(k)}</span>'
                 for k in order if summary.checks.get(k)]
        parts += [f"<span>{_h(v)} {_h(k)}</span>" for k, v in sorted(summary.checks.items()) if k not in order]
        total = sum(summary.checks.values())
        checks = f'<p class="checks">{_h(_s(total, "check result"))}: {" · ".join(parts)}</p>'
    return (f'<header id="summary"><h1>clusterkit report</h1><dl class="meta">{dl}</dl>'
            f'<div class="cards">{"".join(cards)}</div>{checks}'
            f'<p class="sline">{_h(summary_line(summary))}</p></header>')


def _nav(items: list[tuple[str, str]]) -> str:
    return '<nav>' + "".join(f'<a href="#{i}">{_h(t)}</a>' for i, t in items) + "</nav>"


def _heatmap(m: _Model) -> str:
    cols = m.columns
    head = "<thead><tr><th></th>" + "".join(
        f'<th scope="col"><span>{_h(d)}</span></th>' for d in cols) + "</tr></thead>"
    blocks = []
    for start in range(0, len(m.nodes), BLOCK):
        part = m.nodes[start:start + BLOCK]
        body = []
        for i, n in enumerate(part, start):
            ns = _CELL.get(n.status.value, "e")
            problem = " o" if m.marked[i] else ""
            name = _h(n.node)
            title = f' title="{name}"' if len(n.node) > 16 else ""
            tds = "".join(f"<td class={c}>" if d not in m.marked[i] else f'<td class="{c} o">'
                          for d, c in enumerate(m.cells[i]))
            body.append(f'<tr class="{ns}{problem}" data-n={i}><th{title}>{name}{tds}')
        blocks.append(f'<table class="hm"><caption>{_h(_fold(n.node for n in part))}</caption>'
                      f"{head}<tbody>{''.join(body)}</tbody></table>")
    legend = "".join(f'<span><i class="{c}"></i>{_h(w)}</span>' for w, c in (
        ("fail", "f"), ("error", "e"), ("unreachable", "u"), ("warn", "w"), ("pass", "p"),
        ("skip", "s"), ("no checks", "x"))) + '<span><i class="p o"></i>named by a fleet finding</span>'
    lg = ' class="lg"' if len(m.nodes) <= LARGE_CELLS else ""
    return (
        '<section id="heatmap"><h2>Nodes × check domains</h2>'
        f'<p class="legend">{legend}</p>'
        '<input type="checkbox" id="only"><label for="only">show only nodes with problems</label>'
        f'<div id="hmwrap"{lg}><div id="hm" class="blocks">' + "".join(blocks) + "</div>"
        '<aside id="detail" aria-live="polite"><p class="hint">Click a cell to see that node\'s '
        "results in that domain.</p><noscript><p>The details need JavaScript; the problems, "
        "figures and findings below do not.</p></noscript></aside></div></section>")


def _details_table(details: list[tuple[str, str]]) -> str:
    def rows(items: list[tuple[str, str]]) -> str:
        return "".join(f"<tr><th>{_h(n)}</th><td>{_h(t)}</td></tr>" for n, t in items)

    shown = details[:SHOWN_DETAILS]
    rest = details[SHOWN_DETAILS:MAX_GROUP_DETAILS]
    out = f'<table class="det">{rows(shown)}</table>'
    if rest:
        out += (f"<details><summary>{_h(len(details) - SHOWN_DETAILS)} more</summary>"
                f'<table class="det">{rows(rest)}</table>')
        if len(details) > MAX_GROUP_DETAILS:
            out += (f'<p class="muted">… and {_h(len(details) - MAX_GROUP_DETAILS)} more '
                    "(the JSON report has every one)</p>")
        out += "</details>"
    return out


def _group_html(word: str, cls: str, key: str, nodes: list[str], details: list[tuple[str, str]],
                fleet: list[FleetFinding]) -> str:
    from clusterkit.report.terminal import describe_finding

    out = [f'<div class="grp {cls}">']
    if nodes:
        count = f'<span class="muted">{_h(_s(len(set(nodes)), "node"))}</span>'
        out.append(f'<div class="gh"><span class="badge {cls}">{word}</span><code>{_h(key)}</code>'
                   f'<span class="hl">{_h(_fold(nodes))}</span>{count}</div>')
        if len(details) == 1:
            out.append(f'<p class="one">{_h(details[0][1])}</p>')
        elif details:
            out.append(_details_table(details))
    for f in fleet:
        named = (f'<span class="hl">{_h(_fold(f.nodes))}</span>'
                 f'<span class="muted">{_h(_s(len(set(f.nodes)), "node"))}</span>') if f.nodes else ""
        out.append(f'<div class="gh"><span class="badge {cls}">{word}</span><code>{_h(key)}</code>{named}</div>'
                   f'<p class="one">{_h(describe_finding(f))} <a href="#fleet">(fleet findings)</a></p>')
    out.append("</div>")
    return "".join(out)


def _varied(reason: str, details: list[tuple[str, str]]) -> bool:
    """Whether unreachable nodes' own errors say more than their shared reason does."""
    return len(details) > 1 and any(e not in (reason, f"{n}: {reason}", f"{n}:{reason}") for n, e in details)


def _problems(report: FleetReport, nodes: list[NodeReport]) -> str:
    from clusterkit.report.terminal import _group_checks, _Group, _node_run_errors, unreachable_reason

    fleet_by_status: dict[Status, dict[str, list[FleetFinding]]] = {}
    for f in report.fleet:
        fleet_by_status.setdefault(f.status, {}).setdefault(f.check, []).append(f)

    def section(title: str, word: str, cls: str, status: Status, groups: dict[str, _Group]) -> str:
        fleet = fleet_by_status.get(status, {})
        for check in fleet:
            groups.setdefault(check, _Group(check))
        if not groups:
            return ""
        body = "".join(_group_html(word, cls, k, groups[k].nodes, groups[k].details, fleet.get(k, []))
                       for k in sorted(groups))
        return f'<h3 class="{cls}">{_h(title)} <span class="muted">({_h(_s(len(groups), "check"))})</span></h3>{body}'

    parts = [section("Failures", "FAIL", "f", Status.FAIL, _group_checks(nodes, Status.FAIL))]
    errors = _group_checks(nodes, Status.ERROR)
    errors.update(_node_run_errors(nodes))
    parts.append(section("Errors", "ERROR", "e", Status.ERROR, errors))
    unreachable: dict[str, _Group] = {}
    for n in nodes:
        if n.status is NodeStatus.UNREACHABLE:
            reason = unreachable_reason(n)
            g = unreachable.setdefault(reason, _Group(reason))
            g.nodes.append(n.node)
            g.details.append((n.node, _printable(n.error) or reason))
    if unreachable:
        groups = []
        for reason in sorted(unreachable, key=lambda r: (-len(unreachable[r].nodes), r)):
            g = unreachable[reason]
            groups.append(
                f'<div class="grp u"><div class="gh"><span class="badge u">UNREACHABLE</span>'
                f'<span class="hl">{_h(_fold(g.nodes))}</span><span>({_h(reason)})</span>'
                f'<span class="muted">{_h(_s(len(g.nodes), "node"))}</span></div>'
                + (_details_table(g.details) if _varied(reason, g.details) else "") + "</div>")
        parts.append(f'<h3 class="u">Unreachable <span class="muted">({_h(_s(len(unreachable), "cause"))})'
                     f"</span></h3>{''.join(groups)}")
    parts.append(section("Warnings", "WARN", "w", Status.WARN, _group_checks(nodes, Status.WARN)))
    body = "".join(parts) or '<p class="ok">No failures, errors, unreachable nodes or warnings.</p>'
    return f'<section id="problems"><h2>Problems</h2>{body}</section>'


# ------------------------------------------------------------------------------ figures
def _figure_reports(nodes: list[NodeReport]) -> list[NodeReport]:
    """The reached nodes with only their figure results (:data:`FIGURES` ids), for
    :func:`figure_groups`: a 1,024-node report holds some 200,000 results, and whether an id is a
    figure is asked once per id here, not once per result."""
    from clusterkit.validate.fleet import figure_direction

    known: dict[str, bool] = {}
    out = []
    for r in nodes:
        if r.status is NodeStatus.UNREACHABLE:
            continue
        mine = []
        for c in r.checks:
            hit = known.get(c.check)
            if hit is None:
                hit = known[c.check] = figure_direction(c.check) is not None
            if hit:
                mine.append(c)
        if mine:
            out.append(NodeReport.model_construct(node=r.node, status=r.status, checks=mine, facts=r.facts))
    return out


def _thresholds(nodes: list[NodeReport]) -> dict[tuple[str, str], Counter[float]]:
    """Each figure's thresholds (by profile and figure key) and how often each was used."""
    from clusterkit.validate.fleet import figure_key

    out: dict[tuple[str, str], Counter[float]] = {}
    for r in nodes:
        profile = str(r.facts.get("profile") or "unknown")
        for c in r.checks:
            t = c.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                continue
            key = (profile, figure_key(c.check, c.subject))
            counted = out.get(key)
            if counted is None:
                counted = out[key] = Counter()
            counted[float(t)] += 1
    return out


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out: list[float] = []
    x = first
    while x <= hi + step * 1e-9 and len(out) < 20:
        out.append(round(x, 10))
        x += step
    return out


def _figure_findings(g: "FigureGroup", findings: list[FleetFinding], kind: str) -> list[FleetFinding]:
    """The findings of ``fleet.<kind>.<check>`` about this figure: those whose message starts
    with the figure's key (and profile), as fleet.py writes them; findings whose message names
    no figure at all (another writer) count for every figure of their check."""
    mine = [f for f in findings if f.check == f"fleet.{kind}.{g.check}"]
    what = g.key if g.profile == "unknown" else f"{g.key} ({g.profile})"
    exact = [f for f in mine if f.message.startswith(what + " ")]
    if exact or any(f.message.startswith(g.check) for f in mine):
        return exact  # the findings say which figure they are about
    return mine


def _outlying(samples: list[tuple[str, Optional[str], float]], flagged: set[str], higher: bool) -> set[int]:
    """Which samples of the flagged nodes to mark as outliers (the finding names nodes, not
    subjects): those beyond every unflagged node's value, else each flagged node's worst one."""
    sign = 1.0 if higher else -1.0
    edge = min((sign * v for n, _, v in samples if n not in flagged), default=math.inf)
    mine: dict[str, list[int]] = {}
    for i, (n, _, _) in enumerate(samples):
        if n in flagged:
            mine.setdefault(n, []).append(i)
    out: set[int] = set()
    for idx in mine.values():
        beyond = [i for i in idx if sign * samples[i][2] < edge]
        out.update(beyond or [min(idx, key=lambda i: sign * samples[i][2])])
    return out


def _figure(g: "FigureGroup", threshold: Optional[float], flagged: set[str], many_profiles: bool) -> str:
    samples = [(node, subj, v) for node, rows in g.samples.items() for subj, v in rows]
    values = [v for _, _, v in samples]
    med = float(statistics.median(values))
    vmin, vmax = min(values), max(values)
    pad = (vmax - vmin) * 0.08 if vmax > vmin else (abs(vmax) * 0.02 or 1.0)
    lo, hi = vmin - pad, vmax + pad
    off_scale = threshold is not None and not lo <= threshold <= hi
    if threshold is not None and off_scale:
        wide_lo, wide_hi = min(lo, threshold - pad), max(hi, threshold + pad)
        if wide_hi - wide_lo <= 3 * (hi - lo):  # near enough to draw without squashing the values
            lo, hi, off_scale = wide_lo, wide_hi, False
    W, X0, X1 = 760, 12, 748
    HT, HB = 22, 92  # histogram top, bottom
    DT, DB = 100, 124  # dots strip
    AX = 130  # axis

    def x(v: float) -> float:
        return X0 + (v - lo) / (hi - lo) * (X1 - X0)

    unit = f" {g.unit}" if g.unit else ""
    out = [f'<svg class="fig" viewBox="0 0 {W} 152" role="img" aria-label="{_h(g.key)}: '
           f'{_h(len(values))} values, median {_h(_num(med))}{_h(unit)}">']
    counts = [0] * BINS
    width = (hi - lo) / BINS
    for v in values:
        counts[min(BINS - 1, max(0, int((v - lo) / width)))] += 1
    top = max(counts)
    bw = (X1 - X0) / BINS
    for i, c in enumerate(counts):
        if not c:
            continue
        h = max(1.5, c / top * (HB - HT))
        a, b = lo + i * width, lo + (i + 1) * width
        out.append(f'<rect class="bar" x="{X0 + i * bw:.1f}" y="{HB - h:.1f}" width="{bw - 1:.1f}" '
                   f'height="{h:.1f}"><title>{_h(_num(a))}–{_h(_num(b))}{_h(unit)}: '
                   f'{_h(_s(c, "value"))}</title></rect>')
    out.append(f'<line class="axis" x1="{X0}" x2="{X1}" y1="{AX}" y2="{AX}"/>')
    for t in _ticks(lo, hi):
        out.append(f'<line class="tick" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{AX}" y2="{AX + 4}"/>'
                   f'<text class="tl" x="{x(t):.1f}" y="{AX + 16}">{_h(_num(t))}</text>')
    outlying = _outlying(samples, flagged, g.direction == "higher")
    k = 0
    for i, (node, subj, v) in enumerate(samples):
        if len(samples) > MAX_DOTS and node not in flagged:
            continue
        jitter = ((k * 2654435761) % 1000) / 1000
        k += 1
        cls, r, note = ("dot out", 4, " (outlier)") if i in outlying else \
            ("dot fl", 3, " (node named by an outlier finding)") if node in flagged else ("dot", 2.5, "")
        where = f" {subj}" if subj else ""
        out.append(f'<circle class="{cls}" cx="{x(v):.1f}" cy="{DT + 3 + jitter * (DB - DT - 6):.1f}" '
                   f'r="{r}"><title>{_h(node)}{_h(where)}: {_h(_num(v))}{_h(unit)}{note}</title></circle>')
    right = x(med) > X0 + (X1 - X0) * 0.7
    out.append(f'<line class="med" x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{HT - 8}" y2="{DB}"/>'
               f'<text class="ml" text-anchor="{"end" if right else "start"}" '
               f'x="{x(med) + (-3 if right else 3):.1f}" y="{HT - 10}">median {_h(_num(med))}</text>')
    if threshold is not None and off_scale:
        left = threshold < lo
        out.append(f'<text class="thl" text-anchor="{"start" if left else "end"}" x="{X0 if left else X1}" '
                   f'y="{HT - 10}">{"◀ " if left else ""}threshold {_h(_num(threshold))}{_h(unit)} (off scale)'
                   f'{"" if left else " ▶"}</text>')
    elif threshold is not None:
        anchor = "end" if x(threshold) > (X0 + X1) / 2 else "start"
        dx = -3 if anchor == "end" else 3
        out.append(f'<line class="thr" x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="{HT - 8}" y2="{DB}"/>'
                   f'<text class="thl" text-anchor="{anchor}" x="{x(threshold) + dx:.1f}" y="{HT + 4}">'
                   f'threshold {_h(_num(threshold))}</text>')
    out.append("</svg>")
    better = "higher is better" if g.direction == "higher" else "lower is better"
    profile = f" ({_h(g.profile)})" if many_profiles else ""
    cap = [f"<code>{_h(g.key)}</code>{profile}", _h(g.unit or "no unit"), better,
           f"{_h(_s(len(g.samples), 'node'))}, {_h(_s(len(values), 'value'))}",
           f"median {_h(_num(med))}{_h(unit)}", f"min {_h(_num(min(values)))}", f"max {_h(_num(max(values)))}"]
    if threshold is not None:
        cap.append(f"threshold {_h(_num(threshold))}{_h(unit)}")
    caption = " · ".join(cap)
    if flagged:
        caption += f'<br><span class="outl">outliers: {_h(_fold(sorted(flagged)))}</span>'
    return f'<figure class="figure"><figcaption>{caption}</figcaption>{"".join(out)}</figure>'


def _figures(report: FleetReport, nodes: list[NodeReport]) -> str:
    from clusterkit.validate.fleet import figure_groups

    figure_nodes = _figure_reports(nodes)
    groups = figure_groups(figure_nodes)
    if not groups:
        return ""
    thresholds = _thresholds(figure_nodes)
    many_profiles = len({p for p, _ in groups}) > 1
    present = {n.node for n in nodes}
    parts = []
    for (profile, key), g in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not g.samples:
            continue
        flagged = {x for f in _figure_findings(g, report.fleet, "outlier") for x in f.nodes
                   if x in present and x in g.samples}
        counted = thresholds.get((profile, key))
        threshold = counted.most_common(1)[0][0] if counted else None
        figure = _figure(g, threshold, flagged, many_profiles)
        for f in _figure_findings(g, report.fleet, "baseline"):
            figure = figure.replace("</figcaption>", f'<br><span class="outl">baseline: {_h(f.message)}</span>'
                                    "</figcaption>", 1)
        parts.append(figure)
    if not parts:
        return ""
    return ('<section id="figures"><h2>Distributions</h2><p class="muted">Every figure the fleet '
            "measured, one value per node and subject (GPU, rail, path). Red: nodes a "
            "<code>fleet.outlier.*</code> finding names; dashed: the threshold; blue: the fleet "
            "median.</p>" + "".join(parts) + "</section>")


# ------------------------------------------------------------------------------ tables
def _cell(v: Any) -> str:
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (dict, list, tuple)) for x in v):
        return _h(", ".join(_value(x) for x in v))
    if isinstance(v, (dict, list, tuple)):
        return f"<code>{_h(json.dumps(v, ensure_ascii=False, sort_keys=False))}</code>"
    return _h(_value(v))


def _generic_table(rows: list[Any]) -> str:
    dicts = [r if isinstance(r, dict) else {"value": r} for r in rows]
    keys: list[str] = []
    for r in dicts:
        for k in r:
            if k not in keys:
                keys.append(k)
    head = "".join(f"<th>{_h(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in dicts)
    return f'<table class="tbl"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _localization(report: FleetReport) -> str:
    loc = getattr(report, "localization", None)
    if loc is None:
        return ""
    data = _plain(loc)
    parts = []
    if isinstance(data, dict):
        scalars = {k: v for k, v in data.items() if not (isinstance(v, list) and v and
                                                         all(isinstance(x, dict) for x in v))}
        if scalars:
            parts.append('<table class="tbl kv">' + "".join(
                f"<tr><th>{_h(k)}</th><td>{_cell(v)}</td></tr>" for k, v in scalars.items()) + "</table>")
        for k, v in data.items():
            if k not in scalars:
                parts.append(f"<h3>{_h(k)}</h3>{_generic_table(v)}")
    elif isinstance(data, list):
        if not data:
            return ""
        parts.append(_generic_table(data))
    else:
        parts.append(f"<p>{_cell(data)}</p>")
    return f'<section id="localization"><h2>Localization</h2>{"".join(parts)}</section>'


def _fleet(report: FleetReport) -> str:
    if not report.fleet:
        return ""
    rows = []
    for f in report.fleet:
        cls = _CELL.get(f.status.value, "x")
        rows.append(f'<tr><td><span class="badge {cls}">{_h(f.status.value.upper())}</span></td>'
                    f"<td><code>{_h(f.check)}</code></td><td class=hl>{_h(_fold(f.nodes))}</td>"
                    f"<td>{_h(_value(f.value))}</td><td>{_h(_value(f.expected))}</td><td>{_h(f.message)}</td></tr>")
    return ('<section id="fleet"><h2>Fleet findings</h2><table class="tbl"><thead><tr><th>status</th>'
            "<th>check</th><th>nodes</th><th>value</th><th>expected</th><th>message</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _skipped(report: FleetReport) -> str:
    skipped = list(getattr(report, "skipped", None) or [])
    if not skipped:
        return ""
    rows = "".join(f"<tr><td class=hl>{_h(s.node)}</td><td>{_h(s.state)}</td><td>{_h(s.reason)}</td>"
                   f"<td>{_h(s.why)}</td></tr>" for s in skipped)
    return (f'<section id="skipped"><h2>Skipped nodes <span class="muted">({_h(_fold(s.node for s in skipped))})'
            '</span></h2><table class="tbl"><thead><tr><th>node</th><th>state</th><th>Slurm reason</th>'
            f"<th>why</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _actions(report: FleetReport) -> str:
    actions = list(getattr(report, "actions", None) or [])
    if not actions:
        return ""

    def change(a: Any, b: Any) -> str:
        if a == b:
            return _h(a)
        return f"{_h(a)} → {_h(b)}"

    rows = "".join(
        f"<tr><td class=hl>{_h(a.node)}</td><td>{_h(a.action)}</td><td>{_h(a.outcome)}</td>"
        f"<td>{change(a.state_before, a.state_after)}</td><td>{change(a.reason_before, a.reason_after)}</td>"
        f"<td>{_h(a.message)}</td></tr>" for a in actions)
    return ('<section id="actions"><h2>Slurm actions</h2><table class="tbl"><thead><tr><th>node</th>'
            "<th>action</th><th>outcome</th><th>state</th><th>reason</th><th>message</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


# ------------------------------------------------------------------------------ page
_CSS = """
:root{--f:#cf222e;--e:#8250df;--u:#3d444d;--w:#d4a72c;--p:#7cc48a;--s:#d0d7de;--x:#f2f4f6;--o:#0969da;
--fg:#1f2328;--mu:#656d76;--bd:#d0d7de;--bg:#fff;--bg2:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;padding:16px 24px 40px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--bd)}
h3{font-size:15px;margin:16px 0 6px}h3.f{color:var(--f)}h3.e{color:var(--e)}h3.u{color:var(--u)}h3.w{color:#9a6700}
code,.hl,.hm th,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{font-size:13px}.muted{color:var(--mu);font-weight:normal}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0 0 12px}
.meta dt{color:var(--mu)}.meta dd{margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{border:1px solid var(--bd);border-radius:8px;padding:6px 14px;min-width:96px;background:var(--bg2)}
.card b{display:block;font-size:22px}.card.big b{font-size:34px;line-height:1.1}
.card span{color:var(--mu)}.card.f b{color:var(--f)}.card.e b{color:var(--e)}.card.u b{color:var(--u)}
.card.w b{color:#9a6700}.card.p b{color:#1a7f37}.card.zero b{color:var(--mu)}
.card.big.f:not(.zero){border-color:var(--f);background:#ffebe9}.card.big.e:not(.zero){border-color:var(--e);background:#fbefff}
.card.big.u:not(.zero){border-color:var(--u);background:#eaeef2}.card.exit b{font-size:22px}
.checks,.sline{margin:4px 0}.sline{font-weight:600}.t.f{color:var(--f)}.t.e{color:var(--e)}.t.w{color:#9a6700}
nav{position:sticky;top:0;z-index:2;background:var(--bg);padding:6px 0;border-bottom:1px solid var(--bd);margin-top:10px}
nav a{margin-right:14px;color:var(--o);text-decoration:none}
.legend span{margin-right:12px;white-space:nowrap;font-size:12px}.legend i{display:inline-block;width:11px;height:11px;
vertical-align:-1px;margin-right:4px}
#hmwrap{display:grid;grid-template-columns:minmax(0,1fr) minmax(380px,38%);gap:16px;align-items:start;margin-top:8px}
#hmwrap.lg{grid-template-columns:max-content minmax(0,1fr)}
@media (max-width:900px){#hmwrap{grid-template-columns:1fr}}
.blocks{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
table.hm{border-collapse:separate;border-spacing:1px;cursor:pointer}
.hm caption{font:11px ui-monospace,monospace;color:var(--mu);text-align:left;white-space:nowrap}
.hm thead th{font:10px system-ui,sans-serif;color:var(--mu);font-weight:normal;vertical-align:bottom;padding:0}
.hm thead th span{writing-mode:vertical-rl;transform:rotate(180deg);display:inline-block;padding-bottom:2px}
.hm tbody th{font-size:10px;font-weight:normal;text-align:left;padding:0 4px 0 0;white-space:nowrap;max-width:16ch;
overflow:hidden;text-overflow:ellipsis;line-height:11px}
.hm td{width:11px;height:11px;padding:0}
.lg table.hm{border-spacing:2px}.lg .hm td{width:18px;height:18px}.lg .hm tbody th{font-size:12px;line-height:18px}
.lg .hm thead th{font-size:11px}.lg .hm caption{font-size:12px}
.hm tbody tr:hover th{color:var(--o)}
td.p,i.p{background:var(--p)}td.w,i.w{background:var(--w)}td.f,i.f{background:var(--f)}td.e,i.e{background:var(--e)}
td.s,i.s{background:var(--s)}td.u,i.u{background:repeating-linear-gradient(45deg,var(--u) 0 2px,#8c959f 2px 4px)}
td.x,i.x{background:var(--x)}
.hm td.o,.legend i.o{box-shadow:inset 0 0 0 2px var(--o)}
.hm td.sel{outline:2px solid #000;outline-offset:0}
#only:checked~#hmwrap tr.p:not(.o){display:none}
#only:checked~#hmwrap table.hm:not(:has(tr.f,tr.w,tr.e,tr.u,tr.o)){display:none}
#detail{position:sticky;top:40px;max-height:calc(100vh - 50px);overflow:auto;border:1px solid var(--bd);
border-radius:8px;padding:10px 12px;background:var(--bg2)}
#detail h3{margin:0 0 6px}#detail h4{margin:10px 0 4px;font-size:13px}.hint{color:var(--mu);margin:0}
#detail .tbl{font-size:12px}#detail .tbl td:nth-child(2){font-family:ui-monospace,monospace;white-space:nowrap}#detail .tbl td:nth-child(3){white-space:nowrap}
.badge{display:inline-block;font:600 11px system-ui,sans-serif;padding:1px 6px;border-radius:4px;color:#fff;
margin-right:8px;background:var(--mu)}
.badge.f{background:var(--f)}.badge.e{background:var(--e)}.badge.u{background:var(--u)}.badge.w{background:#bf8700}
.badge.p{background:#1a7f37}.badge.s,.badge.x{background:#8c959f}
.grp{margin:6px 0 10px;padding-left:4px}.gh{display:flex;flex-wrap:wrap;gap:4px 10px;align-items:baseline}
.gh .hl{color:#0550ae;word-break:break-all}.one{margin:2px 0 0 12px}
table.det{border-collapse:collapse;margin:2px 0 0 12px}.det th{font:12px ui-monospace,monospace;color:#0550ae;
text-align:left;padding:1px 12px 1px 0;vertical-align:top;white-space:nowrap}.det td{padding:1px 0}
details{margin-left:12px}details>table.det{margin-left:0}summary{cursor:pointer;color:var(--o)}
table.tbl{border-collapse:collapse;width:100%;font-size:13px}
.tbl th,.tbl td{border-bottom:1px solid var(--bd);padding:3px 8px 3px 0;text-align:left;vertical-align:top}
.tbl th{color:var(--mu);font-weight:600}.tbl td.hl{color:#0550ae;word-break:break-all}.tbl.kv{width:auto}
.tbl tr.rf td{background:#ffebe9}.tbl tr.re td{background:#fbefff}.tbl tr.rw td{background:#fff8c5}
.figure{margin:10px 0 18px}.figure figcaption{font-size:13px}.outl{color:var(--f)}
svg.fig{width:100%;max-width:760px;height:auto;display:block}
.bar{fill:#8fb8de}.axis,.tick{stroke:#8c959f}.tl{font:10px system-ui,sans-serif;fill:var(--mu);text-anchor:middle}
.dot{fill:#0969da;fill-opacity:.55}.dot.out{fill:var(--f);fill-opacity:1;stroke:#fff}
.dot.fl{fill:#fff;fill-opacity:1;stroke:var(--f);stroke-width:1.5}
.med{stroke:#0969da;stroke-width:1.5}.ml{font:10px system-ui,sans-serif;fill:#0969da}
.thr{stroke:#1f2328;stroke-width:1.5;stroke-dasharray:4 3}.thl{font:10px system-ui,sans-serif;fill:var(--fg)}
pre{background:var(--bg);border:1px solid var(--bd);padding:6px;white-space:pre-wrap;word-break:break-all;font-size:12px}
.ok{color:#1a7f37;font-weight:600}
footer{margin-top:32px;color:var(--mu);font-size:12px}
@media print{nav,#only,label[for=only]{display:none}#detail{position:static;max-height:none}}
"""

_JS = """
(function () {
  "use strict";
  var blob = document.getElementById("ck-data"), hm = document.getElementById("hm"),
      panel = document.getElementById("detail");
  if (!blob || !hm || !panel) return;
  var D = JSON.parse(blob.textContent);
  var S = D.s, R = D.r, N = D.n, DOM = D.dom, ST = D.st, NS = D.ns, FF = D.ff, F = D.f;
  var RANK = {fail: 0, error: 1, warn: 2, pass: 3, skip: 4};
  var CLS = {pass: "p", warn: "w", fail: "f", error: "e", skip: "s", unreachable: "u"};
  var WORD = {p: "pass", w: "warn", f: "fail", e: "error", s: "skip", u: "unreachable", x: "no checks"};
  var sel = null;
  function str(i) { return i < 0 ? null : S[i]; }
  function mk(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== null && text !== undefined) e.textContent = String(text);
    return e;
  }
  function val(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number" && !Number.isInteger(v)) return String(Math.round(v * 100) / 100);
    return String(v);
  }
  function badge(word) { return mk("span", "badge " + (CLS[word] || "x"), word.toUpperCase()); }
  function table(head, rows, rowClass) {
    var t = mk("table", "tbl"), th = mk("thead"), tr = mk("tr"), tb = mk("tbody");
    head.forEach(function (h) { tr.appendChild(mk("th", null, h)); });
    th.appendChild(tr); t.appendChild(th);
    rows.forEach(function (r, i) {
      var row = mk("tr", rowClass ? rowClass[i] : null);
      r.forEach(function (c) {
        var td = mk("td");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        row.appendChild(td);
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function rowIds(n) {
    var q = N[n][8], out = [];
    for (var i = 0; i < q.length; i += 2) for (var j = 0; j < q[i + 1]; j++) out.push(q[i] + j);
    return out;
  }
  function cellWord(td) { return WORD[td.className.charAt(0)] || "?"; }
  function findings(n, d) {
    var out = [];
    FF.forEach(function (f) {
      if ((d < 0 || f[6] === d) && f[5].indexOf(n) >= 0) out.push(f);
    });
    return out;
  }
  function findingTable(list) {
    return table(["status", "check", "value", "expected", "message"], list.map(function (f) {
      return [badge(ST[f[1]]), f[0], val(f[2]), val(f[3]), f[4]];
    }));
  }
  function show(n, d, td) {
    if (sel) sel.classList.remove("sel");
    sel = td; td.classList.add("sel");
    var node = N[n], word = cellWord(td);
    panel.textContent = "";
    var h = mk("h3");
    h.appendChild(badge(word));
    h.appendChild(document.createTextNode(node[0] + " \\u00b7 " + DOM[d]));
    panel.appendChild(h);
    var p = mk("p", "muted", "node status " + NS[node[1]] +
      (node[6] !== null ? " \\u00b7 " + val(node[6]) + " s" : ""));
    panel.appendChild(p);
    if (node[2] !== null) {
      panel.appendChild(mk("p", null, (node[3] ? node[3] + ": " : "") + node[2]));
    }
    if (d === 0) {
      if (node[4] !== null) panel.appendChild(mk("p", "muted", "cause: " + node[4]));
      if (node[5] !== null) { panel.appendChild(mk("h4", null, "output (end)")); panel.appendChild(mk("pre", null, node[5])); }
      var facts = F[node[7]], keys = Object.keys(facts);
      if (keys.length) {
        panel.appendChild(mk("h4", null, "facts"));
        panel.appendChild(table(["fact", "value"], keys.map(function (k) {
          var v = facts[k];
          return [k, (v !== null && typeof v === "object") ? JSON.stringify(v) : val(v)];
        })));
      }
      var all = findings(n, -1);
      if (all.length) { panel.appendChild(mk("h4", null, "fleet findings")); panel.appendChild(findingTable(all)); }
    } else if (NS[node[1]] === "unreachable") {
      panel.appendChild(mk("p", null, "Nothing ran on this node."));
      return;
    }
    var ids = rowIds(n).filter(function (i) { return R[i][0] === d; });
    if (d === 0 && !ids.length) return;  // checks of a "node" domain, should there be any
    ids = ids.map(function (i, k) { return [i, k]; }).sort(function (a, b) {
      return (RANK[ST[R[a[0]][3]]] - RANK[ST[R[b[0]][3]]]) || (a[1] - b[1]);
    });
    var counts = {};
    ids.forEach(function (x) { var s = ST[R[x[0]][3]]; counts[s] = (counts[s] || 0) + 1; });
    panel.appendChild(mk("p", "muted", ids.length + " result" + (ids.length === 1 ? "" : "s") + ": " +
      Object.keys(counts).map(function (k) { return counts[k] + " " + k; }).join(", ")));
    if (ids.length) {
      var rc = ids.map(function (x) { var s = ST[R[x[0]][3]]; return s === "pass" || s === "skip" ? null : "r" + CLS[s]; });
      panel.appendChild(table(["status", "check", "subject", "value", "threshold", "unit", "message"],
        ids.map(function (x) {
          var r = R[x[0]];
          return [badge(ST[r[3]]), str(r[1]), str(r[2]) || "", val(r[4]), val(r[5]), str(r[6]) || "", str(r[7])];
        }), rc));
    }
    var mine = d === 0 ? [] : findings(n, d);
    if (mine.length) { panel.appendChild(mk("h4", null, "fleet findings")); panel.appendChild(findingTable(mine)); }
  }
  function target(e) {
    var td = e.target && e.target.closest ? e.target.closest("td") : null;
    if (!td || !hm.contains(td)) return null;
    var n = td.parentNode.getAttribute("data-n");
    return n === null ? null : [+n, td.cellIndex - 1, td];
  }
  hm.addEventListener("click", function (e) {
    var t = target(e);
    if (t) show(t[0], t[1], t[2]);
  });
  hm.addEventListener("mouseover", function (e) {
    var t = target(e);
    if (t && !t[2].title) t[2].title = N[t[0]][0] + " \\u00b7 " + DOM[t[1]] + ": " + cellWord(t[2]);
  });
  var first = hm.querySelector("td.f") || hm.querySelector("td.e") || hm.querySelector("td.u") ||
      hm.querySelector("td.w");
  if (first) {
    var n0 = first.parentNode.getAttribute("data-n");
    show(+n0, first.cellIndex - 1, first);
  }
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_html(report: FleetReport) -> str:
    """``report`` as one self-contained HTML page (see the module docstring). Pure: the same
    report always gives the same text."""
    from clusterkit.report.terminal import effective_summary

    summary, nodes = effective_summary(report)
    model = _Model(report, nodes)
    csp = (f"default-src 'none'; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    title = " · ".join(x for x in ("clusterkit report", _printable(report.source),
                                   _s(summary.nodes, "node"), f"exit {summary.exit_code}") if x)
    sections = [
        ("heatmap", "Heatmap", _heatmap(model)),
        ("problems", "Problems", _problems(report, nodes)),
        ("figures", "Distributions", _figures(report, nodes)),
        ("localization", "Localization", _localization(report)),
        ("fleet", "Fleet findings", _fleet(report)),
        ("skipped", "Skipped nodes", _skipped(report)),
        ("actions", "Slurm actions", _actions(report)),
    ]
    present = [(i, t, body) for i, t, body in sections if body]
    footer = (f"<footer>{_h(report.schema_)} · written by clusterkit "
              f"{_h(report.clusterkit_version or '')} · self-contained: no network, no scripts "
              "but the one below</footer>")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        _summary(report, summary),
        _nav([(i, t) for i, t, _ in present]),
        "<main>", *(body for _, _, body in present), "</main>", footer,
        f'<script type="application/json" id="ck-data">{_script_json(model.blob)}</script>',
        f"<script>{_JS}</script></body></html>\n",
    ])
