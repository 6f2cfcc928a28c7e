"""The controller's ledger: the last validation verdict of every node, kept between runs.

``clusterkit validate`` records each report here (:func:`record`); ``clusterkit deploy serve``
reads it back (:func:`last_verdicts`) to serve only on nodes that passed a recent validation.
Saved reports given explicitly (``--validation-report FILE``) are read with
:func:`verdicts_from_files` and merged with :func:`merge` (the newest verdict of a node wins).

One JSON file, ``<state dir>/ledger.json`` (schema ``clusterkit.ledger/v1``)::

    {"schema": "clusterkit.ledger/v1",
     "nodes": {"gpu-001": {"status": "pass", "time": "2025-05-01T10:00:00+00:00",
                           "run_id": "6f1c…", "source": "partition:gpu",
                           "rails": ["mlx5_0:1", "mlx5_3:1"], "weights_gbps": 6.2}, …}}

``time`` is the report's ``created`` (when the run started: a verdict is never younger than
the measurement). ``rails`` are the node's InfiniBand ports whose ``ib.port.state`` passed
(None: that run had no IB checks) and ``weights_gbps`` the node's measured model-weights read
rate (``storage.weights``, None: not measured); a run without them keeps the figures of an
earlier run, since they describe the hardware, not the verdict. ``checks`` is the run's
``--checks`` selection (absent: every check): a partial run's failure is recorded like any
other, but its pass never replaces an earlier verdict, and alone it lets no node serve.

The state dir is the controller's (:func:`clusterkit.validate.context.default_state_dir`):
``$CLUSTERKIT_STATE_DIR``, else ``/var/lib/clusterkit`` as root, else
``$XDG_STATE_HOME/clusterkit``. Writers hold an exclusive ``flock`` on ``ledger.json.lock``
while they read, merge and replace the file (atomically: a reader never sees half a file), so
two validations finishing at once both land. An older report never replaces a newer verdict.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from clusterkit.errors import ClusterkitError
from clusterkit.models import FleetReport, NodeReport

SCHEMA = "clusterkit.ledger/v1"
FILENAME = "ledger.json"
#: node statuses that let a node serve
PASSING = frozenset({"pass", "warn"})


class LedgerError(ClusterkitError):
    """The ledger exists but cannot be read or written (exit 3: nothing was decided from it)."""

    exit_code = 3


class Verdict(BaseModel):
    """A node's last validation verdict."""

    model_config = ConfigDict(extra="ignore")

    status: str  # pass | warn | fail | error | unreachable
    time: str  # ISO 8601 with a time zone: when the run that judged it started
    run_id: str = ""
    source: str = ""  # how that run chose its nodes (the report's source); "file PATH, …" for a saved report
    rails: Optional[list[str]] = None
    weights_gbps: Optional[float] = None
    #: the run's --checks selection; None: every check (a full validation)
    checks: Optional[list[str]] = None

    @property
    def passing(self) -> bool:
        return self.status in PASSING

    @property
    def partial(self) -> bool:
        """Judged by a run of some checks only (``--checks``): its failures are evidence, but
        its pass says nothing of the checks that did not run."""
        return self.checks is not None

    @property
    def when(self) -> _dt.datetime:
        return parse_time(self.time)

    def age_h(self, now: _dt.datetime) -> float:
        return (now - self.when).total_seconds() / 3600.0


def parse_time(text: str) -> _dt.datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)


def directory(state_dir: Optional[str] = None) -> str:
    """The controller's state directory (the same rule as every other clusterkit state)."""
    if state_dir:
        return state_dir
    from clusterkit.validate.context import default_state_dir

    return default_state_dir()


def path(state_dir: Optional[str] = None) -> str:
    return os.path.join(directory(state_dir), FILENAME)


# --------------------------------------------------------------------------- from a report
def _rails(node: NodeReport) -> Optional[list[str]]:
    """The rails NCCL may use (a port ACTIVE at the profile's rate): one rule with ``nccl``'s
    NCCL_IB_HCA, so a rail trained down to 100G is never handed to a serving job either."""
    from clusterkit.nccl.env import rails_from_report

    return rails_from_report(node)


def _weights(node: NodeReport) -> Optional[float]:
    rates = [float(c.value) for c in node.checks
             if c.check == "storage.weights" and isinstance(c.value, (int, float))
             and not isinstance(c.value, bool) and c.value > 0]
    return min(rates) if rates else None


def verdicts_of(report: FleetReport, source: Optional[str] = None) -> dict[str, Verdict]:
    """Every node's verdict in one report."""
    when = parse_time(report.created).isoformat(timespec="seconds")
    return {n.node: Verdict(status=n.status.value, time=when, run_id=report.run_id,
                            source=source if source is not None else report.source,
                            rails=_rails(n), weights_gbps=_weights(n), checks=report.checks)
            for n in report.nodes}


def merge(*maps: Mapping[str, Verdict]) -> dict[str, Verdict]:
    """Per node, the newest verdict of all the maps (the later map on a tie); but a partial
    run's pass (``--checks``) never replaces an earlier verdict: it did not look at everything
    the earlier one judged."""
    out: dict[str, Verdict] = {}
    for m in maps:
        for node, v in m.items():
            old = out.get(node)
            if old is not None and v.partial and v.passing and v.when >= old.when:
                out[node] = _carry(old, v)
            elif old is not None and old.partial and old.passing and v.when < old.when:
                out[node] = _carry(v, old)
            elif old is None or v.when >= old.when:
                if old is not None:
                    v = _carry(v, old)
                out[node] = v
            else:
                out[node] = _carry(old, v)
    return out


def _carry(new: Verdict, old: Verdict) -> Verdict:
    """``new`` with the hardware figures of ``old`` where ``new`` has none."""
    upd: dict[str, Any] = {}
    if new.rails is None and old.rails is not None:
        upd["rails"] = old.rails
    if new.weights_gbps is None and old.weights_gbps is not None:
        upd["weights_gbps"] = old.weights_gbps
    return new.model_copy(update=upd) if upd else new


# --------------------------------------------------------------------------- the file
def _parse(text: str, where: str) -> dict[str, Verdict]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise LedgerError(f"ledger {where}: not JSON ({e}); remove it and validate again") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("nodes"), dict):
        raise LedgerError(f"ledger {where}: not a {SCHEMA} file; remove it and validate again")
    out: dict[str, Verdict] = {}
    for node, v in doc["nodes"].items():
        try:
            verdict = Verdict.model_validate(v)
            verdict.when  # noqa: B018 - the time must parse
        except (ValidationError, ValueError, TypeError):
            continue  # one unreadable entry: that node simply has no verdict
        out[str(node)] = verdict
    return out


def _dump(verdicts: Mapping[str, Verdict]) -> str:
    from clusterkit.hostlist import natural_key

    nodes = {n: verdicts[n].model_dump(exclude_none=True) for n in sorted(verdicts, key=natural_key)}
    return json.dumps({"schema": SCHEMA, "nodes": nodes}, indent=1) + "\n"


@contextmanager
def locked(where: str, filename: str = FILENAME) -> Iterator[None]:
    """An exclusive lock for the writers of ``where/filename`` (``flock`` on ``filename.lock``);
    creates ``where`` when missing."""
    import fcntl

    os.makedirs(where, exist_ok=True)
    fd = os.open(os.path.join(where, filename + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def record(report: FleetReport, state_dir: Optional[str] = None) -> str:
    """Add a report's verdicts to the ledger; the ledger's path. A node's verdict is replaced
    only by a newer one. An unreadable ledger is set aside (``ledger.json.bad``) and started
    afresh: recording must not fail a validation. Raises LedgerError when it cannot be written."""
    from clusterkit.fsutil import write_atomic

    where = directory(state_dir)
    target = os.path.join(where, FILENAME)
    try:
        with locked(where):
            try:
                with open(target, encoding="utf-8") as fh:
                    text = fh.read()
            except FileNotFoundError:
                text = None
            current: dict[str, Verdict] = {}
            if text is not None:
                try:
                    current = _parse(text, target)
                except LedgerError:
                    os.replace(target, target + ".bad")
            write_atomic(target, _dump(merge(current, verdicts_of(report))))
    except OSError as e:
        raise LedgerError(f"cannot write the ledger {target}: {e.strerror or e}") from None
    return target


def last_verdicts(state_dir: Optional[str] = None) -> dict[str, Verdict]:
    """Every node's last verdict ({} when nothing was recorded yet)."""
    target = path(state_dir)
    try:
        with open(target, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise LedgerError(f"cannot read the ledger {target}: {e.strerror or e}") from None
    return _parse(text, target)


def verdicts_from_files(paths: Iterable[str]) -> dict[str, Verdict]:
    """The verdicts of saved reports (``validate --output``), the newest per node."""
    from clusterkit.baseline import read_report

    maps = []
    for p in paths:
        rep = read_report(p)
        maps.append(verdicts_of(rep, source=f"file {p}" + (f", {rep.source}" if rep.source else "")))
    return merge(*maps)


__all__ = ["SCHEMA", "FILENAME", "PASSING", "Verdict", "LedgerError", "record", "last_verdicts",
           "verdicts_of", "verdicts_from_files", "merge", "path", "directory", "parse_time", "locked"]
