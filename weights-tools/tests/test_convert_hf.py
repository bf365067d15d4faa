"""convert_hf.py: Hugging Face MobileLLM / Llama checkpoints -> llama GGUF.

The key check: a float64 forward pass written here in Hugging Face's own convention (rotate-half
RoPE over concatenated [freqs, freqs], read straight from the safetensors) must equal
reference.py's forward (GGUF convention: adjacent-pair RoPE) on the converted file. That only holds
if the converter permutes Q/K rows exactly like llama.cpp; without the permutation it must fail.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import common
import convert_hf
import hf_tokenizer
import make_test_model
import reference
from common import GGMLQuantizationType as QT
from common import ToolError

DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 64, 2, 4, 2, 128, 300
HEAD_DIM = DIM // HEADS
TOKENS = [1, 5, 9, 42, 7, 299, 100, 3]


# --------------------------------------------------------------------------------------------
# Tiny checkpoints.
# --------------------------------------------------------------------------------------------


def hf_config(arch: str, **changes) -> dict:
    cfg = {
        "architectures": [arch],
        "model_type": "mobilellm" if arch == "MobileLLMForCausalLM" else "llama",
        "hidden_size": DIM, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "intermediate_size": FFN, "vocab_size": VOCAB,
        "hidden_act": "silu", "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 128,
        "bos_token_id": 1, "eos_token_id": 2,
    }
    if arch == "MobileLLMForCausalLM":
        cfg.update({"share_embedding": True, "tie_word_embeddings": False, "layer_sharing": False})
    else:
        cfg.update({"tie_word_embeddings": False})
    cfg.update(changes)
    return cfg


def hf_weights(seed: int, untied: bool) -> dict[str, np.ndarray]:
    """float32 HF state dict, (out_features, in_features); scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(n):
        return rng.normal(1.0, 0.1, size=n).astype(np.float32)

    w = {"model.embed_tokens.weight": (rng.standard_normal((VOCAB, DIM)) * 0.4).astype(np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(DIM)
        w[p + "self_attn.q_proj.weight"] = mat(HEADS * HEAD_DIM, DIM, 2.0)
        w[p + "self_attn.k_proj.weight"] = mat(KV_HEADS * HEAD_DIM, DIM, 2.0)
        w[p + "self_attn.v_proj.weight"] = mat(KV_HEADS * HEAD_DIM, DIM)
        w[p + "self_attn.o_proj.weight"] = mat(DIM, HEADS * HEAD_DIM, 2.0)
        w[p + "post_attention_layernorm.weight"] = norm(DIM)
        w[p + "mlp.gate_proj.weight"] = mat(FFN, DIM)
        w[p + "mlp.up_proj.weight"] = mat(FFN, DIM)
        w[p + "mlp.down_proj.weight"] = mat(DIM, FFN, 2.0)
    w["model.norm.weight"] = norm(DIM)
    if untied:
        w["lm_head.weight"] = (rng.standard_normal((VOCAB, DIM)) * 0.4).astype(np.float32)
    return w


def write_tokenizer_json(d: Path) -> None:
    """A byte-level BPE tokenizer.json (SmolLM-like: Digits + ByteLevel) from make_test_model's vocab."""
    v = make_test_model.build_vocab(30)
    specials = set(make_test_model.SPECIAL_TOKENS)
    doc = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(v.tokens) if t in specials],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(v.tokens)},
                  "merges": [m.split(" ") for m in v.merges]},
    }
    (d / "tokenizer.json").write_text(json.dumps(doc))
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False, "chat_template": "{{ x }}"}))


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_field(num: int, wt: int, payload: bytes) -> bytes:
    key = _pb_varint(num << 3 | wt)
    if wt == 2:
        return key + _pb_varint(len(payload)) + payload
    return key + payload


def sentencepiece_model(pieces: list[tuple[str, float, int]], add_dummy_prefix: bool = True) -> bytes:
    """A hand-encoded SentencePiece ModelProto (pieces + normalizer_spec.add_dummy_prefix)."""
    out = b""
    for piece, score, typ in pieces:
        sp = _pb_field(1, 2, piece.encode()) + _pb_field(2, 5, struct.pack("<f", score)) + _pb_field(3, 0, _pb_varint(typ))
        out += _pb_field(1, 2, sp)
    out += _pb_field(2, 2, _pb_field(3, 0, _pb_varint(1)))  # trainer_spec: some field, ignored
    out += _pb_field(3, 2, _pb_field(3, 0, _pb_varint(int(add_dummy_prefix))))
    return out


SP_PIECES = ([("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
             + [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
             + [("▁the", -1.0, 1), ("▁a", -2.0, 1), ("é", -3.5, 1)])


def make_checkpoint(d: Path, arch: str, *, seed: int = 0, untied: bool = False, lm_head: str = "none",
                    shards: int = 1, tokenizer: str = "json", **cfg_changes) -> dict[str, np.ndarray]:
    """Write config.json + safetensors (+ tokenizer) to d; return the HF weights.

    lm_head: "none" (absent), "dup" (a copy of embed_tokens) -- for tied models; untied models always have one.
    """
    d.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(arch, **cfg_changes)
    if arch == "LlamaForCausalLM":
        cfg["tie_word_embeddings"] = not untied
    (d / "config.json").write_text(json.dumps(cfg))
    w = hf_weights(seed, untied)
    if not untied and lm_head == "dup":
        w["lm_head.weight"] = w["model.embed_tokens.weight"].copy()
    names = list(w)
    if shards == 1:
        save_file(w, str(d / "model.safetensors"))
    else:
        wmap = {}
        per = -(-len(names) // shards)
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: w[n] for n in names[s * per:(s + 1) * per]}
            save_file(part, str(d / fname))
            wmap.update({n: fname for n in part})
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    if tokenizer == "json":
        write_tokenizer_json(d)
    elif tokenizer == "sp":
        (d / "tokenizer.model").write_bytes(sentencepiece_model(SP_PIECES))
    return w


# --------------------------------------------------------------------------------------------
# Hugging Face's forward, float64, in HF's convention (rotate-half RoPE).
# --------------------------------------------------------------------------------------------


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def hf_forward(w: dict[str, np.ndarray], cfg: dict, tokens: list[int], layer_order: list[int] | None = None) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // H
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    n = len(tokens)

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    freqs = np.outer(np.arange(n, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)  # [n, hd]
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    mask = np.triu(np.full((n, n), -np.inf), k=1)

    x = w["model.embed_tokens.weight"][tokens]
    for i in (layer_order if layer_order is not None else range(cfg["num_hidden_layers"])):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, H, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, KV, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, KV, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, H // KV, axis=1)  # repeat_kv
        v = np.repeat(v, H // KV, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        a = np.einsum("hqk,khd->qhd", s, v).reshape(n, H * hd)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    tied = cfg.get("share_embedding", False) or cfg.get("tie_word_embeddings", False)
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return x @ head.T


def gguf_forward(path: Path, tokens: list[int]) -> np.ndarray:
    """reference.py's forward, following pocketlm.layer_schedule (reference.py itself ignores it):
    for a shared model the blocks are unrolled by hand (immediate: 0,0,1,1,...) into a new LlamaModel."""
    rd = common.open_gguf(path)
    strategy = common.field_value(rd, "pocketlm.layer_schedule.strategy", "none")
    repeats = int(common.field_value(rd, "pocketlm.layer_schedule.repeats", 1))
    m = reference.load_model(path)
    if strategy == "none" or repeats == 1:
        return reference.forward(m, tokens)
    assert strategy == "immediate", strategy
    order = [i for i in range(m.n_layer) for _ in range(repeats)]
    weights = {k: v for k, v in m.weights.items() if not k.startswith("blk.")}
    for j, src in enumerate(order):
        for t in reference.BLOCK_TENSORS:
            weights[f"blk.{j}.{t}.weight"] = m.weights[f"blk.{src}.{t}.weight"]
    unrolled = dataclasses.replace(m, n_layer=len(order), weights=weights)
    return reference.forward(unrolled, tokens)


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        common.run_cli(convert_hf.main, args)
    return exc.value.code


# --------------------------------------------------------------------------------------------
# Tests.
# --------------------------------------------------------------------------------------------

CASES = {
    # name: (arch, make_checkpoint kwargs, expect output.weight, schedule)
    "mobilellm-tied-no-lm-head": ("MobileLLMForCausalLM", dict(lm_head="none", tokenizer="sp"), False, ("none", 1)),
    "mobilellm-tied-dup-lm-head": ("MobileLLMForCausalLM", dict(lm_head="dup", seed=1), False, ("none", 1)),
    "llama-untied-sharded": ("LlamaForCausalLM", dict(untied=True, shards=3, seed=2), True, ("none", 1)),
    "mobilellm-ls": ("MobileLLMForCausalLM", dict(seed=3, layer_sharing=True), False, ("immediate", 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_convert_matches_hf_forward(tmp_path, capsys, case):
    arch, kwargs, has_output, (strategy, repeats) = CASES[case]
    ckpt = tmp_path / case
    w = make_checkpoint(ckpt, arch, **kwargs)
    cfg = json.loads((ckpt / "config.json").read_text())
    out = tmp_path / f"{case}.gguf"
    assert run([str(ckpt), "--outtype", "f32", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "\r" in captured.err and "100.0%" in captured.err  # progress bar

    # (1) metadata, tensor names and shapes
    rd = common.open_gguf(out)
    fv = lambda k: common.field_value(rd, k)  # noqa: E731
    assert fv("general.architecture") == "llama"
    assert fv("llama.block_count") == LAYERS
    assert fv("llama.embedding_length") == DIM
    assert fv("llama.feed_forward_length") == FFN
    assert fv("llama.attention.head_count") == HEADS
    assert fv("llama.attention.head_count_kv") == KV_HEADS
    assert fv("llama.rope.dimension_count") == HEAD_DIM
    assert fv("llama.vocab_size") == VOCAB
    assert fv("llama.context_length") == 128
    assert fv("llama.rope.freq_base") == pytest.approx(10000.0)
    assert fv("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert fv("general.file_type") == 0
    assert fv("pocketlm.layer_schedule.strategy") == strategy
    assert fv("pocketlm.layer_schedule.repeats") == repeats
    assert rd.fields["pocketlm.layer_schedule.strategy"].types[0] == common.GGUFValueType.STRING
    assert rd.fields["pocketlm.layer_schedule.repeats"].types[0] == common.GGUFValueType.UINT32
    assert rd.fields["llama.block_count"].types[0] == common.GGUFValueType.UINT32
    tensors = {t.name: t for t in rd.tensors}
    expected = {"token_embd.weight": (VOCAB, DIM), "output_norm.weight": (DIM,)}
    for i in range(LAYERS):
        p = f"blk.{i}."
        expected.update({p + "attn_norm.weight": (DIM,), p + "attn_q.weight": (DIM, DIM),
                         p + "attn_k.weight": (KV_HEADS * HEAD_DIM, DIM), p + "attn_v.weight": (KV_HEADS * HEAD_DIM, DIM),
                         p + "attn_output.weight": (DIM, DIM), p + "ffn_norm.weight": (DIM,),
                         p + "ffn_gate.weight": (FFN, DIM), p + "ffn_up.weight": (FFN, DIM), p + "ffn_down.weight": (DIM, FFN)})
    if has_output:
        expected["output.weight"] = (VOCAB, DIM)
    assert set(tensors) == set(expected)
    for name, shape in expected.items():
        t = tensors[name]
        assert t.tensor_type == QT.F32
        assert tuple(int(x) for x in reversed(t.shape)) == shape, name  # GGUF ne order is reversed
    # untouched tensors are byte-exact; permuted ones are a row permutation of the HF rows
    np.testing.assert_array_equal(np.asarray(tensors["token_embd.weight"].data), w["model.embed_tokens.weight"])
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.attn_v.weight"].data), w["model.layers.1.self_attn.v_proj.weight"])
    if has_output:
        np.testing.assert_array_equal(np.asarray(tensors["output.weight"].data), w["lm_head.weight"])
    q = np.asarray(tensors["blk.0.attn_q.weight"].data)
    assert not np.array_equal(q, w["model.layers.0.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(np.sort(q, axis=0), np.sort(w["model.layers.0.self_attn.q_proj.weight"], axis=0))

    # (2) the key test: HF forward (rotate-half RoPE) == reference.py forward on the GGUF
    order = [i for i in range(LAYERS) for _ in range(repeats)] if strategy == "immediate" else None
    hf = hf_forward(w, cfg, TOKENS, order)
    gg = gguf_forward(out, TOKENS)
    assert hf.shape == gg.shape == (len(TOKENS), VOCAB)
    assert np.abs(hf).max() > 1.0  # logits are not trivially small
    assert np.max(np.abs(hf - gg)) < 1e-6
    if strategy == "immediate":  # sharing matters: the unshared forward is different
        assert np.max(np.abs(hf - hf_forward(w, cfg, TOKENS))) > 0.1

    # without the permutation, the GGUF model is a different model
    bad = tmp_path / f"{case}-nopermute.gguf"
    convert_hf.convert(ckpt, bad, "f32", progress=False, permute=False)
    assert np.max(np.abs(hf - gguf_forward(bad, TOKENS))) > 0.1


def test_quantized_outtypes(tmp_path):
    ckpt = tmp_path / "m"
    w = make_checkpoint(ckpt, "MobileLLMForCausalLM")
    cfg = json.loads((ckpt / "config.json").read_text())
    hf = hf_forward(w, cfg, TOKENS)
    # (max |logit error| for f16; correlation with the float64 HF logits for the quantized types)
    for outtype, qt, ftype, tol in (("f16", QT.F16, 1, 0.05), ("q8_0", QT.Q8_0, 7, 0.999), ("q4_0", QT.Q4_0, 2, 0.8)):
        out = convert_hf.convert(ckpt, tmp_path / f"m.{outtype}.gguf", outtype, progress=False)
        rd = common.open_gguf(out)
        types = {t.name: t.tensor_type for t in rd.tensors}
        assert types["blk.0.attn_q.weight"] == qt and types["token_embd.weight"] == qt
        assert types["blk.0.attn_norm.weight"] == QT.F32 and types["output_norm.weight"] == QT.F32
        assert common.field_value(rd, "general.file_type") == ftype
        got = reference.forward(out, TOKENS)
        if outtype == "f16":
            assert np.max(np.abs(got - hf)) < tol
        else:
            assert np.corrcoef(got.ravel(), hf.ravel())[0, 1] > tol, outtype


def test_bpe_tokenizer_written(tmp_path):
    ckpt = tmp_path / "llama"
    make_checkpoint(ckpt, "LlamaForCausalLM", untied=True)
    out = convert_hf.convert(ckpt, tmp_path / "l.gguf", "f32", progress=False)
    rd = common.open_gguf(out)
    v = make_test_model.build_vocab(30)
    toks = common.field_value(rd, "tokenizer.ggml.tokens")
    assert len(toks) == VOCAB
    assert toks[:len(v.tokens)] == v.tokens
    assert toks[len(v.tokens)] == "<unused_0>"
    types = common.field_value(rd, "tokenizer.ggml.token_type")
    assert types[:3] == [3, 3, 3] and types[3] == 1 and types[-1] == 5
    assert common.field_value(rd, "tokenizer.ggml.merges") == v.merges
    assert common.field_value(rd, "tokenizer.ggml.model") == "gpt2"
    assert common.field_value(rd, "tokenizer.ggml.pre") == "smollm"
    assert common.field_value(rd, "tokenizer.ggml.bos_token_id") == 1
    assert common.field_value(rd, "tokenizer.ggml.eos_token_id") == 2
    assert common.field_value(rd, "tokenizer.ggml.add_bos_token") is False
    assert common.field_value(rd, "tokenizer.chat_template") == "{{ x }}"


def test_sentencepiece_tokenizer_written(tmp_path):
    ckpt = tmp_path / "mob"
    make_checkpoint(ckpt, "MobileLLMForCausalLM", tokenizer="sp")
    out = convert_hf.convert(ckpt, tmp_path / "m.gguf", "f32", progress=False)
    rd = common.open_gguf(out)
    assert common.field_value(rd, "tokenizer.ggml.model") == "llama"
    toks = common.field_value(rd, "tokenizer.ggml.tokens")
    types = common.field_value(rd, "tokenizer.ggml.token_type")
    scores = common.field_value(rd, "tokenizer.ggml.scores")
    n = len(SP_PIECES)
    assert len(toks) == len(types) == len(scores) == VOCAB
    assert toks[:n] == [p for p, _, _ in SP_PIECES] and toks[n] == "<unused_0>"
    assert types[:n] == [t for _, _, t in SP_PIECES] and types[n] == 5
    assert scores[:n] == pytest.approx([s for _, s, _ in SP_PIECES])
    assert common.field_value(rd, "tokenizer.ggml.bos_token_id") == 1
    assert common.field_value(rd, "tokenizer.ggml.eos_token_id") == 2
    assert common.field_value(rd, "tokenizer.ggml.unknown_token_id") == 0
    assert common.field_value(rd, "tokenizer.ggml.add_space_prefix") is True


def test_vocab_from_gguf(tmp_path):
    src = tmp_path / "src"
    make_checkpoint(src, "LlamaForCausalLM")
    vocab_gguf = convert_hf.convert(src, tmp_path / "src.gguf", "f32", progress=False)
    ckpt = tmp_path / "mob"
    make_checkpoint(ckpt, "MobileLLMForCausalLM", tokenizer="none")
    with pytest.raises(ToolError, match="no tokenizer found"):
        convert_hf.convert(ckpt, tmp_path / "x.gguf", "f32", progress=False)
    out = convert_hf.convert(ckpt, tmp_path / "m.gguf", "f32", vocab_from=vocab_gguf, progress=False)
    a, b = common.open_gguf(vocab_gguf), common.open_gguf(out)
    keys = [k for k in a.fields if k.startswith("tokenizer.")]
    assert keys and keys == [k for k in b.fields if k.startswith("tokenizer.")]
    for k in keys:
        assert common.field_value(a, k) == common.field_value(b, k), k


def test_tied_llama_ignores_duplicate_lm_head(tmp_path):
    ckpt = tmp_path / "smol"
    w = make_checkpoint(ckpt, "LlamaForCausalLM", lm_head="dup")  # tie_word_embeddings true
    out = convert_hf.convert(ckpt, tmp_path / "s.gguf", "f32", progress=False)
    assert "output.weight" not in {t.name for t in common.open_gguf(out).tensors}
    cfg = json.loads((ckpt / "config.json").read_text())
    assert np.max(np.abs(hf_forward(w, cfg, TOKENS) - gguf_forward(out, TOKENS))) < 1e-6


# --- errors ---


def _rewrite(ckpt: Path, change) -> None:
    from safetensors.numpy import load_file
    w = load_file(str(ckpt / "model.safetensors"))
    change(w)
    save_file(w, str(ckpt / "model.safetensors"))


def test_error_missing_tensor(tmp_path, capsys):
    ckpt = tmp_path / "m"
    make_checkpoint(ckpt, "MobileLLMForCausalLM")
    _rewrite(ckpt, lambda w: w.pop("model.layers.1.mlp.up_proj.weight"))
    out = tmp_path / "m.gguf"
    assert run([str(ckpt), "--outtype", "f32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "model.layers.1.mlp.up_proj.weight" in err and "missing" in err and "[128, 64]" in err
    assert not out.exists()


def test_error_untied_without_lm_head(tmp_path, capsys):
    ckpt = tmp_path / "l"
    make_checkpoint(ckpt, "LlamaForCausalLM", untied=True)
    _rewrite(ckpt, lambda w: w.pop("lm_head.weight"))
    assert run([str(ckpt), "--out", str(tmp_path / "l.gguf")]) == 1
    err = capsys.readouterr().err
    assert "lm_head.weight" in err and "missing" in err


def test_error_wrong_shape(tmp_path, capsys):
    ckpt = tmp_path / "m"
    make_checkpoint(ckpt, "MobileLLMForCausalLM")

    def change(w):
        w["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)

    _rewrite(ckpt, change)
    assert run([str(ckpt), "--outtype", "f32", "--out", str(tmp_path / "m.gguf")]) == 1
    err = capsys.readouterr().err
    assert "model.layers.0.self_attn.k_proj.weight" in err and "[64, 64]" in err and "[32, 64]" in err


def test_error_tied_but_different_lm_head(tmp_path, capsys):
    ckpt = tmp_path / "m"
    make_checkpoint(ckpt, "MobileLLMForCausalLM")

    def change(w):
        w["lm_head.weight"] = np.ones((VOCAB, DIM), np.float32)

    _rewrite(ckpt, change)
    assert run([str(ckpt), "--out", str(tmp_path / "m.gguf")]) == 1
    assert "lm_head.weight differs" in capsys.readouterr().err


def test_error_unexpected_tensor_and_arch(tmp_path, capsys):
    ckpt = tmp_path / "m"
    make_checkpoint(ckpt, "MobileLLMForCausalLM")

    def change(w):
        w["model.layers.0.self_attn.q_proj.bias"] = np.zeros(DIM, np.float32)

    _rewrite(ckpt, change)
    assert run([str(ckpt), "--out", str(tmp_path / "m.gguf")]) == 1
    assert "model.layers.0.self_attn.q_proj.bias" in capsys.readouterr().err
    (ckpt / "config.json").write_text(json.dumps(hf_config("GPT2LMHeadModel")))
    assert run([str(ckpt), "--out", str(tmp_path / "m.gguf")]) == 1
    assert "GPT2LMHeadModel" in capsys.readouterr().err


def test_error_pytorch_bin_without_torch(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    ckpt = tmp_path / "bin"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(hf_config("MobileLLMForCausalLM")))
    (ckpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a torch file")
    assert run([str(ckpt), "--outtype", "f16", "--out", str(tmp_path / "b.gguf")]) == 1
    err = capsys.readouterr().err
    assert "pytorch_model.bin needs torch: pip install torch, or convert to safetensors" in err


def test_error_no_weights(tmp_path, capsys):
    ckpt = tmp_path / "empty"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(hf_config("LlamaForCausalLM")))
    assert run([str(ckpt), "--out", str(tmp_path / "e.gguf")]) == 1
    assert "no model.safetensors" in capsys.readouterr().err


def test_bf16_safetensors(tmp_path):
    """BF16 checkpoints (the usual HF dtype) are read without torch: values are exact in f32."""
    ckpt = tmp_path / "bf"
    w = make_checkpoint(ckpt, "MobileLLMForCausalLM")
    bf = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in w.items()}
    # safetensors.numpy has no bfloat16: write the file by hand with dtype BF16
    header, blobs, off = {}, [], 0
    for k, v in bf.items():
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        blobs.append(v.tobytes())
        off += v.nbytes
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    (ckpt / "model.safetensors").write_bytes(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    out = convert_hf.convert(ckpt, tmp_path / "bf.gguf", "f32", progress=False)
    rounded = {k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in bf.items()}
    cfg = json.loads((ckpt / "config.json").read_text())
    assert np.max(np.abs(hf_forward(rounded, cfg, TOKENS) - gguf_forward(out, TOKENS))) < 1e-6
