"""``clusterkit deploy plan``: how to lay a model out on a fleet of GPU nodes, and how much KV
cache it is left with. Pure arithmetic: no GPU, no network (docs/deploy.md, "Planning").

::

    weights per GPU          = params × bytes(dtype) ÷ (TP × PP)
    KV per token per GPU     = 2 × ⌈L/PP⌉ × max(1, H_kv/TP) × d_head × bytes(kv dtype)
                   (MLA)     =     ⌈L/PP⌉ × (kv_lora_rank + qk_rope_head_dim) × bytes(kv dtype)
    budget per GPU           = fraction × GPU memory − weights per GPU − overhead
    blocks                   = ⌊budget ÷ (block size × KV per token per GPU)⌋
    KV-cache tokens          = blocks × block size
    max concurrency (L tok.) = blocks ÷ ⌈L ÷ block size⌉

The layout: TP within a node's NVLink domain (a divisor of the GPUs per node that the heads
allow), PP across nodes (only once TP fills the domain); the smallest TP × PP that holds
``concurrency`` requests of ``max_model_len`` tokens wins, larger TP first at equal size.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from clusterkit.deploy.models import ModelConfig, load_model
from clusterkit.errors import UsageError

GIB = 1 << 30

#: bytes per weight / KV element. bf16: 2 bytes; fp8 (E4M3): 1 byte.
DTYPE_BYTES = {"bf16": 2, "fp8": 1}
#: --kv-dtype auto: vLLM's kv_cache_dtype "auto" stores the cache in the model's activation dtype,
#: bf16 here, even when the weights are fp8.
KV_AUTO_BYTES = 2

ENGINES = ("vllm", "sglang")

#: The vLLM version the defaults are pinned to: 0.21.0 turned CUDA-graph memory profiling on by
#: default and raised the default --gpu-memory-utilization from 0.9 to 0.92 with it
#: (vllm-project/vllm PR #38284).
VLLM_PINNED_VERSION = "0.21.0"
VLLM_FRACTION = 0.92
#: vLLM up to 0.20.x: --gpu-memory-utilization 0.9 (CacheConfig's default since 2023).
VLLM_LEGACY_FRACTION = 0.9
#: vLLM's default KV-cache block size on CUDA (CacheConfig.block_size): 16 tokens.
VLLM_BLOCK_SIZE = 16

#: SGLang: --mem-fraction-static by TP size, the table of SGLang 0.4.x's server_args.py
#: (pinned 0.4.6); its page size defaults to 1 token.
SGLANG_PINNED_VERSION = "0.4.6"
SGLANG_FRACTIONS = ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88))
SGLANG_PAGE_SIZE = 1

#: Overhead per GPU, GiB: estimates, not measurements (docs/deploy.md, "The overhead").
#: activations: the torch peak of vLLM's profiling run (a dummy batch of max_num_batched_tokens
#: plus a sampler pass over full-vocabulary fp32 logits), 1–3 GiB for these models.
ACTIVATIONS_GIB = 2.0
#: non-torch memory: NCCL communicators, custom all-reduce buffers, cuBLAS workspaces.
NON_TORCH_GIB = 1.0
#: CUDA graphs: the graph pool for vLLM's default capture sizes (counted inside the budget only
#: from vLLM 0.21.0, which profiles it; earlier versions capture after sizing the KV cache).
CUDA_GRAPHS_GIB = 1.0


def _version_tuple(text: str) -> tuple[int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[.+-]?[0-9A-Za-z.+-]*)?$", text.strip())
    if not m:
        raise UsageError(f"--engine-version {text!r}: give a version such as {VLLM_PINNED_VERSION}")
    return int(m.group(1)), int(m.group(2))


class EngineSettings(BaseModel):
    """What the target engine's defaults mean for one layout."""

    model_config = ConfigDict(frozen=True)

    engine: str
    engine_version: str
    memory_fraction: float
    fraction_source: str
    block_size: int
    activations_gib: float
    non_torch_gib: float
    cuda_graphs_gib: float

    @property
    def overhead_gib(self) -> float:
        return self.activations_gib + self.non_torch_gib + self.cuda_graphs_gib


def engine_settings(engine: str, engine_version: Optional[str] = None, *, tp: int = 1,
                    memory_fraction: Optional[float] = None) -> EngineSettings:
    """The memory fraction, block size and overhead terms of ``engine`` at ``engine_version``
    (default: the pinned version)."""
    block_size: int
    activations: float
    graphs: float
    if engine == "vllm":
        version = engine_version or VLLM_PINNED_VERSION
        current = _version_tuple(version) >= _version_tuple(VLLM_PINNED_VERSION)
        fraction = VLLM_FRACTION if current else VLLM_LEGACY_FRACTION
        source = (f"vLLM --gpu-memory-utilization default since {VLLM_PINNED_VERSION}" if current
                  else f"vLLM --gpu-memory-utilization default before {VLLM_PINNED_VERSION}")
        block_size, activations = VLLM_BLOCK_SIZE, ACTIVATIONS_GIB
        graphs = CUDA_GRAPHS_GIB if current else 0.0
    elif engine == "sglang":
        version = engine_version or SGLANG_PINNED_VERSION
        _version_tuple(version)
        fraction = next(f for min_tp, f in SGLANG_FRACTIONS if tp >= min_tp)
        source = f"SGLang {SGLANG_PINNED_VERSION} --mem-fraction-static default for TP={tp}"
        # mem_fraction_static covers weights and the KV pool; activations and CUDA graphs live in the rest
        block_size, activations, graphs = SGLANG_PAGE_SIZE, 0.0, 0.0
    else:
        raise UsageError(f"unknown engine {engine!r}; one of: {', '.join(ENGINES)}")
    if memory_fraction is not None:
        if not 0 < memory_fraction <= 1:
            raise UsageError(f"memory fraction {memory_fraction} is not in (0, 1]")
        fraction, source = memory_fraction, "given"
    return EngineSettings(engine=engine, engine_version=version, memory_fraction=fraction, fraction_source=source,
                          block_size=block_size, activations_gib=activations, non_torch_gib=NON_TORCH_GIB,
                          cuda_graphs_gib=graphs)


# ---------------------------------------------------------------------- the result
class Budget(BaseModel):
    """One GPU's memory, term by term, GiB (rounded to 2 decimals)."""

    gpu_mem_gib: float
    memory_fraction: float
    usable_gib: float = Field(description="memory fraction × GPU memory")
    weights_gib: float
    activations_gib: float
    non_torch_gib: float
    cuda_graphs_gib: float
    overhead_gib: float
    kv_cache_gib: float = Field(description="usable − weights − overhead: what the KV cache gets")


class Plan(BaseModel):
    """A layout and what it leaves for the KV cache. Per replica unless the name says otherwise."""

    model: str
    params: int
    params_source: str
    dtype: str
    kv_dtype: str
    weight_bytes: int
    kv_bytes: int
    engine: str
    engine_version: str
    memory_fraction: float
    fraction_source: str
    block_size: int

    gpus_per_node: int
    gpu_mem_gib: float
    nodes: Optional[int]
    tp: int
    pp: int
    gpus_per_replica: int
    nodes_per_replica: int
    replicas_per_node: int
    replicas: int

    max_model_len: int
    concurrency: int
    layers_per_gpu: int
    kv_heads_per_gpu: Optional[int]
    mla: bool
    kv_bytes_per_token_per_gpu: int
    weights_bytes_per_gpu: int
    weights_gib_per_gpu: float
    kv_cache_bytes_per_gpu: int
    kv_cache_gib_per_gpu: float
    num_blocks: int
    kv_tokens: int
    tokens_needed: int
    max_concurrency: float
    budget: Budget
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def kv_lines(self) -> list[str]:
        """The two lines vLLM logs at start-up."""
        return [f"GPU KV cache size: {self.kv_tokens:,} tokens",
                f"Maximum concurrency for {self.max_model_len:,} tokens per request: {self.max_concurrency:.2f}x"]

    def explain(self) -> str:
        b = self.budget
        wname = "bf16" if self.weight_bytes == 2 else "fp8"
        kvname = "bf16" if self.kv_bytes == 2 else "fp8"
        if self.mla:
            width = self.kv_bytes_per_token_per_gpu // (self.layers_per_gpu * self.kv_bytes)
            kv_formula = (f"{self.layers_per_gpu} layers × {width} (MLA latent + rope key) × {self.kv_bytes} B")
        else:
            d = self.kv_bytes_per_token_per_gpu // (2 * self.layers_per_gpu * (self.kv_heads_per_gpu or 1)
                                                    * self.kv_bytes)
            kv_formula = (f"2 × {self.layers_per_gpu} layers × {self.kv_heads_per_gpu} KV head(s) × {d} "
                          f"× {self.kv_bytes} B")
        where = (f"{self.replicas_per_node} replicas fit a node of {self.gpus_per_node} GPUs"
                 if self.replicas_per_node > 1 else f"nodes of {self.gpus_per_node} GPUs")
        nodes = f" on {self.nodes} node(s)" if self.nodes is not None else " (no --nodes: one replica)"
        overhead = " + ".join(f"{name} {v:.2f}" for name, v in (("activations", b.activations_gib),
                                                                ("non-torch", b.non_torch_gib),
                                                                ("CUDA graphs", b.cuda_graphs_gib)) if v)
        lines = [
            f"model: {self.model}, {self.params:,} parameters ({self.params_source}); {wname} weights, "
            f"{kvname} KV cache (--kv-dtype {self.kv_dtype})",
            f"engine: {self.engine} {self.engine_version}, memory fraction {self.memory_fraction:g} "
            f"({self.fraction_source}), blocks of {self.block_size} token(s)",
            f"layout: TP={self.tp} × PP={self.pp} = {self.gpus_per_replica} GPU(s) per replica, "
            f"{self.nodes_per_replica} node(s) per replica ({where}); {self.replicas} replica(s){nodes}",
            f"weights per GPU: {self.params:,} × {self.weight_bytes} B ÷ ({self.tp} × {self.pp}) = "
            f"{self.weights_gib_per_gpu:.2f} GiB",
            f"KV per token per GPU: {kv_formula} = {self.kv_bytes_per_token_per_gpu:,} B",
            f"budget per GPU: {b.memory_fraction:g} × {b.gpu_mem_gib:g} GiB = {b.usable_gib:.2f} GiB − "
            f"{b.weights_gib:.2f} GiB weights − {b.overhead_gib:.2f} GiB overhead ({overhead or 'none'}) = "
            f"{b.kv_cache_gib:.2f} GiB for the KV cache",
            f"blocks: {self.kv_cache_bytes_per_gpu:,} B ÷ ({self.block_size} × {self.kv_bytes_per_token_per_gpu:,} B) "
            f"= {self.num_blocks:,}",
            *self.kv_lines(),
            f"needed: {self.concurrency} × {self.max_model_len:,} tokens = {self.tokens_needed:,} tokens in blocks "
            f"of {self.block_size}: fits",
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------- the arithmetic
def tp_problem(model: ModelConfig, tp: int) -> Optional[str]:
    """Why TP=tp cannot shard this model (None: it can)."""
    if model.num_attention_heads % tp:
        return f"{model.num_attention_heads} attention heads are not divisible by TP={tp}"
    if not model.is_mla and model.kv_heads % tp and tp % model.kv_heads:
        return f"{model.kv_heads} KV heads and TP={tp}: neither divides the other"
    if model.num_moe_layers < model.num_hidden_layers and model.intermediate_size % tp:
        return f"intermediate_size {model.intermediate_size} is not divisible by TP={tp}"
    if model.is_moe and model.expert_intermediate_size % tp:
        return f"expert intermediate size {model.expert_intermediate_size} is not divisible by TP={tp}"
    return None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _gib(n: int | Fraction) -> float:
    return round(float(Fraction(n) / GIB), 2)


class _Try(BaseModel):
    """The arithmetic of one layout."""

    tp: int
    pp: int
    settings: EngineSettings
    weights_bytes: int
    usable_bytes: int
    overhead_bytes: int
    budget_bytes: int
    layers: int
    kv_heads_per_gpu: Optional[int]
    per_token: int
    num_blocks: int
    blocks_per_request: int
    blocks_needed: int

    @property
    def fits(self) -> bool:
        return self.budget_bytes > 0 and self.num_blocks >= self.blocks_needed


def _evaluate(model: ModelConfig, *, tp: int, pp: int, gpu_mem_gib: float, weight_bytes: int, kv_bytes: int,
              max_model_len: int, concurrency: int, engine: str, engine_version: Optional[str],
              memory_fraction: Optional[float]) -> _Try:
    s = engine_settings(engine, engine_version, tp=tp, memory_fraction=memory_fraction)
    weights = _ceil_div(model.params * weight_bytes, tp * pp)
    usable = math.floor(Fraction(str(gpu_mem_gib)) * GIB * Fraction(str(s.memory_fraction)))
    overhead = math.ceil(Fraction(str(s.overhead_gib)) * GIB)
    budget = usable - weights - overhead
    layers = _ceil_div(model.num_hidden_layers, pp)
    if model.is_mla:
        kvh: Optional[int] = None
        per_token = layers * model.mla_cache_width * kv_bytes
    else:
        kvh = max(1, model.kv_heads // tp)
        per_token = 2 * layers * kvh * model.d_head * kv_bytes
    blocks = max(0, budget) // (s.block_size * per_token)
    per_request = _ceil_div(max_model_len, s.block_size)
    return _Try(tp=tp, pp=pp, settings=s, weights_bytes=weights, usable_bytes=usable, overhead_bytes=overhead,
                budget_bytes=budget, layers=layers, kv_heads_per_gpu=kvh, per_token=per_token, num_blocks=blocks,
                blocks_per_request=per_request, blocks_needed=concurrency * per_request)


def _nodes_per_replica(tp: int, pp: int, gpus_per_node: int) -> int:
    return _ceil_div(tp * pp, gpus_per_node)


def _refusal(model: ModelConfig, t: _Try, *, gpus_per_node: int, gpu_mem_gib: float, nodes: Optional[int],
             weight_bytes: int, max_model_len: int, concurrency: int) -> UsageError:
    s = t.settings
    where = f"{nodes} node(s) of {gpus_per_node} × {gpu_mem_gib:g} GiB" if nodes is not None else \
        f"nodes of {gpus_per_node} × {gpu_mem_gib:g} GiB"
    head = (f"{model.label} does not fit on {where}: the largest layout tried, TP={t.tp} × PP={t.pp} "
            f"({_nodes_per_replica(t.tp, t.pp, gpus_per_node)} node(s)): weights {model.params:,} × {weight_bytes} B "
            f"÷ {t.tp * t.pp} = {_gib(t.weights_bytes):.2f} GiB per GPU; budget {s.memory_fraction:g} × "
            f"{gpu_mem_gib:g} GiB − {_gib(t.weights_bytes):.2f} − {s.overhead_gib:.2f} overhead = "
            f"{_gib(t.budget_bytes):.2f} GiB")
    if t.budget_bytes <= 0:
        tail = "; nothing is left for the KV cache"
    else:
        tail = (f"; KV {t.per_token:,} B per token per GPU → {t.num_blocks:,} blocks of {s.block_size} = "
                f"{t.num_blocks * s.block_size:,} tokens, but {concurrency} × {max_model_len:,} tokens need "
                f"{t.blocks_needed:,} blocks ({t.blocks_needed * s.block_size:,} tokens)")
    hint = ("; try more --nodes, --dtype fp8, --kv-dtype fp8, a smaller --max-model-len or --concurrency"
            if nodes is not None else "; try --dtype fp8, --kv-dtype fp8, a smaller --max-model-len or --concurrency")
    return UsageError(head + tail + hint)


def plan(model: ModelConfig | str, *, gpus_per_node: int, gpu_mem_gib: float, dtype: str = "bf16", kv_dtype: str = "auto",
         max_model_len: Optional[int] = None, concurrency: int = 1, engine: str = "vllm", nodes: Optional[int] = None,
         engine_version: Optional[str] = None, memory_fraction: Optional[float] = None, tp: Optional[int] = None,
         pp: Optional[int] = None) -> Plan:
    """The smallest layout of ``model`` that holds ``concurrency`` requests of ``max_model_len``
    tokens (default: the model's max_position_embeddings). ``tp``/``pp`` force a layout.
    Impossible plans and bad input raise UsageError (exit 2), with the arithmetic. ``model``
    may be a ModelConfig or what ``--model`` takes (a shipped name, a config.json path)."""
    if isinstance(model, str):
        model = load_model(model)
    if gpus_per_node < 1:
        raise UsageError(f"--gpus-per-node {gpus_per_node}: give at least 1")
    if not gpu_mem_gib > 0:
        raise UsageError(f"--gpu-mem-gib {gpu_mem_gib}: give a positive size")
    if dtype not in DTYPE_BYTES:
        raise UsageError(f"unknown --dtype {dtype!r}; one of: {', '.join(DTYPE_BYTES)}")
    if kv_dtype not in ("auto", "fp8"):
        raise UsageError(f"unknown --kv-dtype {kv_dtype!r}; one of: auto, fp8")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; one of: {', '.join(ENGINES)}")
    if concurrency < 1:
        raise UsageError(f"--concurrency {concurrency}: give at least 1")
    if nodes is not None and nodes < 1:
        raise UsageError(f"--nodes {nodes}: give at least 1")
    limit = model.max_position_embeddings
    if max_model_len is None:
        if limit is None:
            raise UsageError(f"{model.label}: the config has no max_position_embeddings; give --max-model-len")
        max_model_len = limit
    if max_model_len < 1:
        raise UsageError(f"--max-model-len {max_model_len}: give at least 1")
    if limit is not None and max_model_len > limit:
        raise UsageError(f"--max-model-len {max_model_len:,} is longer than {model.label}'s "
                         f"max_position_embeddings {limit:,} (vLLM refuses it too)")
    weight_bytes = DTYPE_BYTES[dtype]
    kv_bytes = KV_AUTO_BYTES if kv_dtype == "auto" else DTYPE_BYTES[kv_dtype]

    divisors = [t for t in range(1, gpus_per_node + 1) if gpus_per_node % t == 0]
    valid = [t for t in divisors if tp_problem(model, t) is None]
    if tp is not None:
        if tp not in divisors:
            raise UsageError(f"--tp {tp}: tensor parallelism stays inside a node: give a divisor of "
                             f"--gpus-per-node {gpus_per_node} ({', '.join(map(str, divisors))})")
        why = tp_problem(model, tp)
        if why:
            raise UsageError(f"--tp {tp}: {why}")
        tps = [tp]
    else:
        if not valid:
            raise UsageError(f"{model.label}: no tensor-parallel size divides both {gpus_per_node} GPUs per node and "
                             f"the model: {tp_problem(model, gpus_per_node)}")
        tps = valid
    if pp is not None and not 1 <= pp <= model.num_hidden_layers:
        raise UsageError(f"--pp {pp}: give 1 to {model.num_hidden_layers} (the model's layers)")

    candidates: list[tuple[int, int]] = []
    widest = max(tps)
    for t in tps:
        for p in ([pp] if pp is not None else range(1, model.num_hidden_layers + 1)):
            if p > 1 and pp is None and t != widest:
                continue  # PP only once TP fills the NVLink domain
            if nodes is not None and _nodes_per_replica(t, p, gpus_per_node) > nodes:
                break
            candidates.append((t, p))
    if not candidates:
        t = tps[0]
        p = pp or 1
        raise UsageError(f"TP={t} × PP={p} needs {_nodes_per_replica(t, p, gpus_per_node)} node(s) of "
                         f"{gpus_per_node} GPUs; --nodes is {nodes}")
    candidates.sort(key=lambda tp_pp: (tp_pp[0] * tp_pp[1], -tp_pp[0]))

    chosen: Optional[_Try] = None
    last: Optional[_Try] = None
    for t, p in candidates:
        last = _evaluate(model, tp=t, pp=p, gpu_mem_gib=gpu_mem_gib, weight_bytes=weight_bytes, kv_bytes=kv_bytes,
                         max_model_len=max_model_len, concurrency=concurrency, engine=engine,
                         engine_version=engine_version, memory_fraction=memory_fraction)
        if last.fits:
            chosen = last
            break
    assert last is not None
    if chosen is None:
        raise _refusal(model, last, gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem_gib, nodes=nodes,
                       weight_bytes=weight_bytes, max_model_len=max_model_len, concurrency=concurrency)
    return _to_plan(model, chosen, gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem_gib, nodes=nodes, dtype=dtype,
                    kv_dtype=kv_dtype, weight_bytes=weight_bytes, kv_bytes=kv_bytes, max_model_len=max_model_len,
                    concurrency=concurrency)


def _to_plan(model: ModelConfig, t: _Try, *, gpus_per_node: int, gpu_mem_gib: float, nodes: Optional[int], dtype: str,
             kv_dtype: str, weight_bytes: int, kv_bytes: int, max_model_len: int, concurrency: int) -> Plan:
    s = t.settings
    gpus = t.tp * t.pp
    npr = _nodes_per_replica(t.tp, t.pp, gpus_per_node)
    per_node = gpus_per_node // gpus if npr == 1 else 0
    replicas = 1 if nodes is None else (nodes * per_node if npr == 1 else nodes // npr)
    warnings: list[str] = []
    notes: list[str] = []
    if not model.is_mla and t.tp > model.kv_heads:
        copies = t.tp // model.kv_heads
        warnings.append(f"TP={t.tp} > {model.kv_heads} KV heads: KV heads are replicated, each GPU stores 1 KV head "
                        f"per layer and every head is stored {copies} times; the KV cache per GPU does not shrink "
                        f"past TP={model.kv_heads}")
    if model.is_mla:
        notes.append(f"MLA: {model.mla_cache_width} elements per token and layer (kv_lora_rank {model.kv_lora_rank} "
                     f"+ qk_rope_head_dim {model.qk_rope_head_dim}), no separate K and V, and the latent cache is "
                     f"not sharded by TP: each of the {t.tp} GPUs of a stage holds all of it")
    if model.is_moe:
        notes.append(f"MoE: all {model.num_experts} experts of every MoE layer are resident (sharded by TP), "
                     f"not only the {model.num_experts_per_tok or '?'} active per token")
    if dtype == "fp8" and kv_dtype == "auto":
        notes.append("fp8 weights with --kv-dtype auto: the KV cache stays bf16 (2 bytes)")
    kv_cache = max(0, t.budget_bytes)
    budget = Budget(gpu_mem_gib=gpu_mem_gib, memory_fraction=s.memory_fraction, usable_gib=_gib(t.usable_bytes),
                    weights_gib=_gib(t.weights_bytes), activations_gib=s.activations_gib,
                    non_torch_gib=s.non_torch_gib, cuda_graphs_gib=s.cuda_graphs_gib,
                    overhead_gib=round(s.overhead_gib, 2), kv_cache_gib=_gib(kv_cache))
    return Plan(
        model=model.label, params=model.params,
        params_source="num_parameters" if model.num_parameters else "computed from config.json",
        dtype=dtype, kv_dtype=kv_dtype, weight_bytes=weight_bytes, kv_bytes=kv_bytes,
        engine=s.engine, engine_version=s.engine_version, memory_fraction=s.memory_fraction,
        fraction_source=s.fraction_source, block_size=s.block_size,
        gpus_per_node=gpus_per_node, gpu_mem_gib=gpu_mem_gib, nodes=nodes, tp=t.tp, pp=t.pp, gpus_per_replica=gpus,
        nodes_per_replica=npr, replicas_per_node=per_node, replicas=replicas,
        max_model_len=max_model_len, concurrency=concurrency, layers_per_gpu=t.layers,
        kv_heads_per_gpu=t.kv_heads_per_gpu, mla=model.is_mla, kv_bytes_per_token_per_gpu=t.per_token,
        weights_bytes_per_gpu=t.weights_bytes, weights_gib_per_gpu=_gib(t.weights_bytes),
        kv_cache_bytes_per_gpu=kv_cache, kv_cache_gib_per_gpu=_gib(kv_cache),
        num_blocks=t.num_blocks, kv_tokens=t.num_blocks * s.block_size,
        tokens_needed=t.blocks_needed * s.block_size,
        max_concurrency=round(t.num_blocks / t.blocks_per_request, 2),
        budget=budget, warnings=warnings, notes=notes,
    )
