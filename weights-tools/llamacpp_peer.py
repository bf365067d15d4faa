#!/usr/bin/env python3
"""llama.cpp's side of make_llamacpp_variants.py: runs *inside* the llama-cpp-python venv (bench_peer.ensure_llama_cpp).

Why a separate file: the venv has only numpy and llama_cpp (no gguf, no weights-tools imports), and the driver
(system python, gguf-py) must not import llama_cpp. The driver runs `VENV_PYTHON llamacpp_peer.py COMMAND ...`
and reads one JSON document from stdout (llama.cpp's own logging goes to stderr and is silenced with verbose=False).

Commands:
  quantize SRC DST --ftype N [--threads T]   llama_model_quantize (llama.cpp's quantizer, as llama-quantize runs it)
  record SPEC.json                            per model and prompt: ids, last-position top-5, greedy ids + margins
  perplexity MODEL TEXT [--n-ctx 512]         llama-perplexity's number (see perplexity() below)
  parallel MODEL [--slots 1,2,4] [--tokens N] aggregate greedy decode of k sequences batched per step (llama-server's slots)

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


def parallel(args) -> dict:
    """Aggregate greedy decode of k sequences in one context, one llama_decode per step carrying one token of each
    (what llama-server's k slots run), for each k in args.slots: tokens generated after each sequence's first, over
    the time of those steps. The prompts are fed first, one llama_decode each, outside the timing (with 8 steps)."""
    import ctypes

    import llama_cpp

    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(args.model.encode(), llama_cpp.llama_model_default_params())
    if not model:
        raise SystemExit(f"llama.cpp could not load {args.model}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    prompts = ["Count: 1, 2, 3,", "The alphabet: A, B, C,", "Numbers: 10, 20, 30,", "Days: Monday, Tuesday,"]
    rates: dict[int, list[float]] = {}
    for k in args.slots:
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = 512 * k
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = k
        cp.n_threads = cp.n_threads_batch = args.threads
        cp.flash_attn_type = 0   # off, as every other peer run here
        cp.type_k = cp.type_v = KV_CACHE_TYPES["f16"]
        ctx = llama_cpp.llama_init_from_model(model, cp)
        if not ctx:
            raise SystemExit(f"llama.cpp could not make a context for {k} sequences")
        batch = llama_cpp.llama_batch_init(512, 0, k)

        def decode(items: list[tuple[int, int, int, bool]]) -> None:
            """items: (token, position, sequence, wants logits)."""
            batch.n_tokens = len(items)
            for i, (tok, pos, seq, out) in enumerate(items):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if out else 0
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")

        def argmax(i: int) -> int:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
            return int(row.argmax())

        positions, nexts = [], []
        for seq in range(k):
            text = prompts[seq % len(prompts)].encode()
            buf = (llama_cpp.llama_token * 256)()
            n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, 256, True, False)
            decode([(buf[i], i, seq, i == n - 1) for i in range(n)])
            nexts.append(argmax(n - 1))
            positions.append(n)
        # A context's first steps run slower (its buffers and threads start): 8 untimed steps first.
        t0 = 0.0
        for step in range(8 + args.tokens - 1):
            if step == 8:
                t0 = time.perf_counter()
            decode([(nexts[s], positions[s], s, True) for s in range(k)])
            nexts = [argmax(s) for s in range(k)]
            positions = [p + 1 for p in positions]
        rates.setdefault(k, []).append(k * (args.tokens - 1) / (time.perf_counter() - t0))
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return {"aggregate_decode": rates, "tokens": args.tokens, "threads": args.threads}


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
    par = sub.add_parser("parallel")
    par.add_argument("model")
    par.add_argument("--slots", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4])
    par.add_argument("--tokens", type=int, default=96)
    par.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    result = {"quantize": quantize, "record": record, "perplexity": perplexity, "parallel": parallel}[args.cmd](args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
