"""deploy serve's pieces without Slurm: srun's task reports, the readiness deadline, the HTTP
probe, the plan (sizes, rails, interfaces, refusals) and the watch loop against a scripted backend."""

from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from clusterkit.deploy import serve as srv
from clusterkit.errors import UsageError
from clusterkit.ledger import Verdict
from clusterkit.slurm.backend import JobInfo, SlurmNode

NOW = dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- srun's reports
OUT = """clusterkit-serve: job 12 on gpu-[001-004]: http port 8012
srun: error: gpu-003: task 2: Killed
srun: launch/slurm: _step_signal: Terminating StepId=12.0
slurmstepd-gpu-001: error: *** STEP 12.0 ON gpu-001 CANCELLED AT 2025-05-01T10:00:00 ***
srun: error: gpu-004: task 3: Terminated
srun: error: gpu-[001-002]: tasks 0-1: Terminated
srun: Force Terminated StepId=12.0
"""


def test_srun_task_reports_name_the_rank_that_died_first():
    ends = srv.srun_task_ends(OUT)
    assert [(e.node, e.rank, e.what) for e in ends] == [("gpu-003", 2, "Killed"), ("gpu-004", 3, "Terminated"),
                                                         ("gpu-[001-002]", 0, "Terminated"),
                                                         ("gpu-[001-002]", 1, "Terminated")]
    c = srv.culprit(ends)
    assert c is not None and (c.node, c.rank) == ("gpu-003", 2)
    only_terminated = srv.srun_task_ends("srun: error: gpu-001: task 0: Terminated\n")
    assert srv.culprit(only_terminated) == only_terminated[0]
    assert srv.culprit([]) is None


# --------------------------------------------------------------------------- deadline, names
def test_ready_deadline():
    assert srv.ready_deadline(None, None, 42) == (42.0, "--ready-timeout")
    t, why = srv.ready_deadline(140 * 10**9, 2.0, None)  # 70 s to load
    assert t == 300 + 140 and "140 GB of weights at 2 GB/s" in why
    assert srv.ready_deadline(10**9, 10.0, None)[0] == pytest.approx(300.2)
    assert srv.ready_deadline(None, 2.0, None) == (1800.0, "default: the weights' size unknown")
    assert "read rate" in srv.ready_deadline(10**9, None, None)[1]


def test_names_and_local_weights(tmp_path):
    assert srv.default_name("meta-llama/Llama-3.1-70B-Instruct") == "llama-3.1-70b-instruct"
    assert srv.default_name("/models/My Model/") == "my-model"
    with pytest.raises(UsageError):
        srv.check_name("Bad Name")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 20)
    (tmp_path / "config.json").write_bytes(b"{}" * 50)
    assert srv.weights_bytes_of(str(tmp_path)) == 120
    assert srv.weights_bytes_of("org/model") is None


# --------------------------------------------------------------------------- HTTP
@pytest.fixture()
def http() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"code": 200}

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(state["code"] if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv_ = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv_.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["port"] = srv_.server_address[1]
    yield state
    srv_.shutdown()
    srv_.server_close()


def test_probe(http):
    url = f"http://127.0.0.1:{http['port']}"
    assert srv.probe(url + "/health") == ("ready", "HTTP 200")
    http["code"] = 503
    assert srv.probe(url + "/health") == ("unhealthy", "HTTP 503")
    assert srv.probe(url + "/v1/models")[0] == "unhealthy"
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    assert srv.probe(f"http://127.0.0.1:{free}/health") == ("starting", "connection refused")


# --------------------------------------------------------------------------- plan
def verdict(status: str = "pass", rails: Optional[list[str]] = None, gbps: Optional[float] = None) -> Verdict:
    return Verdict(status=status, time=(NOW - dt.timedelta(hours=1)).isoformat(), run_id="r" * 32, source="s",
                   rails=rails, weights_gbps=gbps)


def slurm(*names: str, drained: tuple[str, ...] = ()) -> list[SlurmNode]:
    return [SlurmNode(name=n, state="idle", flags=("DRAIN",) if n in drained else (), partitions=("gpu",))
            for n in names]


NODES4 = ["gpu-001", "gpu-002", "gpu-003", "gpu-004"]


def plan(tmp_path: Path, verdicts: dict[str, Verdict], **kw: Any) -> srv.ServePlan:
    req = srv.ServeRequest(**{"engine": "vllm", "model": "org/m", "tp": 16, "partition": "gpu",
                              "log_dir": str(tmp_path / "logs"), **kw})
    return srv.make_plan(req, verdicts=verdicts, slurm_nodes=slurm(*NODES4, drained=("gpu-002",)),
                         candidates=NODES4, now=NOW)


def test_plan_uses_only_gated_nodes_with_their_common_rails(tmp_path):
    v = {"gpu-001": verdict(rails=["mlx5_0:1", "mlx5_1:1"], gbps=4.0), "gpu-002": verdict(),
         "gpu-003": verdict("fail"), "gpu-004": verdict(rails=["mlx5_1:1", "mlx5_0:1", "mlx5_2:1"], gbps=2.0)}
    p = plan(tmp_path, v, weights_bytes=200 * 10**9, socket_ifnames={"gpu-001": "ib0", "gpu-004": "ib0"})
    assert p.groups == [["gpu-001", "gpu-004"]] and p.nodes_per_replica == 2
    (params,) = p.params
    assert params.ib_hca == "=mlx5_0:1,mlx5_1:1" and params.socket_ifname == "ib0" and not params.socket_ifnames
    assert p.deadline_s == 300 + 2 * 100 and "2 GB/s" in p.deadline_why  # the slowest node's rate
    text = "\n".join(p.lines())
    assert "gpu-002: refused: drained in Slurm" in text and "gpu-003: refused: last validation fail" in text
    assert p.to_dict()["replica_nodes"] == [["gpu-001", "gpu-004"]]


def test_plan_per_node_interfaces_and_notes(tmp_path):
    v = {n: verdict(rails=["mlx5_0:1"] if n == "gpu-001" else ["mlx5_1:1"]) for n in NODES4}
    p = plan(tmp_path, v, socket_ifnames={"gpu-001": "ib0", "gpu-003": "ib1"})
    (params,) = p.params
    assert params.socket_ifname is None and params.socket_ifnames == {"gpu-001": "ib0", "gpu-003": "ib1"}
    assert params.ib_hca is None and any("NCCL_IB_HCA left unset" in n for n in p.notes)


def test_plan_sizes(tmp_path):
    v = {n: verdict() for n in NODES4}
    p = plan(tmp_path, v, tp=4, replicas=3)
    assert p.nodes_per_replica == 1 and p.groups == [["gpu-001"], ["gpu-003"], ["gpu-004"]]
    assert p.params[0].gpus_per_task == 4
    with pytest.raises(UsageError, match="not a whole number"):
        plan(tmp_path, v, tp=12)
    with pytest.raises(srv.NotEnoughNodes, match=r"4 node\(s\) needed \(2 replica\(s\) x 2\), 3 may serve; "
                                                 r"refused: gpu-002: refused: drained"):
        plan(tmp_path, v, replicas=2)
    with pytest.raises(UsageError, match="vLLM only"):
        plan(tmp_path, v, engine="sglang", mode="ray")


# --------------------------------------------------------------------------- watch
class Backend:
    """A scripted Slurm: each jobs() call takes the next (job state, step running) pair."""

    def __init__(self, script: list[tuple[str, bool]]) -> None:
        self.script = script
        self.i = -1
        self.cancelled: list[str] = []

    def _now(self) -> tuple[str, bool]:
        return self.script[min(self.i, len(self.script) - 1)]

    def jobs(self, ids: list[str]) -> dict[str, JobInfo]:
        if self.cancelled:
            return {i: JobInfo(job_id=i, state="CANCELLED") for i in ids}
        self.i += 1
        state, _ = self._now()
        return {i: JobInfo(job_id=i, state=state, nodes="gpu-[001-002]", reason="Resources") for i in ids}

    def run(self, argv: list[str], check: bool = True, **kw: Any) -> tuple[int, str, str]:
        if argv[0] == "squeue":
            return 0, ("12.0\n12.batch\n" if self._now()[1] else "12.batch\n"), ""
        if argv[0] == "scontrol":
            return 0, "NodeName=gpu-001 Arch=x86_64 NodeAddr=127.0.0.1 State=ALLOCATED\n", ""
        raise AssertionError(argv)

    def cancel(self, ids: list[str]) -> None:
        self.cancelled += ids

    def wait(self, ids: list[str], *, timeout: float, poll: float = 1.0) -> dict[str, JobInfo]:
        return {i: JobInfo(job_id=i, state="CANCELLED") for i in ids}


def deployment(tmp_path: Path, port: int) -> srv.Deployment:
    return srv.Deployment(name="t", engine="vllm", model="m", tp=16, pp=1, nodes_per_replica=2, gpus_per_node=8,
                          log_dir=str(tmp_path), health_path="/health", created="2025-05-01T10:00:00+00:00",
                          replicas=[srv.Replica(index=0, job_id="12", nodes=["gpu-001", "gpu-002"], http_port=port)])


def run_watch(tmp_path: Path, backend: Backend, port: int, **kw: Any) -> tuple[srv.Deployment, list[str]]:
    said: list[str] = []
    t = [0.0]

    def clock() -> float:
        return t[0]

    def sleep(s: float) -> None:
        t[0] += s

    dep = srv.watch(deployment(tmp_path, port), backend, **{"deadline_s": 60, "alloc_timeout": 60, **kw},  # type: ignore[arg-type]
                    echo=said.append, state_dir=str(tmp_path / "state"), poll=1.0, clock=clock, sleep=sleep)
    return dep, said


def test_ready_needs_rank_0_healthy_and_the_step_running(tmp_path, http):
    b = Backend([("PENDING", False), ("RUNNING", False), ("RUNNING", True)])
    dep, said = run_watch(tmp_path, b, http["port"])
    assert dep.state == "ready" and dep.replicas[0].endpoint == f"http://127.0.0.1:{http['port']}"
    assert dep.replicas[0].ready_s == 1.0 and b.cancelled == []
    assert said[-1].startswith("replica 0: ready in 1 s")
    assert srv.load_deployments(str(tmp_path / "state"))["t"].state == "ready"


def test_a_step_that_ends_is_a_dead_rank_and_everything_is_cancelled(tmp_path, http):
    (tmp_path / "serve-12.out").write_text(OUT)
    (tmp_path / "serve-12.rank2.log").write_text("loading\nRuntimeError: CUDA error: out of memory\n")
    http["code"] = 503
    b = Backend([("RUNNING", True), ("RUNNING", True), ("RUNNING", False)])
    with pytest.raises(srv.ServeFailed, match=r"replica 0 \(job 12\): rank 2 on gpu-003 died: killed; "
                                              r"job\(s\) 12 cancelled"):
        run_watch(tmp_path, b, http["port"])
    assert b.cancelled == ["12"]
    dep = srv.load_deployments(str(tmp_path / "state"))["t"]
    assert dep.state == "failed" and dep.replicas[0].state == "failed"


def test_failure_text_carries_the_log_tail(tmp_path, http):
    (tmp_path / "serve-12.out").write_text(OUT)
    (tmp_path / "serve-12.rank2.log").write_text("loading\nRuntimeError: CUDA error: out of memory\n")
    text = srv.diagnose(deployment(tmp_path, 1), deployment(tmp_path, 1).replicas[0], None)
    assert text.splitlines()[1] == f"  last lines of {tmp_path}/serve-12.rank2.log:"
    assert text.splitlines()[-1] == "    RuntimeError: CUDA error: out of memory"


def test_not_ready_by_the_deadline(tmp_path, http):
    http["code"] = 503
    b = Backend([("RUNNING", True)])
    with pytest.raises(srv.ServeFailed, match=r"did not answer .* within 5 s \(last: HTTP 503\); its ranks' "
                                              r"processes were running; job\(s\) 12 cancelled"):
        run_watch(tmp_path, b, http["port"], deadline_s=5)


def test_pending_past_the_allocation_timeout(tmp_path, http):
    b = Backend([("PENDING", False)])
    with pytest.raises(srv.ServeFailed, match=r"still pending after 3 s \(Slurm's reason: Resources\)"):
        run_watch(tmp_path, b, http["port"], alloc_timeout=3)
    assert b.cancelled == ["12"]


def test_the_first_death_is_the_earliest_engine_exit_not_srun_order(tmp_path):
    ends = srv.srun_task_ends("srun: error: gpu-001: task 0: Exited with exit code 3\n"
                              "srun: error: gpu-002: task 1: Exited with exit code 3\n")
    (tmp_path / "serve-9.rank0.log").write_text(
        "clusterkit-serve: rank 0 on gpu-001: the engine exited with code 3 at 1700000002.5\n")
    (tmp_path / "serve-9.rank1.log").write_text(
        "x\nclusterkit-serve: rank 1 on gpu-002: the engine exited with code 3 at 1700000001,25\n")
    exits = srv.rank_exits(str(tmp_path), "9", 2)
    assert exits == {0: ("gpu-001", 3, 1700000002.5), 1: ("gpu-002", 3, 1700000001.25)}
    first = srv.first_death(ends, exits)
    assert first is not None and (first.rank, first.node, first.what) == (1, "gpu-002", "Exited with exit code 3")
    # a task killed outright (its wrapper wrote nothing) comes first
    killed = srv.srun_task_ends("srun: error: gpu-001: task 0: Exited with exit code 3\n"
                                "srun: error: gpu-003: task 2: Killed\n")
    first = srv.first_death(killed, exits)
    assert first is not None and (first.rank, first.what) == (2, "Killed")
    assert srv.first_death([], {}) is None


def test_small_replicas_spread_then_share_nodes(tmp_path):
    v = {n: verdict() for n in NODES4}
    p = plan(tmp_path, v, tp=4, replicas=5)
    assert p.groups == [["gpu-001"], ["gpu-003"], ["gpu-004"], ["gpu-001"], ["gpu-003"]]
    assert not p.params[0].exclusive and p.params[0].gpus_per_task == 4
    with pytest.raises(srv.NotEnoughNodes, match=r"4 node\(s\) needed \(7 replica\(s\), 2 per node at most\)"):
        plan(tmp_path, v, tp=4, replicas=7)
    assert plan(tmp_path, v, tp=8).params[0].exclusive


def test_the_planner_chooses_the_layout_when_asked(tmp_path):
    pytest.importorskip("clusterkit.deploy.plan")
    v = {n: verdict() for n in NODES4}
    p = plan(tmp_path, v, tp=None, model="llama-3.1-70b", gpu_mem_gib=80.0)
    # llama-3.1-70b in bf16 on 80 GiB GPUs: TP=4, two replicas per node on the 3 healthy nodes
    assert (p.tp, p.pp, p.replicas) == (4, 1, 6)
    assert p.groups == [["gpu-001"], ["gpu-003"], ["gpu-004"]] * 2
    assert p.notes == ["layout from the planner (--gpu-mem-gib 80, 3 healthy node(s)): tp 4 x pp 1, 6 replica(s)"]
    assert "read rate" in p.deadline_why  # the planner knew the weights' size, not the nodes' read rate
    v = {n: verdict(gbps=2.0) for n in NODES4}
    p = plan(tmp_path, v, tp=None, model="llama-3.1-70b", gpu_mem_gib=80.0, replicas=1)
    assert p.replicas == 1 and "GB of weights at 2 GB/s" in p.deadline_why
    p = plan(tmp_path, v, tp=None, model="org/m")
    assert (p.tp, p.pp, p.replicas) == (8, 1, 1) and any("--gpu-mem-gib lets the planner" in n for n in p.notes)
    with pytest.raises(UsageError):
        plan(tmp_path, v, tp=None, model="org/not-shipped", gpu_mem_gib=80.0)


# --------------------------------------------------------------------------- the command, dry run
def test_dry_run_with_nodes_needs_no_slurm(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from clusterkit import ledger
    from clusterkit.cli import cli
    from clusterkit.models import FleetReport, NodeReport, NodeStatus

    ledger.record(FleetReport(source="nodes:gpu-[001-003]", nodes=[
        NodeReport(node="gpu-001", status=NodeStatus.PASS), NodeReport(node="gpu-002", status=NodeStatus.FAIL),
        NodeReport(node="gpu-003", status=NodeStatus.PASS)]), str(tmp_path / "st"))
    inv = tmp_path / "inv.yaml"
    inv.write_text("defaults: {labels: {socket_ifname: ens1f0}}\nnodes:\n  - name: gpu-[001-003]\n")
    env = {"CLUSTERKIT_STATE_DIR": str(tmp_path / "st"), "SLURM_CONF": str(tmp_path / "no-slurm.conf"),
           "PATH": str(tmp_path)}  # no Slurm command can even be found
    args = ["deploy", "serve", "--engine", "sglang", "--model", "org/m", "--tp", "16", "--nodes", "gpu-[001-003]",
            "--inventory", str(inv), "--log-dir", "/shared/logs", "--dry-run"]
    r = CliRunner().invoke(cli, args, env=env)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "#     gpu-002: refused: last validation fail" in out
    assert "#     Slurm's node states were not checked (dry run with --nodes)" in out
    assert "# dry run: nothing submitted" in out
    assert "#SBATCH --nodelist='gpu-[001,003]'" in out
    assert "export GLOO_SOCKET_IFNAME=ens1f0 NCCL_SOCKET_IFNAME=ens1f0" in out
    assert "python -m sglang.launch_server --model-path org/m" in out
    r = CliRunner().invoke(cli, [*args, "--json"], env=env)
    doc = json.loads(r.output)
    assert doc["dry_run"] and doc["plan"]["replica_nodes"] == [["gpu-001", "gpu-003"]]
    assert doc["scripts"][0].startswith("#!/bin/bash\n")
    assert not (tmp_path / "st" / "deployments.json").exists()


def test_a_ready_replica_that_dies_while_another_starts_fails_the_deployment(tmp_path, http):
    (tmp_path / "serve-12.out").write_text(OUT)

    class Two(Backend):
        def jobs(self, ids: list[str]) -> dict[str, JobInfo]:
            self.i += 1
            if self.cancelled:
                return {i: JobInfo(job_id=i, state="CANCELLED") for i in ids}
            return {i: JobInfo(job_id=i, state="RUNNING" if i == "12" else "PENDING", nodes="gpu-[001-002]")
                    for i in ids}

        def run(self, argv: list[str], check: bool = True, **kw: Any) -> tuple[int, str, str]:
            if argv[0] == "squeue":
                return 0, ("12.0\n" if self.i < 3 else "12.batch\n"), ""
            return super().run(argv, check, **kw)

    dep = deployment(tmp_path, http["port"])
    dep.replicas.append(srv.Replica(index=1, job_id="13", nodes=["gpu-003", "gpu-004"], http_port=http["port"]))
    b = Two([])
    said: list[str] = []
    t = [0.0]
    with pytest.raises(srv.ServeFailed, match=r"replica 0 \(job 12\): rank 2 on gpu-003 died"):
        srv.watch(dep, b, deadline_s=60, alloc_timeout=60, echo=said.append, state_dir=str(tmp_path / "st"),
                  clock=lambda: t[0], sleep=lambda x: t.__setitem__(0, t[0] + x))
    assert any(x.startswith("replica 0: ready in") for x in said) and b.cancelled == ["12", "13"]
