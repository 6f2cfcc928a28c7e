#!/usr/bin/env python3
"""Side by side: `clusterkit validate` (both transports) vs `pdsh` running node-check over the
same real sshd fleet.

For each fleet size (default 32, then 128 nodes) this starts one real OpenSSH sshd per
simulated node on 127.0.20.0/23 (CLUSTERKIT_SIM=builtin, CLUSTERKIT_NODE=<name> via SetEnv),
then, in the same run and interleaved, times (wall clock; best and median of --repeat):

  a) clusterkit validate --transport openssh  --nodes <hostlist> --ssh-config <cfg>
     --json --output /dev/null --fanout N   (the controller runs from this interpreter)
  b) clusterkit validate --transport paramiko …   (the same)
  c) pdsh -R ssh -f N -w <hostlist> clusterkit node-check --json
     with PDSH_SSH_ARGS="-F <cfg> -o BatchMode=yes %h"
  d) pdsh … true   (the SSH floor: connection + authentication only; --no-baseline drops it)

Output is discarded in the timed runs; one untimed warm-up run of each checks that every node
answered and measures the controller's peak memory: the process and all its descendants (ssh
children, ProxyCommands) are sampled every 50 ms (/proc/PID/smaps_rollup: RSS and PSS summed over
the tree), and the peak is divided by the node count. Also reported: sshd fleet start-up (keys
+ configs, launch -> all answering), stop, and idle sshd memory (PSS). Needs root,
/usr/sbin/sshd, pdsh, psutil.

    python benchmarks/fanout_vs_pdsh.py [--sizes 32,128] [--repeat 3] [--fanout 64]
        [--transports openssh,paramiko]

Exit status: 0 all measured; 1 some part could not be measured (reason printed; the rest is
still measured and printed); 2 this machine cannot run the benchmark at all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.infra.nodeenv import NodeEnvError, ensure_node_venv  # noqa: E402
from tests.infra.sshfleet import (  # noqa: E402
    BENCH_NETWORK,
    FleetError,
    SshFleet,
    loopback_nodes,
    unavailable_reason,
)

_PDSH_EXIT = re.compile(r"^pdsh@[^:]*: (\S+): ssh exited with exit code (\d+)$")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fold(prefix: str, width: int, first: int, count: int) -> str:
    """Hostlist for `count` consecutive names: gpu-[001-128]."""
    return f"{prefix}[{first:0{width}d}-{first + count - 1:0{width}d}]"


def timed(argv: list[str], env: dict[str, str], timeout: float, capture: bool = False
          ) -> tuple[float, int, str, str]:
    """(seconds, exit code, stdout (if captured), stderr tail)."""
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                        stderr=subprocess.PIPE, timeout=timeout, check=False)
    dt = time.perf_counter() - t0
    out = cp.stdout.decode(errors="replace") if capture else ""
    return dt, cp.returncode, out, cp.stderr.decode(errors="replace")


class TreeMemory:
    """Peak memory of a process and all its descendants, sampled every `interval` seconds.

    Each sample sums RSS and PSS (proportional set size: a page shared by k processes counts
    1/k) from /proc/PID/smaps_rollup over the tree. RSS counts the shared libraries of every
    ssh child again; PSS does not, and is the fairer figure for many small processes."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _smaps(pid: int) -> tuple[int, int]:
        rss = pss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1])
        except (OSError, ValueError):
            pass
        return rss, pss

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                pids = [self._root.pid] + [c.pid for c in self._root.children(recursive=True)]
            except psutil.Error:
                break
            rss = pss = 0
            for pid in pids:
                r, p = self._smaps(pid)
                rss += r
                pss += p
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self.samples += 1
            self._stop.wait(self._interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        return {"peak_rss_kib": self.peak_rss_kib, "peak_pss_kib": self.peak_pss_kib,
                "peak_processes": self.peak_procs, "samples": self.samples}


def timed_with_memory(argv: list[str], env: dict[str, str], timeout: float
                      ) -> tuple[float, int, str, str, dict[str, float]]:
    """Like timed(capture=True), and the peak memory of the process tree while it ran."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    mem = TreeMemory(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    finally:
        figures = mem.stop()
    return (time.perf_counter() - t0, proc.returncode, out.decode(errors="replace"),
            err.decode(errors="replace"), figures)


def validate_available(controller: list[str]) -> str | None:
    """None when `<controller> validate` takes the options we time; else why not."""
    shown = " ".join(controller)
    try:
        cp = subprocess.run([*controller, "validate", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {shown}: {e}"
    if cp.returncode != 0:
        return (f"`{shown} validate --help` exited {cp.returncode}: "
                f"{(cp.stderr or cp.stdout).strip()[-300:]}")
    missing = [o for o in ("--nodes", "--ssh-config", "--fanout", "--output", "--json", "--transport")
               if o not in cp.stdout]
    if missing:
        return f"clusterkit validate lacks {', '.join(missing)} in this checkout"
    return None


def idle_pss_kib(pids: list[int]) -> int:
    """Proportional set size (shared pages split between sharers) summed over `pids`."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def summarize(times: list[float]) -> dict[str, float]:
    return {"best": min(times), "median": statistics.median(times)}


def check_pdsh_output(out: str, err: str, names: list[str], strict: bool = True
                      ) -> tuple[str, bool]:
    """One line on what a pdsh run saw; ok=False if a node failed (or, strict, said nothing)."""
    answered = {ln.split(":", 1)[0] for ln in out.splitlines() if ": " in ln}
    codes = Counter({n: 0 for n in names})
    for ln in err.splitlines():
        m = _PDSH_EXIT.match(ln.strip())
        if m:
            codes[m.group(1)] = int(m.group(2))
    dist = Counter(codes[n] for n in names)
    text = (f"{len(answered & set(names))}/{len(names)} nodes printed output; remote exit "
            f"codes {dict(sorted(dist.items()))}")
    bad = {c for c in dist if c not in (0, 1, 3)}
    if bad:
        sample = next((ln for ln in err.splitlines() if not _PDSH_EXIT.match(ln.strip())), "")
        text += f" — node-check itself failed (e.g. {sample.strip()[:160]})"
    return text, not bad and (answered >= set(names) or not strict)


_SUMMARY = re.compile(r"(\d+) nodes: (\d+) pass, (\d+) warn, (\d+) fail, (\d+) error, "
                      r"(\d+) unreachable")


def check_terminal_summary(out: str, rc: int, err: str, size: int) -> tuple[str, bool]:
    """Read validate's terminal summary line (the JSON goes to /dev/null in timed runs)."""
    if rc not in (0, 1, 3):
        return f"exit {rc}: {' '.join(err.strip().splitlines()[-2:])[:200]}", False
    m = _SUMMARY.search(out)
    if not m:
        return f"exit {rc}; no summary line to check", rc in (0, 1)
    total, _ok, _warn, _fail, error, unreachable = map(int, m.groups())
    text = f"exit {rc}; {m.group(0)}"
    return text, total == size and unreachable == 0 and error == 0


def check_report(path: Path, rc: int, err: str, names: list[str]) -> tuple[str, bool]:
    if rc not in (0, 1, 3):
        tail = " ".join(err.strip().splitlines()[-3:])[:300]
        return f"exit {rc}: {tail}", False
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"exit {rc} but no readable report ({e})", False
    nodes = doc.get("nodes", [])
    statuses = Counter(str(n.get("status")) for n in nodes)
    seen = {n.get("node") for n in nodes}
    ok = seen >= set(names)
    return (f"exit {rc}; report has {len(seen & set(names))}/{len(names)} nodes, status "
            f"{dict(sorted(statuses.items()))}"), ok


def run_size(size: int, args: argparse.Namespace, venv: Path, workdir: Path,
             validate_why: str | None, pdsh: str | None) -> dict:
    nodes = loopback_nodes(size, args.network)
    names = [n for n, _ in nodes]
    hostlist = fold("gpu-", 3, 1, size)
    res: dict = {"nodes": size, "hostlist": hostlist, "notes": []}
    fleet = SshFleet(workdir / f"fleet-{size}", nodes, env={"CLUSTERKIT_SIM": args.sim},
                     user=args.user, venv=venv)
    log(f"[{size}] starting {size} sshd on {nodes[0][1]}..{nodes[-1][1]}")
    fleet.start(timeout=120)
    try:
        time.sleep(0.5)  # let start-up settle before sampling memory
        res["sshd"] = {
            "prepare_s": fleet.timings["prepare"],
            "launch_to_ready_s": fleet.timings["launch"] + fleet.timings["ready"],
            "start_s": fleet.timings["start"],
            "idle_pss_kib_per_sshd": idle_pss_kib(list(fleet.pids.values())) / max(1, size),
        }
        log(f"[{size}] sshd up: keys+configs {fleet.timings['prepare']:.2f} s, launch->ready "
            f"{res['sshd']['launch_to_ready_s']:.2f} s")

        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("CLUSTERKIT_SIM", "CLUSTERKIT_NODE", "PDSH_SSH_ARGS_APPEND")}
        pdsh_env = dict(base_env, PDSH_SSH_ARGS=f"-F {fleet.ssh_config} -o BatchMode=yes %h")
        fan = str(args.fanout)
        cmds: dict[str, list[str]] = {}
        envs: dict[str, dict[str, str]] = {}
        res["memory"] = {}
        res["validate_check"] = {}
        for transport in (args.transports if validate_why is None else []):
            label = f"clusterkit validate ({transport})"
            report = workdir / f"report-{size}-{transport}.json"
            validate = [*args.controller_argv, "validate", "--transport", transport,
                        "--nodes", hostlist, "--ssh-config", str(fleet.ssh_config), "--json",
                        "--fanout", fan]
            # warm-up and check: same command, report to a file we read; memory sampled here
            dt, rc, _, err, mem = timed_with_memory([*validate, "--output", str(report)], base_env,
                                                    args.timeout)
            text, ok = check_report(report, rc, err, names)
            log(f"[{size}] {label} warm-up {dt:.2f} s, peak PSS {mem['peak_pss_kib'] / 1024:.1f} MiB: "
                f"{text}")
            res["validate_check"][transport] = text
            res["memory"][label] = mem
            if ok:
                cmds[label] = [*validate, "--output", "/dev/null"]
                envs[label] = base_env
            else:
                res["notes"].append(f"{label} not timed: {text}")
        # else: validate_why is reported once for the whole run
        if pdsh:
            remote = args.remote_command
            pd = [pdsh, "-R", "ssh", "-f", fan, "-w", hostlist, remote]
            dt, rc, out, err, mem = timed_with_memory(pd, pdsh_env, args.timeout)
            res["memory"][f"pdsh {remote}"] = mem
            text, ok = check_pdsh_output(out, err, names)
            log(f"[{size}] pdsh warm-up {dt:.2f} s, peak PSS {mem['peak_pss_kib'] / 1024:.1f} MiB: {text}")
            res["pdsh_check"] = text
            if not ok:
                res["notes"].append(f"pdsh `{remote}`: {text}")
            cmds[f"pdsh {remote}"] = pd
            envs[f"pdsh {remote}"] = pdsh_env
            if args.baseline:
                cmds["pdsh true"] = [pdsh, "-R", "ssh", "-f", fan, "-w", hostlist, "true"]
                envs["pdsh true"] = pdsh_env
        times: dict[str, list[float]] = {k: [] for k in cmds}
        rcs: dict[str, set[int]] = {k: set() for k in cmds}
        incomplete: dict[str, list[str]] = {k: [] for k in cmds}
        for r in range(args.repeat):
            for label, argv in cmds.items():
                # stdout goes to a pipe only to check that every node answered; the JSON
                # report itself is discarded (--output /dev/null) / pdsh output is not kept.
                dt, rc, out, err = timed(argv, envs[label], args.timeout, capture=True)
                times[label].append(dt)
                rcs[label].add(rc)
                if label.startswith("clusterkit validate"):
                    text, ok = check_terminal_summary(out, rc, err, size)
                else:
                    text, ok = check_pdsh_output(out, err, names, strict=label != "pdsh true")
                if not ok:
                    incomplete[label].append(f"run {r + 1}: {text}")
                log(f"[{size}] run {r + 1}/{args.repeat} {label}: {dt:.3f} s (exit {rc})"
                    + ("" if ok else f" INCOMPLETE: {text}"))
        res["runs"] = {k: {"times_s": v, **summarize(v), "exit_codes": sorted(rcs[k]),
                           "complete_runs": len(v) - len(incomplete[k]),
                           "incomplete": incomplete[k]}
                       for k, v in times.items() if v}
        for k, bad in incomplete.items():
            res["notes"] += [f"{k}: {b}" for b in bad]
    finally:
        fleet.stop(timeout=10)
        res.setdefault("sshd", {})["stop_s"] = fleet.timings.get("stop", float("nan"))
    return res


def print_tables(results: list[dict], args: argparse.Namespace) -> None:
    print()
    print(f"sshd fleet (one sshd per node, loopback; {os.cpu_count()} CPUs)")
    print(f"{'nodes':>5}  {'keys+configs':>12}  {'launch->ready':>13}  {'stop':>6}  "
          f"{'idle PSS/sshd':>13}")
    for r in results:
        s = r.get("sshd", {})
        if "start_s" not in s:
            continue
        print(f"{r['nodes']:>5}  {s['prepare_s']:>10.2f} s  {s['launch_to_ready_s']:>11.2f} s  "
              f"{s['stop_s']:>4.2f} s  {s['idle_pss_kib_per_sshd'] / 1024:>9.2f} MiB")
    print()
    print(f"fan-out {args.fanout}, wall clock over {args.repeat} runs (output discarded); "
          "ratio = this row / pdsh node-check; peak memory of the command's process tree "
          "(warm-up run, sampled every 50 ms) per node")
    print(f"{'nodes':>5}  {'command':<44} {'best':>8} {'median':>8}  {'ratio b/m':>10}  "
          f"{'PSS/node':>9} {'RSS/node':>9}  exit  complete")
    for r in results:
        runs = r.get("runs", {})
        pd = runs.get(f"pdsh {args.remote_command}")
        r["ratio"] = {}
        for label, run in runs.items():
            codes = ",".join(str(c) for c in run["exit_codes"])
            ratio = ""
            if pd and label.startswith("clusterkit validate"):
                rb, rm = run["best"] / pd["best"], run["median"] / pd["median"]
                r["ratio"][label] = {"best": rb, "median": rm}
                ratio = f"{rb:.2f}/{rm:.2f}"
            mem = r.get("memory", {}).get(label)
            pss = f"{mem['peak_pss_kib'] / r['nodes'] / 1024:>5.2f} MiB" if mem else ""
            rss = f"{mem['peak_rss_kib'] / r['nodes'] / 1024:>5.2f} MiB" if mem else ""
            print(f"{r['nodes']:>5}  {label:<44} {run['best']:>6.3f} s {run['median']:>6.3f} s  "
                  f"{ratio:>10}  {pss:>9} {rss:>9}  {codes:<5} {run['complete_runs']}/{len(run['times_s'])}")
    notes = [(r["nodes"], n) for r in results for n in r.get("notes", [])]
    if notes:
        print()
        for size, note in notes:
            print(f"note [{size} nodes]: {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,128", help="fleet sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command")
    ap.add_argument("--fanout", type=int, default=64, help="connections in flight (both tools)")
    ap.add_argument("--transports", default="openssh,paramiko",
                    help="clusterkit transports to time, comma-separated")
    ap.add_argument("--controller", choices=("snapshot", "live"), default="snapshot",
                    help="run the controller from the node venv's snapshot of the sources (default: "
                         "the same code as the nodes) or from this interpreter and working tree")
    ap.add_argument("--sim", default="builtin", help="CLUSTERKIT_SIM on every node")
    ap.add_argument("--remote-command", default="clusterkit node-check --json",
                    help="what pdsh runs on each node")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the `pdsh … true` SSH-floor row")
    ap.add_argument("--network", default=BENCH_NETWORK, help="loopback network for the nodes")
    ap.add_argument("--user", default="ckuser", help="plain login user on the nodes")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per command")
    ap.add_argument("--workdir", help="keep keys, configs, logs and reports here")
    ap.add_argument("--results", help="also write the figures as JSON to this file")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if not sizes or min(sizes) < 1 or args.repeat < 1 or args.fanout < 1:
        ap.error("sizes, --repeat and --fanout must be positive")
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not args.transports or set(args.transports) - {"openssh", "paramiko"}:
        ap.error("--transports: openssh and/or paramiko")

    reason = unavailable_reason()
    if reason:
        log(f"cannot run: {reason}")
        return 2
    pdsh = shutil.which("pdsh")
    problems: list[str] = []
    if pdsh is None:
        problems.append("pdsh not installed (apt-get install pdsh): pdsh side not measured")
        log(problems[-1])
    t0 = time.perf_counter()
    try:
        venv = ensure_node_venv(log=log)
    except NodeEnvError as e:
        log(f"cannot build the node-side virtualenv: {e}")
        return 2
    log(f"node venv {venv} ready in {time.perf_counter() - t0:.2f} s")
    # the controller runs the same snapshot of the sources as the nodes (its console script, so
    # the working tree is not on its path): edits made while the benchmark runs change neither
    args.controller_argv = ([str(venv / "bin" / "clusterkit")] if args.controller == "snapshot"
                            else [sys.executable, "-m", "clusterkit"])
    log(f"controller: {' '.join(args.controller_argv)}")
    validate_why = validate_available(args.controller_argv)
    if validate_why:
        problems.append(f"clusterkit validate cannot be benchmarked: {validate_why}")
        log(f"ERROR: {problems[-1]}")
        log("continuing with the rest (fleet start/stop, pdsh)")

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="clusterkit-bench-")
        workdir = Path(tmp.name)
    results: list[dict] = []
    try:
        for size in sizes:
            try:
                results.append(run_size(size, args, venv, workdir, validate_why, pdsh))
            except (FleetError, subprocess.TimeoutExpired, ValueError) as e:
                log(f"ERROR [{size} nodes]: {e}")
                results.append({"nodes": size, "notes": [str(e)]})
    finally:
        if tmp is not None:
            tmp.cleanup()
    print_tables(results, args)
    problems += [f"{r['nodes']} nodes: {n}" for r in results for n in r.get("notes", [])]
    if args.results:
        Path(args.results).write_text(json.dumps(
            {"args": vars(args), "cpus": os.cpu_count(), "results": results}, indent=1))
    if problems:
        print("\nNOT everything was measured:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
