"""The health gate of deploy serve (clusterkit.deploy.gate): pure decisions, every refusal named."""

from __future__ import annotations

import datetime as dt

from clusterkit.deploy import gate
from clusterkit.ledger import Verdict
from clusterkit.slurm.backend import SlurmNode

NOW = dt.datetime(2025, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def v(status: str, hours_ago: float, run_id: str = "0123456789abcdef", source: str = "partition:gpu") -> Verdict:
    return Verdict(status=status, time=(NOW - dt.timedelta(hours=hours_ago)).isoformat(), run_id=run_id, source=source)


def node(name: str, state: str = "idle", flags: tuple[str, ...] = (), reason: str | None = None,
         partitions: tuple[str, ...] = ("gpu",)) -> SlurmNode:
    return SlurmNode(name=name, state=state, flags=flags, reason=reason, partitions=partitions)


VERDICTS = {"n1": v("pass", 1), "n2": v("warn", 23.5), "n3": v("fail", 0.5), "n4": v("pass", 25),
            "n5": v("error", 2), "n6": v("unreachable", 2), "n8": v("pass", 0.2), "n9": v("pass", 0.1)}
SLURM = {n: node(n) for n in ("n1", "n2", "n3", "n4", "n5", "n6", "n7")}
SLURM["n8"] = node("n8", flags=("DRAIN",), reason="fan swap, ticket 7")
SLURM["n9"] = node("n9", state="down", flags=("NOT_RESPONDING",), reason="Not responding")
NODES = [f"n{i}" for i in range(1, 11)]


def decisions(**kw) -> dict[str, gate.NodeDecision]:
    res = gate.decide(NODES, VERDICTS, kw.pop("slurm", SLURM), now=NOW, partition="gpu", **kw)
    return {d.node: d for d in res.decisions}


def test_only_recent_passing_undrained_nodes_serve():
    d = decisions()
    assert [n for n, x in d.items() if x.allowed] == ["n1", "n2"]
    assert d["n1"].reason == "validated pass 1.0 h ago (run 01234567, partition:gpu)"
    assert d["n2"].reason.startswith("validated warn 23.5 h ago")
    assert d["n3"].reason == "last validation fail 30 min ago (run 01234567, partition:gpu)"
    assert d["n4"].reason == "last validation (pass) is 25.0 h old, more than 24 h (run 01234567, partition:gpu)"
    assert d["n5"].reason.startswith("last validation error") and d["n6"].reason.startswith("last validation unreachable")
    assert d["n7"].reason.startswith("no validation on record")
    assert d["n8"].reason == "drained in Slurm (idle+drain): fan swap, ticket 7" and d["n8"].slurm_refused
    assert d["n9"].reason == "down in Slurm (down*): Not responding"
    assert d["n10"].reason == "not a node of partition gpu"
    assert d["n3"].line == "n3: refused: last validation fail 30 min ago (run 01234567, partition:gpu)"


def test_max_age_is_a_parameter():
    d = decisions(max_age_h=0.75)
    assert [n for n, x in d.items() if x.allowed] == []
    assert "more than 0.75 h" in d["n1"].reason
    d = decisions(max_age_h=48)
    assert d["n4"].allowed


def test_force_overrides_validation_but_not_slurm_and_says_so():
    res = gate.decide(NODES, VERDICTS, SLURM, now=NOW, partition="gpu", force=True)
    d = {x.node: x for x in res.decisions}
    assert [x.node for x in res.forced] == ["n3", "n4", "n5", "n6", "n7"]
    assert all(d[n].allowed for n in ("n1", "n2", "n3", "n4", "n5", "n6", "n7"))
    assert not d["n8"].allowed and "--force cannot change that" in d["n8"].reason
    assert not d["n10"].allowed
    lines = res.lines()
    assert "n3: FORCED (--force): last validation fail 30 min ago (run 01234567, partition:gpu)" in lines
    assert lines[-1] == ("--force: serving on 5 node(s) without a passing validation newer than 24 h: "
                         "n3, n4, n5, n6, n7")


def test_without_slurm_only_the_validation_counts_and_the_output_says_so():
    res = gate.decide(NODES, VERDICTS, None, now=NOW)
    assert res.allowed == ["n1", "n2", "n8", "n9"]
    assert res.lines()[-1] == "Slurm's node states were not checked (dry run with --nodes)"
    assert not res.to_dict()["slurm_checked"]


def test_a_verdict_from_the_future_is_refused():
    res = gate.decide(["n1"], {"n1": v("pass", -2)}, None, now=NOW)
    assert not res.decisions[0].allowed and "future" in res.decisions[0].reason


def test_pick_prefers_idle_nodes():
    slurm = {"a": node("a", state="allocated"), "b": node("b"), "c": node("c", state="mixed"), "d": node("d")}
    verdicts = {n: v("pass", 1) for n in slurm}
    res = gate.decide(["a", "b", "c", "d"], verdicts, slurm, now=NOW)
    assert gate.pick(res, 3, slurm) == ["b", "d", "a"]
    assert gate.pick(res, 9, slurm) == ["b", "d", "a", "c"]
    assert gate.pick(res, 2) == ["a", "b"]
