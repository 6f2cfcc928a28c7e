"""The node-check runner: probe every selected domain, judge it, return one NodeReport."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

from clusterkit.errors import UsageError
from clusterkit.models import CheckResult, NodeReport, Status
from clusterkit.profiles import Profile

DOMAINS = ("gpu", "system")


def node_name() -> str:
    from clusterkit.sim import ENV_NODE

    return os.environ.get(ENV_NODE) or socket.gethostname().split(".")[0]


def select(checks: list[str] | None) -> tuple[list[str], list[str] | None]:
    """Domains to probe and the check-id filters, from ``--checks gpu,system.disk``.

    A filter keeps a check whose id equals it or starts with it and a dot; ``None`` keeps all.
    """
    if not checks:
        return list(DOMAINS), None
    domains: list[str] = []
    filters: list[str] = []
    for c in (c.strip() for c in checks):
        if not c:
            continue
        dom = c.split(".", 1)[0]
        if dom not in DOMAINS:
            raise UsageError(f"unknown check {c!r}; checks start with one of: {', '.join(DOMAINS)}")
        if dom not in domains:
            domains.append(dom)
        filters.append(c)
    if not domains:
        raise UsageError("--checks names no check")
    return domains, filters


def kept(result: CheckResult, filters: list[str] | None) -> bool:
    """Errors always stay: a check that could not run is never filtered away."""
    if filters is None or result.status is Status.ERROR:
        return True
    return any(result.check == f or result.check.startswith(f + ".") for f in filters)


def _probe_and_judge(domain: str, profile: Profile) -> tuple[Any, list[CheckResult], dict[str, Any]]:
    if domain == "gpu":
        from clusterkit.validate import gpu as mod

        m = mod.probe()
    else:
        from clusterkit.validate import system as mod  # type: ignore[no-redef]

        m = mod.probe(profile)
    return m, mod.judge(m, profile), mod.facts(m)


def run_node_check(profile: Profile, checks: list[str] | None = None,
                   probe: Callable[[str, Profile], tuple[Any, list[CheckResult], dict[str, Any]]] = _probe_and_judge,
                   ) -> NodeReport:
    """Run the node-side checks on this node. Never raises for a probe that breaks."""
    from clusterkit import sim

    started = time.monotonic()
    domains, filters = select(checks)
    simnode = sim.current_node()
    if simnode is not None and simnode.hang_seconds:
        time.sleep(simnode.hang_seconds)
    results: list[CheckResult] = []
    measurements: dict[str, Any] = {}
    facts: dict[str, Any] = {"profile": profile.name}
    if simnode is not None:
        facts["simulated"] = True
    for dom in domains:
        try:
            m, res, f = probe(dom, profile)
        except Exception as e:  # noqa: BLE001 - a broken probe is an error, never a failure
            results.append(CheckResult(check=f"{dom}.probe", status=Status.ERROR,
                                       message=f"probe crashed: {type(e).__name__}: {' '.join(str(e).split())}"))
            continue
        measurements[dom] = m.model_dump(mode="json")
        results.extend(res)
        facts.update(f)
    results = [r for r in results if kept(r, filters)]
    return NodeReport(node=node_name(), status=NodeReport.status_of(results), checks=results,
                      facts=facts, measurements=measurements,
                      duration_s=round(time.monotonic() - started, 3))


def default_profile_name() -> str:
    """The profile a node uses when none is given: $CLUSTERKIT_PROFILE, the sim fleet's, h100-sxm."""
    env = os.environ.get("CLUSTERKIT_PROFILE")
    if env:
        return env
    from clusterkit import sim

    spec = os.environ.get(sim.ENV_SIM)
    if spec:
        fleet = sim.load_fleet(spec)
        if fleet.profile:
            return fleet.profile
    return "h100-sxm"
