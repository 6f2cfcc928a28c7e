"""The node-check runner: probe every selected domain, judge it, return one NodeReport.

The runner knows no domain by name: it takes the domains from the registry, hands each probe
the probe context, judges what came back, and keeps the results the ``--checks`` selection asks
for (a check that could not run, ``error``, is always kept). It never raises for a probe that
breaks, and it always returns by the deadline: each domain's probe runs in its own thread; a
domain still running when the deadline comes is reported as ``<domain>.probe`` error, tools it
started are killed, and the report holds whatever finished.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Union

from clusterkit.models import CheckResult, NodeReport, Status
from clusterkit.profiles import Profile
from clusterkit.validate.registry import Selection, domain_module, select

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

DEFAULT_DEADLINE = 60.0  # seconds, when node-check is given none (Slurm kills health checks at 60)

#: ``clusterkit.sim.ENV_SIM`` and ``ENV_NODE``, named here so that a real node never imports the
#: simulator (its fleet models) just to learn that it is not simulated
ENV_SIM = "CLUSTERKIT_SIM"
ENV_NODE = "CLUSTERKIT_NODE"


def node_name() -> str:
    return os.environ.get(ENV_NODE) or socket.gethostname().split(".")[0]


def make_context(*, deadline: float, sysfs_root: Optional[str] = None, state_dir: Optional[str] = None,
                 kernel_log_file: Optional[str] = None) -> "ProbeContext":
    """The context of this node: a simulated node's when CLUSTERKIT_SIM says so, else the real
    machine's. The only place that tells the two apart."""
    if os.environ.get(ENV_SIM):
        from clusterkit import sim

        simnode = sim.current_node()
        if simnode is not None:
            from clusterkit.sim.context import sim_context

            return sim_context(simnode, sim.current_fleet_key(), deadline=deadline,
                               kernel_log_file=kernel_log_file, state_dir=state_dir)
    from clusterkit.validate.context import real_context

    return real_context(deadline=deadline, sysfs_root=sysfs_root, state_dir=state_dir,
                        kernel_log_file=kernel_log_file, node=node_name())


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]


def run_node_check(profile: Profile, checks: Union[Selection, list[str], None] = None,
                   ctx: Optional["ProbeContext"] = None, *, deadline_s: float = DEFAULT_DEADLINE,
                   ) -> NodeReport:
    """Run the node-side checks. Never raises for a probe that breaks or hangs."""
    started = time.monotonic()
    selection = checks if isinstance(checks, Selection) else select(checks)
    if ctx is None:
        ctx = make_context(deadline=started + deadline_s)
    lock = threading.Lock()
    done: dict[str, tuple[Any, list[CheckResult], dict[str, Any]]] = {}
    crashed: dict[str, str] = {}

    def work(dom: str) -> None:
        try:
            mod = domain_module(dom)
            m = mod.probe(ctx, profile)
            res = mod.judge(m, profile)
            f = mod.facts(m)
        except Exception as e:  # noqa: BLE001 - a broken probe is an error, never a failure
            with lock:
                crashed[dom] = f"probe crashed: {_one_line(e)}"
            return
        with lock:
            done[dom] = (m, res, f)

    # One thread per domain: domains are independent, and one stuck in a call that cannot be
    # interrupted (a hung driver) must not keep the others from reporting.
    workers = [threading.Thread(target=work, args=(dom,), name=f"ck-probe-{dom}", daemon=True)
               for dom in selection.domains]
    for t in workers:
        t.start()
    for t in workers:
        # in slices: the deadline may be brought forward while we wait (SIGTERM from Telegraf)
        while t.is_alive() and time.monotonic() < ctx.deadline:
            t.join(min(0.25, max(0.0, ctx.deadline - time.monotonic())))
    timed_out = any(t.is_alive() for t in workers)
    if timed_out:
        ctx.procs.kill_all()  # tools a stuck probe started
    results: list[CheckResult] = []
    measurements: dict[str, Any] = {}
    facts: dict[str, Any] = {"profile": profile.name}
    if ctx.simulated:
        facts["simulated"] = True
    with lock:
        for dom in selection.domains:
            if dom in done:
                m, res, f = done[dom]
                measurements[dom] = m.model_dump(mode="json")
                results.extend(res)
                facts.update(f)
            elif dom in crashed:
                results.append(CheckResult(check=f"{dom}.probe", status=Status.ERROR, message=crashed[dom]))
            else:
                limit = round(ctx.deadline - started, 1)
                results.append(CheckResult(check=f"{dom}.probe", status=Status.ERROR,
                                           message=f"{dom} probe did not finish within the {limit:g}s deadline"))
    results = [r for r in results if r.status is Status.ERROR or selection.keeps(r.check)]
    error = "node-check reached its deadline before every probe finished" if timed_out else None
    return NodeReport(node=ctx.node, status=NodeReport.status_of(results, error), checks=results,
                      facts=facts, measurements=measurements, error=error,
                      error_kind="deadline" if timed_out else None,
                      duration_s=round(time.monotonic() - started, 3))


def default_profile_name() -> str:
    """The profile a node uses when none is given: $CLUSTERKIT_PROFILE, the sim fleet's, h100-sxm."""
    env = os.environ.get("CLUSTERKIT_PROFILE")
    if env:
        return env
    spec = os.environ.get(ENV_SIM)
    if spec:
        from clusterkit import sim

        fleet = sim.load_fleet(spec)
        if fleet.profile:
            return fleet.profile
    return "h100-sxm"
