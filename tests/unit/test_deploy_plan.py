"""The deploy planner on the shipped configs, against answers worked out by hand here (the
comments show the arithmetic; nothing below asks the code for an expected value).

Shared by the hand computations (docs/deploy.md, "The arithmetic"):

    GiB                    = 2^30 = 1,073,741,824 bytes
    usable, vLLM 0.21.0    = ⌊0.92 × 80 GiB⌋ = ⌊79,027,398,246.4⌋ = 79,027,398,246 bytes
    overhead, vLLM 0.21.0  = 2 + 1 + 1 GiB = 4,294,967,296 bytes
    block                  = 16 tokens; 131,072 tokens = 8,192 blocks; 32,768 = 2,048; 163,840 = 10,240
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clusterkit.deploy import plan as planmod
from clusterkit.deploy.models import ModelConfig, from_dict, load_model, shipped_names
from clusterkit.deploy.plan import plan
from clusterkit.errors import ConfigError, UsageError

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"

GIB = 1_073_741_824
USABLE_80 = 79_027_398_246  # ⌊0.92 × 80 × 1,073,741,824⌋
OVERHEAD = 4_294_967_296  # 4 GiB

# --------------------------------------------------------------------------- parameter counts
# llama-3.1-8b: h 4096, L 32, H 32, H_kv 8, d 128, V 128,256, I 14,336, untied
#   embedding + lm_head 2 × 128,256 × 4,096              =   1,050,673,152
#   attention/layer 4096·4096·2 + 2·4096·1024            =      41,943,040
#   MLP/layer 3 × 4,096 × 14,336                         =     176,160,768
#   norms/layer 2 × 4,096                                =           8,192
#   per layer 218,112,000 × 32                           =   6,979,584,000
#   + final norm 4,096                                   →   8,030,261,248
# llama-3.1-70b: h 8192, L 80, H 64, H_kv 8, I 28,672
#   2 × 128,256 × 8,192 = 2,101,346,304; per layer 150,994,944 + 704,643,072 + 16,384 = 855,654,400
#   × 80 = 68,452,352,000; + 8,192                       →  70,553,706,496
# llama-3.1-405b: h 16,384, L 126, H 128, H_kv 8, I 53,248
#   2 × 128,256 × 16,384 = 4,202,692,608; attention 2·16384² + 2·16384·1024 = 570,425,344;
#   MLP 3 × 16,384 × 53,248 = 2,617,245,696; norms 32,768; per layer 3,187,703,808 × 126 =
#   401,650,679,808; + 16,384                            → 405,853,388,800
# qwen2.5-72b: h 8192, L 80, H 64, H_kv 8, V 152,064, I 29,568, q/k/v biases
#   2 × 152,064 × 8,192 = 2,491,416,576; attention 150,994,944 + biases 8,192 + 2·1,024 =
#   151,005,184; MLP 3 × 8,192 × 29,568 = 726,663,168; norms 16,384; per layer 877,684,736
#   × 80 = 70,214,778,880; + 8,192                       →  72,706,203,648
# mixtral-8x7b: h 4096, L 32, V 32,000, 8 experts of I 14,336
#   2 × 32,000 × 4,096 = 262,144,000; attention 41,943,040; experts 8 × 176,160,768 =
#   1,409,286,144; router 4,096 × 8 = 32,768; norms 8,192; per layer 1,451,270,144 × 32 =
#   46,440,644,608; + 4,096                              →  46,702,792,704
# deepseek-v3: h 7168, L 61 (3 dense), H 128, q_lora 1536, kv_lora 512, rope 64, nope 128, v 128,
#   V 129,280, I 18,432, 256 routed + 1 shared experts of 2,048, noaux_tc
#   2 × 129,280 × 7,168 = 1,853,358,080
#   MLA/layer: q_a 7168·1536 = 11,010,048 + norm 1,536 + q_b 1536·128·192 = 37,748,736
#              + kv_a 7168·576 = 4,128,768 + norm 512 + kv_b 512·128·256 = 16,777,216
#              + o 128·128·7168 = 117,440,512        = 187,107,328
#   dense MLP 3 × 7,168 × 18,432 = 396,361,728
#   MoE: 257 × 3 × 7,168 × 2,048 = 11,318,329,344 + router 256 × 7,168 = 1,835,008 + bias 256
#        = 11,320,164,608
#   3 × (187,107,328 + 14,336 + 396,361,728) = 1,750,450,176
#   58 × (187,107,328 + 14,336 + 11,320,164,608) = 667,422,603,776
#   + 1,853,358,080 + 7,168                              → 671,026,419,200
PARAMS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.1-70b": 70_553_706_496,
    "llama-3.1-405b": 405_853_388_800,
    "qwen2.5-72b": 72_706_203_648,
    "mixtral-8x7b": 46_702_792_704,
    "deepseek-v3": 671_026_419_200,
}
#: the published sizes, billions
PUBLISHED = {"llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 405.9, "qwen2.5-72b": 72.7,
             "mixtral-8x7b": 46.7, "deepseek-v3": 671.0}


def test_the_six_models_are_shipped():
    assert set(PARAMS) <= set(shipped_names())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_by_hand_and_published(name):
    m = load_model(name)
    assert m.params == PARAMS[name]
    assert m.params / 1e9 == pytest.approx(PUBLISHED[name], rel=0.01)


def test_num_parameters_overrides_the_formula():
    m = from_dict({"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
                   "intermediate_size": 11008, "num_parameters": 7_000_000_000})
    assert m.params == 7_000_000_000 and m.computed_parameters != 7_000_000_000
    # no num_key_value_heads: multi-head attention; no head_dim: 4096 / 32
    assert m.kv_heads == 32 and m.d_head == 128


# --------------------------------------------------------------------------- weights and KV per token
# (model, dtype) -> (tp, pp, weights bytes per GPU, KV bytes per token per GPU), at the model's
# default max_model_len (131,072 for Llama 3.1), concurrency 1, nodes of 8 × 80 GiB.
#
# 8B bf16, TP1: 8,030,261,248 × 2 = 16,060,522,496 B (14.96 GiB);
#   KV 2 × 32 × 8 × 128 × 2 = 131,072 B; budget 79,027,398,246 − 16,060,522,496 − 4,294,967,296 =
#   58,671,908,454; blocks ⌊58,671,908,454 ÷ (16 × 131,072)⌋ = 27,976 ≥ 8,192: fits at TP1.
# 8B fp8, TP1: 8,030,261,248 × 1 = 8,030,261,248 B; KV unchanged (auto = bf16) 131,072 B.
# 70B bf16: TP1 141,107,412,992 B > usable; TP2 70,553,706,496 B → budget 4,178,724,454,
#   KV 2 × 80 × 4 × 128 × 2 = 163,840 → ⌊4,178,724,454 ÷ 2,621,440⌋ = 1,594 < 8,192;
#   TP4 35,276,853,248 B, KV 2 × 80 × 2 × 128 × 2 = 81,920 B: fits (30,102 blocks, below).
# 70B fp8: TP1 70,553,706,496 B → budget 4,178,724,454, KV 327,680 → 797 blocks < 8,192;
#   TP2 35,276,853,248 B, KV 163,840 B → budget 39,455,577,702 → ⌊÷ 2,621,440⌋ = 15,051 ≥ 8,192.
# 405B bf16: TP8 811,706,777,600 ÷ 8 = 101,463,347,200 B > usable; PP2: ÷ 16 = 50,731,673,600 B
#   (47.25 GiB), ⌈126/2⌉ = 63 layers: KV 2 × 63 × 1 × 128 × 2 = 32,256 B; budget
#   79,027,398,246 − 50,731,673,600 − 4,294,967,296 = 24,000,757,350 → ⌊÷ 516,096⌋ = 46,504.
# 405B fp8: TP8 405,853,388,800 ÷ 8 = 50,731,673,600 B, KV 2 × 126 × 1 × 128 × 2 = 64,512 B;
#   budget 24,000,757,350 → ⌊÷ 1,032,192⌋ = 23,252 ≥ 8,192: fits on one node.
LAYOUTS = {
    ("llama-3.1-8b", "bf16"): (1, 1, 16_060_522_496, 131_072, 27_976),
    ("llama-3.1-8b", "fp8"): (1, 1, 8_030_261_248, 131_072, None),
    ("llama-3.1-70b", "bf16"): (4, 1, 35_276_853_248, 81_920, 30_102),
    ("llama-3.1-70b", "fp8"): (2, 1, 35_276_853_248, 163_840, 15_051),
    ("llama-3.1-405b", "bf16"): (8, 2, 50_731_673_600, 32_256, 46_504),
    ("llama-3.1-405b", "fp8"): (8, 1, 50_731_673_600, 64_512, 23_252),
}


@pytest.mark.parametrize("name,dtype", sorted(LAYOUTS))
def test_llama_layouts_weights_and_kv_per_token(name, dtype):
    tp, pp, weights, kv_per_token, blocks = LAYOUTS[name, dtype]
    p = plan(load_model(name), gpus_per_node=8, gpu_mem_gib=80, dtype=dtype)
    assert (p.tp, p.pp) == (tp, pp)
    assert p.weights_bytes_per_gpu == weights
    assert p.weights_gib_per_gpu == round(weights / GIB, 2)
    assert p.kv_bytes_per_token_per_gpu == kv_per_token
    if blocks is not None:
        assert p.num_blocks == blocks and p.kv_tokens == blocks * 16
        assert p.max_concurrency == round(blocks / 8192, 2)
    assert p.nodes_per_replica == (2 if pp == 2 else 1)
    assert p.warnings == []


def test_plan_takes_a_model_name_too():
    assert plan("llama-3.1-70b", gpus_per_node=8, gpu_mem_gib=80).num_blocks == 30_102
    with pytest.raises(UsageError, match="unknown model"):
        plan("llama-9", gpus_per_node=8, gpu_mem_gib=80)


def test_kv_fp8_halves_the_kv_per_token():
    # 8B at TP1: 2 × 32 × 8 × 128 × 1 = 65,536 B
    p = plan(load_model("llama-3.1-8b"), gpus_per_node=8, gpu_mem_gib=80, kv_dtype="fp8")
    assert p.kv_bytes_per_token_per_gpu == 65_536 and p.kv_bytes == 1


def test_concurrency_picks_a_larger_layout():
    # 8B bf16, 4 × 131,072 tokens = 32,768 blocks: TP1 has 27,976 blocks (above): no.
    # TP2: weights 8,030,261,248 B; budget 79,027,398,246 − 8,030,261,248 − 4,294,967,296 = 66,702,169,702;
    # KV 2 × 32 × 4 × 128 × 2 = 65,536 → ⌊66,702,169,702 ÷ 1,048,576⌋ = 63,612 ≥ 32,768; 63,612 / 8,192 = 7.77
    p = plan(load_model("llama-3.1-8b"), gpus_per_node=8, gpu_mem_gib=80, concurrency=4)
    assert (p.tp, p.pp, p.num_blocks, p.max_concurrency) == (2, 1, 63_612, 7.77)
    assert p.tokens_needed == 4 * 131_072


def test_max_model_len_not_a_block_multiple_rounds_each_request_up():
    # 70B at TP4 (forced): 30,102 blocks; 8,193 tokens = ⌈8,193 / 16⌉ = 513 blocks; 30,102 / 513 = 58.68
    p = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, max_model_len=8193, tp=4)
    assert p.num_blocks == 30_102 and p.max_concurrency == 58.68 and p.tokens_needed == 513 * 16


# --------------------------------------------------------------------------- MoE and MLA
def test_mixtral_moe():
    # 46,702,792,704 × 2 = 93,405,585,408 B > usable at TP1. TP2: 46,702,792,704 B (43.50 GiB);
    # KV 2 × 32 × 4 × 128 × 2 = 65,536 B (the experts do not change the cache);
    # budget 79,027,398,246 − 46,702,792,704 − 4,294,967,296 = 28,029,638,246;
    # ⌊28,029,638,246 ÷ 1,048,576⌋ = 26,731 blocks = 427,696 tokens; 26,731 / 2,048 = 13.05 at 32,768.
    p = plan(load_model("mixtral-8x7b"), gpus_per_node=8, gpu_mem_gib=80)
    assert (p.tp, p.pp) == (2, 1)
    assert p.weights_bytes_per_gpu == 46_702_792_704 and p.weights_gib_per_gpu == 43.5
    assert p.kv_bytes_per_token_per_gpu == 65_536
    assert (p.num_blocks, p.kv_tokens, p.max_concurrency) == (26_731, 427_696, 13.05)
    assert p.max_model_len == 32_768 and not p.mla


def test_deepseek_v3_mla_fp8_on_h200():
    # fp8 weights on 8 × 141 GiB: usable ⌊0.92 × 141 × 2^30⌋ = ⌊139,285,789,409.28⌋ = 139,285,789,409;
    # TP8: 671,026,419,200 ÷ 8 = 83,878,302,400 B (78.12 GiB);
    # budget 139,285,789,409 − 83,878,302,400 − 4,294,967,296 = 51,112,519,713 (47.60 GiB);
    # MLA KV: 61 × (512 + 64) × 2 = 70,272 B (no factor 2; KV heads play no part);
    # ⌊51,112,519,713 ÷ (16 × 70,272 = 1,124,352)⌋ = 45,459 blocks = 727,344 tokens;
    # 163,840 tokens = 10,240 blocks: 45,459 / 10,240 = 4.44.
    p = plan(load_model("deepseek-v3"), gpus_per_node=8, gpu_mem_gib=141, dtype="fp8")
    assert (p.tp, p.pp, p.mla) == (8, 1, True)
    assert p.weights_bytes_per_gpu == 83_878_302_400 and p.weights_gib_per_gpu == 78.12
    assert p.kv_cache_bytes_per_gpu == 51_112_519_713 and p.kv_cache_gib_per_gpu == 47.6
    assert p.kv_bytes_per_token_per_gpu == 70_272 and p.kv_heads_per_gpu is None
    assert (p.num_blocks, p.kv_tokens, p.max_concurrency) == (45_459, 727_344, 4.44)
    assert any("not sharded by TP" in n for n in p.notes)


def test_mla_latent_is_not_sharded_by_tp_but_by_pp():
    m = load_model("deepseek-v3")
    kw = dict(gpus_per_node=8, gpu_mem_gib=141, dtype="fp8")
    # TP4 × PP2 vs TP8 × PP1: same GPUs, same weights per GPU; KV: ⌈61/2⌉ = 31 × 576 × 2 = 35,712 B,
    # where GQA would have halved with TP instead. TP2 × PP4: ⌈61/4⌉ = 16 × 576 × 2 = 18,432 B.
    a = plan(m, tp=8, pp=1, **kw)
    b = plan(m, tp=4, pp=2, **kw)
    c = plan(m, tp=2, pp=4, **kw)
    assert a.kv_bytes_per_token_per_gpu == 70_272
    assert b.kv_bytes_per_token_per_gpu == 35_712
    assert c.kv_bytes_per_token_per_gpu == 18_432
    # the same TP8 with a GQA model: 2 × L × max(1, 8/8) × 128 × 2 halves from TP4 to TP8
    g4 = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, tp=4)
    g8 = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, tp=8)
    assert g4.kv_bytes_per_token_per_gpu == 2 * g8.kv_bytes_per_token_per_gpu == 81_920


def test_deepseek_v3_bf16_needs_three_nodes_of_80():
    # bf16: 1,342,052,838,400 B. PP1: 167,756,604,800 per GPU; PP2: 83,878,302,400 > 79,027,398,246 − 4 GiB;
    # PP3: ⌈1,342,052,838,400 ÷ 24⌉ = 55,918,868,267 B; budget 79,027,398,246 − 55,918,868,267 −
    # 4,294,967,296 = 18,813,562,683; ⌈61/3⌉ = 21 layers: 21 × 576 × 2 = 24,192 B;
    # ⌊18,813,562,683 ÷ 387,072⌋ = 48,604 blocks; 48,604 / 10,240 = 4.75
    p = plan(load_model("deepseek-v3"), gpus_per_node=8, gpu_mem_gib=80)
    assert (p.tp, p.pp, p.nodes_per_replica) == (8, 3, 3)
    assert p.weights_bytes_per_gpu == 55_918_868_267
    assert p.layers_per_gpu == 21 and p.kv_bytes_per_token_per_gpu == 24_192
    assert (p.num_blocks, p.max_concurrency) == (48_604, 4.75)
    with pytest.raises(UsageError, match=r"does not fit on 2 node\(s\).*TP=8 × PP=2.*nothing is left"):
        plan(load_model("deepseek-v3"), gpus_per_node=8, gpu_mem_gib=80, nodes=2)


# --------------------------------------------------------------------------- KV head replication
def _narrow_kv(**extra):
    """llama-3.1-70b's shape with 2 KV heads (as a config.json of its own would say)."""
    doc = json.loads((Path(planmod.__file__).parent / "configs" / "llama-3.1-70b.json").read_text())
    doc.update(num_key_value_heads=2, **extra)
    return from_dict(doc, name="narrow-kv")


def test_tp_beyond_kv_heads_replicates_and_warns():
    m = _narrow_kv()
    # 2 KV heads shrink k and v: attention/layer 2·8192·8192 + 2·8192·256 = 138,412,032 (12,582,912 less
    # than with 8), × 80 = 1,006,632,960 less: 69,547,073,536 parameters.
    # TP2: weights 69,547,073,536 B, budget 79,027,398,246 − 69,547,073,536 − 4,294,967,296 = 5,185,357,414;
    # KV 2 × 80 × (2/2 = 1) × 128 × 2 = 40,960 → ⌊5,185,357,414 ÷ 655,360⌋ = 7,912 blocks < 8,192.
    # TP4: weights 34,773,536,768 B; KV 2 × 80 × max(1, 2/4) × 128 × 2 = 40,960 (no smaller than at TP2:
    # the heads are replicated); budget 39,958,894,182 → ⌊÷ 655,360⌋ = 60,972 blocks.
    assert m.params == 69_547_073_536
    p = plan(m, gpus_per_node=8, gpu_mem_gib=80)
    assert (p.tp, p.kv_heads_per_gpu, p.kv_bytes_per_token_per_gpu, p.num_blocks) == (4, 1, 40_960, 60_972)
    assert p.weights_bytes_per_gpu == 34_773_536_768
    assert len(p.warnings) == 1 and "TP=4 > 2 KV heads" in p.warnings[0] and "replicated" in p.warnings[0]
    assert "warning: TP=4 > 2 KV heads" in p.explain()
    # at TP2 = H_kv nothing is replicated
    assert plan(m, gpus_per_node=8, gpu_mem_gib=80, tp=2, max_model_len=8192).warnings == []


def test_tp_must_divide_heads_and_kv_heads():
    m = from_dict({"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "vocab_size": 152064, "intermediate_size": 18944, "max_position_embeddings": 32768})
    assert planmod.tp_problem(m, 8) == "28 attention heads are not divisible by TP=8"
    assert planmod.tp_problem(m, 4) is None
    with pytest.raises(UsageError, match="--tp 8: 28 attention heads"):
        plan(m, gpus_per_node=8, gpu_mem_gib=80, tp=8)
    with pytest.raises(UsageError, match="--tp 3: tensor parallelism stays inside a node"):
        plan(m, gpus_per_node=8, gpu_mem_gib=80, tp=3)
    odd = from_dict({"hidden_size": 4096, "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "vocab_size": 1000, "intermediate_size": 1004, "max_position_embeddings": 4096})
    # 1,004 = 4 × 251: the MLP shards over TP4, not TP8
    assert planmod.tp_problem(odd, 8) == "intermediate_size 1004 is not divisible by TP=8"
    assert planmod.tp_problem(odd, 4) is None


# --------------------------------------------------------------------------- the budget and the engine
def test_70b_budget_terms():
    p = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80)
    b = p.budget
    assert (b.memory_fraction, b.usable_gib, b.weights_gib, b.overhead_gib) == (0.92, 73.6, 32.85, 4.0)
    assert (b.activations_gib, b.non_torch_gib, b.cuda_graphs_gib) == (2.0, 1.0, 1.0)
    # 79,027,398,246 − 35,276,853,248 − 4,294,967,296 = 39,455,577,702 B = 36.746 GiB
    assert p.kv_cache_bytes_per_gpu == USABLE_80 - 35_276_853_248 - OVERHEAD == 39_455_577_702
    assert b.kv_cache_gib == p.kv_cache_gib_per_gpu == 36.75
    assert (p.engine, p.engine_version, p.block_size) == ("vllm", "0.21.0", 16)


def test_older_vllm_uses_0_9_and_no_cuda_graphs_in_the_budget():
    # ⌊0.9 × 80 GiB⌋ = 72 GiB = 77,309,411,328; overhead 3 GiB = 3,221,225,472;
    # TP4: 77,309,411,328 − 35,276,853,248 − 3,221,225,472 = 38,811,332,608 → ⌊÷ 1,310,720⌋ = 29,610
    p = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, engine_version="0.20.1")
    assert (p.memory_fraction, p.budget.cuda_graphs_gib, p.budget.overhead_gib) == (0.9, 0.0, 3.0)
    assert (p.tp, p.kv_cache_bytes_per_gpu, p.num_blocks, p.kv_tokens) == (4, 38_811_332_608, 29_610, 473_760)
    with pytest.raises(UsageError, match="--engine-version"):
        plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, engine_version="latest")


def test_sglang_fraction_by_tp_and_page_size_1():
    # qwen2.5-72b at TP4: 0.85 × 80 GiB = 73,014,444,032 B; weights 72,706,203,648 × 2 ÷ 4 = 36,353,101,824;
    # non-torch 1 GiB only: 73,014,444,032 − 36,353,101,824 − 1,073,741,824 = 35,587,600,384;
    # KV 81,920 B/token, pages of 1 token: ⌊35,587,600,384 ÷ 81,920⌋ = 434,418 tokens; / 32,768 = 13.26
    p = plan(load_model("qwen2.5-72b"), gpus_per_node=8, gpu_mem_gib=80, engine="sglang")
    assert (p.tp, p.memory_fraction, p.block_size, p.budget.overhead_gib) == (4, 0.85, 1, 1.0)
    assert (p.kv_cache_bytes_per_gpu, p.kv_tokens, p.max_concurrency) == (35_587_600_384, 434_418, 13.26)
    assert planmod.engine_settings("sglang", tp=8).memory_fraction == 0.81
    assert planmod.engine_settings("sglang", tp=1).memory_fraction == 0.88


def test_memory_fraction_override():
    # 0.95 × 80 GiB = 81,604,378,624; − 35,276,853,248 − 4,294,967,296 = 42,032,558,080 → 32,068 blocks
    p = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80, memory_fraction=0.95)
    assert (p.memory_fraction, p.fraction_source, p.num_blocks) == (0.95, "given", 32_068)


# --------------------------------------------------------------------------- replicas and nodes
def test_replicas_spread_over_the_nodes():
    m = load_model("llama-3.1-70b")
    one = plan(m, gpus_per_node=8, gpu_mem_gib=80)
    assert (one.replicas, one.replicas_per_node, one.nodes_per_replica, one.nodes) == (1, 2, 1, None)
    three = plan(m, gpus_per_node=8, gpu_mem_gib=80, nodes=3)  # TP4: 2 per node × 3 nodes
    assert (three.tp, three.replicas) == (4, 6)
    big = load_model("llama-3.1-405b")
    five = plan(big, gpus_per_node=8, gpu_mem_gib=80, nodes=5)  # TP8 × PP2: 2 nodes each, ⌊5/2⌋ = 2
    assert (five.tp, five.pp, five.nodes_per_replica, five.replicas_per_node, five.replicas) == (8, 2, 2, 0, 2)


def test_refused_with_the_arithmetic():
    with pytest.raises(UsageError) as e:
        plan(load_model("llama-3.1-405b"), gpus_per_node=8, gpu_mem_gib=80, nodes=1)
    # 811,706,777,600 ÷ 8 = 101,463,347,200 B = 94.50 GiB; 73.60 − 94.50 − 4.00 = −24.90
    msg = str(e.value)
    assert "TP=8 × PP=1" in msg and "94.50 GiB per GPU" in msg and "0.92 × 80 GiB" in msg and "-24.90 GiB" in msg
    assert e.value.exit_code == 2
    # weights fit, the cache does not: 8B at TP1 only (--tp 1), 4 × 131,072 tokens need 32,768 blocks of 27,976
    with pytest.raises(UsageError, match=r"27,976 blocks of 16 = 447,616 tokens, but 4 × 131,072 tokens need "
                                         r"32,768 blocks"):
        plan(load_model("llama-3.1-8b"), gpus_per_node=8, gpu_mem_gib=80, concurrency=4, tp=1, pp=1)


def test_bad_input_is_a_usage_error():
    m = load_model("llama-3.1-8b")
    with pytest.raises(UsageError, match="longer than llama-3.1-8b's max_position_embeddings 131,072"):
        plan(m, gpus_per_node=8, gpu_mem_gib=80, max_model_len=131_073)
    with pytest.raises(UsageError, match="unknown --dtype"):
        plan(m, gpus_per_node=8, gpu_mem_gib=80, dtype="fp16")
    with pytest.raises(UsageError, match="unknown engine"):
        plan(m, gpus_per_node=8, gpu_mem_gib=80, engine="trt")


# --------------------------------------------------------------------------- configs
def test_unknown_model_lists_the_shipped_names():
    with pytest.raises(UsageError) as e:
        load_model("llama-9")
    assert "unknown model 'llama-9'" in str(e.value) and "llama-3.1-70b" in str(e.value)
    assert e.value.exit_code == 2


def test_config_path_and_directory(tmp_path):
    src = Path(planmod.__file__).parent / "configs" / "mixtral-8x7b.json"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(src.read_text())
    by_dir = load_model(str(tmp_path / "mine"))
    by_file = load_model(str(tmp_path / "mine" / "config.json"))
    assert by_dir.name == by_file.name == "mine" and by_dir.params == PARAMS["mixtral-8x7b"]
    (tmp_path / "x.json").write_text(src.read_text())
    assert load_model(str(tmp_path / "x.json")).name == "x"


@pytest.mark.parametrize("text,match", [
    ("{", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"hidden_size": 4096}', "num_hidden_layers"),
    ('{"hidden_size": 4000, "num_hidden_layers": 2, "num_attention_heads": 3, "vocab_size": 10, '
     '"intermediate_size": 10}', "not a multiple of num_attention_heads"),
    ('{"hidden_size": 4096, "num_hidden_layers": 2, "num_attention_heads": 32, "num_key_value_heads": 5, '
     '"vocab_size": 10, "intermediate_size": 10}', "num_key_value_heads 5"),
    ('{"hidden_size": 4096, "num_hidden_layers": 2, "num_attention_heads": 32, "kv_lora_rank": 512, '
     '"vocab_size": 10, "intermediate_size": 10}', "qk_rope_head_dim"),
])
def test_bad_configs_are_config_errors(tmp_path, text, match):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_model(str(f))


def test_missing_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        load_model(str(tmp_path / "none.json"))


def test_shipped_configs_are_hf_configs():
    for name in shipped_names():
        m = load_model(name)
        assert isinstance(m, ModelConfig) and m.name == name and m.name_or_path and "/" in m.name_or_path
        assert m.max_position_embeddings


# --------------------------------------------------------------------------- the documented example
# llama-3.1-70b, bf16, nodes of 8 × 80 GiB, defaults (vLLM 0.21.0, max_model_len 131,072):
#   weights per GPU 35,276,853,248 B = 32.85 GiB (TP4); KV per token per GPU 81,920 B;
#   budget 39,455,577,702 B = 36.75 GiB; 30,102 blocks = 481,632 tokens; 30,102 / 8,192 = 3.67x
DOC_70B = {"tp": 4, "pp": 1, "replicas": 1, "nodes_per_replica": 1, "weights_gib_per_gpu": 32.85,
           "kv_cache_gib_per_gpu": 36.75, "kv_tokens": 481_632, "max_concurrency": 3.67,
           "kv_bytes_per_token_per_gpu": 81_920, "num_blocks": 30_102}


def _doc_json() -> dict:
    text = DOC.read_text(encoding="utf-8")
    planning = text[text.index("## Planning"):]
    m = re.search(r"```json\n(.*?)```", planning, re.S)
    assert m, "docs/deploy.md: no ```json block under ## Planning"
    return json.loads(m.group(1))


def test_docs_example_is_the_hand_worked_answer_and_the_plan():
    doc = _doc_json()
    for key, value in DOC_70B.items():
        assert doc[key] == value, key
    p = plan(load_model("llama-3.1-70b"), gpus_per_node=8, gpu_mem_gib=80)
    assert json.loads(p.to_json()) == doc
    text = DOC.read_text(encoding="utf-8")
    for figure in ("70,553,706,496", "35,276,853,248", "39,455,577,702", "81,920", "30,102", "481,632", "3.67x",
                   "GPU KV cache size: 481,632 tokens", "Maximum concurrency for 131,072 tokens per request: 3.67x"):
        assert figure in text, figure


def test_docs_list_every_constant():
    text = DOC.read_text(encoding="utf-8")
    for const in (planmod.VLLM_PINNED_VERSION, str(planmod.VLLM_FRACTION), str(planmod.VLLM_LEGACY_FRACTION),
                  planmod.SGLANG_PINNED_VERSION, "#38284"):
        assert const in text, const
    for gib in (planmod.ACTIVATIONS_GIB, planmod.NON_TORCH_GIB, planmod.CUDA_GRAPHS_GIB):
        assert f"{gib:.1f} GiB" in text
    for name in shipped_names():
        assert f"`{name}`" in text
