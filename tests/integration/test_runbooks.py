"""The runbooks are rehearsed: every command block of every runbook in docs/runbooks/ runs, in
order, against the simulated fleet the runbook describes (and the test Slurm cluster or the
metrics store where a block needs one), and its exit status and output are checked against
what the runbook says to expect. A runbook whose commands no longer work fails here.

The convention (fenced ``sh`` blocks, ``<!-- expect: … -->``, ``<!-- needs: … -->``,
``<!-- file: … -->``) is parsed by tests/infra/runbook.py; docs/runbooks/README.md describes it
for authors.

What a runbook's shell gets (docs/runbooks/README.md, "Rehearsal"):

* ``clusterkit`` on ``PATH``; one working directory per runbook, where ``file`` blocks are
  written; every block runs there with bash (``set -euo pipefail``: all commands of a block but
  the last must succeed; the block's status is its last command's);
* clusterkit's own state (ledger, baselines, spool) in a directory of the runbook's own, and one
  simulator root shared by every runbook (a fleet's generated nodes are reused);
* ``needs: slurm`` — the Slurm commands talk to the test cluster: 8 nodes ``gpu-[001-008]`` in
  partition ``gpu`` (8 fake H100 each), and partition ``staging`` = ``gpu-[007-008]``. One
  cluster for the module, reset (all idle, no jobs, no reservations) before each runbook;
* ``needs: metrics-store`` — ``$INFLUX_URL`` (a VictoriaMetrics speaking the InfluxDB v2 write
  API) and ``$INFLUX_TOKEN_FILE`` (the token, in a file: never on a command line);
* ``needs: ssh-nodes`` — real sshd nodes ``gpu-[005-008]`` (the bring-up rack), reached with
  ``$SSH_CONFIG``; ``$CK_PREFIX`` and ``$CK_BIN_DIR`` are where the agent goes on them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.runbook import Runbook, Step, earlier_failure, parse, script

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK_DIR = ROOT / "docs" / "runbooks"
RUNBOOKS = sorted(p for p in RUNBOOK_DIR.glob("*.md") if p.name != "README.md")
STEP_TIMEOUT = 240.0
STAGING = ("staging", "gpu-[007-008]")
_DROP_PREFIXES = ("CLUSTERKIT_", "SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "INFLUX_",
                  "FAKE_ENGINE_")


# ----------------------------------------------------------------------------- capabilities
def _slurm(request: pytest.FixtureRequest, run_dir: Path) -> dict[str, str]:
    cluster = request.getfixturevalue("slurm_cluster")
    return dict(cluster.env)


def _metrics_store(request: pytest.FixtureRequest, run_dir: Path) -> dict[str, str]:
    vm = request.getfixturevalue("vmstore")
    token = run_dir / "influx.token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    return {"INFLUX_URL": vm.url, "INFLUX_TOKEN_FILE": str(token)}


#: the rack the bring-up runbook installs the agent on (names of its simulated fleet)
SSH_NODES = ["gpu-005", "gpu-006", "gpu-007", "gpu-008"]


def _ssh_nodes(request: pytest.FixtureRequest, run_dir: Path) -> dict[str, str]:
    """Real sshd nodes gpu-[005-008] (this machine's filesystem: every node path carries
    ``{node}``), and the variables the runbook documents for them: ``$SSH_CONFIG``,
    ``$CK_PREFIX``, ``$CK_BIN_DIR``. The wheelhouse cache is the deploy agent tests' (built once
    per machine and clusterkit source)."""
    import pwd

    from tests.integration.test_deploy_agent import XDG_CACHE

    fleet = request.getfixturevalue("ssh_fleet_factory")(SSH_NODES)
    request.addfinalizer(fleet.stop)
    base = Path(tempfile.mkdtemp(prefix="ck-runbook-nodes-"))
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    pw = pwd.getpwnam(fleet.user)
    for n in SSH_NODES:
        (base / n).mkdir(mode=0o755)
        os.chown(base / n, pw.pw_uid, pw.pw_gid)
    return {"SSH_CONFIG": str(fleet.ssh_config), "CK_PREFIX": f"{base}/{{node}}/opt",
            "CK_BIN_DIR": f"{base}/{{node}}/bin", "XDG_CACHE_HOME": str(XDG_CACHE)}


#: capability -> provider(request, harness dir) -> environment for the blocks that need it
#: (every capability tests/infra/runbook.py accepts in a ``needs`` directive has one)
CAPABILITIES: dict[str, Callable[[pytest.FixtureRequest, Path], dict[str, str]]] = {
    "slurm": _slurm,
    "metrics-store": _metrics_store,
    "ssh-nodes": _ssh_nodes,
}


def _prepare_slurm(cluster: Any) -> None:
    """Back to the start for the next runbook: idle nodes, no jobs, no reservations, and the
    staging partition there."""
    cp = cluster.run(["scontrol", "-o", "show", "reservation"])
    for line in cp.stdout.splitlines():
        for word in line.split():
            if word.startswith("ReservationName="):
                cluster.run(["scontrol", "delete", word])
    cluster.reset()
    parts = cluster.run(["sinfo", "-h", "-o", "%R"]).stdout.split()
    if STAGING[0] not in parts:
        cluster.run(["scontrol", "create", f"PartitionName={STAGING[0]}", f"Nodes={STAGING[1]}",
                     "MaxTime=INFINITE", "State=UP"], check=True)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sim_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ck-runbook-sim-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def rehearsal_dirs() -> Iterator[tuple[Path, Path]]:
    """(working directory, harness directory), world-readable: Slurm jobs run in the first."""
    base = Path(tempfile.mkdtemp(prefix="ck-runbook-"))
    base.chmod(0o755)
    work, harness = base / "work", base / "harness"
    work.mkdir(mode=0o755)
    harness.mkdir(mode=0o755)
    yield work, harness
    shutil.rmtree(base, ignore_errors=True)


def _base_env(harness: Path, sim_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    bin_dir = harness / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "clusterkit"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m clusterkit "$@"\n')
    shim.chmod(0o755)
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "NO_COLOR": "1",
        "CLUSTERKIT_SIM_ROOT": str(sim_root),
        "CLUSTERKIT_STATE_DIR": str(harness / "state"),
        "CLUSTERKIT_BASELINE_DIR": str(harness / "baselines"),
        "CLUSTERKIT_SPOOL_DIR": str(harness / "spool"),
        "XDG_STATE_HOME": str(harness / "xdg-state"),
        "XDG_DATA_HOME": str(harness / "xdg-data"),
    })
    return env


def _tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def _run_step(step: Step, env: dict[str, str], work: Path, harness: Path) -> tuple[list[str], float]:
    assert step.expect is not None
    errline = harness / f"errline-{step.line}"
    errline.unlink(missing_ok=True)
    path = harness / f"step-{step.line}.sh"
    path.write_text(script(step, str(errline)))
    t0 = time.monotonic()
    try:
        p = subprocess.run(["bash", str(path)], cwd=work, env=env, capture_output=True, text=True,
                           timeout=STEP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return [f"did not finish within {STEP_TIMEOUT:.0f} s", f"stdout: {_tail(out)}"], \
            time.monotonic() - t0
    took = time.monotonic() - t0

    def read_file(name: str) -> str | None:
        f = work / name
        return f.read_text(errors="replace") if f.is_file() else None

    problems = step.expect.verify(p.returncode, p.stdout, p.stderr, read_file)
    failed_line = None
    if errline.exists():
        txt = errline.read_text().strip()
        failed_line = earlier_failure(step, int(txt)) if txt.isdigit() else None
    if failed_line is not None:
        problems.insert(0, f"block line {failed_line} failed before the last command "
                           f"(only the last command of a block may fail)")
    if "Traceback (most recent call last)" in p.stderr:
        problems.append("a traceback on stderr")
    if problems:
        problems += [f"stdout:\n{_tail(p.stdout)}", f"stderr:\n{_tail(p.stderr)}"]
    return problems, took


def rehearse(book: Runbook, request: pytest.FixtureRequest, work: Path, harness: Path,
             sim_root: Path) -> tuple[list[str], list[tuple[int, float]]]:
    """Run every step; returns (failure, timings). Stops at the first failing step (later
    steps build on it)."""
    env = _base_env(harness, sim_root)
    provided: dict[str, dict[str, str]] = {}
    if "slurm" in book.needs:
        _prepare_slurm(request.getfixturevalue("slurm_cluster"))
    timings: list[tuple[int, float]] = []
    for step in book.steps:
        if step.kind == "file":
            assert step.path is not None
            target = work / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(step.code)
            continue
        step_env = dict(env)
        for cap in step.needs:
            if cap not in provided:
                provided[cap] = CAPABILITIES[cap](request, harness)
            step_env.update(provided[cap])
        problems, took = _run_step(step, step_env, work, harness)
        timings.append((step.line, took))
        if problems:
            assert step.expect is not None
            return ([f"{step.where}: <!-- expect: {step.expect.source} -->\n{step.code}"
                     + "\n".join(problems)], timings)
    return [], timings


@pytest.mark.parametrize("path", RUNBOOKS, ids=[p.stem for p in RUNBOOKS])
def test_runbook_rehearsal(path: Path, request: pytest.FixtureRequest, sim_root: Path,
                           rehearsal_dirs: tuple[Path, Path]) -> None:
    book = parse(path.read_text())
    work, harness = rehearsal_dirs
    t0 = time.monotonic()
    failures, timings = rehearse(book, request, work, harness, sim_root)
    took = time.monotonic() - t0
    summary = (f"{path.name}: {len(timings)} of {len(book.commands)} blocks ran in {took:.1f} s ("
               + ", ".join(f"line {ln}: {t:.1f} s" for ln, t in timings) + ")")
    if failures:
        pytest.fail(f"{summary}\n" + "\n".join(failures), pytrace=False)
    print(summary)
