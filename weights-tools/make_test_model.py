#!/usr/bin/env python3
"""Write a tiny random-weight llama GGUF that looks like SmolLM2 to a loader, for fast tests.

Why: the real model is 100-540 MB and takes seconds to load; unit tests of the Swift GGUF reader,
dequantizers, tokenizer plumbing and forward pass want a file of a few hundred KB that exercises
the same code paths: the same architecture and metadata keys (with SmolLM2's GGUF value types),
a byte-level GPT-2 BPE vocabulary with merges and control tokens, SmolLM2's exact ChatML chat
template, F32 norms and matrices in any supported tensor type, tied or untied output head.

Vocabulary (deterministic, independent of --seed):
  ids 0,1,2     <|endoftext|>, <|im_start|>, <|im_end|>   (token_type 3 = control)
  ids 3..258    the 256 byte tokens, in GPT-2 bytes_to_unicode order (printable bytes first)
  ids 259..     tokens made by BPE merges learned on a small built-in English text (token_type 1)
The merges are learned with a plain BPE training loop (most frequent adjacent pair, ties broken
by the pair's text), inside pre-tokenized words (GPT-2 style, a leading space stays with its word),
so common words such as " the" become single tokens.

Weights: drawn from numpy's default_rng(seed) in a fixed order and independent of --outtype, so
tiny models of different types with the same seed are the same model up to quantization. Scales
are chosen so that logits are O(1-10) (std ~3, range about +-12): embeddings N(0, 0.4^2) (the tied
head then gives logit std ~3), Q/K with gain 1.5 (clearly non-uniform attention), attn_output and
ffn_down with gain 2.5 (so the blocks, not the input token's own embedding, decide the argmax --
with small gains a tied model just predicts its input token), other matrices 1/sqrt(fan_in).
Quantized types (q8_0/q4_0/q4_1/...) need every matrix's row length (dim, ffn) to be a multiple of 32.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf

#: SmolLM2-135M-Instruct's `tokenizer.chat_template`, byte for byte (tests compare it to the real file).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
DEFAULT_MERGES = 160

OUTTYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16,
    "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
}

#: Built-in training text for the BPE merges: plain English with the words tests like to use.
TRAINING_TEXT = """\
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
Once upon a time, there was a little cat. The little cat lived in a small house with a little dog.
Every day the cat and the dog played in the garden, and in the evening they sat by the fire.
The dog said to the cat: "I think that the sun is warm today." The cat said that it was true.
There was a time when the little house was the only house in the village, and the people of the
village would come to the house to hear the stories of the old man who lived there.
Hello! How are you? I am fine, thank you. What is your name? My name is Smol, and I am a model.
The user asks a question and the assistant gives an answer. The system tells the assistant what to do.
def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)
In the morning the children went to the school, and in the afternoon they came back to the house.
The weather was nice, the sky was blue, and the trees were green. It was a good day to be outside.
She said that the book was on the table, and he said that the pen was in the box next to the book.
We are going to the market to buy some bread, some milk and some apples for the children.
This is a test of the tokenizer. The tokenizer should split the text into the tokens of the vocabulary.
"""

# GPT-2 style pre-tokenizer, ASCII approximation (Python's re has no \p{L}); good enough for training
# merges on the ASCII text above.
PRETOKENIZE_RE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character mapping (insertion order = token order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pretokenize(text: str) -> list[str]:
    return PRETOKENIZE_RE.findall(text)


def word_symbols(word: str) -> tuple[str, ...]:
    b2u = bytes_to_unicode()
    return tuple(b2u[b] for b in word.encode("utf-8"))


def train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent symbol pair (ties: smallest pair text)."""
    words = Counter(word_symbols(w) for w in pretokenize(text))
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for syms, count in words.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < 2:
            break
        best = min(p for p, c in pairs.items() if c == best_count)
        merges.append(best)
        merged = best[0] + best[1]
        new_words: Counter[tuple[str, ...]] = Counter()
        for syms, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return merges


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]  # "left right", GGUF style

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, text: str) -> list[int]:
        """Approximate byte-level BPE encoding of plain text (no special tokens parsed).

        Only used to pick realistic token ids for fixtures; it is NOT an oracle for the Swift
        tokenizer (its pre-tokenizer is an ASCII approximation of llama.cpp's).
        """
        ranks = {tuple(m.split(" ")): r for r, m in enumerate(self.merges)}
        ids: list[int] = []
        for word in pretokenize(text):
            syms = list(word_symbols(word))
            while len(syms) > 1:
                cands = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
                rank, i = min(cands)
                if rank == 1 << 30:
                    break
                syms[i:i + 2] = [syms[i] + syms[i + 1]]
            ids.extend(self.ids[s] for s in syms)
        return ids


@functools.lru_cache(maxsize=4)
def build_vocab(n_merges: int = DEFAULT_MERGES) -> Vocab:
    """Specials, then the 256 byte tokens, then one token per new merge result."""
    tokens = list(SPECIAL_TOKENS)
    types = [TOKEN_TYPE_CONTROL] * len(SPECIAL_TOKENS)
    for ch in bytes_to_unicode().values():
        tokens.append(ch)
        types.append(TOKEN_TYPE_NORMAL)
    seen = set(tokens)
    merges = train_bpe(TRAINING_TEXT, n_merges)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
            types.append(TOKEN_TYPE_NORMAL)
    return Vocab(tokens=tokens, token_types=types, merges=[f"{a} {b}" for a, b in merges])


@dataclass
class TinyConfig:
    layers: int = 2
    dim: int = 64
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    context: int = 128
    untied: bool = False
    merges: int = DEFAULT_MERGES
    rope_base: float = 10000.0
    eps: float = 1e-5
    tensor_types: dict[str, QT] = field(default_factory=dict)  # per-tensor overrides

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def validate(self, outtype: QT) -> None:
        for name in ("layers", "dim", "heads", "kv_heads", "ffn", "context"):
            if getattr(self, name) <= 0:
                raise ToolError(f"--{name.replace('_', '-')} must be positive")
        if self.dim % self.heads:
            raise ToolError(f"--dim {self.dim} is not a multiple of --heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ToolError(f"--heads {self.heads} is not a multiple of --kv-heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ToolError(f"head dim {self.head_dim} must be even for RoPE")
        block = gguf.GGML_QUANT_SIZES[outtype][0]
        if block > 1:
            for what, n in (("--dim", self.dim), ("--ffn", self.ffn)):
                if n % block:
                    raise ToolError(f"{what} {n} must be a multiple of {block} for {outtype.name} (quantized rows)")


def random_weights(cfg: TinyConfig, n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    """float32 weights in numpy layout (out_features, in_features); names in file order."""
    rng = np.random.default_rng(seed)
    d, f, hd = cfg.dim, cfg.ffn, cfg.head_dim
    qdim, kvdim = cfg.heads * hd, cfg.kv_heads * hd

    def mat(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return rng.normal(1.0, 0.1, size=n).astype(np.float32)

    w: dict[str, np.ndarray] = {}
    w["token_embd.weight"] = (rng.standard_normal((n_vocab, d)) * 0.4).astype(np.float32)
    for i in range(cfg.layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        w[p + "attn_q.weight"] = mat(qdim, d, 1.5)
        w[p + "attn_k.weight"] = mat(kvdim, d, 1.5)
        w[p + "attn_v.weight"] = mat(kvdim, d)
        w[p + "attn_output.weight"] = mat(d, qdim, 2.5)
        w[p + "ffn_norm.weight"] = norm(d)
        w[p + "ffn_gate.weight"] = mat(f, d)
        w[p + "ffn_up.weight"] = mat(f, d)
        w[p + "ffn_down.weight"] = mat(d, f, 2.5)
    w["output_norm.weight"] = norm(d)
    out = (rng.standard_normal((n_vocab, d)) * 0.4).astype(np.float32)  # always drawn: same stream tied/untied
    if cfg.untied:
        w["output.weight"] = out
    return w


def encode_tensor(name: str, arr: np.ndarray, qtype: QT) -> tuple[np.ndarray, QT | None]:
    """float32 array -> (array to hand to GGUFWriter.add_tensor, raw_dtype)."""
    if qtype == QT.F32:
        return arr.astype(np.float32), None
    if qtype == QT.F16:
        return arr.astype(np.float16), None
    try:
        data = gguf.quants.quantize(arr, qtype)
    except NotImplementedError:
        raise ToolError(f"tensor {name}: gguf-py cannot quantize to {qtype.name}") from None
    except gguf.quants.QuantError as exc:
        raise ToolError(f"tensor {name}: {exc}") from None
    return data, qtype


def write_test_model(out: Path, outtype: str, seed: int, cfg: TinyConfig | None = None) -> Path:
    """Write the tiny model to `out` (atomically) and return the path."""
    cfg = cfg or TinyConfig()
    if outtype not in OUTTYPES:
        raise ToolError(f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    qtype = OUTTYPES[outtype]
    cfg.validate(qtype)
    vocab = build_vocab(cfg.merges)
    n_vocab = len(vocab.tokens)
    weights = random_weights(cfg, n_vocab, seed)
    unknown = sorted(set(cfg.tensor_types) - set(weights))
    if unknown:
        raise ToolError(f"--tensor-type names unknown tensors: {', '.join(unknown)}")

    out = Path(out)
    with common.atomic_output(out) as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        kv = w.add_key_value
        kv("general.type", "model", VT.STRING)
        kv("general.name", "PocketLM tiny test model", VT.STRING)
        kv("general.size_label", f"tiny-{cfg.layers}x{cfg.dim}", VT.STRING)
        kv("general.license", "apache-2.0", VT.STRING)
        common.add_llama_hparams(w, layers=cfg.layers, context=cfg.context, dim=cfg.dim, ffn=cfg.ffn,
                                 heads=cfg.heads, kv_heads=cfg.kv_heads, rope_base=cfg.rope_base, eps=cfg.eps,
                                 file_type=common.FILE_TYPE[qtype], vocab=n_vocab, head_dim=cfg.head_dim)
        kv("tokenizer.ggml.add_space_prefix", False, VT.BOOL)
        kv("tokenizer.ggml.add_bos_token", False, VT.BOOL)
        kv("tokenizer.ggml.model", "gpt2", VT.STRING)
        kv("tokenizer.ggml.pre", "smollm", VT.STRING)
        kv("tokenizer.ggml.tokens", vocab.tokens, VT.ARRAY, sub_type=VT.STRING)
        kv("tokenizer.ggml.token_type", vocab.token_types, VT.ARRAY, sub_type=VT.INT32)
        kv("tokenizer.ggml.merges", vocab.merges, VT.ARRAY, sub_type=VT.STRING)
        kv("tokenizer.ggml.bos_token_id", 1, VT.UINT32)
        kv("tokenizer.ggml.eos_token_id", 2, VT.UINT32)
        kv("tokenizer.ggml.unknown_token_id", 0, VT.UINT32)
        kv("tokenizer.ggml.padding_token_id", 2, VT.UINT32)
        kv("tokenizer.chat_template", SMOLLM2_CHAT_TEMPLATE, VT.STRING)
        kv("general.quantization_version", gguf.GGML_QUANT_VERSION, VT.UINT32)

        for name, arr in weights.items():
            if arr.ndim == 1:
                t = cfg.tensor_types.get(name, QT.F32)
            else:
                t = cfg.tensor_types.get(name, qtype)
            data, raw = encode_tensor(name, arr, t)
            w.add_tensor(name, data, raw_dtype=raw)
        common.finish_writer(w)
    return out


def parse_tensor_type(spec: str) -> tuple[str, QT]:
    if "=" not in spec:
        raise ToolError(f"--tensor-type expects NAME=TYPE, got {spec!r}")
    name, t = spec.split("=", 1)
    return name.strip(), common.parse_ggml_type(t)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a tiny random-weight llama GGUF with SmolLM2-like metadata and a small byte-level BPE vocab.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output .gguf path")
    parser.add_argument("--outtype", choices=list(OUTTYPES), default="f32", help="type of the 2-D weight matrices")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed for the weights (default 0)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64, help="embedding length")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=128, help="feed-forward length")
    parser.add_argument("--context", type=int, default=128, help="llama.context_length")
    parser.add_argument("--merges", type=int, default=DEFAULT_MERGES, help="number of BPE merges to learn")
    parser.add_argument("--untied", action="store_true", help="write a separate output.weight (default: tied to token_embd)")
    parser.add_argument("--tensor-type", action="append", default=[], metavar="NAME=TYPE",
                        help="store one tensor in another GGML type, e.g. blk.0.ffn_up.weight=q5_0 (repeatable)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise ToolError("--seed must be >= 0")
    cfg = TinyConfig(layers=args.layers, dim=args.dim, heads=args.heads, kv_heads=args.kv_heads, ffn=args.ffn,
                     context=args.context, untied=args.untied, merges=args.merges,
                     tensor_types=dict(parse_tensor_type(s) for s in args.tensor_type))
    out = write_test_model(args.out, args.outtype, args.seed, cfg)
    print(out)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
