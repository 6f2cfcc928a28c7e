#!/usr/bin/env python3
"""`clusterkit node-check --stress` against torch's own best, on a GPU machine.

In one run:

  1. `clusterkit node-check --stress --checks stress --json` with a profile written for the GPUs
     found (the built-in h100-sxm / h200-sxm when they match, its GPU count set to this
     machine's), timed wall clock: target under 60 s for the whole node;
  2. then, in this process, torch's own best on GPU 0 (or every GPU with --all-gpus): the best
     of a sweep of bf16 matmul shapes (square and the MAMF-style long-K ones) and of
     device-to-device copies of several sizes, each with warm-up, CUDA events and the median of
     repeated batches;

and prints both, their ratio (node-check / torch; target >= 0.95) and the wall time.

    python benchmarks/stress_vs_torch.py [--all-gpus] [--deadline 60] [--quick]

Without a GPU (or without torch) it says so and exits 0. Exit 1 when a target is missed or
node-check gave no figure. node-check runs with this interpreter (`-m clusterkit`), and so does
its worker (CLUSTERKIT_STRESS_PYTHON is set to it): run this with the python that has torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GEMM_SWEEP = [(n, n, n) for n in (4096, 6144, 8192, 10240, 12288, 16384)] + [
    (2048, 2048, 13312), (4096, 4096, 16384), (8192, 8192, 16384), (16384, 8192, 8192), (2048, 8192, 8192)]
COPY_SWEEP_MIB = (256, 1024, 2048, 4096)
TARGET_RATIO = 0.95
TARGET_WALL_S = 60.0


def gpu_here() -> tuple[Any, str]:
    """(torch, why not) — torch is None when this machine cannot run the benchmark."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    try:
        import torch
    except ImportError as e:
        return None, f"torch is not installed ({e})"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None, f"torch {torch.__version__} sees no CUDA GPU"
    return torch, ""


def machine_profile(torch: Any, path: Path) -> str:
    name = torch.cuda.get_device_name(0)
    count = torch.cuda.device_count()
    base = "h200-sxm" if "H200" in name else ("h100-sxm" if "H100" in name else None)
    if base is not None:
        sys.path.insert(0, str(REPO))
        from clusterkit.profiles import load_profile

        prof = load_profile(base)
        assert prof.gpu is not None
        doc = prof.model_dump(mode="json", exclude_none=True)
        doc["name"] = f"{base}-x{count}"
        doc["gpu"] = {"count": count, "model_patterns": prof.gpu.model_patterns}
    else:
        doc = {"name": f"{count}-gpus", "gpu": {"count": count}}
    path.write_text(json.dumps(doc))
    return str(doc["name"])


def run_node_check(profile: Path, deadline: float) -> tuple[dict[str, Any] | None, float, str]:
    env = dict(os.environ)
    env["CLUSTERKIT_STRESS_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for k in ("CLUSTERKIT_SIM", "CLUSTERKIT_NODE"):
        env.pop(k, None)
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "clusterkit", "node-check", "--stress", "--checks", "stress",
                        "--json", "--profile", str(profile), "--deadline", f"{deadline:g}"],
                       capture_output=True, text=True, env=env, timeout=deadline + 60)
    wall = time.monotonic() - started
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        return None, wall, f"node-check gave no report (exit {p.returncode}): {p.stderr.strip()[-500:]}"
    return json.loads(line), wall, ""


def _median_ms(torch: Any, fn: Any, iters: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return float(statistics.median(times))


def torch_best(torch: Any, gpu: int, quick: bool) -> dict[str, Any]:
    dev = torch.device("cuda", gpu)
    torch.cuda.set_device(dev)
    best_gemm: dict[str, Any] = {"tflops": 0.0}
    for m, n, k in (GEMM_SWEEP[:4] if quick else GEMM_SWEEP):
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=dev, dtype=torch.bfloat16)
        c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)

        def mm() -> None:
            torch.matmul(a, b, out=c)

        for _ in range(5):
            mm()
        probe = _median_ms(torch, mm, 3, 1)
        iters = max(3, int(300 / max(probe, 1e-3)))  # ~0.3 s per batch
        ms = _median_ms(torch, mm, iters, 5)
        tflops = 2.0 * m * n * k / (ms / 1000) / 1e12
        if tflops > best_gemm["tflops"]:
            best_gemm = {"tflops": round(tflops, 1), "shape": [m, n, k]}
        del a, b, c
    best_copy: dict[str, Any] = {"gbps": 0.0}
    for mib in (COPY_SWEEP_MIB[1:3] if quick else COPY_SWEEP_MIB):
        src = torch.randn(mib * 1024 * 1024 // 2, device=dev, dtype=torch.bfloat16)
        dst = torch.empty_like(src)

        def cp() -> None:
            dst.copy_(src)

        for _ in range(5):
            cp()
        probe = _median_ms(torch, cp, 3, 1)
        iters = max(3, int(200 / max(probe, 1e-3)))
        ms = _median_ms(torch, cp, iters, 5)
        gbps = 2.0 * src.numel() * 2 / (ms / 1000) / 1e9
        if gbps > best_copy["gbps"]:
            best_copy = {"gbps": round(gbps, 1), "mib": mib}
        del src, dst
    torch.cuda.empty_cache()
    return {"gemm": best_gemm, "copy": best_copy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all-gpus", action="store_true", help="compare every GPU, not only GPU 0")
    ap.add_argument("--deadline", type=float, default=60.0, help="node-check --deadline (default 60)")
    ap.add_argument("--quick", action="store_true", help="a smaller torch sweep")
    args = ap.parse_args()
    torch, why = gpu_here()
    if torch is None:
        print(f"stress_vs_torch: no GPU here: {why}; nothing to measure")
        return 0
    with tempfile.TemporaryDirectory(prefix="ck-stress-bench-") as tmp:
        profile = Path(tmp) / "machine.json"
        pname = machine_profile(torch, profile)
        doc, wall, err = run_node_check(profile, args.deadline)
    if doc is None:
        print(f"stress_vs_torch: {err}")
        return 1
    checks = doc.get("checks", [])
    figures = {(c["check"], c["subject"]): c for c in checks if c["check"] in ("stress.gemm", "stress.hbm")}
    gpus = range(torch.cuda.device_count()) if args.all_gpus else range(1)
    ok = True
    print(f"node-check --stress ({pname}, {torch.cuda.get_device_name(0)}, torch {torch.__version__}): "
          f"{doc.get('status')}, wall {wall:.1f} s (target < {TARGET_WALL_S:g} s)")
    for c in checks:
        if c["status"] not in ("pass", "skip") or c["check"] in ("stress.dcgm", "stress.gpu_burn"):
            print(f"  {c['status']:5} {c['check']} {c.get('subject') or ''}: {c['message']}")
    print(f"{'gpu':>4} {'figure':8} {'node-check':>12} {'torch best':>12} {'ratio':>7}  torch's best at")
    for g in gpus:
        ref = torch_best(torch, g, args.quick)
        for check, key, field, where in (("stress.gemm", "gemm", "tflops", "shape"), ("stress.hbm", "copy", "gbps",
                                                                                     "mib")):
            c = figures.get((check, f"gpu{g}"))
            mine = c.get("value") if c else None
            best = ref[key][field]
            if not isinstance(mine, (int, float)) or not best:
                print(f"{g:>4} {key:8} {'—':>12} {best:>12.1f} {'—':>7}  "
                      f"{ref[key].get(where)} ({c['message'] if c else 'no result'})")
                ok = False
                continue
            ratio = mine / best
            ok = ok and ratio >= TARGET_RATIO
            unit = "TFLOPS" if key == "gemm" else "GB/s"
            print(f"{g:>4} {key:8} {mine:>12.1f} {best:>12.1f} {ratio:>7.3f}  {ref[key].get(where)} {unit}"
                  f"{'' if ratio >= TARGET_RATIO else f'  (below the {TARGET_RATIO} target)'}")
    ok = ok and wall < TARGET_WALL_S
    print(f"ratio target >= {TARGET_RATIO}, wall target < {TARGET_WALL_S:g} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
