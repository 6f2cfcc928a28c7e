"""Fleet judges: verdicts that need every node's facts (pure, no I/O).

- ``fleet.drift.<fact>`` (warn): nodes whose driver, CUDA, VBIOS, kernel, HCA firmware
  (``hca_fw``: the rails' firmware) or OFED version differs from the most common one.
- ``fleet.gpu_count`` (warn): nodes that see a different number of GPUs than most nodes (the
  per-node ``gpu.count`` check against the profile is the one that fails a node).
- ``fleet.outlier.<check>`` (warn): nodes whose figure (a :data:`FIGURES` check's value, such
  as ``ib.write_bw``) is far below the fleet's median (robust z-score, :func:`judge_outliers`).
- ``fleet.baseline.<check>`` (warn): with ``validate --baseline``, the fleet median of a figure
  is worse than the saved baseline's by more than :data:`BASELINE_TOLERANCE`
  (:func:`judge_baseline`; the CLI loads the baseline, the judges do no I/O).
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.models import FleetFinding, NodeReport, NodeStatus, Status

if TYPE_CHECKING:
    from clusterkit.baseline import Baseline

DRIFT_FACTS = ("driver_version", "cuda_version", "vbios_version", "kernel", "hca_fw", "ofed_version")

FLEET_CHECKS: dict[str, str] = {
    **{f"fleet.drift.{k}": f"{k.replace('_', ' ')} differing from most nodes (warn)" for k in DRIFT_FACTS},
    "fleet.gpu_count": "nodes that see another number of GPUs than most (warn)",
    "fleet.outlier.<check>": "nodes far below the fleet median of a figure such as ib.write_bw (warn)",
    "fleet.baseline.<check>": "the fleet median of a figure worse than the --baseline's (warn)",
}


def _groups(reports: list[NodeReport], key: str) -> dict[Any, list[str]]:
    groups: dict[Any, list[str]] = defaultdict(list)
    for r in reports:
        if r.status is NodeStatus.UNREACHABLE:
            continue
        v = r.facts.get(key)
        if v is not None:
            groups[v].append(r.node)
    return groups


def _majority(groups: dict[Any, list[str]]) -> Any:
    counts = Counter({v: len(n) for v, n in groups.items()})
    top = max(counts.values())
    # ties: the largest value (the newer version, usually) is taken as the expected one
    return max((v for v, c in counts.items() if c == top), key=lambda v: str(v))


def _describe(groups: dict[Any, list[str]]) -> str:
    from clusterkit.hostlist import fold_display as fold

    parts = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    return "; ".join(f"{v} on {fold(nodes)}" for v, nodes in parts)


def judge_fleet(reports: list[NodeReport], baseline: Optional["Baseline"] = None) -> list[FleetFinding]:
    """Every fleet finding; ``baseline`` (loaded by the caller) adds ``fleet.baseline.*``."""
    out: list[FleetFinding] = []
    for key in DRIFT_FACTS:
        groups = _groups(reports, key)
        if len(groups) > 1:
            expected = _majority(groups)
            odd = sorted(n for v, nodes in groups.items() if v != expected for n in nodes)
            out.append(FleetFinding(check=f"fleet.drift.{key}", status=Status.WARN, nodes=odd,
                                    expected=expected, message=f"{key} differs: {_describe(groups)}"))
    groups = _groups(reports, "gpu_count")
    if len(groups) > 1:
        expected = _majority(groups)
        odd = sorted(n for v, nodes in groups.items() if v != expected for n in nodes)
        out.append(FleetFinding(check="fleet.gpu_count", status=Status.WARN, nodes=odd, expected=expected,
                                message=f"GPU count differs: {_describe(groups)}"))
    figures = figure_groups(reports)
    out.extend(judge_outliers(figures))
    if baseline is not None:
        out.extend(judge_baseline(figures, baseline))
    return out


# ------------------------------------------------------------------------------- figures
# Fleet-relative verdicts on measured figures (bandwidths, TFLOPS, read rates): outliers against
# the fleet's median, and regressions against a saved baseline (docs/checks/fleet.md, "Figures").

#: Which check results are *figures*: check id (or fnmatch pattern) -> which way is better,
#: "higher" (bandwidth, TFLOPS) or "lower" (latency). An exact id wins over a pattern, a longer
#: pattern over a shorter one. Only results of these ids take part in outliers and baselines.
FIGURES: dict[str, str] = {
    "ib.write_bw": "higher",          # Gb/s per rail, ib_write_bw loopback (--ib-bw)
    "ib.*_bw": "higher",              # other perftest bandwidths, Gb/s
    "ib.*_lat": "lower",              # perftest latencies, us
    "nccl.*.busbw": "higher",         # NCCL bus bandwidth, GB/s
    "storage.fio.*": "higher",        # fio read_bw / write_bw (MB/s), randread_iops, per path
    "storage.weights": "higher",      # model-weights read rate per path, GB/s
    "storage.metadata.*": "lower",    # small-file metadata latency p50 / p99 per path, ms
    "stress.gemm": "higher",          # bf16 GEMM TFLOPS per GPU
    "stress.hbm": "higher",           # device-to-device copy GB/s per GPU
}
#: outliers: robust z-score below -OUTLIER_Z (above it for "lower" figures) is flagged
OUTLIER_Z = 3.0
#: the spread never counts as less than this share of the median: a tight fleet does not flag noise
OUTLIER_SPREAD_FLOOR = 0.05
#: fewer nodes with a figure than this: no outlier verdict (no fleet to be an outlier of)
OUTLIER_MIN_NODES = 4
#: median absolute deviation -> standard deviation for normally distributed figures
MAD_TO_SIGMA = 1.4826
#: baselines: the fleet median more than this share worse than the baseline median is flagged
BASELINE_TOLERANCE = 0.05
#: at most this many nodes are named one by one in a finding's message
_LISTED = 10


def figure_direction(check: str) -> Optional[str]:
    """"higher" or "lower" when ``check`` is a figure (:data:`FIGURES`), else None."""
    if check in FIGURES:
        return FIGURES[check]
    hits = [p for p in FIGURES if fnmatch.fnmatchcase(check, p)]
    if not hits:
        return None
    return FIGURES[max(hits, key=lambda p: (len(p.replace("*", "")), p))]


def figure_key(check: str, subject: Optional[str]) -> str:
    """What one figure is: the check id; with a path subject (a file system), the check and the
    path (``storage.fio.read_bw[/mnt/weights]``). Indexed subjects (GPUs, rails) are pooled."""
    if subject and subject.startswith("/"):
        return f"{check}[{subject}]"
    return check


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


@dataclass
class FigureGroup:
    """Every sample of one figure for one profile: node -> [(subject, value)]."""

    profile: str
    key: str
    check: str
    direction: str
    unit: Optional[str]
    samples: dict[str, list[tuple[Optional[str], float]]] = field(default_factory=dict)

    def values(self) -> list[float]:
        return [v for rows in self.samples.values() for _, v in rows]

    def median(self) -> float:
        return float(statistics.median(self.values()))

    def node_medians(self) -> dict[str, float]:
        return {n: float(statistics.median([v for _, v in rows])) for n, rows in self.samples.items()}


def figure_groups(reports: list[NodeReport]) -> dict[tuple[str, str], FigureGroup]:
    """The figures of a run, by (profile, figure key). A sample is one check result of a
    :data:`FIGURES` id with a number as value, from a node that was reached, whose status is
    pass, warn or fail (error and skip measured nothing). A node's profile is its ``profile``
    fact. Samples in another unit than most of the group's are left out."""
    raw: dict[tuple[str, str], list[tuple[str, Optional[str], Optional[str], float, str, str]]] = defaultdict(list)
    for r in reports:
        if r.status is NodeStatus.UNREACHABLE:
            continue
        profile = str(r.facts.get("profile") or "unknown")
        for c in r.checks:
            if c.status not in (Status.PASS, Status.WARN, Status.FAIL):
                continue
            direction = figure_direction(c.check)
            v = _number(c.value)
            if direction is None or v is None:
                continue
            raw[profile, figure_key(c.check, c.subject)].append((r.node, c.subject, c.unit, v, c.check, direction))
    out: dict[tuple[str, str], FigureGroup] = {}
    for (profile, key), rows in raw.items():
        units = Counter(u for _, _, u, _, _, _ in rows)
        unit = max(units, key=lambda u: (units[u], u is not None))
        g = FigureGroup(profile=profile, key=key, check=rows[0][4], direction=rows[0][5], unit=unit)
        for node, subject, u, v, _, _ in rows:
            if u == unit:
                g.samples.setdefault(node, []).append((subject, v))
        out[profile, key] = g
    return out


def _num(x: float) -> str:
    return f"{round(x, 2):g}"


def _what(g: FigureGroup) -> str:
    return g.key if g.profile == "unknown" else f"{g.key} ({g.profile})"


def judge_outliers(groups: dict[tuple[str, str], FigureGroup]) -> list[FleetFinding]:
    """``fleet.outlier.<check>`` (warn): samples whose robust z-score
    ``(x - median) / max(MAD_TO_SIGMA * MAD, OUTLIER_SPREAD_FLOOR * |median|)`` is below
    ``-OUTLIER_Z`` (above ``OUTLIER_Z`` for "lower" figures), over every sample of the group
    (every node's every subject), when at least ``OUTLIER_MIN_NODES`` nodes have the figure."""
    from clusterkit.hostlist import natural_key

    out: list[FleetFinding] = []
    for (_, _), g in sorted(groups.items()):
        if len(g.samples) < OUTLIER_MIN_NODES:
            continue
        values = g.values()
        med = float(statistics.median(values))
        mad = float(statistics.median([abs(v - med) for v in values]))
        spread = max(MAD_TO_SIGMA * mad, OUTLIER_SPREAD_FLOOR * abs(med))
        if spread <= 0:
            continue
        sign = 1.0 if g.direction == "higher" else -1.0
        limit = med - sign * OUTLIER_Z * spread
        bad: dict[str, list[tuple[Optional[str], float]]] = {}
        for node, rows in g.samples.items():
            low = [(s, v) for s, v in rows if sign * (v - med) / spread < -OUTLIER_Z]
            if low:
                bad[node] = low
        if not bad:
            continue
        nodes = sorted(bad, key=natural_key)
        unit = f" {g.unit}" if g.unit else ""
        parts = []
        for n in nodes[:_LISTED]:
            s, v = min(bad[n], key=lambda sv: sign * sv[1])
            named = s is not None and not s.startswith("/")  # a path is in the figure's key already
            where = f" {s}" if named and len(bad[n]) == 1 else ""
            more = f", {len(bad[n])} of {len(g.samples[n])} subjects" if len(g.samples[n]) > 1 else ""
            worst = f", worst {s}" if named and len(bad[n]) > 1 else ""
            parts.append(f"{n}{where} {_num(v)}{unit} (z {sign * (v - med) / spread:+.1f}{more}{worst})")
        if len(nodes) > _LISTED:
            parts.append(f"… and {len(nodes) - _LISTED} more")
        lowest = min((v for rows in bad.values() for _, v in rows), key=lambda v: sign * v)
        word = "below" if sign > 0 else "above"
        out.append(FleetFinding(
            check=f"fleet.outlier.{g.check}", status=Status.WARN, nodes=nodes, value=round(lowest, 4),
            expected=round(med, 4),
            message=(f"{_what(g)} far {word} the fleet median {_num(med)}{unit} of {len(g.samples)} nodes "
                     f"(flagged {word} {_num(limit)}{unit}: z {'<' if sign > 0 else '>'} "
                     f"{-sign * OUTLIER_Z:+g}, spread {_num(spread)}{unit}): {'; '.join(parts)}")))
    return out


def judge_baseline(groups: dict[tuple[str, str], FigureGroup], baseline: "Baseline") -> list[FleetFinding]:
    """``fleet.baseline.<check>`` (warn): the fleet median of a figure is more than
    ``BASELINE_TOLERANCE`` worse than the baseline's median for the same profile and figure.
    The finding names the nodes whose own median is past that limit."""
    from clusterkit.hostlist import fold_display, natural_key

    out: list[FleetFinding] = []
    for (profile, key), g in sorted(groups.items()):
        ref = baseline.figure(profile, key)
        if ref is None or ref.unit != g.unit or ref.direction != g.direction:
            continue
        med = g.median()
        sign = 1.0 if g.direction == "higher" else -1.0
        limit = ref.median * (1 - sign * BASELINE_TOLERANCE)
        if sign * (med - limit) >= 0:
            continue
        nodes = sorted((n for n, m in g.node_medians().items() if sign * (m - limit) < 0), key=natural_key) \
            or sorted(g.samples, key=natural_key)
        unit = f" {g.unit}" if g.unit else ""
        change = (med - ref.median) / ref.median * 100 if ref.median else float("-inf")
        out.append(FleetFinding(
            check=f"fleet.baseline.{g.check}", status=Status.WARN, nodes=nodes, value=round(med, 4),
            expected=round(ref.median, 4),
            message=(f"{_what(g)} fleet median {_num(med)}{unit} of {len(g.samples)} nodes is {change:+.1f}% "
                     f"against baseline {baseline.name} ({_num(ref.median)}{unit} of {ref.nodes} nodes, "
                     f"{baseline.created}; flagged past {BASELINE_TOLERANCE:.0%}); "
                     f"worse than {_num(limit)}{unit}: {fold_display(nodes)}")))
    return out
