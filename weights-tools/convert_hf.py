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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError, read_json

import gguf
import make_model
from hf_tokenizer import tokenizer_kv

OUTTYPES = {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0}
ARCHITECTURES = ("MobileLLMForCausalLM", "LlamaForCausalLM")

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
