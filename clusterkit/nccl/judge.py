"""Judging nccl-tests runs: a parsed run -> busbw at the judged size, and check results.

Pure functions of a parsed run (:mod:`clusterkit.parsers.nccl_tests`) and a profile; no I/O.
``clusterkit nccl check`` judges every run of a captured log with :func:`judge_output`.

Check ids, per run (``<c>`` is the collective without underscores: ``allreduce``,
``allgather``, ``reducescatter``, ``alltoall``, ``sendrecv``, ...; ``unknown`` when the log does
not name it and the table does not tell):

* ``nccl.<c>.run``    the run completed (pass), or could not run to the end (error): an init
  failure (no result row), a crash after some rows, or output that just stops; the message
  carries the failure line and the node it names.
* ``nccl.<c>.wrong``  data correctness: ``#wrong`` > 0 or values out of bounds is ``fail`` (data
  corruption: evidence); 0 wrong elements is ``pass``; old-format logs report no ``#wrong``:
  their ``Out of bounds values`` line decides, and the maximum error is noted.
* ``nccl.<c>.busbw``  out-of-place busbw (GB/s) of the row at the profile's ``message_bytes``
  (or the largest row below it). Only all_reduce has floors: one node NVLS / one node ring /
  several nodes, from the profile's ``nccl`` section; other collectives pass with the figure.
* ``nccl.<c>.ranks``  only when the caller expected a node count: the log's node count differs
  (``warn``) or matches (``pass``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Optional

from clusterkit.models import CheckResult, Status
from clusterkit.parsers.nccl_tests import NcclRow, NcclRun

if TYPE_CHECKING:
    from clusterkit.parsers.nccl_tests import NcclTestsOutput
    from clusterkit.profiles import NcclProfile, Profile

Mode = Literal["single", "multi"]
Algo = Literal["nvls", "ring"]

#: the size judged when the profile has no ``nccl`` section (NcclProfile's default)
DEFAULT_MESSAGE_BYTES = 8 * 1024**3


def row_at(run: NcclRun, size_bytes: int) -> Optional[NcclRow]:
    """The table row judged for ``size_bytes``: that size, else the largest row below it (a run
    whose maxBytes was reduced for memory), else None (no row at or below it)."""
    best: Optional[NcclRow] = None
    for row in run.rows:
        if row.size_bytes == size_bytes:
            return row
        if row.size_bytes < size_bytes and (best is None or row.size_bytes > best.size_bytes):
            best = row
    return best


def busbw_at(run: NcclRun, size_bytes: int) -> Optional[float]:
    """The out-of-place busbw (GB/s) of :func:`row_at`, else its in-place busbw, else None."""
    row = row_at(run, size_bytes)
    if row is None:
        return None
    for half in (row.out_of_place, row.in_place):
        if half is not None and half.busbw_gbps is not None:
            return half.busbw_gbps
    return None


# --------------------------------------------------------------------------- facts of a run
def check_prefix(collective: Optional[str]) -> str:
    """``nccl.allreduce`` for all_reduce, ``nccl.allgather`` for all_gather, ... (DESIGN.md names
    ``nccl.allreduce.busbw``): the collective without underscores, ``unknown`` when not known."""
    name = re.sub(r"[^a-z0-9]", "", (collective or "").lower())
    return f"nccl.{name or 'unknown'}"


def hosts_of(run: NcclRun) -> list[str]:
    """The distinct hosts of the run's ranks (its ``# Rank N ... on HOST`` lines), natural order;
    empty when the log names none (old format, table only)."""
    from clusterkit.hostlist import natural_key

    return sorted({d.host for d in run.devices if d.host}, key=natural_key)


#: busbw / algbw = factor(n) for each collective (nccl-tests' PERFORMANCE.md)
_BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
}
_MAX_INFERRED_RANKS = 256  # beyond this the printed figures cannot tell n from n+1


def ranks_from_ratio(run: NcclRun) -> Optional[int]:
    """The rank count implied by busbw / algbw (all_reduce: 2(n-1)/n; all_gather, reduce_scatter,
    alltoall: (n-1)/n), for logs that name no ranks (old format). Read on the row with the
    largest algbw (the most digits); None when the collective has no such factor, the figures
    are too small to tell, or the ratio fits no whole rank count."""
    if run.collective not in _BUS_FACTOR:
        return None
    best = None
    for row in run.rows:
        for half in (row.out_of_place, row.in_place):
            if half is None or half.algbw_gbps is None or half.busbw_gbps is None or half.algbw_gbps < 1.0:
                continue
            if best is None or half.algbw_gbps > best[0]:
                best = (half.algbw_gbps, half.busbw_gbps)
    if best is None:
        return None
    ratio = best[1] / best[0]
    # all_reduce: ratio = 2 - 2/n -> n = 2/(2 - ratio); the others: ratio = 1 - 1/n -> n = 1/(1 - ratio)
    top = 2.0 if run.collective == "all_reduce" else 1.0
    gap = top - ratio
    if gap <= 0:
        return None
    n = top / gap
    whole = round(n)
    if whole < 2 or whole > _MAX_INFERRED_RANKS or abs(n - whole) > 0.25:
        return None
    return int(whole)


def failed_node(run: NcclRun) -> Optional[str]:
    """The node a failure line names: ``cnode2-016: Test NCCL failure ...`` or
    `` .. cnode2-016 pid 340134: Test failure ...``; None when no failure line names one."""
    lines = ([run.error] if run.error else []) + list(run.failures)
    for line in lines:
        m = _FAILED_NODE_RE.match(line.lstrip(". ").strip())
        if m:
            return m.group(1) or m.group(2)
    return None


_FAILED_NODE_RE = re.compile(r"^(?:([A-Za-z0-9][A-Za-z0-9._-]*):\s+Test\b|([A-Za-z0-9][A-Za-z0-9._-]*)\s+pid\s+\d+:)")


def failure_kind(run: NcclRun) -> Optional[str]:
    """How the run ended when it did not complete: ``init`` (a failure before any result row),
    ``crash`` (a failure after some rows), ``incomplete`` (no failure line: the output stops);
    None when it completed without error."""
    if run.complete and run.error is None:
        return None
    if run.failures or run.complete:  # a failure line, or an error beside a finished table (-J JSON)
        return "crash" if run.rows else "init"
    return "incomplete"


def _human(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n // scale} {unit}" if n % scale == 0 else f"~{n / scale:.4g} {unit}"
    return f"{n} B"


def _g(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------- the mode
def judge_mode(run: NcclRun, *, gpus: Optional[int], nodes: Optional[int] = None,
               mode: Optional[Mode] = None) -> tuple[Optional[Mode], str]:
    """One node or several, and why: ``mode`` when given; else the hosts of the run's ranks; else
    the expected node count; else the rank count (named, or read from busbw/algbw) against the
    profile's GPUs per node. (None, why) when nothing tells."""
    if mode is not None:
        return mode, f"--mode {mode}"
    hosts = hosts_of(run)
    if hosts:
        if len(hosts) == 1:
            return "single", "one node"
        return "multi", f"{len(hosts)} nodes"
    if nodes is not None:
        return ("single" if nodes == 1 else "multi"), f"--nodes {nodes}"
    ranks, how = run.nranks, ""
    if ranks is None:
        ranks, how = ranks_from_ratio(run), " (from busbw/algbw)"
    if ranks is None:
        return None, "the log names no hosts and no rank count"
    if gpus is None or gpus <= 0:
        return None, f"{ranks} ranks{how}, and the profile gives no GPU count per node"
    if ranks <= gpus:
        return "single", f"{ranks} ranks{how}, within one {gpus}-GPU node"
    return "multi", f"{ranks} ranks{how}, more than one {gpus}-GPU node"


def _floor(nccl: Optional["NcclProfile"], mode: Mode, algo: Algo) -> tuple[Optional[float], str]:
    if mode == "multi":
        return (nccl.multi_gbps_min if nccl else None), "several nodes"
    if algo == "ring":
        return (nccl.single_ring_gbps_min if nccl else None), "one node, ring"
    return (nccl.single_nvls_gbps_min if nccl else None), "one node, NVLS"


# --------------------------------------------------------------------------- the judge
def subject_of(run: NcclRun, index: Optional[int] = None) -> str:
    """``all_reduce 8 ranks on cnode3-002``; ``run 2 all_gather 80 ranks on cnode3-[002-011]``
    when the log holds several runs; ``all_reduce ~32 ranks`` when the ranks are inferred."""
    from clusterkit.hostlist import fold

    parts = [f"run {index}"] if index is not None else []
    parts.append(run.collective or run.test or "unknown collective")
    if run.nranks is not None:
        parts.append(f"{run.nranks} ranks")
    else:
        inferred = ranks_from_ratio(run)
        if inferred is not None:
            parts.append(f"~{inferred} ranks")
    hosts = hosts_of(run)
    if hosts:
        parts.append(f"on {fold(hosts)}")
    return " ".join(parts)


def judge_run(run: NcclRun, profile: Optional["Profile"], *, mode: Optional[Mode] = None,
              algo: Optional[Algo] = None, nodes: Optional[int] = None,
              index: Optional[int] = None) -> list[CheckResult]:
    """Check results for one parsed nccl-tests run (module docstring: the ids).

    ``mode``: one node or several (None: from the log, :func:`judge_mode`); ``algo``: which
    one-node floor (NVLS, the default, or ring); ``nodes``: the node count the caller expected
    (a different count in the log is ``warn``); ``index``: the run's number in a log of several
    (named in the subject)."""
    prefix = check_prefix(run.collective)
    subject = subject_of(run, index)
    out: list[CheckResult] = [_judge_complete(run, prefix, subject)]
    wrong = _judge_wrong(run, prefix, subject)
    if wrong is not None:
        out.append(wrong)
    if run.complete and run.rows:
        out.append(_judge_busbw(run, profile, prefix, subject, mode=mode, algo=algo or "nvls", nodes=nodes))
    if nodes is not None:
        out.append(_judge_nodes(run, prefix, subject, nodes))
    return out


def judge_output(output: "NcclTestsOutput", profile: Optional["Profile"], *, mode: Optional[Mode] = None,
                 algo: Optional[Algo] = None, nodes: Optional[int] = None) -> list[CheckResult]:
    """Every run of a parsed log, in order (runs numbered in the subject when there are several)."""
    many = len(output.runs) > 1
    out: list[CheckResult] = []
    for i, run in enumerate(output.runs, 1):
        out.extend(judge_run(run, profile, mode=mode, algo=algo, nodes=nodes, index=i if many else None))
    return out


def exit_code(checks: Sequence[CheckResult]) -> int:
    """1 when a check failed, else 3 when one could not run (error), else 0."""
    seen = {c.status for c in checks}
    if Status.FAIL in seen:
        return 1
    if Status.ERROR in seen:
        return 3
    return 0


def _judge_complete(run: NcclRun, prefix: str, subject: str) -> CheckResult:
    kind = failure_kind(run)
    check = f"{prefix}.run"
    if kind is None:
        if run.rows:
            span = f"{len(run.rows)} sizes {_human(run.rows[0].size_bytes)}..{_human(run.rows[-1].size_bytes)}"
        else:
            span = "no result rows"
        return CheckResult(check=check, subject=subject, status=Status.PASS, value="complete",
                           message=f"completed: {span}")
    cause = " ".join((run.error or "").split()) or "no cause printed"
    node = failed_node(run)
    on = f" on {node}" if node else ""
    if kind == "init":
        what = f"failed{on} before any result row (init or first collective)"
    elif kind == "crash":
        what = f"failed{on} after {len(run.rows)} result row(s), at {_human(run.rows[-1].size_bytes)}"
    else:
        last = f" after {len(run.rows)} result row(s)" if run.rows else " before any result row"
        what = f"did not finish{last}"
    return CheckResult(check=check, subject=subject, status=Status.ERROR, value=kind,
                       message=f"{what}: {cause}")


def _max_error(run: NcclRun) -> Optional[float]:
    errs = [h.max_error for row in run.rows for h in (row.out_of_place, row.in_place)
            if h is not None and h.max_error is not None]
    return max(errs) if errs else None


def _judge_wrong(run: NcclRun, prefix: str, subject: str) -> Optional[CheckResult]:
    check = f"{prefix}.wrong"
    oob_bad = (run.out_of_bounds is not None and run.out_of_bounds > 0) or run.out_of_bounds_ok is False
    if run.wrong_total is not None and run.wrong_total > 0:
        sizes = [_human(row.size_bytes) for row in run.rows
                 if any(h is not None and h.wrong for h in (row.out_of_place, row.in_place))]
        shown = ", ".join(sizes[:4]) + (f" (+{len(sizes) - 4} more)" if len(sizes) > 4 else "")
        oob = f"; {run.out_of_bounds} value(s) out of bounds" if run.out_of_bounds else ""
        return CheckResult(check=check, subject=subject, status=Status.FAIL, value=run.wrong_total, threshold=0,
                           unit="elements",
                           message=f"{run.wrong_total} wrong element(s) at {shown}{oob}: data corruption "
                                   "(a GPU, NVLink or the network returned wrong results)")
    if oob_bad:
        count = run.out_of_bounds if run.out_of_bounds is not None else None
        return CheckResult(check=check, subject=subject, status=Status.FAIL, value=count, threshold=0,
                           unit="values",
                           message=f"out of bounds values: {count if count is not None else '?'} FAILED "
                                   "(nccl-tests' own check): data corruption")
    max_err = _max_error(run)
    if run.wrong_total == 0:
        return CheckResult(check=check, subject=subject, status=Status.PASS, value=0, threshold=0,
                           unit="elements", message="no wrong elements")
    if not run.rows and run.out_of_bounds is None:
        return None  # nothing measured: the run check says why
    note = f", maximum error {max_err:g}" if max_err is not None else ""
    if run.out_of_bounds == 0:
        return CheckResult(check=check, subject=subject, status=Status.PASS, value=0, threshold=0,
                           unit="values",
                           message=f"no value out of bounds (#wrong not reported: old output format{note})")
    return CheckResult(check=check, subject=subject, status=Status.SKIP,
                       message=f"not reported: no #wrong column and no out-of-bounds line{note}")


def _judge_busbw(run: NcclRun, profile: Optional["Profile"], prefix: str, subject: str, *,
                 mode: Optional[Mode], algo: Algo, nodes: Optional[int]) -> CheckResult:
    check = f"{prefix}.busbw"
    nccl = profile.nccl if profile is not None else None
    size = nccl.message_bytes if nccl is not None else DEFAULT_MESSAGE_BYTES
    row = row_at(run, size)
    value = busbw_at(run, size)
    if row is None or value is None:
        smallest = min(r.size_bytes for r in run.rows)
        why = (f"no result row at or below {_human(size)} (the smallest is {_human(smallest)})" if row is None
               else f"the row at {_human(row.size_bytes)} reports no busbw")
        return CheckResult(check=check, subject=subject, status=Status.ERROR, unit="GB/s", message=why)
    notes = [f"{row.size_bytes} B"] if _human(row.size_bytes).startswith("~") else []
    if row.size_bytes != size:
        notes.append(f"the largest row below {_human(size)}")
    at = f"at {_human(row.size_bytes)}" + (f" ({', '.join(notes)})" if notes else "")
    figure = f"{_g(value)} GB/s {at}"
    if run.collective != "all_reduce":
        name = run.collective or "an unknown collective"
        return CheckResult(check=check, subject=subject, status=Status.PASS, value=value, unit="GB/s",
                           message=f"{figure}; no floor for {name} (only all_reduce is judged)")
    pname = profile.name if profile is not None else "none"
    gpus = profile.gpu.count if profile is not None and profile.gpu is not None else None
    judged, why = judge_mode(run, gpus=gpus, nodes=nodes, mode=mode)
    if judged is None:
        return CheckResult(check=check, subject=subject, status=Status.ERROR, value=value, unit="GB/s",
                           message=f"{figure}; one node or several? {why}: give --mode or --nodes")
    floor, which = _floor(nccl, judged, algo)
    basis = which if why in which else f"{which}: {why}"
    hint = "; a ring-only run: --algo ring" if judged == "single" and algo == "nvls" else ""
    if floor is None:
        return CheckResult(check=check, subject=subject, status=Status.PASS, value=value, unit="GB/s",
                           message=f"{figure}; no floor ({basis}; profile {pname} sets none)")
    if value < floor:
        return CheckResult(check=check, subject=subject, status=Status.FAIL, value=value, threshold=floor,
                           unit="GB/s", message=f"{figure}, below the floor {_g(floor)} GB/s ({basis}; "
                                               f"profile {pname}{hint})")
    return CheckResult(check=check, subject=subject, status=Status.PASS, value=value, threshold=floor, unit="GB/s",
                       message=f"{figure}, floor {_g(floor)} GB/s ({basis}; profile {pname}{hint})")


def _judge_nodes(run: NcclRun, prefix: str, subject: str, expected: int) -> CheckResult:
    check = f"{prefix}.ranks"
    hosts = hosts_of(run)
    if not hosts:
        return CheckResult(check=check, subject=subject, status=Status.SKIP, threshold=expected, unit="nodes",
                           message=f"expected {expected} node(s); the log names no hosts")
    n = len(hosts)
    ranks = f" ({run.nranks} ranks)" if run.nranks is not None else ""
    if n == expected:
        return CheckResult(check=check, subject=subject, status=Status.PASS, value=n, threshold=expected,
                           unit="nodes", message=f"{n} node(s){ranks}, as expected")
    return CheckResult(check=check, subject=subject, status=Status.WARN, value=n, threshold=expected, unit="nodes",
                       message=f"the log's ranks run on {n} node(s){ranks}, not the {expected} expected (--nodes)")
