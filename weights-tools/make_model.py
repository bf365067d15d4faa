#!/usr/bin/env python3
"""Write a random-weight llama GGUF in the shape of any model config (configs/*.json), streamed.

Why: the MobileLLM family (125M ... 1.5B) and its layer-sharing variants are what PocketLM is
built to run, but we have no checkpoints of them here. Speed, memory and paging behaviour depend
only on the shapes and storage formats, not on what the weights say, so benchmarks can run on a
random model of exactly the right shape. The file must be written without holding the model in
memory (the 1.5B model is 6 GB as F32), so tensors are generated, encoded and written chunk by
chunk after the header, metadata and tensor infos.

Config: a Hugging Face style config.json (configs/*.json). Used keys: hidden_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim (optional, must equal
hidden_size / num_attention_heads), intermediate_size, vocab_size, rope_theta, rms_norm_eps,
max_position_embeddings, share_embedding / tie_word_embeddings (tied when either says so;
MobileLLM ties by share_embedding while tie_word_embeddings is false; an untied config gets an
output.weight), layer_sharing and PocketLM's own layer_schedule {"strategy", "repeats"} (when
missing: immediate x2 if layer_sharing, else none -- as the Swift ModelConfig decides).

Output: general.architecture = llama, the llama.* keys make_test_model.py writes, and
  pocketlm.layer_schedule.strategy  STRING  none | immediate | repeat-all | reverse
  pocketlm.layer_schedule.repeats   UINT32  (1 for none)
so the runtime runs the blocks in the config's order. Matrices (token_embd, attn_q/k/v/output,
ffn_gate/up/down, output if untied) are stored as --outtype, norms as F32.

Tokenizer: a real MobileLLM uses Llama's 32k SentencePiece model, which we do not have. With
--vocab-from tiny (the default) the file gets make_test_model.py's byte-level GPT-2 BPE vocabulary
(3 ChatML control tokens, 256 byte tokens, ~160 merged tokens, its merges, SmolLM2's chat
template, bos 1 / eos 2) padded to vocab_size with placeholder tokens "<unused_0>", "<unused_1>", ...
of token_type 5 (UNUSED): the embedding has the config's row count, text encodes to ids below
~420, and the unused ids are never produced by the tokenizer (the model may still predict them).
--vocab-from FILE.gguf instead copies every tokenizer.* key of that GGUF (e.g. the real SmolLM2 for
configs/smollm2-135m.json), padding tokens/token_type/scores the same way if it has fewer tokens.

Weights: not a trained model. Every matrix entry is N(0, 0.02^2) (Hugging Face's usual
initializer_range), every norm weight is 1.0; with RMSNorm before each block this keeps
activations O(1) (residual stream std grows to a few units over 54 layers) and logits O(1), so
the forward pass is finite in every format. Each tensor draws from its own generator seeded by
(--seed, crc32(tensor name)), so the file is deterministic per seed, independent of --outtype up
to quantization, and blk.i of a --layers N model equals blk.i of the full model.

qwen2 (`model_type: qwen2`, or ModelSpec(arch="qwen2")): general.architecture = qwen2, the same keys under
`qwen2.` (what llama.cpp's qwen2 loader reads), and F32 biases `blk.N.attn_{q,k,v}.bias` after each of those
matrices, drawn N(0, bias_std^2) (default 0.5: as large as q/k/v themselves, so a runtime that skips
them is visibly wrong). llama.cpp runs qwen2 with NEOX RoPE (rotate halves: pairs (i, i + head_dim/2)), llama
with NORM RoPE (adjacent pairs); the weights are stored unpermuted either way, so for a random model only
the runtime's choice of pairing matters. `output_std` (default: INIT_STD) scales an untied output.weight:
with N(0, 0.02^2) logits have std ~0.5 and top-1/top-2 gaps of a few hundredths, too close for greedy tests;
`embed_std` scales token_embd (at 0.02 the residual stream forgets the current token next to the block
outputs and a random model predicts the same few tokens everywhere).
`tokenizer_overrides` replaces tokenizer.* values (e.g. `tokenizer.ggml.pre = qwen2` on SmolLM2's vocab).

Quantized types need hidden_size and intermediate_size to be multiples of 32 (they are, for all
configs here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf
import make_test_model

OUTTYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16,
    "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
}

SCHEDULE_STRATEGY_KEY = "pocketlm.layer_schedule.strategy"
SCHEDULE_REPEATS_KEY = "pocketlm.layer_schedule.repeats"
#: Strategy names the Swift LayerSchedule knows.
SCHEDULE_STRATEGIES = ("none", "immediate", "repeat-all", "reverse")

TOKEN_TYPE_UNUSED = 5
INIT_STD = 0.02
#: qwen2's Q/K/V biases (see the module docstring).
BIAS_STD = 0.5
#: Architectures write_model knows: llama, and qwen2 (llama + Q/K/V biases, NEOX RoPE in llama.cpp).
ARCHES = ("llama", "qwen2")
#: Floats generated (and encoded) per write: bounds the writer's working memory to a few MB.
CHUNK_ELEMS = 1 << 18


@dataclass(frozen=True)
class ModelSpec:
    """The facts make_model needs from a config.json."""

    name: str
    model_type: str
    layers: int
    dim: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rope_theta: float
    eps: float
    context: int
    tied: bool
    strategy: str
    repeats: int
    arch: str = "llama"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def with_layers(self, layers: int) -> "ModelSpec":
        if layers <= 0:
            raise ToolError(f"--layers must be positive, got {layers}")
        return dataclasses.replace(self, layers=layers)


def _get(cfg: dict, key: str, kind: type, path: Any, default: Any = None) -> Any:
    if key not in cfg:
        if default is not None:
            return default
        raise ToolError(f"{path}: missing {key!r}")
    value = cfg[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ToolError(f"{path}: {key!r} must be an integer, found {value!r}")
    if not isinstance(value, kind):
        raise ToolError(f"{path}: {key!r} must be {kind.__name__}, found {value!r}")
    return value


def spec_from_config(cfg: dict, name: str = "model", path: Any = "config") -> ModelSpec:
    """Validate a config.json dict and turn it into a ModelSpec (errors name the key)."""
    dim = _get(cfg, "hidden_size", int, path)
    layers = _get(cfg, "num_hidden_layers", int, path)
    heads = _get(cfg, "num_attention_heads", int, path)
    kv_heads = _get(cfg, "num_key_value_heads", int, path, default=heads)
    ffn = _get(cfg, "intermediate_size", int, path)
    vocab = _get(cfg, "vocab_size", int, path)
    for key, v in (("hidden_size", dim), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                   ("num_key_value_heads", kv_heads), ("intermediate_size", ffn), ("vocab_size", vocab)):
        if v <= 0:
            raise ToolError(f"{path}: {key!r} must be positive, found {v}")
    if dim % heads:
        raise ToolError(f"{path}: num_attention_heads {heads} does not divide hidden_size {dim}")
    if heads % kv_heads:
        raise ToolError(f"{path}: num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    head_dim = dim // heads
    if "head_dim" in cfg and _get(cfg, "head_dim", int, path) != head_dim:
        raise ToolError(f"{path}: head_dim {cfg['head_dim']} != hidden_size / num_attention_heads = {head_dim}")
    if head_dim % 2:
        raise ToolError(f"{path}: head dimension {head_dim} must be even for RoPE")
    rope_theta = _get(cfg, "rope_theta", float, path, default=10000.0)
    eps = _get(cfg, "rms_norm_eps", float, path, default=1e-5)
    context = _get(cfg, "max_position_embeddings", int, path)
    share = cfg.get("share_embedding", False)
    tie = cfg.get("tie_word_embeddings", True)
    if not isinstance(share, bool) or not isinstance(tie, bool):
        raise ToolError(f"{path}: share_embedding / tie_word_embeddings must be booleans")
    sharing = cfg.get("layer_sharing", False)
    sched = cfg.get("layer_schedule")
    if sched is None:
        strategy, repeats = ("immediate", 2) if sharing is True else ("none", 1)
    else:
        if not isinstance(sched, dict):
            raise ToolError(f"{path}: 'layer_schedule' must be an object {{\"strategy\", \"repeats\"}}")
        strategy = _get(sched, "strategy", str, f"{path}: layer_schedule")
        repeats = _get(sched, "repeats", int, f"{path}: layer_schedule", default=2)
        if strategy not in SCHEDULE_STRATEGIES:
            raise ToolError(f"{path}: layer_schedule.strategy {strategy!r} is not one of {', '.join(SCHEDULE_STRATEGIES)}")
        if repeats < 1:
            raise ToolError(f"{path}: layer_schedule.repeats must be at least 1, found {repeats}")
    if strategy == "none":
        repeats = 1
    model_type = str(cfg.get("model_type", "llama"))
    return ModelSpec(
        name=name, model_type=model_type, layers=layers, dim=dim, heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, ffn=ffn, vocab=vocab, rope_theta=rope_theta, eps=eps,
        context=context, tied=share or tie, strategy=strategy, repeats=repeats,
        arch="qwen2" if model_type == "qwen2" else "llama",
    )


def load_config(path: Path | str) -> ModelSpec:
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolError(f"no such config: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolError(f"cannot read config {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise ToolError(f"{path}: not a JSON object")
    return spec_from_config(cfg, name=path.stem, path=path)


def parameter_count(spec: ModelSpec) -> int:
    """Weights in the model: embeddings (x2 if untied), per block 4 attention + 3 FFN matrices and 2 norms, final norm."""
    d, kv, f = spec.dim, spec.kv_dim, spec.ffn
    per_layer = d * spec.q_dim + spec.q_dim * d + 2 * d * kv + 3 * d * f + 2 * d
    if spec.arch == "qwen2":
        per_layer += spec.q_dim + 2 * kv  # Q/K/V biases
    return spec.vocab * d * (1 if spec.tied else 2) + spec.layers * per_layer + d


def tensor_plan(spec: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) in file order; 2-D shapes are (out_features, in_features)."""
    d, f = spec.dim, spec.ffn
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (spec.vocab, d))]
    for i in range(spec.layers):
        p = f"blk.{i}."
        qkv: list[tuple[str, tuple[int, ...]]] = [
            (p + "attn_q.weight", (spec.q_dim, d)),
            (p + "attn_k.weight", (spec.kv_dim, d)),
            (p + "attn_v.weight", (spec.kv_dim, d)),
        ]
        if spec.arch == "qwen2":
            qkv = [x for name, shape in qkv for x in ((name, shape), (name[:-len("weight")] + "bias", shape[:1]))]
        plan += [
            (p + "attn_norm.weight", (d,)),
            *qkv,
            (p + "attn_output.weight", (d, spec.q_dim)),
            (p + "ffn_norm.weight", (d,)),
            (p + "ffn_gate.weight", (f, d)),
            (p + "ffn_up.weight", (f, d)),
            (p + "ffn_down.weight", (d, f)),
        ]
    plan.append(("output_norm.weight", (d,)))
    if not spec.tied:
        plan.append(("output.weight", (spec.vocab, d)))
    return plan


def tensor_nbytes(shape: tuple[int, ...], qtype: QT) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        raise ToolError(f"row length {shape[-1]} is not a multiple of {block} ({qtype.name})")
    return math.prod(shape[:-1]) * (shape[-1] // block) * size


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]))


def tensor_chunks(seed: int, name: str, shape: tuple[int, ...], std: float = INIT_STD) -> Iterator[np.ndarray]:
    """The tensor's float32 values, a block of whole rows at a time (same values whatever the chunking).
    Norm weights (1-D `.weight`) are 1.0; biases and matrices N(0, std^2)."""
    if len(shape) == 1:
        if name.endswith(".bias"):
            x = tensor_rng(seed, name).standard_normal(shape, dtype=np.float32)
            x *= np.float32(std)
            yield x
        else:
            yield np.ones(shape, dtype=np.float32)
        return
    rows, cols = shape
    rng = tensor_rng(seed, name)
    step = max(1, CHUNK_ELEMS // cols)
    std = np.float32(std)
    for r0 in range(0, rows, step):
        x = rng.standard_normal((min(step, rows - r0), cols), dtype=np.float32)
        x *= std
        yield x


def encode(chunk: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype == QT.F32:
        return np.ascontiguousarray(chunk, dtype=np.float32)
    if qtype == QT.F16:
        return chunk.astype(np.float16)
    return gguf.quants.quantize(chunk, qtype)


# --------------------------------------------------------------------------------------------
# Tokenizer metadata.
# --------------------------------------------------------------------------------------------


def tiny_tokenizer_kv(n_vocab: int) -> list[tuple[str, Any, VT, VT | None]]:
    """make_test_model's byte-level BPE vocab padded to n_vocab with <unused_i> (type 5) tokens."""
    vocab = make_test_model.build_vocab()
    base = len(vocab.tokens)
    if n_vocab < base:
        raise ToolError(f"vocab_size {n_vocab} is smaller than the tiny vocabulary ({base} tokens)")
    tokens = list(vocab.tokens) + [f"<unused_{i}>" for i in range(n_vocab - base)]
    types = list(vocab.token_types) + [TOKEN_TYPE_UNUSED] * (n_vocab - base)
    return [
        ("tokenizer.ggml.add_space_prefix", False, VT.BOOL, None),
        ("tokenizer.ggml.add_bos_token", False, VT.BOOL, None),
        ("tokenizer.ggml.model", "gpt2", VT.STRING, None),
        ("tokenizer.ggml.pre", "smollm", VT.STRING, None),
        ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.merges", list(vocab.merges), VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.bos_token_id", 1, VT.UINT32, None),
        ("tokenizer.ggml.eos_token_id", 2, VT.UINT32, None),
        ("tokenizer.ggml.unknown_token_id", 0, VT.UINT32, None),
        ("tokenizer.ggml.padding_token_id", 2, VT.UINT32, None),
        ("tokenizer.chat_template", make_test_model.SMOLLM2_CHAT_TEMPLATE, VT.STRING, None),
    ]


def gguf_tokenizer_kv(path: Path, n_vocab: int) -> list[tuple[str, Any, VT, VT | None]]:
    """Every tokenizer.* key of another GGUF, exact types; token arrays padded to n_vocab."""
    reader = common.open_gguf(path)
    out: list[tuple[str, Any, VT, VT | None]] = []
    n_tokens = None
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value, vtype, sub = common.field_raw(field)
        if name == "tokenizer.ggml.tokens":
            n_tokens = len(value)
            if n_tokens > n_vocab:
                raise ToolError(f"{path} has {n_tokens} tokens, more than the config's vocab_size {n_vocab}")
            value = value + [f"<unused_{i}>".encode() for i in range(n_vocab - n_tokens)]
        elif name == "tokenizer.ggml.token_type":
            value = value + [TOKEN_TYPE_UNUSED] * (n_vocab - len(value))
        elif name == "tokenizer.ggml.scores":
            value = value + [0.0] * (n_vocab - len(value))
        out.append((name, value, vtype, sub))
    if n_tokens is None:
        raise ToolError(f"{path} has no tokenizer.ggml.tokens")
    return out


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr ("\\r" updates, at most 10 per second)."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int, tensor: str) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.1 or self.done >= self.total):
            self.last = now
            frac = self.done / self.total
            bar = "#" * int(frac * 30)
            print(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {self.done / 1e6:9.1f}/{self.total / 1e6:.1f} MB "
                  f"{now - self.start:6.1f}s {tensor[:28]:<28}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def write_model(
    spec: ModelSpec,
    out: Path | str,
    outtype: str,
    seed: int,
    vocab_from: str = "tiny",
    progress: bool = True,
    *,
    output_std: float | None = None,
    embed_std: float | None = None,
    bias_std: float = BIAS_STD,
    tokenizer_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write the random model to `out` (atomically), streaming tensor data; return the path."""
    if outtype not in OUTTYPES:
        raise ToolError(f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if spec.arch not in ARCHES:
        raise ToolError(f"unknown architecture {spec.arch!r} (choose from {', '.join(ARCHES)})")
    if seed < 0:
        raise ToolError("--seed must be >= 0")
    qtype = OUTTYPES[outtype]
    plan = tensor_plan(spec)
    types = {name: (qtype if len(shape) == 2 else QT.F32) for name, shape in plan}
    sizes = {name: tensor_nbytes(shape, types[name]) for name, shape in plan}  # validates row lengths first
    tok_kv = tiny_tokenizer_kv(spec.vocab) if vocab_from == "tiny" else gguf_tokenizer_kv(Path(vocab_from), spec.vocab)
    for key, value in (tokenizer_overrides or {}).items():
        hits = [i for i, kv in enumerate(tok_kv) if kv[0] == key]
        if not hits:
            raise ToolError(f"tokenizer override {key!r}: no such key in the tokenizer metadata")
        name, _, vtype, sub = tok_kv[hits[0]]
        tok_kv[hits[0]] = (name, value, vtype, sub)
    stds = {name: (bias_std if name.endswith(".bias") else
                   output_std if name == "output.weight" and output_std is not None else
                   embed_std if name == "token_embd.weight" and embed_std is not None else INIT_STD)
            for name, _ in plan}
    params = parameter_count(spec)

    out = Path(out)
    with common.atomic_output(out) as tmp:
        w = gguf.GGUFWriter(tmp, spec.arch)
        kv = w.add_key_value
        kv("general.type", "model", VT.STRING)
        kv("general.name", f"PocketLM random {spec.name}", VT.STRING)
        extra = ""
        if spec.arch == "qwen2":
            extra += f", N(0, {bias_std}) Q/K/V biases"
        if output_std is not None and not spec.tied:
            extra += f", N(0, {output_std}) output.weight"
        if embed_std is not None:
            extra += f", N(0, {embed_std}) token_embd"
        kv("general.description",
           f"random weights (seed {seed}, N(0, {INIT_STD}) matrices, unit norms{extra}) in the shape of {spec.name} "
           f"({spec.model_type}); not a trained model -- for benchmarks and tests", VT.STRING)
        kv("general.size_label", f"{params / 1e6:.1f}M", VT.STRING)
        kv("general.license", "apache-2.0", VT.STRING)
        common.add_llama_hparams(w, layers=spec.layers, context=spec.context, dim=spec.dim, ffn=spec.ffn,
                                 heads=spec.heads, kv_heads=spec.kv_heads, rope_base=spec.rope_theta, eps=spec.eps,
                                 file_type=common.FILE_TYPE[qtype], vocab=spec.vocab, head_dim=spec.head_dim,
                                 arch=spec.arch)
        kv(SCHEDULE_STRATEGY_KEY, spec.strategy, VT.STRING)
        kv(SCHEDULE_REPEATS_KEY, spec.repeats, VT.UINT32)
        for name, value, vtype, sub in tok_kv:
            kv(name, value, vtype, sub_type=sub)
        del tok_kv
        kv("general.quantization_version", gguf.GGML_QUANT_VERSION, VT.UINT32)

        for name, shape in plan:
            # A float dtype with raw_dtype keeps `shape` as the logical (element) shape.
            w.add_tensor_info(name, shape, np.dtype(np.float32), sizes[name], raw_dtype=types[name])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()

        # Tensor data, chunk by chunk (GGUFWriter.write_tensor_data wants a whole tensor at once):
        # the data section starts aligned and every tensor is padded to the alignment, as the
        # offsets in the tensor infos assume.
        assert w.fout is not None and len(w.fout) == 1
        f = w.fout[0]
        w.write_padding(f, f.tell())
        data_start = f.tell()
        bar = Progress(sum(sizes.values()), f"make_model {out.name}", progress)
        for name, shape in plan:
            written = 0
            for chunk in tensor_chunks(seed, name, shape, stds[name]):
                data = encode(chunk, types[name])
                data.tofile(f)
                written += data.nbytes
                bar.update(data.nbytes, name)
                del chunk, data
            if written != sizes[name]:
                raise ToolError(f"internal error: wrote {written} bytes for {name}, expected {sizes[name]}")
            w.write_padding(f, written)
        common.finish_streamed_writer(w, f, data_start, sizes)
        bar.finish()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a random-weight llama GGUF in the shape of a config.json (configs/*.json), streamed "
                    "tensor by tensor; records the config's layer_schedule as pocketlm.layer_schedule.* metadata.",
    )
    parser.add_argument("--config", type=Path, required=True, help="model config, e.g. configs/mobilellm-125m.json")
    parser.add_argument("--outtype", choices=list(OUTTYPES), default="q8_0", help="type of the 2-D weight matrices (default q8_0)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed for the weights (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output .gguf path")
    parser.add_argument("--layers", type=int, default=None, help="override num_hidden_layers (e.g. a 2-layer model for tests)")
    parser.add_argument("--vocab-from", default="tiny", metavar="tiny|FILE.gguf",
                        help="tokenizer: 'tiny' = make_test_model's byte-level BPE vocab padded with <unused_i> "
                             "tokens (default), or a GGUF whose tokenizer.* keys are copied")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    spec = load_config(args.config)
    if args.layers is not None:
        spec = spec.with_layers(args.layers)
    out = write_model(spec, args.out, args.outtype, args.seed, vocab_from=args.vocab_from, progress=not args.no_progress)
    print(out)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
