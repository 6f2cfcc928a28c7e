"""Launchers: what each runs (argv, environment), what a test's output says (Measured), the
simulator's launcher end to end, the torch fallback's pure parts (and, with a GPU, the real one).

Real outputs: tests/fixtures/nccl-tests (the 8-GPU H100 run, the alltoall whose rank failed
after the header). Fake binaries written into tmp stand in for nccl-tests and ib_write_bw where
the simulator is not the subject.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from clusterkit.errors import CommandTimeout, ConnectError, UsageError
from clusterkit.nccl import launch, torch_allreduce
from clusterkit.nccl.launch import (
    IB_SWEEP_SCRIPT,
    LaunchSettings,
    MpirunSshLauncher,
    SimLauncher,
    SlurmLauncher,
    failed_node,
    ib_client_argv,
    ib_sweep_argv,
    make_launcher,
    measured_from_output,
    measured_ib_sweep,
    mpirun_argv,
    nccl_args,
    program,
    render_batch,
    split_rails_output,
    srun_argv,
    supports_json,
    env_for_test,
)
from clusterkit.nccl.models import Measured, NcclTest
from clusterkit.parsers.nccl_tests import parse_nccl_tests
from clusterkit.transport import CommandResult, Task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SINGLE = (FIXTURES / "nccl-tests" / "all_reduce_perf_h100x8_single_node_v2.17.8.txt").read_text()
FAILED = (FIXTURES / "nccl-tests" / "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt").read_text()
GIB8 = 8 << 30

AR = NcclTest("r1-t001", "allreduce", ("gpu-001", "gpu-002"))
NVLS = NcclTest("r1-t002", "single", ("gpu-003",), "nvls")
RING1 = NcclTest("r1-t003", "single", ("gpu-004",), "ring")
SWEEP = NcclTest("r1-t004", "ib_sweep", ("gpu-001", "gpu-002"))


def settings(**kw: Any) -> LaunchSettings:
    base: dict[str, Any] = {"nccl_tests_dir": "/opt/nccl-tests/build"}
    base.update(kw)
    return LaunchSettings(**base)


# --------------------------------------------------------------------------- environment, argv
def test_test_env_forces_the_ring_over_the_rails_for_network_tests() -> None:
    s = settings(env={"NCCL_SOCKET_IFNAME": "=eth0", "NCCL_ALGO": "Tree"},
                 ib_hca=lambda nodes: "=mlx5_0:1,mlx5_1:1" if nodes == AR.nodes else None)
    assert env_for_test(AR, s) == {"NCCL_SOCKET_IFNAME": "=eth0", "NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0",
                               "NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1"}
    # NCCL's own choice on one node: the algorithm variables are removed, not inherited
    assert env_for_test(NVLS, s) == {"NCCL_SOCKET_IFNAME": "=eth0", "NCCL_ALGO": None, "NCCL_NVLS_ENABLE": None}
    assert env_for_test(RING1, s) == {"NCCL_SOCKET_IFNAME": "=eth0", "NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0"}
    assert "NCCL_IB_HCA" not in env_for_test(AR, settings())  # no callback: NCCL decides
    assert launch.apply_env({"A": "1", "NCCL_ALGO": "Tree"}, {"NCCL_ALGO": None, "B": "2"}) == {"A": "1", "B": "2"}


def test_program_and_nccl_args() -> None:
    s = settings(iters=20, warmup_iters=5)
    assert program(s) == ["stdbuf", "-oL", "-eL", "/opt/nccl-tests/build/all_reduce_perf"]
    assert program(settings(line_buffered=False)) == ["/opt/nccl-tests/build/all_reduce_perf"]
    assert program(LaunchSettings()) == ["python3", "-m", "clusterkit.nccl.torch_allreduce"]
    assert nccl_args(AR, s) == ["-b", "8589934592", "-e", "8589934592", "-f", "2", "-g", "1", "-n", "20",
                                "-w", "5", "-c", "1"]
    assert nccl_args(AR, s, gpus_per_process=8, json_path="/x/r.json")[-4:] == ["-c", "1", "-J", "/x/r.json"]


def test_srun_argv_inside_and_outside_an_allocation() -> None:
    s = settings(mpi="pmi2", gpus_per_node=8)
    inside = srun_argv(AR, s, timeout=300)
    assert inside == ["srun", "--job-name=clusterkit-nccl", "--nodes=2", "--ntasks=16", "--ntasks-per-node=8",
                      "--nodelist=gpu-[001-002]", "--mpi=pmi2", "--kill-on-bad-exit=1", "--export=ALL",
                      "--exclusive", "--gres=gpu:8"]
    outside = srun_argv(AR, s, timeout=300, new_allocation=True, partition="gpu", reservation="r", gres=None)
    assert outside[-3:] == ["--time=6", "--partition=gpu", "--reservation=r"]
    assert not any(a.startswith("--gres") for a in outside)
    sweep = srun_argv(SWEEP, s, timeout=60)
    assert "--ntasks-per-node=1" in sweep and "--mpi=none" in sweep and "--kill-on-bad-exit=0" in sweep
    assert not any(a.startswith("--gres") for a in sweep)


def test_slurm_launcher_decides_its_allocation_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOBID", raising=False)
    assert SlurmLauncher(settings()).new_allocation
    assert not SlurmLauncher(settings(), env={"SLURM_JOB_ID": "42"}).new_allocation
    sl = SlurmLauncher(settings(), partition="gpu")
    monkeypatch.setenv("CLUSTERKIT_NODE", "gpu-009")
    env = sl.step_env(env_for_test(AR, sl.settings))
    assert "CLUSTERKIT_NODE" not in env and env["NCCL_ALGO"] == "Ring"
    assert "--partition=gpu" in sl.srun_argv(AR, 100)


def test_mpirun_argv() -> None:
    s = settings(gpus_per_node=8)
    assert mpirun_argv(AR, s, export=["PATH", "NCCL_IB_HCA"], extra=["--mca", "pml", "ucx"]) == [
        "mpirun", "--host", "gpu-001:8,gpu-002:8", "-np", "16", "--bind-to", "none", "-x", "PATH",
        "-x", "NCCL_IB_HCA", "--mca", "pml", "ucx", "stdbuf", "-oL", "-eL",
        "/opt/nccl-tests/build/all_reduce_perf", "-b", "8589934592", "-e", "8589934592", "-f", "2", "-g", "1",
        "-n", "20", "-w", "5", "-c", "1"]


def test_ib_sweep_argv() -> None:
    s = settings()
    assert ib_client_argv("mlx5_3:1", 3, "gpu-002", s) == [
        "ib_write_bw", "-d", "mlx5_3", "-i", "1", "-p", "18518", "-s", "8388608", "--report_gbits", "-F", "gpu-002"]
    argv = ib_sweep_argv(SWEEP, ["mlx5_0", "mlx5_1:1"], s, timeout=60)
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == [
        "clusterkit-ib-sweep", "gpu-002", "ib_write_bw", "60", "8388608", "1",
        "mlx5_0", "1", "18515", "mlx5_1", "1", "18516"]


def test_supports_json() -> None:
    assert supports_json("[-J,--output_file <file> write output to filepath, if accessible.]")
    assert supports_json("  -J FILE  write JSON")
    assert not supports_json("[-T,--timeout <time in seconds>]\n[-C,--report_cputime <0/1>]")


# --------------------------------------------------------------------------- output -> Measured
def measured(stdout: str, *, rc: int = 0, stderr: str = "", timed_out: bool = False, duration: float = 12.0,
             test: NcclTest = AR, json_text: Optional[str] = None, **kw: Any) -> Measured:
    return measured_from_output(test, rc, stdout, stderr, timed_out, duration, settings(**kw), json_text=json_text)


def test_a_result_gives_busbw_at_the_judged_size_wrong_and_test_time() -> None:
    m = measured(SINGLE)
    assert m.failure is None and m.busbw_gbps == 481.39 and m.wrong == 0
    assert "481.39" in m.message and "8 ranks" in m.message
    run = parse_nccl_tests(SINGLE).runs[0]
    want = sum(h.time_us * 25 for r in run.rows for h in (r.out_of_place, r.in_place)
               if h is not None and h.time_us is not None) / 1e6
    assert m.test_time_s == pytest.approx(want)
    assert m.duration_s == 12.0 and m.log.startswith("# nccl-tests version")
    # a smaller judged size, and one below every row
    assert measured(SINGLE, message_bytes=1 << 30).busbw_gbps == 469.67
    low = measured(SINGLE, message_bytes=1024)
    assert low.busbw_gbps is None and low.failure is None and "no result row" in low.message


def test_wrong_elements_are_reported_not_judged() -> None:
    bad = SINGLE.replace("481.39       0", "481.39       7")
    m = measured(bad, rc=1)
    assert m.wrong == 7 and m.failure is None and "7 wrong" in m.message


def test_a_failure_before_any_row_is_init_and_names_its_node() -> None:
    m = measured(FAILED, rc=1)
    assert m.failure == "init" and m.failed_node == "cnode2-016" and m.busbw_gbps is None
    assert m.message.startswith("cnode2-016: Test NCCL failure alltoall.cu:274")
    assert failed_node([" .. cnode2-016 pid 340134: Test failure common.cu:484"]) == "cnode2-016"
    assert failed_node(["cnode2-016 pid 340134: Test failure common.cu:484"]) == "cnode2-016"


def test_rows_then_a_failure_is_a_crash() -> None:
    cut = SINGLE[: SINGLE.index("# Out of bounds")]
    crashed = cut + "gpu-002: Test NCCL failure common.cu:1279 'unhandled cuda error'\n .. gpu-002 pid 7: Test failure common.cu:400\n"
    m = measured(crashed, rc=1)
    assert m.failure == "crash" and m.failed_node == "gpu-002" and "unhandled cuda error" in m.message
    # the failure lines on stderr (some launchers split the streams)
    m = measured(cut, rc=1, stderr="gpu-002: Test CUDA failure common.cu:1000 'an illegal memory access'\n")
    assert m.failure == "crash" and m.failed_node == "gpu-002"
    # rows and no failure line, exit 1 at once: a crash, with the end of the output
    m = measured(cut, rc=134, stderr="Aborted (core dumped)")
    assert m.failure == "crash" and "Aborted" in m.message


def test_timeouts_hang_unless_the_result_was_complete() -> None:
    head = SINGLE[: SINGLE.index("    33554432")]
    m = measured(head, rc=-15, timed_out=True, duration=300.2)
    assert m.failure == "hang" and m.message == "no result after 300 s" and m.log.startswith("# nccl")
    m = measured("", rc=-15, timed_out=True, duration=60)
    assert m.failure == "hang" and m.message == "no result after 60 s"
    # ended by the watchdog after its result (or timed out just after printing it): a result
    m = measured(SINGLE, rc=-15, timed_out=True)
    assert m.failure is None and m.busbw_gbps == 481.39


def test_launch_problems_and_unparsable_output() -> None:
    m = measured("", rc=2, stderr="slurmstepd: error: execve(): /opt/nccl-tests/build/all_reduce_perf: "
                                  "No such file or directory\nsrun: error: gpu-001: task 0: Exited with exit code 2\n")
    assert m.failure == "launch" and "execve()" in m.message
    m = measured("", rc=1, stderr="srun: error: Unable to allocate resources: Invalid node name specified\n")
    assert m.failure == "launch" and "Unable to allocate" in m.message
    m = measured("", rc=127, stderr="torch_allreduce: torch is not installed for /usr/bin/python3\n")
    assert m.failure == "launch"
    m = measured("segfault somewhere\nlots of noise\n", rc=139)
    assert m.failure == "crash" and "exit 139" in m.message and "noise" in m.message


def test_json_output_is_read_first() -> None:
    doc = {"config": {"nranks": 16, "iterations": 20, "warmup_iters": 5},
           "results": [{"size": GIB8, "count": GIB8 // 4, "type": "float", "redop": "sum", "root": -1,
                        "out_of_place": {"time": 60000.0, "alg_bw": 143.2, "bus_bw": 268.5, "nwrong": 0},
                        "in_place": {"time": 60010.0, "alg_bw": 143.1, "bus_bw": 268.3, "nwrong": 0}}],
           "average_bus_bandwidth": {"bandwidth": 268.4}}
    m = measured(SINGLE, json_text=json.dumps(doc))
    assert m.busbw_gbps == 268.5 and m.test_time_s == pytest.approx((60000.0 + 60010.0) * 25 / 1e6)
    # a JSON file that is not there or broken: the text decides
    assert measured(SINGLE, json_text="{broken").busbw_gbps == 481.39


def test_log_is_trimmed_head_and_tail() -> None:
    m = measured(SINGLE + "x" * 5000, log_limit=1000)
    assert len(m.log) < 1200 and m.log.startswith("# nccl-tests") and m.log.endswith("x")


def test_ib_sweep_results() -> None:
    ok = (FIXTURES / "perftest" / "ib_write_bw_h200_use_cuda_dmabuf_gpudirect_sweep.txt").read_text()
    m = measured_ib_sweep(SWEEP, {"mlx5_0": (0, ok, "", False),
                                  "mlx5_1": (1, "", " Couldn't connect to gpu-002:18516\n", False),
                                  "mlx5_2": (None, "", "cannot run ib_write_bw: No such file", False),
                                  "mlx5_3": (-1, "", "", True)}, 30.0, settings())
    assert m.failure is None and list(m.rails_gbps) == ["mlx5_0"] and m.rails_gbps["mlx5_0"] > 100
    assert "Couldn't connect" in m.rails_failed["mlx5_1"]
    assert m.rails_failed["mlx5_2"].startswith("cannot run")
    assert m.rails_failed["mlx5_3"] == "no result within 30 s"
    nothing = measured_ib_sweep(SWEEP, {"mlx5_0": (None, "", "cannot run x", False)}, 1.0, settings())
    assert nothing.failure == "launch"
    missing = measured_ib_sweep(SWEEP, {"mlx5_0": (127, "sh: 1: ib_write_bw: not found\n", "", False)}, 1.0,
                                settings())
    assert missing.failure == "launch" and "not found" in missing.message


def test_split_rails_output() -> None:
    out = "@@ck-rail mlx5_0:1\nline a\nline b\n@@ck-rail-end mlx5_0:1 0\n@@ck-rail mlx5_1:1\n@@ck-rail-end mlx5_1:1 1\n"
    assert split_rails_output(out) == {"mlx5_0:1": (0, "line a\nline b\n"), "mlx5_1:1": (1, "\n")}


# --------------------------------------------------------------------------- the ib_sweep script
FAKE_IB = """#!/bin/sh
# a fake ib_write_bw: a server prints nothing; a client prints a perftest table at 390.98 Gb/s
dev=?; host=
while [ $# -gt 0 ]; do
  case "$1" in -d) dev=$2; shift ;; -i|-p|-s) shift ;; -*) ;; *) host=$1 ;; esac
  shift
done
[ -z "$host" ] && exit 0
[ "$dev" = mlx5_9 ] && { echo " Couldn't connect to $host"; exit 1; }
cat <<EOF
---------------------------------------------------------------------------------------
                    RDMA_Write BW Test
 Dual-port       : OFF          Device         : $dev
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
 8388608    5000           391.02             390.98               0.005826
---------------------------------------------------------------------------------------
EOF
"""


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_ib_sweep_script_runs_servers_and_clients(tmp_path: Path) -> None:
    fake = _exe(tmp_path / "ib_write_bw", FAKE_IB)
    s = settings()
    s.ib_write_bw.binary = str(fake)
    argv = ib_sweep_argv(SWEEP, ["mlx5_0", "mlx5_9"], s, timeout=5)
    server = subprocess.run(argv, env={**os.environ, "SLURMD_NODENAME": "gpu-002"}, capture_output=True,
                            text=True, timeout=30)
    assert server.returncode == 0 and server.stdout == ""
    started = time.monotonic()
    client = subprocess.run(argv, env={**os.environ, "SLURMD_NODENAME": "gpu-001"}, capture_output=True,
                            text=True, timeout=60)
    got = split_rails_output(client.stdout)
    assert got["mlx5_0:1"][0] == 0 and "390.98" in got["mlx5_0:1"][1]
    # a refused connection is retried (up to 10 times, a second apart), then reported
    assert got["mlx5_9:1"][0] == 1 and "Couldn't connect" in got["mlx5_9:1"][1]
    assert time.monotonic() - started >= 9


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck; CI installs it)")
def test_ib_sweep_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "ib_sweep.sh"
    path.write_text("#!/bin/sh\n" + IB_SWEEP_SCRIPT)
    p = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


# --------------------------------------------------------------------------- batch script
def test_render_batch(tmp_path: Path) -> None:
    s = settings(env={"NCCL_SOCKET_IFNAME": "=eth0"}, ib_hca=lambda nodes: "=mlx5_0:1,mlx5_1:1")
    text = render_batch(AR, s, partition="gpu", time="00:10:00")
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --ntasks-per-node=8\n" in text
    assert "#SBATCH '--nodelist=gpu-[001-002]'\n" in text and "#SBATCH --partition=gpu\n" in text
    assert "export NCCL_ALGO=Ring\n" in text and "export NCCL_IB_HCA='=mlx5_0:1,mlx5_1:1'\n" in text
    assert "-b 8589934592 -e 8589934592" in text and "--mpi=pmix" in text and " -g 1" in text
    path = tmp_path / "nccl.sh"
    path.write_text(text)
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if shutil.which("shellcheck"):
        p = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout
    with pytest.raises(UsageError):
        render_batch(SWEEP, s)
    with pytest.raises(UsageError):
        render_batch(AR, LaunchSettings())


# --------------------------------------------------------------------------- mpirun over a transport
class FakeTransport:
    name = "fake"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.tasks: list[Task] = []
        self.lock = threading.Lock()

    def prepare(self, nodes: Any) -> None:
        pass

    def run(self, *a: Any, **kw: Any) -> CommandResult:  # pragma: no cover - not used
        raise NotImplementedError

    def run_tasks(self, tasks: Any, *, fanout: int = 64, on_done: Any = None, cancel: Any = None) -> dict[str, Any]:
        out = {}
        for t in tasks:
            with self.lock:
                self.tasks.append(t)
            out[t.key] = self.answer(t)
        return out

    def close(self) -> None:
        pass


def test_mpirun_launcher_runs_one_task_from_the_first_node() -> None:
    t = FakeTransport(lambda task: CommandResult(task.node.name, task.argv, 0, SINGLE, "", 31.0))
    s = settings(ib_hca=lambda nodes: "=mlx5_0:1")
    from clusterkit.models import Node

    lau = MpirunSshLauncher(t, s, nodes={"gpu-001": Node(name="gpu-001", host="10.0.0.1")})
    [m] = lau.run_round([AR], timeout=100)
    assert m.busbw_gbps == 481.39 and m.duration_s == 31.0
    [task] = t.tasks
    assert [n.name for n in task.nodes] == ["gpu-001", "gpu-002"] and task.node.host == "10.0.0.1"
    assert task.timeout == 100
    assert task.env == {"NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0", "NCCL_IB_HCA": "=mlx5_0:1"}
    assert task.argv[:7] == ["mpirun", "--host", "gpu-001:8,gpu-002:8", "-np", "16", "--bind-to", "none"]
    assert task.argv[7:17] == ["-x", "PATH", "-x", "LD_LIBRARY_PATH", "-x", "NCCL_ALGO", "-x", "NCCL_NVLS_ENABLE",
                               "-x", "NCCL_IB_HCA"]


def test_mpirun_launcher_timeouts_and_unreachable_nodes() -> None:
    head = SINGLE[: SINGLE.index("    33554432")]
    t = FakeTransport(lambda task: CommandTimeout("did not finish", node="gpu-001", stdout=head))
    [m] = MpirunSshLauncher(t, settings()).run_round([AR], timeout=5)
    assert m.failure == "hang" and "Rank  0" in m.log
    t = FakeTransport(lambda task: ConnectError("cannot connect: Connection refused", node="gpu-001"))
    [m] = MpirunSshLauncher(t, settings()).run_round([AR], timeout=5)
    assert m.failure == "launch" and "Connection refused" in m.message


def test_mpirun_launcher_ib_sweep_servers_then_clients() -> None:
    def answer(task: Task) -> Any:
        if task.argv[0] == "timeout":
            return CommandResult(task.node.name, task.argv, 0, "", "", 1.0)
        return CommandResult(task.node.name, task.argv, 0, "", " Couldn't connect to gpu-002:18515\n", 1.0)

    t = FakeTransport(answer)
    [m] = MpirunSshLauncher(t, settings(rails=lambda node: ["mlx5_0"])).run_round([SWEEP], timeout=30)
    kinds = [(task.node.name, task.argv[0]) for task in t.tasks]
    assert kinds == [("gpu-002", "timeout"), ("gpu-001", "/bin/sh")]
    client = t.tasks[1].argv
    assert client[2] == launch.IB_CLIENT_RETRY and client[4] == "ib_write_bw" and client[-1] == "gpu-002"
    assert "Couldn't connect" in m.rails_failed["mlx5_0"]


def test_the_ib_client_retries_until_its_server_listens(tmp_path: Path) -> None:
    """The retry wrapper: a refused connection is tried again (bounded), anything else is not."""
    flag = tmp_path / "n"
    fake = tmp_path / "client"
    fake.write_text("#!/bin/sh\nn=$(cat %s 2>/dev/null || echo 0); echo $((n + 1)) > %s\n"
                    "if [ $n -lt 2 ]; then echo \" Couldn't connect to x:1\"; exit 1; fi\necho ok\n" % (flag, flag))
    fake.chmod(0o755)
    p = subprocess.run(["/bin/sh", "-c", launch.IB_CLIENT_RETRY, "c", str(fake)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == "ok\n" and flag.read_text().strip() == "3"
    fake.write_text("#!/bin/sh\necho ' IB device mlx5_9 not found'\nexit 1\n")
    p = subprocess.run(["/bin/sh", "-c", launch.IB_CLIENT_RETRY, "c", str(fake)], capture_output=True, text=True)
    assert p.returncode == 1 and "not found" in p.stdout


# --------------------------------------------------------------------------- rounds
class Scripted(launch._BaseLauncher):
    name = "scripted"

    def run_one(self, test: NcclTest, timeout: float) -> Measured:
        if test.key == "boom":
            raise RuntimeError("a bug")
        time.sleep(0.2 if test.key == "slow" else 0.0)
        return Measured(test=test, busbw_gbps=1.0)


def test_a_round_keeps_order_calls_on_done_and_never_raises() -> None:
    tests = [NcclTest("slow", "single", ("a",)), NcclTest("boom", "single", ("b",)), NcclTest("c", "single", ("c",))]
    seen: list[str] = []
    out = Scripted(settings()).run_round(tests, timeout=5, on_done=lambda m: seen.append(m.test.key))
    assert [m.test.key for m in out] == ["slow", "boom", "c"]
    assert out[1].failure == "launch" and "RuntimeError: a bug" in out[1].message
    assert sorted(seen) == ["boom", "c", "slow"] and seen[-1] == "slow"
    lau = Scripted(settings())
    lau.close()
    assert lau.run_round(tests[:1], timeout=5)[0].failure == "launch"


def test_make_launcher(tmp_path: Path) -> None:
    assert make_launcher("slurm", settings=settings(), partition="gpu").name == "slurm"
    assert make_launcher("mpirun", transport=FakeTransport(None)).name == "mpirun"
    assert make_launcher("sim", spec="builtin", bin_dir=str(tmp_path)).name == "sim"
    with pytest.raises(UsageError):
        make_launcher("sim")
    with pytest.raises(UsageError):
        make_launcher("mpirun")
    with pytest.raises(UsageError):
        make_launcher("pdsh")


# --------------------------------------------------------------------------- SimLauncher, fake binaries
FAKE_NCCL = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
if "-h" in args:
    print("USAGE: all_reduce_perf [-b,--minbytes <min size in bytes>] {json_help}")
    sys.exit(0)
env = {{k: os.environ.get(k) for k in ("CLUSTERKIT_NODE", "CLUSTERKIT_SIM_NODES", "CLUSTERKIT_SIM",
                                      "NCCL_ALGO", "NCCL_NVLS_ENABLE", "NCCL_IB_HCA")}}
with open(os.path.join(os.path.dirname(sys.argv[0]), "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"argv": args, "env": env}}) + "\\n")
node = os.environ.get("CLUSTERKIT_NODE")
if "-J" in args:
    with open(args[args.index("-J") + 1], "w") as f:
        json.dump({{"config": {{"nranks": 16}}, "average_bus_bandwidth": {{"bandwidth": 1.0}},
                   "results": [{{"size": {size}, "count": 1, "type": "float", "redop": "sum", "root": -1,
                                "out_of_place": {{"time": 1.0, "alg_bw": 2.0, "bus_bw": 123.4, "nwrong": 0}}}}]}}, f)
sys.stdout.write(open({fixture!r}).read())
sys.stdout.flush()
if node == "gpu-hang":
    time.sleep(600)
"""


def fake_dir(tmp_path: Path, json_help: str = "") -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    _exe(d / "all_reduce_perf", FAKE_NCCL.format(python=sys.executable, json_help=json_help, size=GIB8,
                                                 fixture=str(FIXTURES / "nccl-tests" /
                                                             "all_reduce_perf_h100x8_single_node_v2.17.8.txt")))
    _exe(d / "ib_write_bw", FAKE_IB)
    return d


def calls(d: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (d / "calls.jsonl").read_text().splitlines()]


def test_sim_launcher_runs_each_test_as_its_first_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCCL_ALGO", "Tree")  # inherited here; an nvls test must not see it
    d = fake_dir(tmp_path)
    lau = SimLauncher("/x/fleet.yaml", settings(ib_hca=lambda nodes: "=mlx5_0:1", gpus_per_node=4,
                                                rails=lambda node: ["mlx5_0", "mlx5_1"]), bin_dir=str(d))
    try:
        out = lau.run_round([AR, NVLS, SWEEP], timeout=30)
    finally:
        lau.close()
    assert [m.busbw_gbps for m in out[:2]] == [481.39, 481.39] and out[2].rails_gbps == {"mlx5_0": 390.98,
                                                                                           "mlx5_1": 390.98}
    by_node = {c["env"]["CLUSTERKIT_NODE"]: c for c in calls(d)}
    ar, nv = by_node["gpu-001"], by_node["gpu-003"]
    assert ar["env"] == {"CLUSTERKIT_NODE": "gpu-001", "CLUSTERKIT_SIM_NODES": "gpu-[001-002]",
                         "CLUSTERKIT_SIM": "/x/fleet.yaml", "NCCL_ALGO": "Ring", "NCCL_NVLS_ENABLE": "0",
                         "NCCL_IB_HCA": "=mlx5_0:1"}
    assert ar["argv"][ar["argv"].index("-g") + 1] == "1"
    assert nv["argv"][nv["argv"].index("-g") + 1] == "4" and nv["env"]["NCCL_ALGO"] is None
    assert "-J" not in ar["argv"]  # this nccl-tests does not list -J


def test_sim_launcher_uses_json_when_listed_and_ends_a_test_hung_after_its_result(tmp_path: Path) -> None:
    d = fake_dir(tmp_path, json_help="[-J,--output_file <file> write output to filepath]")
    lau = SimLauncher("builtin", settings(grace_s=0.3), bin_dir=str(d))
    hung = NcclTest("h", "allreduce", ("gpu-hang", "gpu-002"))
    started = time.monotonic()
    try:
        out = lau.run_round([AR, hung], timeout=60)
    finally:
        lau.close()
    assert time.monotonic() - started < 10
    assert [m.failure for m in out] == [None, None]
    assert [m.busbw_gbps for m in out] == [123.4, 123.4]  # from the -J file
    assert all("-J" in c["argv"] for c in calls(d))
    assert lau._tmp is not None and not Path(lau._tmp).exists()  # -J files removed with their dir


def test_sim_launcher_missing_binary_is_launch(tmp_path: Path) -> None:
    lau = SimLauncher("builtin", settings(output_format="text"), bin_dir=str(tmp_path))
    [m, s] = lau.run_round([AR, SWEEP], timeout=5)
    assert m.failure == "launch" and "cannot run" in m.message
    assert s.failure == "launch" and "no rail list" in s.message


# --------------------------------------------------------------------------- SimLauncher, the simulator
def _stand_ins_or_skip() -> None:
    try:
        from clusterkit.sim.fabric import stand_in_dir  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the simulator's fabric stand-ins are not there yet ({e})")


def test_sim_launcher_on_a_simulated_fleet(tmp_path: Path) -> None:
    _stand_ins_or_skip()
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("name: launch-unit\nprofile: h100-sxm\nnodes: gpu-[001-006]\nfaults:\n"
                     "  - {node: gpu-003, kind: nccl_init_fail}\n  - {node: gpu-004, kind: nccl_hang}\n"
                     "  - {node: gpu-005, kind: nccl_slow, value: 2}\n")
    lau = SimLauncher(str(fleet), settings(grace_s=0.5, rails=lambda node: ["mlx5_0", "mlx5_1"]))
    tests = [AR, NcclTest("i", "allreduce", ("gpu-001", "gpu-003")), NcclTest("h", "allreduce", ("gpu-002", "gpu-004")),
             NcclTest("s", "single", ("gpu-005",), "nvls"), NcclTest("n", "single", ("gpu-006",), "nvls"),
             NcclTest("r", "single", ("gpu-006",), "ring"), SWEEP]
    started = time.monotonic()
    try:
        out = {m.test.key: m for m in lau.run_round(tests, timeout=4)}
    finally:
        lau.close()
    assert time.monotonic() - started < 20
    ar = out[AR.key]
    assert ar.failure is None and ar.busbw_gbps is not None and 300 < ar.busbw_gbps <= 370
    assert ar.test_time_s is not None and ar.test_time_s > 0
    assert out["i"].failure == "init" and out["i"].failed_node == "gpu-003"
    assert out["h"].failure == "hang" and out["h"].message == "no result after 4 s"
    nv, slow, ring = out["n"].busbw_gbps, out["s"].busbw_gbps, out["r"].busbw_gbps
    assert nv is not None and slow is not None and ring is not None
    assert nv > 450 and slow == pytest.approx(nv / 2, rel=0.02) and 350 < ring < 380
    assert set(out[SWEEP.key].rails_gbps) == {"mlx5_0", "mlx5_1"} and out[SWEEP.key].rails_gbps["mlx5_0"] > 350


# --------------------------------------------------------------------------- torch fallback: pure parts
def test_torch_allreduce_sizes_and_bandwidths() -> None:
    assert torch_allreduce.parse_size("8G") == GIB8 and torch_allreduce.parse_size("32M") == 32 << 20
    assert torch_allreduce.parse_size("512") == 512 and torch_allreduce.parse_size("1k") == 1024
    assert torch_allreduce.parse_size("8GB") == GIB8
    for bad in ("", "8X", "-1", "1.5G"):
        with pytest.raises(ValueError):
            torch_allreduce.parse_size(bad)
    assert torch_allreduce.sizes(1 << 20, 8 << 20, 2) == [1 << 20, 2 << 20, 4 << 20, 8 << 20]
    assert torch_allreduce.sizes(GIB8, GIB8) == [GIB8]
    assert torch_allreduce.sizes(100, 300, 2, step_bytes=100) == [100, 200, 300]
    algbw, busbw = torch_allreduce.bandwidths(GIB8, 0.03122680, 8)
    assert algbw == pytest.approx(275.08, abs=0.01) and busbw == pytest.approx(481.39, abs=0.01)
    assert torch_allreduce.bandwidths(GIB8, 0.1, 1) == (pytest.approx(85.899, abs=0.001), 0.0)
    assert torch_allreduce.bandwidths(1000, 1e-6, 2)[1] == pytest.approx(1.0)


def test_torch_allreduce_output_reads_as_nccl_tests() -> None:
    devices = [{"rank": r, "pid": 100 + r, "host": f"gpu-00{1 + r // 8}", "device": r % 8,
                "busid": "0000:18:00", "name": "NVIDIA H100 80GB HBM3"} for r in range(16)]
    text = torch_allreduce.header(min_bytes=GIB8, max_bytes=GIB8, factor=2, iters=20, warmup=5, check=1,
                                  devices=devices, version="(torch 2.5.1, NCCL 2.21.5)")
    algbw, busbw = torch_allreduce.bandwidths(GIB8, 0.06, 16)
    text += torch_allreduce.row(GIB8, GIB8 // 4, "float", 60000.0, algbw, busbw, 0) + "\n"
    text += torch_allreduce.footer([busbw], 0)
    [run] = parse_nccl_tests(text).runs
    assert run.collective == "all_reduce" and run.nranks == 16 and run.complete and run.ok
    assert run.rows[0].out_of_place is not None and run.rows[0].out_of_place.busbw_gbps is None
    assert run.rows[0].in_place is not None and run.rows[0].in_place.busbw_gbps == pytest.approx(busbw, abs=0.01)
    assert run.config is not None and run.config.iters == 20 and run.config.warmup_iters == 5
    m = measured_from_output(AR, 0, text, "", False, 2.0, settings())
    assert m.failure is None and m.busbw_gbps == pytest.approx(268.44, abs=0.01) and m.wrong == 0
    # one rank: busbw 0, as nccl-tests prints it; algbw measured
    one = torch_allreduce.row(GIB8, GIB8 // 4, "float", 1e5, *torch_allreduce.bandwidths(GIB8, 0.1, 1), None)
    assert one.split()[-4:] == ["100000", "85.90", "0.00", "N/A"]


def test_torch_allreduce_ranks_from_torchrun_srun_or_alone() -> None:
    r = torch_allreduce.ranks_from_env({"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3",
                                        "MASTER_ADDR": "gpu-001", "MASTER_PORT": "29400"})
    assert (r.rank, r.world_size, r.local_rank, r.master_addr, r.master_port) == (3, 16, 3, "gpu-001", 29400)
    r = torch_allreduce.ranks_from_env({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                                        "SLURM_STEP_NODELIST": "gpu-[007-008]", "SLURM_JOB_ID": "77",
                                        "SLURM_STEP_ID": "3"})
    assert (r.rank, r.world_size, r.local_rank, r.master_addr) == (9, 16, 1, "gpu-007")
    assert 20000 <= r.master_port < 40000
    r = torch_allreduce.ranks_from_env({})
    assert (r.rank, r.world_size, r.local_rank, r.master_addr, r.master_port) == (0, 1, 0, "127.0.0.1", 29500)


def test_torch_allreduce_without_torch_is_a_launch_problem() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    p = subprocess.run([sys.executable, "-m", "clusterkit.nccl.torch_allreduce", "-b", "8G", "-e", "8G"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 127 and "torch is not installed" in p.stderr and p.stdout == ""
    m = measured_from_output(AR, p.returncode, p.stdout, p.stderr, False, 1.0, settings())
    assert m.failure == "launch"
    p = subprocess.run([sys.executable, "-m", "clusterkit.nccl.torch_allreduce", "-b", "8X"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2


# --------------------------------------------------------------------------- torch fallback: a real GPU
@pytest.mark.gpu
def test_torch_allreduce_on_a_real_gpu() -> None:
    """Opt-in (pytest -m gpu): one process on GPU 0 (busbw 0 by definition, algbw measured), and
    two processes under torchrun when there are two GPUs (busbw = algbw)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    p = subprocess.run([sys.executable, "-m", "clusterkit.nccl.torch_allreduce", "-b", "64M", "-e", "256M",
                        "-n", "10", "-w", "3"], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    [run] = parse_nccl_tests(p.stdout).runs
    assert run.ok and run.nranks == 1 and [r.size_bytes for r in run.rows] == [64 << 20, 128 << 20, 256 << 20]
    for r in run.rows:
        assert r.in_place is not None and r.in_place.algbw_gbps and r.in_place.algbw_gbps > 1
        assert r.in_place.busbw_gbps == 0.0
    if torch.cuda.device_count() >= 2 and shutil.which("torchrun"):
        p = subprocess.run(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "clusterkit.nccl.torch_allreduce",
                            "-b", "256M", "-e", "256M", "-n", "10", "-w", "3"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        [run] = parse_nccl_tests(p.stdout).runs
        half = run.rows[0].in_place
        assert run.nranks == 2 and half is not None and half.busbw_gbps == pytest.approx(half.algbw_gbps, rel=0.02)
