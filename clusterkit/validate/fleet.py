"""Fleet judges: verdicts that need every node's facts (pure, no I/O).

- ``fleet.drift.<fact>`` (warn): nodes whose driver, CUDA, VBIOS, kernel, HCA firmware
  (``hca_fw``: the rails' firmware) or OFED version differs from the most common one.
- ``fleet.gpu_count`` (warn): nodes that see a different number of GPUs than most nodes (the
  per-node ``gpu.count`` check against the profile is the one that fails a node).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from clusterkit.models import FleetFinding, NodeReport, NodeStatus, Status

DRIFT_FACTS = ("driver_version", "cuda_version", "vbios_version", "kernel", "hca_fw", "ofed_version")

FLEET_CHECKS: dict[str, str] = {
    **{f"fleet.drift.{k}": f"{k.replace('_', ' ')} differing from most nodes (warn)" for k in DRIFT_FACTS},
    "fleet.gpu_count": "nodes that see another number of GPUs than most (warn)",
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


def judge_fleet(reports: list[NodeReport]) -> list[FleetFinding]:
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
    return out
