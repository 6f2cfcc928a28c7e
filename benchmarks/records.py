#!/usr/bin/env python3
"""Records (clusterkit.record) against pydantic: what a node pays to start, what a controller
pays for a large fleet's report.

node-check builds Records because pydantic's start costs a health check most of its budget; the
controller reads every node's report into the same Records. In one run this times, for both
libraries, on the same declarations (clusterkit's own ``CheckResult`` / ``NodeReport`` for
Records, and the same source declared on pydantic's BaseModel, as clusterkit had them before):

=====================  =====================================================================
start                  a fresh interpreter that imports the library, declares the two models
                       and validates one report (median of ``--starts`` runs, minus a bare
                       ``python -c pass`` of the same run)
validate               ``NodeReport.model_validate`` of ``--nodes`` node-check documents of
                       196 checks each (what ``validate`` does as nodes answer)
dump                   ``model_dump(mode="json")`` of those reports
to_json / read back    a FleetReport of them written with indent 2 and read back
                       (``model_validate_json``): ``report``, ``telemetry`` on a saved run
=====================  =====================================================================

and prints the ratios Record / pydantic. No root::

    python benchmarks/records.py [--nodes 1024] [--starts 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]

#: clusterkit's own declarations of CheckResult and NodeReport (their source, read from
#: clusterkit.models), declared once more on pydantic's BaseModel: what they were before Records
PYDANTIC_MODELS = """
import inspect
from typing import Any, Optional
from pydantic import BaseModel as Record, ConfigDict, Field, field_validator
from clusterkit import models
from clusterkit.models import NodeStatus, Scalar, Status
_TOLERANT = ConfigDict(extra="ignore")
exec(inspect.getsource(models.CheckResult))
exec(inspect.getsource(models.NodeReport))
class FleetReport(Record):
    nodes: list[NodeReport] = Field(default_factory=list)
"""

RECORD_MODELS = '''
from typing import Any
from clusterkit.models import CheckResult, NodeReport
from clusterkit.record import Field, Record
class FleetReport(Record):
    nodes: list[NodeReport] = Field(default_factory=list)
'''

START = '''
{models}
NodeReport.model_validate({doc!r})
'''


def node_doc(i: int) -> dict[str, Any]:
    checks = [{"check": f"gpu.check{k % 40}", "subject": f"gpu{k % 8}", "gpu": k % 8, "status": "pass",
               "value": 61.5 + k, "threshold": 85, "unit": "C", "message": ""} for k in range(196)]
    return {"node": f"gpu-{i:04d}", "status": "pass", "checks": checks,
            "facts": {"driver": "565.57.01", "gpus": 8, "kernel": "5.15.0-125-generic"},
            "measurements": {"gpu": {"devices": [{"index": g, "temperature_c": 31} for g in range(8)]}},
            "duration_s": 0.21}


def models(kind: str) -> dict[str, Any]:
    import types

    module = types.ModuleType(f"records_bench_{kind}")  # a module of its own: annotations resolve there
    sys.modules[module.__name__] = module
    exec(PYDANTIC_MODELS if kind == "pydantic" else RECORD_MODELS, module.__dict__)  # noqa: S102 - our text
    return module.__dict__


def best(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def start_cost(starts: int) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    doc = node_doc(0)
    argv = {"python -c pass": [sys.executable, "-c", "pass"]}
    for kind, text in (("pydantic", PYDANTIC_MODELS), ("record", RECORD_MODELS)):
        argv[kind] = [sys.executable, "-c", START.format(models=text, doc=doc)]
    times: dict[str, list[float]] = {k: [] for k in argv}
    for k, a in argv.items():  # warm-up: bytecode written
        subprocess.run(a, check=True, env=env, cwd=REPO)
    for _ in range(starts):
        for k, a in argv.items():
            t0 = time.perf_counter()
            subprocess.run(a, check=True, env=env, cwd=REPO)
            times[k].append(time.perf_counter() - t0)
    floor = statistics.median(times["python -c pass"])
    return {k: statistics.median(v) - floor for k, v in times.items() if k != "python -c pass"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1024)
    ap.add_argument("--starts", type=int, default=15)
    args = ap.parse_args()
    import pydantic

    docs = [node_doc(i) for i in range(args.nodes)]
    rows: dict[str, dict[str, float]] = {}
    for kind in ("pydantic", "record"):
        m = models(kind)
        node_report, fleet_report = m["NodeReport"], m["FleetReport"]
        reports = [node_report.model_validate(d) for d in docs]
        fleet = fleet_report(nodes=reports)
        text = fleet.model_dump_json(indent=2)
        rows[kind] = {
            "validate": best(lambda: [node_report.model_validate(d) for d in docs]),
            "dump": best(lambda: [r.model_dump(mode="json") for r in reports]),
            "to_json": best(lambda: fleet.model_dump_json(indent=2)),
            "read back": best(lambda: fleet_report.model_validate_json(text)),
        }
        assert json.loads(text)["nodes"][0]["checks"][0]["status"] == "pass"
    starts = start_cost(args.starts)
    for kind in ("pydantic", "record"):
        rows[kind] = {"start (above python -c pass)": starts[kind], **rows[kind]}
    print(f"Records against pydantic {pydantic.VERSION}: {args.nodes} node reports of 196 checks; Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'':32} {'pydantic':>10} {'record':>10} {'record/pydantic':>16}")
    for what in rows["record"]:
        p, r = rows["pydantic"][what], rows["record"][what]
        print(f"{what:32} {p:9.3f}s {r:9.3f}s {r / p:15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
