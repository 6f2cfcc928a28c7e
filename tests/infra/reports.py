"""Reports to render in tests: the built-in simulated fleet's, and a large fleet made from it.

    sim_report()            # `clusterkit validate --sim --json`: gpu-003 and gpu-006 fail
    scaled_report(sim_report(), 1024)

``clusterkit validate --sim --nodes 'gpu-[0001-1024]'`` takes about 0.7 s of CPU per node
(some 12 minutes on two cores), so the large report is built in-process instead: every node a
copy of the simulated fleet's healthy node (its faulty nodes at the same numbers), with the
readings that differ between real nodes varied (temperatures, power draw, load), measured
figures added (ib.write_bw per rail, stress.gemm and stress.hbm per GPU, storage.weights) and a
few injected problems, then judged by the real fleet judges (outliers, drift) and finalized.
"""

from __future__ import annotations

import functools
import random
import subprocess
import sys
from typing import Any

from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus
from clusterkit.validate.fleet import judge_fleet

#: node number -> what is wrong with it in scaled_report (besides the template's faulty nodes)
INJECTED = {
    101: "ib.write_bw far below the fleet on one rail (fail and outlier)",
    517: "stress.gemm slow on one GPU (outlier, above the threshold)",
    890: "storage.weights slow (outlier)",
    640: "a check that could not run (error)",
    333: "unreachable: connection refused",
    334: "unreachable: connection refused",
    335: "unreachable: connection refused",
    777: "unreachable: timeout",
    200: "driver drift", 201: "driver drift", 202: "driver drift",
}


@functools.lru_cache(maxsize=1)
def sim_json() -> str:
    """The JSON of ``clusterkit validate --sim --json`` (built-in fleet), run once per session."""
    p = subprocess.run([sys.executable, "-m", "clusterkit", "validate", "--sim", "--json", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 1:  # the built-in fleet has two failing nodes: exit 1
        raise RuntimeError(f"validate --sim exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def sim_report() -> FleetReport:
    return FleetReport.model_validate_json(sim_json())


def _check(check: str, subject: str, value: float, threshold: float, unit: str, message: str,
           higher: bool = True) -> dict[str, Any]:
    ok = value >= threshold if higher else value <= threshold
    return {"check": check, "subject": subject, "status": "pass" if ok else "fail", "value": value,
            "threshold": threshold, "unit": unit, "message": message}


def _figures(rng: random.Random, i: int) -> list[dict[str, Any]]:
    out = []
    for r in range(8):
        v = round(rng.gauss(391.0, 1.2), 2)
        if i == 101 and r == 3:
            v = 301.5
        out.append(_check("ib.write_bw", f"mlx5_{r}/1", v, 380.0, "Gb/s", f"{v:g} Gb/s loopback (GPU memory)"))
    for g in range(8):
        v = round(rng.gauss(795.0, 3.5), 1)
        if i == 517 and g == 6:
            v = 660.0
        out.append(_check("stress.gemm", f"gpu{g}", v, 650.0, "TFLOPS", f"{v:.0f} TFLOPS bf16 GEMM"))
    for g in range(8):
        v = round(rng.gauss(2900.0, 8.0), 1)
        out.append(_check("stress.hbm", f"gpu{g}", v, 2400.0, "GB/s", f"{v:,.0f} GB/s device-to-device copy"))
    v = round(rng.gauss(5.0, 0.12), 2) if i != 890 else 2.1
    out.append(_check("storage.weights", "/mnt/weights", v, 1.0, "GB/s", f"{v:g} GB/s"))
    return out


_VARIED = ("gpu.temperature", "gpu.power.limit", "system.load")


def _vary(rng: random.Random, c: CheckResult) -> CheckResult:
    """``c`` itself when real nodes would read the same, else a copy with another reading."""
    if c.check not in _VARIED:
        return c  # shared between nodes: nothing changes a report's results after the fact
    d = c.model_dump(mode="json")
    if d["check"] == "gpu.temperature":
        t = rng.randint(28, 46)
        d["value"], d["message"] = float(t), f"{t} C"
    elif d["check"] == "gpu.power.limit":
        d["message"] = f"limit 700 W, drawing {rng.randint(64, 130)} W"
    else:
        load = round(rng.uniform(0.1, 4.0), 1)
        d["value"], d["message"] = round(load / 224, 4), f"load {load} on 224 CPUs"
    return CheckResult.model_validate(d)


def scaled_report(template: FleetReport, count: int = 1024, *, seed: int = 7) -> FleetReport:
    """A ``count``-node report made from ``template`` (see the module docstring)."""
    rng = random.Random(seed)
    healthy = next(n for n in template.nodes if n.status is NodeStatus.PASS)
    by_number = {int(n.node.rsplit("-", 1)[1]): n for n in template.nodes
                 if n.status is not NodeStatus.PASS and n.node.rsplit("-", 1)[-1].isdigit()}
    width = max(4, len(str(count)))
    nodes = []
    for i in range(1, count + 1):
        name = f"gpu-{i:0{width}d}"
        if i in (333, 334, 335, 777) and i <= count:
            timeout = i == 777
            nodes.append(NodeReport(
                node=name, status=NodeStatus.UNREACHABLE, error_kind="timeout" if timeout else "unreachable",
                error=f"{name}: " + ("no answer within 120 s" if timeout else "connection refused"),
                cause="no answer within 120 s" if timeout else "connection refused"))
            continue
        src = by_number.get(i, healthy)
        extra = _figures(rng, i)
        if i == 640:
            extra.append({"check": "stress.probe", "status": "error",
                          "message": "stress probe did not finish within the 110s deadline"})
        results = [_vary(rng, c) for c in src.checks] + [CheckResult.model_validate(d) for d in extra]
        facts = dict(src.facts)
        if i in (200, 201, 202):
            facts["driver_version"] = "550.54.15"
        nodes.append(NodeReport(node=name, status=NodeReport.status_of(results), checks=results, facts=facts,
                                duration_s=round(rng.uniform(20, 40), 2)))
    report = FleetReport(clusterkit_version=template.clusterkit_version, created=template.created,
                         source=f"sim:builtin nodes:gpu-[{1:0{width}d}-{count:0{width}d}]",
                         profile=template.profile, duration_s=round(rng.uniform(60, 90), 1), nodes=nodes)
    # the fleet judges see what they judge (facts, figures): the same findings, in a fraction of
    # the time it takes them to look through 200,000 other results
    report.fleet = judge_fleet([_judged(n) for n in nodes])
    return report.finalize()


_FIGURE_IDS = ("ib.write_bw", "stress.gemm", "stress.hbm", "storage.weights")


def _judged(n: NodeReport) -> NodeReport:
    return n.model_copy(update={"checks": [c for c in n.checks if c.check in _FIGURE_IDS]})
