#!/usr/bin/env python3
"""Convert a Hugging Face checkpoint (MobileLLM or Llama/SmolLM) to a llama GGUF for PocketLM.

Why: PocketLM runs GGUF files in llama.cpp's llama convention; the models it targets (MobileLLM,
MobileLLM-LS, SmolLM2) are published as Hugging Face checkpoints. This script is a small,
dependency-light (numpy + gguf, no torch for safetensors) equivalent of the relevant part of
llama.cpp's convert_hf_to_gguf.py, plus the MobileLLM quirks of /work/shared/DESIGN.md §1.

    convert_hf.py CHECKPOINT_DIR --outtype f32|f16|q8_0|q4_0 --out F.gguf [--vocab-from FILE.gguf]

Input (CHECKPOINT_DIR):
  config.json                      architectures[0] = MobileLLMForCausalLM | LlamaForCausalLM
  model.safetensors                or model-0000X-of-0000N.safetensors + model.safetensors.index.json
  pytorch_model.bin (+ .index.json) only when torch is importable
  tokenizer.json / tokenizer.model optional, see "Tokenizer"

Model quirks:
  * MobileLLM ties the output head by `share_embedding: true` although `tie_word_embeddings` is false;
    `lm_head.weight` may be missing or a duplicate of the embedding. Tied models get no output.weight.
    LlamaForCausalLM: `tie_word_embeddings` decides (HF's LlamaConfig default: false).
  * `layer_sharing: true` (MobileLLM-LS) -> pocketlm.layer_schedule.strategy = "immediate" (STRING),
    pocketlm.layer_schedule.repeats = 2 (UINT32); otherwise "none" / 1 (a config's own PocketLM
    `layer_schedule` object wins, as in make_model.py).
  * Q/K permutation: HF's RoPE rotates the two halves of each head (x[i], x[i + d/2]); GGUF llama
    rotates adjacent pairs (x[2i], x[2i+1]). Rows of q_proj (n_head heads) and k_proj (n_kv_head
    heads) are reordered like llama.cpp's LlamaModel.permute:
        w.reshape(n_head, 2, head_dim // 2, dim).swapaxes(1, 2).reshape(w.shape)

Output: general.architecture = llama and the llama.* / general.* keys make_model.py writes;
matrices in --outtype, norms F32. Tensors are converted and written one at a time (the header and
tensor infos first), with safetensors memory-mapped, so memory stays at about one tensor.

Tokenizer (first that applies):
  1. tokenizer.json with a byte-level BPE model -> tokenizer.ggml.model = gpt2: tokens, token_type,
     merges, pre (smollm / llama-bpe / gpt2, guessed from the pre-tokenizer), bos/eos/unk/pad ids,
     add_bos_token and chat_template from tokenizer_config.json.
  2. --vocab-from FILE.gguf -> every tokenizer.* key of that GGUF (as make_model.py does).
  3. tokenizer.model (SentencePiece) -> parsed here (pieces, scores, types; a minimal protobuf
     reader): tokenizer.ggml.model = llama, tokens, scores, token_type, bos/eos/unk ids.
  Vocabularies smaller than vocab_size are padded with "<unused_i>" tokens of type 5 (UNUSED).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf
import make_model

OUTTYPES = {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0}
ARCHITECTURES = ("MobileLLMForCausalLM", "LlamaForCausalLM")

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

TORCH_MISSING = "pytorch_model.bin needs torch: pip install torch, or convert to safetensors"

#: HF per-layer tensor suffix -> GGUF per-block tensor name.
LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
#: Buffers some checkpoints carry that are not weights (recomputed from the config).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --------------------------------------------------------------------------------------------
# Config.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """What the converter needs from config.json."""

    arch: str
    spec: make_model.ModelSpec
    bos: int | None
    eos: int | None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(f"cannot read {path}: {exc}") from None


def load_checkpoint_config(ckpt_dir: Path) -> Checkpoint:
    path = ckpt_dir / "config.json"
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ToolError(f"{path}: not a JSON object")
    archs = cfg.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch is None:
        arch = {"mobilellm": "MobileLLMForCausalLM", "llama": "LlamaForCausalLM"}.get(cfg.get("model_type"))
    if arch not in ARCHITECTURES:
        raise ToolError(f"{path}: architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and not (isinstance(scaling, dict) and scaling.get("type", scaling.get("rope_type")) in (None, "default")):
        raise ToolError(f"{path}: rope_scaling {scaling!r} is not supported")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ToolError(f"{path}: {key} = true is not supported (PocketLM's llama blocks have no biases)")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ToolError(f"{path}: hidden_act {act!r} is not supported (only silu)")
    cfg = dict(cfg)
    cfg.setdefault("max_position_embeddings", 2048)
    spec = make_model.spec_from_config(cfg, name=ckpt_dir.name, path=path)
    if arch == "MobileLLMForCausalLM":
        tied = bool(cfg.get("share_embedding", True)) or bool(cfg.get("tie_word_embeddings", False))
    else:
        tied = bool(cfg.get("tie_word_embeddings", False))
    spec = dataclasses.replace(spec, tied=tied)

    def tok_id(key: str) -> int | None:
        v = cfg.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    return Checkpoint(arch=arch, spec=spec, bos=tok_id("bos_token_id"), eos=tok_id("eos_token_id"))


# --------------------------------------------------------------------------------------------
# Weights: safetensors (own memory-mapped reader, handles BF16 without torch) and torch .bin.
# --------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


@dataclass
class TensorRef:
    """A lazily loaded tensor: name, shape and a loader returning float32 (numpy layout)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    load: Callable[[], np.ndarray]


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: Path) -> dict[str, TensorRef]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ToolError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ToolError(f"{path}: bad safetensors header length {n}")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToolError(f"{path}: bad safetensors header: {exc}") from None
    base = 8 + n
    out: dict[str, TensorRef] = {}
    mm: list[np.memmap] = []

    def data() -> np.memmap:
        if not mm:
            mm.append(np.memmap(path, dtype=np.uint8, mode="r"))
        return mm[0]

    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info.get("dtype")
        if dt not in SAFETENSORS_DTYPES:
            raise ToolError(f"{path}: tensor {name} has unsupported dtype {dt}")
        shape = tuple(int(s) for s in info["shape"])
        start, end = (int(o) for o in info["data_offsets"])
        np_dt = np.dtype(SAFETENSORS_DTYPES[dt])
        if end - start != math.prod(shape) * np_dt.itemsize or base + end > size:
            raise ToolError(f"{path}: tensor {name}: data offsets {start}..{end} do not fit shape {list(shape)} {dt}")

        def load(start=start, end=end, np_dt=np_dt, shape=shape, dt=dt) -> np.ndarray:
            raw = data()[base + start:base + end].view(np_dt).reshape(shape)
            return bf16_to_f32(raw) if dt == "BF16" else raw.astype(np.float32)

        out[name] = TensorRef(name, shape, dt, path.name, load)
    return out


def read_torch_bin(path: Path) -> dict[str, TensorRef]:
    try:
        import torch  # type: ignore
    except ImportError:
        raise ToolError(TORCH_MISSING) from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pragma: no cover - needs torch
        raise ToolError(f"cannot load {path}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    out: dict[str, TensorRef] = {}
    for name, t in sd.items():  # pragma: no cover - needs torch
        if not hasattr(t, "shape"):
            continue
        out[name] = TensorRef(name, tuple(t.shape), str(t.dtype), path.name,
                              lambda t=t: t.detach().to(torch.float32).numpy())
    return out


def open_weights(ckpt_dir: Path) -> dict[str, TensorRef]:
    """All tensors of the checkpoint, by HF name (shards merged)."""
    st_index = ckpt_dir / "model.safetensors.index.json"
    st_single = ckpt_dir / "model.safetensors"
    bin_index = ckpt_dir / "pytorch_model.bin.index.json"
    bin_single = ckpt_dir / "pytorch_model.bin"

    def from_index(index: Path, reader: Callable[[Path], dict[str, TensorRef]]) -> dict[str, TensorRef]:
        doc = read_json(index)
        wmap = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise ToolError(f"{index}: no weight_map")
        out: dict[str, TensorRef] = {}
        for shard in sorted(set(wmap.values())):
            spath = ckpt_dir / shard
            if not spath.is_file():
                raise ToolError(f"{index} names shard {shard}, which is missing from {ckpt_dir}")
            tensors = reader(spath)
            for name, ref in tensors.items():
                if name in out:
                    raise ToolError(f"tensor {name} appears in both {out[name].source} and {shard}")
                out[name] = ref
        for name, shard in wmap.items():
            if name not in out:
                raise ToolError(f"{index} maps tensor {name} to {shard}, but no shard contains it")
        return out

    if st_index.is_file():
        return from_index(st_index, read_safetensors)
    if st_single.is_file():
        return read_safetensors(st_single)
    shards = sorted(ckpt_dir.glob("model-*-of-*.safetensors"))
    if shards:
        out: dict[str, TensorRef] = {}
        for s in shards:
            out.update(read_safetensors(s))
        return out
    if bin_index.is_file():
        return from_index(bin_index, read_torch_bin)
    if bin_single.is_file():
        return read_torch_bin(bin_single)
    raise ToolError(f"{ckpt_dir}: no model.safetensors, model-*-of-*.safetensors (+ index) or pytorch_model.bin")


# --------------------------------------------------------------------------------------------
# Tensor plan: HF -> GGUF names, expected shapes, transforms.
# --------------------------------------------------------------------------------------------


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> GGUF adjacent-pair row order (llama.cpp LlamaModel.permute)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ToolError(f"cannot permute {rows} rows into {n_head} heads of even size")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class PlannedTensor:
    gguf_name: str
    hf_name: str
    shape: tuple[int, ...]  # numpy (out_features, in_features)
    qtype: QT
    transform: Callable[[np.ndarray], np.ndarray] | None = None


def plan_tensors(ck: Checkpoint, weights: dict[str, TensorRef], qtype: QT, permute: bool = True) -> list[PlannedTensor]:
    s = ck.spec
    d, f = s.dim, s.ffn

    def mat_type(name: str, shape: tuple[int, ...]) -> QT:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if shape[-1] % block:
            raise ToolError(f"tensor {name}: row length {shape[-1]} is not a multiple of {block}, "
                            f"required by {qtype.name}; use --outtype f16 or f32")
        return qtype

    plan: list[PlannedTensor] = []

    def add(gname: str, hname: str, shape: tuple[int, ...], transform=None) -> None:
        t = QT.F32 if len(shape) == 1 else mat_type(hname, shape)
        plan.append(PlannedTensor(gname, hname, shape, t, transform))

    add("token_embd.weight", "model.embed_tokens.weight", (s.vocab, d))
    for i in range(s.layers):
        hp, gp = f"model.layers.{i}.", f"blk.{i}."
        shapes = {
            "input_layernorm.weight": (d,),
            "self_attn.q_proj.weight": (s.q_dim, d),
            "self_attn.k_proj.weight": (s.kv_dim, d),
            "self_attn.v_proj.weight": (s.kv_dim, d),
            "self_attn.o_proj.weight": (d, s.q_dim),
            "post_attention_layernorm.weight": (d,),
            "mlp.gate_proj.weight": (f, d),
            "mlp.up_proj.weight": (f, d),
            "mlp.down_proj.weight": (d, f),
        }
        for suffix, gsuffix in LAYER_MAP.items():
            transform = None
            if permute and suffix == "self_attn.q_proj.weight":
                transform = lambda w, n=s.heads: permute_qk(w, n)  # noqa: E731
            elif permute and suffix == "self_attn.k_proj.weight":
                transform = lambda w, n=s.kv_heads: permute_qk(w, n)  # noqa: E731
            add(gp + gsuffix, hp + suffix, shapes[suffix], transform)
    add("output_norm.weight", "model.norm.weight", (d,))
    if not s.tied:
        add("output.weight", "lm_head.weight", (s.vocab, d))

    # Validate against the checkpoint: everything expected present with the right shape...
    for p in plan:
        ref = weights.get(p.hf_name)
        if ref is None:
            why = " (the config is untied: tie_word_embeddings is false)" if p.hf_name == "lm_head.weight" else ""
            raise ToolError(f"tensor {p.hf_name} is missing from the checkpoint{why}; expected shape {list(p.shape)}")
        if tuple(ref.shape) != p.shape:
            raise ToolError(f"tensor {p.hf_name} ({ref.source}) has shape {list(ref.shape)}, "
                            f"expected {list(p.shape)} from config.json")
    # ...and nothing unexpected left over (a tied model may carry lm_head.weight: checked below).
    used = {p.hf_name for p in plan}
    extra = sorted(n for n in weights if n not in used and not n.endswith(IGNORED_SUFFIXES) and n != "lm_head.weight")
    if extra:
        raise ToolError(f"unexpected tensors in the checkpoint (not a plain {ck.arch}?): {', '.join(extra[:6])}"
                        + (f" and {len(extra) - 6} more" if len(extra) > 6 else ""))
    if s.tied and "lm_head.weight" in weights:
        ref = weights["lm_head.weight"]
        if tuple(ref.shape) != (s.vocab, d):
            raise ToolError(f"tensor lm_head.weight ({ref.source}) has shape {list(ref.shape)}, expected {[s.vocab, d]}")
        if not np.array_equal(ref.load(), weights["model.embed_tokens.weight"].load()):
            raise ToolError("the config ties the output head to the embedding (share_embedding / "
                            "tie_word_embeddings), but lm_head.weight differs from model.embed_tokens.weight")
    return plan


# --------------------------------------------------------------------------------------------
# Tokenizer.
# --------------------------------------------------------------------------------------------

KV = tuple[str, Any, VT, "VT | None"]


def _pad(tokens: list, types: list[int], n_vocab: int, path: Path, scores: list[float] | None = None) -> None:
    if len(tokens) > n_vocab:
        raise ToolError(f"{path}: {len(tokens)} tokens, more than the config's vocab_size {n_vocab}")
    for i in range(n_vocab - len(tokens)):
        tokens.append(f"<unused_{i}>")
        types.append(TOKEN_TYPE_UNUSED)
        if scores is not None:
            scores.append(0.0)


def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def guess_pre(doc: dict) -> str:
    """tokenizer.ggml.pre from the HF pre-tokenizer (names PocketLM's PreTokenizer knows)."""
    nodes = list(_walk(doc.get("pre_tokenizer")))
    for n in nodes:
        if n.get("type") == "Digits" and n.get("individual_digits"):
            return "smollm"
        if n.get("type") == "Split":
            pat = n.get("pattern") or {}
            regex = pat.get("Regex", "") if isinstance(pat, dict) else ""
            if "\\p{N}{1,3}" in regex:
                return "llama-bpe"
    return "gpt2"


def tokenizer_config(ckpt_dir: Path) -> dict:
    p = ckpt_dir / "tokenizer_config.json"
    doc = read_json(p) if p.is_file() else {}
    return doc if isinstance(doc, dict) else {}


def hf_bpe_tokenizer_kv(ckpt_dir: Path, ck: Checkpoint) -> list[KV] | None:
    """tokenizer.json byte-level BPE -> GGUF gpt2 tokenizer keys; None if it is not one."""
    path = ckpt_dir / "tokenizer.json"
    if not path.is_file():
        return None
    doc = read_json(path)
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        return None
    byte_level = any(n.get("type") == "ByteLevel" for n in _walk([doc.get("pre_tokenizer"), doc.get("decoder")]))
    if not byte_level:
        return None  # e.g. a SentencePiece-style BPE with byte_fallback: not gpt2
    vocab = model.get("vocab") or {}
    by_id: dict[int, str] = {int(i): t for t, i in vocab.items()}
    types_by_id: dict[int, int] = {i: TOKEN_TYPE_NORMAL for i in by_id}
    for at in doc.get("added_tokens") or []:
        i = int(at["id"])
        by_id[i] = at["content"]
        types_by_id[i] = TOKEN_TYPE_CONTROL if at.get("special") else TOKEN_TYPE_USER_DEFINED
    n = max(by_id) + 1 if by_id else 0
    tokens = [by_id.get(i, f"<unused_gap_{i}>") for i in range(n)]
    types = [types_by_id.get(i, TOKEN_TYPE_UNUSED) for i in range(n)]
    _pad(tokens, types, ck.spec.vocab, path)
    merges = []
    for m in model.get("merges") or []:
        merges.append(m if isinstance(m, str) else " ".join(m))
    tcfg = tokenizer_config(ckpt_dir)
    ids = {t: i for i, t in enumerate(tokens)}

    def special_id(key: str) -> int | None:
        v = tcfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return ids.get(v) if isinstance(v, str) else None

    out: list[KV] = [
        ("tokenizer.ggml.add_space_prefix", False, VT.BOOL, None),
        ("tokenizer.ggml.add_bos_token", bool(tcfg.get("add_bos_token", False)), VT.BOOL, None),
        ("tokenizer.ggml.model", "gpt2", VT.STRING, None),
        ("tokenizer.ggml.pre", guess_pre(doc), VT.STRING, None),
        ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.merges", merges, VT.ARRAY, VT.STRING),
    ]
    for key, cfg_id, tok_key in (("bos", ck.bos, "bos_token"), ("eos", ck.eos, "eos_token"),
                                 ("unknown", None, "unk_token"), ("padding", None, "pad_token")):
        v = special_id(tok_key)
        v = cfg_id if cfg_id is not None else v
        if v is not None:
            out.append((f"tokenizer.ggml.{key}_token_id", int(v), VT.UINT32, None))
    tmpl = tcfg.get("chat_template")
    if isinstance(tmpl, str):
        out.append(("tokenizer.chat_template", tmpl, VT.STRING, None))
    return out


# --- SentencePiece: a minimal protobuf reader for ModelProto (pieces, scores, types). ---


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            v, pos = buf[pos:pos + ln], pos + ln
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield num, wt, v


def parse_sentencepiece(path: Path) -> tuple[list[str], list[float], list[int], bool]:
    """(pieces, scores, types, add_dummy_prefix) of a SentencePiece tokenizer.model.

    ModelProto: 1 = repeated SentencePiece {1 piece: string, 2 score: float, 3 type: enum
    (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6 -- GGUF's token_type numbering)},
    3 = NormalizerSpec {3 add_dummy_prefix: bool, default true}.
    """
    try:
        buf = path.read_bytes()
        pieces: list[str] = []
        scores: list[float] = []
        types: list[int] = []
        add_prefix = True
        for num, wt, v in _fields(buf):
            if num == 1 and wt == 2:
                piece, score, typ = "", 0.0, TOKEN_TYPE_NORMAL
                for n2, w2, v2 in _fields(v):
                    if n2 == 1 and w2 == 2:
                        piece = v2.decode("utf-8")
                    elif n2 == 2 and w2 == 5:
                        (score,) = struct.unpack("<f", v2)
                    elif n2 == 3 and w2 == 0:
                        typ = int(v2)
                pieces.append(piece)
                scores.append(float(score))
                types.append(typ)
            elif num == 3 and wt == 2:
                for n2, w2, v2 in _fields(v):
                    if n2 == 3 and w2 == 0:
                        add_prefix = bool(v2)
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ToolError(f"cannot parse SentencePiece model {path}: {exc}") from None
    if not pieces:
        raise ToolError(f"{path}: no pieces (not a SentencePiece model?)")
    return pieces, scores, types, add_prefix


def sentencepiece_tokenizer_kv(path: Path, ck: Checkpoint) -> list[KV]:
    pieces, scores, types, add_prefix = parse_sentencepiece(path)
    _pad(pieces, types, ck.spec.vocab, path, scores)
    unk = next((i for i, t in enumerate(types) if t == TOKEN_TYPE_UNKNOWN), 0)
    tcfg = tokenizer_config(path.parent)
    out: list[KV] = [
        ("tokenizer.ggml.model", "llama", VT.STRING, None),
        ("tokenizer.ggml.pre", "default", VT.STRING, None),
        ("tokenizer.ggml.tokens", pieces, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.scores", scores, VT.ARRAY, VT.FLOAT32),
        ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.bos_token_id", ck.bos if ck.bos is not None else 1, VT.UINT32, None),
        ("tokenizer.ggml.eos_token_id", ck.eos if ck.eos is not None else 2, VT.UINT32, None),
        ("tokenizer.ggml.unknown_token_id", unk, VT.UINT32, None),
        ("tokenizer.ggml.add_bos_token", bool(tcfg.get("add_bos_token", True)), VT.BOOL, None),
        ("tokenizer.ggml.add_eos_token", bool(tcfg.get("add_eos_token", False)), VT.BOOL, None),
        ("tokenizer.ggml.add_space_prefix", add_prefix, VT.BOOL, None),
    ]
    tmpl = tcfg.get("chat_template")
    if isinstance(tmpl, str):
        out.append(("tokenizer.chat_template", tmpl, VT.STRING, None))
    return out


def tokenizer_kv(ckpt_dir: Path, ck: Checkpoint, vocab_from: Path | None) -> tuple[list[KV], str]:
    """(keys, description of the source)."""
    kv = hf_bpe_tokenizer_kv(ckpt_dir, ck)
    if kv is not None:
        return kv, "tokenizer.json (byte-level BPE)"
    if vocab_from is not None:
        return make_model.gguf_tokenizer_kv(vocab_from, ck.spec.vocab), f"--vocab-from {vocab_from}"
    sp = ckpt_dir / "tokenizer.model"
    if sp.is_file():
        return sentencepiece_tokenizer_kv(sp, ck), "tokenizer.model (SentencePiece)"
    raise ToolError(f"{ckpt_dir}: no tokenizer found (need a byte-level BPE tokenizer.json, a SentencePiece "
                    f"tokenizer.model, or --vocab-from FILE.gguf)")


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


def encode(arr: np.ndarray, qtype: QT, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ToolError(f"tensor {name} has non-finite values")
    if qtype == QT.F32:
        return arr
    if qtype == QT.F16:
        return arr.astype(np.float16)
    return gguf.quants.quantize(arr, qtype)


def convert(
    ckpt_dir: Path | str,
    out: Path | str,
    outtype: str = "f32",
    vocab_from: Path | str | None = None,
    progress: bool = True,
    permute: bool = True,
) -> Path:
    """Convert the checkpoint to `out` (atomically) and return the path. `permute=False` is for tests only."""
    ckpt_dir, out = Path(ckpt_dir), Path(out)
    if outtype not in OUTTYPES:
        raise ToolError(f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if not ckpt_dir.is_dir():
        raise ToolError(f"no such checkpoint directory: {ckpt_dir}")
    qtype = OUTTYPES[outtype]
    ck = load_checkpoint_config(ckpt_dir)
    s = ck.spec
    weights = open_weights(ckpt_dir)
    plan = plan_tensors(ck, weights, qtype, permute=permute)
    sizes = {p.gguf_name: make_model.tensor_nbytes(p.shape, p.qtype) for p in plan}
    tok_kv, tok_src = tokenizer_kv(ckpt_dir, ck, Path(vocab_from) if vocab_from else None)
    params = make_model.parameter_count(s)

    with common.atomic_output(out) as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        kv = w.add_key_value
        kv("general.type", "model", VT.STRING)
        kv("general.name", ckpt_dir.resolve().name, VT.STRING)
        kv("general.description",
           f"converted from the Hugging Face checkpoint {ckpt_dir.resolve().name} ({ck.arch}, {s.model_type}) "
           f"by PocketLM weights-tools/convert_hf.py; tokenizer from {tok_src}", VT.STRING)
        kv("general.size_label", f"{params / 1e6:.1f}M", VT.STRING)
        common.add_llama_hparams(w, layers=s.layers, context=s.context, dim=s.dim, ffn=s.ffn, heads=s.heads,
                                 kv_heads=s.kv_heads, rope_base=s.rope_theta, eps=s.eps,
                                 file_type=common.FILE_TYPE[qtype], vocab=s.vocab, head_dim=s.head_dim)
        kv(make_model.SCHEDULE_STRATEGY_KEY, s.strategy, VT.STRING)
        kv(make_model.SCHEDULE_REPEATS_KEY, s.repeats, VT.UINT32)
        for name, value, vtype, sub in tok_kv:
            kv(name, value, vtype, sub_type=sub)
        del tok_kv
        kv("general.quantization_version", gguf.GGML_QUANT_VERSION, VT.UINT32)

        for p in plan:
            w.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float32), sizes[p.gguf_name], raw_dtype=p.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()

        assert w.fout is not None and len(w.fout) == 1
        f = w.fout[0]
        w.write_padding(f, f.tell())
        data_start = f.tell()
        bar = make_model.Progress(sum(sizes.values()), f"convert_hf {out.name}", progress)
        for p in plan:
            arr = weights[p.hf_name].load()
            if p.transform is not None:
                arr = p.transform(arr)
            data = encode(arr, p.qtype, p.hf_name)
            if data.nbytes != sizes[p.gguf_name]:
                raise ToolError(f"internal error: {p.gguf_name} encodes to {data.nbytes} bytes, expected {sizes[p.gguf_name]}")
            data.tofile(f)
            w.write_padding(f, data.nbytes)
            bar.update(data.nbytes, p.gguf_name)
            del arr, data
        common.finish_streamed_writer(w, f, data_start, sizes)
        bar.finish()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert a Hugging Face MobileLLM / Llama (SmolLM) checkpoint to a llama GGUF for PocketLM "
                    "(Q/K permuted for GGUF's RoPE, MobileLLM tying and layer sharing recorded).",
    )
    parser.add_argument("checkpoint", type=Path, help="directory with config.json and the weights")
    parser.add_argument("--outtype", choices=list(OUTTYPES), default="f32", help="type of the 2-D weight matrices (default f32)")
    parser.add_argument("--out", type=Path, required=True, help="output .gguf path")
    parser.add_argument("--vocab-from", type=Path, default=None, metavar="FILE.gguf",
                        help="copy tokenizer.* keys from this GGUF when the checkpoint has no byte-level BPE tokenizer.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    out = convert(args.checkpoint, args.out, args.outtype, vocab_from=args.vocab_from, progress=not args.no_progress)
    print(out)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
