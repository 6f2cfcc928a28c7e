"""The Slurm launcher against a real Slurm cluster: munged + slurmctld + 8 slurmd (gpu-001..gpu-008,
partition gpu, 16 CPUs and 8 fake H100 each), running the simulator's nccl-tests stand-ins.

Each test of a round is one srun step with one task per GPU (``--ntasks-per-node=8``: the test
nodes advertise 16 CPUs, so every task gets a CPU and nothing is oversubscribed); every task runs
the stand-in, which learns its node from ``SLURMD_NODENAME`` and the test's nodes from
``SLURM_STEP_NODELIST`` (``CLUSTERKIT_SIM`` reaches the tasks through srun's ``--export=ALL``);
rank 0 prints the report. Hardware is simulated; Slurm (allocations, steps, ending a step on a
timeout, the MPI plugin, gres) is real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from clusterkit.nccl.launch import LaunchSettings, SlurmLauncher, render_batch
from clusterkit.nccl.models import NcclTest
from clusterkit.parsers.nccl_tests import parse_nccl_tests

FLEET = """name: nccl-slurm
profile: h100-sxm
nodes: gpu-[001-008]
faults:
  - {node: gpu-003, kind: nccl_init_fail}
  - {node: gpu-004, kind: nccl_hang}
  - {node: gpu-006, kind: nccl_slow, value: 2}
"""
RAILS = ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]


def _stand_in_dir(spec: str) -> str:
    try:
        from clusterkit.sim.fabric import stand_in_dir
    except ImportError as e:
        pytest.skip(f"the simulator's fabric stand-ins are not there yet ({e})")
    return stand_in_dir(spec)


@pytest.fixture(scope="module")
def fleet() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ck-nccl-fleet-")
    os.chmod(d, 0o755)
    path = Path(d) / "fleet.yaml"
    path.write_text(FLEET)
    yield str(path)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def cluster(slurm_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    slurm_cluster.reset()
    for name in list(os.environ):  # this process is no job step: srun makes its own allocation
        if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) or name in ("CLUSTERKIT_NODE",):
            monkeypatch.delenv(name)
    return slurm_cluster


def _mpi(cluster: Any) -> str:
    """pmi2 where this Slurm has it (Debian's does), else none."""
    p = cluster.run(["srun", "--mpi=list"])
    return "pmi2" if "pmi2" in (p.stdout + p.stderr) else "none"


def launcher(cluster: Any, fleet: str, **kw: Any) -> SlurmLauncher:
    stand_ins = _stand_in_dir(fleet)
    settings = LaunchSettings(nccl_tests_dir=stand_ins, gpus_per_node=8, mpi=_mpi(cluster),
                              grace_s=2.0, rails=lambda node: list(RAILS), env={"CLUSTERKIT_SIM": fleet})
    settings.ib_write_bw.binary = os.path.join(stand_ins, "ib_write_bw")
    env = {**cluster.env, **kw.pop("env", {})}
    return SlurmLauncher(settings, partition="gpu", env=env, **kw)


def test_a_round_of_srun_steps_on_a_simulated_fleet(cluster: Any, fleet: str) -> None:
    lau = launcher(cluster, fleet)
    assert lau.new_allocation
    tests = [NcclTest("ok", "allreduce", ("gpu-001", "gpu-002")),
             NcclTest("init", "allreduce", ("gpu-003", "gpu-005")),
             NcclTest("slow", "single", ("gpu-006",), "nvls"),
             NcclTest("sweep", "ib_sweep", ("gpu-007", "gpu-008"))]
    started = time.monotonic()
    try:
        out = {m.test.key: m for m in lau.run_round(tests, timeout=90)}
    finally:
        lau.close()
    took = time.monotonic() - started
    ok, init, slow, sweep = out["ok"], out["init"], out["slow"], out["sweep"]
    # 2 nodes x 8 GPUs: 16 ranks, every one started by Slurm on its own node
    assert ok.failure is None, (ok.message, ok.log[-2000:])
    assert ok.busbw_gbps is not None and 300 < ok.busbw_gbps <= 370 and ok.wrong == 0
    [run] = parse_nccl_tests(_stdout_part(ok.log)).runs
    assert run.nranks == 16 and {d.host for d in run.devices} == {"gpu-001", "gpu-002"}
    # a node failing at NCCL init is named by the failure line the stand-in prints
    assert init.failure == "init" and init.failed_node == "gpu-003", (init.message, init.log[-2000:])
    # one node, NCCL's own choice (NVLS), at half speed
    assert slow.failure is None and slow.busbw_gbps is not None and 200 < slow.busbw_gbps < 260, slow.message
    # ib_write_bw servers on gpu-008 and clients on gpu-007, every rail at once, one srun step
    assert sweep.failure is None and sorted(sweep.rails_gbps) == RAILS, (sweep.message, sweep.log[-2000:])
    assert all(350 < v < 400 for v in sweep.rails_gbps.values()) and not sweep.rails_failed
    assert took < 60
    assert _jobs_left(cluster) == []


def _jobs_left(cluster: Any, wait: float = 20.0) -> list[str]:
    """The jobs still in squeue once those ending (COMPLETING) have had ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while cluster.job_ids() and time.monotonic() < deadline:
        time.sleep(0.3)
    return list(cluster.job_ids())


def _stdout_part(log: str) -> str:
    """The nccl-tests text of a log (srun's own lines follow it on stderr)."""
    return "\n".join(ln for ln in log.splitlines() if not ln.startswith(("srun:", "slurmstepd:")))


def test_a_hung_test_is_ended_at_its_timeout_and_leaves_no_job(cluster: Any, fleet: str) -> None:
    lau = launcher(cluster, fleet)
    started = time.monotonic()
    try:
        [m] = lau.run_round([NcclTest("hang", "allreduce", ("gpu-004", "gpu-005"))], timeout=6)
    finally:
        lau.close()
    took = time.monotonic() - started
    assert m.failure == "hang" and m.message == "no result after 6 s", (m.message, m.log[-2000:])
    assert "# Using devices" in m.log  # the partial output is kept
    assert took < 6 + 10 + 5  # SIGTERM ends srun's step well within its kill grace
    assert _jobs_left(cluster) == []


def test_steps_inside_an_allocation(cluster: Any, fleet: str) -> None:
    p = cluster.run(["salloc", "--no-shell", "-N", "4", "-w", "gpu-[001-002,005,007]", "-p", "gpu", "-t", "5",
                     "--gres=gpu:8", "--exclusive", "-J", "ck-nccl-alloc"], timeout=60)
    assert p.returncode == 0, p.stderr
    job = next(w for w in p.stderr.split() if w.isdigit())
    try:
        lau = launcher(cluster, fleet, env={"SLURM_JOB_ID": job})
        assert not lau.new_allocation
        tests = [NcclTest("a", "allreduce", ("gpu-001", "gpu-002")), NcclTest("b", "allreduce", ("gpu-005", "gpu-007"))]
        try:
            out = lau.run_round(tests, timeout=90)
        finally:
            lau.close()
        assert [m.failure for m in out] == [None, None], [m.message for m in out]
        assert all(m.busbw_gbps is not None and m.busbw_gbps > 300 for m in out)
        assert cluster.job_ids() == [job]  # steps of the one allocation, no job of their own
    finally:
        cluster.run(["scancel", job])


def test_an_unknown_node_is_a_launch_failure(cluster: Any, fleet: str) -> None:
    lau = launcher(cluster, fleet)
    try:
        [m] = lau.run_round([NcclTest("x", "allreduce", ("gpu-001", "gpu-099"))], timeout=30)
    finally:
        lau.close()
    assert m.failure == "launch" and "srun" in m.message, m.message


def test_the_batch_script_passes_bash_n_and_shellcheck_and_runs(cluster: Any, fleet: str,
                                                                 tmp_path: Path) -> None:
    settings = LaunchSettings(nccl_tests_dir=_stand_in_dir(fleet), gpus_per_node=8, mpi=_mpi(cluster),
                              env={"CLUSTERKIT_SIM": fleet}, ib_hca=lambda nodes: "=mlx5_0:1,mlx5_1:1")
    out = Path(cluster.out_dir)
    text = render_batch(NcclTest("batch", "allreduce", ("gpu-001", "gpu-002")), settings, partition="gpu",
                        time="5", output_file=str(out / "nccl-%j.out"))
    script = tmp_path / "nccl.sbatch"
    script.write_text(text)
    p = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; CI installs it)")
    p = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
    # sbatch reads the quoted #SBATCH '--nodelist=gpu-[001-002]' line; the job runs 16 tasks
    job = cluster.sbatch([str(script)])
    assert cluster.wait_job(job, timeout=90) == "COMPLETED"
    log = (out / f"nccl-{job}.out").read_text()
    [run] = parse_nccl_tests(log).runs
    assert run.complete and run.nranks == 16 and {d.host for d in run.devices} == {"gpu-001", "gpu-002"}


def test_localize_through_slurm_as_a_user_runs_it(cluster: Any, tmp_path: Path) -> None:
    """`clusterkit nccl localize --sim FLEET --partition gpu`: the nodes come from Slurm, rails from
    node-check on the simulated hardware, every test is an srun step on the real cluster; the
    slow node is found by name, and no job is left behind."""
    import json
    import sys

    d = tempfile.mkdtemp(prefix="ck-nccl-loc-")
    os.chmod(d, 0o755)
    fleet_file = Path(d) / "fleet.yaml"
    fleet_file.write_text("name: loc\nprofile: h100-sxm\nnodes: gpu-[001-008]\n"
                          "faults:\n  - {node: gpu-003, kind: nccl_slow, value: 2}\n")
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "CLUSTERKIT_"))}
        env.update(cluster.env)
        env["CLUSTERKIT_SIM_ROOT"] = str(tmp_path / "sim")
        p = subprocess.run([sys.executable, "-m", "clusterkit", "nccl", "localize", "--sim", str(fleet_file),
                            "--partition", "gpu", "--nodes", "gpu-[001-004]", "--mpi", _mpi(cluster),
                            "--test-timeout", "30", "--json"],
                           capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        assert p.returncode == 1, p.stderr
        doc = json.loads(p.stdout)
        assert [b["node"] for b in doc["bad_nodes"]] == ["gpu-003"]
        assert doc["exclude"] == "gpu-003" and not doc["bad_links"] and not doc["bad_uplinks"]
        assert len(doc["rounds"]) <= 3
        first = doc["rounds"][0]["tests"]
        assert sorted(n for t in first for n in t["nodes"]) == [f"gpu-{i:03d}" for i in range(1, 5)]
        assert all(340 < t["busbw_gbps"] < 380 for t in first if "gpu-003" not in t["nodes"])
        assert cluster.run(["squeue", "-h"]).stdout.strip() == ""
    finally:
        shutil.rmtree(d, ignore_errors=True)
