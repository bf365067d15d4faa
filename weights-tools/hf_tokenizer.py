"""The tokenizer half of convert_hf.py: a Hugging Face checkpoint's tokenizer as GGUF tokenizer.* keys.

A byte-level BPE tokenizer.json becomes a gpt2-model vocabulary (tokens, types, merges, the pre-tokenizer guessed from
its pre-tokenizer tree); a SentencePiece tokenizer.model is parsed here (a minimal protobuf reader, no sentencepiece
package) into a llama-model vocabulary; --vocab-from copies another GGUF's tokenizer keys. See convert_hf.py's
docstring for the order in which they apply.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from common import GGUFValueType as VT
from common import ToolError, read_json

import make_model

if TYPE_CHECKING:
    from convert_hf import Checkpoint

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

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


