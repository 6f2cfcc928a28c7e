#!/usr/bin/env python3
"""`clusterkit node-check --healthcheck` wall time against a bare Python start, on a simulated node.

Slurm runs the health check on every node every few minutes; it should cost little more than
starting the interpreter. In one run, interleaved (run 1 of every command, then run 2 of every
command, ...; a load change hits all of them alike), this times ``--repeat`` runs (default 20)
of:

==================  =====================================================================
``python -c pass``  the interpreter clusterkit runs on (this one), doing nothing: the floor
``healthcheck``     ``clusterkit node-check --healthcheck --no-slurm-action``
``healthcheck+nagios``  the same with ``--nagios``
==================  =====================================================================

on a healthy simulated node (``CLUSTERKIT_SIM=builtin``, ``CLUSTERKIT_NODE=gpu-001``; the
simulator stands in for NVML, sysfs, the mount table and the kernel log, every probe of the
health check's domains runs on every run), after one untimed warm-up run of each (the simulated
node's tree is generated once). Every timed run is checked: exit 0 and a ``pass`` summary (or an
``OK`` Nagios line). It prints min / median / p90 (nearest rank) of the wall time and the
children's CPU time (user + system) per command, and the ratio healthcheck / python.

``clusterkit`` is the console script beside this interpreter (``--module``: ``python -m
clusterkit``). Bytecode: the runs write and use ``__pycache__`` as an installed package does
(``PYTHONDONTWRITEBYTECODE`` is dropped from their environment; ``--keep-env`` keeps it, and then
every run compiles clusterkit's sources again). ``--importtime`` adds one ``python -X
importtime`` run of the health check and prints its costliest imports. No root, no sshd::

    python benchmarks/healthcheck.py [--repeat 20] [--importtime] [--results FILE]

Close other heavy work first: on a small machine every Python start competes for the cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
NODE = "gpu-001"


def clusterkit_argv(module: bool) -> list[str]:
    script = Path(sys.executable).parent / "clusterkit"
    if not module and script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "clusterkit"]


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120,
                       cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p


def healthy_summary(p: subprocess.CompletedProcess[str]) -> bool:
    last = p.stdout.strip().splitlines()[-1:] or [""]
    return p.returncode == 0 and last[0].startswith(f"{NODE}: pass (")


def nagios_ok(p: subprocess.CompletedProcess[str]) -> bool:
    lines = p.stdout.strip().splitlines()
    return p.returncode == 0 and len(lines) == 1 and lines[0].startswith(f"CLUSTERKIT OK - {NODE}: ")


def import_profile(argv: list[str], env: dict[str, str], top: int = 15) -> None:
    """One health check under ``-X importtime``: its costliest top-level imports."""
    cmd = [sys.executable, "-X", "importtime", *argv[1:]] if argv[0] == sys.executable else \
        [sys.executable, "-X", "importtime", "-m", "clusterkit", *argv[1:]]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120, cwd=REPO)
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        try:
            _self, cum, name = line[len("import time:"):].split("|")
            rows.append((int(cum), name.rstrip()))
        except ValueError:
            continue
    tops = [(c, n) for c, n in rows if not n.startswith("  ")]  # top-level: what the run itself imported
    print(f"\ncostliest top-level imports of one health check (python -X importtime, cumulative ms, "
          f"all imports {sum(c for c, _ in tops) / 1000:.0f} ms):")
    for cum, name in sorted(tops, reverse=True)[:top]:
        print(f"  {cum / 1000:7.1f}  {name.strip()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed runs of each command (default 20)")
    ap.add_argument("--module", action="store_true", help="run `python -m clusterkit`, not the console script")
    ap.add_argument("--keep-env", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if it is set")
    ap.add_argument("--importtime", action="store_true", help="also print the costliest imports of one run")
    ap.add_argument("--results", metavar="FILE", help="write the figures as JSON")
    args = ap.parse_args()
    ck = clusterkit_argv(args.module)
    with tempfile.TemporaryDirectory(prefix="ck-bench-hc-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
        dropped = not args.keep_env and env.pop("PYTHONDONTWRITEBYTECODE", None) is not None
        env.update(CLUSTERKIT_SIM="builtin", CLUSTERKIT_NODE=NODE, CLUSTERKIT_SIM_ROOT=os.path.join(tmp, "sim"),
                   CLUSTERKIT_STATE_DIR=os.path.join(tmp, "state"))
        variants: list[tuple[str, list[str], Callable[[subprocess.CompletedProcess[str]], bool]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], lambda p: p.returncode == 0),
            ("healthcheck", [*ck, "node-check", "--healthcheck", "--no-slurm-action"], healthy_summary),
            ("healthcheck --nagios", [*ck, "node-check", "--healthcheck", "--no-slurm-action", "--nagios"],
             nagios_ok),
        ]
        for label, argv, ok in variants:  # warm-up: the node's tree, bytecode
            _, _, p = timed(argv, env)
            if not ok(p):
                print(f"{label}: warm-up run failed (exit {p.returncode}): {(p.stdout + p.stderr).strip()[-500:]}",
                      file=sys.stderr)
                return 1
        checks = healthy_summary_checks(timed(variants[1][1], env)[2])
        print(f"node-check --healthcheck on a healthy simulated node ({NODE}, {checks} checks), {args.repeat} runs "
              f"each, interleaved; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Python "
              f"{sys.version.split()[0]}; clusterkit = {' '.join(Path(a).name for a in ck)}"
              + ("; PYTHONDONTWRITEBYTECODE dropped (bytecode cached)" if dropped else ""))
        walls: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        cpus: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        bad: dict[str, int] = {label: 0 for label, _, _ in variants}
        for _ in range(args.repeat):
            for label, argv, ok in variants:
                wall, cpu, p = timed(argv, env)
                walls[label].append(wall)
                cpus[label].append(cpu)
                bad[label] += 0 if ok(p) else 1
        width = max(len(label) for label in walls)
        print(f"{'command':{width}}   min      median   p90      cpu median  failed")
        rows: dict[str, Any] = {}
        for label in walls:
            w, c = walls[label], cpus[label]
            rows[label] = {"min_s": min(w), "median_s": statistics.median(w), "p90_s": p90(w),
                           "cpu_median_s": statistics.median(c), "failed": bad[label], "runs": len(w)}
            print(f"{label:{width}}   {min(w):.3f} s  {statistics.median(w):.3f} s  {p90(w):.3f} s  "
                  f"{statistics.median(c):.3f} s     {bad[label]}/{len(w)}")
        base = rows["python -c pass"]
        for label in ("healthcheck", "healthcheck --nagios"):
            r = rows[label]
            print(f"{label} / python: {r['median_s'] / base['median_s']:.1f}x median, "
                  f"{r['min_s'] / base['min_s']:.1f}x min; above python: {r['median_s'] - base['median_s']:.3f} s median")
        if args.importtime:
            import_profile(variants[1][1], env)
        if args.results:
            with open(args.results, "w", encoding="utf-8") as fh:
                json.dump({"node": NODE, "checks": checks, "repeat": args.repeat, "cpus": os.cpu_count(),
                           "python": sys.version.split()[0], "rows": rows}, fh, indent=2)
    return 1 if any(bad.values()) else 0


def healthy_summary_checks(p: subprocess.CompletedProcess[str]) -> str:
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    return last.split("(", 1)[1].split(" checks", 1)[0] if "(" in last else "?"


if __name__ == "__main__":
    sys.exit(main())
