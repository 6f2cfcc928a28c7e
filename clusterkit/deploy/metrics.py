"""A deployment's metrics, in the same schema as validation's (docs/metrics.md): one
``clusterkit_deploy`` point per replica when ``deploy serve`` ends, ready or not.

Tags: ``deployment`` (its name), ``engine``, ``partition``, ``replica`` (its index), ``host``
(rank 0's node). Fields: ``status_code`` (0 ready, 2 failed: the schema's codes), ``state``,
``ready_s`` (time to ready, float), ``rank_failures`` (int: ranks that died), ``kv_tokens`` (int,
the planner's KV-cache size per replica when it ran), ``tp``, ``pp``, ``nodes`` (ints), ``job_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.deploy.serve import Deployment


def deploy_lines(dep: "Deployment", *, kv_tokens: Optional[int] = None, time_ms: Optional[int] = None,
                 string_fields: bool = True) -> list[str]:
    """The line-protocol lines of a deployment's replicas."""
    from clusterkit.telemetry.lineproto import encode_line
    from clusterkit.telemetry.points import now_ms

    when = now_ms() if time_ms is None else time_ms
    out: list[str] = []
    for rep in dep.replicas:
        tags = {"deployment": dep.name, "engine": dep.engine, "replica": str(rep.index)}
        if dep.partition:
            tags["partition"] = dep.partition
        if rep.nodes:
            tags["host"] = rep.nodes[0]
        ready = rep.state == "ready"
        fields: dict[str, object] = {"status_code": 0 if ready else 2, "tp": dep.tp, "pp": dep.pp,
                                     "nodes": len(rep.nodes),
                                     "rank_failures": 1 if (rep.failure and "rank" in rep.failure) else 0}
        if rep.ready_s is not None:
            fields["ready_s"] = float(rep.ready_s)
        if kv_tokens is not None:
            fields["kv_tokens"] = int(kv_tokens)
        if string_fields:
            fields["state"] = rep.state
            fields["job_id"] = rep.job_id
        line = encode_line("clusterkit_deploy", tags, fields, when)  # type: ignore[arg-type]
        if line:
            out.append(line)
    return out
