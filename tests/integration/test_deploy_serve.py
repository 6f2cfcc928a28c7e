"""``clusterkit deploy serve / status / stop`` against a real Slurm 22.05 cluster (4 nodes on
loopback), with a stand-in engine (tests/infra/fake_engine.py) in place of vLLM, Ray and SGLang.

The stand-in parses the engines' flags, checks across tasks that the ranks are 0..N-1, agree on
the master and sizes and match each task's $SLURM_PROCID, and serves /health, /health_generate
and /v1/models from rank 0 on 127.0.0.1. Every job runs through real sbatch/srun; the health gate
reads a real ledger and real Slurm drain states.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clusterkit import ledger
from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from tests.infra.slurmcluster import worker_index_from_env

FAKE = Path(__file__).resolve().parent.parent / "infra" / "fake_engine.py"
WORKER = worker_index_from_env()
HTTP_BASE = 20000 + 100 * WORKER
MASTER_BASE = 21000 + 100 * WORKER
RAY_BASE = 22000 + 100 * WORKER
NODES = [f"gpu-{i:03d}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def cluster4(slurm_cluster_factory: Any) -> Any:
    c = slurm_cluster_factory(4)
    yield c
    c.stop()


@pytest.fixture()
def site(cluster4: Any, tmp_path: Path) -> dict[str, Any]:
    cluster4.reset()
    state = tmp_path / "state"
    logs = Path(cluster4.out_dir) / f"serve-logs-{time.monotonic_ns()}"
    record = Path(cluster4.out_dir) / f"records-{time.monotonic_ns()}"
    record.mkdir()
    return {"cluster": cluster4, "state": state, "logs": logs, "record": record}


def seed(state: Path, statuses: dict[str, NodeStatus], *, hours_ago: float = 0.1, gbps: float | None = None) -> None:
    created = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    nodes = []
    for name, st in statuses.items():
        checks = [CheckResult(check="ib.port.state", subject=f"mlx5_{i}/1", device=f"mlx5_{i}", port=1,
                              status=Status.PASS if (name, i) != ("gpu-004", 1) else Status.FAIL)
                  for i in range(2)]
        if gbps:
            checks.append(CheckResult(check="storage.weights", status=Status.PASS, value=gbps, unit="GB/s"))
        nodes.append(NodeReport(node=name, status=st, checks=checks))
    ledger.record(FleetReport(created=created, source="partition:gpu", nodes=nodes), str(state))


def ck(site: dict[str, Any], *args: str, env: dict[str, str] | None = None, timeout: float = 120
       ) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("CLUSTERKIT_", "FAKE_ENGINE_", "SLURM_")) and k != "RAY_ADDRESS"}
    e.update(site["cluster"].env)
    e.update({"CLUSTERKIT_STATE_DIR": str(site["state"]), "FAKE_ENGINE_RECORD_DIR": str(site["record"]),
              "FAKE_ENGINE_LOAD_S": "0.3"})
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "clusterkit", "deploy", *args], capture_output=True,
                          text=True, timeout=timeout, env=e, stdin=subprocess.DEVNULL,
                          cwd=str(site["cluster"].out_dir))


def serve_args(site: dict[str, Any], *more: str, engine: str = "vllm") -> list[str]:
    return ["serve", "--engine", engine, "--engine-command", f"{sys.executable} {FAKE}",
            "--ray-command", f"{sys.executable} {FAKE}", "--partition", "gpu", "--log-dir", str(site["logs"]),
            "--port", str(HTTP_BASE), "--master-port", str(MASTER_BASE), "--ray-port", str(RAY_BASE),
            "--port-span", "100", "--ready-timeout", "60", *more]


def records(site: dict[str, Any], kind: str) -> dict[int, dict[str, Any]]:
    out = {}
    for p in site["record"].glob(f"*.{kind}.rank*.json"):
        doc = json.loads(p.read_text())
        out[doc["rank"]] = doc
    return out


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return r.status, r.read()


def jobs_left(cluster: Any) -> list[str]:
    return cluster.job_ids()


# ----------------------------------------------------------------------------- vLLM native
def test_vllm_serves_on_validated_nodes_only_then_status_and_stop(site: dict[str, Any]) -> None:
    cluster = site["cluster"]
    # gpu-003 was never validated; gpu-002 passed but an operator drained it
    seed(site["state"], {"gpu-001": NodeStatus.PASS, "gpu-002": NodeStatus.PASS, "gpu-004": NodeStatus.WARN})
    cluster.run(["scontrol", "update", "nodename=gpu-002", "state=drain", "reason=fan swap, ticket 7"], check=True)
    t0 = time.monotonic()
    p = ck(site, *serve_args(site, "--model", "org/Llama-Test", "--tp", "16", "--name", "llama"))
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "gpu-002: refused: drained in Slurm (idle+drain): fan swap, ticket 7" in out
    assert "gpu-003: refused: no validation on record" in out
    assert "replica 0: gpu-[001,004] (rank 0 on gpu-001)" in out
    assert "deployment llama ready: 1 replica(s)" in out
    endpoint = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("http://"))
    assert endpoint.startswith("http://127.0.0.1:") and endpoint.endswith("/v1")
    # the stand-in's view: two ranks, on the two validated nodes, with vLLM's multi-node flags
    ranks = records(site, "vllm")
    assert sorted(ranks) == [0, 1]
    assert {r["node"] for r in ranks.values()} == {"gpu-001", "gpu-004"}
    assert ranks[0]["node"] == "gpu-001" and ranks[0]["procid"] == "0" and ranks[1]["procid"] == "1"
    a0, a1 = ranks[0]["argv"], ranks[1]["argv"]
    assert "--headless" in a1 and "--headless" not in a0 and "--port" in a0
    for a in (a0, a1):
        assert a[a.index("--nnodes") + 1] == "2" and a[a.index("--master-addr") + 1] == "127.0.0.1"
        assert a[a.index("--tensor-parallel-size") + 1] == "16"
    assert a0[a0.index("--master-port") + 1] == a1[a1.index("--master-port") + 1]
    assert ranks[0]["env"]["VLLM_HOST_IP"] == "127.0.0.1" and ranks[0]["gpus"] == 8
    # the rails that passed on both nodes (gpu-004's mlx5_1 failed)
    assert ranks[1]["env"]["NCCL_IB_HCA"] == "=mlx5_0:1"
    # the endpoint serves; /v1/models names the model
    base = endpoint[: -len("/v1")]
    assert get(base + "/health")[0] == 200
    assert json.loads(get(endpoint + "/models")[1])["data"][0]["id"] == "org/Llama-Test"

    st = ck(site, "status", "--json")
    assert st.returncode == 0, st.stderr
    (dep,) = json.loads(st.stdout)["deployments"]
    assert dep["name"] == "llama" and dep["state"] == "ready" and dep["endpoints"] == [endpoint]
    (rep,) = dep["replicas"]
    assert rep["job_state"] == "RUNNING" and rep["health"] == "ready"
    assert rep["ranks"] == [{"rank": 0, "node": "gpu-001", "state": "running"},
                            {"rank": 1, "node": "gpu-004", "state": "running"}]
    text = ck(site, "status").stdout
    assert "llama: ready" in text and "rank 1  gpu-004  running" in text

    sp = ck(site, "stop", "llama")
    assert sp.returncode == 0, sp.stderr
    assert f"stopped llama: job(s) {rep['job_id']} cancelled" in sp.stdout
    assert jobs_left(cluster) == []
    st = json.loads(ck(site, "status", "--all", "--json").stdout)["deployments"][0]
    assert st["state"] == "stopped"
    assert took < 40


# ----------------------------------------------------------------------------- failures
def test_a_rank_that_dies_is_named_with_its_log_and_the_job_cancelled(site: dict[str, Any]) -> None:
    cluster = site["cluster"]
    seed(site["state"], {n: NodeStatus.PASS for n in NODES})
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "8", "--pp", "2", "--name", "dies"),
           env={"FAKE_ENGINE_DIE_RANK": "1", "FAKE_ENGINE_DIE_AFTER": "1.5", "FAKE_ENGINE_LOAD_S": "30"})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("clusterkit: error: replica 0 (job ")
    assert ": rank 1 on gpu-002 died: exited with exit code 3" in err
    assert "cancelled" in err or "already ended" in err
    # the rank's own log tail, with the engine's last words
    assert "last lines of" in p.stdout and "serve-" in p.stdout and ".rank1.log" in p.stdout
    assert "illegal memory access was encountered (fake, rank 1)" in p.stdout
    assert "the engine exited with code 3" in p.stdout
    assert jobs_left(cluster) == []
    dep = json.loads(ck(site, "status", "--all", "--json").stdout)["deployments"][0]
    assert dep["state"] == "failed" and "rank 1 on gpu-002 died" in dep["replicas"][0]["failure"]


def test_not_ready_in_time_means_failed_even_while_every_rank_runs(site: dict[str, Any]) -> None:
    # the engine never answers: connection refused is "starting" until the deadline, then it is a
    # failure, and the job is cancelled although every rank's process still runs
    seed(site["state"], {n: NodeStatus.PASS for n in NODES})
    args = serve_args(site, "--model", "m", "--tp", "16", "--name", "slow")
    args[args.index("--ready-timeout") + 1] = "3"
    p = ck(site, *args, env={"FAKE_ENGINE_LOAD_S": "600"})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "rank 0 on gpu-001 did not answer" in p.stderr and "within 3 s (last: connection refused)" in p.stderr
    assert "its ranks' processes were running" in p.stderr
    assert "fake-engine: rank 0: all 2 ranks joined" in p.stdout  # rank 0's log tail
    assert jobs_left(site["cluster"]) == []


def test_too_few_validated_nodes_refuses_by_name_and_submits_nothing(site: dict[str, Any]) -> None:
    seed(site["state"], {"gpu-001": NodeStatus.PASS, "gpu-002": NodeStatus.FAIL})
    seed(site["state"], {"gpu-003": NodeStatus.PASS}, hours_ago=30)
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "16", "--name", "few"))
    assert p.returncode == 1, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert "2 node(s) needed" in err and "1 may serve" in err
    assert "gpu-002: refused: last validation fail" in err
    assert "gpu-003: refused: last validation (pass) is 30.0 h old, more than 24 h" in err
    assert "gpu-004: refused: no validation on record" in err
    assert jobs_left(site["cluster"]) == []
    # --force serves on them anyway, and says so
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "16", "--name", "few", "--force",
                             "--nodes", "gpu-[003-004]"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "gpu-003: FORCED (--force): last validation (pass) is 30.0 h old" in p.stdout
    assert "FORCED: serving on node(s) without a passing recent validation: gpu-003, gpu-004" in p.stdout
    assert ck(site, "stop", "--all").returncode == 0
    assert jobs_left(site["cluster"]) == []


# ----------------------------------------------------------------------------- SGLang, Ray
def test_sglang_two_replicas_ready_on_health_generate(site: dict[str, Any]) -> None:
    seed(site["state"], {n: NodeStatus.PASS for n in NODES})
    p = ck(site, *serve_args(site, "--model", "Qwen/Qwen2.5-72B", "--tp", "16", "--replicas", "2", "--name", "qwen",
                             "--json", engine="sglang"))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ready"] and len(doc["endpoints"]) == 2
    assert [r["nodes"] for r in doc["deployment"]["replicas"]] == [["gpu-001", "gpu-002"], ["gpu-003", "gpu-004"]]
    for e in doc["endpoints"]:
        assert get(e[: -len("/v1")] + "/health_generate")[0] == 200
    by_job: dict[str, list[list[str]]] = {}
    for path in site["record"].glob("*.sglang.rank*.json"):
        r = json.loads(path.read_text())
        by_job.setdefault(path.name.split(".")[0], []).append(r["argv"])
        a = r["argv"]
        assert a[a.index("--tp") + 1] == "16" and a[a.index("--host") + 1] == "0.0.0.0"
        assert a[a.index("--node-rank") + 1] == str(r["rank"]) == r["procid"]
        assert a[a.index("--dist-init-addr") + 1].startswith("127.0.0.1:")
    assert len(by_job) == 2 and all(len(v) == 2 for v in by_job.values())
    sp = ck(site, "stop", "qwen", "--json")
    assert sp.returncode == 0 and len(json.loads(sp.stdout)["stopped"][0]["cancelled"]) == 2
    assert jobs_left(site["cluster"]) == []


def test_vllm_ray_mode_and_an_engine_that_outlives_its_api_server(site: dict[str, Any]) -> None:
    seed(site["state"], {n: NodeStatus.PASS for n in NODES})
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "8", "--pp", "2", "--ray", "--name", "viaray"),
           env={"FAKE_ENGINE_API_DIES_AFTER": "2"})
    assert p.returncode == 0, p.stdout + p.stderr
    (vllm,) = records(site, "vllm").values()
    a = vllm["argv"]
    assert a[a.index("--distributed-executor-backend") + 1] == "ray" and "--nnodes" not in a
    assert vllm["env"]["RAY_ADDRESS"].startswith("127.0.0.1:")
    ray = records(site, "ray")
    assert "--head" in ray[0]["argv"] and any(x.startswith("--address=") for x in ray[1]["argv"])
    # rank 0's API server stops, its engine lives on: every rank still runs, the deployment does not serve
    deadline = time.monotonic() + 15
    while True:
        (dep,) = json.loads(ck(site, "status", "--json").stdout)["deployments"]
        if dep["state"] != "ready" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rep = dep["replicas"][0]
    # (the API server going away is seen as refused connections, or a moment earlier as errors)
    assert dep["state"] == "degraded" and rep["health"] in ("starting", "unhealthy") and rep["job_state"] == "RUNNING"
    assert [r["state"] for r in rep["ranks"]] == ["running", "running"]
    text = ck(site, "status", "viaray").stdout
    assert "health starting (connection refused)" in text or "health unhealthy" in text, text
    assert ck(site, "stop", "viaray").returncode == 0
    assert jobs_left(site["cluster"]) == []


def test_replicas_smaller_than_a_node_share_it_on_their_own_gpus_and_ports(site: dict[str, Any]) -> None:
    seed(site["state"], {"gpu-003": NodeStatus.PASS})
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "4", "--replicas", "2", "--name", "small", "--json"))
    assert p.returncode == 0, p.stdout + p.stderr
    reps = json.loads(p.stdout)["deployment"]["replicas"]
    assert [r["nodes"] for r in reps] == [["gpu-003"], ["gpu-003"]]
    assert len({r["endpoint"] for r in reps}) == 2  # the job id offsets the port
    for r in reps:
        assert get(r["endpoint"] + "/health")[0] == 200
    # each job got its own 4 of the node's 8 GPUs
    gpus = sorted(json.loads(x.read_text())["env"]["CUDA_VISIBLE_DEVICES"]
                  for x in site["record"].glob("*.vllm.rank0.json"))
    assert gpus == ["0,1,2,3", "4,5,6,7"]
    assert ck(site, "stop", "small").returncode == 0
    assert jobs_left(site["cluster"]) == []


# ----------------------------------------------------------------------------- metrics
def test_time_to_ready_and_rank_failures_reach_the_metrics_store(site: dict[str, Any], vmstore: Any) -> None:
    seed(site["state"], {n: NodeStatus.PASS for n in NODES})
    store = ["--influx-url", vmstore.url, "--influx-org", "ops", "--influx-bucket", "ck",
             "--spool-dir", str(site["state"] / "spool")]
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "8", "--name", "fast", *store))
    assert p.returncode == 0, p.stdout + p.stderr
    (ready,) = vmstore.export('clusterkit_deploy_ready_s{deployment="fast"}', expect=1)
    assert ready["metric"]["engine"] == "vllm" and ready["metric"]["replica"] == "0"
    assert ready["metric"]["host"] in NODES and 0 <= ready["values"][0] < 60
    (code,) = vmstore.export('clusterkit_deploy_status_code{deployment="fast"}', expect=1)
    assert code["values"] == [0]
    assert ck(site, "stop", "fast").returncode == 0
    p = ck(site, *serve_args(site, "--model", "m", "--tp", "8", "--pp", "2", "--name", "dies", *store),
           env={"FAKE_ENGINE_DIE_RANK": "1", "FAKE_ENGINE_DIE_AFTER": "1.0", "FAKE_ENGINE_LOAD_S": "30"})
    assert p.returncode == 1
    (fails,) = vmstore.export('clusterkit_deploy_rank_failures{deployment="dies"}', expect=1)
    assert fails["values"] == [1]
    (code,) = vmstore.export('clusterkit_deploy_status_code{deployment="dies"}', expect=1)
    assert code["values"] == [2]
