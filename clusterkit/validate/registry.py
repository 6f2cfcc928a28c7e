"""The check registry: every check domain, and every check id with its one-line doc.

A check domain is one module under ``clusterkit.validate`` that defines::

    NAME = "gpu"                      # the domain, first part of every check id
    DOC = "GPUs through NVML"         # one line
    CHECKS = {"gpu.ecc.mode": "ECC disabled", ...}   # every id it can emit, one line each
    Measurement                       # the Record (clusterkit.record) of what the probe read
    def probe(ctx, profile) -> Measurement   # reads the node through the probe context; never raises
    def judge(m, profile) -> list[CheckResult]   # pure
    def facts(m) -> dict              # facts for fleet judges (driver, kernel, ...)

and is listed in :data:`DOMAINS`. The runner has no per-domain branches; ``clusterkit checks``
lists every id; ``--checks`` is validated against these ids. Fleet-level checks (computed on the
controller from every node's facts) are listed in :data:`FLEET_CHECKS` and live in
``clusterkit.validate.fleet``.

The ids are also kept as plain data in the generated module ``clusterkit.validate._index``, so
that validating ``--checks`` imports no domain module (each declares its Records at import):
only the domains a run selects are imported, when they run. After changing a domain's ``DOC``
or ``CHECKS`` (or adding a domain, or a fleet check), regenerate it::

    python -m clusterkit.validate.registry --write-index

(a unit test fails, naming that command, while the index and the modules disagree). A domain
missing from the index is read from its module, so nothing breaks in between, only slower.

``--checks`` takes a list of selectors. A selector is a check id, a domain, or a group: a
dotted prefix of at least one id (``gpu.ecc`` selects ``gpu.ecc.mode``, ``gpu.ecc.uncorrectable``
and ``gpu.ecc.aggregate``). Anything else is refused with the closest known ids: a typo must
never turn into a green run.
"""

from __future__ import annotations

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

#: what ``node-check --healthcheck`` (Slurm's HealthCheckProgram, every few minutes) probes: the
#: node-local domains that answer in milliseconds. Not topo (an external tool; static topology
#: is validate's job) and not stress (it loads the GPUs); no opt-in checks of these either.
HEALTHCHECK_DOMAINS: tuple[str, ...] = ("gpu", "system", "nvlink", "ib", "xid", "storage")

#: checks emitted by the runner itself for any domain
RUNNER_CHECKS = {
    "{domain}.probe": "the domain's probe crashed or did not finish within the deadline (error)",
}


def domain_module(name: str) -> ModuleType:
    return importlib.import_module(DOMAINS[name])


def _index() -> ModuleType | None:
    try:
        from clusterkit.validate import _index
    except ImportError:  # pragma: no cover - only while it is being regenerated
        return None
    return _index


def domain_doc(name: str) -> str:
    """A domain's one-line ``DOC`` (from the index; the module for a domain the index lacks)."""
    idx = _index()
    if idx is not None and name in idx.DOMAIN_DOCS:
        return str(idx.DOMAIN_DOCS[name])
    return str(domain_module(name).DOC)


def domain_checks(name: str) -> dict[str, str]:
    """A domain's ``CHECKS`` (from the index; the module for a domain the index lacks)."""
    idx = _index()
    if idx is not None and name in idx.NODE_CHECKS:
        return dict(idx.NODE_CHECKS[name])
    return dict(domain_module(name).CHECKS)


def node_checks(*, live: bool = False) -> dict[str, str]:
    """Every node-side check id -> its one-line doc, domain by domain. ``live``: read every
    domain module, not the index (what ``--write-index`` writes, and what its test compares)."""
    out: dict[str, str] = {}
    for name in DOMAINS:
        out.update(dict(domain_module(name).CHECKS) if live else domain_checks(name))
        for pattern, doc in RUNNER_CHECKS.items():
            out.setdefault(pattern.format(domain=name), doc)
    return out


def fleet_checks(*, live: bool = False) -> dict[str, str]:
    idx = None if live else _index()
    if idx is not None:
        return dict(idx.FLEET_CHECKS)
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


def matches(check: str, selector: str) -> bool:
    """Whether ``selector`` (a check id, a group such as ``gpu.ecc``, or a domain) selects ``check``."""
    return check == selector or check.startswith(selector + ".")


class Selection:
    """What ``--checks`` selected: the domains to probe and the filters on results."""

    def __init__(self, domains: list[str], filters: Optional[list[str]]) -> None:
        self.domains = domains
        self.filters = filters  # None: everything

    def keeps(self, check: str) -> bool:
        if self.filters is None:
            return True
        return any(matches(check, f) for f in self.filters)

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
        import difflib

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


# ------------------------------------------------------------------------------ the index
INDEX_PATH = "clusterkit/validate/_index.py"
WRITE_INDEX = "python -m clusterkit.validate.registry --write-index"


def index_source() -> str:
    """The text of ``_index.py`` for the domain modules as they are now (imports every one)."""
    docs = {name: str(domain_module(name).DOC) for name in DOMAINS}
    checks = {name: dict(domain_module(name).CHECKS) for name in DOMAINS}
    lines = [
        f'"""Generated by ``{WRITE_INDEX}``: do not edit.',
        "",
        "Every check domain's DOC and CHECKS, and the fleet checks, as plain data: ``--checks`` is",
        'validated against them without importing the domain modules (clusterkit.validate.registry)."""',
        "",
        "DOMAIN_DOCS: dict[str, str] = {",
        *(f"    {name!r}:\n        {doc!r}," for name, doc in docs.items()),
        "}",
        "",
        "NODE_CHECKS: dict[str, dict[str, str]] = {",
    ]
    for name, ids in checks.items():
        lines.append(f"    {name!r}: {{")
        lines.extend(f"        {cid!r}:\n            {doc!r}," for cid, doc in ids.items())
        lines.append("    },")
    lines += ["}", "", "FLEET_CHECKS: dict[str, str] = {"]
    lines.extend(f"    {cid!r}:\n        {doc!r}," for cid, doc in fleet_checks(live=True).items())
    lines.append("}")
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    import os

    from clusterkit._generated import write_or_check

    return write_or_check(argv, what="index", command="python -m clusterkit.validate.registry",
                          path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "_index.py"),
                          shown=INDEX_PATH, source=index_source)


if __name__ == "__main__":  # pragma: no cover - the command itself is run by its test
    import sys

    sys.exit(_main(sys.argv[1:]))
