#!/usr/bin/env python3
"""llama.cpp's side of make_llamacpp_variants.py: runs *inside* the llama-cpp-python venv (bench_peer.ensure_llama_cpp).

Why a separate file: the venv has only numpy and llama_cpp (no gguf, no weights-tools imports), and the driver
(system python, gguf-py) must not import llama_cpp. The driver runs `VENV_PYTHON llamacpp_peer.py COMMAND ...`
and reads one JSON document from stdout (llama.cpp's own logging goes to stderr and is silenced with verbose=False).

Commands:
  quantize SRC DST --ftype N [--threads T]   llama_model_quantize (llama.cpp's quantizer, as llama-quantize runs it)
  record SPEC.json                            per model and prompt: ids, last-position top-5, greedy ids + margins
  perplexity MODEL TEXT [--n-ctx 512]         llama-perplexity's number (see perplexity() below)

All runs: CPU, `threads` threads, flash attention off, seed-free (greedy/argmax only); the KV cache f16 (llama.cpp's
default) unless a record spec's run says "kv_cache_type": "bf16".
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


#: ggml_type of the KV cache by name (GGML_TYPE_F16, GGML_TYPE_BF16).
KV_CACHE_TYPES = {"f16": 1, "bf16": 30}


def _llama(model: str, n_ctx: int, n_batch: int, threads: int, logits_all: bool, kv_cache_type: str = "f16"):
    from llama_cpp import Llama

    kv = KV_CACHE_TYPES[kv_cache_type]
    return Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                 n_threads_batch=threads, logits_all=logits_all, flash_attn=False, type_k=kv, type_v=kv,
                 verbose=False)


def quantize(args) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = args.ftype
    params.nthread = args.threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(args.src.encode(), args.dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed with {rc}")
    return {"seconds": time.perf_counter() - t0, "ftype": args.ftype}


def _top(row: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    # Stable order on ties (argsort of -x with kind=stable keeps the lower id first, as a max-scan would).
    idx = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in idx], [float(row[i]) for i in idx]


def record_model(entry: dict, prompts: list[dict], run: dict) -> list[dict]:
    """One Llama per model; each prompt evaluated from an empty KV cache."""
    llm = _llama(entry["path"], run["n_ctx"], run["n_batch"], run["threads"], logits_all=True,
                 kv_cache_type=run.get("kv_cache_type", "f16"))
    out = []
    for prompt in prompts:
        ids = llm.tokenize(prompt["text"].encode("utf-8"), add_bos=True, special=prompt.get("special", False))
        llm.reset()
        llm.eval(ids)  # split into n_batch-sized batches by llama-cpp-python, like llama.cpp's tools
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top_ids, top_logits = _top(last, 5)
        greedy, margins, chosen = [], [], []
        row = last
        for _ in range(run["greedy"]):
            (a, b), (la, lb) = _top(row, 2)
            greedy.append(a)
            margins.append(la - lb)
            chosen.append(la)
            llm.eval([a])  # one token at a time, as a chat decode does
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        out.append({
            "model_file": entry["name"],
            "prompt_name": prompt["name"],
            "prompt": prompt["text"],
            "tokens": [int(t) for t in ids],
            "n_tokens": len(ids),
            "last_pos_top5_ids": top_ids,
            "last_pos_top5_logits": top_logits,
            "greedy_ids": greedy,
            "greedy_chosen_logits": chosen,
            "greedy_top1_top2_margin": margins,
            "greedy_text": llm.detokenize(greedy).decode("utf-8", errors="replace"),
            # Kept so the driver can compare variants (e.g. llama3 RoPE against plain RoPE); not written out whole.
            "_last_logits": last.tolist(),
        })
    del llm
    return out


def record(args) -> dict:
    spec = json.loads(open(args.spec).read())
    records = []
    for entry in spec["models"]:
        records += record_model(entry, spec["prompts"], spec["run"])
    import llama_cpp

    return {"records": records, "system_info": llama_cpp.llama_print_system_info().decode()}


def perplexity(args) -> dict:
    """llama-perplexity (tools/perplexity/perplexity.cpp, perplexity()) on one text:

    - tokens = common_tokenize(text, add_special=true, parse_special=false): a BOS only if the vocab says
      add_bos (SmolLM2: add_bos_token = false, so none);
    - n_chunk = floor(n_tokens / n_ctx) non-overlapping windows, each from an empty KV cache, positions 0..n_ctx-1;
    - if add_bos, the window's first token is *replaced* by BOS (not inserted);
    - scored: the logits at positions first = n_ctx/2 ... n_ctx-2 against the next token (n_ctx - 1 - first
      predictions per window); ppl = exp(mean NLL) over all windows, NLL from a log-softmax.
    llama-perplexity runs n_batch/n_ctx windows as parallel sequences of one batch; here each window is its own
    batch (same math, batch-split float noise only).
    """
    text = open(args.text, encoding="utf-8").read()
    llm = _llama(args.model, args.n_ctx, args.n_ctx, args.threads, logits_all=True, kv_cache_type=args.kv_cache_type)
    import llama_cpp

    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    n_ctx = args.n_ctx
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    nll, count, per_chunk = 0.0, 0, []
    for c in range(n_chunk):
        window = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            window[0] = llm.token_bos()
        llm.reset()
        llm.eval(window)
        logits = np.array(llm.scores[first:n_ctx - 1], dtype=np.float64)
        targets = np.array(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        mx = logits.max(axis=1, keepdims=True)
        logz = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        chunk_nll = float((logz - logits[np.arange(len(targets)), targets]).sum())
        nll += chunk_nll
        count += len(targets)
        per_chunk.append(math.exp(nll / count))
    return {"perplexity": math.exp(nll / count), "n_tokens": len(tokens), "n_ctx": n_ctx, "n_chunk": n_chunk,
            "scored_tokens": count, "add_bos": add_bos, "running_ppl_per_chunk": per_chunk,
            "first_ids": [int(t) for t in tokens[:8]], "kv_cache_type": args.kv_cache_type}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--ftype", type=int, required=True)
    q.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("record")
    r.add_argument("spec")
    p = sub.add_parser("perplexity")
    p.add_argument("model")
    p.add_argument("text")
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kv-cache-type", choices=sorted(KV_CACHE_TYPES), default="f16")
    args = ap.parse_args()
    result = {"quantize": quantize, "record": record, "perplexity": perplexity}[args.cmd](args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
