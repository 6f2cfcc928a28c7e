"""Owned drain reasons: ``clusterkit: <checks>: <detail>``.

Other tools read drain reasons (dashboards, NHC, a site's own scripts), so the reason is one
short line with a fixed shape, matched by :data:`REASON_RE`::

    clusterkit: gpu.ecc.uncorrectable: gpu5: 3 volatile uncorrectable ECC errors
    clusterkit: gpu.ecc.uncorrectable,gpu.pcie.width: gpu5: 3 volatile uncorrectable ECC errors

``<checks>`` lists the failed check ids (comma-separated, sorted); when they do not fit, their
domains (``gpu,ib``). Every item is a ``--checks`` selector, so ``clusterkit slurm resume``
re-runs exactly those checks before resuming. ``<detail>`` is the first failure's subject and
message, cut to fit. A reason that does not start with ``clusterkit:`` is someone else's: it is
never overwritten and its node is never resumed by clusterkit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

PREFIX = "clusterkit:"
#: the whole reason; group 1 the selectors, group 2 the detail
REASON_RE = re.compile(r"^clusterkit: ([a-z0-9_][a-z0-9_.,-]*): (.*)$")
MAX_LEN = 160  # Slurm keeps longer reasons, but sinfo -R and dashboards cut them
_CHECKS_MAX = 80


@dataclass(frozen=True)
class OwnedReason:
    selectors: tuple[str, ...]
    detail: str


def is_owned(reason: Optional[str]) -> bool:
    """Whether clusterkit set this reason (it starts with ``clusterkit:``)."""
    return bool(reason) and str(reason).strip().startswith(PREFIX)


def parse(reason: Optional[str]) -> Optional[OwnedReason]:
    """The selectors and detail of an owned reason; None for anyone else's (or none)."""
    if not reason:
        return None
    m = REASON_RE.match(" ".join(str(reason).split()))
    if not m:
        return None
    sels = tuple(s for s in m.group(1).split(",") if s)
    return OwnedReason(selectors=sels, detail=m.group(2)) if sels else None


def not_rechecked(checks: Iterable[Any], selectors: Iterable[str]) -> list[str]:
    """The selectors of an owned reason that no result in ``checks`` answers (did not run)."""
    from clusterkit.validate.registry import matches

    ran = [c.check for c in checks]
    return [s for s in selectors if not any(matches(c, s) for c in ran)]


def covered(checks: Iterable[Any], selectors: Iterable[str]) -> tuple[bool, str]:
    """Whether every selector of an owned reason ran in ``checks`` (CheckResults) and none of
    its results failed or errored: the condition for resuming the node; else why not."""
    from clusterkit.validate.registry import matches

    results = list(checks)
    for sel in selectors:
        hits = [c for c in results if matches(c.check, sel)]
        if not hits:
            return False, f"{sel} did not run"
        bad = [c for c in hits if c.status.value in ("fail", "error")]
        if bad:
            return False, f"{bad[0].check} is {bad[0].status.value}"
    return True, ""


def _clean(text: str) -> str:
    # one line, nothing a shell or Slurm's reason parser could trip on
    text = " ".join(str(text).split())
    return "".join(c if c.isprintable() and c not in "\"'`$\\" else "_" for c in text)


def make(failures: Iterable[tuple[str, Optional[str], str]], also: Iterable[str] = ()) -> str:
    """The reason for a node's failures: ``(check, subject, message)`` triples, any order.
    ``also``: selectors kept from the node's previous owned reason (a check that drained it and
    did not run this time must still be re-run before it is resumed).

    Deterministic (the same failures give the same reason, so a re-run does not churn it),
    one line, at most :data:`MAX_LEN` characters."""
    items = sorted({(c, s or "", m) for c, s, m in failures})
    if not items:
        raise ValueError("a drain reason needs at least one failure")
    checks = sorted({c for c, _, _ in items} | set(also))
    sel = ",".join(checks)
    if len(sel) > _CHECKS_MAX:
        sel = ",".join(sorted({c.split(".", 1)[0] for c in checks}))
    check, subject, message = items[0]
    detail = _clean(f"{subject}: {message}" if subject else message) or check
    if len(checks) > 1:
        detail += f" (+{len(checks) - 1} more)"
    head = f"{PREFIX} {sel}: "
    room = MAX_LEN - len(head)
    if len(detail) > room:
        detail = detail[: max(0, room - 3)].rstrip() + "..."
    return head + detail
