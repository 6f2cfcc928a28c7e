"""Localization: which node, which rail (HCA, cable) or which leaf-switch uplink is at fault.

At most three rounds, however large the fleet; each round's tests run at once.

1. **Disjoint groups.** Pairs (a triple when the count is odd). With topology known, most pairs
   sit within a leaf; each leaf also sends two nodes across, the leaves arranged in a cycle (leaf
   *i* pairs with leaf *i+1*), so every leaf's uplink is crossed by two tests with two different
   other leaves (with only two leaves: two tests between them). The fleet's reference busbw is
   the median of this round's all-reduce figures.
2. **Suspects against known-good partners.** Each node of a bad round-1 test that no passing
   test cleared runs with a cleared partner, of its own leaf when one is free (the test then
   crosses no uplink); suspects left without a partner run with each other. Each suspect uplink
   is crossed by a test of cleared nodes.
3. **Only when needed.** For each node still implicated: a retest with a different good partner
   when one test implicates it so far; the per-rail ``ib_write_bw`` sweep against a good partner
   and a one-node (NVLink, ring) test when its tests were slow. A node takes part in several
   tests, so the round runs as waves of disjoint tests, one after another (recorded as one round).

**Inference** (:func:`infer`, driven by the :data:`EFFECTS` table): the elements are nodes and
uplinks (one per leaf). A passing all-reduce clears every node in it and every uplink it crosses
(it crosses the uplinks of each leaf it spans when it spans more than one). A bad test (slow,
hang, init failure, crash, wrong results) holds at least one uncleared element; when exactly one
is left, the test implicates it. An element is condemned only when two tests implicate it, never
on one. A test that could not run (``error``) implicates and clears nothing.

**Classification** of a condemned node (:func:`classify_node`): hang, init failure, crash or
wrong results name the node's kind; a slow node with some (not all) rails slow in the sweep and a
passing NVLink test is a bad link (node, device) and not a bad node; slow on every rail, or slow
with NVLink alone, or slow with every rail and NVLink fine, it is a bad node.

Pure planning and scoring functions; the only I/O is the launcher's ``run_round``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional, Protocol

from clusterkit.hostlist import expand, fold_display, natural_key
from clusterkit.nccl.models import (
    BadLink,
    BadNode,
    BadUplink,
    LocalizeReport,
    Measured,
    NcclTest,
    RoundRecord,
    TestKind,
    TestRecord,
    TestStatus,
)
from clusterkit.profiles import NcclProfile

__all__ = [
    "EFFECTS",
    "Element",
    "Inference",
    "Observation",
    "Reference",
    "RoundRunner",
    "bad_rails",
    "classify_node",
    "crossed_uplinks",
    "elements_of",
    "infer",
    "judge",
    "leaf_map",
    "localize",
    "pack_waves",
    "plan_round1",
    "plan_summary",
    "reference_from",
]


class RoundRunner(Protocol):
    """What the localizer needs of a launcher (:mod:`clusterkit.nccl.launch`)."""

    def run_round(
        self,
        tests: Sequence[NcclTest],
        *,
        timeout: float,
        on_done: Optional[Callable[[Measured], None]] = None,
    ) -> list[Measured]: ...


# --------------------------------------------------------------------------- elements and rules
#: ("node", name) or ("uplink", leaf switch)
Element = tuple[str, str]
NODE = "node"
UPLINK = "uplink"
#: The pseudo-leaf of nodes a partial topology does not place; never reported as a switch.
NO_LEAF = ""

Effect = Literal["clear", "implicate", "none"]
_BAD_STATUSES: tuple[TestStatus, ...] = ("slow", "hang", "init_fail", "crash", "wrong")

#: What a test says about its elements, by test kind and status. Sweeps classify a condemned node's
#: rails; they neither clear nor implicate. A one-node test that passes says nothing of the node's
#: network, so it clears nothing; a bad one implicates its node alone.
EFFECTS: dict[tuple[TestKind, TestStatus], Effect] = {
    **{("allreduce", s): "implicate" for s in _BAD_STATUSES},
    ("allreduce", "pass"): "clear",
    ("allreduce", "error"): "none",
    **{("single", s): "implicate" for s in _BAD_STATUSES},
    ("single", "pass"): "none",
    ("single", "error"): "none",
    **{("ib_sweep", s): "none" for s in (*_BAD_STATUSES, "pass", "error")},
}

NodeKind = Literal["slow", "hang", "init_fail", "crash", "wrong"]
#: A node's kind from the statuses of the tests that implicate it: the first one present wins.
KIND_ORDER: tuple[NodeKind, ...] = ("wrong", "init_fail", "crash", "hang", "slow")

#: Measured.failure -> test status
_FAILURE_STATUS: dict[str, TestStatus] = {
    "hang": "hang",
    "init": "init_fail",
    "crash": "crash",
    "launch": "error",
}

#: A rail is slow below this share of the node's best rail or of the reference rail figure.
RAIL_REL = 0.9
#: Good nodes whose one-node test serves as the reference of round 3's one-node tests.
REFERENCE_SINGLES = 3
#: Round 3 runs at most this many waves; a test that finds no room stays unrun.
MAX_WAVES = 4


def leaf_map(nodes: Sequence[str], leaves: Optional[Mapping[str, Sequence[str]]]) -> dict[str, str]:
    """node -> leaf for the fleet; ``{}`` when no topology covers any node of the fleet. Nodes the
    topology leaves out are put in the pseudo-leaf :data:`NO_LEAF`."""
    if not leaves:
        return {}
    fleet = set(nodes)
    out: dict[str, str] = {}
    for leaf in sorted(leaves, key=natural_key):
        members = leaves[leaf]
        for n in expand(members) if isinstance(members, str) else members:
            if n in fleet and n not in out:
                out[n] = str(leaf)
    if not out:
        return {}
    for n in nodes:
        out.setdefault(n, NO_LEAF)
    return out


def crossed_uplinks(nodes: Iterable[str], leaf_of: Mapping[str, str]) -> frozenset[str]:
    """The leaves whose uplinks a multi-node test crosses: every leaf it spans, when it spans
    more than one; none otherwise (or without topology)."""
    spanned = {leaf_of[n] for n in nodes if n in leaf_of}
    return frozenset(spanned) if len(spanned) > 1 else frozenset()


def elements_of(test: NcclTest, leaf_of: Mapping[str, str]) -> frozenset[Element]:
    """The elements a test depends on: its nodes, and the uplinks an all-reduce crosses."""
    els: set[Element] = {(NODE, n) for n in test.nodes}
    if test.kind == "allreduce":
        els |= {(UPLINK, leaf) for leaf in crossed_uplinks(test.nodes, leaf_of)}
    elif test.kind == "single":
        els = {(NODE, test.nodes[0])} if test.nodes else set()
    return frozenset(els)


# --------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Reference:
    """The fleet's reference for a kind of test: robust z-score against the median with a floor
    on the spread, plus an absolute floor. ``median`` None: no figure to compare against."""

    median: Optional[float]
    spread: Optional[float]
    floor: Optional[float]
    z_slow: float
    count: int = 0

    def z(self, value: float) -> Optional[float]:
        if self.median is None or not self.spread:
            return None
        return (value - self.median) / self.spread

    def verdict(self, value: float) -> tuple[Optional[bool], Optional[float]]:
        """(slow?, z); slow is None when there is nothing to judge against."""
        z = self.z(value)
        below_floor = self.floor is not None and value < self.floor
        if z is None and self.floor is None:
            return None, None
        return bool(below_floor or (z is not None and z < -self.z_slow)), z


def reference_from(
    values: Iterable[Optional[float]], *, rel: float, z_slow: float, floor: Optional[float]
) -> Reference:
    """Median of the figures, spread = max(1.4826 x MAD, rel x median)."""
    vals = [float(v) for v in values if v is not None and v > 0]
    if not vals:
        return Reference(None, None, floor, z_slow, 0)
    med = statistics.median(vals)
    mad = statistics.median([abs(v - med) for v in vals])
    spread = max(1.4826 * mad, rel * med)
    return Reference(med, spread, floor, z_slow, len(vals))


def judge(m: Measured, ref: Reference) -> tuple[TestStatus, Optional[float], str]:
    """A measured all-reduce or one-node test -> (status, z, why). Sweeps are judged by
    :func:`bad_rails`; here a sweep with figures is ``pass`` and one without is ``error``."""
    if m.failure is not None:
        return _FAILURE_STATUS.get(m.failure, "error"), None, m.message or m.failure
    if m.wrong:
        return "wrong", None, f"{m.wrong} wrong results"
    if m.test.kind == "ib_sweep":
        if not m.rails_gbps and not m.rails_failed:
            return "error", None, m.message or "no rail figure"
        return "pass", None, ""
    if m.busbw_gbps is None:
        return "error", None, m.message or "no busbw figure in the output"
    slow, z = ref.verdict(m.busbw_gbps)
    if slow is None:
        return "error", None, "no reference to judge against (no figure, no profile floor)"
    return ("slow" if slow else "pass"), z, ""


def bad_rails(
    rails_gbps: Mapping[str, float],
    rails_failed: Mapping[str, str],
    reference_rail: Optional[float],
    *,
    rel: float = RAIL_REL,
) -> dict[str, str]:
    """device -> why, for the rails of a sweep that are dead or slow: below ``rel`` x the node's
    best rail, or below ``rel`` x the reference rail figure (a good pair's median)."""
    out: dict[str, str] = {dev: f"no figure ({why})" for dev, why in rails_failed.items()}
    if not rails_gbps:
        return out
    best = max(rails_gbps.values())
    for dev, v in rails_gbps.items():
        if v < rel * best:
            out[dev] = f"{v:.1f} Gb/s, best rail {best:.1f} Gb/s"
        elif reference_rail is not None and v < rel * reference_rail:
            out[dev] = f"{v:.1f} Gb/s, reference {reference_rail:.1f} Gb/s"
    return out


NodeClass = Literal["links", "node", "node_and_links"]


def classify_node(
    sweep: Optional[Mapping[str, str]], rails_total: int, single_slow: Optional[bool]
) -> NodeClass:
    """A condemned slow node: ``links`` (some rails slow, NVLink fine), else ``node`` (every
    rail slow, NVLink slow, or nothing on the rails or NVLink to blame), ``node_and_links`` when
    NVLink is slow and some rails too. ``sweep``: :func:`bad_rails` (None: no sweep figures)."""
    some = bool(sweep) and len(sweep or {}) < rails_total
    if single_slow:
        return "node_and_links" if some else "node"
    return "links" if some else "node"


# --------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class Observation:
    round: int
    measured: Measured
    status: TestStatus
    z: Optional[float]
    elements: frozenset[Element]
    why: str = ""

    @property
    def test(self) -> NcclTest:
        return self.measured.test

    @property
    def effect(self) -> Effect:
        return EFFECTS.get((self.test.kind, self.status), "none")


@dataclass
class Inference:
    cleared: set[Element] = field(default_factory=set)
    #: element -> the bad tests whose only uncleared element it is
    implicated: dict[Element, list[Observation]] = field(default_factory=dict)
    #: bad tests with several uncleared elements
    ambiguous: list[Observation] = field(default_factory=list)
    #: bad tests with every element cleared (an intermittent fault; condemns nobody)
    inconsistent: list[Observation] = field(default_factory=list)

    def condemned(self) -> dict[Element, list[Observation]]:
        return {e: obs for e, obs in self.implicated.items() if len(obs) >= 2}

    def suspects(self) -> set[Element]:
        """Uncleared elements of bad tests."""
        out = set(self.implicated)
        for o in self.ambiguous:
            out |= o.elements - self.cleared
        return out


def infer(observations: Iterable[Observation]) -> Inference:
    """Apply :data:`EFFECTS`: clear what passing tests hold, then let each bad test implicate its
    one remaining uncleared element."""
    obs = list(observations)
    inf = Inference()
    for o in obs:
        if o.effect == "clear":
            inf.cleared |= o.elements
    for o in obs:
        if o.effect != "implicate":
            continue
        left = o.elements - inf.cleared
        if len(left) == 1:
            inf.implicated.setdefault(next(iter(left)), []).append(o)
        elif left:
            inf.ambiguous.append(o)
        else:
            inf.inconsistent.append(o)
    return inf


def _kind_of(obs: Iterable[Observation]) -> NodeKind:
    statuses = {o.status for o in obs}
    for k in KIND_ORDER:
        if k in statuses:
            return k
    return "slow"


# --------------------------------------------------------------------------- planning
def _nk(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def _pairs(names: Sequence[str]) -> list[list[str]]:
    out = [list(names[i : i + 2]) for i in range(0, len(names) - 1, 2)]
    if len(names) % 2:
        if out:
            out[-1].append(names[-1])
        else:
            out.append([names[-1]])
    return out


def plan_round1(
    nodes: Sequence[str], leaves: Optional[Mapping[str, Sequence[str]]] = None
) -> list[tuple[str, ...]]:
    """Disjoint groups covering the fleet: pairs, one triple when the count is odd.

    With topology: the leaves holding two or more of the nodes form a cycle (sorted by name);
    leaf *i*'s next node pairs with leaf *i+1*'s next node, so each such leaf sends two nodes
    across and its uplink is crossed by two tests, with two different other leaves when there
    are three or more leaves (two tests between them when there are two). The other nodes pair
    within their leaf. What is left (a leaf's odd node, the node of a one-node leaf, nodes the
    topology does not place) pairs up across leaves; a last odd node joins a pair of its own
    leaf when there is one. A fleet of one node gives ``[(node,)]``."""
    fleet = list(dict.fromkeys(nodes))
    leaf_of = leaf_map(fleet, leaves)
    if not leaf_of:
        return [tuple(g) for g in _pairs(fleet)]
    by_leaf: dict[str, list[str]] = {}
    for n in fleet:
        by_leaf.setdefault(leaf_of[n], []).append(n)
    cycle = [lf for lf in _nk(by_leaf) if lf != NO_LEAF and len(by_leaf[lf]) >= 2]
    pools = {lf: list(by_leaf[lf]) for lf in cycle}
    cross: list[list[str]] = []
    if len(cycle) >= 2:
        for i, lf in enumerate(cycle):
            nxt = cycle[(i + 1) % len(cycle)]
            cross.append([pools[lf].pop(0), pools[nxt].pop(0)])
    within: list[list[str]] = []
    rest: list[str] = []
    for lf in cycle:
        pool = pools[lf]
        within.extend(pool[i : i + 2] for i in range(0, len(pool) - 1, 2))
        if len(pool) % 2:
            rest.append(pool[-1])
    rest += [n for lf, ns in by_leaf.items() if lf not in pools for n in ns]
    position = {n: i for i, n in enumerate(fleet)}
    rest.sort(key=position.__getitem__)
    extra = [rest[i : i + 2] for i in range(0, len(rest) - 1, 2)]
    groups = cross + within + extra
    if len(rest) % 2:
        last = rest[-1]
        home = [g for g in within if leaf_of[g[0]] == leaf_of[last] and len(g) == 2]
        pairs = home or [g for g in groups if len(g) == 2]
        if pairs:
            pairs[-1].append(last)
        else:
            groups.append([last])
    return [tuple(g) for g in groups]


class _Partners:
    """Picks known-good partners: same leaf first, then a leaf whose uplink is cleared (with the
    suspect's own uplink cleared too: the test crosses nothing suspect), then any good node;
    the least used first, then by name."""

    def __init__(self, good: Iterable[str], leaf_of: Mapping[str, str], cleared: set[Element]):
        self.good = _nk(set(good))
        self.leaf_of = leaf_of
        self.cleared = cleared
        self.used: dict[str, int] = {}

    def _rank(self, node: str, cand: str) -> tuple[int, int]:
        a, b = self.leaf_of.get(node), self.leaf_of.get(cand)
        if a == b:
            r = 0
        elif (UPLINK, a or "") in self.cleared and (UPLINK, b or "") in self.cleared:
            r = 1
        else:
            r = 2
        return r, self.used.get(cand, 0)

    def pick(
        self,
        node: str,
        busy: set[str],
        avoid: Iterable[str] = (),
        *,
        same_leaf: bool = False,
        clean_path: bool = False,
    ) -> Optional[str]:
        """A free good partner for ``node``; ``same_leaf``: only of its leaf; ``clean_path``:
        only one whose test crosses no uncleared uplink."""
        banned = set(avoid) | busy | {node}
        best: Optional[str] = None
        best_rank: Optional[tuple[int, int]] = None
        for c in self.good:
            if c in banned:
                continue
            rank = self._rank(node, c)
            if (same_leaf and rank[0] != 0) or (clean_path and rank[0] > 1):
                continue
            if best_rank is None or rank < best_rank:
                best, best_rank = c, rank
                if rank == (0, 0):
                    break
        if best is not None:
            self.used[best] = self.used.get(best, 0) + 1
        return best

    def across(
        self,
        leaf: str,
        busy: set[str],
        avoid_leaves: Iterable[str] = (),
        *,
        require_cleared: bool = False,
    ) -> Optional[tuple[str, str]]:
        """Two good nodes, one in ``leaf`` and one in another leaf (preferably with a cleared
        uplink, not in ``avoid_leaves``): a test across ``leaf``'s uplink and nothing else
        suspect."""
        mine = [c for c in self.good if self.leaf_of.get(c) == leaf and c not in busy]
        if not mine:
            return None
        x = min(mine, key=lambda c: self.used.get(c, 0))
        avoid = set(avoid_leaves)
        best: Optional[str] = None
        best_rank: Optional[tuple[int, int, int]] = None
        for c in self.good:
            lf = self.leaf_of.get(c)
            if c in busy or lf == leaf or lf is None or lf == NO_LEAF:
                continue
            if require_cleared and (UPLINK, lf) not in self.cleared:
                continue
            rank = (
                0 if (UPLINK, lf) in self.cleared else 1,
                1 if lf in avoid else 0,
                self.used.get(c, 0),
            )
            if best_rank is None or rank < best_rank:
                best, best_rank = c, rank
        if best is None:
            return None
        for c in (x, best):
            self.used[c] = self.used.get(c, 0) + 1
        return x, best


Chooser = Callable[[set[str]], Optional[str]]


def pack_waves(
    requests: Sequence[tuple[tuple[str, ...], Optional[Chooser]]],
    *,
    max_waves: int = MAX_WAVES,
) -> list[list[tuple[int, tuple[str, ...]]]]:
    """First-fit packing of tests into waves of disjoint tests. Each request: fixed nodes, and
    optionally a partner chooser given the wave's busy nodes (None: no partner fits, try the next
    wave). Returns the waves as (request index, nodes); a request that fits in no wave is
    dropped."""
    waves: list[list[tuple[int, tuple[str, ...]]]] = []
    busy: list[set[str]] = []
    for i, (fixed, chooser) in enumerate(requests):
        for w in range(max_waves):
            if w == len(waves):
                waves.append([])
                busy.append(set())
            if busy[w] & set(fixed):
                continue
            group = tuple(fixed)
            if chooser is not None:
                p = chooser(busy[w])
                if p is None:
                    continue
                group = group + (p,)
            waves[w].append((i, group))
            busy[w].update(group)
            break
    return [w for w in waves if w]


# --------------------------------------------------------------------------- the run
@dataclass
class _Run:
    fleet: list[str]
    leaf_of: dict[str, str]
    prof: NcclProfile
    timeout: float
    launcher: RoundRunner
    clock: Callable[[], float]
    on_round: Optional[Callable[[RoundRecord], None]]
    observations: list[Observation] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    ref: Optional[Reference] = None
    single_ref: Optional[Reference] = None
    rail_ref: Optional[float] = None
    together: dict[str, set[str]] = field(default_factory=dict)  # node -> nodes tested with it
    reference_keys: set[str] = field(default_factory=set)

    # ----- running a round
    def run(self, waves: list[list[NcclTest]]) -> list[Measured]:
        number = len(self.rounds) + 1
        started = self.clock()
        results: list[Measured] = []
        test_time = 0.0
        for wave in waves:
            got = self._run_wave(wave)
            results.extend(got)
            test_time += max((_test_time(m) for m in got), default=0.0)
        for m in results:
            if m.test.kind == "allreduce":
                for n in m.test.nodes:
                    self.together.setdefault(n, set()).update(set(m.test.nodes) - {n})
        if number == 1:
            self.ref = reference_from(
                (m.busbw_gbps for m in results if m.test.kind == "allreduce" and not m.failure
                 and not m.wrong),
                rel=self.prof.spread_floor_rel,
                z_slow=self.prof.z_slow,
                floor=self.prof.multi_gbps_min,
            )
        self._references(results)
        records = []
        for m in results:
            ref = self.single_ref if m.test.kind == "single" else self.ref
            status, z, why = judge(m, ref or _NO_REF)
            obs = Observation(number, m, status, z, elements_of(m.test, self.leaf_of), why)
            if m.test.key not in self.reference_keys:
                self.observations.append(obs)
            records.append(self._record(obs))
        rec = RoundRecord(
            round=number,
            tests=records,
            elapsed_s=round(self.clock() - started, 3),
            test_time_s=round(test_time, 3),
            waves=max(1, len(waves)),
        )
        self.rounds.append(rec)
        if self.on_round is not None:
            self.on_round(rec)
        return results

    def _run_wave(self, wave: list[NcclTest]) -> list[Measured]:
        try:
            got = list(self.launcher.run_round(wave, timeout=self.timeout))
        except Exception as exc:  # a launcher must not raise; if one does, nothing is condemned
            return [Measured(t, failure="launch", message=f"launcher error: {exc}") for t in wave]
        by_key = {m.test.key: m for m in got}
        return [
            by_key.get(t.key)
            or Measured(t, failure="launch", message="no result from the launcher")
            for t in wave
        ]

    def _references(self, results: list[Measured]) -> None:
        """Round 3's references: one-node tests and a sweep on good nodes."""
        singles = [m.busbw_gbps for m in results if m.test.key in self.reference_keys
                   and m.test.kind == "single" and not m.failure and not m.wrong]
        if any(m.test.kind == "single" for m in results):
            self.single_ref = reference_from(
                singles,
                rel=self.prof.spread_floor_rel,
                z_slow=self.prof.z_slow,
                floor=self.prof.single_ring_gbps_min,
            )
        rails = [v for m in results if m.test.key in self.reference_keys
                 and m.test.kind == "ib_sweep" and not m.failure for v in m.rails_gbps.values()]
        if rails:
            self.rail_ref = statistics.median(rails)

    def _record(self, o: Observation) -> TestRecord:
        m = o.measured
        msg = o.why or m.message
        if m.test.key in self.reference_keys:
            msg = ("reference (good nodes); " + msg).rstrip("; ")
        if m.test.kind == "ib_sweep" and o.status == "pass":
            bad = bad_rails(m.rails_gbps, m.rails_failed, self.rail_ref)
            if bad:
                msg = "; ".join(f"{d}: {w}" for d, w in sorted(bad.items()))
                return TestRecord(kind=m.test.kind, nodes=list(m.test.nodes),
                                  rails_gbps=dict(m.rails_gbps), status="slow", message=msg)
        return TestRecord(
            kind=m.test.kind,
            nodes=list(m.test.nodes),
            busbw_gbps=m.busbw_gbps,
            z=None if o.z is None else round(o.z, 2),
            rails_gbps=dict(m.rails_gbps),
            status=o.status,
            message=msg,
        )

    # ----- planning rounds 2 and 3
    def good_nodes(self, inf: Inference) -> list[str]:
        return [n for n in self.fleet if (NODE, n) in inf.cleared]

    def suspect_nodes(self, inf: Inference) -> list[str]:
        """Uncleared nodes of bad or unrun all-reduce tests (condemned ones included)."""
        out: set[str] = set()
        for o in self.observations:
            if o.test.kind == "allreduce" and o.status != "pass":
                out |= {n for n in o.test.nodes if (NODE, n) not in inf.cleared}
        return _nk(out)

    def suspect_uplinks(self, inf: Inference) -> list[str]:
        return _nk(e[1] for e in inf.suspects() if e[0] == UPLINK and e[1] != NO_LEAF)

    def plan_round2(self, inf: Inference) -> list[tuple[str, ...]]:
        partners = _Partners(self.good_nodes(inf), self.leaf_of, inf.cleared)
        busy: set[str] = set()
        groups: list[tuple[str, ...]] = []
        alone: list[str] = []
        suspects = self.suspect_nodes(inf)
        for s in suspects:
            if s in busy:
                continue
            before = self.together.get(s, set())
            p = partners.pick(s, busy, before, same_leaf=True)
            leaf = self.leaf_of.get(s)
            if p is None and leaf is not None and (UPLINK, leaf) not in inf.cleared:
                # no good node of its own leaf, and its uplink suspect: another suspect of the
                # leaf (a pass clears both, and crosses nothing)
                p = next((q for q in suspects if q != s and q not in busy and q not in before
                          and self.leaf_of.get(q) == leaf), None)
            if p is None:
                p = partners.pick(s, busy, before)
            if p is None:
                alone.append(s)
                continue
            groups.append((s, p))
            busy |= {s, p}
        alone = [s for s in alone if s not in busy]
        # suspects without a good partner: with each other, same leaf first, new pairs first
        while len(alone) >= 2:
            s = alone.pop(0)
            alone.sort(key=lambda c: (self.leaf_of.get(c) != self.leaf_of.get(s),
                                      c in self.together.get(s, set()), natural_key(c)))
            groups.append((s, alone.pop(0)))
            busy |= set(groups[-1])
        for leaf in self.suspect_uplinks(inf):
            pair = partners.across(leaf, busy)
            if pair is not None:
                groups.append(pair)
                busy |= set(pair)
        return groups

    def plan_round3(self, inf: Inference) -> list[list[NcclTest]]:
        """Waves of disjoint tests: retests of nodes implicated by fewer than two tests, the
        sweep and the one-node test of nodes whose tests were slow, another test across each
        unsettled uplink (when a leaf with a cleared uplink exists), and references on good
        nodes. Empty when nothing is left to learn."""
        partners = _Partners(self.good_nodes(inf), self.leaf_of, inf.cleared)
        condemned = inf.condemned()
        requests: list[tuple[tuple[str, ...], Optional[Chooser]]] = []
        kinds: list[TestKind] = []
        sweeps: list[str] = []
        for s in self.suspect_nodes(inf):
            el = (NODE, s)
            implicating = inf.implicated.get(el, [])
            bad = [o for o in self.observations if o.status in _BAD_STATUSES and s in o.test.nodes]
            if len(implicating) < 2:
                requests.append(((s,), _chooser(partners, s, self.together.get(s, ()))))
                kinds.append("allreduce")
            if bad and _kind_of(implicating if el in condemned else bad) == "slow":
                sweeps.append(s)
        for s in sweeps:
            requests.append(((s,), _chooser(partners, s, (), clean_path=True)))
            kinds.append("ib_sweep")
        for s in sweeps:
            requests.append(((s,), None))
            kinds.append("single")
        for leaf in self.suspect_uplinks(inf):
            if (UPLINK, leaf) in condemned:
                continue
            crossed_with = {self.leaf_of.get(n, NO_LEAF) for o in self.observations
                            if o.test.kind == "allreduce" and (UPLINK, leaf) in o.elements
                            for n in o.test.nodes}
            pair = partners.across(leaf, set(), crossed_with, require_cleared=True)
            if pair is not None:
                requests.append((pair, None))
                kinds.append("allreduce")
        if not requests:
            return []
        references: set[int] = set()
        good = self.good_nodes(inf)
        if sweeps:
            for n in _spread_pick(good, REFERENCE_SINGLES):
                references.add(len(requests))
                requests.append(((n,), None))
                kinds.append("single")
            if len(good) >= 2:
                a = good[len(good) // 2]
                references.add(len(requests))
                requests.append(((a,), _chooser(partners, a, (), clean_path=True)))
                kinds.append("ib_sweep")
        number = len(self.rounds) + 1
        waves: list[list[NcclTest]] = []
        counter = 0
        for w, wave in enumerate(pack_waves(requests), 1):
            tests = []
            for idx, group in wave:
                counter += 1
                kind = kinds[idx]
                t = NcclTest(f"r{number}-w{w}-t{counter:03d}", kind,
                             group[:1] if kind == "single" else group)
                if idx in references:
                    self.reference_keys.add(t.key)
                tests.append(t)
            waves.append(tests)
        return waves


_NO_REF = Reference(None, None, None, 4.0, 0)
_SCHEMA: str = LocalizeReport.model_fields["schema_"].default


def _chooser(
    partners: _Partners, node: str, avoid: Iterable[str], *, clean_path: bool = False
) -> Chooser:
    """A partner chooser for :func:`pack_waves`: a good node not in ``avoid`` (nodes already
    tested with ``node``) when one is free, else any free good node; ``clean_path``: only
    partners whose test crosses no uncleared uplink (a sweep must measure the node's rails)."""
    avoid_set = set(avoid)

    def choose(busy: set[str]) -> Optional[str]:
        p = partners.pick(node, busy, avoid_set, clean_path=clean_path)
        if p is None and avoid_set:
            p = partners.pick(node, busy, clean_path=clean_path)
        return p

    return choose


def _spread_pick(names: Sequence[str], k: int) -> list[str]:
    if len(names) <= k:
        return list(names)
    step = len(names) / k
    return [names[int(i * step + step / 2)] for i in range(k)]


def _test_time(m: Measured) -> float:
    return float(m.test_time_s if m.test_time_s is not None else m.duration_s or 0.0)


# --------------------------------------------------------------------------- evidence
def _fmt_nodes(nodes: Sequence[str], cleared: set[Element], leaf_of: Mapping[str, str],
               crossed: frozenset[str]) -> str:
    parts = []
    for n in nodes:
        tags = []
        if crossed and n in leaf_of:
            tags.append(leaf_of[n] or "no leaf")
        if (NODE, n) in cleared:
            tags.append("good")
        parts.append(f"{n} ({', '.join(tags)})" if tags else n)
    return " + ".join(parts)


def describe(o: Observation, cleared: set[Element], leaf_of: Mapping[str, str],
             ref: Optional[Reference], single_ref: Optional[Reference],
             timeout: Optional[float] = None) -> str:
    """One human-readable line for a test: round, nodes (partners marked good), figures."""
    m = o.measured
    t = m.test
    crossed = crossed_uplinks(t.nodes, leaf_of) if t.kind == "allreduce" else frozenset()
    if t.kind == "single":
        who = f"{t.nodes[0]} alone (NVLink, ring)"
    else:
        who = _fmt_nodes(t.nodes, cleared, leaf_of, crossed)
    if crossed:
        who += f" across {', '.join(x or 'no leaf' for x in _nk(crossed))}"
    head = f"round {o.round}: {who}"
    if o.status == "hang":
        limit = f"the {timeout:.0f} s timeout" if timeout else "the timeout"
        return f"{head}: hang, ended by {limit}" + (f" ({m.message})" if m.message else "")
    if o.status in ("init_fail", "crash"):
        named = f" naming {m.failed_node}" if m.failed_node else ""
        what = "init failure" if o.status == "init_fail" else "crash"
        return f"{head}: {what}{named}" + (f": {m.message}" if m.message else "")
    if o.status == "wrong":
        return f"{head}: {m.wrong} wrong results (data corruption)"
    if o.status == "error":
        return f"{head}: could not run ({o.why or m.message})"
    r = single_ref if t.kind == "single" else ref
    fig = f"{m.busbw_gbps:.1f} GB/s" if m.busbw_gbps is not None else "no figure"
    if o.z is not None and r is not None and r.median is not None:
        fig += f", z {o.z:.1f} (reference {r.median:.1f})"
    if r is not None and r.floor is not None and m.busbw_gbps is not None \
            and m.busbw_gbps < r.floor:
        fig += f", below the floor {r.floor:.1f}"
    return f"{head}: {fig}"


def _describe_sweep(o: Observation, bad: Mapping[str, str], cleared: set[Element],
                    rail_ref: Optional[float]) -> str:
    t = o.test
    peer = t.nodes[1] if len(t.nodes) > 1 else "?"
    good = " (good)" if (NODE, peer) in cleared else ""
    rails = o.measured.rails_gbps
    ref = f", reference rail {rail_ref:.1f} Gb/s" if rail_ref is not None else ""
    if bad:
        what = "; ".join(f"{d} {w}" for d, w in sorted(bad.items()))
    elif rails:
        what = f"every rail fine ({min(rails.values()):.1f}-{max(rails.values()):.1f} Gb/s)"
    else:
        what = "no rail figure"
    return f"round {o.round}: ib_write_bw {t.nodes[0]} -> {peer}{good}: {what}{ref}"


# --------------------------------------------------------------------------- entry point
def localize(
    nodes: Sequence[str],
    launcher: RoundRunner,
    *,
    leaves: Optional[Mapping[str, Sequence[str]]] = None,
    nccl: Optional[NcclProfile] = None,
    timeout: Optional[float] = None,
    on_round: Optional[Callable[[RoundRecord], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> LocalizeReport:
    """Find the bad nodes, rails and uplinks among ``nodes`` in at most three rounds."""
    prof = nccl or NcclProfile()
    t0 = clock()
    fleet = list(dict.fromkeys(nodes))
    run = _Run(
        fleet=fleet,
        leaf_of=leaf_map(fleet, leaves),
        prof=prof,
        timeout=float(timeout if timeout is not None else prof.test_timeout_s),
        launcher=launcher,
        clock=clock,
        on_round=on_round,
    )
    groups = [g for g in plan_round1(fleet, leaves) if len(g) >= 2]
    if groups:
        run.run([[NcclTest(f"r1-t{i:03d}", "allreduce", g) for i, g in enumerate(groups, 1)]])
        inf = infer(run.observations)
        if run.suspect_nodes(inf) or run.suspect_uplinks(inf):
            g2 = run.plan_round2(inf)
            if g2:
                n = len(run.rounds) + 1
                run.run([[NcclTest(f"r{n}-t{i:03d}", "allreduce", g)
                          for i, g in enumerate(g2, 1)]])
                inf = infer(run.observations)
        waves = run.plan_round3(inf)
        if waves:
            run.run(waves)
    return _report(run, clock() - t0)


def _report(run: _Run, elapsed: float) -> LocalizeReport:
    inf = infer(run.observations)
    cleared = inf.cleared
    ref, sref = run.ref, run.single_ref

    def lines(obs: Iterable[Observation]) -> list[str]:
        return [describe(o, cleared, run.leaf_of, ref, sref, run.timeout) for o in obs]

    bad_nodes: list[BadNode] = []
    bad_links: list[BadLink] = []
    for el, obs in sorted(inf.condemned().items(), key=lambda kv: natural_key(kv[0][1])):
        if el[0] != NODE:
            continue
        node = el[1]
        kind = _kind_of(obs)
        evidence = lines(obs)
        if kind != "slow":
            bad_nodes.append(BadNode(node=node, kind=kind, evidence=evidence))
            continue
        sweep = _last(run.observations, "ib_sweep", node)
        single = _last(run.observations, "single", node)
        single_slow: Optional[bool] = None
        if single is not None and single.status != "error":
            single_slow = single.status != "pass"
            if single not in obs:  # a slow one-node test may already implicate the node
                evidence.append(describe(single, cleared, run.leaf_of, ref, sref))
        rails: Optional[dict[str, str]] = None
        total = 0
        if sweep is not None and sweep.status != "error":
            rails = bad_rails(sweep.measured.rails_gbps, sweep.measured.rails_failed, run.rail_ref)
            total = len(sweep.measured.rails_gbps) + len(sweep.measured.rails_failed)
            evidence.append(_describe_sweep(sweep, rails, cleared, run.rail_ref))
        elif sweep is not None:
            evidence.append(describe(sweep, cleared, run.leaf_of, ref, sref))
        verdict = classify_node(rails, total, single_slow)
        if verdict in ("links", "node_and_links"):
            for dev in sorted(rails or {}):
                bad_links.append(BadLink(node=node, device=dev, evidence=list(evidence)))
        if verdict in ("node", "node_and_links"):
            if rails is None:
                evidence.append("rails not measured: a bad rail is not ruled out")
            elif not rails and single_slow is False:
                evidence.append("every rail and NVLink alone fine: the node's network path "
                                "(PCIe, GPUDirect, NIC firmware) is suspect")
            elif rails and total and len(rails) == total:
                evidence.append("slow on every rail")
            bad_nodes.append(BadNode(node=node, kind="slow", evidence=evidence))

    bad_uplinks: list[BadUplink] = []
    undetermined_uplinks: list[BadUplink] = []
    condemned = inf.condemned()
    for leaf in run.suspect_uplinks(inf):
        el = (UPLINK, leaf)
        if el in condemned:
            bad_uplinks.append(BadUplink(switch=leaf, evidence=lines(condemned[el])))
        else:
            obs = [o for o in run.observations if el in o.elements and o.effect == "implicate"]
            undetermined_uplinks.append(BadUplink(switch=leaf, evidence=lines(obs)))

    condemned_nodes = {b.node for b in bad_nodes} | {b.node for b in bad_links}
    healthy = [n for n in run.fleet if (NODE, n) in cleared and n not in condemned_nodes]
    undetermined = [n for n in run.fleet if n not in condemned_nodes and (NODE, n) not in cleared]
    test_time = sum(r.test_time_s for r in run.rounds)
    return LocalizeReport(
        schema=_SCHEMA,
        reference_busbw_gbps=None if ref is None or ref.median is None else round(ref.median, 2),
        floor_busbw_gbps=run.prof.multi_gbps_min,
        rounds=run.rounds,
        bad_nodes=bad_nodes,
        bad_links=bad_links,
        bad_uplinks=bad_uplinks,
        undetermined_uplinks=undetermined_uplinks,
        healthy=_nk(healthy),
        undetermined=_nk(undetermined),
        exclude=fold_display(_nk(condemned_nodes)) if condemned_nodes else "",
        elapsed_s=round(elapsed, 3),
        test_time_s=round(test_time, 3),
    )


def _last(observations: Sequence[Observation], kind: TestKind, node: str) -> Optional[Observation]:
    for o in reversed(observations):
        if o.test.kind == kind and o.test.nodes and o.test.nodes[0] == node:
            return o
    return None


def plan_summary(report: LocalizeReport) -> dict[str, object]:
    """What a benchmark prints per case: rounds, tests run, total (simulated) test time, waves,
    and what was found."""
    return {
        "rounds": len(report.rounds),
        "tests": sum(len(r.tests) for r in report.rounds),
        "tests_per_round": [len(r.tests) for r in report.rounds],
        "waves": sum(r.waves for r in report.rounds),
        "test_time_s": round(sum(r.test_time_s for r in report.rounds), 3),
        "bad_nodes": [f"{b.node} ({b.kind})" for b in report.bad_nodes],
        "bad_links": [f"{b.node}:{b.device}" for b in report.bad_links],
        "bad_uplinks": [b.switch for b in report.bad_uplinks],
        "undetermined": list(report.undetermined),
        "exclude": report.exclude,
    }
