"""node-check --healthcheck's own drain and resume (run by slurmd as ``HealthCheckProgram``).

:func:`act` is called with the node's report once the checks have run:

- a ``fail`` drains this node with the owned reason, unless someone else's reason is already
  on it (left alone, said so);
- ``error`` (could not run) changes nothing;
- a node drained by clusterkit is resumed when every check its reason names ran in this
  report and none of them failed or errored (a drain from a check the health check does not
  run, such as ``ib.write_bw``, stays until ``clusterkit slurm resume`` re-runs that check).

It talks to Slurm through ``scontrol`` only (one ``show node`` per run, one ``update`` when
something changes), each call bounded by a timeout; no Slurm means nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.models import NodeReport


@dataclass
class HealthAction:
    #: none | drain | resume | left-alone | no-slurm | error
    action: str
    message: str
    node: Optional[str] = None
    before: Optional[str] = None  # reason before
    after: Optional[str] = None  # reason after


def act(report: "NodeReport", *, node: Optional[str] = None, dry_run: bool = False,
        timeout: float = 10.0) -> HealthAction:
    """Drain or resume this node in Slurm according to ``report``; never raises.

    ``node``: the Slurm node name (default: $SLURMD_NODENAME, else the report's node)."""
    import os

    name = node or os.environ.get("SLURMD_NODENAME") or report.node
    try:
        return _act(report, name, dry_run=dry_run, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - the health check must report, never crash on Slurm
        from clusterkit.slurm.backend import SlurmError

        if isinstance(e, SlurmError):
            return HealthAction("error", f"{name}: Slurm: {e}; nothing changed", node=name)
        return HealthAction("error", f"{name}: internal error: {type(e).__name__}: {e}; nothing changed", node=name)


def _act(report: "NodeReport", name: str, *, dry_run: bool, timeout: float) -> HealthAction:
    from clusterkit.slurm import reason as reasons
    from clusterkit.slurm.actions import failures_of
    from clusterkit.slurm.backend import CliBackend

    status = report.status.value
    backend = CliBackend(timeout=timeout)
    if not backend.available("scontrol"):
        return HealthAction("no-slurm", f"{name}: scontrol not found: no Slurm action", node=name)
    st = backend.node(name)
    if st is None:
        return HealthAction("no-slurm", f"{name}: not a Slurm node: no Slurm action", node=name)
    would = "would " if dry_run else ""
    if status == "fail":
        fails = failures_of(report)
        prev = reasons.parse(st.reason) if st.drained else None
        want = reasons.make(fails, also=reasons.not_rechecked(report.checks, prev.selectors) if prev else ())
        if st.reason and not reasons.is_owned(st.reason):
            return HealthAction("left-alone", f"{name}: fail ({fails[0][0]}), but reason {st.reason!r} is "
                                              "someone else's: left alone", node=name, before=st.reason)
        if st.drained and st.reason == want:
            return HealthAction("none", f"{name}: fail, already drained by clusterkit", node=name,
                                before=st.reason, after=st.reason)
        if not dry_run:
            backend.drain([name], want)
        verb = "drained" if not st.drained else "drain reason updated"
        return HealthAction("drain", f"{name}: {would}{verb}: {want}", node=name, before=st.reason, after=want)
    owned = reasons.parse(st.reason) if st.drained else None
    if status == "error" or owned is None:
        return HealthAction("none", f"{name}: {status}: nothing to change", node=name, before=st.reason)
    ok, why = reasons.covered(report.checks, owned.selectors)
    if not ok:
        return HealthAction("none", f"{name}: stays drained ({why}; `clusterkit slurm resume` re-runs "
                                    f"{','.join(owned.selectors)})", node=name, before=st.reason)
    if not dry_run:
        backend.resume([name])
    return HealthAction("resume", f"{name}: {would}resume: {','.join(owned.selectors)} pass again", node=name,
                        before=st.reason, after=None)
