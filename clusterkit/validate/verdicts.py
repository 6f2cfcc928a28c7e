"""Cached verdicts: what a deep check found, kept for the health check to repeat.

A deep check (``node-check --stress``, ``--ib-bw``, ``--storage-bench``; later an NCCL run)
loads the node for seconds or minutes: Slurm's health check, run every few minutes between
jobs, cannot run it. Instead each deep run keeps its results in the node's state directory,
and ``node-check --healthcheck`` adds every verdict younger than ``--cache-max-age`` to its own
report: a GPU that failed ``stress.gemm`` last night keeps the node failing (and drained) until
a newer stress run passes, or the verdict ages out. (Azure's healthagent keeps the verdicts of
its expensive checks the same way.)

Storage: one JSON document per source, ``<state dir>/verdicts/<source>.json``, written through
the probe context's state helpers (atomically)::

    {"version": 1, "source": "stress", "node": "gpu-001", "time": 1733000000.0,
     "results": [{"check": "stress.gemm", "subject": "gpu3", "status": "fail", ...}, ...]}

Rules:

* a newer run of a source replaces its verdict; a run that produced no ``pass``/``warn``/``fail``
  at all (it could not run: no torch, no perftest, the deadline) keeps the earlier verdict, which
  is still the latest evidence;
* :func:`load` carries only ``pass``, ``warn`` and ``fail`` (an ``error`` or ``skip`` of a past
  run says nothing about the node now), suffixes each message with ``(cached from <source> run
  <N>h ago)``, and ignores a verdict older than the maximum age (not an error);
* a file that cannot be read or is not such a document, or a verdict of another node (a state
  directory shared by mistake), is ignored with a note, never a crash.

Nothing here is specific to one deep check: :data:`DEEP` maps node-check's opt-ins to their
sources, and an NCCL run saves its own (``save(ctx, "nccl", results)``).
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any, Iterable, Optional

from clusterkit.models import CheckResult, Status

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.models import NodeReport
    from clusterkit.validate.context import ProbeContext

VERSION = 1
#: the state-directory key: ``verdicts/<source>.json``
DIR = "verdicts"
#: source -> the check-id families (an id, or a dotted prefix of ids) whose results it keeps
DEEP: dict[str, tuple[str, ...]] = {
    "stress": ("stress",),
    "ib-bw": ("ib.write_bw",),
    "storage-bench": ("storage.metadata", "storage.fio", "storage.weights"),
}
#: what a verdict may carry into a later report
CARRIED = (Status.PASS, Status.WARN, Status.FAIL)
DEFAULT_MAX_AGE_H = 168.0  # 7 days
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _in(check: str, families: Iterable[str]) -> bool:
    from clusterkit.validate.registry import matches

    return any(matches(check, f) for f in families)


def check_source(source: str) -> str:
    """``source`` when it is a valid source name (a file name of its own), else ValueError."""
    if not _SOURCE.match(source):
        raise ValueError(f"not a verdict source name: {source!r} (lowercase letters, digits, - and _)")
    return source


def path_of(ctx: "ProbeContext", source: str) -> str:
    return os.path.join(ctx.state_dir, DIR, f"{check_source(source)}.json")


def save(ctx: "ProbeContext", source: str, results: list[CheckResult]) -> None:
    """Keep ``results`` as the latest verdict of ``source`` (replacing the earlier one), unless
    none of them is a verdict (only ``error``/``skip``: the deep check could not run). Never
    raises for the file system: a verdict that cannot be kept is only not kept (the run's own
    report still says what it found)."""
    check_source(source)
    if not any(r.status in CARRIED for r in results):
        return
    doc = {"version": VERSION, "source": source, "node": ctx.node, "time": time.time(),
           "results": [r.model_dump(mode="json") for r in results]}
    try:
        os.makedirs(os.path.join(ctx.state_dir, DIR), mode=0o755, exist_ok=True)
    except OSError:
        return
    ctx.write_state(path_of(ctx, source), doc)


def save_deep(ctx: "ProbeContext", report: "NodeReport") -> list[str]:
    """Save the results of every deep check this run asked for (``ctx.opt_in``), one verdict per
    source of :data:`DEEP`; the sources saved."""
    saved = []
    for source, families in DEEP.items():
        if not any(_in(c, families) for c in ctx.opt_in):
            continue
        results = [r for r in report.checks if _in(r.check, families)]
        if any(r.status in CARRIED for r in results):
            save(ctx, source, results)
            saved.append(source)
    return saved


def _age_text(age_s: float) -> str:
    h = age_s / 3600.0
    return f"{h:.0f}h" if h >= 1 else f"{h:.1f}h"


def load(ctx: "ProbeContext", max_age_s: float, *, facts: Optional[dict[str, Any]] = None) -> list[CheckResult]:
    """The ``pass``/``warn``/``fail`` results of every cached verdict no older than ``max_age_s``,
    each message suffixed ``(cached from <source> run <N>h ago)``. Never raises. ``facts``, when
    given, gets ``cached_verdicts`` (source -> age_h, results carried) and
    ``cached_verdicts_ignored`` (source -> why: too old, unreadable, not a verdict)."""
    used: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    out: list[CheckResult] = []
    directory = os.path.join(ctx.state_dir, DIR)
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # no deep check ran here yet (or the directory is unreadable: nothing to add)
        names = []
    now = time.time()
    for name in names:
        if not name.endswith(".json") or not _SOURCE.match(name[:-5]):
            continue  # a temporary file of a writer, or something that is not ours
        source = name[:-5]
        doc, problem = ctx.read_state(os.path.join(directory, name))
        if problem is not None or doc is None:
            ignored[source] = f"unreadable: {problem or 'gone'}"
            continue
        results, why = _parse(doc)
        if why is not None:
            ignored[source] = f"not a verdict: {why}"
            continue
        if doc.get("node") not in (None, ctx.node):  # a state directory shared by nodes
            ignored[source] = f"a verdict of node {doc['node']!r}, not of {ctx.node!r}"
            continue
        age = max(0.0, now - float(doc["time"]))
        if age > max_age_s:
            ignored[source] = f"{_age_text(age)} old, older than {_age_text(max_age_s)}"
            continue
        carried = [r for r in results if r.status in CARRIED]
        suffix = f" (cached from {source} run {_age_text(age)} ago)"
        out.extend(r.model_copy(update={"message": (r.message + suffix).strip()}) for r in carried)
        used[source] = {"age_h": round(age / 3600.0, 2), "results": len(carried)}
    if facts is not None:
        if used:
            facts["cached_verdicts"] = used
        if ignored:
            facts["cached_verdicts_ignored"] = ignored
    return out


def _parse(doc: Any) -> tuple[list[CheckResult], Optional[str]]:
    from clusterkit.record import ValidationError

    if not isinstance(doc, dict):
        return [], "not a JSON object"
    if doc.get("version") != VERSION:
        return [], f"version {doc.get('version')!r}, not {VERSION}"
    t = doc.get("time")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t in (float("inf"), float("-inf")):
        return [], "no time"
    items = doc.get("results")
    if not isinstance(items, list):
        return [], "no results"
    try:
        return [CheckResult.model_validate(r) for r in items], None
    except ValidationError as e:
        return [], f"a result does not read: {' '.join(str(e).split())[:200]}"
