"""node-check's wall time with and without the storage checks, on a healthy simulated node.

Runs ``python -m clusterkit node-check --json`` as a simulated node (``CLUSTERKIT_SIM``,
``CLUSTERKIT_NODE``) of a fleet whose nodes mount a shared file system (a storage fault on
another node makes ``/mnt/data`` a mount of every node), with the profile ``h100-sxm`` plus that
mount, in these variants:

* every domain but storage (``--checks`` without it; ``stress`` is left out of every variant,
  since naming it asks for its opt-in tests): the baseline;
* the same domains and storage (its default checks: mount, free, inodes — ``stat -f`` per mount);
* the same with ``--storage-bench --weights-dir`` (the stand-in fio and weights read, the
  real metadata helper on real files in the node's scratch directory);
* storage alone (default checks).

Each variant runs ``--repeat`` times, interleaved, after one warm-up run (the simulated node's tree is
generated on first use); the median, min and max wall time are printed, with the number of
checks. No root, no sshd: run it from the repository root::

    python benchmarks/node_check_storage.py [--repeat 7]

Close other heavy work first: on a small machine each Python start-up competes for the cores.
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

FLEET = """\
name: bench-storage
profile: h100-sxm
nodes: "gpu-[001-002]"
faults:
  # gpu-002's mount is missing: that makes /mnt/data a mount of the fleet; gpu-001 is healthy
  - {node: gpu-002, kind: mount_missing, path: /mnt/data}
"""


def profile_text() -> str:
    from clusterkit.profiles import load_profile

    p = load_profile("h100-sxm")
    doc = p.model_dump(mode="json", exclude_defaults=True)
    doc["name"] = "h100-sxm-storage"
    doc["storage"]["mounts"].append({"path": "/mnt/data", "fstype": ["nfs"], "options": ["hard"],
                                     "free_gib_min": 1000, "inodes_free_pct_min": 5})
    doc["storage"]["fio_runtime_s"] = 1
    doc["storage"]["weights_read_s"] = 2
    return json.dumps(doc)


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    started = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    return took, p.returncode, len(doc["checks"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from clusterkit.validate.registry import DOMAINS

    with tempfile.TemporaryDirectory(prefix="ck-bench-storage-") as tmp:
        fleet = os.path.join(tmp, "fleet.yaml")
        prof = os.path.join(tmp, "profile.json")
        with open(fleet, "w", encoding="utf-8") as fh:
            fh.write(FLEET)
        with open(prof, "w", encoding="utf-8") as fh:
            fh.write(profile_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
        env.update(CLUSTERKIT_SIM=fleet, CLUSTERKIT_NODE="gpu-001", CLUSTERKIT_SIM_ROOT=os.path.join(tmp, "sim"),
                   CLUSTERKIT_STATE_DIR=os.path.join(tmp, "state"))
        base = [sys.executable, "-m", "clusterkit", "node-check", "--json", "--profile", prof]
        # Both lists name the same domains: naming a domain whose checks are opt-in (stress)
        # asks for them, so it is left out of both.
        others = [d for d in DOMAINS if d not in ("storage", "stress")]
        variants = [
            ("without storage", [*base, "--checks", ",".join(others)]),
            ("with storage (default: mount, free, inodes)", [*base, "--checks", ",".join([*others, "storage"])]),
            ("with storage + --storage-bench --weights-dir", [*base, "--checks", ",".join([*others, "storage"]),
                                                               "--storage-bench", "--weights-dir",
                                                               "/models/llama-70b"]),
            ("storage alone (default checks)", [*base, "--checks", "storage"]),
        ]
        run(base, env)  # warm-up: generates the simulated node's tree
        print(f"node-check on a healthy simulated node (gpu-001), {args.repeat} runs each, "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        # interleaved (one run of each variant per round): a load change hits every variant alike
        seen: dict[str, tuple[list[float], set[int], set[int]]] = {label: ([], set(), set()) for label, _ in variants}
        for _ in range(args.repeat):
            for label, argv in variants:
                t, rc, n = run(argv, env)
                seen[label][0].append(t)
                seen[label][1].add(rc)
                seen[label][2].add(n)
        rows = [(label, statistics.median(times), min(times), max(times), rcs, checks)
                for label, (times, rcs, checks) in seen.items()]
        width = max(len(r[0]) for r in rows)
        print(f"{'variant':{width}}  median    min      max      exit  checks")
        for label, med, lo, hi, rcs, checks in rows:
            print(f"{label:{width}}  {med:6.3f}s  {lo:6.3f}s  {hi:6.3f}s  {','.join(map(str, sorted(rcs)))}     "
                  f"{','.join(map(str, sorted(checks)))}")
        print(f"storage's default checks add {rows[1][1] - rows[0][1]:+.3f}s to the median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
