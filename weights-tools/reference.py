#!/usr/bin/env python3
"""Float64 numpy reference forward pass for small llama-architecture GGUF models.

Why: the Swift runtime needs an oracle that is independent of it and simple enough to trust by
reading. This is a direct, unoptimised transcription of llama.cpp's llama graph in float64:

    x = token_embd[tokens]
    for each block:
        x += attn_output( attention( rope(attn_q(rmsnorm(x))), rope(attn_k(...)), attn_v(...) ) )
        x += ffn_down( silu(ffn_gate(rmsnorm(x))) * ffn_up(rmsnorm(x)) )
    logits = output( rmsnorm(x) )        # output = token_embd when output.weight is absent (tied)

with the GGUF llama conventions: RMSNorm eps and RoPE base from metadata; RoPE rotates ADJACENT
pairs (x[2i], x[2i+1]) by pos * base^(-2i/n_rot) (convert_hf_to_gguf permutes Q/K rows so this
matches HF's rotate-half); grouped-query attention (query head h reads kv head h // (H/KV));
scores scaled by 1/sqrt(head_dim); causal mask over the whole prompt (one batch).

All weights are dequantized with gguf.quants.dequantize (so a Q4_1 file and its F32
dequantization give the same result) and then computed on in float64, so the only error left is
the weights' own. On SmolLM2-135M-Instruct it reproduces llama.cpp's F32 logits to ~0.01.

CLI:  reference.py MODEL.gguf --tokens 1,5,9 [--out ref.json]
      -> JSON {"model": path, "tokens": [...], "logits": [[n_vocab floats] per position]}
Python: forward(path_or_model, tokens) -> np.ndarray of shape [n_tokens, n_vocab] (float64);
        hidden_states(path_or_model, tokens, ffn_hook=None) -> the final residual [n_tokens, n_embd],
        calling ffn_hook(layer, ffn_input, silu(gate)*up) per block (train_predictor.py uses it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import common
from common import ToolError

BLOCK_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)


@dataclass
class LlamaModel:
    """Hyper-parameters plus float64 weights, numpy-shaped (out_features, in_features)."""

    path: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    eps: float
    rope_base: float
    tied: bool
    weights: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def w(self, name: str) -> np.ndarray:
        return self.weights[name]


def _load(path: str) -> LlamaModel:
    reader = common.open_gguf(path)
    arch = common.field_value(reader, "general.architecture")
    if arch != "llama":
        raise ToolError(f"{path}: architecture {arch!r} is not supported (only 'llama')")

    def hp(key: str, default=None):
        value = common.field_value(reader, f"llama.{key}", default)
        if value is None:
            raise ToolError(f"{path}: required metadata key 'llama.{key}' is missing")
        return value

    n_layer = int(hp("block_count"))
    n_embd = int(hp("embedding_length"))
    n_head = int(hp("attention.head_count"))
    n_head_kv = int(hp("attention.head_count_kv", n_head))
    n_ff = int(hp("feed_forward_length"))
    n_ctx = int(hp("context_length"))
    eps = float(hp("attention.layer_norm_rms_epsilon"))
    rope_base = float(hp("rope.freq_base", 10000.0))
    head_dim = int(hp("attention.key_length", n_embd // n_head))
    n_rot = int(hp("rope.dimension_count", head_dim))
    scaling = common.field_value(reader, "llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ToolError(f"{path}: RoPE scaling {scaling!r} is not supported by this reference")
    if n_head % n_head_kv != 0:
        raise ToolError(f"{path}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    if n_rot % 2 or n_rot > head_dim:
        raise ToolError(f"{path}: bad rope.dimension_count {n_rot} for head_dim {head_dim}")

    tensors = {t.name: t for t in reader.tensors}
    expected: dict[str, tuple[int, ...]] = {"token_embd.weight": (-1, n_embd), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        p = f"blk.{i}."
        expected[p + "attn_norm.weight"] = (n_embd,)
        expected[p + "attn_q.weight"] = (n_head * head_dim, n_embd)
        expected[p + "attn_k.weight"] = (n_head_kv * head_dim, n_embd)
        expected[p + "attn_v.weight"] = (n_head_kv * head_dim, n_embd)
        expected[p + "attn_output.weight"] = (n_embd, n_head * head_dim)
        expected[p + "ffn_norm.weight"] = (n_embd,)
        expected[p + "ffn_gate.weight"] = (n_ff, n_embd)
        expected[p + "ffn_up.weight"] = (n_ff, n_embd)
        expected[p + "ffn_down.weight"] = (n_embd, n_ff)
    tied = "output.weight" not in tensors
    if not tied:
        expected["output.weight"] = (-1, n_embd)

    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise ToolError(f"{path}: unsupported tensors for this reference: {', '.join(unknown[:5])}")
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ToolError(f"{path}: missing tensors: {', '.join(missing[:5])}")

    weights: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        arr = common.dequantize_tensor(tensors[name]).astype(np.float64)
        if len(shape) == 1:
            arr = arr.reshape(-1)
        ok = arr.ndim == len(shape) and all(s in (-1, a) for s, a in zip(shape, arr.shape))
        if not ok:
            raise ToolError(f"{path}: tensor {name} has numpy shape {arr.shape}, expected {shape}")
        weights[name] = arr

    n_vocab = weights["token_embd.weight"].shape[0]
    if not tied and weights["output.weight"].shape[0] != n_vocab:
        raise ToolError(f"{path}: output.weight has {weights['output.weight'].shape[0]} rows, vocab is {n_vocab}")
    meta_vocab = common.field_value(reader, "llama.vocab_size")
    if meta_vocab is not None and int(meta_vocab) != n_vocab:
        raise ToolError(f"{path}: llama.vocab_size {meta_vocab} != token_embd rows {n_vocab}")

    return LlamaModel(
        path=str(path), n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_rot=n_rot, n_ff=n_ff, n_vocab=n_vocab, n_ctx=n_ctx, eps=eps,
        rope_base=rope_base, tied=tied, weights=weights,
    )


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int) -> LlamaModel:
    return _load(path)


def load_model(path: os.PathLike[str] | str) -> LlamaModel:
    """Load (and memoise, keyed on path+mtime+size) a llama GGUF as float64 weights."""
    p = Path(path)
    if not p.is_file():
        raise ToolError(f"no such file: {p}")
    st = p.stat()
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, positions: np.ndarray, n_rot: int, base: float) -> np.ndarray:
    """Rotate adjacent pairs (x[..., 2i], x[..., 2i+1]) of the first n_rot dims.

    x: [n_tokens, n_heads, head_dim]; angle = pos * base^(-2i/n_rot).
    """
    out = x.copy()
    i = np.arange(n_rot // 2, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / n_rot)
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [n, n_rot/2]
    cos = np.cos(angles)[:, None, :]
    sin = np.sin(angles)[:, None, :]
    x0 = x[..., 0:n_rot:2]
    x1 = x[..., 1:n_rot:2]
    out[..., 0:n_rot:2] = x0 * cos - x1 * sin
    out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def forward(model: LlamaModel | os.PathLike[str] | str, tokens: Sequence[int]) -> np.ndarray:
    """Logits [len(tokens), n_vocab] (float64) for a causal forward over all tokens at once."""
    m = model if isinstance(model, LlamaModel) else load_model(model)
    x = hidden_states(m, tokens)
    x = rms_norm(x, m.w("output_norm.weight"), m.eps)
    head = m.w("token_embd.weight") if m.tied else m.w("output.weight")
    return x @ head.T


#: ffn_hook(layer, x, h): x = the FFN input after ffn_norm [n, n_embd], h = silu(gate·x) ⊙ (up·x) [n, n_ff].
FfnHook = Callable[[int, np.ndarray, np.ndarray], None]


def hidden_states(model: LlamaModel | os.PathLike[str] | str, tokens: Sequence[int],
                  ffn_hook: FfnHook | None = None) -> np.ndarray:
    """The residual stream after the last block, before output_norm: [len(tokens), n_embd] (float64).

    `ffn_hook`, if given, is called once per block with that block's FFN input and activation
    (the arrays the forward itself goes on to use: do not modify them; copy them to keep them).
    """
    m = model if isinstance(model, LlamaModel) else load_model(model)
    toks = np.asarray(list(tokens), dtype=np.int64)
    if toks.ndim != 1 or toks.size == 0:
        raise ToolError("need at least one token")
    bad = [int(t) for t in toks if t < 0 or t >= m.n_vocab]
    if bad:
        raise ToolError(f"token ids out of range [0, {m.n_vocab}): {bad[:10]}")
    if toks.size > m.n_ctx:
        raise ToolError(f"{toks.size} tokens exceed the model's context length {m.n_ctx}")

    n = toks.size
    H, KV, hd = m.n_head, m.n_head_kv, m.head_dim
    group = H // KV
    pos = np.arange(n)
    mask = np.triu(np.full((n, n), -np.inf), k=1)  # [query, key]: key > query is masked
    scale = 1.0 / np.sqrt(hd)

    x = m.w("token_embd.weight")[toks].copy()
    for i in range(m.n_layer):
        p = f"blk.{i}."
        h = rms_norm(x, m.w(p + "attn_norm.weight"), m.eps)
        q = (h @ m.w(p + "attn_q.weight").T).reshape(n, H, hd)
        k = (h @ m.w(p + "attn_k.weight").T).reshape(n, KV, hd)
        v = (h @ m.w(p + "attn_v.weight").T).reshape(n, KV, hd)
        q = rope(q, pos, m.n_rot, m.rope_base)
        k = rope(k, pos, m.n_rot, m.rope_base)
        # expand kv heads to query heads: query head j uses kv head j // group
        k_full = np.repeat(k, group, axis=1)  # [n, H, hd]
        v_full = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k_full) * scale + mask[None, :, :]
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v_full).reshape(n, H * hd)
        x = x + attn @ m.w(p + "attn_output.weight").T

        h = rms_norm(x, m.w(p + "ffn_norm.weight"), m.eps)
        gate = h @ m.w(p + "ffn_gate.weight").T
        up = h @ m.w(p + "ffn_up.weight").T
        act = silu(gate) * up
        if ffn_hook is not None:
            ffn_hook(i, h, act)
        x = x + act @ m.w(p + "ffn_down.weight").T
    return x


def reference_json(model_label: str, tokens: Sequence[int], logits: np.ndarray) -> dict:
    return {
        "model": model_label,
        "tokens": [int(t) for t in tokens],
        "logits": [[float(v) for v in row] for row in logits],
    }


def parse_tokens(text: str) -> list[int]:
    try:
        toks = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise ToolError(f"--tokens must be comma-separated integers, got {text!r}") from None
    if not toks:
        raise ToolError("--tokens is empty")
    return toks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Float64 numpy forward pass of a llama GGUF; prints/writes logits for every position as JSON.",
    )
    parser.add_argument("model", type=Path, help="llama-architecture GGUF file (any type gguf-py can dequantize)")
    parser.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,5,9")
    parser.add_argument("--out", type=Path, default=None, help="write JSON here instead of stdout")
    parser.add_argument("--indent", type=int, default=None, help="JSON indent (default: compact)")
    args = parser.parse_args(argv)

    tokens = parse_tokens(args.tokens)
    logits = forward(args.model, tokens)
    doc = reference_json(str(args.model), tokens, logits)
    if args.out is None:
        json.dump(doc, sys.stdout, indent=args.indent)
        sys.stdout.write("\n")
    else:
        with common.atomic_output(args.out) as tmp:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=args.indent)
                f.write("\n")
        last = logits[-1]
        top = np.argsort(-last)[:5]
        print(f"wrote {args.out}: {len(tokens)} positions x {logits.shape[1]} logits; "
              f"last-position top-5 {[(int(t), round(float(last[t]), 4)) for t in top]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
