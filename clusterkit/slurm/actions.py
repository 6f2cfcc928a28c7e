"""Drain and resume: what to change (a pure plan), the circuit breaker, and applying it.

The rules (DESIGN.md, "Slurm actions"):

- only a ``fail`` drains: a node whose checks errored or that could not be reached is never
  drained (a broken checker must never condemn a node);
- the reason is owned (``clusterkit: <checks>: <detail>``, :mod:`clusterkit.slurm.reason`); a node
  whose reason someone else set is left alone and reported; a node clusterkit already drained
  gets its reason brought up to date when the failing checks changed;
- the circuit breaker: more new drains in one run than the limit (default 10% of the
  partition, at least one node) drains nothing unless ``--force``;
- ``--dry-run`` shows every change as before -> after and changes nothing.

:func:`plan_drains` is pure (report + node states in, actions out); :func:`apply_drains` talks
to Slurm through the backend.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from clusterkit.errors import UsageError
from clusterkit.models import FleetReport, NodeReport, NodeStatus, SlurmAction, Status
from clusterkit.slurm import reason as reasons
from clusterkit.slurm.backend import SlurmBackend, SlurmError, SlurmNode, SlurmUnavailable

DEFAULT_LIMIT = "10%"


def parse_limit(text: str) -> tuple[str, float]:
    """``10%`` -> ("share", 0.10); ``3`` -> ("count", 3). UsageError otherwise."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            v = float(t[:-1])
            if not 0 < v <= 100:
                raise ValueError
            return "share", v / 100.0
        n = int(t)
        if n < 1:
            raise ValueError
        return "count", float(n)
    except ValueError:
        raise UsageError(f"--drain-limit {text!r}: give a share such as 10% or a node count such as 3") from None


def drain_limit(limit: str, pool_size: int) -> int:
    """How many nodes one run may drain: a count as given, a share of the pool rounded down
    (but at least one node, so that a small partition can still lose its one bad node)."""
    kind, v = parse_limit(limit)
    if kind == "count":
        return int(v)
    return max(1, math.floor(v * pool_size + 1e-9))


def failures_of(node: NodeReport) -> list[tuple[str, Optional[str], str]]:
    return [(c.check, c.subject, c.message) for c in node.checks if c.status is Status.FAIL]


def plan_drains(report: FleetReport, states: Mapping[str, SlurmNode], *, pool_size: int,
                limit: str = DEFAULT_LIMIT, force: bool = False) -> tuple[list[SlurmAction], Optional[str]]:
    """The actions for every failed node (and notes for drained nodes that pass now), and the
    circuit breaker's message when it refused the drains."""
    actions: list[SlurmAction] = []
    for node in report.nodes:
        st = states.get(node.node)
        if node.status is NodeStatus.FAIL:
            fails = failures_of(node)
            if not fails:
                continue
            prev = reasons.parse(st.reason) if st is not None and st.drained else None
            want = reasons.make(fails, also=reasons.not_rechecked(node.checks, prev.selectors) if prev else ())
            if st is None:
                actions.append(SlurmAction(node=node.node, action="not-in-slurm", reason_after=want,
                                           message="Slurm does not know this node: not drained"))
                continue
            before: dict[str, Any] = dict(state_before=st.state_text, reason_before=st.reason)
            if st.reason and not reasons.is_owned(st.reason):
                who = f" (set by {st.reason_user})" if st.reason_user else ""
                actions.append(SlurmAction(node=node.node, action="left-alone", **before,
                                           message=f"reason {st.reason!r}{who} is someone else's: not "
                                                   "overwritten"))
            elif st.drained and reasons.is_owned(st.reason):
                if st.reason == want:
                    actions.append(SlurmAction(node=node.node, action="already-drained", **before,
                                               state_after=st.state_text, reason_after=st.reason,
                                               message="already drained by clusterkit"))
                else:
                    actions.append(SlurmAction(node=node.node, action="update-reason", **before,
                                               state_after=st.state_text, reason_after=want,
                                               message="still drained; the reason now names the checks "
                                                       "failing today"))
            else:
                after = st.state_text if st.drained else f"{st.state_text}+drain"
                actions.append(SlurmAction(node=node.node, action="drain", **before, state_after=after,
                                           reason_after=want, message="fail: drained"))
        elif st is not None and st.drained and reasons.is_owned(st.reason) and \
                node.status in (NodeStatus.PASS, NodeStatus.WARN):
            actions.append(SlurmAction(node=node.node, action="passes-now", state_before=st.state_text,
                                       reason_before=st.reason,
                                       message="drained by clusterkit and passes now: `clusterkit slurm "
                                               "resume` re-runs its checks and resumes it"))
    new = [a for a in actions if a.action == "drain"]
    allowed = drain_limit(limit, pool_size)
    breaker: Optional[str] = None
    if len(new) > allowed and not force:
        breaker = (f"circuit breaker: {len(new)} nodes would be drained, more than the limit of {allowed} "
                   f"({limit} of {pool_size} nodes); nothing was drained. Check the fleet-wide cause "
                   "first; --force drains anyway, --drain-limit changes the limit")
        for a in new:
            a.outcome = "refused"
            a.state_after = a.state_before
            a.message = "not drained: circuit breaker"
    return actions, breaker


def apply_drains(actions: Sequence[SlurmAction], backend: SlurmBackend, *, dry_run: bool) -> Optional[str]:
    """Drain (or re-reason) every planned node; one scontrol call per distinct reason. Sets each
    action's outcome. Returns the first error, if any (Slurm unreachable: nothing more is tried)."""
    todo = [a for a in actions if a.action in ("drain", "update-reason") and a.outcome != "refused"]
    if dry_run:
        for a in todo:
            a.outcome = "dry-run"
        return None
    by_reason: dict[str, list[SlurmAction]] = {}
    for a in todo:
        by_reason.setdefault(a.reason_after or "", []).append(a)
    first_error: Optional[str] = None
    for why, group in by_reason.items():
        if first_error is not None and "not reachable" in first_error:
            for a in group:
                a.outcome, a.state_after, a.message = "failed", a.state_before, f"not drained: {first_error}"
            continue
        try:
            backend.drain([a.node for a in group], why)
        except SlurmError as e:
            first_error = first_error or str(e)
            for a in group:
                a.outcome, a.state_after, a.message = "failed", a.state_before, f"not drained: {e}"
            if isinstance(e, SlurmUnavailable):
                first_error = str(e)
            continue
        for a in group:
            a.outcome = "applied"
    return first_error


def refresh_after(actions: Sequence[SlurmAction], backend: SlurmBackend) -> None:
    """Read the states after the changes (one query); best effort."""
    changed = [a.node for a in actions if a.outcome == "applied"]
    if not changed:
        return
    try:
        now = {n.name: n for n in backend.nodes(names=changed)}
    except (SlurmError, UsageError):
        return
    for a in actions:
        if a.outcome == "applied" and a.node in now:
            a.state_after = now[a.node].state_text
            a.reason_after = now[a.node].reason


def _q(v: Optional[str]) -> str:
    return repr(v) if v else "(none)"


def format_actions(actions: Sequence[SlurmAction], *, dry_run: bool = False, title: str = "slurm") -> list[str]:
    """Lines for the terminal: every change as before -> after."""
    if not actions:
        return []
    counts: dict[str, int] = {}
    for a in actions:
        key = a.action if a.outcome not in ("refused", "failed") else f"{a.action} {a.outcome}"
        counts[key] = counts.get(key, 0) + 1
    head = ", ".join(f"{k}: {v}" for k, v in counts.items())
    lines = [f"{title}{' (dry run: nothing changed)' if dry_run else ''}: {head}"]
    width = max(len(a.node) for a in actions)
    for a in actions:
        if a.action in ("drain", "update-reason", "resume", "hold", "release") and a.outcome != "refused":
            verb = {"applied": "", "dry-run": "would ", "failed": "FAILED to "}.get(a.outcome, "")
            lines.append(f"  {a.node:{width}}  {verb}{a.action}: {a.state_before or '?'} -> {a.state_after or '?'}; "
                         f"reason {_q(a.reason_before)} -> {_q(a.reason_after)}"
                         + (f" ({a.message})" if a.outcome == "failed" else ""))
        else:
            lines.append(f"  {a.node:{width}}  {a.action}: {a.message}")
    return lines


def apply_hold(actions: list[SlurmAction], report: FleetReport, backend: SlurmBackend, name: str, *,
               held: Sequence[str], dry_run: bool) -> Optional[str]:
    """--hold-with-reservation: the validated nodes were put in maintenance reservation ``name``
    before the run. Failed nodes stay held there instead of being drained; every other node
    (passed, warned, or could not be checked: an error never takes a node out of service) is
    released; the reservation goes when it is empty. Turns the planned drains into holds."""
    failed = {a.node for a in actions if a.action == "drain" and a.outcome != "refused"}
    for a in actions:
        if a.action == "drain" and a.outcome != "refused":
            a.action, a.state_after = "hold", f"{a.state_before}+maint"
            a.message = f"fail: held in reservation {name}"
    release = [n.node for n in report.nodes if n.node in set(held) and n.node not in failed]
    for node in release:
        actions.append(SlurmAction(node=node, action="release", state_before="reserved", state_after="released",
                                   message=f"released from reservation {name}"))
    if dry_run:
        for a in actions:
            if a.action in ("hold", "release"):
                a.outcome = "dry-run"
        return None
    try:
        res = backend.reservation(name)
        keep = sorted((set(res.nodes) if res else set()) - set(release)) if res else sorted(failed)
        if res is None and keep:
            backend.create_reservation(name, keep)
        elif res is not None and keep:
            backend.update_reservation(name, keep)
        elif res is not None:
            backend.delete_reservation(name)
    except SlurmError as e:
        for a in actions:
            if a.action in ("hold", "release"):
                a.outcome, a.message = "failed", f"{a.message}: {e}"
        return str(e)
    for a in actions:
        if a.action in ("hold", "release"):
            a.outcome = "applied"
    return None
