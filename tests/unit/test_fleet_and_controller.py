"""Fleet judges, node-report decoding, and the bounded fan-out."""

from __future__ import annotations

import json
import threading
import time

from clusterkit.errors import CommandTimeout, ConnectError, HostKeyError, InternalError
from clusterkit.models import NODE_SCHEMA, CheckResult, FleetReport, Node, NodeReport, NodeStatus, Status
from clusterkit.transport import BaseTransport, CommandResult, fan_out
from clusterkit.validate.controller import to_node_report
from clusterkit.validate.fleet import judge_fleet


def rep(name, **facts):
    return NodeReport(node=name, status=NodeStatus.PASS, facts=facts)


def test_driver_drift_names_the_minority():
    reports = [rep(f"gpu-00{i}", driver_version="565.57.01", gpu_count=8) for i in range(1, 6)]
    reports.append(rep("gpu-006", driver_version="550.90.12", gpu_count=8))
    reports.append(NodeReport(node="gpu-007", status=NodeStatus.UNREACHABLE))
    findings = judge_fleet(reports)
    assert [(f.check, f.status, f.nodes, f.expected) for f in findings] == [
        ("fleet.drift.driver_version", Status.WARN, ["gpu-006"], "565.57.01")]
    assert "550.90.12 on gpu-006" in findings[0].message


def test_gpu_count_mismatch_and_no_drift_when_uniform():
    reports = [rep("a1", gpu_count=8, vbios_version="96.00.74.00.01"),
               rep("a2", gpu_count=8, vbios_version="96.00.74.00.01"),
               rep("a3", gpu_count=7, vbios_version="96.00.74.00.01")]
    findings = judge_fleet(reports)
    assert [(f.check, f.nodes, f.expected) for f in findings] == [("fleet.gpu_count", ["a3"], 8)]


def _result(stdout, rc=0):
    return CommandResult(node="n1", argv=["clusterkit", "node-check"], rc=rc, stdout=stdout, stderr="boom",
                         duration_s=0.5)


def test_node_report_decoding():
    node = Node(name="gpu-001")
    doc = {"schema": NODE_SCHEMA, "node": "localhost", "status": "fail",
           "checks": [CheckResult(check="gpu.count", status=Status.FAIL, value=7).model_dump(mode="json")]}
    r = to_node_report(node, _result("Welcome to the cluster\n" + json.dumps(doc) + "\n", rc=1))
    assert r.node == "gpu-001" and r.status is NodeStatus.FAIL and r.checks[0].value == 7
    assert r.facts["reported_name"] == "localhost"
    assert to_node_report(node, _result("", rc=127)).error.startswith("clusterkit not found")
    garbage = to_node_report(node, _result("{not json", rc=1))
    assert garbage.status is NodeStatus.ERROR and "exit 1" in garbage.error
    assert to_node_report(node, ConnectError("refused")).status is NodeStatus.UNREACHABLE
    hk = to_node_report(node, HostKeyError("unknown host key"))
    assert hk.status is NodeStatus.UNREACHABLE and hk.error.startswith("hostkey:")
    assert to_node_report(node, CommandTimeout("slow")).status is NodeStatus.ERROR


class FakeTransport(BaseTransport):
    """Sleeps per node; node 'bad' raises a bug; counts concurrency."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def run(self, node, argv, *, timeout, stdin=None, env=None, hold_stdin=False):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(0.01)
            if node.name == "bad":
                raise RuntimeError("bug in a transport")
            if node.name == "down":
                raise ConnectError("no route")
            return CommandResult(node=node.name, argv=argv, rc=0, stdout="ok", stderr="", duration_s=0.01)
        finally:
            with self.lock:
                self.now -= 1

    def close(self):
        pass


def test_fan_out_is_bounded_and_never_raises():
    t = FakeTransport()
    nodes = [Node(name=f"n{i}") for i in range(40)] + [Node(name="bad"), Node(name="down")]
    seen = []
    out = fan_out(t, nodes, ["true"], timeout=5, fanout=4, on_done=lambda n, o: seen.append(n.name))
    assert t.peak <= 4
    assert len(out) == 42 and sorted(seen) == sorted(out)
    # a bug of ours is an internal error (exit 4), never "unreachable"
    assert isinstance(out["bad"], InternalError) and "bug in a transport" in str(out["bad"])
    assert to_node_report(Node(name="bad"), out["bad"]).error_kind == "internal"
    assert isinstance(out["down"], ConnectError)
    assert out["n7"].stdout == "ok"


def test_report_exit_codes():
    ok = NodeReport(node="a", status=NodeStatus.PASS)
    assert FleetReport(nodes=[ok]).finalize().summary.exit_code == 0
    assert FleetReport(nodes=[ok, NodeReport(node="b", status=NodeStatus.UNREACHABLE)]).finalize().summary.exit_code == 3
    assert FleetReport(nodes=[ok, NodeReport(node="b", status=NodeStatus.ERROR)]).finalize().summary.exit_code == 3
    r = FleetReport(nodes=[NodeReport(node="b", status=NodeStatus.UNREACHABLE),
                           NodeReport(node="c", status=NodeStatus.FAIL)]).finalize()
    assert r.summary.exit_code == 1 and (r.summary.failed, r.summary.unreachable) == (1, 1)
