"""The controller side of ``clusterkit validate``: fan out node-check, gather one FleetReport.

Node reports are read tolerantly: fields a newer node adds are ignored, a status this version
does not know counts as ``error``, and each node's status is recomputed from its checks instead
of trusting the node's own word. A report of another major schema version is one clear
``error`` for that node.

Every node-check is started with ``--deadline`` a little inside the controller's ``--timeout``
(so a node reports what it could measure instead of being cut off) and with ``--lifeline``: its
standard input stays open and closes when the controller goes away, which ends it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from clusterkit.errors import TransportError
from clusterkit.models import NODE_SCHEMA, FleetReport, Node, NodeReport, NodeStatus, schema_major
from clusterkit.profiles import Profile
from clusterkit.transport import CommandResult, Outcome, Transport, fan_out

if TYPE_CHECKING:
    from clusterkit.baseline import Baseline

NODE_MAJOR = schema_major(NODE_SCHEMA, "clusterkit.node")


def node_deadline(timeout: float) -> float:
    """node-check's own deadline inside the controller's per-node timeout: room is left for the
    connection, the interpreter's start and the answer."""
    margin = min(10.0, max(1.0, 0.2 * timeout))
    return round(max(0.2, timeout - margin), 2)


def node_check_argv(remote: list[str], checks: Optional[list[str]], timeout: Optional[float] = None,
                    extra_args: Optional[list[str]] = None) -> list[str]:
    """node-check's argv; ``extra_args`` are node-check options passed through (``--ib-bw``)."""
    argv = [*remote, "node-check", "--json", "--profile", "-", "--lifeline"]
    if timeout is not None:
        argv += ["--deadline", f"{node_deadline(timeout):g}"]
    if checks:
        argv += ["--checks", ",".join(checks)]
    argv += list(extra_args or [])
    return argv


def _from_transport_error(node: Node, e: TransportError) -> NodeReport:
    status = NodeStatus.UNREACHABLE if e.nothing_ran else NodeStatus.ERROR
    tail = e.output_tail() or None
    return NodeReport(node=node.name, status=status, error=f"{e.kind}: {e}", error_kind=e.kind,
                      cause=e.cause, output_tail=tail)


def _last_json(text: str) -> Optional[dict[str, Any]]:
    from clusterkit.fsutil import last_json_object

    return last_json_object(text)


def to_node_report(node: Node, outcome: Outcome) -> NodeReport:
    """Turn what came back from a node into its NodeReport; never raises."""
    if isinstance(outcome, TransportError):
        return _from_transport_error(node, outcome)
    assert isinstance(outcome, CommandResult)
    doc = _last_json(outcome.stdout)
    major = schema_major(doc.get("schema"), "clusterkit.node") if doc is not None else None
    if doc is not None and major is not None and major != NODE_MAJOR:
        return NodeReport(node=node.name, status=NodeStatus.ERROR, error_kind="schema",
                          cause=f"node report schema {doc.get('schema')} (this controller reads v{NODE_MAJOR})",
                          error=f"schema: node-check on the node speaks {doc.get('schema')}, this "
                                f"controller reads {NODE_SCHEMA}: run the same clusterkit version on both",
                          duration_s=outcome.duration_s)
    if doc is not None and major == NODE_MAJOR:
        doc.pop("schema", None)
        try:
            report = NodeReport.model_validate(doc)
        except Exception as e:  # noqa: BLE001 - fields of the wrong type: unreadable, not evidence
            return NodeReport(node=node.name, status=NodeStatus.ERROR, error_kind="no-report",
                              cause="node-check report unreadable",
                              error=f"node-check report unreadable: {' '.join(str(e).split())[:300]}",
                              duration_s=outcome.duration_s)
        if report.node != node.name:
            report.facts["reported_name"] = report.node
            report.node = node.name
        report.status = NodeReport.status_of(report.checks, report.error)  # never trust the node's word
        report.duration_s = outcome.duration_s
        return report
    tail = outcome.tail()
    if outcome.rc == 127:
        why, cause = (f"clusterkit not found on the node ({outcome.argv[0]!r}); install it or pass "
                      "--remote-command"), "clusterkit not found on the node"
    elif outcome.rc == 2 and "no such option" in tail.lower():
        why, cause = (f"node-check on the node is older than this controller: {tail}; install the "
                      "same clusterkit version on the nodes"), "node-check older than the controller"
    elif outcome.rc == 2:
        why, cause = f"node-check refused its input: {tail}", "node-check refused its input"
    else:
        why, cause = (f"node-check gave no report (exit {outcome.rc}): {tail or 'no output'}",
                      f"node-check gave no report (exit {outcome.rc})")
    return NodeReport(node=node.name, status=NodeStatus.ERROR, error=why, error_kind="no-report",
                      cause=cause, output_tail=(outcome.stderr or outcome.stdout)[-2000:] or None,
                      duration_s=outcome.duration_s)


def validate_fleet(
    nodes: list[Node],
    transport: Transport,
    *,
    profile_for: Callable[[Node], Profile],
    remote: list[str],
    checks: Optional[list[str]] = None,
    timeout: float = 120.0,
    fanout: int = 64,
    source: str = "",
    on_done: Optional[Callable[[NodeReport], None]] = None,
    extra_args: Optional[list[str]] = None,
    baseline: Optional["Baseline"] = None,
) -> FleetReport:
    """Run node-check on every node and gather the FleetReport (fleet judges included).

    On KeyboardInterrupt the nodes that answered are kept, the others are reported as
    ``error: interrupted``, the report's exit code is 130, and the interrupt is re-raised with
    the report attached (``exc.report``) so the caller can still print it.

    ``baseline`` (loaded by the caller, ``clusterkit.baseline.load``) adds the
    ``fleet.baseline.*`` findings.
    """
    from clusterkit import __version__
    from clusterkit.validate.fleet import judge_fleet

    started = time.monotonic()
    argv = node_check_argv(remote, checks, timeout, extra_args)
    payload: dict[int, bytes] = {}  # by profile object: two files may share a name

    def stdin_for(node: Node) -> bytes:
        prof = profile_for(node)
        if id(prof) not in payload:
            # defaults left out: a node running an older clusterkit reads a profile that uses
            # only the keys it knows, unless the profile really sets a newer one
            payload[id(prof)] = prof.model_dump_json(exclude_defaults=True).encode() + b"\n"
        return payload[id(prof)]

    reports: dict[str, NodeReport] = {}

    def done(node: Node, outcome: Outcome) -> None:
        rep = to_node_report(node, outcome)
        reports[node.name] = rep
        if on_done is not None:
            on_done(rep)

    profiles = sorted({profile_for(n).name for n in nodes})
    interrupted: Optional[BaseException] = None
    try:
        fan_out(transport, nodes, argv, timeout=timeout, fanout=fanout, stdin_for=stdin_for,
                hold_stdin=True, on_done=done)
    except KeyboardInterrupt as e:
        interrupted = e
    for n in nodes:
        if n.name not in reports:
            reports[n.name] = NodeReport(node=n.name, status=NodeStatus.ERROR, error_kind="interrupted",
                                         cause="interrupted before this node answered",
                                         error="interrupted before this node answered")
    node_reports = list(reports.values())
    report = FleetReport(clusterkit_version=__version__, source=source,
                         profile=", ".join(profiles) if profiles else None, checks=list(checks) if checks else None,
                         nodes=node_reports, fleet=judge_fleet(node_reports, baseline),
                         duration_s=round(time.monotonic() - started, 2)).finalize(
                             interrupted=interrupted is not None)
    if interrupted is not None:
        interrupted.report = report  # type: ignore[attr-defined]
        raise interrupted
    return report
