"""Writing a 128-node run's metrics: clusterkit's sink against raw HTTP, same store, same bytes.

Builds (or reads, ``--report``) the report of a simulated 128-node × 8-GPU run
(``clusterkit validate --sim --nodes gpu-[001-128] --json``), turns it into line protocol once
(timed: points built and encoded per second), starts a real VictoriaMetrics on 127.0.0.1, and
then, in one run and interleaved (run 1 of each writer, then run 2, …, after one untimed
warm-up of each), writes those same lines:

* **clusterkit**: ``clusterkit.telemetry.emit.emit_lines`` — what ``validate --influx-url`` does:
  a replay check of an (empty) spool, then influxdb-client's synchronous write API, one request
  per 5000-line batch, gzip on, precision ms, bounded retries;
* **raw HTTP**: ``http.client`` on one keep-alive connection, the same batches POSTed to
  ``/api/v2/write?precision=ms``, gzip on (``gzip.compress`` at its default level, as
  influxdb-client does), checking each answer is 204.

It prints points/s (median and best) for both and their ratio (clusterkit / raw; target ≥ 0.8;
judged on the median of the rounds' ratios, each round running both writers back to back in
alternating order, which a changing machine load disturbs least),
and checks afterwards that every write arrived (sample counts through the export API). Run it
from the repository root, nothing else heavy running::

    python benchmarks/telemetry_write.py [--repeat 9] [--nodes 128] [--report FILE] [--keep-report FILE]

Needs the ``victoria-metrics`` binary (Debian's package); no root. Exit 0 target met, 1 missed
or points missing, 2 cannot run here.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.infra.vmstore import BENCH_PORT_BASE, VictoriaMetrics, free_port, samples, unavailable_reason  # noqa: E402

TARGET = 0.8


def simulated_report(nodes: int) -> str:
    argv = [sys.executable, "-m", "clusterkit", "validate", "--sim", "--nodes", f"gpu-[001-{nodes:03d}]", "--json",
            "--no-progress"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=1800, stdin=subprocess.DEVNULL)
    if p.returncode not in (0, 1, 3) or not p.stdout.strip():
        raise SystemExit(f"simulated validate failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    return p.stdout


def raw_write(url: str, batches: list[str]) -> None:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
    try:
        for body in batches:
            data = gzip.compress(body.encode("utf-8"))
            conn.request("POST", "/api/v2/write?org=bench&bucket=bench&precision=ms", body=data,
                         headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"})
            r = conn.getresponse()
            r.read()
            if r.status != 204:
                raise RuntimeError(f"raw write: HTTP {r.status}")
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--report", metavar="FILE", help="Use this saved report instead of simulating one.")
    ap.add_argument("--keep-report", metavar="FILE", help="Save the simulated report here (reuse with --report).")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}")
        return 2

    from clusterkit.models import FleetReport
    from clusterkit.telemetry.emit import emit_lines
    from clusterkit.telemetry.points import lines as encode
    from clusterkit.telemetry.points import report_points
    from clusterkit.telemetry.sink import batches

    if args.report:
        text = Path(args.report).read_text(encoding="utf-8")
        source = args.report
    else:
        t0 = time.monotonic()
        text = simulated_report(args.nodes)
        source = f"simulated {args.nodes} nodes ({time.monotonic() - t0:.0f} s)"
        if args.keep_report:
            Path(args.keep_report).write_text(text, encoding="utf-8")
    report = FleetReport.model_validate_json(text)
    gpus = sum(int(n.facts.get("gpu_count") or 0) for n in report.nodes)
    t0 = time.perf_counter()
    points = report_points(report)
    t1 = time.perf_counter()
    lines = encode(points)
    t2 = time.perf_counter()
    size = sum(len(ln) + 1 for ln in lines)
    fields = sum(ln.split(" ")[1].count("=") - ln.split(" ")[1].count("\\=") for ln in lines)
    print(f"report: {source}: {len(report.nodes)} nodes, {gpus} GPUs, "
          f"{sum(len(n.checks) for n in report.nodes)} check results")
    print(f"points: {len(lines)} lines ({size / 2**20:.1f} MiB of line protocol), built in {t1 - t0:.2f} s "
          f"({len(points) / (t1 - t0):,.0f}/s), encoded in {t2 - t1:.2f} s ({len(lines) / (t2 - t1):,.0f}/s)")
    bodies = ["\n".join(b) for b in batches(lines, args.batch)]

    import influxdb_client  # noqa: F401 - imported before the clock starts (about 0.5 s)

    with tempfile.TemporaryDirectory(prefix="ck-bench-telemetry-") as tmp:
        vm = VictoriaMetrics(Path(tmp) / "vm", port=free_port(BENCH_PORT_BASE, 20))
        vm.start()
        try:
            spool = os.path.join(tmp, "spool")

            def clusterkit_once() -> float:
                t = time.perf_counter()
                res = emit_lines(lines, url=vm.url, org="bench", bucket="bench", spool_dir=spool,
                                 batch_lines=args.batch, deadline_s=600)
                took = time.perf_counter() - t
                if res.written != len(lines) or res.warnings:
                    raise RuntimeError(f"clusterkit write incomplete: {res}")
                return took

            def raw_once() -> float:
                t = time.perf_counter()
                raw_write(vm.url, bodies)
                return time.perf_counter() - t

            writers = {"clusterkit sink (influxdb-client, sync)": clusterkit_once, "raw HTTP (http.client)": raw_once}
            for fn in writers.values():  # warm-up: connections, VictoriaMetrics' first series
                fn()
            times: dict[str, list[float]] = {k: [] for k in writers}
            order = list(writers)
            for i in range(args.repeat):
                # each round runs both, the order alternating: a load change hits both alike
                for name in (order if i % 2 == 0 else order[::-1]):
                    times[name].append(writers[name]())
            # every write arrived: the run point was written 2 * (repeat + 1) times
            runs = 2 * (args.repeat + 1)
            got = samples(vm.export('{__name__="clusterkit_run_exit_code"}', expect=runs))
            gpu_numeric = sum(1 for ln in lines if ln.startswith("gpu,"))
            got_gpu = samples(vm.export('{__name__="gpu_value"}', expect=gpu_numeric * runs, timeout=30))
        finally:
            vm.stop()

    print(f"\nwriting {len(lines)} points in {len(bodies)} requests of ≤ {args.batch} lines, gzip, to VictoriaMetrics "
          f"on 127.0.0.1; {args.repeat} runs each, interleaved, after a warm-up; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    width = max(len(k) for k in times)
    rates: dict[str, tuple[float, float]] = {}
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        rates[name] = (len(lines) / med, len(lines) / best)
        print(f"  {name:{width}}  median {med:6.3f} s = {len(lines) / med:>9,.0f} points/s   "
              f"best {best:6.3f} s = {len(lines) / best:>9,.0f} points/s")
    ck, raw = rates.values()
    ratio_med, ratio_best = ck[0] / raw[0], ck[1] / raw[1]
    ck_t, raw_t = times.values()
    paired = statistics.median(r / c for c, r in zip(ck_t, raw_t))
    print(f"  ratio clusterkit / raw (points/s): {ratio_med:.2f} of the medians, {ratio_best:.2f} of the bests, "
          f"{paired:.2f} median of the rounds' ratios; target ≥ {TARGET}")
    print(f"  fields per run: {fields}; arrived: clusterkit_run_exit_code {got}/{runs}, "
          f"gpu_value {got_gpu}/{gpu_numeric * runs}")
    ok = got == runs and got_gpu == gpu_numeric * runs
    if not ok:
        print("points missing in the store")
    print(json.dumps({"points": len(lines), "bytes": size, "requests": len(bodies),
                      "seconds": times, "ratio_median": round(ratio_med, 3), "ratio_best": round(ratio_best, 3),
                      "ratio_paired_median": round(paired, 3)}))
    return 0 if ok and paired >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
