"""Localization (clusterkit.nccl.localize) against a fake launcher that simulates a fleet.

The fake uses the simulator's bandwidth model (clusterkit/sim/fabric.py): 8 rails of 400 Gb/s
(48.5 GB/s each), node busbw = rails x slowest rail x 0.95, the minimum over the test's nodes,
divided by the largest ``nccl_slow`` factor and, across leaves, by the largest uplink factor of
the leaves spanned; capped at the one-node ring figure (368 GB/s); +-0.3 % noise, deterministic
from the nodes. ``ib_write_bw`` per rail 390.98 Gb/s: min of both ends' same-named rail, divided
by the uplink factor across leaves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit.hostlist import expand, fold
from clusterkit.nccl.localize import (
    EFFECTS,
    NODE,
    UPLINK,
    Observation,
    bad_rails,
    classify_node,
    crossed_uplinks,
    elements_of,
    infer,
    judge,
    leaf_map,
    localize,
    pack_waves,
    plan_round1,
    plan_summary,
    reference_from,
)
from clusterkit.nccl.models import LocalizeReport, Measured, NcclTest
from clusterkit.profiles import NcclProfile

RING = 368.0
RAIL_GBS = 400 / 8 * 0.97  # 48.5 GB/s
PORT_GBITS = 390.98
DEVICES = [f"mlx5_{i}" for i in range(8)]
TIMEOUT = 300.0


# --------------------------------------------------------------------------- the fake fleet
@dataclass
class Fleet:
    size: int
    leaf_size: Optional[int] = 16  # the physical switch layout (None: one flat switch)
    slow: dict[str, float] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    init_fail: set[str] = field(default_factory=set)
    hca: dict[tuple[str, str], float] = field(default_factory=dict)
    uplink: dict[str, float] = field(default_factory=dict)
    launch_fail: set[str] = field(default_factory=set)  # tests with this node cannot start
    crash: set[str] = field(default_factory=set)  # NCCL fails after the first rows
    wrong: set[str] = field(default_factory=set)  # '#wrong' > 0 (data corruption)
    seed: int = 0

    @property
    def nodes(self) -> list[str]:
        return [f"gpu-{i:03d}" for i in range(1, self.size + 1)]

    @property
    def leaves(self) -> dict[str, list[str]]:
        if self.leaf_size is None:
            return {"leaf-01": self.nodes}
        ns = self.nodes
        return {
            f"leaf-{i // self.leaf_size + 1:02d}": ns[i : i + self.leaf_size]
            for i in range(0, len(ns), self.leaf_size)
        }

    def leaf_of(self, node: str) -> str:
        return next(lf for lf, ns in self.leaves.items() if node in ns)

    def noise(self, *parts: object) -> float:
        rng = random.Random(":".join(map(str, (self.seed, *parts))))
        return 1.0 + rng.uniform(-0.003, 0.003)

    def uplink_factor(self, nodes: Sequence[str]) -> float:
        spanned = {self.leaf_of(n) for n in nodes}
        if len(spanned) < 2:
            return 1.0
        return max(self.uplink.get(lf, 1.0) for lf in spanned)


class FakeLauncher:
    name = "fake"

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.calls: list[list[NcclTest]] = []

    def close(self) -> None:
        pass

    def run_round(
        self,
        tests: Sequence[NcclTest],
        *,
        timeout: float,
        on_done: Optional[Callable[[Measured], None]] = None,
    ) -> list[Measured]:
        seen: set[str] = set()
        for t in tests:  # the launcher runs a round's tests at once: they must be disjoint
            assert not seen & set(t.nodes), f"tests of one call share nodes: {t.nodes}"
            assert len(set(t.nodes)) == len(t.nodes)
            seen |= set(t.nodes)
        self.calls.append(list(tests))
        return [self.one(t, timeout) for t in tests]

    def one(self, t: NcclTest, timeout: float) -> Measured:
        f = self.fleet
        if f.launch_fail & set(t.nodes):
            return Measured(t, failure="launch", message="srun: error: Unable to create step")
        if t.kind == "ib_sweep":
            a, b = t.nodes
            up = f.uplink_factor(t.nodes)
            rails = {
                d: round(
                    PORT_GBITS
                    / max(f.hca.get((a, d), 1.0), f.hca.get((b, d), 1.0))
                    / up
                    * f.noise("ib", a, b, d),
                    2,
                )
                for d in DEVICES
            }
            return Measured(t, rails_gbps=rails, duration_s=12.0, test_time_s=12.0)
        hung = [n for n in t.nodes if n in f.hang]
        if hung:
            return Measured(t, failure="hang", message=f"no result within {timeout:.0f} s",
                            duration_s=timeout, test_time_s=timeout)
        failed = [n for n in t.nodes if n in f.init_fail]
        if failed:
            return Measured(
                t, failure="init", failed_node=failed[0], duration_s=4.0, test_time_s=4.0,
                message=f"{failed[0]}: Test NCCL failure common.cu:1279 'unhandled system error'",
            )
        crashed = [n for n in t.nodes if n in f.crash]
        if crashed:
            return Measured(t, failure="crash", failed_node=crashed[0], duration_s=9.0,
                            test_time_s=9.0, message="remote process exited")
        slow = max(f.slow.get(n, 1.0) for n in t.nodes)
        if t.kind == "single":
            bw = RING / slow
        else:
            per_node = [
                8 * min(RAIL_GBS / f.hca.get((n, d), 1.0) for d in DEVICES) * 0.95
                for n in t.nodes
            ]
            bw = min(min(per_node) / slow / f.uplink_factor(t.nodes), RING)
        bw = round(bw * f.noise(t.kind, *t.nodes), 2)
        secs = 6.0 + 30.0 * RING / bw
        wrong = 12 if f.wrong & set(t.nodes) else 0
        return Measured(t, busbw_gbps=bw, wrong=wrong, duration_s=secs, test_time_s=secs)


def run(fleet: Fleet, *, topology: bool = True, nccl: Optional[NcclProfile] = None,
        leaves: Optional[dict[str, list[str]]] = None) -> tuple[LocalizeReport, FakeLauncher]:
    launcher = FakeLauncher(fleet)
    lv = leaves if leaves is not None else (fleet.leaves if topology else None)
    report = localize(fleet.nodes, launcher, leaves=lv, nccl=nccl, timeout=TIMEOUT)
    return report, launcher


def check(
    report: LocalizeReport,
    fleet: Fleet,
    *,
    bad_nodes: Optional[dict[str, str]] = None,
    bad_links: Optional[set[tuple[str, str]]] = None,
    bad_uplinks: Optional[set[str]] = None,
    rounds: Optional[int] = None,
) -> None:
    bad_nodes = bad_nodes or {}
    bad_links = bad_links or set()
    assert len(report.rounds) <= 3
    if rounds is not None:
        assert len(report.rounds) == rounds, plan_summary(report)
    assert {b.node: b.kind for b in report.bad_nodes} == bad_nodes, plan_summary(report)
    assert {(b.node, b.device) for b in report.bad_links} == bad_links, plan_summary(report)
    assert {b.switch for b in report.bad_uplinks} == (bad_uplinks or set())
    condemned = set(bad_nodes) | {n for n, _ in bad_links}
    assert report.healthy == [n for n in fleet.nodes if n not in condemned]
    assert report.undetermined == []
    assert report.exclude == (fold(sorted(condemned)) if condemned else "")
    for b in report.bad_nodes:
        assert len(b.evidence) >= 2
    for r in report.rounds:
        for t in r.tests:
            assert t.status in ("pass", "slow", "hang", "init_fail", "crash", "wrong", "error")


SIZES = [16, 64, 256]
TOPOLOGIES = [None, 16, 8]  # None: the localizer is not told the topology; else leaf size


def _fleet(size: int, topo: Optional[int], **kw: object) -> Fleet:
    return Fleet(size=size, leaf_size=topo or 16, **kw)  # type: ignore[arg-type]


def _node(size: int, k: int = 0) -> str:
    return f"gpu-{(size // 3 + 1 + 7 * k) % size + 1:03d}"


# --------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_all_healthy_one_round(size: int, topo: Optional[int]) -> None:
    fleet = _fleet(size, topo)
    report, launcher = run(fleet, topology=topo is not None)
    check(report, fleet, rounds=1)
    assert len(launcher.calls) == 1
    assert report.reference_busbw_gbps == pytest.approx(RING, rel=0.005)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_one_slow_node(size: int, topo: Optional[int]) -> None:
    bad = _node(size)
    fleet = _fleet(size, topo, slow={bad: 1.6})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={bad: "slow"}, rounds=3)
    ev = " | ".join(report.bad_nodes[0].evidence)
    assert "(good)" in ev and "z -" in ev and "alone (NVLink, ring)" in ev


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_two_slow_nodes(size: int, topo: Optional[int]) -> None:
    a, b = _node(size), _node(size, 3)
    fleet = _fleet(size, topo, slow={a: 1.6, b: 2.0})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={a: "slow", b: "slow"})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
@pytest.mark.parametrize("where", ["within", "across"])
def test_two_slow_nodes_paired_in_round1(size: int, topo: Optional[int], where: str) -> None:
    fleet = _fleet(size, topo)
    leaves = fleet.leaves if topo is not None else None
    lo = leaf_map(fleet.nodes, leaves)
    groups = plan_round1(fleet.nodes, leaves)
    want_cross = where == "across"
    pairs = [g for g in groups if len(g) == 2 and bool(crossed_uplinks(g, lo)) == want_cross]
    if not pairs:
        pytest.skip("no such pair without topology")
    a, b = pairs[len(pairs) // 2]
    fleet.slow = {a: 1.5, b: 1.5}
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={a: "slow", b: "slow"}, rounds=3)
    assert report.rounds[2].waves >= 2  # retest, sweep, one-node test: a node in each wave


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("leaf", [8, 16, 4])
def test_degraded_uplink(size: int, leaf: int) -> None:
    fleet = Fleet(size=size, leaf_size=leaf)
    if len(fleet.leaves) < 3:
        pytest.skip("fewer than three leaves: see test_degraded_uplink_two_leaves")
    sw = sorted(fleet.leaves)[len(fleet.leaves) // 2]
    fleet.uplink = {sw: 2.0}
    report, _ = run(fleet)
    check(report, fleet, bad_uplinks={sw}, rounds=2)
    assert report.exclude == ""
    assert len(report.bad_uplinks[0].evidence) >= 2
    assert all("across" in e for e in report.bad_uplinks[0].evidence)


def test_degraded_uplink_two_leaves() -> None:
    """Two leaves: every test across one uplink crosses the other; nobody is condemned, and both
    uplinks are reported undetermined."""
    fleet = Fleet(size=16, leaf_size=8, uplink={"leaf-01": 2.0})
    report, _ = run(fleet)
    assert len(report.rounds) <= 3
    assert report.bad_nodes == [] and report.bad_links == [] and report.bad_uplinks == []
    assert report.healthy == fleet.nodes and report.exclude == ""
    assert {u.switch for u in report.undetermined_uplinks} == {"leaf-01", "leaf-02"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_node_that_hangs(size: int, topo: Optional[int]) -> None:
    bad = _node(size)
    fleet = _fleet(size, topo, hang={bad})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={bad: "hang"}, rounds=2)
    assert all("hang" in e for e in report.bad_nodes[0].evidence)
    # two rounds, each ended by the timeout of its hung test
    assert report.test_time_s == pytest.approx(2 * TIMEOUT)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_rank_fails_at_init(size: int, topo: Optional[int]) -> None:
    bad = _node(size, 1)
    fleet = _fleet(size, topo, init_fail={bad})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={bad: "init_fail"}, rounds=2)
    assert all(f"naming {bad}" in e for e in report.bad_nodes[0].evidence)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_degraded_hca_is_a_bad_link(size: int, topo: Optional[int]) -> None:
    bad = _node(size, 2)
    fleet = _fleet(size, topo, hca={(bad, "mlx5_3"): 2.0})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_links={(bad, "mlx5_3")}, rounds=3)
    assert bad not in {b.node for b in report.bad_nodes}
    ev = " | ".join(report.bad_links[0].evidence)
    assert "ib_write_bw" in ev and "mlx5_3" in ev


@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_mixed_faults(topo: Optional[int]) -> None:
    ns = [f"gpu-{i:03d}" for i in (5, 40, 77, 130, 200)]
    fleet = _fleet(
        256, topo, slow={ns[0]: 1.5}, hang={ns[1]}, init_fail={ns[2]},
        hca={(ns[3], "mlx5_6"): 3.0},
    )
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={ns[0]: "slow", ns[1]: "hang", ns[2]: "init_fail"},
          bad_links={(ns[3], "mlx5_6")}, rounds=3)


@pytest.mark.parametrize("topo", TOPOLOGIES)
def test_crash_and_wrong_results(topo: Optional[int]) -> None:
    fleet = _fleet(64, topo, crash={"gpu-011"}, wrong={"gpu-050"})
    report, _ = run(fleet, topology=topo is not None)
    check(report, fleet, bad_nodes={"gpu-011": "crash", "gpu-050": "wrong"}, rounds=2)
    assert any("wrong results" in e for e in report.bad_nodes[1].evidence)


def test_node_slow_on_every_rail_is_a_bad_node() -> None:
    bad = "gpu-020"
    fleet = Fleet(size=64, hca={(bad, d): 2.0 for d in DEVICES})
    report, _ = run(fleet)
    check(report, fleet, bad_nodes={bad: "slow"}, rounds=3)
    assert any("every rail" in e for e in report.bad_nodes[0].evidence)


# --------------------------------------------------------------------------- small and odd fleets
def test_two_node_fleet() -> None:
    fleet = Fleet(size=2)
    report, _ = run(fleet)
    check(report, fleet, rounds=1)
    fleet = Fleet(size=2, slow={"gpu-001": 2.0})
    report, _ = run(fleet, nccl=NcclProfile(multi_gbps_min=330))
    assert report.bad_nodes == [] and report.bad_links == []  # no good partner: nobody condemned
    assert set(report.undetermined) <= {"gpu-001", "gpu-002"} and "gpu-002" not in {
        b.node for b in report.bad_nodes}
    assert len(report.rounds) <= 3


def test_three_node_fleet() -> None:
    fleet = Fleet(size=3)
    report, _ = run(fleet)
    check(report, fleet, rounds=1)
    assert [t.nodes for t in report.rounds[0].tests] == [["gpu-001", "gpu-002", "gpu-003"]]
    fleet = Fleet(size=3, hang={"gpu-002"})
    report, _ = run(fleet)
    assert len(report.rounds) <= 3
    assert {b.node for b in report.bad_nodes} <= {"gpu-002"}


def test_one_node_fleet() -> None:
    report, launcher = run(Fleet(size=1))
    assert report.rounds == [] and report.undetermined == ["gpu-001"] and launcher.calls == []


def test_launch_error_clears_and_condemns_nobody() -> None:
    fleet = Fleet(size=16, launch_fail={"gpu-005"})
    report, _ = run(fleet)
    assert report.bad_nodes == [] and report.bad_links == [] and report.exclude == ""
    assert report.undetermined == ["gpu-005"]
    assert "gpu-005" not in report.healthy and len(report.healthy) == 15
    assert len(report.rounds) <= 3
    assert any(t.status == "error" for t in report.rounds[0].tests)


def test_most_of_the_fleet_bad_never_crashes_nor_condemns_good_nodes() -> None:
    slow = {f"gpu-{i:03d}": 2.0 for i in range(1, 15)}
    fleet = Fleet(size=16, slow=slow)
    report, _ = run(fleet, nccl=NcclProfile(multi_gbps_min=330, single_ring_gbps_min=340))
    assert len(report.rounds) <= 3
    assert not {b.node for b in report.bad_nodes} & {"gpu-015", "gpu-016"}
    assert {b.node for b in report.bad_nodes} <= set(slow)
    # without a floor the median is the slow figure: nothing condemned either way
    report, _ = run(fleet)
    assert not {b.node for b in report.bad_nodes} & {"gpu-015", "gpu-016"}


def test_partial_topology_and_tiny_leaves() -> None:
    fleet = Fleet(size=20, leaf_size=4, slow={"gpu-018": 2.0})
    leaves = {"a": ["gpu-001"], "b": expand("gpu-[002-004]"), "c": expand("gpu-[005-012]")}
    report, _ = run(fleet, leaves=leaves)  # gpu-013..020 uncovered
    assert len(report.rounds) <= 3
    assert {b.node for b in report.bad_nodes} == {"gpu-018"}


def test_on_round_and_clock() -> None:
    fleet = Fleet(size=16, slow={"gpu-003": 2.0})
    seen: list[int] = []
    ticks = iter(range(1000))
    report = localize(fleet.nodes, FakeLauncher(fleet), leaves=fleet.leaves, timeout=TIMEOUT,
                      on_round=lambda r: seen.append(r.round), clock=lambda: float(next(ticks)))
    assert seen == [1, 2, 3] and report.elapsed_s > 0


def test_report_json_shape() -> None:
    fleet = Fleet(size=16, slow={"gpu-003": 2.0})
    report, _ = run(fleet)
    doc = report.model_dump(mode="json", by_alias=True)
    assert doc["schema"] == "clusterkit.nccl-localize/v1"
    for key in ("rounds", "bad_nodes", "bad_links", "bad_uplinks", "healthy", "exclude",
                "elapsed_s"):
        assert key in doc
    t = doc["rounds"][0]["tests"][0]
    assert {"nodes", "busbw_gbps", "status"} <= set(t)
    assert doc["bad_nodes"][0]["evidence"]
    LocalizeReport.model_validate(doc)


def test_plan_summary() -> None:
    fleet = Fleet(size=64, hca={("gpu-010", "mlx5_1"): 2.0})
    report, launcher = run(fleet)
    s = plan_summary(report)
    assert s["rounds"] == 3
    assert s["tests"] == sum(len(c) for c in launcher.calls)
    assert s["test_time_s"] == pytest.approx(report.test_time_s)
    assert s["bad_links"] == ["gpu-010:mlx5_1"] and s["exclude"] == "gpu-010"
    assert s["waves"] == len(launcher.calls)


# --------------------------------------------------------------------------- property test
_KINDS = ["slow", "hang", "init", "hca", "uplink", "none"]


@settings(max_examples=120, deadline=None)
@given(
    size=st.sampled_from([2, 3, 5, 16, 17, 33, 64, 100]),
    leaf=st.sampled_from([None, 3, 4, 5, 8, 16]),
    kind=st.sampled_from(_KINDS),
    pick=st.integers(min_value=0, max_value=10_000),
    factor=st.sampled_from([1.3, 1.6, 2.0, 4.0]),
    seed=st.integers(min_value=0, max_value=1_000),
)
def test_random_single_fault(size: int, leaf: Optional[int], kind: str, pick: int,
                             factor: float, seed: int) -> None:
    fleet = Fleet(size=size, leaf_size=leaf or 16, seed=seed)
    node = fleet.nodes[pick % size]
    dev = DEVICES[pick % 8]
    expect_nodes: dict[str, str] = {}
    expect_links: set[tuple[str, str]] = set()
    expect_up: set[str] = set()
    if kind == "slow":
        fleet.slow = {node: factor}
        expect_nodes = {node: "slow"}
    elif kind == "hang":
        fleet.hang = {node}
        expect_nodes = {node: "hang"}
    elif kind == "init":
        fleet.init_fail = {node}
        expect_nodes = {node: "init_fail"}
    elif kind == "hca":
        fleet.hca = {(node, dev): factor}
        expect_links = {(node, dev)}
    elif kind == "uplink":
        if leaf is None or len(fleet.leaves) < 3:
            return
        sw = sorted(fleet.leaves)[pick % len(fleet.leaves)]
        fleet.uplink = {sw: factor}
        expect_up = {sw}
    report, _ = run(fleet, topology=leaf is not None)
    assert len(report.rounds) <= 3
    condemned = {b.node for b in report.bad_nodes} | {b.node for b in report.bad_links}
    faulty = set(expect_nodes) | {n for n, _ in expect_links}
    # never a healthy node condemned, never a healthy uplink
    assert condemned <= faulty, plan_summary(report)
    assert {u.switch for u in report.bad_uplinks} <= expect_up
    # a leaf holding one node of the fleet: that node and its uplink are in every network test
    # together; the two cannot be told apart (both end undetermined)
    lonely = leaf is not None and (
        (kind == "uplink" and len(fleet.leaves[sorted(fleet.leaves)[pick % len(fleet.leaves)]]) < 2)
        or (kind != "uplink" and len(fleet.leaves[fleet.leaf_of(node)]) < 2)
    )
    if size >= 16 and not lonely:  # enough good partners: found exactly
        check(report, fleet, bad_nodes=expect_nodes, bad_links=expect_links,
              bad_uplinks=expect_up)


# --------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("size", [4, 16, 17, 64, 256, 255])
@pytest.mark.parametrize("leaf", [None, 2, 3, 8, 16, 100])
def test_plan_round1_shape(size: int, leaf: Optional[int]) -> None:
    nodes = [f"n{i:03d}" for i in range(size)]
    leaves = None
    if leaf is not None:
        leaves = {f"L{i // leaf:02d}": nodes[i : i + leaf] for i in range(0, size, leaf)}
    groups = plan_round1(nodes, leaves)
    flat = [n for g in groups for n in g]
    assert sorted(flat) == nodes  # disjoint, covering
    assert all(2 <= len(g) <= 3 for g in groups)
    assert sum(len(g) == 3 for g in groups) == size % 2
    if not leaves:
        return
    lo = leaf_map(nodes, leaves)
    crossing: dict[str, list[frozenset[str]]] = {}
    for g in groups:
        up = crossed_uplinks(g, lo)
        for lf in up:
            crossing.setdefault(lf, []).append(up)
    within = [g for g in groups if not crossed_uplinks(g, lo)]
    assert len(groups) - len(within) <= 1.5 * len(leaves) + 1  # mostly within a leaf
    big = [lf for lf, ns in leaves.items() if len(ns) >= 2]
    if len(big) >= 3:
        for lf in big:
            ups = crossing[lf]
            others = {o for u in ups for o in u if o != lf}
            assert len(ups) >= 2 and len(others) >= 2, (lf, ups)
    elif len(big) == 2 and len(leaves) == 2:
        assert all(len(ups) == 2 for ups in crossing.values())


def _obs(rnd: int, nodes: tuple[str, ...], status: str, lo: dict[str, str],
         kind: str = "allreduce") -> Observation:
    t = NcclTest(f"r{rnd}-{'-'.join(nodes)}", kind, nodes)  # type: ignore[arg-type]
    return Observation(rnd, Measured(t), status, None, elements_of(t, lo))  # type: ignore[arg-type]


def test_infer_rules() -> None:
    lo = {"a": "L1", "b": "L1", "c": "L2", "d": "L2", "e": "L3", "f": "L3"}
    obs = [
        _obs(1, ("a", "b"), "slow", lo),
        _obs(1, ("c", "e"), "pass", lo),  # clears c, e and uplinks L2, L3
        _obs(1, ("d", "f"), "hang", lo),
        _obs(2, ("a", "c"), "slow", lo),  # crosses L1 (uncleared): a or L1
        _obs(2, ("b", "d"), "pass", lo),  # crosses L1, L2: clears b, d, L1
        _obs(2, ("f", "e"), "error", lo),  # could not run: nothing
    ]
    inf = infer(obs)
    assert (UPLINK, "L1") in inf.cleared and (NODE, "b") in inf.cleared
    assert (NODE, "f") not in inf.cleared
    assert [o.round for o in inf.implicated[(NODE, "a")]] == [1, 2]
    assert inf.condemned() == {(NODE, "a"): inf.implicated[(NODE, "a")]}
    assert [o.round for o in inf.implicated[(NODE, "f")]] == [1]  # once: not condemned
    assert (NODE, "f") not in inf.condemned()
    # a passing one-node test clears nothing; a sweep neither clears nor implicates
    assert EFFECTS[("single", "pass")] == "none" and EFFECTS[("ib_sweep", "slow")] == "none"
    inf2 = infer([_obs(3, ("f",), "pass", lo, "single"),
                  _obs(3, ("f", "e"), "slow", lo, "ib_sweep")])
    assert not inf2.cleared and not inf2.implicated
    # a bad test whose elements are all cleared condemns nobody
    inf3 = infer([_obs(1, ("a", "b"), "pass", lo), _obs(2, ("a", "b"), "slow", lo)])
    assert len(inf3.inconsistent) == 1 and not inf3.implicated


def test_elements_and_uplinks() -> None:
    lo = {"a": "L1", "b": "L1", "c": "L2"}
    assert elements_of(NcclTest("k", "allreduce", ("a", "b")), lo) == {(NODE, "a"), (NODE, "b")}
    assert elements_of(NcclTest("k", "allreduce", ("a", "c")), lo) == {
        (NODE, "a"), (NODE, "c"), (UPLINK, "L1"), (UPLINK, "L2")}
    assert elements_of(NcclTest("k", "allreduce", ("a", "c")), {}) == {(NODE, "a"), (NODE, "c")}
    assert leaf_map(["a", "z"], {"L1": ["a", "q"]}) == {"a": "L1", "z": ""}
    assert leaf_map(["a"], {"L1": ["q"]}) == {}


def test_reference_and_judge() -> None:
    ref = reference_from([368.0] * 20 + [200.0], rel=0.02, z_slow=4, floor=None)
    assert ref.median == 368.0 and ref.spread == pytest.approx(0.02 * 368.0)
    t = NcclTest("k", "allreduce", ("a", "b"))
    assert judge(Measured(t, busbw_gbps=367.0), ref)[0] == "pass"
    status, z, _ = judge(Measured(t, busbw_gbps=300.0), ref)
    assert status == "slow" and z is not None and z < -4
    assert judge(Measured(t, busbw_gbps=340.0), ref)[0] == "pass"  # z -3.8
    floored = reference_from([368.0], rel=0.02, z_slow=4, floor=350.0)
    assert judge(Measured(t, busbw_gbps=345.0), floored)[0] == "slow"
    assert judge(Measured(t, failure="hang"), ref)[0] == "hang"
    assert judge(Measured(t, failure="init", failed_node="a"), ref)[0] == "init_fail"
    assert judge(Measured(t, failure="crash"), ref)[0] == "crash"
    assert judge(Measured(t, failure="launch"), ref)[0] == "error"
    assert judge(Measured(t, busbw_gbps=368.0, wrong=3), ref)[0] == "wrong"
    assert judge(Measured(t), ref)[0] == "error"
    nothing = reference_from([], rel=0.02, z_slow=4, floor=None)
    assert judge(Measured(t, busbw_gbps=368.0), nothing)[0] == "error"  # unknown is not pass


def test_bad_rails_and_classification() -> None:
    rails = {d: 390.0 for d in DEVICES}
    assert bad_rails(rails, {}, 391.0) == {}
    assert set(bad_rails({**rails, "mlx5_3": 195.0}, {}, 391.0)) == {"mlx5_3"}
    assert set(bad_rails(rails, {"mlx5_7": "no link"}, None)) == {"mlx5_7"}
    half = {d: 195.0 for d in DEVICES}
    assert set(bad_rails(half, {}, 390.0)) == set(DEVICES)  # every rail, against the reference
    assert bad_rails(half, {}, None) == {}  # no reference: only the node's own best rail
    assert classify_node({"mlx5_3": "x"}, 8, False) == "links"
    assert classify_node({d: "x" for d in DEVICES}, 8, False) == "node"
    assert classify_node({}, 8, True) == "node"
    assert classify_node({"mlx5_3": "x"}, 8, True) == "node_and_links"
    assert classify_node(None, 0, None) == "node"


def test_pack_waves_disjoint() -> None:
    pool = ["g1", "g2", "g3"]

    def chooser(busy: set[str]) -> Optional[str]:
        return next((p for p in pool if p not in busy), None)

    waves = pack_waves([(("a",), chooser), (("a",), chooser), (("a",), None), (("b",), chooser)])
    assert [[g for _, g in w] for w in waves] == [
        [("a", "g1"), ("b", "g2")], [("a", "g1")], [("a",)]]
    for w in waves:
        flat = [n for _, g in w for n in g]
        assert len(flat) == len(set(flat))
