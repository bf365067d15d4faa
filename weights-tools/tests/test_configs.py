"""configs/*.json: the model shapes PocketLM targets must match the MobileLLM paper's table exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import make_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: /work/shared/DESIGN.md section 1: (layers, dim, heads, kv heads, ffn, vocab, params).
MOBILELLM_TABLE = {
    "mobilellm-125m": (30, 576, 9, 3, 1536, 32000, 124_635_456),
    "mobilellm-350m": (32, 960, 15, 5, 2560, 32000, 345_355_200),
    "mobilellm-600m": (40, 1152, 18, 6, 3072, 32000, 603_188_352),
    "mobilellm-1b": (54, 1280, 20, 5, 3584, 32000, 1_005_461_760),
    "mobilellm-1.5b": (54, 1600, 25, 5, 4352, 32000, 1_511_188_800),
}
LS = {"mobilellm-ls-125m": "mobilellm-125m", "mobilellm-ls-350m": "mobilellm-350m"}
ALL = sorted([*MOBILELLM_TABLE, *LS, "smollm2-135m"])


def load(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def table_formula(vocab: int, dim: int, layers: int, kv_heads: int, ffn: int) -> int:
    kv_dim = kv_heads * 64
    return vocab * dim + layers * (2 * dim * dim + 2 * dim * kv_dim + 3 * dim * ffn + 2 * dim) + dim


def test_config_set():
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == ALL


@pytest.mark.parametrize("name", sorted(MOBILELLM_TABLE))
def test_formula_reproduces_paper_table(name):
    layers, dim, heads, kv, ffn, vocab, params = MOBILELLM_TABLE[name]
    assert table_formula(vocab, dim, layers, kv, ffn) == params
    c = load(name)
    assert (c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
            c["intermediate_size"], c["vocab_size"]) == (layers, dim, heads, kv, ffn, vocab)
    assert table_formula(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_key_value_heads"],
                         c["intermediate_size"]) == params
    assert make_model.parameter_count(make_model.load_config(CONFIGS / f"{name}.json")) == params


@pytest.mark.parametrize("name", sorted([*MOBILELLM_TABLE, *LS]))
def test_mobilellm_common_fields(name):
    c = load(name)
    assert c["model_type"] == "mobilellm" and c["architectures"] == ["MobileLLMForCausalLM"]
    assert c["head_dim"] == 64 and c["hidden_size"] == 64 * c["num_attention_heads"]
    assert c["rope_theta"] == 10000.0 and c["rms_norm_eps"] == 1e-5
    assert c["max_position_embeddings"] == 2048 and c["vocab_size"] == 32000
    assert (c["bos_token_id"], c["eos_token_id"]) == (1, 2)
    assert c["share_embedding"] is True and c["tie_word_embeddings"] is False
    ls = name in LS
    assert c["layer_sharing"] is ls
    assert c["layer_schedule"] == ({"strategy": "immediate", "repeats": 2} if ls else {"strategy": "none", "repeats": 1})
    spec = make_model.load_config(CONFIGS / f"{name}.json")
    assert spec.tied and spec.head_dim == 64
    assert (spec.strategy, spec.repeats) == (("immediate", 2) if ls else ("none", 1))


@pytest.mark.parametrize("name", sorted(LS))
def test_ls_variants_share_weights_shape(name):
    c, base = load(name), load(LS[name])
    drop = {"layer_sharing", "layer_schedule"}
    assert {k: v for k, v in c.items() if k not in drop} == {k: v for k, v in base.items() if k not in drop}


def test_smollm2_config():
    c = load("smollm2-135m")
    assert c["model_type"] == "llama" and c["architectures"] == ["LlamaForCausalLM"]
    assert (c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
            c["intermediate_size"], c["vocab_size"]) == (30, 576, 9, 3, 1536, 49152)
    assert c["rope_theta"] == 100000.0 and c["rms_norm_eps"] == 1e-5 and c["max_position_embeddings"] == 8192
    assert c["tie_word_embeddings"] is True and c["layer_sharing"] is False and c["head_dim"] == 64
    assert c["layer_schedule"] == {"strategy": "none", "repeats": 1}
    # The real SmolLM2-135M: 134,515,008 weights (tied head).
    assert table_formula(49152, 576, 30, 3, 1536) == 134_515_008
    assert make_model.parameter_count(make_model.load_config(CONFIGS / "smollm2-135m.json")) == 134_515_008


@pytest.mark.parametrize("name", ALL)
def test_quantizable_rows(name):
    c = load(name)
    assert c["hidden_size"] % 32 == 0 and c["intermediate_size"] % 32 == 0
