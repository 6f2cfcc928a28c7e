"""``clusterkit deploy serve | status | stop``: the serving commands of the ``deploy`` group.

``clusterkit.deploy.cli`` imports it when one of them runs.

Exit codes: 0 ready (serve) / done; 1 the deployment did not come up (a rank died, not ready in
time: every job cancelled) or too few nodes passed the health gate; 2 bad input; 3 Slurm could
not be asked, or the ledger not read.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Optional

import click

_STATE_DIR_HELP = ("The controller's state directory (ledger.json, deployments.json). Default: "
                   "$CLUSTERKIT_STATE_DIR, else /var/lib/clusterkit as root, else $XDG_STATE_HOME/clusterkit.")


def _words(option: str, value: Optional[str]) -> Optional[list[str]]:
    from clusterkit.errors import UsageError

    if value is None:
        return None
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise UsageError(f"{option}: cannot split {value!r} into words: {e}") from None
    if not words:
        raise UsageError(f"{option}: empty")
    return words


def _env_pairs(items: tuple[str, ...]) -> dict[str, str]:
    from clusterkit.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env {item!r}: give NAME=VALUE")
        out[name] = value
    return out


def _socket_ifnames(inventory: Optional[str]) -> dict[str, str]:
    """node -> interface, from the inventory's ``socket_ifname`` label (defaults or per node)."""
    if not inventory:
        return {}
    from clusterkit.inventory import load_inventory

    return {n.name: n.labels["socket_ifname"] for n in load_inventory(inventory) if n.labels.get("socket_ifname")}


def _store_options(f: Any) -> Any:
    from clusterkit.telemetry.cli import store_options

    return store_options(f)


@click.command("serve", context_settings={"ignore_unknown_options": False})
@click.option("--engine", type=click.Choice(["vllm", "sglang"]), default="vllm", show_default=True,
              help="The inference engine.")
@click.option("--model", required=True, metavar="NAME|DIR", help="The model, as the engine takes it.")
@click.option("--tp", type=click.IntRange(1, 4096), help="Tensor-parallel size, the total over a replica's nodes "
              "as both engines take it (default: the planner's with --gpu-mem-gib, else one node's GPUs).")
@click.option("--pp", type=click.IntRange(1, 4096), help="Pipeline-parallel size (default: the planner's, else 1).")
@click.option("--replicas", type=click.IntRange(1, 4096), help="Replicas, one Slurm job each (default: the "
              "planner's with --gpu-mem-gib, else 1).")
@click.option("--gpus-per-node", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--gpu-mem-gib", type=click.FloatRange(0, min_open=True), metavar="GIB",
              help="Memory of one GPU: without --tp/--pp, the planner (clusterkit deploy plan) chooses the layout "
                   "and the replicas for the healthy nodes.")
@click.option("--config", "config_spec", metavar="NAME|config.json",
              help="The model's config for the planner, when --model is not a shipped name or a local model.")
@click.option("--ray", "ray_mode", is_flag=True,
              help="vLLM over a Ray cluster the job starts (--distributed-executor-backend ray) instead of "
                   "vLLM's native multi-node mode.")
@click.option("--partition", metavar="NAME", help="The Slurm partition to serve from.")
@click.option("--nodes", "nodes_expr", metavar="HOSTLIST",
              help="The candidate nodes (with --partition: those of them). With --dry-run, Slurm is not asked.")
@click.option("--name", metavar="NAME", help="The deployment's name (default: from the model's name).")
@click.option("--served-model-name", metavar="NAME", help="The model name clients ask for.")
@click.option("--engine-command", metavar="CMD",
              help="How to start the engine on the nodes (default: 'vllm' / 'python -m sglang.launch_server').")
@click.option("--ray-command", metavar="CMD", help="How to start Ray on the nodes (--ray; default: 'ray').")
@click.option("--inventory", metavar="FILE",
              help="Inventory whose 'socket_ifname' label (defaults or per node) sets GLOO_SOCKET_IFNAME and "
                   "NCCL_SOCKET_IFNAME.")
@click.option("--max-validation-age", "max_age_h", default=24.0, show_default=True,
              type=click.FloatRange(0, 24 * 366, min_open=True), metavar="HOURS",
              help="Serve only on nodes whose last validation passed within this many hours.")
@click.option("--validation-report", "reports", multiple=True, metavar="FILE",
              help="Also take verdicts from this saved report (validate --output; repeatable). The newest "
                   "verdict of a node wins.")
@click.option("--force", is_flag=True,
              help="Serve on nodes without a passing recent validation too (said in the output). Drained "
                   "or down nodes stay out: Slurm would not start the job.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the job script(s); submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress goes to stderr).")
@click.option("--ready-timeout", type=click.FloatRange(1, 7 * 86400), metavar="SECONDS",
              help="Seconds from a job's start for rank 0 to answer its health check (default: from the "
                   "weights' size and the nodes' measured read rate, else 1800).")
@click.option("--alloc-timeout", default=600.0, show_default=True, type=click.FloatRange(1, 30 * 86400),
              metavar="SECONDS", help="Seconds a job may stay pending before the deployment is given up.")
@click.option("--weights-gb", type=click.FloatRange(0, min_open=True), metavar="GB",
              help="The size of the model's weights (default: summed when --model is a local directory).")
@click.option("--log-dir", metavar="DIR",
              help="Where the job's output and every rank's log go: a directory every node and this machine "
                   "share (default: ./clusterkit-serve-logs).")
@click.option("--port", "http_port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="HTTP port base: the port is this + job id % --port-span.")
@click.option("--master-port", default=29500, show_default=True, type=click.IntRange(1, 65535),
              help="Rendezvous port base (vLLM --master-port, SGLang --dist-init-addr).")
@click.option("--ray-port", default=6379, show_default=True, type=click.IntRange(1, 65535), help="Ray head port base.")
@click.option("--port-span", default=1000, show_default=True, type=click.IntRange(1, 20000))
@click.option("--time", "time_limit", metavar="TIME", help="sbatch --time (default: the partition's).")
@click.option("--account", metavar="NAME", help="sbatch --account.")
@click.option("--reservation", metavar="NAME", help="sbatch --reservation.")
@click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE", help="Export this in the job (repeatable).")
@click.option("--state-dir", metavar="DIR", envvar="CLUSTERKIT_STATE_DIR", help=_STATE_DIR_HELP)
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
@_store_options
def serve_cmd(engine: str, model: str, tp: Optional[int], pp: Optional[int], replicas: Optional[int],
              gpus_per_node: int, gpu_mem_gib: Optional[float], config_spec: Optional[str], ray_mode: bool, partition: Optional[str], nodes_expr: Optional[str],
              name: Optional[str], served_model_name: Optional[str], engine_command: Optional[str],
              ray_command: Optional[str], inventory: Optional[str], max_age_h: float, reports: tuple[str, ...],
              force: bool, dry_run: bool, as_json: bool, ready_timeout: Optional[float], alloc_timeout: float,
              weights_gb: Optional[float], log_dir: Optional[str], http_port: int, master_port: int,
              ray_port: int, port_span: int, time_limit: Optional[str], account: Optional[str],
              reservation: Optional[str], env_items: tuple[str, ...], state_dir: Optional[str],
              engine_args: tuple[str, ...], telemetry: Any = None) -> int:
    """Serve a model on validated nodes through Slurm, and wait until it answers.

    One sbatch job per replica, one task per node: vLLM's native multi-node mode (default),
    vLLM over Ray (--ray), or SGLang. Only nodes whose last validation passed (pass or warn)
    within --max-validation-age, and that Slurm has neither drained nor marked down, are used;
    every other one is named with its reason. Ready means rank 0 answers /health
    (/health_generate for SGLang) and every rank's task runs; a rank that dies is named with
    its log tail and every job is cancelled. Arguments after '--' go to the engine.
    """
    from clusterkit import hostlist
    from clusterkit.deploy import serve as srv
    from clusterkit.errors import UsageError
    from clusterkit.ledger import last_verdicts, merge, verdicts_from_files

    if not nodes_expr and not partition:
        raise UsageError("say where to serve: --partition NAME and/or --nodes HOSTLIST")
    req = srv.ServeRequest(
        engine=engine, model=model, tp=tp, pp=pp, replicas=replicas, gpus_per_node=gpus_per_node,
        mode="ray" if ray_mode else "native", partition=partition,
        nodes=hostlist.expand(nodes_expr, unique=True) if nodes_expr else None, name=name,
        served_model_name=served_model_name, engine_command=_words("--engine-command", engine_command),
        ray_command=_words("--ray-command", ray_command), log_dir=log_dir, http_port=http_port,
        master_port=master_port, ray_port=ray_port, port_span=port_span, time=time_limit, account=account,
        reservation=reservation, extra_args=list(engine_args), env=_env_pairs(env_items),
        socket_ifnames=_socket_ifnames(inventory), max_age_h=max_age_h, force=force, ready_timeout=ready_timeout,
        alloc_timeout=alloc_timeout, weights_bytes=int(weights_gb * 1e9) if weights_gb else None,
        gpu_mem_gib=gpu_mem_gib, config=config_spec)
    if ray_mode and engine != "vllm":
        raise UsageError("--ray is for vLLM only")
    verdicts = merge(last_verdicts(state_dir), verdicts_from_files(reports))
    settings = telemetry.settings() if telemetry is not None else None  # bad options: exit 2 before anything

    backend = None
    slurm_nodes = None
    if not (dry_run and req.nodes is not None):
        from clusterkit.slurm.backend import CliBackend

        backend = CliBackend()
        slurm_nodes = backend.nodes(partition=partition, names=req.nodes)
    if req.nodes is not None:
        candidates = list(req.nodes)
    else:
        candidates = [n.name for n in slurm_nodes or []]
    plan = srv.make_plan(req, verdicts=verdicts, slurm_nodes=slurm_nodes, candidates=candidates)

    out = click.echo
    progress = (lambda m: click.echo(m, err=True)) if as_json else out
    from clusterkit.deploy.render import render

    if dry_run:
        scripts = [render(p) for p in plan.params]
        if as_json:
            out(json.dumps({"plan": plan.to_dict(), "scripts": scripts, "dry_run": True}, indent=2))
            return 0
        for line in plan.lines():
            out(f"# {line}")
        out("# dry run: nothing submitted")
        for i, s in enumerate(scripts):
            out(f"# ---- replica {i}: job script ({', '.join(plan.groups[i])}) ----")
            out(s, nl=False)
        return 0
    if not as_json:
        for line in plan.lines():
            out(line)
    assert backend is not None
    dep = srv.submit(plan, backend, state_dir, progress)
    try:
        dep = srv.watch(dep, backend, deadline_s=plan.deadline_s, alloc_timeout=req.alloc_timeout,
                        echo=progress, state_dir=state_dir)
    except srv.ServeFailed as e:
        _send_metrics(dep, plan, settings)
        if as_json:
            out(json.dumps({"plan": plan.to_dict(), "deployment": dep.model_dump(), "ready": False,
                            "error": str(e)}, indent=2))
        raise
    _send_metrics(dep, plan, settings)
    endpoints = [f"{r.endpoint}/v1" for r in dep.replicas if r.endpoint]
    if as_json:
        out(json.dumps({"plan": plan.to_dict(), "deployment": dep.model_dump(), "ready": True,
                        "endpoints": endpoints}, indent=2))
    else:
        out(f"deployment {dep.name} ready: {len(dep.replicas)} replica(s)")
        if dep.forced:
            out(f"FORCED: serving on node(s) without a passing recent validation: {', '.join(dep.forced)}")
        out("endpoints (OpenAI-compatible):")
        for url in endpoints:
            out(f"  {url}")
        out(f"status: clusterkit deploy status {dep.name}; stop: clusterkit deploy stop {dep.name}")
    return 0


def _send_metrics(dep: Any, plan: Any, settings: Any) -> None:
    """Time to ready, rank failures and KV-cache tokens to the metrics store (--influx-url):
    the schema of docs/metrics.md, measurement clusterkit_deploy. Store trouble: a warning."""
    if settings is None or settings.url is None:
        return
    from clusterkit.deploy.metrics import deploy_lines
    from clusterkit.telemetry.cli import send_lines

    send_lines(deploy_lines(dep, kv_tokens=plan.kv_tokens, string_fields=settings.string_fields), settings,
               warn=lambda m: click.echo(f"clusterkit: warning: {m}", err=True))


def _select(names: tuple[str, ...], show_all: bool, state_dir: Optional[str], *, default_live: bool) -> list[Any]:
    from clusterkit.deploy.serve import load_deployments
    from clusterkit.errors import UsageError

    deps = load_deployments(state_dir)
    if names:
        unknown = [n for n in names if n not in deps]
        if unknown:
            raise UsageError(f"no deployment {', '.join(unknown)}; known: {', '.join(sorted(deps)) or 'none'}")
        return [deps[n] for n in names]
    if show_all or not default_live:
        return list(deps.values())
    return [d for d in deps.values() if d.state != "stopped"]


@click.command("status")
@click.argument("names", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="Also deployments that were stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--state-dir", metavar="DIR", envvar="CLUSTERKIT_STATE_DIR", help=_STATE_DIR_HELP)
def status_cmd(names: tuple[str, ...], show_all: bool, as_json: bool, state_dir: Optional[str]) -> int:
    """Deployments: endpoints, replicas, the nodes of each and the state of every rank.

    A rank's state is Slurm's: pending, running (the job's serving step runs, and with it every
    rank's task), or how its task ended (srun's report). Health is rank 0's health check now.
    """
    from clusterkit.deploy.serve import format_status, status
    from clusterkit.slurm.backend import CliBackend

    deps = _select(names, show_all, state_dir, default_live=True)
    rows = status(deps, CliBackend()) if deps else []
    if as_json:
        click.echo(json.dumps({"deployments": rows}, indent=2))
    else:
        for line in format_status(rows):
            click.echo(line)
    return 0


@click.command("stop")
@click.argument("names", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every recorded deployment that is not stopped.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds to wait for the jobs to end.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--state-dir", metavar="DIR", envvar="CLUSTERKIT_STATE_DIR", help=_STATE_DIR_HELP)
def stop_cmd(names: tuple[str, ...], stop_all: bool, timeout: float, as_json: bool, state_dir: Optional[str]) -> int:
    """Stop deployments: cancel their jobs (scancel) and wait for them to end."""
    from clusterkit.deploy.serve import stop
    from clusterkit.errors import UsageError
    from clusterkit.slurm.backend import CliBackend

    if not names and not stop_all:
        raise UsageError("name the deployment(s) to stop, or give --all")
    deps = _select(names, False, state_dir, default_live=True)
    rows = stop(deps, CliBackend(), state_dir, timeout=timeout) if deps else []
    if as_json:
        click.echo(json.dumps({"stopped": rows}, indent=2))
    else:
        if not rows:
            click.echo("nothing to stop")
        for r in rows:
            jobs = f"job(s) {', '.join(r['cancelled'])} cancelled" if r["cancelled"] else "no job was running"
            late = f"; still ending: {', '.join(r['still_ending'])}" if r["still_ending"] else ""
            click.echo(f"stopped {r['name']}: {jobs}{late}")
    return 1 if any(r["still_ending"] for r in rows) else 0

