"""Model configurations for ``clusterkit deploy plan``: a Hugging Face-style ``config.json``,
read without any network, and the parameter count computed from it.

A model is given by the name of a shipped config (``clusterkit/deploy/configs/<name>.json``,
copied from the models' public ``config.json`` files) or by a path to a ``config.json`` (or to
the directory that holds one). Only the fields that size a model are read; any other field of
the file is ignored.

Parameter count (docs/deploy.md, "Parameter count")::

    embedding      V·h                     (+ V·h for lm_head unless tie_word_embeddings)
    attention      GQA/MHA: h·H·d (q) + 2·h·H_kv·d (k, v) + H·d·h (o), plus biases when the
                   architecture has them (Qwen2: q, k, v; attention_bias: q, k, v, o)
                   MLA:     h·q_lora + q_lora + q_lora·H·(d_nope+d_rope)    (or h·H·(d_nope+d_rope)
                            without q_lora_rank)
                            + h·(kv_lora+d_rope) + kv_lora + kv_lora·H·(d_nope+d_v) + H·d_v·h
    dense MLP      3·h·I                   (gate, up, down)
    MoE MLP        (E + S)·3·h·I_e + E·h   (routed and shared experts, router)
                   + E                     (DeepSeek-V3's e_score_correction_bias, noaux_tc)
    norms          2·h per layer + h final (RMSNorm weights)

DeepSeek-V3's multi-token-prediction layer (``num_nextn_predict_layers``) is not counted: vLLM
loads it only for speculative decoding, and DeepSeek's own 671B excludes it (685B with it).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clusterkit.errors import ConfigError, UsageError

#: the directory of the shipped configs, inside the package
CONFIG_DIR = "configs"


class ModelConfig(BaseModel):
    """The fields of a Hugging Face ``config.json`` that size a model. Unknown fields are ignored;
    ``num_parameters`` (not an HF field) overrides the computed parameter count."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, protected_namespaces=())

    name: str = ""
    name_or_path: Optional[str] = Field(default=None, alias="_name_or_path")
    model_type: str = ""
    architectures: list[str] = Field(default_factory=list)

    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: Optional[int] = Field(default=None, gt=0)
    head_dim: Optional[int] = Field(default=None, gt=0)
    vocab_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: Optional[bool] = None
    max_position_embeddings: Optional[int] = Field(default=None, gt=0)
    torch_dtype: Optional[str] = None

    # MoE (Mixtral: num_local_experts; DeepSeek: n_routed_experts, n_shared_experts, …)
    num_local_experts: Optional[int] = Field(default=None, ge=0)
    n_routed_experts: Optional[int] = Field(default=None, ge=0)
    n_shared_experts: Optional[int] = Field(default=None, ge=0)
    moe_intermediate_size: Optional[int] = Field(default=None, gt=0)
    num_experts_per_tok: Optional[int] = Field(default=None, ge=0)
    first_k_dense_replace: int = Field(default=0, ge=0)
    moe_layer_freq: int = Field(default=1, gt=0)
    topk_method: Optional[str] = None

    # MLA (DeepSeek-V2/V3)
    kv_lora_rank: Optional[int] = Field(default=None, gt=0)
    q_lora_rank: Optional[int] = Field(default=None, gt=0)
    qk_rope_head_dim: Optional[int] = Field(default=None, gt=0)
    qk_nope_head_dim: Optional[int] = Field(default=None, gt=0)
    v_head_dim: Optional[int] = Field(default=None, gt=0)
    num_nextn_predict_layers: Optional[int] = Field(default=None, ge=0)

    #: an explicit parameter count (not an HF field): replaces the computed one
    num_parameters: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.is_mla:
            missing = [f for f in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"kv_lora_rank is set (MLA) but {', '.join(missing)} is missing")
            return self
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}; give head_dim")
        if self.kv_heads > self.num_attention_heads or self.num_attention_heads % self.kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.kv_heads}")
        return self

    # ------------------------------------------------------------------ shape
    @property
    def label(self) -> str:
        return self.name or self.name_or_path or self.model_type or "model"

    @property
    def kv_heads(self) -> int:
        """H_kv: num_key_value_heads, else num_attention_heads (multi-head attention)."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def d_head(self) -> int:
        """d_head: head_dim, else hidden_size / num_attention_heads."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def mla_cache_width(self) -> int:
        """Elements cached per token and layer by MLA: the compressed latent plus the shared rope key."""
        assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def num_experts(self) -> int:
        """Routed experts per MoE layer (0: a dense model)."""
        return self.num_local_experts or self.n_routed_experts or 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def is_moe_layer(self, i: int) -> bool:
        """DeepSeek's rule (first_k_dense_replace, moe_layer_freq); Mixtral: every layer."""
        return self.is_moe and i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(1 for i in range(self.num_hidden_layers) if self.is_moe_layer(i))

    @property
    def has_qkv_bias(self) -> bool:
        """Qwen2 has q, k, v biases without a config field saying so; attention_bias says it elsewhere."""
        if self.attention_bias is not None:
            return self.attention_bias
        return self.model_type in ("qwen2", "qwen2_moe")

    # ------------------------------------------------------------------ parameters
    def parameter_breakdown(self) -> dict[str, int]:
        """The computed parameter count, by part (see the module's docstring)."""
        h, L, H = self.hidden_size, self.num_hidden_layers, self.num_attention_heads
        embedding = self.vocab_size * h
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * h
        if self.is_mla:
            assert self.qk_nope_head_dim and self.qk_rope_head_dim and self.v_head_dim and self.kv_lora_rank
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * H * qk
            else:
                q = h * H * qk
            kv = (h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
                  + self.kv_lora_rank * H * (self.qk_nope_head_dim + self.v_head_dim))
            attn = q + kv + H * self.v_head_dim * h
        else:
            d, kvh = self.d_head, self.kv_heads
            attn = h * H * d + 2 * h * kvh * d + H * d * h
            if self.has_qkv_bias:
                attn += H * d + 2 * kvh * d
                if self.attention_bias:  # the explicit flag also puts a bias on o_proj (Llama's meaning)
                    attn += h
        dense_mlp = 3 * h * self.intermediate_size
        e, s, ie = self.num_experts, self.n_shared_experts or 0, self.expert_intermediate_size
        moe_mlp = (e + s) * 3 * h * ie + e * h + (e if self.topk_method == "noaux_tc" else 0)
        n_moe = self.num_moe_layers
        return {
            "embedding": embedding,
            "lm_head": lm_head,
            "attention": L * attn,
            "mlp": (L - n_moe) * dense_mlp + n_moe * moe_mlp,
            "norms": L * 2 * h + h,
        }

    @property
    def computed_parameters(self) -> int:
        return sum(self.parameter_breakdown().values())

    @property
    def params(self) -> int:
        """The parameter count the planner uses: num_parameters when given, else computed."""
        return self.num_parameters or self.computed_parameters


# ---------------------------------------------------------------------- loading
def shipped_names() -> list[str]:
    """The names of the configs shipped with clusterkit."""
    root = resources.files("clusterkit.deploy").joinpath(CONFIG_DIR)
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def from_dict(data: Any, *, name: str = "", source: str = "config") -> ModelConfig:
    """A ModelConfig from a parsed config.json; a bad one is a ConfigError (exit 2)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: not a JSON object")
    doc = dict(data)
    if name:
        doc["name"] = name
    try:
        return ModelConfig.model_validate(doc)
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "config"
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"{source}: {where}: {first.get('msg', 'invalid')}{more}") from None


def _read_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: not JSON: line {e.lineno}: {e.msg}") from None


def load_shipped(name: str) -> ModelConfig:
    key = name.strip().lower()
    if key not in shipped_names():
        raise UsageError(f"unknown model {name!r}; shipped: {', '.join(shipped_names())}; "
                         "or give the path of a config.json")
    text = resources.files("clusterkit.deploy").joinpath(CONFIG_DIR).joinpath(f"{key}.json").read_text(encoding="utf-8")
    return from_dict(_read_json(text, f"{key}.json"), name=key, source=f"{key}.json")


def load_file(path: str) -> ModelConfig:
    """A config.json, or a model directory holding one."""
    target = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(target, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read {target}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{target}: not UTF-8 text") from None
    data = _read_json(text, target)
    base = os.path.basename(os.path.normpath(path))
    name = base[: -len(".json")] if base.endswith(".json") and base != "config.json" else base
    if name == "config.json":
        name = os.path.basename(os.path.dirname(os.path.abspath(target))) or "config"
    return from_dict(data, name=name, source=target)


def load_model(spec: str) -> ModelConfig:
    """``--model``: a shipped name, else a path to a config.json (or its directory). A name that
    is neither is a UsageError listing the shipped names (exit 2)."""
    if spec.strip().lower() in shipped_names():
        return load_shipped(spec)
    if os.path.exists(spec) or spec.endswith(".json") or os.sep in spec:
        return load_file(spec)
    return load_shipped(spec)  # raises: unknown name
