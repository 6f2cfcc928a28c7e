"""``clusterkit nccl single``: intra-node all-reduce on every node at once, judged per node.

Two rounds over the fleet, NVLS then ring (``NCCL_NVLS_ENABLE``/``NCCL_ALGO``: NVLS is NCCL's
own choice on NVSwitch, ring is what the network tests force), each node alone with all its
GPUs. A node's busbw at the profile's message size is judged twice:

* against the profile's floor (``nccl.single_nvls_gbps_min`` / ``single_ring_gbps_min``):
  below it is ``fail``, measured evidence;
* against the fleet: a robust z-score against the median of the nodes measured in the same
  round (spread at least ``spread_floor_rel`` of the median); more than ``z_slow`` below is
  ``warn`` (an outlier above the floor serves, but is worth a look), as for every other
  fleet-relative rule.

Wrong results (``#wrong`` > 0) are ``fail``: data corruption. A test that hung, failed at
init, crashed or could not start is ``error``, with its cause: could-not-run never condemns.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

from clusterkit.models import CheckResult, NodeReport, Status
from clusterkit.nccl.models import Algo, Measured, NcclTest

#: check id per algorithm
CHECKS: dict[str, str] = {
    "nccl.single.nvls": "one node, NVLS all-reduce busbw vs the profile's floor (fail) and the fleet (warn)",
    "nccl.single.ring": "one node, ring all-reduce busbw (NVLS off) vs the profile's floor (fail) and the fleet (warn)",
}
_FAILURE_TEXT = {"hang": "hung", "init": "failed at NCCL init", "crash": "crashed", "launch": "could not start"}


def check_id(algo: Algo) -> str:
    return f"nccl.single.{algo}"


def plan(nodes: Sequence[str], algos: Sequence[Algo]) -> list[list[NcclTest]]:
    """One round per algorithm: every node alone, all at once."""
    return [[NcclTest(key=f"single-{algo}-{i:04d}", kind="single", nodes=(n,), algo=algo)
             for i, n in enumerate(nodes)] for algo in algos]


def judge_round(measured: Sequence[Measured], algo: Algo, *, floor: Optional[float], z_slow: float,
                spread_floor_rel: float, message_bytes: int) -> dict[str, CheckResult]:
    """One round's tests (one node each) -> one check result per node."""
    cid = check_id(algo)
    label = "NVLS" if algo == "nvls" else "ring"
    size = _size_text(message_bytes)
    from clusterkit.nccl.localize import reference_from

    values = [m.busbw_gbps for m in measured if m.failure is None and m.busbw_gbps is not None]
    ref = reference_from(values, rel=spread_floor_rel, z_slow=z_slow, floor=floor)
    med = ref.median
    out: dict[str, CheckResult] = {}
    for m in measured:
        node = m.test.nodes[0]
        if m.failure is not None:
            why = _FAILURE_TEXT.get(m.failure, m.failure)
            out[node] = CheckResult(check=cid, status=Status.ERROR, threshold=floor, unit="GB/s",
                                    message=f"{label} all_reduce {why}: {m.message}".rstrip(": "))
            continue
        if m.wrong:
            out[node] = CheckResult(check=cid, status=Status.FAIL, value=m.busbw_gbps, threshold=floor,
                                    unit="GB/s", message=f"{label} all_reduce: {m.wrong} wrong elements "
                                                         "(data corruption)")
            continue
        bw = m.busbw_gbps
        if bw is None:
            out[node] = CheckResult(check=cid, status=Status.ERROR, threshold=floor, unit="GB/s",
                                    message=f"{label} all_reduce gave no busbw at {size}: {m.message}".rstrip(": "))
            continue
        z = ref.z(bw) if ref.count >= 3 else None
        fleet = f", fleet median {med:.1f}, z {z:+.1f}" if z is not None and med is not None else ""
        if floor is not None and bw < floor:
            status, msg = Status.FAIL, f"{label} busbw {bw:g} GB/s at {size}, below the floor {floor:g}{fleet}"
        elif z is not None and z < -z_slow:
            status, msg = Status.WARN, f"{label} busbw {bw:g} GB/s at {size}: an outlier{fleet}"
        else:
            where = f"floor {floor:g}" if floor is not None else "no floor in the profile"
            status, msg = Status.PASS, f"{label} busbw {bw:g} GB/s at {size} ({where}{fleet})"
        out[node] = CheckResult(check=cid, status=status, value=bw, threshold=floor, unit="GB/s", message=msg)
    return out


def node_reports(nodes: Sequence[str], rounds: Mapping[Algo, Mapping[str, CheckResult]],
                 durations: Optional[Mapping[str, float]] = None) -> list[NodeReport]:
    out = []
    for n in nodes:
        checks = [r[n] for r in rounds.values() if n in r]
        out.append(NodeReport(node=n, status=NodeReport.status_of(checks), checks=checks,
                              duration_s=(durations or {}).get(n)))
    return out


def run_single(nodes: Sequence[str], run_round: Callable[[list[NcclTest]], list[Measured]], *,
               algos: Sequence[Algo], floors: Mapping[str, Optional[float]], z_slow: float,
               spread_floor_rel: float, message_bytes: int) -> list[NodeReport]:
    """Run every round through ``run_round`` (a launcher's, timeout bound in) and judge."""
    judged: dict[Algo, dict[str, CheckResult]] = {}
    durations: dict[str, float] = {}
    for algo, tests in zip(algos, plan(nodes, algos)):
        measured = run_round(tests)
        for m in measured:
            durations[m.test.nodes[0]] = durations.get(m.test.nodes[0], 0.0) + m.duration_s
        judged[algo] = judge_round(measured, algo, floor=floors.get(algo), z_slow=z_slow,
                                   spread_floor_rel=spread_floor_rel, message_bytes=message_bytes)
    return node_reports(nodes, judged, durations)


def _size_text(n: int) -> str:
    for unit, k in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"
