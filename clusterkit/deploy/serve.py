"""``clusterkit deploy serve / status / stop``: serving jobs on validated nodes, and their state.

Serve::

    health gate (gate.py)  ->  nodes per replica  ->  one sbatch script per replica (render.py)
        ->  submit (sbatch)  ->  watch: allocation, every rank's process, rank 0's HTTP server
        ->  ready: endpoints  |  a rank died / not ready in time: named, log tail, jobs cancelled

One replica is one Slurm job (its own nodes, its own endpoint); a deployment is the replicas of
one ``serve``. They are recorded in ``<state dir>/deployments.json`` (the controller's state
dir, as for the ledger) for ``status`` and ``stop``.

Liveness, on Slurm 22.05 without slurmdbd (no ``sacct``; ``squeue --steps --json`` ignores
``--steps`` there and prints jobs; ``sstat`` has nothing without a jobacct_gather plugin):
every rank is one task of the job's step ``<job>.0`` and the step runs with
``srun --kill-on-bad-exit=1``, while each task turns any exit of its engine into a non-zero one.
So the step is RUNNING exactly while every rank's process is, and one
``squeue --steps -h -o %i --jobs=J1,J2,…`` per poll (every job at once, with one
``squeue --json`` for the jobs' own states) tells whether all ranks of every replica live. When
the step is gone, the rank that died is named by srun itself, in the job's output file
(``srun: error: gpu-002: task 1: Exited with exit code 3``; the other tasks then read
``Terminated``), and its own log (``serve-<job>.rank<N>.log``) gives the tail. Worker health
endpoints are never asked: they are absent (vLLM's headless ranks) or lie.

Readiness: only rank 0's HTTP server, ``GET /health`` (vLLM) or ``/health_generate`` (SGLang),
2 s timeouts. A refused connection means "starting" until the deadline; ``/v1/models`` and an
open port are not readiness (vLLM answers both before the engine can generate). The deadline
counts from the job's start: ``--ready-timeout``, else derived from the weights' size and the
slowest node's measured read rate (``storage.weights`` in the ledger): 300 s + 2 x size / rate
(300 s for CUDA graphs, compilation and the rest); 1800 s when either is unknown. On any failure every job of the deployment is
cancelled (``scancel``): an engine can outlive its API server, and a half-up multi-node engine
only holds GPUs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from clusterkit.errors import ClusterkitError, UsageError

if TYPE_CHECKING:
    from clusterkit.deploy.gate import GateResult
    from clusterkit.deploy.render import ServeParams
    from clusterkit.ledger import Verdict
    from clusterkit.slurm.backend import CliBackend, JobInfo, SlurmNode

SCHEMA = "clusterkit.deployments/v1"
FILENAME = "deployments.json"
DEFAULT_DEADLINE_S = 1800.0
DEADLINE_BASE_S = 300.0
DEFAULT_ALLOC_TIMEOUT_S = 600.0
#: how long a dead step's job is given to write srun's task lines before they are looked for
DIAGNOSE_GRACE_S = 5.0
TAIL_LINES = 15
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SRUN_TASK_RE = re.compile(r"^srun: error: (?P<node>\S+): tasks? (?P<tasks>[0-9,\-]+): (?P<what>.+?)\s*$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class ServeFailed(ClusterkitError):
    """The deployment did not come up (a rank died, not ready in time): exit 1, jobs cancelled."""

    exit_code = 1


class NotEnoughNodes(ClusterkitError):
    """The health gate left too few nodes (exit 1: nothing was submitted)."""

    exit_code = 1


# --------------------------------------------------------------------------- records
class Replica(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    job_id: str
    nodes: list[str]
    http_port: int
    endpoint: Optional[str] = None  # http://ADDR:PORT of rank 0
    state: str = "submitted"  # submitted | ready | failed | stopped
    ready_s: Optional[float] = None
    failure: Optional[str] = None


class Deployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    engine: str
    mode: str = "native"
    model: str
    served_model_name: Optional[str] = None
    tp: int
    pp: int
    nodes_per_replica: int
    gpus_per_node: int
    partition: Optional[str] = None
    log_dir: str
    health_path: str
    created: str
    state: str = "starting"  # starting | ready | failed | stopped
    forced: list[str] = Field(default_factory=list)
    replicas: list[Replica] = Field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [r.job_id for r in self.replicas]


def _store_dir(state_dir: Optional[str]) -> str:
    from clusterkit.ledger import directory

    return directory(state_dir)


def load_deployments(state_dir: Optional[str] = None) -> dict[str, Deployment]:
    path = os.path.join(_store_dir(state_dir), FILENAME)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ClusterkitError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ClusterkitError(f"{path}: not a {SCHEMA} file")
    out: dict[str, Deployment] = {}
    for name, d in (doc.get("deployments") or {}).items():
        try:
            out[name] = Deployment.model_validate(d)
        except ValueError:
            continue
    return out


def save_deployment(dep: Deployment, state_dir: Optional[str] = None) -> None:
    """Add or replace one deployment in the record (under the record's lock)."""
    from clusterkit.fsutil import write_atomic
    from clusterkit.ledger import locked

    where = _store_dir(state_dir)
    with locked(where, FILENAME):
        current = load_deployments(state_dir)
        current[dep.name] = dep
        doc = {"schema": SCHEMA, "deployments": {n: d.model_dump() for n, d in sorted(current.items())}}
        write_atomic(os.path.join(where, FILENAME), json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------- planning
@dataclass
class ServeRequest:
    engine: str
    model: str
    tp: Optional[int] = None
    pp: Optional[int] = None
    replicas: Optional[int] = None
    gpus_per_node: int = 8
    mode: str = "native"
    partition: Optional[str] = None
    nodes: Optional[list[str]] = None
    name: Optional[str] = None
    served_model_name: Optional[str] = None
    engine_command: Optional[list[str]] = None
    ray_command: Optional[list[str]] = None
    log_dir: Optional[str] = None
    http_port: int = 8000
    master_port: int = 29500
    ray_port: int = 6379
    port_span: int = 1000
    time: Optional[str] = None
    account: Optional[str] = None
    reservation: Optional[str] = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    socket_ifnames: dict[str, str] = field(default_factory=dict)  # node -> interface (inventory)
    max_age_h: float = 24.0
    force: bool = False
    ready_timeout: Optional[float] = None
    alloc_timeout: float = DEFAULT_ALLOC_TIMEOUT_S
    weights_bytes: Optional[int] = None
    #: for the planner: the GPUs' memory, and the model's config when --model is not one
    gpu_mem_gib: Optional[float] = None
    config: Optional[str] = None


@dataclass
class ServePlan:
    request: ServeRequest
    name: str
    tp: int
    pp: int
    replicas: int
    nodes_per_replica: int
    gate: "GateResult"
    groups: list[list[str]]
    params: list["ServeParams"]
    deadline_s: float
    deadline_why: str
    notes: list[str] = field(default_factory=list)
    kv_tokens: Optional[int] = None  # the planner's KV-cache size per replica, when it ran

    def lines(self) -> list[str]:
        r = self.request
        mode = {"vllm": "vLLM, native multi-node" if r.mode == "native" else "vLLM over Ray",
                "sglang": "SGLang"}[r.engine]
        out = [f"deployment {self.name}: {mode}, model {r.model}",
               f"  tp {self.tp} x pp {self.pp} = {self.tp * self.pp} GPU(s) per replica: {self.nodes_per_replica} "
               f"node(s) of {r.gpus_per_node} GPUs; {self.replicas} replica(s), one Slurm job each",
               f"  health gate (validation newer than {self.gate.max_age_h:g} h, not drained or down):"]
        out += [f"    {line}" for line in self.gate.lines()]
        from clusterkit.hostlist import fold_display

        for i, g in enumerate(self.groups):
            out.append(f"  replica {i}: {fold_display(g)} (rank 0 on {g[0]})")
        p = self.params[0] if self.params else None
        if p is not None:
            out.append(f"  ports: http {p.http_port} + job id % {p.port_span}, master {p.master_port} + job id % "
                       f"{p.port_span}")
            out.append(f"  logs: {p.log_dir}/serve-<job>.out and serve-<job>.rank<N>.log")
        from clusterkit.deploy.render import HEALTH_PATH

        out.append(f"  ready when rank 0 answers GET {HEALTH_PATH[r.engine]} with 200 and every rank's task runs; "
                   f"deadline {self.deadline_s:.0f} s from the job's start ({self.deadline_why})")
        out += [f"  note: {n}" for n in self.notes]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.request.engine, "mode": self.request.mode,
                "model": self.request.model, "tp": self.tp, "pp": self.pp, "replicas": self.replicas,
                "nodes_per_replica": self.nodes_per_replica, "gpus_per_node": self.request.gpus_per_node,
                "gate": self.gate.to_dict(), "replica_nodes": self.groups, "deadline_s": self.deadline_s,
                "deadline_why": self.deadline_why, "notes": self.notes}


def default_name(model: str) -> str:
    base = os.path.basename(model.rstrip("/")) or model
    slug = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._")[:40]
    return slug or "model"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: lower-case letters, digits, '.', '_', '-' (at most 63)")
    return name


def planner_defaults(req: ServeRequest, nodes: Optional[int]) -> Optional[dict[str, int]]:
    """The layout from the planner (clusterkit.deploy.plan): tp, pp, replicas, nodes_per_replica
    and weights_bytes, for ``nodes`` healthy nodes. Asked only when neither --tp nor --pp is
    given and --gpu-mem-gib is (the planner needs the GPUs' memory); None when not asked or when
    the planner is not installed. The model's config is --config, else --model (a shipped name or
    a config.json / model directory). The planner's refusals (UsageError) are the user's to see."""
    if req.tp is not None or req.pp is not None or req.gpu_mem_gib is None:
        return None
    try:
        from clusterkit.deploy.plan import plan
    except ImportError:
        return None
    got = plan(req.config or req.model, gpus_per_node=req.gpus_per_node, gpu_mem_gib=req.gpu_mem_gib,
               engine=req.engine, nodes=nodes or None)
    out = {"tp": got.tp, "pp": got.pp, "replicas": got.replicas, "nodes_per_replica": got.nodes_per_replica,
           "kv_tokens": got.kv_tokens}
    size = getattr(got, "params", 0) * getattr(got, "weight_bytes", 0)
    if size > 0:
        out["weights_bytes"] = int(size)
    return out


def weights_bytes_of(model: str) -> Optional[int]:
    """The size of a local model directory's weight files (None: not a local directory)."""
    if not os.path.isdir(model):
        return None
    total = 0
    for root, _, files in os.walk(model):
        for f in files:
            if f.endswith(_WEIGHT_SUFFIXES):
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
    return total or None


def ready_deadline(weights_bytes: Optional[int], gbps: Optional[float],
                   override: Optional[float]) -> tuple[float, str]:
    """The readiness deadline (seconds from the job's start) and how it was chosen."""
    if override is not None:
        return float(override), "--ready-timeout"
    if weights_bytes and gbps and gbps > 0:
        load = weights_bytes / (gbps * 1e9)
        t = DEADLINE_BASE_S + 2 * load
        return t, (f"{weights_bytes / 1e9:.3g} GB of weights at {gbps:.3g} GB/s (the slowest node's measured "
                   f"read rate) = {load:.0f} s to load; 300 s + twice that")
    missing = "the weights' size" if not weights_bytes else "the nodes' measured read rate (validate --weights-dir)"
    return DEFAULT_DEADLINE_S, f"default: {missing} unknown"


def _ib_hca(nodes: Sequence[str], verdicts: Mapping[str, "Verdict"]) -> tuple[Optional[str], Optional[str]]:
    """NCCL_IB_HCA from the rails that passed on every node (None when unknown); and a note."""
    from clusterkit.hostlist import natural_key

    known = [set(v.rails) for n in nodes if (v := verdicts.get(n)) is not None and v.rails is not None]
    if not known:
        return None, None
    common = set.intersection(*known)
    if not common:
        return None, "no InfiniBand rail passed on every node of a replica: NCCL_IB_HCA left unset"
    return "=" + ",".join(sorted(common, key=natural_key)), None


def make_plan(req: ServeRequest, *, verdicts: Mapping[str, "Verdict"],
              slurm_nodes: Optional[Sequence["SlurmNode"]], candidates: Sequence[str],
              now: Optional[_dt.datetime] = None) -> ServePlan:
    """The plan: sizes, the gate's decisions, the nodes of each replica and their scripts'
    parameters. Raises NotEnoughNodes (with every refusal named) when the gate leaves too few."""
    from clusterkit.deploy import gate
    from clusterkit.deploy.render import make_params, template_for

    template_for(req.engine, req.mode)  # refuses sglang + ray early
    notes: list[str] = []
    slurm_map = {n.name: n for n in slurm_nodes} if slurm_nodes is not None else None
    result = gate.decide(candidates, verdicts, slurm_map, now=now or _dt.datetime.now(_dt.timezone.utc),
                         max_age_h=req.max_age_h, force=req.force, partition=req.partition)
    planned = planner_defaults(req, len(result.allowed))
    kv_tokens = (planned or {}).get("kv_tokens")
    if planned:
        notes.append(f"layout from the planner (--gpu-mem-gib {req.gpu_mem_gib:g}, {len(result.allowed)} healthy "
                     f"node(s)): tp {planned['tp']} x pp {planned['pp']}"
                     + ("" if req.replicas else f", {planned['replicas']} replica(s)"))
    elif req.tp is None and req.pp is None:
        notes.append(f"no --tp/--pp: one node's {req.gpus_per_node} GPUs (--gpu-mem-gib lets the planner choose)")
    tp = req.tp or (planned or {}).get("tp") or req.gpus_per_node
    pp = req.pp or (planned or {}).get("pp") or 1
    replicas = req.replicas or (planned or {}).get("replicas") or 1
    world = tp * pp
    if world <= req.gpus_per_node:
        per = 1
    elif world % req.gpus_per_node:
        raise UsageError(f"tp {tp} x pp {pp} = {world} GPUs: not a whole number of {req.gpus_per_node}-GPU nodes")
    else:
        per = world // req.gpus_per_node
    # a replica smaller than a node may share it with others (each job its own GPUs and ports);
    # replicas are spread over the nodes first, then packed
    slots = req.gpus_per_node // world if per == 1 else 1
    need = per * replicas if per > 1 else min(replicas, max(len(result.allowed), -(-replicas // slots)))
    chosen = gate.pick(result, need, slurm_map)
    name = check_name(req.name or default_name(req.model))
    if len(chosen) < need:
        lines = "; ".join(d.line for d in result.refused) or "no candidate nodes"
        shape = f"{replicas} replica(s) x {per}" if per > 1 else f"{replicas} replica(s), {slots} per node at most"
        raise NotEnoughNodes(f"{need} node(s) needed ({shape}), {len(chosen)} may serve; refused: {lines}")
    from clusterkit.hostlist import natural_key

    if per > 1:
        groups = [sorted(chosen[i * per:(i + 1) * per], key=natural_key) for i in range(replicas)]
    else:
        groups = [[chosen[i % len(chosen)]] for i in range(replicas)]
    shared = per == 1 and world < req.gpus_per_node
    log_dir = os.path.abspath(req.log_dir or "clusterkit-serve-logs")
    rates = [v.weights_gbps for n in chosen if (v := verdicts.get(n)) is not None and v.weights_gbps]
    wbytes = req.weights_bytes or weights_bytes_of(req.model) or (planned or {}).get("weights_bytes")
    deadline, why = ready_deadline(wbytes, min(rates) if rates else None, req.ready_timeout)
    params = []
    for g in groups:
        hca, note = _ib_hca(g, verdicts)
        if note and note not in notes:
            notes.append(note)
        ifn = {n: req.socket_ifnames[n] for n in g if n in req.socket_ifnames}
        uniform = ifn and len(set(ifn.values())) == 1 and len(ifn) == len(g)
        if ifn and len(ifn) < len(g):
            notes.append(f"the inventory names a socket interface for {len(ifn)} of {len(g)} node(s) of a replica")
        values: dict[str, Any] = dict(
            job_name=f"ck-serve-{name}", nodes=per, gpus_per_node=req.gpus_per_node, engine=req.engine,
            mode=req.mode, model=req.model, served_model_name=req.served_model_name, tp=tp, pp=pp,
            nodelist=g, http_port=req.http_port, master_port=req.master_port, ray_port=req.ray_port,
            port_span=req.port_span, log_dir=log_dir, partition=req.partition, account=req.account,
            reservation=req.reservation, time=req.time, ib_hca=hca, env=dict(req.env), exclusive=not shared,
            extra_args=list(req.extra_args),
            socket_ifname=next(iter(ifn.values())) if uniform else None,
            socket_ifnames={} if uniform else ifn)
        if req.engine_command:
            values["engine_command"] = list(req.engine_command)
        if req.ray_command:
            values["ray_command"] = list(req.ray_command)
        params.append(make_params(**values))
    return ServePlan(request=req, name=name, tp=tp, pp=pp, replicas=replicas, nodes_per_replica=per, gate=result,
                     groups=groups, params=params, deadline_s=deadline, deadline_why=why, notes=notes,
                     kv_tokens=kv_tokens if planned and planned.get("tp") == tp and planned.get("pp") == pp else None)


# --------------------------------------------------------------------------- Slurm views
def running_steps(backend: "CliBackend", job_ids: Sequence[str]) -> set[str]:
    """The step ids Slurm lists as running for these jobs ("12.0", "12.batch"), in one call."""
    if not job_ids:
        return set()
    rc, out, _ = backend.run(["squeue", "--steps", "-h", "-o", "%i", f"--jobs={','.join(job_ids)}"], check=False)
    if rc != 0:
        # an id Slurm forgot makes the whole call fail: ask again without the gone ones
        if len(job_ids) > 1:
            alive = [j for j, info in backend.jobs(job_ids).items() if info.state != "GONE"]
            if alive and len(alive) < len(job_ids):
                return running_steps(backend, alive)
        return set()
    return {ln.strip() for ln in out.splitlines() if ln.strip()}


def node_addresses(backend: "CliBackend", names: Sequence[str]) -> dict[str, str]:
    """Slurm's NodeAddr of each node (the name itself when Slurm does not say)."""
    from clusterkit.hostlist import fold
    from clusterkit.parsers.slurm import parse_scontrol_node

    out = {n: n for n in names}
    if not names:
        return out
    rc, text, _ = backend.run(["scontrol", "-o", "show", "node", fold(list(names), unique=True)], check=False)
    if rc == 0 and text.strip():
        for node in parse_scontrol_node(text).nodes:
            addr = node.fields.get("NodeAddr")
            if node.name in out and addr and addr != "(null)":
                out[node.name] = addr
    return out


def _tail(path: str, lines: int = TAIL_LINES) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class TaskEnd:
    node: str
    rank: int
    what: str  # "Exited with exit code 3", "Killed", "Terminated"


def srun_task_ends(out_text: str) -> list[TaskEnd]:
    """srun's reports of tasks that ended, in the order it printed them."""
    from clusterkit.hostlist import expand

    ends: list[TaskEnd] = []
    for line in out_text.splitlines():
        m = _SRUN_TASK_RE.match(line.strip())
        if not m:
            continue
        try:
            ranks = expand(f"t[{m.group('tasks')}]")
        except ClusterkitError:
            continue
        for r in ranks:
            ends.append(TaskEnd(node=m.group("node"), rank=int(r[1:]), what=m.group("what")))
    return ends


def culprit(ends: Sequence[TaskEnd]) -> Optional[TaskEnd]:
    """The task that ended first of itself (not ``Terminated`` by the step's end), else the first."""
    for e in ends:
        if e.what != "Terminated":
            return e
    return ends[0] if ends else None


_EXIT_LINE_RE = re.compile(r"clusterkit-serve: rank (?P<rank>[0-9]+) on (?P<node>\S+): the engine exited with "
                           r"code (?P<code>[0-9]+)(?: at (?P<at>[0-9]+(?:[.,][0-9]+)?))?")


def rank_exits(log_dir: str, job_id: str, nranks: int) -> dict[int, tuple[str, int, float]]:
    """rank -> (node, exit code, when) of every rank whose task wrapper saw its engine exit."""
    out: dict[int, tuple[str, int, float]] = {}
    for r in range(nranks):
        tail = _tail(os.path.join(log_dir, f"serve-{job_id}.rank{r}.log"), 40) or ""
        for m in _EXIT_LINE_RE.finditer(tail):
            at = float((m.group("at") or "inf").replace(",", "."))
            out[r] = (m.group("node"), int(m.group("code")), at)
    return out


def first_death(ends: Sequence[TaskEnd], exits: Mapping[int, tuple[str, int, float]]) -> Optional[TaskEnd]:
    """The rank that died first, not one that ended because another did. A task srun saw killed
    whose wrapper wrote nothing died abruptly (the OOM killer, a node gone): that one. Else the
    earliest engine exit the task wrappers wrote down (srun's order is only the order its reports
    arrived in: a peer that aborts on the lost connection may be reported first). Else srun's."""
    for e in ends:
        if e.rank not in exits and e.what != "Terminated" and not e.what.startswith("Exited with exit code"):
            return e
    if exits:
        rank = min(exits, key=lambda r: (exits[r][2], r))
        node, code, _ = exits[rank]
        said = next((e for e in ends if e.rank == rank), None)
        return TaskEnd(node=said.node if said else node, rank=rank,
                       what=said.what if said and said.what != "Terminated" else f"Exited with exit code {code}")
    return culprit(ends)


def diagnose(dep: Deployment, rep: Replica, job: Optional["JobInfo"]) -> str:
    """What became of a replica whose step ended: the rank that died, its node, its log tail."""
    from clusterkit.deploy.render import log_paths

    paths = log_paths(dep.log_dir, rep.job_id, len(rep.nodes))
    out_text = ""
    try:
        with open(paths["out"], encoding="utf-8", errors="replace") as fh:
            out_text = fh.read()
    except OSError:
        pass
    end = first_death(srun_task_ends(out_text), rank_exits(dep.log_dir, rep.job_id, len(rep.nodes)))
    state = ""
    if job is not None:
        code = f", exit {job.exit_code}" if job.exit_code is not None else ""
        state = f" (job {job.state.lower()}{code})"
    if end is not None:
        log = os.path.join(dep.log_dir, f"serve-{rep.job_id}.rank{end.rank}.log")
        tail = _tail(log)
        head = (f"replica {rep.index} (job {rep.job_id}): rank {end.rank} on {end.node} died: {end.what.lower()}"
                f"{state}")
        if tail:
            return head + f"\n  last lines of {log}:\n" + _indent(tail)
        return head + f"\n  (no log at {log})"
    # no rank ended: the batch script failed before (or without) the step
    tail = _tail(paths["out"])
    head = f"replica {rep.index} (job {rep.job_id}): the job ended before its ranks ran{state}"
    return head + (f"\n  last lines of {paths['out']}:\n" + _indent(tail) if tail else f"\n  (no output at {paths['out']})")


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())


# --------------------------------------------------------------------------- HTTP
def probe(url: str, timeout: float = 2.0) -> tuple[str, str]:
    """("ready" | "starting" | "unhealthy", detail) of one GET. No proxies: the endpoint is
    reached directly, as clients on the cluster network reach it."""
    import http.client
    import socket
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            code = resp.status
    except urllib.error.HTTPError as e:
        return "unhealthy", f"HTTP {e.code}"
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            return "starting", "connection refused"
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "unhealthy", "no answer within %gs" % timeout
        return "unhealthy", str(reason)
    except (socket.timeout, TimeoutError):
        return "unhealthy", "no answer within %gs" % timeout
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        if isinstance(e, ConnectionRefusedError):
            return "starting", "connection refused"
        return "unhealthy", f"{type(e).__name__}: {e}"
    return ("ready", "HTTP 200") if code == 200 else ("unhealthy", f"HTTP {code}")


# --------------------------------------------------------------------------- serve
Echo = Callable[[str], None]


def submit(plan: ServePlan, backend: "CliBackend", state_dir: Optional[str], echo: Echo) -> Deployment:
    """Submit every replica's job and record the deployment (before anything else can fail)."""
    from clusterkit.deploy.render import render

    old = load_deployments(state_dir).get(plan.name)
    if old is not None and old.state in ("starting", "ready"):
        live = [j for j, info in backend.jobs(old.job_ids).items() if not info.finished]
        if live:
            raise UsageError(f"deployment {plan.name} is running (job(s) {', '.join(live)}): "
                             f"clusterkit deploy stop {plan.name} first, or give another --name")
    r = plan.request
    p0 = plan.params[0]
    dep = Deployment(name=plan.name, engine=r.engine, mode=r.mode, model=r.model,
                     served_model_name=r.served_model_name, tp=plan.tp, pp=plan.pp,
                     nodes_per_replica=plan.nodes_per_replica, gpus_per_node=r.gpus_per_node,
                     partition=r.partition, log_dir=p0.log_dir, health_path=p0.health_path,
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     forced=[d.node for d in plan.gate.forced])
    os.makedirs(p0.log_dir, exist_ok=True)
    from clusterkit.hostlist import fold_display

    try:
        for i, (params, nodes) in enumerate(zip(plan.params, plan.groups)):
            job = backend.submit(render(params))
            from clusterkit.deploy.render import port_for

            dep.replicas.append(Replica(index=i, job_id=job, nodes=list(nodes),
                                        http_port=port_for(params.http_port, job, params.port_span)))
            echo(f"replica {i}: submitted job {job} on {fold_display(nodes)}")
    except BaseException:
        if dep.replicas:  # a later submission failed: the earlier jobs must not linger
            backend.cancel(dep.job_ids)
            dep.state = "failed"
            save_deployment(dep, state_dir)
        raise
    save_deployment(dep, state_dir)
    return dep


@dataclass
class _Watch:
    rep: Replica
    started: Optional[float] = None
    step_seen: bool = False
    dead_since: Optional[float] = None
    last: str = "pending"
    done: bool = False


def watch(dep: Deployment, backend: "CliBackend", *, deadline_s: float, alloc_timeout: float,
          echo: Echo, state_dir: Optional[str] = None, poll: float = 0.5,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Deployment:
    """Wait until every replica is ready, or one fails; on failure cancel every job of the
    deployment and raise ServeFailed (after printing the diagnosis through ``echo``)."""
    t0 = clock()
    watches = [_Watch(rep) for rep in dep.replicas]
    failures: list[str] = []
    try:
        while not failures and not all(w.done for w in watches):
            ids = [w.rep.job_id for w in watches]  # the ready ones too: they must stay up meanwhile
            jobs = backend.jobs(ids)
            steps = running_steps(backend, [j for j in ids if jobs[j].state == "RUNNING"])
            now = clock()
            for w in watches:
                if w.done:
                    job = jobs[w.rep.job_id]
                    if job.state == "RUNNING" and f"{w.rep.job_id}.0" in steps:
                        continue
                    w.done, w.step_seen, w.dead_since = False, True, w.dead_since or now
                    w.rep.state = "submitted"
                problem = _advance(dep, w, jobs[w.rep.job_id], steps, now, t0, backend, deadline_s,
                                   alloc_timeout, echo)
                if problem:
                    failures.append(problem)
                    w.rep.state, w.rep.failure = "failed", problem.splitlines()[0]
                    break
            if not failures and not all(w.done for w in watches):
                sleep(poll if now - t0 < 30 else max(poll, 2.0))
    except KeyboardInterrupt:
        dep.state = "starting"
        save_deployment(dep, state_dir)
        echo(f"interrupted: the job(s) {', '.join(dep.job_ids)} keep running; "
             f"`clusterkit deploy stop {dep.name}` stops them")
        raise
    if failures:
        from clusterkit.slurm.backend import SlurmError

        live = [j for j, info in backend.jobs(dep.job_ids).items() if not info.finished]
        outcome = []
        try:
            if live:
                backend.cancel(live)
            ended = backend.wait(live, timeout=30.0, poll=0.5) if live else {}
            left = [j for j, info in ended.items() if not info.finished]
            if live:
                outcome.append(f"job(s) {', '.join(live)} cancelled" + (f" (still ending: {', '.join(left)})"
                                                                           if left else ""))
        except SlurmError as e:
            outcome.append(f"cancelling job(s) {', '.join(live)} failed ({e}): scancel them")
        gone = [j for j in dep.job_ids if j not in live]
        if gone:
            outcome.append(f"job(s) {', '.join(gone)} already ended")
        for w in watches:
            if w.rep.state != "failed":
                w.rep.state = "stopped"
        dep.state = "failed"
        save_deployment(dep, state_dir)
        for f in failures:
            echo(f)
        raise ServeFailed(f"{failures[0].splitlines()[0]}; {', '.join(outcome)}")
    dep.state = "ready"
    save_deployment(dep, state_dir)
    return dep


def _advance(dep: Deployment, w: _Watch, job: "JobInfo", steps: set[str], now: float, t0: float,
             backend: "CliBackend", deadline_s: float, alloc_timeout: float, echo: Echo) -> Optional[str]:
    """One poll of one replica: None, or the failure (with its diagnosis)."""
    rep = w.rep
    if job.state == "PENDING":
        if now - t0 > alloc_timeout:
            return (f"replica {rep.index} (job {rep.job_id}): still pending after {alloc_timeout:.0f} s "
                    f"(Slurm's reason: {job.reason or 'none'})")
        return None
    if job.finished:
        return diagnose(dep, rep, job)
    if job.state not in ("RUNNING", "COMPLETING"):
        return None  # CONFIGURING (nodes booting), SUSPENDED, …: wait
    if w.started is None:
        w.started = now
        first = _first_node(job, rep)
        addr = node_addresses(backend, [first]).get(first, first)
        rep.endpoint = f"http://{addr}:{rep.http_port}"
        echo(f"replica {rep.index}: job {rep.job_id} running on {job.nodes or ','.join(rep.nodes)}; waiting for "
             f"{rep.endpoint}{dep.health_path} (deadline {deadline_s:.0f} s)")
    step = f"{rep.job_id}.0" in steps
    if step:
        w.step_seen = True
        w.dead_since = None
    elif w.step_seen or job.state == "COMPLETING":
        # the step ended while the job runs: a rank died (srun --kill-on-bad-exit ended the rest)
        if w.dead_since is None:
            w.dead_since = now
        text = diagnose(dep, rep, None)
        if "died" in text or now - w.dead_since > DIAGNOSE_GRACE_S:
            return text
        return None
    if rep.endpoint is None:
        return None
    verdict, detail = probe(rep.endpoint + dep.health_path)
    w.last = detail
    if verdict == "ready" and step:
        rep.state, rep.ready_s, w.done = "ready", round(now - (w.started or now), 1), True
        echo(f"replica {rep.index}: ready in {rep.ready_s:g} s: {rep.endpoint} (rank 0 on {rep.nodes[0]}; "
             f"{len(rep.nodes)} rank(s) running)")
        return None
    if now - w.started > deadline_s:
        tail = _tail(os.path.join(dep.log_dir, f"serve-{rep.job_id}.rank0.log"))
        text = (f"replica {rep.index} (job {rep.job_id}): rank 0 on {rep.nodes[0]} did not answer "
                f"{rep.endpoint}{dep.health_path} within {deadline_s:.0f} s (last: {detail}); "
                f"its ranks' processes were {'running' if step else 'not all running'}")
        if tail:
            text += f"\n  last lines of {dep.log_dir}/serve-{rep.job_id}.rank0.log:\n" + _indent(tail)
        return text
    return None


def _first_node(job: "JobInfo", rep: Replica) -> str:
    from clusterkit.hostlist import expand

    if job.nodes:
        try:
            names = expand(job.nodes)
            if names:
                return names[0]
        except ClusterkitError:
            pass
    return rep.nodes[0]


# --------------------------------------------------------------------------- status / stop
def rank_states(dep: Deployment, rep: Replica, job: "JobInfo", steps: set[str]) -> list[dict[str, Any]]:
    """Every rank's state, as Slurm tells it: pending, running, or how its task ended."""
    from clusterkit.deploy.render import log_paths

    if job.state == "PENDING":
        state_of = {r: "pending" for r in range(len(rep.nodes))}
    elif job.state == "RUNNING" and f"{rep.job_id}.0" in steps:
        state_of = {r: "running" for r in range(len(rep.nodes))}
    else:
        ends: dict[int, str] = {}
        try:
            with open(log_paths(dep.log_dir, rep.job_id, 0)["out"], encoding="utf-8", errors="replace") as fh:
                for e in srun_task_ends(fh.read()):
                    ends.setdefault(e.rank, e.what.lower())
        except OSError:
            pass
        default = "starting" if job.state == "RUNNING" else (job.state.lower() if job.state != "GONE" else "ended")
        state_of = {r: ends.get(r, default) for r in range(len(rep.nodes))}
    return [{"rank": r, "node": n, "state": state_of[r]} for r, n in enumerate(rep.nodes)]


def status(deps: Sequence[Deployment], backend: "CliBackend") -> list[dict[str, Any]]:
    """Every deployment with its replicas' jobs, endpoints, health and ranks (one squeue for the
    jobs, one for the steps, one GET per live endpoint)."""
    ids = [j for d in deps for j in d.job_ids]
    jobs = backend.jobs(ids) if ids else {}
    steps = running_steps(backend, [j for j in ids if jobs[j].state == "RUNNING"])
    out = []
    for d in deps:
        reps = []
        for rep in d.replicas:
            job = jobs[rep.job_id]
            health, detail = ("-", "")
            if job.state == "RUNNING" and rep.endpoint:
                health, detail = probe(rep.endpoint + d.health_path)
            reps.append({"index": rep.index, "job_id": rep.job_id, "job_state": job.state,
                         "endpoint": rep.endpoint, "health": health, "health_detail": detail,
                         "nodes": rep.nodes, "ranks": rank_states(d, rep, job, steps), "ready_s": rep.ready_s,
                         "failure": rep.failure})
        live = [r for r in reps if r["job_state"] in ("RUNNING", "PENDING", "CONFIGURING")]
        state = d.state
        if d.state in ("ready", "starting") and not live:
            state = "ended"
        elif d.state == "ready" and any(r["health"] != "ready" for r in reps):
            state = "degraded"
        out.append({"name": d.name, "engine": d.engine, "mode": d.mode, "model": d.model,
                    "served_model_name": d.served_model_name, "tp": d.tp, "pp": d.pp,
                    "nodes_per_replica": d.nodes_per_replica, "created": d.created, "state": state,
                    "recorded_state": d.state, "forced": d.forced, "log_dir": d.log_dir,
                    "endpoints": [f"{r['endpoint']}/v1" for r in reps if r["endpoint"]],
                    "replicas": reps})
    return out


def format_status(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return ["no deployments"]
    out: list[str] = []
    for d in rows:
        forced = f"; FORCED onto {', '.join(d['forced'])}" if d["forced"] else ""
        out.append(f"{d['name']}: {d['state']} — {d['engine']}{' (ray)' if d['mode'] == 'ray' else ''} "
                   f"{d['model']}, tp {d['tp']} x pp {d['pp']}, {len(d['replicas'])} replica(s) of "
                   f"{d['nodes_per_replica']} node(s){forced}")
        for r in d["replicas"]:
            health = r["health"] + (f" ({r['health_detail']})" if r["health"] not in ("ready", "-") else "")
            out.append(f"  replica {r['index']}: job {r['job_id']} {r['job_state'].lower()}, "
                       f"{r['endpoint'] or 'no endpoint yet'}, health {health}")
            for k in r["ranks"]:
                out.append(f"    rank {k['rank']}  {k['node']}  {k['state']}")
            if r["failure"]:
                out.append(f"    failure: {r['failure']}")
    return out


def stop(deps: Sequence[Deployment], backend: "CliBackend", state_dir: Optional[str],
         timeout: float = 30.0) -> list[dict[str, Any]]:
    """Cancel every job of these deployments, wait for them to end, record them stopped."""
    ids = [j for d in deps for j in d.job_ids]
    before = backend.jobs(ids) if ids else {}
    live = [j for j in ids if not before[j].finished]
    if live:
        backend.cancel(live)
    after = backend.wait(live, timeout=timeout, poll=0.5) if live else {}
    out = []
    for d in deps:
        for rep in d.replicas:
            if rep.state in ("submitted", "ready"):
                rep.state = "stopped"
        d.state = "stopped"
        save_deployment(d, state_dir)
        mine = [j for j in d.job_ids if j in live]
        out.append({"name": d.name, "cancelled": mine,
                    "still_ending": [j for j in mine if j in after and not after[j].finished]})
    return out
