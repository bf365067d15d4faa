#!/usr/bin/env python3
"""Make a Qwen2.5-0.5B-class Q4_K_M for flash paging's benchmarks (issue 14's third target), in the model cache.

Why: no real Qwen2.5 GGUF is reachable here (only PyPI is), and paging cost depends on the shapes and the storage
types, not on what the weights say. So: a random-weight qwen2 model at Qwen2.5-0.5B's shape -- 24 layers, width 896,
FFN 4864, 14 heads / 2 KV heads of 64, vocabulary 151,936, an untied output.weight (Qwen2.5-0.5B itself ties it;
the untied case is the one where the input embedding can stay on storage) -- written by make_model.py as F16 and
quantized by llama.cpp's own quantizer (`llama_model_quantize`, ftype 15 = LLAMA_FTYPE_MOSTLY_Q4_K_M, in the peer
venv), so the file has the type mixture a user's Q4_K_M has: rows 896 wide are not whole 256-element super-blocks,
so llama.cpp falls back to Q5_0 for them (attention, ffn_gate/ffn_up, token_embd) and to Q8_0 for output.weight,
while ffn_down (4864 wide) is Q4_K or Q6_K by layer.

Weights as the random qwen2 variant of make_llamacpp_variants.py (seed 2024 here, N(0, 0.02^2) matrices, N(0, 0.5^2)
Q/K/V biases, token_embd and output.weight, unit norms). Tokenizer: SmolLM2's byte-level BPE (49,152 tokens, pre
`qwen2`) padded to 151,936 with unused placeholder tokens, so the embedding and head have Qwen's row count.
Deterministic: the same tools give the same bytes (the sha256 is printed, not pinned: the venv's llama.cpp decides).

    python3 weights-tools/make_flash_qwen2.py            # -> $POCKETLM_CACHE/qwen2.5-0.5b-random.Q4_K_M.gguf
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import common

NAME = "qwen2.5-0.5b-random.Q4_K_M.gguf"
SEED = 2024


def spec():
    import make_model

    return make_model.ModelSpec(
        name="qwen2.5-0.5b-random", model_type="qwen2", layers=24, dim=896, heads=14, kv_heads=2, head_dim=64,
        ffn=4864, vocab=151936, rope_theta=1_000_000.0, eps=1e-6, context=32768, tied=False, strategy="none",
        repeats=1, arch="qwen2")


def make(cache: Path, force: bool = False) -> Path:
    import fetch
    import make_llamacpp_variants as variants
    import make_model

    out = cache / NAME
    if out.exists() and not force:
        return out
    f16 = cache / (NAME + ".f16.tmp")
    try:
        make_model.write_model(spec(), f16, "f16", SEED, vocab_from=str(fetch.fetch()), progress=False,
                               output_std=variants.QWEN2_OUTPUT_STD, embed_std=variants.QWEN2_EMBED_STD,
                               tokenizer_overrides={"tokenizer.ggml.pre": "qwen2"})
        with common.atomic_output(out) as tmp:
            variants.write_q4_k_m(f16, tmp)
    finally:
        f16.unlink(missing_ok=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {common.sha256_file(out)})", file=sys.stderr)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make a random-weight Qwen2.5-0.5B-shaped Q4_K_M (llama.cpp's "
                                                 "quantizer) in the model cache.")
    parser.add_argument("--force", action="store_true", help="make it again even if cached")
    parser.add_argument("--out-dir", type=Path, default=None, help="cache directory (default $POCKETLM_CACHE)")
    args = parser.parse_args(argv)
    print(make(args.out_dir or common.cache_dir(), force=args.force))
    return 0


if __name__ == "__main__":
    common.run_cli(main)
