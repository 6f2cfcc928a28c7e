"""The metrics schema: tags from structured fields, ids as fields, one timestamp, unique series."""

from __future__ import annotations

import collections

import pytest

from clusterkit.models import CheckResult, FleetFinding, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.telemetry.lineproto import parse_line
from clusterkit.telemetry.points import (
    CHECK_MEASUREMENT,
    NODE_MEASUREMENT,
    RUN_MEASUREMENT,
    STATUS_CODES,
    node_points,
    report_lines,
    report_points,
    time_ms_of,
)

CREATED = "2026-03-04T05:06:07+00:00"
CREATED_MS = 1772600767000


def _node(name: str, checks: list[CheckResult], status: NodeStatus = NodeStatus.PASS, **kw) -> NodeReport:
    return NodeReport(node=name, status=status, checks=checks, facts={"profile": "h100-sxm", "gpu_count": 8,
                                                                     "driver_version": "565.57.01"}, **kw)


def _report(nodes: list[NodeReport], **kw) -> FleetReport:
    kw.setdefault("created", CREATED)
    return FleetReport(source="test", profile="h100-sxm", nodes=nodes, **kw).finalize()


def _by(points, measurement):
    return [p for p in points if p.measurement == measurement]


def test_tags_come_from_structured_fields_never_from_the_subject():
    checks = [
        # the subject text says gpu7; the structured field says 3: the field wins
        CheckResult(check="gpu.temperature", subject="gpu7", gpu=3, status=Status.PASS, value=31.0, threshold=85.0,
                    unit="C", message="31 C"),
        CheckResult(check="ib.port.rate", subject="mlx5_2/1", device="mlx5_2", port=1, status=Status.PASS,
                    value=400.0, threshold=400.0, unit="Gb/s"),
        CheckResult(check="nvlink.errors", subject="gpu2/link7", gpu=2, link=7, status=Status.WARN, value=5),
        CheckResult(check="topo.p2p", subject="gpu2-gpu5", gpu=2, peer_gpu=5, status=Status.FAIL, value="SYS",
                    threshold="NV18"),
        CheckResult(check="storage.free", subject="/mnt/weights", path="/mnt/weights", status=Status.PASS,
                    value=3100.0),
        # a subject without structured fields: no subject tags at all (the text is not parsed)
        CheckResult(check="gpu.clocks_event", subject="gpu4", status=Status.PASS, value=1),
    ]
    pts = report_points(_report([_node("gpu-001", checks)], partition="gpu", job_id="777"))
    tags = {p.tags["check"]: p.tags for p in _by(pts, CHECK_MEASUREMENT)}
    base = {"host": "gpu-001", "partition": "gpu", "profile": "h100-sxm"}
    assert tags["gpu.temperature"] == {**base, "check": "gpu.temperature", "gpu": "3"}
    assert tags["ib.port.rate"] == {**base, "check": "ib.port.rate", "device": "mlx5_2", "port": "1"}
    assert tags["nvlink.errors"] == {**base, "check": "nvlink.errors", "gpu": "2", "link": "7"}
    assert tags["topo.p2p"] == {**base, "check": "topo.p2p", "gpu": "2", "peer_gpu": "5"}
    assert tags["storage.free"] == {**base, "check": "storage.free", "path": "/mnt/weights"}
    assert tags["gpu.clocks_event"] == {**base, "check": "gpu.clocks_event"}


def test_run_and_job_ids_are_fields_never_tags():
    r = _report([_node("gpu-001", [CheckResult(check="gpu.count", status=Status.PASS, value=8, threshold=8)])],
                partition="gpu", job_id="777")
    pts = report_points(r)
    for p in pts:
        assert "run_id" not in p.tags and "job_id" not in p.tags
    for m in (CHECK_MEASUREMENT, NODE_MEASUREMENT, RUN_MEASUREMENT):
        (p,) = _by(pts, m)
        assert p.fields["run_id"] == r.run_id and p.fields["job_id"] == "777"


def test_every_point_of_a_run_has_the_runs_start_in_ms():
    pts = report_points(_report([_node("gpu-001", [CheckResult(check="gpu.count", status=Status.PASS, value=8)])]))
    assert {p.time_ms for p in pts} == {CREATED_MS}
    assert all(parse_line(line).time == CREATED_MS for line in report_lines(
        _report([_node("gpu-001", [CheckResult(check="gpu.count", status=Status.PASS, value=8)])])))


@pytest.mark.parametrize("created, want", [
    ("2026-03-04T05:06:07+00:00", 1772600767000),
    ("2026-03-04T05:06:07.250Z", 1772600767250),
    ("2026-03-04T06:06:07+01:00", 1772600767000),
    ("2026-03-04T05:06:07", 1772600767000),  # no zone: UTC
])
def test_time_of_created(created, want):
    assert time_ms_of(created) == want


def test_domain_points_only_for_numbers_and_always_floats():
    checks = [
        CheckResult(check="gpu.count", status=Status.PASS, value=8, threshold=8),
        CheckResult(check="gpu.ecc.mode", subject="gpu0", gpu=0, status=Status.PASS, value=True, threshold=True),
        CheckResult(check="gpu.model", subject="gpu0", gpu=0, status=Status.PASS, value="NVIDIA H100 80GB HBM3"),
        CheckResult(check="gpu.temperature", subject="gpu0", gpu=0, status=Status.FAIL, value=91.5, threshold=85),
        CheckResult(check="ib.counters", subject="mlx5_0/1", device="mlx5_0", port=1, status=Status.SKIP),
    ]
    pts = report_points(_report([_node("gpu-001", checks, NodeStatus.FAIL)]))
    gpu = {p.tags["check"]: p for p in _by(pts, "gpu")}
    assert set(gpu) == {"gpu.count", "gpu.temperature"}
    assert gpu["gpu.count"].fields == {"value": 8.0, "threshold": 8.0, "status_code": 0}
    assert type(gpu["gpu.count"].fields["value"]) is float
    assert gpu["gpu.temperature"].fields == {"value": 91.5, "threshold": 85.0, "status_code": 2}
    assert not _by(pts, "ib")
    chk = {p.tags["check"]: p.fields for p in _by(pts, CHECK_MEASUREMENT)}
    assert chk["gpu.ecc.mode"]["value_text"] == "true" and "value" not in chk["gpu.ecc.mode"]
    assert chk["gpu.model"]["value_text"] == "NVIDIA H100 80GB HBM3"
    assert chk["ib.counters"]["status_code"] == STATUS_CODES["skip"] == 4
    assert chk["gpu.temperature"]["status"] == "fail"
    # the encoded line writes floats without the int suffix: one type per field, always
    line = next(ln for ln in report_lines(_report([_node("gpu-001", checks, NodeStatus.FAIL)]))
                if ln.startswith("gpu,check=gpu.count,"))
    assert line.split(" ")[1].split(",") == ["status_code=0i", "threshold=8", "value=8"]


def test_status_codes_are_documented_values():
    assert STATUS_CODES == {"pass": 0, "warn": 1, "fail": 2, "error": 3, "skip": 4}


def test_no_two_points_of_a_run_share_a_series_even_without_structured_fields():
    checks = [
        # an older node: subjects but no structured fields -> they would all collide
        CheckResult(check="gpu.temperature", subject="gpu0", status=Status.PASS, value=30.0),
        CheckResult(check="gpu.temperature", subject="gpu1", status=Status.PASS, value=31.0),
        # the same subject twice, and no subject twice
        CheckResult(check="xid.events", subject="gpu0", gpu=0, status=Status.PASS, value="none"),
        CheckResult(check="xid.events", subject="gpu0", gpu=0, status=Status.WARN, value="13"),
        CheckResult(check="system.load", status=Status.PASS, value=0.1),
        CheckResult(check="system.load", status=Status.PASS, value=0.2),
        # and distinct structured subjects stay untouched
        CheckResult(check="gpu.memory", subject="gpu0", gpu=0, status=Status.PASS, value=81559),
        CheckResult(check="gpu.memory", subject="gpu1", gpu=1, status=Status.PASS, value=81559),
    ]
    r = _report([_node("gpu-001", checks), _node("gpu-002", checks)])
    r.fleet = [FleetFinding(check="fleet.outlier.ib.write_bw", status=Status.WARN, nodes=["gpu-001"]),
               FleetFinding(check="fleet.outlier.ib.write_bw", status=Status.WARN, nodes=["gpu-002"])]
    pts = report_points(r)
    series = collections.Counter(p.series() for p in pts)
    assert [s for s, n in series.items() if n > 1] == []
    temps = sorted((p.tags.get("subject"), p.fields["value"]) for p in _by(pts, "gpu")
                   if p.tags["check"] == "gpu.temperature" and p.tags["host"] == "gpu-001")
    assert temps == [("gpu0", 30.0), ("gpu1", 31.0)]
    xids = sorted(p.tags.get("n", "") for p in _by(pts, CHECK_MEASUREMENT)
                  if p.tags["check"] == "xid.events" and p.tags["host"] == "gpu-001")
    assert xids == ["1", "2"]
    mem = [p.tags for p in _by(pts, CHECK_MEASUREMENT) if p.tags["check"] == "gpu.memory"]
    assert all("subject" not in t and "n" not in t for t in mem)


def test_simulated_fleet_report_has_unique_series(tmp_path):
    """A whole simulated run (every domain of the built-in sim fleet): every series once."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "clusterkit", "validate", "--sim", "--nodes", "gpu-[001-003]",
                        "--json", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1, 3), p.stderr
    r = FleetReport.model_validate_json(p.stdout)
    pts = report_points(r)
    series = collections.Counter(p.series() for p in pts)
    assert [s for s, n in series.items() if n > 1] == []
    assert len(_by(pts, CHECK_MEASUREMENT)) == sum(len(n.checks) for n in r.nodes)
    # a current report needs no fallback tags
    assert not any("subject" in p.tags or "n" in p.tags for p in pts)
    lines = report_lines(r)
    assert len(lines) == len(pts)
    for line in lines:
        parse_line(line)


def test_node_points_for_one_node():
    n = _node("gpu-009", [CheckResult(check="gpu.temperature", subject="gpu0", gpu=0, status=Status.PASS, value=30.0)])
    pts = node_points(n, partition="gpu", time_ms=123, run_id="r1")
    assert {p.measurement for p in pts} == {"gpu", CHECK_MEASUREMENT, NODE_MEASUREMENT}
    assert {p.time_ms for p in pts} == {123}
    (node,) = _by(pts, NODE_MEASUREMENT)
    assert node.tags == {"host": "gpu-009", "partition": "gpu", "profile": "h100-sxm"}
    assert node.fields["status_code"] == 0 and node.fields["checks"] == 1 and node.fields["gpu_count"] == 8
    assert node.fields["driver_version"] == "565.57.01"


def test_unreachable_node_and_run_point():
    r = _report([NodeReport(node="gpu-003", status=NodeStatus.UNREACHABLE, error="ssh: connect to 10.0.0.3 refused",
                            error_kind="unreachable", cause="connection refused")], duration_s=4.5)
    pts = report_points(r)
    (node,) = _by(pts, NODE_MEASUREMENT)
    assert node.fields["status_code"] == 5 and node.fields["cause"] == "connection refused"
    (run,) = _by(pts, RUN_MEASUREMENT)
    assert run.fields["unreachable"] == 1 and run.fields["exit_code"] == 3 and run.fields["duration_s"] == 4.5
    assert run.fields["interrupted"] is False


def test_numbers_only_leaves_out_every_string_field():
    checks = [CheckResult(check="gpu.model", gpu=0, status=Status.PASS, value="H100", message="m", unit="u")]
    for p in report_points(_report([_node("gpu-001", checks)], job_id="9"), string_fields=False):
        assert not any(isinstance(v, str) for v in p.fields.values()), p


def test_long_or_multiline_messages_stay_one_short_line():
    checks = [CheckResult(check="gpu.temperature", gpu=0, status=Status.FAIL, value=99.0, message="a\nb" * 2000)]
    lines = report_lines(_report([_node("gpu-001", checks, NodeStatus.FAIL)]))
    for line in lines:
        assert line.splitlines() == [line]
    (chk,) = [parse_line(ln) for ln in lines if ln.startswith("clusterkit_check,")]
    assert len(chk.fields["message"]) <= 1024
