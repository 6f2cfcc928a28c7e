"""The controller's ledger of validation verdicts (clusterkit.ledger)."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from clusterkit import ledger
from clusterkit.errors import UsageError
from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status

T0 = dt.datetime(2025, 5, 1, 10, 0, tzinfo=dt.timezone.utc)


def report(statuses: dict[str, str], at: dt.datetime = T0, *, rails: dict[str, list[tuple[str, str]]] | None = None,
           gbps: dict[str, list[float]] | None = None, source: str = "partition:gpu") -> FleetReport:
    nodes = []
    for name, st in statuses.items():
        checks = [CheckResult(check="ib.port.state", subject=f"{dev}/1", device=dev, port=1, status=Status(s))
                  for dev, s in (rails or {}).get(name, [])]
        checks += [CheckResult(check="storage.weights", status=Status.PASS, value=g, unit="GB/s")
                   for g in (gbps or {}).get(name, [])]
        nodes.append(NodeReport(node=name, status=NodeStatus(st), checks=checks))
    return FleetReport(created=at.isoformat(timespec="seconds"), source=source, nodes=nodes)


def test_record_and_read_back(tmp_path):
    rep = report({"gpu-002": "pass", "gpu-010": "fail", "gpu-001": "warn"},
                 rails={"gpu-001": [("mlx5_0", "pass"), ("mlx5_1", "fail"), ("mlx5_10", "pass")]},
                 gbps={"gpu-001": [5.0, 3.5]})
    path = ledger.record(rep, str(tmp_path))
    assert path == str(tmp_path / "ledger.json")
    got = ledger.last_verdicts(str(tmp_path))
    assert list(got) == ["gpu-001", "gpu-002", "gpu-010"]  # natural order in the file
    assert got["gpu-001"] == ledger.Verdict(status="warn", time="2025-05-01T10:00:00+00:00", run_id=rep.run_id,
                                            source="partition:gpu", rails=["mlx5_0:1", "mlx5_10:1"],
                                            weights_gbps=3.5)
    assert got["gpu-002"].rails is None and got["gpu-002"].weights_gbps is None
    assert got["gpu-010"].status == "fail" and not got["gpu-010"].passing and got["gpu-001"].passing
    doc = json.loads((tmp_path / "ledger.json").read_text())
    assert doc["schema"] == "clusterkit.ledger/v1" and "rails" not in doc["nodes"]["gpu-002"]
    assert sorted(os.listdir(tmp_path)) == ["ledger.json", "ledger.json.lock"]  # no temporary file left


def test_nothing_recorded_is_empty(tmp_path):
    assert ledger.last_verdicts(str(tmp_path / "none")) == {}


def test_the_state_dir_is_the_controllers(tmp_path, monkeypatch):
    from clusterkit.validate.context import default_state_dir

    monkeypatch.setenv("CLUSTERKIT_STATE_DIR", str(tmp_path / "st"))
    assert ledger.directory() == default_state_dir() == str(tmp_path / "st")
    ledger.record(report({"n1": "pass"}))
    assert set(ledger.last_verdicts()) == {"n1"}
    monkeypatch.delenv("CLUSTERKIT_STATE_DIR")
    assert ledger.directory() == default_state_dir()
    assert ledger.directory(str(tmp_path)) == str(tmp_path)


def test_a_newer_verdict_replaces_an_older_one_never_the_reverse(tmp_path):
    d = str(tmp_path)
    ledger.record(report({"n1": "pass", "n2": "pass"}, T0, rails={"n1": [("mlx5_0", "pass")]}, gbps={"n1": [4.0]}), d)
    ledger.record(report({"n1": "fail"}, T0 + dt.timedelta(hours=1)), d)  # no IB / weights this time
    ledger.record(report({"n2": "fail"}, T0 - dt.timedelta(hours=1)), d)  # an old report read late
    got = ledger.last_verdicts(d)
    assert got["n1"].status == "fail" and got["n1"].rails == ["mlx5_0:1"] and got["n1"].weights_gbps == 4.0
    assert got["n2"].status == "pass" and got["n2"].time == "2025-05-01T10:00:00+00:00"


def test_an_unreadable_ledger_is_an_error_to_readers_and_set_aside_by_writers(tmp_path):
    (tmp_path / "ledger.json").write_text("{not json")
    with pytest.raises(ledger.LedgerError, match="not JSON"):
        ledger.last_verdicts(str(tmp_path))
    ledger.record(report({"n1": "pass"}), str(tmp_path))
    assert (tmp_path / "ledger.json.bad").read_text() == "{not json"
    assert set(ledger.last_verdicts(str(tmp_path))) == {"n1"}
    (tmp_path / "ledger.json").write_text('{"schema": "other/v1", "nodes": {}}')
    with pytest.raises(ledger.LedgerError, match="not a clusterkit.ledger/v1 file"):
        ledger.last_verdicts(str(tmp_path))


def test_one_bad_entry_only_loses_that_node(tmp_path):
    (tmp_path / "ledger.json").write_text(json.dumps({"schema": ledger.SCHEMA, "nodes": {
        "n1": {"status": "pass", "time": "2025-05-01T10:00:00Z"}, "n2": {"status": "pass", "time": "yesterday"},
        "n3": {"time": "2025-05-01T10:00:00"}}}))
    got = ledger.last_verdicts(str(tmp_path))
    assert list(got) == ["n1"] and got["n1"].when == T0


def _record_one(args: tuple[str, int]) -> None:
    d, i = args
    ledger.record(report({f"n{i:02d}": "pass"}, T0 + dt.timedelta(minutes=i)), d)


def test_concurrent_writers_all_land(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        pool.map(_record_one, [(str(tmp_path), i) for i in range(24)])
    assert sorted(ledger.last_verdicts(str(tmp_path))) == [f"n{i:02d}" for i in range(24)]


def test_saved_reports_given_explicitly(tmp_path):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(report({"n1": "pass", "n2": "pass"}, T0).to_json())
    b.write_text(report({"n2": "fail"}, T0 + dt.timedelta(hours=2), source="sim:builtin").to_json())
    got = ledger.verdicts_from_files([str(a), str(b)])
    assert got["n1"].status == "pass" and got["n1"].source == f"file {a}, partition:gpu"
    assert got["n2"].status == "fail" and got["n2"].source == f"file {b}, sim:builtin"
    # merged with the ledger: the newest per node wins
    ledger.record(report({"n1": "fail", "n2": "pass"}, T0 + dt.timedelta(hours=1)), str(tmp_path / "st"))
    merged = ledger.merge(ledger.last_verdicts(str(tmp_path / "st")), got)
    assert (merged["n1"].status, merged["n2"].status) == ("fail", "fail")
    (tmp_path / "c.json").write_text("[]")
    with pytest.raises(UsageError, match="not a clusterkit report"):
        ledger.verdicts_from_files([str(tmp_path / "c.json")])


def test_age(tmp_path):
    v = ledger.Verdict(status="pass", time="2025-05-01T10:00:00")  # no zone: UTC
    assert v.age_h(T0 + dt.timedelta(minutes=90)) == pytest.approx(1.5)


def test_a_partial_runs_pass_neither_replaces_a_verdict_nor_lets_a_node_serve() -> None:
    """`validate --checks system` passing after a full run that failed must not clear the
    failure; alone, it is no validation for deploy serve's gate; its failures do count."""
    import datetime as dt

    from clusterkit.deploy.gate import decide
    from clusterkit.ledger import Verdict, merge

    full_fail = {"gpu-003": Verdict(status="fail", time="2026-11-30T08:00:00+00:00", rails=["mlx5_0:1"])}
    partial_pass = {"gpu-003": Verdict(status="pass", time="2026-11-30T09:00:00+00:00", checks=["system"]),
                    "gpu-004": Verdict(status="pass", time="2026-11-30T09:00:00+00:00", checks=["system"])}
    partial_fail = {"gpu-004": Verdict(status="fail", time="2026-11-30T10:00:00+00:00", checks=["gpu.ecc"])}
    got = merge(full_fail, partial_pass)
    assert got["gpu-003"].status == "fail" and got["gpu-003"].checks is None
    assert got["gpu-004"].status == "pass" and got["gpu-004"].partial
    assert merge(partial_pass, full_fail)["gpu-003"].status == "fail"  # order of the maps does not matter
    assert merge(got, partial_fail)["gpu-004"].status == "fail"  # a partial run's failure is evidence
    now = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.timezone.utc)
    res = decide(["gpu-004"], got, slurm=None, partition=None, now=now, max_age_h=24)
    [d] = res.decisions
    assert not d.allowed and "ran only --checks system" in d.reason
