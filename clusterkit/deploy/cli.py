"""``clusterkit deploy …``: plan an LLM deployment on the healthy nodes (``plan`` here); the
serving commands (``clusterkit.deploy.cli_serve``) and ``deploy agent`` (clusterkit onto the
nodes, ``clusterkit.deploy.cli_agent``) are imported only when they run.

Exit codes: 0 a plan; 2 bad input, an unknown model, or a plan that cannot fit (the error line
shows the arithmetic).
"""

from __future__ import annotations

import sys
from typing import Optional

import click

from clusterkit.lazygroup import LazyGroup

EXIT_OK = 0


def _warn(message: str) -> None:
    try:
        click.echo(f"clusterkit: warning: {' '.join(message.split())}", err=True)
    except OSError:
        pass


@click.group("deploy", cls=LazyGroup, lazy={
    "serve": "clusterkit.deploy.cli_serve:serve_cmd", "status": "clusterkit.deploy.cli_serve:status_cmd",
    "stop": "clusterkit.deploy.cli_serve:stop_cmd", "agent": "clusterkit.deploy.cli_agent:agent_cmd"})
def deploy_group() -> None:
    """Deploy LLM inference on the healthy nodes: plan the layout and the KV cache."""


@deploy_group.command("plan")
@click.option("--model", "model_spec", required=True, metavar="NAME|config.json",
              help="A shipped model (llama-3.1-8b, llama-3.1-70b, llama-3.1-405b, qwen2.5-72b, mixtral-8x7b, "
                   "deepseek-v3) or the path of a Hugging Face config.json (or of its directory).")
@click.option("--gpus-per-node", required=True, type=click.IntRange(1, 1024), metavar="N",
              help="GPUs per node: one NVLink domain, the largest tensor-parallel size.")
@click.option("--gpu-mem-gib", required=True, type=click.FloatRange(min=0, min_open=True), metavar="GIB",
              help="Memory of one GPU, GiB (80 for H100 80GB, 141 for H200; torch sees slightly less).")
@click.option("--dtype", type=click.Choice(["bf16", "fp8"]), default="bf16", show_default=True,
              help="Weights: bf16 (2 bytes) or fp8 (1 byte).")
@click.option("--kv-dtype", type=click.Choice(["auto", "fp8"]), default="auto", show_default=True,
              help="KV cache: auto (the model's bf16, 2 bytes) or fp8 (1 byte).")
@click.option("--max-model-len", type=click.IntRange(min=1), metavar="N",
              help="Tokens per request (prompt + output). Default: the model's max_position_embeddings.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True, metavar="C",
              help="Requests of --max-model-len tokens each replica must hold at once.")
@click.option("--engine", type=click.Choice(["vllm", "sglang"]), default="vllm", show_default=True,
              help="The inference engine whose memory defaults apply.")
@click.option("--engine-version", metavar="VERSION",
              help="The engine version to assume (default: the pinned one, vLLM 0.21.0 / SGLang 0.4.6).")
@click.option("--gpu-memory-utilization", "memory_fraction", type=click.FloatRange(0, 1, min_open=True),
              metavar="F", help="Memory fraction to assume instead of the engine's default.")
@click.option("--nodes", type=click.IntRange(min=1), metavar="N",
              help="Healthy nodes available: bounds PP and sets how many replicas are spread over them.")
@click.option("--tp", type=click.IntRange(min=1), metavar="N", help="Force the tensor-parallel size.")
@click.option("--pp", type=click.IntRange(min=1), metavar="N", help="Force the pipeline-parallel size.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_cmd(model_spec: str, gpus_per_node: int, gpu_mem_gib: float, dtype: str, kv_dtype: str,
             max_model_len: Optional[int], concurrency: int, engine: str, engine_version: Optional[str],
             memory_fraction: Optional[float], nodes: Optional[int], tp: Optional[int], pp: Optional[int],
             as_json: bool) -> int:
    """Plan a deployment: the smallest TP × PP layout that holds --concurrency requests of
    --max-model-len tokens, the weights and KV cache per GPU, and the KV-cache size and maximum
    concurrency as vLLM states them. No GPU and no network are needed (docs/deploy.md).

    Exit 0 a plan, 2 bad input, an unknown model or a plan that cannot fit (with the arithmetic).
    """
    from clusterkit.deploy.models import load_model
    from clusterkit.deploy.plan import plan

    model = load_model(model_spec)
    result = plan(model, gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem_gib, dtype=dtype, kv_dtype=kv_dtype,
                  max_model_len=max_model_len, concurrency=concurrency, engine=engine, nodes=nodes,
                  engine_version=engine_version, memory_fraction=memory_fraction, tp=tp, pp=pp)
    if as_json:
        for w in result.warnings:
            _warn(w)
        click.echo(result.to_json())
    else:
        click.echo(result.explain())
    return EXIT_OK



if __name__ == "__main__":  # pragma: no cover
    sys.exit(deploy_group())
