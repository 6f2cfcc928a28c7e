"""HTML sink: one self-contained page from a FleetReport (the browser tests open it for real:
tests/integration/test_report_html_browser.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from html.parser import HTMLParser
from typing import Any, Optional

import pytest

from clusterkit.models import (
    CheckResult,
    FleetFinding,
    FleetReport,
    NodeReport,
    NodeStatus,
    SkippedNode,
    SlurmAction,
    Status,
)
from clusterkit.report import render, write_report
from clusterkit.report.html import BLOCK, render_html
from tests.infra.reports import scaled_report, sim_report

C = CheckResult
HOSTILE_NODE = 'gpu-<script>alert("n")</script>'
HOSTILE_MESSAGE = "</script><!--<script>window.pwned=1</script>--> & \"quotes\" 'single' \x1b[31m"


class Page(HTMLParser):
    """What the tests look at: heatmap rows (node -> cell classes, rings), sections, scripts,
    styles, block captions and every URL an attribute holds."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, list[str]] = {}  # node -> first class of each cell
        self.marked: dict[str, list[int]] = {}  # node -> columns ringed for a fleet finding
        self.row_class: dict[str, str] = {}
        self.sections: list[str] = []
        self.scripts: list[tuple[dict[str, Optional[str]], str]] = []
        self.styles: list[str] = []
        self.captions: list[str] = []
        self.urls: list[str] = []
        self._row: Optional[dict[str, Any]] = None
        self._naming = False
        self._capture: Optional[str] = None
        self._attrs: dict[str, Optional[str]] = {}
        self._buf: list[str] = []
        self.feed(text)
        self.close()
        self._end_row()

    def _end_row(self) -> None:
        if self._row is not None:
            name = "".join(self._row["name"])
            self.rows[name] = self._row["cells"]
            self.marked[name] = self._row["marks"]
            self.row_class[name] = self._row["cls"]
        self._row, self._naming = None, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        for k in ("src", "href", "action", "formaction", "srcset", "poster", "data", "xlink:href"):
            if a.get(k) is not None:
                self.urls.append(str(a[k]))
        if tag == "section":
            self.sections.append(str(a.get("id")))
        if tag in ("tr", "tbody", "thead", "table"):
            self._end_row()  # rows and cells have no end tags in the heatmap
        if tag == "tr" and a.get("data-n") is not None:
            self._row = {"name": [], "cells": [], "marks": [], "cls": a.get("class") or ""}
        elif tag == "th" and self._row is not None and not self._row["cells"]:
            self._naming = True
        elif tag == "td" and self._row is not None:
            self._naming = False
            classes = (a.get("class") or "").split()
            self._row["cells"].append(classes[0] if classes else "")
            if "o" in classes:
                self._row["marks"].append(len(self._row["cells"]) - 1)
        if tag in ("script", "style", "caption"):
            self._capture, self._attrs, self._buf = tag, a, []

    def handle_data(self, data: str) -> None:
        if self._naming and self._row is not None:
            self._row["name"].append(data)
        if self._capture:
            self._buf.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._capture:
            text = "".join(self._buf)
            if tag == "script":
                self.scripts.append((self._attrs, text))
            elif tag == "style":
                self.styles.append(text)
            else:
                self.captions.append(text)
            self._capture = None
        if tag in ("tbody", "table"):
            self._end_row()


def columns(text: str) -> list[str]:
    head = re.search(r"<thead><tr><th></th>(.*?)</tr></thead>", text)
    assert head
    return [m for m in re.findall(r"<span>([^<]*)</span>", head.group(1))]


def blob(text: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="ck-data">(.*?)</script>', text, re.S)
    assert m, "no data blob"

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(m.group(1), parse_constant=no_constants)


def node_rows(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The detail panel's rows of one node, decoded the way the page's script decodes them."""
    n = next(x for x in data["n"] if x[0] == name)
    ids = [start + k for start, count in zip(n[8][::2], n[8][1::2]) for k in range(count)]
    s = data["s"]
    out = []
    for i in ids:
        r = data["r"][i]
        out.append({"domain": data["dom"][r[0]], "check": s[r[1]], "subject": None if r[2] < 0 else s[r[2]],
                    "status": data["st"][r[3]], "value": r[4], "threshold": r[5],
                    "unit": None if r[6] < 0 else s[r[6]], "message": s[r[7]]})
    return out


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# ------------------------------------------------------------------------------ reports
def _node(name: str, *checks: CheckResult, status: Optional[NodeStatus] = None, **kw: Any) -> NodeReport:
    return NodeReport(node=name, status=status or NodeReport.status_of(list(checks), kw.get("error")),
                      checks=list(checks), facts={"profile": "h100-sxm", "driver_version": "565.57.01"}, **kw)


def small_report() -> FleetReport:
    """Every kind of problem on a handful of nodes, a hostile node name and hostile messages."""
    ok = [C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
          C(check="ib.port.rate", subject="mlx5_0/1", status=Status.PASS, value=400.0, threshold=400.0, unit="Gb/s",
            message="400 Gb/sec (4X NDR)")]
    nodes = [
        _node("n01", *ok),
        _node("n02", *ok, C(check="gpu.ecc.uncorrectable", subject="gpu5", status=Status.FAIL, value=2, threshold=0,
                            unit="errors", message="gpu5: 2 volatile uncorrectable ECC errors")),
        _node("n03", *ok, C(check="gpu.ecc.uncorrectable", subject="gpu1", status=Status.FAIL, value=1, threshold=0,
                            unit="errors", message="1 volatile uncorrectable ECC errors")),
        _node("n04", *ok, C(check="nccl.allreduce.busbw", status=Status.ERROR, message="nccl-tests not found")),
        _node("n05", status=NodeStatus.UNREACHABLE, error="n05: connection refused", error_kind="unreachable",
              cause="connection refused"),
        _node("n06", status=NodeStatus.UNREACHABLE, error="n06: connection refused", error_kind="unreachable",
              cause="connection refused"),
        _node("n07", *ok, C(check="gpu.temperature", subject="gpu4", status=Status.WARN, value=86.0, threshold=83.0,
                            unit="C", message=HOSTILE_MESSAGE)),
        _node(HOSTILE_NODE, *ok, C(check="system.load", status=Status.PASS, value=float("nan"), threshold=float("inf"),
                                   message="odd \ud800 surrogate and NUL \x00")),
        _node("n09", *ok, error="node-check reached its deadline before every probe finished",
              error_kind="deadline", output_tail="line one\nline <two>\n"),
    ]
    report = FleetReport(source="nodes:n[01-09]", profile="h100-sxm", duration_s=12.3, nodes=nodes,
                         clusterkit_version="0.1.0", created="2025-03-04T05:06:07+00:00")
    report.fleet = [FleetFinding(check="fleet.drift.driver_version", status=Status.WARN, nodes=["n07"],
                                 value="535.104.05", expected="565.57.01",
                                 message="driver_version differs: <b>535</b> on n07")]
    report.skipped = [SkippedNode(node="n10", state="down*", reason="Not responding", why="down")]
    report.actions = [SlurmAction(node="n02", action="drain", outcome="dry-run", state_before="idle",
                                  state_after="idle+drain", reason_after="clusterkit: gpu.ecc.uncorrectable: gpu5")]
    return report.finalize()


@pytest.fixture(scope="module")
def sim() -> FleetReport:
    return sim_report()


@pytest.fixture(scope="module")
def big(sim: FleetReport) -> FleetReport:
    return scaled_report(sim, 1024)


# ------------------------------------------------------------------------------ the sim fleet
def test_sim_fleet_fail_cells_are_exactly_the_two_faulty_nodes(sim):
    text = render_html(sim)
    page = Page(text)
    assert columns(text) == ["node", "gpu", "system", "nvlink", "topo", "ib", "storage", "xid"]
    assert sorted(page.rows) == [f"gpu-{i:03d}" for i in range(1, 9)]
    failing = sorted(n for n, cells in page.rows.items() if "f" in cells)
    assert failing == ["gpu-003", "gpu-006"]
    gpu = columns(text).index("gpu")
    assert page.rows["gpu-003"][gpu] == "f" and page.rows["gpu-006"][gpu] == "f"
    assert page.rows["gpu-003"].count("f") == 1 and page.rows["gpu-006"].count("f") == 1
    assert page.rows["gpu-001"] == ["p"] * len(columns(text))
    assert page.row_class["gpu-003"].split()[0] == "f" and page.row_class["gpu-001"].split()[0] == "p"
    assert page.captions == ["gpu-[001-008]"]
    # what a click on gpu-003's gpu cell shows
    rows = node_rows(blob(text), "gpu-003")
    fails = [r for r in rows if r["status"] == "fail"]
    assert [(r["domain"], r["check"], r["subject"]) for r in fails] == [("gpu", "gpu.ecc.uncorrectable", "gpu5")]
    assert len(rows) == len(sim.nodes[2].checks)
    pcie = [r for r in node_rows(blob(text), "gpu-006") if r["status"] == "fail"]
    assert [(r["check"], r["subject"]) for r in pcie] == [("gpu.pcie.width", "gpu2")]


def test_sim_fleet_summary_and_problems(sim):
    text = render_html(sim)
    assert "<title>clusterkit report · sim:builtin · 8 nodes · exit 1</title>" in text
    assert '<div class="card f big"><b>2</b><span>failed</span></div>' in text
    assert '<b>exit 1</b><span>a node or the fleet failed</span>' in text
    assert "<dt>source</dt><dd>sim:builtin</dd>" in text and "<dt>profile</dt><dd>h100-sxm</dd>" in text
    problems = text[text.index('<section id="problems">'):text.index("</section>", text.index('id="problems"'))]
    assert ('<span class="badge f">FAIL</span><code>gpu.ecc.uncorrectable</code><span class="hl">gpu-003</span>'
            in problems)
    assert '<code>gpu.pcie.width</code><span class="hl">gpu-006</span>' in problems
    assert problems.index("Failures") < problems.index("Warnings")
    assert "8 nodes: 6 pass, 0 warn, 2 fail, 0 error, 0 unreachable — exit 1" in text
    # no figures without --ib-bw/--stress/...; no fleet findings, skips or actions in the sim run
    assert Page(text).sections == ["heatmap", "problems"]


# ------------------------------------------------------------------------------ self-contained
def test_page_is_self_contained_and_its_csp_names_exactly_its_blocks(sim):
    text = render_html(sim)
    page = Page(text)
    assert page.urls and all(u.startswith("#") or u == "data:," for u in page.urls)
    lowered = text.lower()
    for needle in ("http://", "https://", "//cdn", "@import", "url(", "<link rel=\"stylesheet", "<iframe",
                   "<img", "fetch(", "xmlhttprequest", "websocket", "eval("):
        assert needle not in lowered, needle
    assert len(page.styles) == 1
    code = [body for attrs, body in page.scripts if attrs.get("type") is None]
    data = [body for attrs, body in page.scripts if attrs.get("type") == "application/json"]
    assert len(code) == 1 and len(data) == 1
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert csp
    policy = csp.group(1)
    assert "default-src 'none'" in policy
    assert f"style-src {csp_hash(page.styles[0])};" in policy
    assert f"script-src {csp_hash(code[0])};" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_render_is_pure_and_write_report_writes_html_atomically(sim, tmp_path):
    text = render_html(sim)
    assert render_html(sim) == text
    assert render(sim, "html") == text
    path = tmp_path / "report.html"
    assert write_report(sim, "html", str(path)) == text
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert text.startswith("<!DOCTYPE html>") and text.endswith("</html>\n")


# ------------------------------------------------------------------------------ escaping
def test_hostile_names_and_messages_are_escaped_everywhere():
    report = small_report()
    text = render_html(report)
    text.encode("utf-8")  # no lone surrogate got through
    # exactly the page's own two scripts, and nothing ends them early
    assert text.count("<script") == 2
    assert text.count("</script>") == 2
    assert "<!--" not in text
    assert "<script>window.pwned" not in text and "\\u003cscript\\u003ewindow.pwned" in text  # JSON: \u003c
    assert '<script>alert("n")' not in text
    assert "gpu-&lt;script&gt;alert(&quot;n&quot;)&lt;/script&gt;" in text
    assert "&lt;/script&gt;&lt;!--&lt;script&gt;window.pwned=1&lt;/script&gt;--&gt; &amp; &quot;quotes&quot; " \
           "&#x27;single&#x27; \\x1b[31m" in text
    assert "<b>535</b>" not in text and "&lt;b&gt;535&lt;/b&gt;" in text
    data = blob(text)
    names = [n[0] for n in data["n"]]
    assert HOSTILE_NODE in names
    assert any(m == HOSTILE_MESSAGE.replace("\x1b", "\\x1b") for m in data["s"])
    odd = next(r for r in node_rows(data, HOSTILE_NODE) if r["check"] == "system.load")
    assert odd["value"] == "nan" and odd["threshold"] == "inf"
    assert odd["message"] == "odd \\ud800 surrogate and NUL \\x00"
    assert data["n"][names.index("n09")][5] == "line one\nline <two>\n"  # line breaks kept in output


def test_every_section_of_a_report_with_everything():
    report = small_report()
    text = render_html(report)
    page = Page(text)
    assert page.sections == ["heatmap", "problems", "fleet", "skipped", "actions"]
    assert columns(text) == ["node", "gpu", "system", "ib", "nccl"]  # the registry's order, then others
    rows = page.rows
    assert rows["n02"] == ["p", "f", "x", "p", "x"]
    assert rows["n04"] == ["p", "p", "x", "p", "e"]  # nccl: any other domain prefix gets a column
    assert rows["n05"] == ["u"] * 5 and rows["n06"] == ["u"] * 5
    assert rows["n07"] == ["p", "w", "x", "p", "x"]
    assert rows[HOSTILE_NODE] == ["p", "p", "p", "p", "x"]
    assert rows["n09"][0] == "e"  # not everything ran: the node column
    assert page.marked["n07"] == [1]  # driver drift rings the gpu cell
    problems = text[text.index('<section id="problems">'):text.index('<section id="fleet">')]
    assert '<code>gpu.ecc.uncorrectable</code><span class="hl">n[02-03]</span>' in problems
    assert '<span class="badge u">UNREACHABLE</span><span class="hl">n[05-06]</span><span>(connection refused)' \
           in problems
    assert "<code>node.run</code>" in problems and "<code>nccl.allreduce.busbw</code>" in problems
    order = [problems.index(w) for w in ("Failures", "Errors", "Unreachable", "Warnings")]
    assert order == sorted(order)
    assert "<code>fleet.drift.driver_version</code>" in problems  # fleet warnings among the warnings
    assert "Not responding" in text and "idle → idle+drain" in text
    assert "localization" not in page.sections


class _WithLocalization(FleetReport):
    localization: list[dict[str, Any]] = []


def test_localization_rounds_render_as_a_generic_table():
    base = small_report()
    report = _WithLocalization.model_validate(base.model_dump(by_alias=True))
    report.localization = [
        {"round": 1, "groups": ["n[01-04]", "n[07-09]"], "busbw": 312.5, "verdict": "<slow> half"},
        {"round": 2, "groups": ["n01", "n02"], "busbw": 98.1, "verdict": "n02", "extra": {"k": [1, 2]}},
    ]
    text = render_html(report)
    page = Page(text)
    assert page.sections == ["heatmap", "problems", "localization", "fleet", "skipped", "actions"]
    loc = text[text.index('<section id="localization">'):text.index('<section id="fleet">')]
    assert ("<thead><tr><th>round</th><th>groups</th><th>busbw</th><th>verdict</th><th>extra</th></tr></thead>"
            in loc)
    assert "<td>n[01-04], n[07-09]</td>" in loc and "&lt;slow&gt; half" in loc
    assert "<code>{&quot;k&quot;: [1, 2]}</code>" in loc


def test_an_empty_or_unfinalized_report_still_renders():
    text = render_html(FleetReport())
    assert "No failures, errors, unreachable nodes or warnings." in text
    assert Page(text).rows == {}
    raw = FleetReport(nodes=[_node("b", C(check="gpu.count", status=Status.FAIL, value=7, threshold=8))])
    assert raw.summary.nodes == 0  # never finalized: the page counts the nodes itself
    assert '<div class="card f big"><b>1</b><span>failed</span></div>' in render_html(raw)


# ------------------------------------------------------------------------------ figures
def test_figures_come_from_the_registry_with_threshold_median_and_outliers(big):
    text = render_html(big)
    figs = text[text.index('<section id="figures">'):text.index("</section>", text.index('<section id="figures">'))]
    keys = re.findall(r'<figcaption><code>([^<]+)</code>', figs)
    assert keys == ["ib.write_bw", "storage.weights[/mnt/weights]", "stress.gemm", "stress.hbm"]
    assert figs.count("<svg") == 4 and figs.count('class="thr"') == 3  # hbm's threshold is off scale
    assert "threshold 2400 GB/s (off scale)" in figs
    assert figs.count('class="med"') == 4
    assert "outliers: gpu-0101" in figs and "outliers: gpu-0517" in figs and "outliers: gpu-0890" in figs
    ib = figs[:figs.index("storage.weights")]
    assert re.search(r'class="dot out"[^>]*><title>gpu-0101 mlx5_3/1: 301.5 Gb/s \(outlier\)</title>', ib)
    assert ib.count('class="dot out"') == 1 and ib.count('class="dot fl"') == 7  # its other rails
    assert ib.count('class="dot"') == 0  # 8,160 values: the histogram holds the rest
    page = Page(text)
    ib_col = columns(text).index("ib")
    assert page.marked["gpu-0101"] == [ib_col] and page.rows["gpu-0101"][ib_col] == "f"


# ------------------------------------------------------------------------------ 1,024 nodes
def test_1024_nodes_size_and_render_time(big, record_property, capsys):
    started = time.perf_counter()
    text = render_html(big)
    elapsed = time.perf_counter() - started
    size = len(text.encode("utf-8"))
    record_property("render_s", round(elapsed, 3))
    record_property("html_bytes", size)
    with capsys.disabled():
        print(f"\n1,024-node HTML report: {size / 1024:.0f} KiB, rendered in {elapsed:.2f} s "
              f"(JSON report: {len(big.to_json(indent=None)) / 2**20:.1f} MiB)")
    assert size < 3 * 2**20  # measured: ~0.9 MiB
    page = Page(text)
    assert len(page.rows) == 1024
    assert len(page.captions) == 1024 // BLOCK and page.captions[0] == "gpu-[0001-0032]"
    assert sorted(n for n, c in page.rows.items() if "f" in c) == ["gpu-0003", "gpu-0006", "gpu-0101"]
    assert sorted(n for n, c in page.rows.items() if c[0] == "u") == ["gpu-0333", "gpu-0334", "gpu-0335",
                                                                       "gpu-0777"]
    assert sorted(n for n, c in page.rows.items() if "e" in c) == ["gpu-0640"]
    assert sorted(n for n, m in page.marked.items() if m) == ["gpu-0101", "gpu-0200", "gpu-0201", "gpu-0202",
                                                             "gpu-0517", "gpu-0890"]
    data = blob(text)
    assert len(data["n"]) == 1024
    assert sum(len(n.checks) for n in big.nodes) > 200_000 and len(data["r"]) < 50_000  # rows deduplicated
    row = next(r for r in node_rows(data, "gpu-0101") if r["status"] == "fail")
    assert (row["check"], row["subject"], row["value"]) == ("ib.write_bw", "mlx5_3/1", 301.5)
    assert '<section id="problems">' in text and '<span class="hl">gpu-[0333-0335]</span>' in text
