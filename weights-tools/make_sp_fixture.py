#!/usr/bin/env python3
"""Builds the SentencePiece tokenizer fixture: a tiny Llama-style BPE model and sentencepiece's own ids.

Writes into --out-dir:
  sp-tiny.model      the sentencepiece model (BPE, byte fallback, identity normalization like Llama's)
  sp-tiny.gguf       a tensor-less llama GGUF carrying the tokenizer.ggml.* keys llama.cpp's converter writes
  sp-expected.json   [{"text": ..., "ids": sp.encode(text)}] (no BOS) for a unicode test set

Training is deterministic for a fixed corpus and sentencepiece version (single thread, no sampling).
"""
import argparse
import glob
import json
import os
import sys

import gguf
from pathlib import Path
import sentencepiece as spm

import hf_tokenizer

# Llama's normalizer: no NFKC, spaces kept as they are (no collapsing), a dummy "▁" prefix.
TRAIN_OPTIONS = dict(
    model_type="bpe",
    vocab_size=640,
    byte_fallback=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    hard_vocab_limit=False,
    minloglevel=2,
)

UNICODE_LINES = [
    "Café, naïve façade, résumé, déjà vu, crème brûlée.",
    "Ünïcödé tëxt with àccents: São Paulo, Zürich, Kraków, Ærøskøbing.",
    "日本語のテキストと中文文本。",
    "Emoji: 😀 🎉 ❤️ 👍",
    "Ελληνικά και русский текст.",
]

TEST_TEXTS = [
    "Hello world",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "This program is free software; you can redistribute it and/or modify it.",
    " leading space",
    "trailing space ",
    "double  space",
    "   three leading spaces",
    "many     spaces     inside",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "\n",
    " ",
    "  ",
    "a",
    "Café naïve résumé",
    "crème brûlée à la carte",
    "日本語のテキスト",
    "中文文本和日本語",
    "Emoji: 😀 🎉 👍",
    "🦙 llama",
    "🦙",
    "Numbers: 0123456789 3.14159 1,000,000",
    "Punctuation!? (parentheses) [brackets] {braces} <angle> \"quotes\" 'single' — dash… ellipsis",
    "Unseen characters: ₿ ∮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ ፨ ௵",
    "Mixed: Ελληνικά, русский, עברית, العربية, हिन्दी",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007",
    "<s> looks like a control token but is text",
    "x\u00a0y\u200bz",
    "end with newline\n",
    "    indented  code:\n        return x  # comment",
    "  a  b   c    d     e",
]


def training_text():
    lines = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines.extend(line.rstrip() for line in f)
    lines = [l for l in lines if l.strip() and "\ufffd" not in l][:4000]
    if not lines:  # no license texts on this machine: a small built-in corpus still trains a usable model
        lines = [t for t in TEST_TEXTS[:4] for _ in range(50)]
    return lines + UNICODE_LINES * 20


def read_model(path):
    """(pieces, scores, types, add_dummy_prefix) from a sentencepiece .model file, read by the converter's own
    parser (hf_tokenizer.parse_sentencepiece), so the fixture also exercises what conversion writes."""
    return hf_tokenizer.parse_sentencepiece(Path(path))


# sentencepiece's ModelProto.SentencePiece.Type and llama.cpp's token types share numbers 1..6.
SP_TO_GGUF_TYPE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}


def write_gguf(path, sp, pieces, scores, types, add_dummy_prefix):
    w = gguf.GGUFWriter(path, "llama")  # writes general.architecture = llama
    T = gguf.GGUFValueType
    w.add_key_value("general.name", "sp-tiny", T.STRING)
    w.add_key_value("tokenizer.ggml.model", "llama", T.STRING)
    w.add_key_value("tokenizer.ggml.tokens", pieces, T.ARRAY, sub_type=T.STRING)
    w.add_key_value("tokenizer.ggml.scores", [float(s) for s in scores], T.ARRAY, sub_type=T.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", [SP_TO_GGUF_TYPE.get(t, 0) for t in types], T.ARRAY,
                    sub_type=T.INT32)
    w.add_key_value("tokenizer.ggml.bos_token_id", sp.bos_id(), T.UINT32)
    w.add_key_value("tokenizer.ggml.eos_token_id", sp.eos_id(), T.UINT32)
    w.add_key_value("tokenizer.ggml.unknown_token_id", sp.unk_id(), T.UINT32)
    w.add_key_value("tokenizer.ggml.add_bos_token", True, T.BOOL)
    w.add_key_value("tokenizer.ggml.add_eos_token", False, T.BOOL)
    w.add_key_value("tokenizer.ggml.add_space_prefix", bool(add_dummy_prefix), T.BOOL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    corpus = os.path.join(args.out_dir, "sp-corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(training_text()) + "\n")
    prefix = os.path.join(args.out_dir, "sp-tiny")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, **TRAIN_OPTIONS)
    os.remove(corpus)
    if os.path.exists(prefix + ".vocab"):
        os.remove(prefix + ".vocab")

    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    pieces, scores, types, add_dummy_prefix = read_model(prefix + ".model")
    assert len(pieces) == sp.get_piece_size()
    for i, p in enumerate(pieces):
        assert sp.id_to_piece(i) == p and abs(sp.get_score(i) - scores[i]) < 1e-6, i
    write_gguf(prefix + ".gguf", sp, pieces, scores, types, add_dummy_prefix)

    records = [{"text": t, "ids": sp.encode(t)} for t in TEST_TEXTS]
    for r in records:  # the fixture is only useful if sentencepiece itself round-trips it
        assert sp.decode(r["ids"]) == r["text"], r["text"]
    with open(os.path.join(args.out_dir, "sp-expected.json"), "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
    print(f"wrote {prefix}.model, {prefix}.gguf ({len(pieces)} tokens), sp-expected.json ({len(records)} texts)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
