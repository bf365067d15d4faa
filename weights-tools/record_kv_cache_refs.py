#!/usr/bin/env python3
"""llama.cpp's outputs with a BF16 KV cache (`-ctk bf16 -ctv bf16`), as test data for PocketLM's `--kv-cache-type bf16`.

Why: the BF16 cache rounds keys, values, queries and probabilities to bf16, so its logits move from the F16 cache's
(by ~0.15 on average on SmolLM2); the oracle for it is llama.cpp with the same cache type, not our F16 results.
This runs the peer venv (bench_peer.ensure_llama_cpp) on SmolLM2 F32 and Q4_1 with make_llamacpp_variants' prompts
(the long one ~700 tokens, so attention at depth matters), and llama-perplexity on Gemma 3 270M (head_dim 256, sliding-
window layers) over GPL-2 in windows of 1024, and writes weights-tools/reference/kv-cache-bf16-llamacpp.json (per model
and prompt: ids, last-position top-5, greedy ids with their top-1/top-2 margins; the perplexity). Tests read the JSON;
this script only re-records it:

    python3 weights-tools/record_kv_cache_refs.py
"""
from __future__ import annotations

import json
import sys
import time

import common
import make_llamacpp_variants as variants

OUT = common.REFERENCE_DIR / "kv-cache-bf16-llamacpp.json"
MODELS = (common.SMOLLM2_F32_NAME, common.SMOLLM2_Q4_1_NAME)
RUN = {**variants.RUN, "kv_cache_type": "bf16"}
# Gemma's perplexity as gemma3-270m-llamacpp.json records it with the F16 cache.
PPL_MODEL, PPL_TEXT, PPL_N_CTX = common.GEMMA3_NAME, "/usr/share/common-licenses/GPL-2", 1024


def main() -> None:
    cache = common.cache_dir()
    files = {name: cache / name for name in MODELS}
    for name, path in {**files, PPL_MODEL: cache / PPL_MODEL}.items():
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `make fetch` first")
    prompts = variants.prompts()
    got = variants.peer_record(files, prompts, RUN)
    records = [{k: v for k, v in r.items() if not k.startswith("_")} for r in got["records"]]
    print(f"llama-perplexity on {PPL_MODEL}, {PPL_TEXT} ...", file=sys.stderr)
    ppl = variants.peer(["perplexity", str(cache / PPL_MODEL), PPL_TEXT, "--n-ctx", str(PPL_N_CTX), "--threads", "2",
                         "--kv-cache-type", "bf16"])
    OUT.write_text(json.dumps({
        "schema": {"records": "per model file and prompt: tokens = Llama.tokenize(prompt, add_bos=True, special=False); "
                              "last_pos_top5_ids/logits after the whole prompt (batches of n_batch); greedy_ids: argmax "
                              "fed back one token at a time, with greedy_top1_top2_margin per step; KV cache bf16",
                   "prompts": {p["name"]: p.get("source", "inline") for p in prompts},
                   "perplexity": "llama-perplexity's definition (llamacpp_peer.perplexity), KV cache bf16"},
        "runtime": {"run": RUN, "system_info": got["system_info"],
                    "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "records": records,
        "perplexity": {"model_file": PPL_MODEL, "text": PPL_TEXT, "n_ctx": PPL_N_CTX, "perplexity": ppl["perplexity"],
                       "scored_tokens": ppl["scored_tokens"]}}, indent=1) + "\n")
    print(f"wrote {OUT} ({len(records)} records)", file=sys.stderr)


if __name__ == "__main__":
    main()
