"""The health gate of ``clusterkit deploy serve``: which nodes may serve (pure).

A node may serve when

1. its last validation verdict (the controller's ledger, or a report given with
   ``--validation-report``) is ``pass`` or ``warn``,
2. that validation is younger than ``max_age_h`` (default 24 h), and
3. Slurm, when asked, knows it in the partition and it is neither drained (or draining) nor down.

Every refused node is named with its reason. ``force`` lets nodes refused for their *validation*
(none on record, too old, not passing) serve anyway, and the result says so node by node;
it cannot make Slurm start a job on a drained or down node, so those stay refused.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from clusterkit.ledger import Verdict
    from clusterkit.slurm.backend import SlurmNode

DEFAULT_MAX_AGE_H = 24.0


@dataclass(frozen=True)
class NodeDecision:
    node: str
    allowed: bool
    #: why: "validated pass 3.2 h ago (run 6f1c2a3b, partition:gpu)", "drained in Slurm: …", …
    reason: str
    #: refused for its validation, allowed by --force
    forced: bool = False
    #: refused by Slurm's state (drained, down, not in the partition): --force cannot help
    slurm_refused: bool = False
    verdict: Optional["Verdict"] = None

    @property
    def line(self) -> str:
        if self.forced:
            return f"{self.node}: FORCED (--force): {self.reason}"
        return f"{self.node}: {'ok' if self.allowed else 'refused'}: {self.reason}"


@dataclass
class GateResult:
    decisions: list[NodeDecision] = field(default_factory=list)
    force: bool = False
    max_age_h: float = DEFAULT_MAX_AGE_H
    slurm_checked: bool = True

    @property
    def allowed(self) -> list[str]:
        return [d.node for d in self.decisions if d.allowed]

    @property
    def refused(self) -> list[NodeDecision]:
        return [d for d in self.decisions if not d.allowed]

    @property
    def forced(self) -> list[NodeDecision]:
        return [d for d in self.decisions if d.forced]

    def lines(self) -> list[str]:
        out = [d.line for d in self.decisions]
        if self.forced:
            out.append(f"--force: serving on {len(self.forced)} node(s) without a passing validation "
                       f"newer than {self.max_age_h:g} h: {', '.join(d.node for d in self.forced)}")
        if not self.slurm_checked:
            out.append("Slurm's node states were not checked (dry run with --nodes)")
        return out

    def to_dict(self) -> dict[str, object]:
        return {"max_age_h": self.max_age_h, "force": self.force, "slurm_checked": self.slurm_checked,
                "nodes": [{"node": d.node, "allowed": d.allowed, "forced": d.forced, "reason": d.reason}
                          for d in self.decisions]}


def _age(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"


def _validation(node: str, v: Optional["Verdict"], now: _dt.datetime, max_age_h: float) -> tuple[bool, str]:
    if v is None:
        return False, "no validation on record (run clusterkit validate on it, or give --validation-report)"
    try:
        age = v.age_h(now)
    except ValueError:
        return False, f"its validation time {v.time!r} cannot be read"
    run = f"run {v.run_id[:8]}" if v.run_id else "run ?"
    where = f"{run}, {v.source}" if v.source else run
    if not v.passing:
        return False, f"last validation {v.status} {_age(age)} ago ({where})"
    if v.partial:
        only = ",".join(v.checks or [])
        return False, (f"last validation ran only --checks {only} ({v.status} {_age(max(age, 0.0))} ago, {where}): "
                       "validate it whole")
    if age > max_age_h:
        return False, f"last validation ({v.status}) is {_age(age)} old, more than {max_age_h:g} h ({where})"
    if age < -0.1:
        return False, f"last validation is dated in the future ({v.time}): check the clocks"
    return True, f"validated {v.status} {_age(max(age, 0.0))} ago ({where})"


def _slurm(node: str, info: Optional["SlurmNode"], partition: Optional[str]) -> Optional[str]:
    """Why Slurm will not run it, or None."""
    if info is None:
        return f"not a node of partition {partition}" if partition else "not known to Slurm"
    if info.drained:
        why = f": {info.reason}" if info.reason else ""
        return f"drained in Slurm ({info.state_text}){why}"
    if info.down:
        why = f": {info.reason}" if info.reason else ""
        return f"down in Slurm ({info.state_text}){why}"
    if partition and info.partitions and partition not in info.partitions:
        return f"not in partition {partition}"
    return None


def decide(nodes: Sequence[str], verdicts: Mapping[str, "Verdict"],
           slurm: Optional[Mapping[str, "SlurmNode"]], *, now: _dt.datetime,
           max_age_h: float = DEFAULT_MAX_AGE_H, force: bool = False,
           partition: Optional[str] = None) -> GateResult:
    """The decision for every node of ``nodes`` (in that order). ``slurm``: Slurm's view of the
    nodes by name (None: not asked — a dry run with --nodes)."""
    out = GateResult(force=force, max_age_h=max_age_h, slurm_checked=slurm is not None)
    for node in nodes:
        v = verdicts.get(node)
        if slurm is not None:
            why = _slurm(node, slurm.get(node), partition)
            if why is not None:
                if force:
                    why += " (Slurm will not start a job there; --force cannot change that)"
                out.decisions.append(NodeDecision(node, False, why, slurm_refused=True, verdict=v))
                continue
        ok, why = _validation(node, v, now, max_age_h)
        if ok:
            out.decisions.append(NodeDecision(node, True, why, verdict=v))
        elif force:
            out.decisions.append(NodeDecision(node, True, why, forced=True, verdict=v))
        else:
            out.decisions.append(NodeDecision(node, False, why, verdict=v))
    return out


def pick(result: GateResult, count: int, slurm: Optional[Mapping[str, "SlurmNode"]] = None) -> list[str]:
    """``count`` allowed nodes: idle ones first, then the rest, each group in the given order.
    Fewer when there are not enough."""
    allowed = result.allowed
    if slurm is not None:
        idle = [n for n in allowed if (s := slurm.get(n)) is not None and s.state == "idle"]
        allowed = idle + [n for n in allowed if n not in set(idle)]
    return allowed[:count]
