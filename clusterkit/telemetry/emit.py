"""After a run: replay the spool, write the run's points, spool what the store did not take.

:func:`emit` never raises for store or spool trouble: what went wrong comes back as one-line
warnings in :class:`EmitResult` (at most one line per kind of trouble), and the run's report is
never touched. Bound: everything (replay included) ends within ``deadline_s`` (default
:data:`DEFAULT_DEADLINE_S`, 10 s) plus the time to write the spool files; the replay of older
batches gets at most :data:`REPLAY_SHARE` of it, the run's own points the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from clusterkit.telemetry.sink import DEFAULT_BATCH_LINES, DEFAULT_REQUEST_TIMEOUT_S, display_url, redact
from clusterkit.telemetry.spool import DEFAULT_MAX_BYTES, ReplayResult, Spool, SpoolError

if TYPE_CHECKING:
    from clusterkit.models import FleetReport
    from clusterkit.telemetry.sink import BatchResult, InfluxSink, Writer

#: the most one emit (replay + the run's points) may take, seconds
DEFAULT_DEADLINE_S = 10.0
#: share of the deadline the replay of older batches may use
REPLAY_SHARE = 0.5


@dataclass
class EmitResult:
    #: points (lines) of this run
    points: int = 0
    #: of them: written to the store
    written: int = 0
    #: of them: kept in the spool to be replayed
    spooled: int = 0
    #: of them: rejected by the store (4xx about their content), kept in the spool's rejected/
    rejected: int = 0
    #: of them: neither written nor kept (the spool is full or cannot be written)
    lost: int = 0
    #: older points delivered from the spool first
    replayed: int = 0
    #: batches waiting in the spool afterwards
    waiting: int = 0
    spool_dir: str = ""
    elapsed_s: float = 0.0
    #: one-line warnings (no token, no credentials), at most one per kind of trouble
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every point of this run reached the store."""
        return self.written == self.points

    @property
    def exit_code(self) -> int:
        """0 every point written, 3 some had to be spooled, were rejected or lost."""
        return 0 if self.ok else 3


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def _store_line(url: str, r: "BatchResult", token: Optional[str]) -> str:
    from clusterkit.telemetry.sink import Outcome

    if r.outcome is Outcome.REFUSED:
        return (f"metrics store {display_url(url)} refused the write ({redact(r.detail, token)}; check the token, "
                "--influx-org and --influx-bucket)")
    tries = f", {r.attempts} tries in {r.elapsed_s:.1f} s" if r.attempts else ""
    return f"metrics store {display_url(url)} unavailable ({redact(r.detail, token)}{tries})"


def emit(report: "FleetReport", *, url: str, org: str, bucket: str, token: Optional[str] = None,
         spool_dir: Optional[str] = None, deadline_s: float = DEFAULT_DEADLINE_S,
         request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, batch_lines: int = DEFAULT_BATCH_LINES,
         spool_max_bytes: int = DEFAULT_MAX_BYTES, replay_first: bool = True, string_fields: bool = True,
         sink: Optional["Writer"] = None) -> EmitResult:
    """Replay the spool, then write ``report``'s points (:func:`clusterkit.telemetry.points.report_lines`);
    spool what the store does not take. Never raises for store or spool trouble."""
    from clusterkit.telemetry.points import report_lines

    return emit_lines(report_lines(report, string_fields=string_fields), url=url, org=org, bucket=bucket,
                      token=token, spool_dir=spool_dir, deadline_s=deadline_s, request_timeout_s=request_timeout_s,
                      batch_lines=batch_lines, spool_max_bytes=spool_max_bytes, replay_first=replay_first, sink=sink)


def emit_lines(lines: Sequence[str], *, url: str, org: str, bucket: str, token: Optional[str] = None,
               spool_dir: Optional[str] = None, deadline_s: float = DEFAULT_DEADLINE_S,
               request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, batch_lines: int = DEFAULT_BATCH_LINES,
               spool_max_bytes: int = DEFAULT_MAX_BYTES, replay_first: bool = True,
               sink: Optional["Writer"] = None, clock: Callable[[], float] = time.monotonic) -> EmitResult:
    """:func:`emit` for lines already built (``clusterkit telemetry push``, benchmarks). ``sink``:
    send through this writer instead of an :class:`~clusterkit.telemetry.sink.InfluxSink` of
    ``url`` (which is then made, and closed, here)."""
    from clusterkit.telemetry.sink import InfluxSink, Outcome, batches
    from clusterkit.telemetry.spool import replay

    start = clock()
    deadline = start + max(0.0, deadline_s)
    spool = Spool(spool_dir, max_bytes=spool_max_bytes)
    res = EmitResult(points=len(lines), spool_dir=spool.directory)
    own: Optional[InfluxSink] = None
    missing: Optional[str] = None  # the module a store needs and this installation lacks
    failure: Optional[BatchResult] = None  # the store's first refusal or failure to answer
    spool_error: Optional[str] = None
    rejected_detail = ""
    other: list[str] = []
    rr = ReplayResult()
    try:
        if sink is None:
            try:
                sink = own = InfluxSink(url, org=org, bucket=bucket, token=token, request_timeout_s=request_timeout_s)
            except ImportError as e:
                missing = e.name or "influxdb_client"
        if sink is not None and replay_first:
            rr = replay(spool, sink, deadline=start + deadline_s * REPLAY_SHARE, clock=clock)
            res.replayed = rr.lines
            other.extend(f"telemetry: {w}" for w in rr.warnings)
            if rr.rejected_files:
                rejected_detail = rr.rejected_detail
                other.append(f"telemetry: the store rejected {rr.rejected_lines} spooled points "
                             f"({redact(rr.rejected_detail, token)}): kept in {spool.rejected_dir}, not sent again")
            if rr.stopped is not None:
                failure = rr.stopped
        for batch in batches(lines, batch_lines):
            n = len(batch)
            r: Optional[BatchResult] = None
            if sink is not None and failure is None:
                r = sink.write("\n".join(batch), deadline=deadline)
                if r.outcome is Outcome.WRITTEN:
                    res.written += n
                    continue
                if r.outcome is not Outcome.REJECTED:
                    failure = r
            rejected = r is not None and r.outcome is Outcome.REJECTED
            try:
                spool.put(batch, rejected=rejected, note=redact(r.detail, token) if r is not None else "")
            except SpoolError as e:
                res.lost += n
                spool_error = spool_error or str(e)
                continue
            if rejected:
                assert r is not None
                res.rejected += n
                rejected_detail = rejected_detail or r.detail
            else:
                res.spooled += n
    finally:
        if own is not None:
            own.close()
    try:
        res.waiting = len(spool.pending())
    except SpoolError:
        res.waiting = 0
    res.elapsed_s = clock() - start
    where = spool.directory
    if failure is not None and (res.spooled or res.lost or rr.left):
        line = "telemetry: " + _store_line(url, failure, token)
        if res.spooled:
            line += f"; {res.spooled} of {res.points} points spooled to {where}"
        if res.waiting:
            line += (f" ({_batches(res.waiting)} waiting there; sent by the next run or `clusterkit telemetry "
                     "replay`)")
        res.warnings.append(line)
    elif rr.out_of_time and res.waiting:
        res.warnings.append(f"telemetry: {_batches(res.waiting)} still waiting in {where} (the replay used "
                            f"its {deadline_s * REPLAY_SHARE:g} s; the next run or `clusterkit telemetry replay` "
                            "goes on)")
    elif missing is not None:
        res.warnings.append(f"telemetry: cannot send metrics: {missing} is not installed; {res.spooled} of "
                            f"{res.points} points spooled to {where}")
    elif res.spooled:  # the deadline passed before every batch was tried
        res.warnings.append(f"telemetry: out of time ({deadline_s:g} s): {res.spooled} of {res.points} points "
                            f"spooled to {where}")
    if res.rejected:
        res.warnings.append(f"telemetry: the store rejected {res.rejected} of {res.points} points "
                            f"({redact(rejected_detail, token)}): kept in {spool.rejected_dir}, not sent again")
    if spool_error:
        res.warnings.append(f"telemetry: {spool_error}: {res.lost} of {res.points} points neither sent nor kept "
                            "(the report is kept)")
    res.warnings.extend(other)
    res.warnings = [redact(w, token) for w in res.warnings]
    return res
