"""The controller side of ``clusterkit validate``: fan out node-check, gather one FleetReport."""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

from clusterkit.errors import CommandTimeout, TransportError
from clusterkit.models import NODE_SCHEMA, FleetReport, Node, NodeReport, NodeStatus
from clusterkit.profiles import Profile
from clusterkit.transport import CommandResult, Outcome, Transport, fan_out


def node_check_argv(remote: list[str], checks: Optional[list[str]]) -> list[str]:
    argv = [*remote, "node-check", "--json", "--profile", "-"]
    if checks:
        argv += ["--checks", ",".join(checks)]
    return argv


def to_node_report(node: Node, outcome: Outcome) -> NodeReport:
    """Turn what came back from a node into its NodeReport; never raises."""
    if isinstance(outcome, TransportError):
        status = NodeStatus.ERROR if isinstance(outcome, CommandTimeout) else NodeStatus.UNREACHABLE
        return NodeReport(node=node.name, status=status, error=f"{outcome.kind}: {outcome}")
    assert isinstance(outcome, CommandResult)
    doc = None
    # the report is the last JSON line; login banners or shell noise may come before it
    for line in reversed(outcome.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            break
    if isinstance(doc, dict) and doc.get("schema") == NODE_SCHEMA:
        doc.pop("schema", None)
        try:
            report = NodeReport.model_validate(doc)
        except Exception as e:  # noqa: BLE001 - a node speaking another version
            return NodeReport(node=node.name, status=NodeStatus.ERROR,
                              error=f"node-check report unreadable: {' '.join(str(e).split())[:300]}",
                              duration_s=outcome.duration_s)
        if report.node != node.name:
            report.facts["reported_name"] = report.node
            report.node = node.name
        report.duration_s = outcome.duration_s
        return report
    if outcome.rc == 127:
        why = f"clusterkit not found on the node ({outcome.argv[0]!r}); install it or pass --remote-command"
    elif outcome.rc == 2:
        why = f"node-check refused its input: {outcome.tail()}"
    else:
        why = f"node-check gave no report (exit {outcome.rc}): {outcome.tail() or 'no output'}"
    return NodeReport(node=node.name, status=NodeStatus.ERROR, error=why, duration_s=outcome.duration_s)


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
) -> FleetReport:
    """Run node-check on every node and gather the FleetReport (fleet judges included).

    On KeyboardInterrupt the nodes that answered are kept, the others are reported as
    ``error: interrupted``, and the interrupt is re-raised with the report attached
    (``exc.report``) so the caller can still print it.
    """
    from clusterkit import __version__
    from clusterkit.validate.fleet import judge_fleet

    started = time.monotonic()
    argv = node_check_argv(remote, checks)
    payload: dict[int, bytes] = {}  # by profile object: two files may share a name

    def stdin_for(node: Node) -> bytes:
        prof = profile_for(node)
        if id(prof) not in payload:
            payload[id(prof)] = prof.model_dump_json().encode()
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
        fan_out(transport, nodes, argv, timeout=timeout, fanout=fanout, stdin_for=stdin_for, on_done=done)
    except KeyboardInterrupt as e:
        interrupted = e
    for n in nodes:
        if n.name not in reports:
            reports[n.name] = NodeReport(node=n.name, status=NodeStatus.ERROR,
                                         error="interrupted before this node answered")
    node_reports = list(reports.values())
    report = FleetReport(clusterkit_version=__version__, source=source,
                         profile=", ".join(profiles) if profiles else None,
                         nodes=node_reports, fleet=judge_fleet(node_reports),
                         duration_s=round(time.monotonic() - started, 2)).finalize()
    if interrupted is not None:
        interrupted.report = report  # type: ignore[attr-defined]
        raise interrupted
    return report
