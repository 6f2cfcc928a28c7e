"""Report sinks: terminal text, JUnit XML and the JSON document, from hand-built FleetReports."""

from __future__ import annotations

import os
import io
import re
import threading
import xml.etree.ElementTree as ET

import pytest

from clusterkit import hostlist
from clusterkit.errors import UsageError
from clusterkit.models import (
    REPORT_SCHEMA,
    CheckResult,
    FleetFinding,
    FleetReport,
    NodeReport,
    NodeStatus,
    Status,
)
from clusterkit.report import FORMATS, render, write_report
from clusterkit.report.junit import render_junit, xml_safe
from clusterkit.report.terminal import ProgressReporter, clean, render_terminal

C = CheckResult
ANSI = re.compile(r"\x1b\[")


def _passing(name: str) -> NodeReport:
    return NodeReport(
        node=name,
        status=NodeStatus.PASS,
        checks=[
            C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
            C(check="gpu.ecc.uncorrectable", subject="gpu0", status=Status.PASS, value=0,
              threshold=0),
            C(check="ib.port.rate", subject="mlx5_0/1", status=Status.PASS, value=400,
              threshold=400, unit="Gb/s"),
        ],
        facts={"driver": "550.54.15"},
        duration_s=4.5,
    )


def build_report() -> FleetReport:
    """8 nodes: 001, 002, 008 pass; 003 and 004 fail the same check (004 also fails NVLink);
    005 has a check that could not run; 006 is unreachable; 007 warns and skips IB.
    Plus one fleet finding (driver drift on 007)."""
    nodes = [
        _passing("gpu-001"),
        _passing("gpu-002"),
        NodeReport(
            node="gpu-003",
            status=NodeStatus.FAIL,
            checks=[
                C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
                C(check="gpu.ecc.uncorrectable", subject="gpu5", status=Status.FAIL, value=2,
                  threshold=0, unit="errors",
                  message="gpu5: 2 volatile uncorrectable ECC errors"),
            ],
        ),
        NodeReport(
            node="gpu-004",
            status=NodeStatus.FAIL,
            checks=[
                C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
                C(check="gpu.ecc.uncorrectable", subject="gpu1", status=Status.FAIL, value=1,
                  threshold=0, message="1 volatile uncorrectable ECC errors"),
                C(check="nvlink.links_active", subject="gpu2", status=Status.FAIL, value=17,
                  threshold=18, message="17 of 18 links active"),
            ],
        ),
        NodeReport(
            node="gpu-005",
            status=NodeStatus.ERROR,
            checks=[
                C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
                C(check="dcgm.diag", status=Status.ERROR, message="dcgmi: command not found"),
            ],
        ),
        NodeReport(node="gpu-006", status=NodeStatus.UNREACHABLE,
                   error="gpu-006: connection refused"),
        NodeReport(
            node="gpu-007",
            status=NodeStatus.WARN,
            checks=[
                C(check="gpu.count", status=Status.PASS, value=8, threshold=8),
                C(check="gpu.temperature", subject="gpu4", status=Status.WARN, value=86,
                  threshold=83, unit="C", message="gpu4: 86 C above 83 C"),
                C(check="ib.port.rate", status=Status.SKIP, message="no InfiniBand on this SKU"),
            ],
            facts={"driver": "535.104.05"},
        ),
        _passing("gpu-008"),
    ]
    fleet = [
        FleetFinding(check="fleet.drift.driver", status=Status.WARN, nodes=["gpu-007"],
                     value="535.104.05", expected="550.54.15",
                     message="driver 535.104.05 differs from the fleet's 550.54.15"),
    ]
    return FleetReport(
        clusterkit_version="0.1.0",
        created="2025-03-04T05:06:07+00:00",
        source="nodes:gpu-[001-008]",
        profile="h100-sxm",
        duration_s=42.25,
        nodes=nodes,
        fleet=fleet,
    ).finalize()


def lines_of(text: str) -> list[str]:
    return text.splitlines()


# --------------------------------------------------------------------------- terminal


def test_terminal_groups_one_check_over_two_nodes_on_one_line():
    text = render_terminal(build_report(), color=False)
    lines = lines_of(text)
    ecc = [ln for ln in lines if "gpu.ecc.uncorrectable" in ln]
    assert len(ecc) == 1
    assert ecc[0].startswith("FAIL ")
    assert ecc[0].endswith("gpu.ecc.uncorrectable  gpu-[003-004]")
    i = lines.index(ecc[0])
    # per-node details beneath, in node order, subject not repeated when the message has it
    assert lines[i + 1].split() == ["gpu-003", "gpu5:", "2", "volatile", "uncorrectable", "ECC",
                                    "errors"]
    assert lines[i + 2].split()[:3] == ["gpu-004", "gpu1:", "1"]


def test_terminal_single_node_failure_is_one_line_with_detail():
    text = render_terminal(build_report(), color=False)
    assert "FAIL   nvlink.links_active  gpu-004 (gpu2: 17 of 18 links active)" in lines_of(text)
    assert "ERROR  dcgm.diag  gpu-005 (dcgmi: command not found)" in lines_of(text)


def test_terminal_sections_order_and_summary():
    report = build_report()
    lines = lines_of(render_terminal(report, color=False))
    assert lines[0] == ("clusterkit report · source nodes:gpu-[001-008] · profile h100-sxm · "
                        "8 nodes · 42.2 s · 2025-03-04T05:06:07+00:00")
    assert lines[-1] == "8 nodes: 3 pass, 1 warn, 2 fail, 1 error, 1 unreachable — exit 1"
    # 3 passing nodes × 3 checks + 4 more passes of gpu.count; 3 fail; 1 error; 1 warn; 1 skip
    assert lines[-2] == "19 check results: 13 pass, 1 warn, 3 fail, 1 error, 1 skip"
    first = {word: next(i for i, ln in enumerate(lines) if ln.startswith(word))
             for word in ("FAIL", "ERROR", "UNREACHABLE", "WARN")}
    assert first["FAIL"] < first["ERROR"] < first["UNREACHABLE"] < first["WARN"]
    assert "UNREACHABLE gpu-006 (connection refused)" in lines
    # passing and skipped checks are not listed without verbose
    assert not any("gpu.count" in ln or "SKIP" in ln for ln in lines)


def test_terminal_fleet_drift_names_nodes():
    lines = lines_of(render_terminal(build_report(), color=False))
    drift = [ln for ln in lines if "fleet.drift.driver" in ln]
    assert drift == ["WARN   fleet.drift.driver  gpu-007 "
                     "(fleet: driver 535.104.05 differs from the fleet's 550.54.15)"]
    assert "WARN   gpu.temperature  gpu-007 (gpu4: 86 C above 83 C)" in lines


def test_terminal_unreachable_grouped_by_reason():
    report = FleetReport(nodes=[
        NodeReport(node="gpu-006", status=NodeStatus.UNREACHABLE,
                   error="gpu-006: connection refused"),
        NodeReport(node="gpu-008", status=NodeStatus.UNREACHABLE,
                   error="gpu-008: connection refused"),
        NodeReport(node="gpu-011", status=NodeStatus.UNREACHABLE,
                   error="host key for gpu-011 changed"),
        _passing("gpu-001"),
    ]).finalize()
    lines = lines_of(render_terminal(report, color=False))
    unreach = [ln for ln in lines if ln.startswith("UNREACHABLE")]
    assert unreach == [
        f"UNREACHABLE {hostlist.fold(['gpu-006', 'gpu-008'])} (connection refused)",
        "UNREACHABLE gpu-011 (host key for <node> changed)",
    ]
    assert lines[-1] == "4 nodes: 1 pass, 0 warn, 0 fail, 0 error, 3 unreachable — exit 3"


def test_terminal_caps_details_per_check():
    names = [f"gpu-{i:03d}" for i in range(1, 16)]
    report = FleetReport(nodes=[
        NodeReport(node=n, status=NodeStatus.FAIL,
                   checks=[C(check="nvlink.links_active", subject="gpu0", status=Status.FAIL,
                             value=17, threshold=18)])
        for n in names
    ]).finalize()
    lines = lines_of(render_terminal(report, color=False))
    head = [ln for ln in lines if ln.startswith("FAIL")]
    assert head == ["FAIL   nvlink.links_active  gpu-[001-015]"]
    i = lines.index(head[0])
    details = lines[i + 1:i + 11]
    assert [d.split()[0] for d in details] == names[:10]
    assert details[0].split(None, 1)[1] == "gpu0: value 17 (threshold 18)"
    assert lines[i + 11].strip() == "… and 5 more"
    assert lines[-1] == "15 nodes: 0 pass, 0 warn, 15 fail, 0 error, 0 unreachable — exit 1"


def test_terminal_plain_text_and_control_characters():
    report = FleetReport(nodes=[
        NodeReport(node="gpu-001", status=NodeStatus.FAIL, checks=[
            C(check="gpu.xid", subject="gpu3", status=Status.FAIL,
              message="Xid 79\x1b[2J\x00 fallen off\nthe bus\x07")]),
    ]).finalize()
    text = render_terminal(report, color=False)
    assert not ANSI.search(text)
    assert "\x00" not in text and "\x07" not in text and "\x1b" not in text
    assert "FAIL   gpu.xid  gpu-001 (gpu3: Xid 79\\x1b[2J\\x00 fallen off the bus\\x07)" in text
    colored = render_terminal(report, color=True)
    assert ANSI.search(colored)
    # the only escapes are rich's own styles: the node's ESC stays escaped
    assert "\x1b[2J" not in colored


def test_terminal_verbose_lists_every_node_and_check():
    report = build_report()
    text = render_terminal(report, color=False, verbose=True, width=160)
    lines = lines_of(text)
    start = lines.index("Nodes")
    node_lines = [ln.split()[:2] for ln in lines[start:] if re.match(r"^[A-Z]+ +gpu-\d{3}\b", ln)]
    assert node_lines == [
        ["PASS", "gpu-001"], ["PASS", "gpu-002"], ["FAIL", "gpu-003"], ["FAIL", "gpu-004"],
        ["ERROR", "gpu-005"], ["UNREACHABLE", "gpu-006"], ["WARN", "gpu-007"],
        ["PASS", "gpu-008"],
    ]
    rate_rows = [ln.split() for ln in lines if ln.split()[:2] == ["pass", "ib.port.rate"]]
    assert len(rate_rows) == 3
    assert rate_rows[0] == ["pass", "ib.port.rate", "mlx5_0/1", "400", "Gb/s", "400", "Gb/s"]
    assert "SKIP   ib.port.rate  gpu-007 (no InfiniBand on this SKU)" in lines[:start]
    assert "UNREACHABLE gpu-006  gpu-006: connection refused" in lines[start:]
    assert lines[-1] == "8 nodes: 3 pass, 1 warn, 2 fail, 1 error, 1 unreachable — exit 1"


def test_terminal_summarises_unfinalized_report_without_changing_it():
    report = FleetReport(nodes=[_passing("gpu-010"), _passing("gpu-002")])
    assert report.summary.nodes == 0
    text = render_terminal(report, color=False)
    assert lines_of(text)[-1] == "2 nodes: 2 pass, 0 warn, 0 fail, 0 error, 0 unreachable — exit 0"
    assert report.summary.nodes == 0
    assert [n.node for n in report.nodes] == ["gpu-010", "gpu-002"]


def test_clean_escapes_controls_keeps_text():
    assert clean("a\tb\r\nc") == "a b c"
    assert clean("x\x1b[31my\x9b") == "x\\x1b[31my\\x9b"
    assert clean(None) == ""
    assert clean("gpu-[001-004] ü") == "gpu-[001-004] ü"


# --------------------------------------------------------------------------- progress


def test_progress_disabled_does_nothing():
    p = ProgressReporter(5, enabled=False)
    p.advance("gpu-001", NodeStatus.FAIL)
    p.close()
    p.close()
    assert p.done == 1 and p.failed == 1


def test_progress_enabled_is_thread_safe():
    out = io.StringIO()
    total = 8 * 25
    with ProgressReporter(total, enabled=True, file=out) as p:

        def work(t: int) -> None:
            for i in range(25):
                p.advance(f"gpu-{t}-{i}", NodeStatus.FAIL if i % 5 == 0 else "pass")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert p.done == total
    assert p.failed == 8 * 5
    assert p.counts == {"fail": 40, "pass": 160}
    p.advance("late", "pass")  # after close: ignored
    assert p.done == total


# --------------------------------------------------------------------------- junit


def parse_junit(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(xml.encode("utf-8"))


def cases_of(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    suite = root.find("testsuite")
    out = {}
    for tc in suite.findall("testcase"):
        key = (tc.get("classname"), tc.get("name"))
        assert key not in out, f"duplicate testcase {key}"
        out[key] = tc
    return out


def test_junit_counts_match_built_report():
    root = parse_junit(render_junit(build_report()))
    suite = root.find("testsuite")
    assert suite.get("name") == "clusterkit.validate"
    # 3 passing nodes × 3 + 003: 2 + 004: 3 + 005: 2 + 006: 1 (node.reachable) + 007: 3
    # + 1 fleet finding = 21
    assert suite.get("tests") == "21"
    assert suite.get("failures") == "3"  # ecc on 003, ecc and nvlink on 004
    assert suite.get("errors") == "2"  # dcgm.diag on 005, 006 unreachable
    assert suite.get("skipped") == "1"  # ib.port.rate on 007
    assert suite.get("time") == "42.250"
    assert suite.get("timestamp") == "2025-03-04T05:06:07"
    assert root.get("tests") == "21" and root.get("failures") == "3"
    cases = cases_of(root)
    assert len(cases) == 21
    assert len(suite.findall("testcase/failure")) == 3
    assert len(suite.findall("testcase/error")) == 2
    assert len(suite.findall("testcase/skipped")) == 1
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"schema": REPORT_SCHEMA, "clusterkit_version": "0.1.0",
                     "source": "nodes:gpu-[001-008]", "profile": "h100-sxm", "exit_code": "1"}


def test_junit_names_and_elements():
    cases = cases_of(parse_junit(render_junit(build_report())))
    fail = cases[("gpu-003", "gpu.ecc.uncorrectable[gpu5]")].find("failure")
    assert fail.get("type") == "check"
    assert fail.get("message") == "gpu5: 2 volatile uncorrectable ECC errors"
    assert "value: 2 errors" in fail.text and "threshold: 0 errors" in fail.text
    assert cases[("gpu-004", "nvlink.links_active[gpu2]")].find("failure") is not None
    err = cases[("gpu-005", "dcgm.diag")].find("error")
    assert err.get("message") == "dcgmi: command not found"
    unreach = cases[("gpu-006", "node.reachable")].find("error")
    assert unreach.get("type") == "unreachable"
    assert unreach.get("message") == "gpu-006: connection refused"
    warn = cases[("gpu-007", "gpu.temperature[gpu4]")]
    assert list(warn) == [warn.find("system-out")]
    assert warn.find("system-out").text.startswith("WARN: gpu4: 86 C above 83 C")
    assert cases[("gpu-007", "ib.port.rate")].find("skipped").get("message") == \
        "no InfiniBand on this SKU"
    assert list(cases[("gpu-001", "ib.port.rate[mlx5_0/1]")]) == []  # a bare pass
    fleet = cases[("fleet", "fleet.drift.driver")]
    assert "nodes: gpu-007" in fleet.find("system-out").text


def test_junit_is_stable_and_survives_json_round_trip():
    report = build_report()
    first = render_junit(report)
    again = FleetReport.model_validate_json(report.to_json())
    assert render_junit(again) == first
    # node order in the input does not change the output
    shuffled = report.model_copy(update={"nodes": list(reversed(report.nodes))})
    assert render_junit(shuffled) == first


def test_junit_same_check_and_subject_do_not_collide():
    report = FleetReport(nodes=[
        NodeReport(node="gpu-001", status=NodeStatus.FAIL, checks=[
            C(check="gpu.ecc.uncorrectable", subject="gpu5", status=Status.PASS, value=0),
            C(check="gpu.ecc.uncorrectable", subject="gpu5", status=Status.FAIL, value=3,
              message="3 aggregate uncorrectable"),
            C(check="gpu.ecc.uncorrectable", subject="gpu5", status=Status.WARN, value=1,
              message="1 retired page"),
        ]),
        NodeReport(node="gpu-001.example.com", status=NodeStatus.PASS, checks=[
            C(check="gpu.count", status=Status.PASS, value=8)]),
        NodeReport(node="gpu-001_example_com", status=NodeStatus.PASS, checks=[
            C(check="gpu.count", status=Status.PASS, value=8)]),
        NodeReport(node="fleet", status=NodeStatus.PASS, checks=[
            C(check="fleet.drift.driver", status=Status.PASS)]),
    ], fleet=[
        FleetFinding(check="fleet.drift.driver", status=Status.FAIL, nodes=["gpu-001"],
                     message="driver mismatch"),
        FleetFinding(check="fleet.drift.driver", status=Status.WARN, nodes=["fleet"],
                     message="minor"),
    ]).finalize()
    root = parse_junit(render_junit(report))
    cases = cases_of(root)
    assert sorted(cases) == [
        ("fleet", "fleet.drift.driver"),
        ("fleet", "fleet.drift.driver #2"),
        ("gpu-001", "gpu.ecc.uncorrectable[gpu5]"),
        ("gpu-001_example_com", "gpu.count"),
        ("gpu-001_example_com", "gpu.count #2"),
    ]
    ecc = cases[("gpu-001", "gpu.ecc.uncorrectable[gpu5]")].find("failure")
    assert ecc.get("message") == "3 aggregate uncorrectable"
    assert "1 retired page" in ecc.text  # the other results stay in the body
    # the node named "fleet" comes first (nodes before findings); the findings merge into one
    assert list(cases[("fleet", "fleet.drift.driver")]) == []
    merged = cases[("fleet", "fleet.drift.driver #2")].find("failure")
    assert merged.get("message") == "driver mismatch (nodes: gpu-001)"
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "2", "0")


def test_junit_control_characters_still_well_formed():
    nasty = "boom\x00\x1b[31m\x08\x0b\x0c\ufffe\udc80 end\ttab\nline"
    report = FleetReport(
        source="nodes:gpu-001\x01",
        nodes=[
            NodeReport(node="gpu-001", status=NodeStatus.FAIL, checks=[
                C(check="gpu.xid", subject="gpu\x1b0", status=Status.FAIL, message=nasty)]),
            NodeReport(node="gpu-002", status=NodeStatus.UNREACHABLE, error=nasty),
        ],
    ).finalize()
    xml = render_junit(report)
    xml.encode("utf-8")  # no lone surrogate left
    root = parse_junit(xml)
    cases = cases_of(root)
    fail = cases[("gpu-001", "gpu.xid[gpu\\x1b0]")].find("failure")
    assert fail.get("message") == "boom\\x00\\x1b[31m\\x08\\x0b\\x0c\\ufffe\\udc80 end\ttab\nline"
    assert cases[("gpu-002", "node.reachable")].find("error").get("message").startswith(
        "boom\\x00\\x1b")
    assert xml_safe("a\x00b\x7fc") == "a\\x00b\x7fc"  # DEL is legal XML 1.0


def test_junit_empty_report():
    root = parse_junit(render_junit(FleetReport().finalize()))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("0", "0", "0", "0")


# --------------------------------------------------------------------------- json + write


def test_json_round_trip_equals():
    report = build_report()
    text = report.to_json()
    again = FleetReport.model_validate_json(text)
    assert again == report
    assert again.summary.exit_code == 1
    assert again.summary.checks == {"pass": 13, "warn": 1, "fail": 3, "error": 1, "skip": 1}
    assert '"schema": "clusterkit.report/v1"' in text


def test_write_report_formats(tmp_path):
    report = build_report()
    assert FORMATS == ("json", "junit", "terminal", "html")
    path = tmp_path / "out.xml"
    text = write_report(report, "junit", str(path))
    assert path.read_text(encoding="utf-8") == text == render_junit(report)
    assert [p.name for p in tmp_path.iterdir()] == ["out.xml"]  # no temporary left behind
    js = write_report(report, "json")
    assert FleetReport.model_validate_json(js) == report
    assert render(report, "terminal").splitlines()[-1].endswith("— exit 1")
    with pytest.raises(UsageError, match="unknown report format 'pdf'"):
        write_report(report, "pdf")
    with pytest.raises(UsageError, match="cannot write report"):
        write_report(report, "json", str(tmp_path / "missing" / "r.json"))


def test_write_report_never_replaces_a_special_file(tmp_path):
    """`--output /dev/null` must write into the device, not rename a file over it: checked
    with a FIFO, which is not a regular file either."""
    import stat
    import threading

    from clusterkit.models import FleetReport, NodeReport, NodeStatus
    from clusterkit.report import write_report

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    report = FleetReport(nodes=[NodeReport(node="n1", status=NodeStatus.PASS)]).finalize()
    write_report(report, "json", str(fifo))
    reader.join(10)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert '"schema": "clusterkit.report/v1"' in got[0]
