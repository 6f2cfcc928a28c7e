#!/usr/bin/env python3
"""`clusterkit nccl localize` on simulated fleets of 16, 64 and 256 nodes: rounds per case.

For every fleet size and every case of the NCCL issue, this writes a fleet file (nodes
gpu-[001-N]; leaves of 16 nodes, or 4 in the 16-node fleet; one fault case), runs

    clusterkit nccl localize --sim FLEET --json --test-timeout T

as a user would (the simulator's stand-in all_reduce_perf and ib_write_bw print the real
formats; the localizer reads them with the real parsers), and prints per case and size: rounds,
tests run, the simulated test time (sum over rounds of each round's longest test: a round's
tests run at once), the wall time here, and what was found, checked against the injected fault.

Beside each size it prints what the two published schedules would take on the same fleet:
round-robin pairings (SuperBench: n-1 rounds of n/2 pairs) and Together's straggler finder
(5 rounds), as ratios to clusterkit's rounds.

    python benchmarks/nccl_localize.py [--sizes 16,64,256] [--cases all] [--test-timeout 3]

Exit 1 when a case is not found exactly or takes more than 3 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def leaves(n: int) -> dict[str, str]:
    size = 4 if n <= 16 else 16
    out = {}
    for i in range(0, n, size):
        out[f"leaf-{i // size + 1:02d}"] = f"gpu-[{i + 1:03d}-{min(n, i + size):03d}]"
    return out


def cases(n: int) -> dict[str, dict[str, Any]]:
    """case -> (faults, expected bad_nodes, bad_links, bad_uplinks)."""
    a, b = f"gpu-{n // 3:03d}", f"gpu-{(2 * n) // 3:03d}"
    return {
        "healthy": {"faults": [], "nodes": [], "links": [], "uplinks": []},
        "one slow node": {"faults": [{"node": a, "kind": "nccl_slow", "value": 2}],
                          "nodes": [a], "links": [], "uplinks": []},
        "two slow nodes": {"faults": [{"node": a, "kind": "nccl_slow", "value": 2},
                                      {"node": b, "kind": "nccl_slow", "value": 1.5}],
                           "nodes": [a, b], "links": [], "uplinks": []},
        "degraded uplink": {"faults": [{"switch": "leaf-02", "kind": "uplink_degraded", "value": 2}],
                            "nodes": [], "links": [], "uplinks": ["leaf-02"]},
        "node hangs": {"faults": [{"node": a, "kind": "nccl_hang"}], "nodes": [a], "links": [], "uplinks": []},
        "init failure": {"faults": [{"node": a, "kind": "nccl_init_fail"}], "nodes": [a], "links": [],
                         "uplinks": []},
        "degraded HCA": {"faults": [{"node": a, "kind": "hca_degraded", "device": "mlx5_3", "value": 4}],
                         "nodes": [], "links": [(a, "mlx5_3")], "uplinks": []},
    }


def fleet_yaml(n: int, faults: list[dict[str, Any]]) -> str:
    doc = {"name": f"bench-{n}", "nodes": f"gpu-[001-{n:03d}]", "switches": leaves(n), "faults": faults}
    return json.dumps(doc)  # JSON is YAML


def run_case(n: int, case: dict[str, Any], tmp: Path, timeout: float) -> dict[str, Any]:
    fleet = tmp / f"fleet-{n}-{abs(hash(json.dumps(case['faults']))) % 10**8}.yaml"
    fleet.write_text(fleet_yaml(n, case["faults"]))
    argv = [sys.executable, "-m", "clusterkit", "nccl", "localize", "--sim", str(fleet), "--json",
            "--test-timeout", str(timeout)]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=3600)
    wall = time.monotonic() - t0
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        return {"ok": False, "why": f"exit {p.returncode}: {p.stderr.strip()[-300:]}", "wall": wall}
    found_nodes = sorted(b["node"] for b in doc["bad_nodes"])
    found_links = sorted((b["node"], b["device"]) for b in doc["bad_links"])
    found_up = sorted(b["switch"] for b in doc["bad_uplinks"])
    ok = (found_nodes == sorted(case["nodes"]) and found_links == sorted(case["links"])
          and found_up == sorted(case["uplinks"]) and len(doc["rounds"]) <= 3)
    found = ([f"node {x}" for x in found_nodes] + [f"link {x}/{d}" for x, d in found_links]
             + [f"uplink {u}" for u in found_up]) or ["nothing"]
    if doc.get("undetermined"):
        found.append("undetermined " + ",".join(doc["undetermined"]))
    return {"ok": ok, "rounds": len(doc["rounds"]), "tests": sum(len(r["tests"]) for r in doc["rounds"]),
            "test_time": doc.get("test_time_s", 0.0), "wall": wall, "found": "; ".join(found),
            "exit": p.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16,64,256")
    ap.add_argument("--cases", default="all", help="comma-separated case names, or all")
    ap.add_argument("--test-timeout", type=float, default=3.0,
                    help="seconds for one test (a hung test ends here; the simulated tests take well under 1 s)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"clusterkit nccl localize on simulated fleets; {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}; test timeout {args.test_timeout:g} s")
    header = f"{'size':>5} {'case':17} {'rounds':>6} {'tests':>6} {'sim test time':>13} {'wall':>7}  found"
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ck-nccl-bench-") as d:
        for n in sizes:
            print()
            print(header)
            rounds_seen = []
            for name, case in cases(n).items():
                if args.cases != "all" and name not in args.cases.split(","):
                    continue
                r = run_case(n, case, Path(d), args.test_timeout)
                if "rounds" not in r:
                    print(f"{n:>5} {name:17} {'-':>6} {'-':>6} {'-':>13} {r['wall']:>6.1f}s  ERROR {r['why']}")
                    failed += 1
                    continue
                rounds_seen.append(r["rounds"])
                mark = "" if r["ok"] else "   <-- WRONG"
                failed += 0 if r["ok"] else 1
                print(f"{n:>5} {name:17} {r['rounds']:>6} {r['tests']:>6} {r['test_time']:>12.1f}s "
                      f"{r['wall']:>6.1f}s  {r['found']}{mark}")
            if rounds_seen:
                worst = max(rounds_seen)
                print(f"{n:>5} schedules: clusterkit at most {worst} rounds; round-robin pairs {n - 1} rounds "
                      f"({(n - 1) / worst:.1f}x); Together's straggler finder 5 rounds ({5 / worst:.2f}x)")
    print()
    print("all cases found exactly in <= 3 rounds" if not failed else f"{failed} case(s) wrong")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
