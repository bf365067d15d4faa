"""make_llamacpp_variants.py and its committed llama.cpp outputs (reference/llamacpp-variants.json).

Fast: the RoPE math is checked against llama.cpp's formulas with hand-computed values, the file writers run on
tiny models, the build's sha256 pinning is exercised with fake writers, and the recorded JSON is checked for the
facts the Swift suite relies on (long prompt past 600 tokens, scaling visibly changes logits, perplexity's
window arithmetic). The real files are only checked (sha256 against the JSON) where the `real_model` tests run.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import common
import make_llamacpp_variants as mv
import make_model


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(mv.REFERENCE_JSON.read_text())


def tiny_spec(**kw) -> make_model.ModelSpec:
    base = dict(name="tiny", model_type="llama", layers=1, dim=64, heads=4, kv_heads=2, head_dim=16, ffn=64,
                vocab=512, rope_theta=100000.0, eps=1e-5, context=256, tied=True, strategy="none", repeats=1)
    base.update(kw)
    return make_model.ModelSpec(**base)


# ---------------------------------------------------------------------------------------------------
# RoPE math.
# ---------------------------------------------------------------------------------------------------


def test_llama3_factors_for_smollm2():
    f = mv.llama3_rope_factors(64, 100000.0, **mv.LLAMA3_ROPE)
    assert f.dtype == np.float32 and f.shape == (32,)
    # wavelen_i = 2 pi 1e5^(i/32): < 2048 up to pair 16, > 8192 from pair 20.
    assert np.all(f[:17] == 1.0) and np.all(f[20:] == 32.0)
    # Pair 18 by hand: wavelen = 2 pi 1e5^(18/32) = 4182.4; smooth = (8192/4182.4 - 1)/3 = 0.31957;
    # factor = 1/((1-smooth)/32 + smooth) = 2.8037.
    wavelen = 2 * math.pi * 100000.0 ** (18 / 32)
    smooth = (8192 / wavelen - 1) / 3
    assert f[18] == pytest.approx(1 / ((1 - smooth) / 32 + smooth), rel=1e-5)
    assert f[18] == pytest.approx(2.8037, abs=1e-3)
    assert np.all(np.diff(f) >= 0)


def test_yarn_corr_dims_and_angles():
    # corr(32) = 64 ln(8192/(64 pi)) / (2 ln 1e5) = 10.30 -> 10; corr(1) = 64 ln(8192/(2 pi)) / (2 ln 1e5) = 19.93 -> 20.
    assert mv.yarn_corr_dims(64, 8192, 100000.0) == (10, 20)
    pos = 700
    plain, ms0 = mv.rope_angles(pos, 64, 100000.0)
    linear, ms1 = mv.rope_angles(pos, 64, 100000.0, freq_scale=0.25)
    yarn, ms2 = mv.rope_angles(pos, 64, 100000.0, freq_scale=0.25, ext_factor=1.0, n_ctx_orig=8192)
    assert ms0 == ms1 == 1.0
    assert ms2 == pytest.approx(1 + 0.1 * math.log(4)) and ms2 == pytest.approx(1.138629, abs=1e-6)
    assert plain[0] == 700.0 and np.allclose(linear, plain / 4)
    assert np.allclose(yarn[:11], plain[:11])  # pairs up to `low` keep their angle
    assert np.allclose(yarn[20:], plain[20:] / 4)  # from `high` on: interpolated like linear
    # Pair 15: ramp = 1 - (15 - 10)/10 = 0.5 -> the mean of both.
    assert yarn[15] == pytest.approx(0.5 * plain[15] + 0.5 * plain[15] / 4)
    ff = mv.llama3_rope_factors(64, 100000.0, **mv.LLAMA3_ROPE)
    l3, _ = mv.rope_angles(pos, 64, 100000.0, freq_factors=ff)
    assert np.allclose(l3[:17], plain[:17]) and np.allclose(l3[20:], plain[20:] / 32)


# ---------------------------------------------------------------------------------------------------
# Writers on tiny models.
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory):
    return make_model.write_model(tiny_spec(), tmp_path_factory.mktemp("m") / "tiny.F32.gguf", "f32", 1, progress=False)


@pytest.mark.parametrize("kind", ["rope-llama3", "rope-linear", "rope-yarn"])
def test_rope_variant_adds_only_its_keys(tiny_f32, tmp_path, kind):
    out = tmp_path / f"{kind}.gguf"
    mv.write_rope_variant(tiny_f32, out, kind)
    src, got = common.open_gguf(tiny_f32), common.open_gguf(out)
    meta = lambda r: {k: common.field_value(r, k) for k in r.fields if not common.is_pseudo_field(k)}  # noqa: E731
    a, b = meta(src), meta(got)
    added = {k: v for k, v in b.items() if a.get(k) != v}
    if kind == "rope-llama3":
        assert added == {}
        t = got.tensors[0]
        assert t.name == "rope_freqs.weight" and t.tensor_type == common.GGMLQuantizationType.F32
        # head_dim 16, base 1e5: the factors come from the file's own head_dim and base.
        assert np.array_equal(np.asarray(t.data), mv.llama3_rope_factors(16, 100000.0, **mv.LLAMA3_ROPE))
        rest = got.tensors[1:]
    else:
        assert added["llama.rope.scaling.type"] == kind.split("-")[1]
        assert added["llama.rope.scaling.factor"] == 4.0 and added["llama.context_length"] == 32768
        assert got.fields["llama.rope.scaling.factor"].types[0] == common.GGUFValueType.FLOAT32
        if kind == "rope-yarn":
            assert added["llama.rope.scaling.original_context_length"] == 8192
            assert got.fields["llama.rope.scaling.original_context_length"].types[0] == common.GGUFValueType.UINT32
        rest = got.tensors
    assert [t.name for t in rest] == [t.name for t in src.tensors]
    for s, g in zip(src.tensors, rest):
        assert np.array_equal(np.asarray(s.data), np.asarray(g.data))


def test_qwen2_writer(tmp_path):
    spec = tiny_spec(model_type="qwen2", arch="qwen2", tied=False, layers=2)
    out = make_model.write_model(spec, tmp_path / "q.gguf", "f32", 7, progress=False, output_std=0.5, embed_std=0.25,
                                 tokenizer_overrides={"tokenizer.ggml.pre": "qwen2"})
    r = common.open_gguf(out)
    assert common.field_value(r, "general.architecture") == "qwen2"
    assert common.field_value(r, "qwen2.rope.freq_base") == 100000.0 and common.field_value(r, "qwen2.block_count") == 2
    assert not any(k.startswith("llama.") for k in r.fields)
    assert common.field_value(r, "tokenizer.ggml.pre") == "qwen2"
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    assert t["blk.1.attn_q.bias"].shape == (64,) and t["blk.1.attn_k.bias"].shape == (32,) and "blk.1.attn_v.bias" in t
    assert [x.name for x in r.tensors][1:8] == ["blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_q.bias",
                                                "blk.0.attn_k.weight", "blk.0.attn_k.bias", "blk.0.attn_v.weight",
                                                "blk.0.attn_v.bias"]
    biases = np.concatenate([t[f"blk.{i}.attn_{p}.bias"] for i in range(2) for p in "qkv"])
    assert 0.35 < biases.std() < 0.65  # N(0, 0.5^2) over 256 values
    assert 0.45 < t["output.weight"].std() < 0.55 and 0.22 < t["token_embd.weight"].std() < 0.28
    assert 0.018 < t["blk.0.ffn_up.weight"].std() < 0.022 and np.all(t["blk.0.ffn_norm.weight"] == 1)
    assert make_model.parameter_count(spec) == sum(v.size for v in t.values())
    with pytest.raises(common.ToolError, match="no such key"):
        make_model.write_model(spec, tmp_path / "x.gguf", "f32", 7, progress=False, tokenizer_overrides={"tokenizer.nope": 1})


def test_qwen2_from_config_model_type():
    cfg = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
           "intermediate_size": 64, "vocab_size": 512, "max_position_embeddings": 256, "model_type": "qwen2"}
    assert make_model.spec_from_config(cfg).arch == "qwen2"
    assert make_model.spec_from_config({**cfg, "model_type": "llama"}).arch == "llama"


# ---------------------------------------------------------------------------------------------------
# Building: sha256 pins, atomicity, idempotence (fake writers; the real ones take minutes).
# ---------------------------------------------------------------------------------------------------


def test_make_checks_the_pin_before_the_file_lands(tmp_path, monkeypatch):
    calls = []

    def fake_writer(src, out, kind="x"):
        calls.append(kind)
        out.write_bytes(b"variant bytes")

    good = __import__("hashlib").sha256(b"variant bytes").hexdigest()
    monkeypatch.setattr(mv, "write_rope_variant", fake_writer)
    monkeypatch.setattr(mv, "pinned", lambda: {mv.LINEAR_NAME: {"sha256": "0" * 64}})
    with pytest.raises(common.ToolError, match="recorded on 0000"):
        mv.make(mv.LINEAR_NAME, tmp_path, tmp_path / "src.gguf")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(mv, "pinned", lambda: {mv.LINEAR_NAME: {"sha256": good}})
    out = mv.make(mv.LINEAR_NAME, tmp_path, tmp_path / "src.gguf")
    assert out.read_bytes() == b"variant bytes" and len(calls) == 2
    assert mv.make(mv.LINEAR_NAME, tmp_path, tmp_path / "src.gguf") == out and len(calls) == 2  # verified: no rebuild
    out.write_bytes(b"corrupted")
    mv.make(mv.LINEAR_NAME, tmp_path, tmp_path / "src.gguf")
    assert out.read_bytes() == b"variant bytes" and len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [mv.LINEAR_NAME]


# ---------------------------------------------------------------------------------------------------
# The committed llama.cpp outputs.
# ---------------------------------------------------------------------------------------------------


def test_reference_covers_every_file_and_prompt(ref):
    assert ref["runtime"]["llama_cpp_python"] == "0.3.36"
    assert ref["runtime"]["context"]["n_ctx"] == 1024 and ref["runtime"]["context"]["n_threads"] == 2
    names = [common.SMOLLM2_F32_NAME, *mv.VARIANTS.values()]
    assert sorted(ref["files"]) == sorted(names)
    assert ref["files"][common.SMOLLM2_F32_NAME]["sha256"] == "f0089e79d6755eb5fbbf61cf4a16ba6bd79641f199875d1dc38cef994afdd0fd"
    for name in names:
        recs = [r for r in ref["records"] if r["model_file"] == name]
        assert [r["prompt_name"] for r in recs] == ["capital", "code", "story", "long"]
        for r in recs:
            assert len(r["tokens"]) == r["n_tokens"] and len(r["last_pos_top5_ids"]) == 5
            assert r["last_pos_top5_logits"] == sorted(r["last_pos_top5_logits"], reverse=True)
            assert len(r["greedy_ids"]) == 24 == len(r["greedy_top1_top2_margin"])
            assert r["greedy_ids"][0] == r["last_pos_top5_ids"][0]
            assert all(m >= 0 for m in r["greedy_top1_top2_margin"])
        long = recs[-1]
        assert long["n_tokens"] > 600 and long["prompt_source"] == "/usr/share/common-licenses/GPL-3[:3300]"


def test_reference_agrees_with_the_older_smollm2_reference(ref, llamacpp_reference):
    """Same F32 file, same prompt, recorded another time with n_ctx 512: same ids, logits within 1e-3."""
    old = next(r for r in llamacpp_reference["records"]
               if r["model_file"] == common.SMOLLM2_F32_NAME and r["prompt"] == "The capital of France is")
    new = next(r for r in ref["records"] if r["model_file"] == common.SMOLLM2_F32_NAME and r["prompt_name"] == "capital")
    assert new["tokens"] == old["tokens"] == [504, 3575, 282, 4649, 314]
    assert new["last_pos_top5_ids"] == old["last_pos_top5_ids"]
    assert np.allclose(new["last_pos_top5_logits"], old["last_pos_top5_logits"], atol=1e-3)
    assert new["greedy_ids"][:16] == old["greedy_ids"][:16]


def test_scaling_changes_llama_cpp_logits(ref):
    diff = {(d["model_file"], d["prompt_name"]): d["max_abs_last_logit_diff"] for d in ref["vs_plain_f32"]}
    # Llama-3 factors only touch slow pairs: barely visible at 5 tokens, large past 700.
    assert diff[(mv.LLAMA3_NAME, "capital")] < 0.3 and diff[(mv.LLAMA3_NAME, "long")] > 1.0
    # Linear and YaRN change every position > 0 (and YaRN's mscale the attention temperature).
    for name in (mv.LINEAR_NAME, mv.YARN_NAME):
        assert min(diff[(name, p)] for p in ("capital", "code", "story", "long")) > 1.0
    # ... and the three scalings are three different models.
    long = {r["model_file"]: r["greedy_ids"] for r in ref["records"] if r["prompt_name"] == "long"}
    assert len({tuple(long[n]) for n in (common.SMOLLM2_F32_NAME, mv.LLAMA3_NAME, mv.LINEAR_NAME, mv.YARN_NAME)}) == 4


def test_rope_parameters_recorded(ref):
    assert ref["rope"]["yarn"]["corr_dims"] == [10, 20]
    assert ref["rope"]["llama3"]["rope_freqs"] == [float(x) for x in mv.llama3_rope_factors(64, 100000.0, **mv.LLAMA3_ROPE)]
    yarn = ref["files"][mv.YARN_NAME]["metadata"]
    assert yarn["llama.rope.scaling.type"] == "yarn" and yarn["llama.rope.scaling.original_context_length"] == 8192
    assert ref["files"][mv.LLAMA3_NAME]["tensor_types"] == {"F32": 273}


def test_q4_k_m_is_a_k_quant_mixture(ref):
    f = ref["files"][mv.Q4_K_M_NAME]
    # 576 and 1536 rows: K-quants need multiples of 256, so llama.cpp falls back to Q5_0 for most matrices.
    assert f["tensor_types"] == {"F32": 61, "Q4_K": 16, "Q5_0": 166, "Q6_K": 14, "Q8_0": 15}
    assert f["n_tensors"] == 272


def test_qwen2_logits_are_not_degenerate(ref):
    recs = [r for r in ref["records"] if r["model_file"] == mv.QWEN2_NAME]
    margins = np.array([m for r in recs for m in r["greedy_top1_top2_margin"]])
    assert np.median(margins) > 0.5 and np.mean(margins < 0.05) < 0.1
    assert len({i for r in recs for i in r["greedy_ids"]}) > 20  # not one token everywhere
    meta = ref["files"][mv.QWEN2_NAME]["metadata"]
    assert meta["general.architecture"] == "qwen2" and meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["qwen2.rope.freq_base"] == 1e6
    # pre qwen2 splits text differently from SmolLM2's smollm pre-tokenizer on the same vocabulary.
    f32 = {r["prompt_name"]: r["tokens"] for r in ref["records"] if r["model_file"] == common.SMOLLM2_F32_NAME}
    q = {r["prompt_name"]: r["tokens"] for r in recs}
    assert q["capital"] == f32["capital"] and q["long"] != f32["long"]


def test_perplexity_follows_llama_perplexity(ref):
    p = ref["perplexity"]
    assert p["model_file"] == mv.Q4_K_M_NAME and p["n_ctx"] == 512 and p["add_bos"] is False
    assert p["n_chunk"] == p["n_tokens"] // 512
    assert p["scored_tokens"] == p["n_chunk"] * (512 - 1 - 256)
    assert 5 < p["perplexity"] < 40 and p["running_ppl_per_chunk"][-1] == pytest.approx(p["perplexity"])


# ---------------------------------------------------------------------------------------------------
# The real files (made by `make variants`; built here if missing).
# ---------------------------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.parametrize("name", [mv.LLAMA3_NAME, mv.LINEAR_NAME, mv.YARN_NAME, mv.QWEN2_NAME])
def test_real_variant_files_match_their_pins(ref, real_f32, name):
    path = mv.make(name, real_f32.parent, real_f32)
    assert common.sha256_file(path) == ref["files"][name]["sha256"]
    assert path.stat().st_size == ref["files"][name]["size"]
