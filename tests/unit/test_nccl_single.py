"""`nccl single`'s judge: the floor (fail), the fleet (warn), wrong results (fail), a test that
could not run (error, never fail)."""

from __future__ import annotations

from clusterkit.models import NodeStatus, Status
from clusterkit.nccl.models import Measured, NcclTest
from clusterkit.nccl.single import judge_round, node_reports, plan


def m(node: str, bw: float | None = None, **kw: object) -> Measured:
    return Measured(test=NcclTest(f"t-{node}", "single", (node,), "nvls"), busbw_gbps=bw, **kw)  # type: ignore[arg-type]


def judged(ms: list[Measured], floor: float | None = 440.0) -> dict[str, tuple[Status, str]]:
    out = judge_round(ms, "nvls", floor=floor, z_slow=4.0, spread_floor_rel=0.02, message_bytes=8 << 30)
    return {n: (c.status, c.message) for n, c in out.items()}


def test_plan_is_one_round_per_algorithm_every_node_alone() -> None:
    rounds = plan(["a", "b"], ["nvls", "ring"])
    assert [[(t.nodes, t.algo, t.kind) for t in r] for r in rounds] == [
        [(("a",), "nvls", "single"), (("b",), "nvls", "single")],
        [(("a",), "ring", "single"), (("b",), "ring", "single")]]


def test_floor_fails_and_the_fleet_warns_above_it() -> None:
    # median 477.75, spread max(1.4826 * MAD, 2 % of 478 = 9.56): 455 is z -2.4 (pass), 441 z -3.9
    # (pass), 430 below the floor (fail), and with a floor of 300, 430 is z -5.0: an outlier (warn)
    ms = [m("a", 478.0), m("b", 479.0), m("c", 477.5), m("d", 455.0), m("e", 430.0), m("f", 478.2)]
    got = judged(ms)
    assert got["a"][0] is Status.PASS and "478 GB/s at 8 GiB (floor 440, fleet median 477.8, z +0.0)" in got["a"][1]
    assert got["d"][0] is Status.PASS
    assert got["e"] == (Status.FAIL, "NVLS busbw 430 GB/s at 8 GiB, below the floor 440, fleet median 477.8, z -5.0")
    assert judged(ms, floor=300.0)["e"][0] is Status.WARN


def test_wrong_results_fail_and_a_test_that_could_not_run_is_an_error() -> None:
    got = judged([m("a", 478.0, wrong=3), m("b", failure="hang", message="no result after 300 s"),
                  m("c", failure="init", message="gpu-003: Test NCCL failure"), m("d", None, message="no row")])
    assert got["a"] == (Status.FAIL, "NVLS all_reduce: 3 wrong elements (data corruption)")
    assert got["b"] == (Status.ERROR, "NVLS all_reduce hung: no result after 300 s")
    assert got["c"][0] is Status.ERROR and "failed at NCCL init" in got["c"][1]
    assert got["d"] == (Status.ERROR, "NVLS all_reduce gave no busbw at 8 GiB: no row")


def test_two_nodes_have_no_fleet_rule_and_no_floor_passes() -> None:
    got = judged([m("a", 478.0), m("b", 200.0)], floor=None)
    assert got["b"] == (Status.PASS, "NVLS busbw 200 GB/s at 8 GiB (no floor in the profile)")


def test_node_status_is_the_worst_check() -> None:
    a = judge_round([m("a", 478.0)], "nvls", floor=440.0, z_slow=4.0, spread_floor_rel=0.02, message_bytes=8 << 30)
    b = judge_round([m("a", 300.0)], "ring", floor=340.0, z_slow=4.0, spread_floor_rel=0.02, message_bytes=8 << 30)
    [r] = node_reports(["a"], {"nvls": a, "ring": b})
    assert r.status is NodeStatus.FAIL and [c.check for c in r.checks] == ["nccl.single.nvls", "nccl.single.ring"]
