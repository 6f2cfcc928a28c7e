"""The check registry: every check domain, and every check id with its one-line doc.

A check domain is one module under ``clusterkit.validate`` that defines::

    NAME = "gpu"                      # the domain, first part of every check id
    DOC = "GPUs through NVML"         # one line
    CHECKS = {"gpu.ecc.mode": "ECC disabled", ...}   # every id it can emit, one line each
    Measurement                       # the pydantic model of what the probe read
    def probe(ctx, profile) -> Measurement   # reads the node through the probe context; never raises
    def judge(m, profile) -> list[CheckResult]   # pure
    def facts(m) -> dict              # facts for fleet judges (driver, kernel, ...)

and is listed in :data:`DOMAINS`. The runner has no per-domain branches; ``clusterkit checks``
lists every id; ``--checks`` is validated against these ids. Fleet-level checks (computed on the
controller from every node's facts) are listed in :data:`FLEET_CHECKS` and live in
``clusterkit.validate.fleet``.

``--checks`` takes a list of selectors. A selector is a check id, a domain, or a group: a
dotted prefix of at least one id (``gpu.ecc`` selects ``gpu.ecc.mode``, ``gpu.ecc.uncorrectable``
and ``gpu.ecc.aggregate``). Anything else is refused with the closest known ids: a typo must
never turn into a green run.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import Optional

from clusterkit.errors import UsageError

#: domain name -> module (imported only when the domain runs or is listed)
DOMAINS: dict[str, str] = {
    "gpu": "clusterkit.validate.gpu",
    "system": "clusterkit.validate.system",
    "nvlink": "clusterkit.validate.nvlink",
    "topo": "clusterkit.validate.topo",
    "ib": "clusterkit.validate.ib",
    "storage": "clusterkit.validate.storage",
    "xid": "clusterkit.validate.xid",
    "stress": "clusterkit.validate.stress",
}

#: checks emitted by the runner itself for any domain
RUNNER_CHECKS = {
    "{domain}.probe": "the domain's probe crashed or did not finish within the deadline (error)",
}


def domain_module(name: str) -> ModuleType:
    return importlib.import_module(DOMAINS[name])


def node_checks() -> dict[str, str]:
    """Every node-side check id -> its one-line doc, domain by domain."""
    out: dict[str, str] = {}
    for name in DOMAINS:
        mod = domain_module(name)
        out.update(mod.CHECKS)
        for pattern, doc in RUNNER_CHECKS.items():
            out.setdefault(pattern.format(domain=name), doc)
    return out


def fleet_checks() -> dict[str, str]:
    from clusterkit.validate.fleet import FLEET_CHECKS

    return dict(FLEET_CHECKS)


def all_checks() -> dict[str, str]:
    return {**node_checks(), **fleet_checks()}


def _groups(ids: list[str]) -> set[str]:
    out: set[str] = set()
    for cid in ids:
        parts = cid.split(".")
        for i in range(1, len(parts)):
            out.add(".".join(parts[:i]))
    return out


class Selection:
    """What ``--checks`` selected: the domains to probe and the filters on results."""

    def __init__(self, domains: list[str], filters: Optional[list[str]]) -> None:
        self.domains = domains
        self.filters = filters  # None: everything

    def keeps(self, check: str) -> bool:
        if self.filters is None:
            return True
        return any(check == f or check.startswith(f + ".") for f in self.filters)

    def as_list(self) -> Optional[list[str]]:
        return None if self.filters is None else list(self.filters)


def select(selectors: Optional[list[str]]) -> Selection:
    """Validate ``--checks`` selectors against the registry (UsageError, exit 2, on any unknown
    one, naming it and the closest known ids)."""
    if selectors is None:
        return Selection(list(DOMAINS), None)
    items = [s.strip() for s in selectors if s and s.strip()]
    if not items:
        raise UsageError("--checks names no check")
    known_nodes = list(node_checks())
    known_fleet = list(fleet_checks())
    known = known_nodes + known_fleet
    valid = set(known) | _groups(known) | set(DOMAINS)
    unknown = [s for s in items if s not in valid]
    if unknown:
        parts = []
        for s in unknown:
            close = difflib.get_close_matches(s, sorted(valid), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            parts.append(f"{s!r}{hint}")
        raise UsageError(f"unknown check {'; '.join(parts)}; `clusterkit checks` lists them all")
    domains: list[str] = []
    for s in items:
        dom = s.split(".", 1)[0]
        if dom == "fleet":  # fleet judges need every domain's facts
            domains = list(DOMAINS)
            break
        if dom in DOMAINS and dom not in domains:
            domains.append(dom)
    return Selection(domains, items)
