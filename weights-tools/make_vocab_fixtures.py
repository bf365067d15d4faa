#!/usr/bin/env python3
r"""Write vocabulary-only GGUFs that exercise the qwen2 and llama-bpe pre-tokenizers with a real vocabulary.

Why: no Qwen2.5 or Llama 3 model is at hand, but the splitting rules (tokenizer.ggml.pre) can still be checked
exactly against llama.cpp: SmolLM2's byte-level BPE vocabulary and merges, with `tokenizer.ggml.pre` rewritten,
is a tokenizer llama.cpp loads (vocab_only) and runs with the Qwen2 or Llama 3 regex. The Swift tests load the
same files and compare their ids with the ones record_tokenizer_refs.py recorded from llama.cpp.

Writes into --out-dir, for each pre-tokenizer P in qwen2, llama-bpe:
  smollm2-vocab-P.gguf   every metadata key of SmolLM2-135M-Instruct.Q4_1.gguf (so llama.cpp's vocab_only load
                         finds the hyper-parameters it reads), `tokenizer.ggml.pre` = P, no tensors, and
                         EXTRA_TOKENS appended to the vocabulary (normal type, no merges lead to them).

Why the extra tokens: SmolLM2 splits digits, so its vocabulary has no multi-digit token and no merge builds one;
with it alone Qwen2's `\p{N}` and Llama 3's `\p{N}{1,3}` give the same ids. "123", "2024", … make the digit rule
visible (Llama 3 takes "123" whole through llama.cpp's ignore_merges, Qwen2 splits every digit), and "Ġzyxwv"
(" zyxwv") is a piece only ignore_merges can reach. Both files get the same vocabulary, so they differ only in P.

Deterministic: same source file, same bytes out. Takes ~3 s (gguf-py parses the 49k-entry vocabulary).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import gguf

import common
from common import GGUFValueType as VT

PRE_TOKENIZERS = ("qwen2", "llama-bpe")
EXTRA_TOKENS = ("123", "456", "789", "000", "2024", "Ġzyxwv")
TOKEN_TYPE_NORMAL = 1


def fixture_name(pre: str) -> str:
    return f"smollm2-vocab-{pre}.gguf"


def write_vocab_fixture(reader, out: Path, pre: str) -> Path:
    """Copy `reader`'s metadata (no tensors) to `out` with tokenizer.ggml.pre = `pre`."""
    if common.field_value(reader, "tokenizer.ggml.model") != "gpt2":
        raise common.ToolError("the source vocabulary must be byte-level BPE (tokenizer.ggml.model = gpt2)")
    arch = common.require_value(reader, "general.architecture")
    tokens, _, _ = common.field_raw(reader.fields["tokenizer.ggml.tokens"])
    types, _, _ = common.field_raw(reader.fields["tokenizer.ggml.token_type"])
    present = set(tokens)
    extra = [t.encode("utf-8") for t in EXTRA_TOKENS]
    if any(t in present for t in extra):
        raise common.ToolError("the source vocabulary already has one of the extra tokens; pick others")
    with common.atomic_output(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for name, field in reader.fields.items():
            if common.is_pseudo_field(name) or name == "general.architecture":
                continue
            if name == "tokenizer.ggml.pre":
                writer.add_key_value(name, pre, VT.STRING)
            elif name == "tokenizer.ggml.tokens":
                writer.add_key_value(name, tokens + extra, VT.ARRAY, sub_type=VT.STRING)
            elif name == "tokenizer.ggml.token_type":
                writer.add_key_value(name, types + [TOKEN_TYPE_NORMAL] * len(extra), VT.ARRAY, sub_type=VT.INT32)
            else:
                value, vtype, sub = common.field_raw(field)
                writer.add_key_value(name, value, vtype, sub_type=sub)
        if "tokenizer.ggml.pre" not in reader.fields:
            writer.add_key_value("tokenizer.ggml.pre", pre, VT.STRING)
        common.finish_writer(writer)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--source", type=Path, default=None,
                    help="byte-level BPE GGUF to take the vocabulary from (default: the cached SmolLM2 Q4_1 file)")
    args = ap.parse_args(argv)
    source = args.source or common.cache_dir() / common.SMOLLM2_Q4_1_NAME
    reader = common.open_gguf(source)
    for pre in PRE_TOKENIZERS:
        path = write_vocab_fixture(reader, args.out_dir / fixture_name(pre), pre)
        print(path)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
