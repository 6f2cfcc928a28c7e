#!/usr/bin/env python3
"""`clusterkit deploy agent` wall time on N real sshd nodes (default 32): a first install and an
unchanged re-run, side by side with what users would otherwise script: a loop (same
parallelism) of `scp -r wheelhouse node:` + `ssh node python3 -m venv … && pip install --no-index`.

Nodes are real OpenSSH sshd on 127.0.20.0/23 (as benchmarks/fanout_vs_pdsh.py), all on this
machine, so each node installs under <base>/<node>/ (the `{node}` path token). The wheelhouse is
built (or taken from the cache) before timing starts; both sides install from the same wheels.

    python benchmarks/deploy_agent.py [--nodes 32] [--fanout 32]

Exit status: 0 measured; 1 a run failed (printed); 2 this machine cannot run it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from clusterkit.deploy import agent  # noqa: E402
from tests.infra.nodeenv import NodeEnvError, ensure_node_venv  # noqa: E402
from tests.infra.sshfleet import BENCH_NETWORK, SshFleet, loopback_nodes, unavailable_reason  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "clusterkit-test-cache" / "clusterkit"  # the tests' wheelhouse cache


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def wheelhouse() -> agent.Wheelhouse:
    args = json.dumps({"prefix": "/nonexistent", "mark": "x", "writable": [], "files": [], "dirs": []})
    out = subprocess.run(["/usr/bin/python3", "-c", agent.PROBE, args], capture_output=True, text=True,
                         check=True).stdout
    return agent.WheelhouseBuilder(CACHE, log=log).get(agent.NodeFacts.from_json(json.loads(out)).platform)


def run_agent(fleet: SshFleet, base: Path, fanout: int) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "clusterkit", "deploy", "agent", "--nodes", fleet.hostlist, "--ssh-config",
            str(fleet.ssh_config), "--prefix", f"{base}/{{node}}/opt", "--bin-dir", f"{base}/{{node}}/bin",
            "--cache-dir", str(CACHE), "--fanout", str(fanout), "--json", "--quiet"]
    t0 = time.perf_counter()
    cp = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if cp.returncode != 0:
        raise RuntimeError(f"deploy agent exit {cp.returncode}: {cp.stderr[-2000:]} {cp.stdout[-2000:]}")
    return dt, json.loads(cp.stdout)["summary"]


def run_loop(fleet: SshFleet, base: Path, wh: agent.Wheelhouse, fanout: int) -> float:
    """The hand-written way: scp the wheelhouse, then ssh venv + pip install --no-index."""
    src = base / "_wheelhouse"
    if not src.exists():
        src.mkdir()
        for f in wh.files:
            shutil.copy(f.path, src / f.name)
        os.chmod(src, 0o755)
    ck = wh.clusterkit_wheel.name

    def one(node: str) -> None:
        dest = f"{base}/{node}/loop"
        ssh = ["ssh", "-F", str(fleet.ssh_config), node]
        subprocess.run(ssh + [f"mkdir -p {dest}"], check=True, capture_output=True)
        subprocess.run(ssh + [f"rm -rf {dest}/wheels"], check=True, capture_output=True)
        subprocess.run(["scp", "-q", "-r", "-F", str(fleet.ssh_config), str(src), f"{node}:{dest}/wheels"],
                       check=True, capture_output=True)  # copies the directory as <dest>/wheels
        cp = subprocess.run(ssh + [f"/usr/bin/python3 -m venv {dest}/venv && {dest}/venv/bin/pip install -q "
                                   f"--no-index --disable-pip-version-check --find-links {dest}/wheels "
                                   f"{dest}/wheels/{ck} && {dest}/venv/bin/clusterkit --version"],
                            capture_output=True, text=True)
        if cp.returncode != 0:
            raise RuntimeError(f"{node}: {cp.stderr[-1000:]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(fanout) as pool:
        list(pool.map(one, fleet.names))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=32)
    ap.add_argument("--fanout", type=int, default=32)
    ap.add_argument("--no-loop", action="store_true", help="skip the scp + ssh pip loop")
    args = ap.parse_args(argv)
    why = unavailable_reason()
    if why:
        log(f"cannot run: {why}")
        return 2
    try:
        venv = ensure_node_venv()
    except NodeEnvError as e:
        log(f"cannot run: {e}")
        return 2
    wh = wheelhouse()
    log(f"wheelhouse {wh.id}: {len(wh.files)} wheels, {agent.human_bytes(wh.total_bytes)}")
    work = Path(tempfile.mkdtemp(prefix="ck-bench-agent-"))
    base = Path(tempfile.mkdtemp(prefix="ck-bench-agent-nodes-"))
    os.chmod(base, 0o755)
    rows: list[tuple[str, float, float | None]] = []
    try:
        with SshFleet(work / "fleet", loopback_nodes(args.nodes, BENCH_NETWORK), venv=venv) as fleet:
            pw = pwd.getpwnam(fleet.user)
            for n in fleet.names:
                (base / n).mkdir()
                os.chown(base / n, pw.pw_uid, pw.pw_gid)
            log(f"{args.nodes} sshd nodes up; deploy agent, first install …")
            first, s1 = run_agent(fleet, base, args.fanout)
            log(f"  {first:.1f}s {s1}; unchanged re-run …")
            again, s2 = run_agent(fleet, base, args.fanout)
            log(f"  {again:.1f}s {s2}")
            loop_first = loop_again = None
            if not args.no_loop:
                log("scp + ssh pip loop, first install …")
                loop_first = run_loop(fleet, base, wh, args.fanout)
                log(f"  {loop_first:.1f}s; again …")
                loop_again = run_loop(fleet, base, wh, args.fanout)
                log(f"  {loop_again:.1f}s")
            rows = [("first install", first, loop_first), ("unchanged re-run", again, loop_again)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"deploy agent on {args.nodes} real sshd nodes (fanout {args.fanout}, {os.cpu_count()} CPUs), "
          f"wheelhouse {len(wh.files)} wheels / {agent.human_bytes(wh.total_bytes)}")
    print(f"{'run':<18} {'deploy agent':>13} {'scp+ssh pip loop':>17} {'loop / agent':>13}")
    for name, ours, loop in rows:
        ratio = f"{loop / ours:.2f}x" if loop else "-"
        print(f"{name:<18} {ours:>12.1f}s {(f'{loop:.1f}s' if loop else '-'):>17} {ratio:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
