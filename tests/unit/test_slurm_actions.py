"""Drain reasons, drain planning and the circuit breaker (pure), srun output splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterkit.errors import UsageError
from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.slurm import reason as reasons
from clusterkit.slurm.actions import apply_drains, drain_limit, format_actions, parse_limit, plan_drains
from clusterkit.slurm.backend import SlurmError, SlurmNode, SlurmUnavailable
from clusterkit.slurm.srun import StepOutput


# ----------------------------------------------------------------------------- reasons
def test_reason_shape_and_round_trip() -> None:
    r = reasons.make([("gpu.ecc.uncorrectable", "gpu5", "3 volatile uncorrectable ECC errors")])
    assert r == "clusterkit: gpu.ecc.uncorrectable: gpu5: 3 volatile uncorrectable ECC errors"
    owned = reasons.parse(r)
    assert owned is not None and owned.selectors == ("gpu.ecc.uncorrectable",)
    assert reasons.is_owned(r) and not reasons.is_owned("bad fan") and not reasons.is_owned(None)


def test_reason_is_deterministic_and_lists_every_failed_check() -> None:
    a = [("gpu.pcie.width", "gpu2", "x8"), ("gpu.ecc.uncorrectable", "gpu5", "3 errors")]
    assert reasons.make(a) == reasons.make(list(reversed(a)))
    owned = reasons.parse(reasons.make(a))
    assert owned is not None and owned.selectors == ("gpu.ecc.uncorrectable", "gpu.pcie.width")
    assert owned.detail.endswith("(+1 more)")


def test_reason_keeps_selectors_not_rechecked() -> None:
    r = reasons.make([("gpu.ecc.uncorrectable", "gpu5", "3 errors")], also=["ib.write_bw"])
    owned = reasons.parse(r)
    assert owned is not None and owned.selectors == ("gpu.ecc.uncorrectable", "ib.write_bw")


def test_reason_falls_back_to_domains_when_too_many_checks() -> None:
    fails = [(f"gpu.check{i:02d}.something_long", "gpu0", "bad") for i in range(10)] + [("ib.port.state", "mlx5_0", "Down")]
    owned = reasons.parse(reasons.make(fails))
    assert owned is not None and owned.selectors == ("gpu", "ib")


def test_someone_elses_reason_is_not_parsed() -> None:
    assert reasons.parse("clusterkit maintenance by alice") is None
    assert reasons.parse("NHC: check_hw_ib: no IB") is None


@given(st.lists(st.tuples(st.from_regex(r"[a-z]{2,6}(\.[a-z_]{1,12}){1,2}", fullmatch=True),
                          st.one_of(st.none(), st.text(max_size=20)), st.text(max_size=200)), min_size=1, max_size=8))
def test_reason_always_one_short_parseable_line(fails: list) -> None:
    r = reasons.make(fails)
    assert "\n" not in r and len(r) <= reasons.MAX_LEN
    assert not any(c in r for c in "\"'`$\\")
    owned = reasons.parse(r)
    assert owned is not None
    for check, _, _ in fails:
        assert any(check == s or check.startswith(s + ".") for s in owned.selectors)


# ----------------------------------------------------------------------------- plan
def _node(name: str, status: NodeStatus, *fails: tuple[str, str, str]) -> NodeReport:
    checks = [CheckResult(check=c, subject=s, status=Status.FAIL, message=m) for c, s, m in fails]
    if status is NodeStatus.ERROR:
        checks.append(CheckResult(check="gpu.handle", subject="gpu1", status=Status.ERROR, message="NVML refused"))
    if status in (NodeStatus.PASS, NodeStatus.WARN):
        checks.append(CheckResult(check="gpu.ecc.uncorrectable", subject="gpu0", status=Status.PASS, message="0"))
    return NodeReport(node=name, status=status, checks=checks)


def _report(*nodes: NodeReport) -> FleetReport:
    return FleetReport(nodes=list(nodes)).finalize()


def _st(name: str, state: str = "idle", flags: tuple[str, ...] = (), reason: str | None = None,
        user: str | None = None) -> SlurmNode:
    return SlurmNode(name=name, state=state, flags=flags, reason=reason, reason_user=user, partitions=("gpu",))


ECC = ("gpu.ecc.uncorrectable", "gpu5", "3 uncorrectable ECC errors")


def test_fail_drains_error_never_does() -> None:
    rep = _report(_node("a", NodeStatus.FAIL, ECC), _node("b", NodeStatus.ERROR), _node("c", NodeStatus.PASS))
    acts, breaker = plan_drains(rep, {n: _st(n) for n in "abc"}, pool_size=10, limit="50%")
    assert breaker is None
    assert [(a.node, a.action) for a in acts] == [("a", "drain")]
    assert acts[0].reason_after == "clusterkit: gpu.ecc.uncorrectable: gpu5: 3 uncorrectable ECC errors"
    assert acts[0].state_before == "idle" and acts[0].state_after == "idle+drain"


def test_operator_reason_left_alone() -> None:
    rep = _report(_node("a", NodeStatus.FAIL, ECC))
    acts, _ = plan_drains(rep, {"a": _st("a", flags=("DRAIN",), reason="bad fan", user="alice")}, pool_size=10)
    assert acts[0].action == "left-alone" and "bad fan" in acts[0].message and "alice" in acts[0].message


def test_already_drained_by_us_and_reason_update() -> None:
    same = reasons.make([ECC])
    acts, _ = plan_drains(_report(_node("a", NodeStatus.FAIL, ECC)),
                          {"a": _st("a", flags=("DRAIN",), reason=same)}, pool_size=10)
    assert acts[0].action == "already-drained"
    old = reasons.make([("ib.write_bw", "mlx5_0", "300 Gb/s")])
    acts, _ = plan_drains(_report(_node("a", NodeStatus.FAIL, ECC)),
                          {"a": _st("a", flags=("DRAIN",), reason=old)}, pool_size=10)
    assert acts[0].action == "update-reason"
    owned = reasons.parse(acts[0].reason_after)
    assert owned is not None and owned.selectors == ("gpu.ecc.uncorrectable", "ib.write_bw")


def test_circuit_breaker() -> None:
    nodes = [_node(f"n{i}", NodeStatus.FAIL, ECC) for i in range(3)]
    states = {f"n{i}": _st(f"n{i}") for i in range(3)}
    acts, breaker = plan_drains(_report(*nodes), states, pool_size=20)  # 10% of 20 = 2 < 3
    assert breaker is not None and "3 nodes" in breaker and "limit of 2" in breaker
    assert all(a.outcome == "refused" for a in acts)
    acts, breaker = plan_drains(_report(*nodes), states, pool_size=20, force=True)
    assert breaker is None and all(a.outcome == "none" for a in acts)
    acts, breaker = plan_drains(_report(*nodes), states, pool_size=20, limit="3")
    assert breaker is None


def test_limits() -> None:
    assert drain_limit("10%", 8) == 1 and drain_limit("10%", 100) == 10 and drain_limit("25%", 8) == 2
    assert drain_limit("4", 8) == 4
    for bad in ("0", "-1", "0%", "101%", "ten", ""):
        with pytest.raises(UsageError):
            parse_limit(bad)


class FakeBackend:
    name = "fake"

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.fail = fail

    def drain(self, names: list[str], reason: str) -> None:
        if self.fail:
            raise self.fail
        self.calls.append((list(names), reason))


def test_apply_groups_by_reason_and_dry_run_changes_nothing() -> None:
    rep = _report(_node("a", NodeStatus.FAIL, ECC), _node("b", NodeStatus.FAIL, ECC),
                  _node("c", NodeStatus.FAIL, ("gpu.pcie.width", "gpu2", "x8")))
    acts, _ = plan_drains(rep, {n: _st(n) for n in "abc"}, pool_size=3, limit="3")
    fb = FakeBackend()
    assert apply_drains(acts, fb, dry_run=True) is None  # type: ignore[arg-type]
    assert fb.calls == [] and {a.outcome for a in acts} == {"dry-run"}
    assert any("would drain" in ln for ln in format_actions(acts, dry_run=True))
    acts, _ = plan_drains(rep, {n: _st(n) for n in "abc"}, pool_size=3, limit="3")
    assert apply_drains(acts, fb, dry_run=False) is None  # type: ignore[arg-type]
    assert sorted(fb.calls) == [(["a", "b"], reasons.make([ECC])), (["c"], reasons.make([("gpu.pcie.width", "gpu2", "x8")]))]


@pytest.mark.parametrize("err", [SlurmUnavailable("Slurm is not reachable"), SlurmError("scontrol: denied")])
def test_apply_failure_is_reported_per_node(err: Exception) -> None:
    acts, _ = plan_drains(_report(_node("a", NodeStatus.FAIL, ECC)), {"a": _st("a")}, pool_size=3, limit="3")
    msg = apply_drains(acts, FakeBackend(err), dry_run=False)  # type: ignore[arg-type]
    assert msg == str(err) and acts[0].outcome == "failed" and acts[0].state_after == "idle"


def test_passing_node_we_drained_is_noted_not_resumed() -> None:
    acts, _ = plan_drains(_report(_node("a", NodeStatus.PASS)),
                          {"a": _st("a", flags=("DRAIN",), reason=reasons.make([ECC]))}, pool_size=3)
    assert [a.action for a in acts] == ["passes-now"]


# ----------------------------------------------------------------------------- srun output
SRUN_OUT = """\
1: @@clusterkit-task 1 gpu-002
0: @@clusterkit-task 0 gpu-001
0: ={"node":"gpu-001","status":"pass"}
1: +{"node":"gpu-002",
1: ="status":"fail"}
1: =second line
"""
SRUN_ERR = """\
1: some warning on stderr
srun: error: gpu-002: task 1: Exited with exit code 1
srun: error: gpu-004: tasks 2-3: Killed
"""


def test_step_output_split_by_task() -> None:
    s = StepOutput(SRUN_OUT, SRUN_ERR)
    assert s.rank_of() == {"gpu-001": 0, "gpu-002": 1, "gpu-004": 3}
    assert s.out[0] == ['{"node":"gpu-001","status":"pass"}']
    assert s.out[1] == ['{"node":"gpu-002","status":"fail"}', "second line"]
    assert s.err[1] == ["some warning on stderr"]
    assert s.rc == {1: 1, 2: 137, 3: 137}
    assert StepOutput("", "srun: error: Unable to allocate resources: Invalid node name specified\n").srun_error() \
        == "srun: error: Unable to allocate resources: Invalid node name specified"


def test_slurm_node_state_text() -> None:
    assert _st("a", "idle", ("DRAIN",)).state_text == "idle+drain"
    assert _st("a", "down", ("NOT_RESPONDING",)).state_text == "down*"
    assert _st("a", "down", ("NOT_RESPONDING",)).down and _st("a", "idle", ("DRAIN",)).drained
