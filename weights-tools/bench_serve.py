#!/usr/bin/env python3
"""Figures for `pocketlm serve` (README "Serving"), measured in one run on this machine.

Why: a server is worth having only if it costs little over `pocketlm run`, if parallel slots share the memory-bound
decode (four slots should cost little more than one), and if a conversation's later turns are as quick to answer as
its first. This prints, with the CPU name and the memory bound measured in the same run:
- aggregate decode tok/s with 1, 2 and 4 requests at once on a 4-slot server (alternating rounds), and llama.cpp's
  with 1, 2 and 4 sequences batched per llama_decode step (as llama-server's slots) in the same rounds;
- request overhead of serve over the generation itself (client wall time minus the server's own prefill and decode
  time) and over `pocketlm run` for the same greedy generation;
- time to first token of turn 5 of a conversation with ~1,500 tokens of history, with the slot's KV cache reused
  and with it gone, against turn 1's, for each KV cache type asked for (f16, llama.cpp's default numerics, and bf16,
  whose attention runs on BF16 dot products where the CPU has them).

    python3 weights-tools/bench_serve.py [--model PATH] [--rounds 3] [--only turns|slots] [--kv-cache-types f16,bf16]
                                         [--bin PATH ...]

`--only slots` prints the aggregate decode figures alone (llama.cpp's beside them); with several `--bin`, each
build's server runs them in turn, round by round (alternating A/B on a shared machine).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from bench_peer import cpu_name, ensure_llama_cpp
from common import field_value, open_gguf, require_value

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".build" / "release" / "pocketlm"
CACHE = Path(os.environ.get("POCKETLM_CACHE") or Path.home() / ".cache" / "pocketlm")


def start(model: Path, *args: str, binary: Path = BIN) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(binary), "serve", "--model", str(model), "--port", "0", "--threads", "2", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"on (http://[\d.]+:\d+)", line)
    if not m:
        raise SystemExit(f"serve did not start: {line}")
    return proc, m.group(1)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def stream(url: str, path: str, body: dict) -> dict:
    """A streaming request: client-side times of the first and last text event, and the server's usage/timings."""
    req = urllib.request.Request(url + path, data=json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    final = {}
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            o = json.loads(line[6:])
            if o.get("usage"):
                final = o
                continue
            choice = o["choices"][0]
            piece = choice.get("text") or (choice.get("delta") or {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
    return {"start": t0, "first": first, "last": last, "usage": final["usage"], "timings": final["timings"]}


def post(url: str, path: str, body: dict) -> tuple[float, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        o = json.loads(r.read())
    return time.perf_counter() - t0, o


def aggregate_decode(url: str, k: int, tokens: int) -> float:
    """k requests at once, each generating `tokens` (ignoring end-of-text): generated tokens after each request's
    first, over the window from the first first-token to the last token."""
    prompts = ["Count: 1, 2, 3,", "The alphabet: A, B, C,", "Numbers: 10, 20, 30,", "Days: Monday, Tuesday,"]
    with concurrent.futures.ThreadPoolExecutor(k) as pool:
        runs = list(pool.map(lambda i: stream(url, "/v1/completions", {"prompt": prompts[i], "max_tokens": tokens,
                                                                       "temperature": 0}), range(k)))
    generated = sum(r["usage"]["completion_tokens"] - 1 for r in runs)
    return generated / (max(r["last"] for r in runs) - min(r["first"] for r in runs))


def memory_bound(model: Path) -> dict:
    out = subprocess.run([str(BIN), "bench", "--model", str(model), "--threads", "2", "--json", "--prompt-tokens", "32",
                          "--gen-tokens", "32"], capture_output=True, text=True, check=True).stdout
    o = json.loads(out)
    read, per_token = o["memory_read_bytes_per_second"], o["weight_bytes_per_token"]
    return {"read_bytes_per_second": read, "weight_bytes_per_token": per_token, "tokens_per_second": read / per_token,
            "bench_decode": o["decode"]["median"]}


def compute_peak(model: Path) -> dict:
    """Multiply-adds per second of the serve's two threads (`pocketlm bench`'s compute probe): f32 fma, the F16 KV
    cache's attention arithmetic, and bf16 dot products where the CPU has them, the BF16 cache's."""
    out = subprocess.run([str(BIN), "bench", "--model", str(model), "--threads", "2", "--json", "--prompt-tokens", "8",
                          "--gen-tokens", "8", "--repetitions", "1"], capture_output=True, text=True, check=True).stdout
    o = json.loads(out)
    f32 = o["multiply_adds_per_second"]
    return {"f16": f32, "bf16": o.get("bf16_multiply_adds_per_second") or f32}


def attention_shape(r) -> dict:
    """Layers, query heads, head size and sliding window (every `pattern`-th layer global) from a GGUF's metadata
    (a `common.open_gguf` reader)."""
    arch = require_value(r, "general.architecture")
    heads = int(require_value(r, f"{arch}.attention.head_count"))
    head_dim = field_value(r, f"{arch}.attention.key_length") or int(require_value(r, f"{arch}.embedding_length")) // heads
    window = field_value(r, f"{arch}.attention.sliding_window")
    pattern = field_value(r, f"{arch}.attention.sliding_window_pattern") or (6 if arch == "gemma3" else None)
    return {"layers": int(require_value(r, f"{arch}.block_count")), "heads": heads, "head_dim": int(head_dim),
            "window": int(window) if window and pattern else None, "pattern": int(pattern) if window and pattern else None}


def attention_multiply_adds(shape: dict, start: int, end: int) -> int:
    """Multiply-adds of the attention of positions start ..< end, each over the cache before it: per layer and query
    head, head_dim for each score and head_dim again for each value row, over the positions the query sees (its
    own and every earlier one, or only the window's on a sliding-window layer)."""
    seen = 0
    for layer in range(shape["layers"]):
        window = shape["window"] if shape["window"] and (layer + 1) % shape["pattern"] != 0 else None
        seen += sum(min(i + 1, window) if window else i + 1 for i in range(start, end))
    return 2 * shape["heads"] * shape["head_dim"] * seen


def turn_floor(shape: dict, peak: float, turn1: dict, turn5: dict) -> dict:
    """What turn 5's time to first token can be at best against turn 1's: turn 1's time plus the extra attention
    multiply-adds turn 5's new tokens do over the cached history, at the measured peak (the rest of the work — the
    new tokens through the weights — is turn 1's, as both feed the same new message)."""
    def macs(t: dict) -> int:
        cached = min(t["cached_tokens"])
        return attention_multiply_adds(shape, cached, t["prompt_tokens"])
    extra = macs(turn5) - macs(turn1)
    return {"extra_multiply_adds": extra, "peak_per_second": peak,
            "floor_ratio": 1 + extra / peak / (turn1["ttft_ms"] / 1000)}


TOPICS = ["the water cycle", "how bridges carry loads", "the history of the printing press", "why leaves change colour",
          "how a compiler works", "the life of honey bees", "tides and the moon", "how vaccines train immunity",
          "the invention of the telescope", "why the sky is blue", "how rivers carve valleys", "the first railways"]


def user_message(topic: str, words: int) -> dict:
    text = " ".join(f"Here is note {i} about {topic}, written for a curious reader." for i in range(words // 12))
    return {"role": "user", "content": f"{text}\nSummarise the notes above in one sentence."}


def history(url: str, turns: int, words: int) -> list[dict]:
    """A conversation of `turns` user messages of ~`words` words each with the model's greedy replies."""
    messages: list[dict] = []
    for t in range(turns):
        messages.append(user_message(TOPICS[t], words))
        reply = post(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 40, "temperature": 0})[1]
        messages.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
    return messages


def turn_latencies(model: Path, rounds: int, new_words: int, cache_type: str, words: int = 230) -> dict:
    """Time to first token, one slot, alternating in each round: turn 1 of a new conversation, turn 5 after the slot
    lost the history (the whole ~1,500 tokens fed), and turn 5 with the history in the slot's cache (only the new
    message fed). Turn 1's and turn 5's messages have `new_words` words (new text each round, the same for turn 1
    and the cached turn 5); the four earlier turns `words` each."""
    proc, url = start(model, "--parallel", "1", "--context", "4096", "--kv-cache-type", cache_type)
    try:
        past = history(url, 4, words)
        samples: dict[str, list[float]] = {"turn1": [], "turn5_uncached": [], "turn5_cached": []}
        reused: dict[str, list[int]] = {k: [] for k in samples}
        server_prompt: dict[str, list[float]] = {k: [] for k in samples}
        prompt: dict[str, int] = {}
        for r in range(rounds):
            # Turn 1 and the cached turn 5 send the same new message, so both feed the same new tokens (topics
            # differ in length: with different messages turn 5 fed ~19 more tokens than turn 1, ~5% more work);
            # the uncached turn 5 in between sends another, so the cached one still finds only the history reusable.
            fresh = user_message(TOPICS[4 + (3 * r) % 8], new_words)
            for name, messages in (("turn1", [fresh]),
                                   ("turn5_uncached", past + [user_message(TOPICS[5 + (3 * r) % 7], new_words)]),
                                   ("turn5_cached", past + [fresh])):
                m = stream(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 8, "temperature": 0})
                samples[name].append((m["first"] - m["start"]) * 1000)
                reused[name].append(m["usage"]["prompt_tokens_details"]["cached_tokens"])
                server_prompt[name].append(m["timings"]["prompt_ms"])
                prompt[name] = m["usage"]["prompt_tokens"]
        return {name: {"ttft_ms": statistics.median(v), "samples_ms": v, "prompt_tokens": prompt[name],
                       "cached_tokens": reused[name],
                       "server_prompt_ms": server_prompt[name]} for name, v in samples.items()}
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96, help="tokens per request for the slot figures")
    ap.add_argument("--only", choices=["all", "turns", "slots"], default="all",
                    help="turns: only the time-to-first-token figures; slots: only the aggregate decode figures "
                         "(shorter runs on a shared machine)")
    ap.add_argument("--bin", type=Path, action="append", default=None,
                    help="pocketlm binary for --only slots (repeat to compare builds, alternating round by round)")
    ap.add_argument("--kv-cache-types", default="f16,bf16",
                    help="KV cache types the turn figures are measured with, comma-separated (f16, bf16)")
    args = ap.parse_args()
    cache_types = [t for t in args.kv_cache_types.split(",") if t]
    if not cache_types or any(t not in ("f16", "bf16") for t in cache_types):
        raise SystemExit(f"--kv-cache-types: f16 and/or bf16, found {args.kv_cache_types!r}")
    result: dict = {"model": str(args.model), "cpu": cpu_name(), "threads": 2, "date": time.strftime("%Y-%m-%d"),
                    "load_average": os.getloadavg()}
    if args.bin and args.only != "slots":
        raise SystemExit("--bin: only with --only slots")
    if args.only == "slots":
        slots_ab(args, result)
        return
    if args.only == "all":
        slot_figures(args, result)
    # Turn 5 with ~1,500 tokens of history, against turn 1 of a new conversation.
    # Two sizes of the new message: as long as the earlier turns' (~340 tokens), and a short one (~30 tokens).
    result["turns"] = {f"{size}_message_{cache}": turn_latencies(args.model, args.rounds, words, cache)
                       for cache in cache_types for size, words in (("long", 230), ("short", 24))}
    # The bound turn 5 is up against: its extra attention at this machine's multiply-add peak, measured now.
    peak, shape = compute_peak(args.model), attention_shape(open_gguf(args.model))
    result["compute_peak"] = peak
    for name, t in result["turns"].items():
        t["floor"] = turn_floor(shape, peak[name.rsplit("_", 1)[1]], t["turn1"], t["turn5_cached"])
    result["load_average_after"] = os.getloadavg()

    print(json.dumps(result, indent=2))
    print(f"\n{result['cpu']}, 2 threads, {result['date']}; load average {result['load_average'][0]:.2f} before, "
          f"{result['load_average_after'][0]:.2f} after")
    if args.only == "all":
        print_slot_figures(result)
    for size, t in result["turns"].items():
        t1, t5, t5u = t["turn1"], t["turn5_cached"], t["turn5_uncached"]
        print(f"time to first token, {size.replace('_message_', ' message, KV cache ')} (median of {args.rounds}, alternating): turn 1 "
              f"({t1['prompt_tokens']} tokens, {t1['prompt_tokens'] - min(t1['cached_tokens'])} fed) {t1['ttft_ms']:.0f} ms; turn 5 ({t5['prompt_tokens']} tokens) with the "
              f"cache {t5['ttft_ms']:.0f} ms ({min(t5['cached_tokens'])}+ reused, {t5['prompt_tokens'] - min(t5['cached_tokens'])} fed) "
              f"= {t5['ttft_ms'] / t1['ttft_ms']:.2f}× "
              f"turn 1, without {t5u['ttft_ms']:.0f} ms ({max(t5u['cached_tokens'])} reused) = "
              f"{t5u['ttft_ms'] / t1['ttft_ms']:.2f}×")
        f = t["floor"]
        print(f"  compute floor for the cached turn 5: {f['floor_ratio']:.2f}× turn 1 (its extra attention, "
              f"{f['extra_multiply_adds'] / 1e9:.1f} G multiply-adds, at the measured peak of "
              f"{f['peak_per_second'] / 1e9:.1f} G/s on 2 threads, added to turn 1's time)")


def slot_figures(args: argparse.Namespace, result: dict) -> None:
    """The memory bound, aggregate decode with 1, 2 and 4 slots, and serve's overhead over `run`."""
    result["memory_bound"] = memory_bound(args.model)
    proc, url = start(args.model, "--parallel", "4", "--context", "2048")
    try:
        stream(url, "/v1/completions", {"prompt": "Warm up", "max_tokens": 8})
        slots: dict[int, list[float]] = {1: [], 2: [], 4: []}
        peer: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for r in range(args.rounds):
            order = [1, 2, 4] if r % 2 == 0 else [4, 2, 1]
            for k in order:
                slots[k].append(aggregate_decode(url, k, args.tokens))
            # llama.cpp's k sequences batched per llama_decode, as llama-server's slots run them, in the same round.
            for k, v in peer_parallel_decode(args.model, order, args.tokens).items():
                peer[k] += v
        result["aggregate_decode"] = {k: statistics.median(v) for k, v in slots.items()}
        result["aggregate_decode_samples"] = slots
        result["peer_aggregate_decode"] = {k: statistics.median(v) for k, v in peer.items()}
        result["peer_aggregate_decode_samples"] = peer

        # Overhead: alternate serve requests with `run` of the same generation.
        body = {"prompt": "The capital of France is", "max_tokens": 32, "temperature": 0}
        overhead, serve_wall, run_gen = [], [], []
        for _ in range(args.rounds * 3):
            wall, o = post(url, "/v1/completions", body)
            t = o["timings"]
            overhead.append(wall * 1000 - (t["queue_ms"] + t["prompt_ms"] + t["predicted_ms"]))
            serve_wall.append(wall * 1000)
            run = json.loads(subprocess.run([str(BIN), "run", "--model", str(args.model), "--threads", "2", "--prompt",
                                             body["prompt"], "--max-tokens", "32", "--temperature", "0", "--json"],
                                            capture_output=True, text=True, check=True).stdout)
            rt = run["timings"]
            n = len(run["tokens"])
            run_gen.append(rt["time_to_first_token_ms"] + (n - 1) / rt["generation_tokens_per_second"] * 1000)
        result["overhead_ms"] = {"serve_minus_own_generation": statistics.median(overhead),
                                 "serve_wall": statistics.median(serve_wall), "run_generation": statistics.median(run_gen),
                                 "serve_minus_run": statistics.median(serve_wall) - statistics.median(run_gen)}
    finally:
        stop(proc)


def slots_ab(args: argparse.Namespace, result: dict) -> None:
    """Aggregate decode with 1, 2 and 4 requests at once, for each --bin (default: this checkout's build), a 4-slot
    server per build, all up at once; each round runs every build in turn (order reversed on odd rounds)."""
    bins = args.bin or [BIN]
    servers = [start(args.model, "--parallel", "4", "--context", "2048", binary=b) for b in bins]
    try:
        for _, url in servers:
            stream(url, "/v1/completions", {"prompt": "Warm up", "max_tokens": 8})
        samples = [{1: [], 2: [], 4: []} for _ in bins]
        peer: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for r in range(args.rounds):
            order = list(range(len(bins))) if r % 2 == 0 else list(reversed(range(len(bins))))
            slots = [1, 2, 4] if r % 2 == 0 else [4, 2, 1]
            for i in order:
                for k in slots:
                    samples[i][k].append(aggregate_decode(servers[i][1], k, args.tokens))
            for k, v in peer_parallel_decode(args.model, slots, args.tokens).items():
                peer[k] += v
    finally:
        for proc, _ in servers:
            stop(proc)
    result["load_average_after"] = os.getloadavg()
    result["aggregate_decode_by_binary"] = {str(b): {"median": {k: statistics.median(v) for k, v in s.items()},
                                                     "samples": s} for b, s in zip(bins, samples)}
    result["peer_aggregate_decode"] = {"median": {k: statistics.median(v) for k, v in peer.items()}, "samples": peer}
    print(json.dumps(result, indent=2))
    print(f"\n{result['cpu']}, 2 threads, {result['date']}; load average {result['load_average'][0]:.2f} before, "
          f"{result['load_average_after'][0]:.2f} after (median of {args.rounds} alternating rounds)")
    for b, s in zip(bins, samples):
        m = {k: statistics.median(v) for k, v in s.items()}
        print(f"{b}: aggregate decode 1 slot {m[1]:.1f} tok/s, 2 slots {m[2]:.1f} ({m[2] / m[1]:.2f}×), "
              f"4 slots {m[4]:.1f} ({m[4] / m[1]:.2f}×)")
    p = result["peer_aggregate_decode"]["median"]
    print(f"llama.cpp, k sequences per llama_decode (llama-server's slots): 1 {p[1]:.1f} tok/s, 2 {p[2]:.1f} "
          f"({p[2] / p[1]:.2f}×), 4 {p[4]:.1f} ({p[4] / p[1]:.2f}×)")


def peer_parallel_decode(model: Path, slots: list[int], tokens: int) -> dict[int, list[float]]:
    """llama.cpp's aggregate greedy decode of k sequences per step (llamacpp_peer.py parallel), in the peer's venv."""
    out = subprocess.run([str(ensure_llama_cpp()), str(REPO / "weights-tools" / "llamacpp_peer.py"), "parallel", str(model),
                          "--slots", ",".join(map(str, slots)), "--tokens", str(tokens), "--threads", "2"],
                         capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1])["aggregate_decode"].items()}


def print_slot_figures(result: dict) -> None:
    mb = result["memory_bound"]
    agg = result["aggregate_decode"]
    print(f"memory bound {mb['tokens_per_second']:.0f} tok/s "
          f"({mb['weight_bytes_per_token'] / 1e6:.1f} MB/token at {mb['read_bytes_per_second'] / 1e9:.1f} GB/s); "
          f"`bench` decode {mb['bench_decode']:.1f} tok/s")
    print(f"aggregate decode: 1 slot {agg[1]:.1f} tok/s, 2 slots {agg[2]:.1f} ({agg[2] / agg[1]:.2f}×), "
          f"4 slots {agg[4]:.1f} ({agg[4] / agg[1]:.2f}×)")
    p = result["peer_aggregate_decode"]
    print(f"llama.cpp, k sequences per llama_decode (llama-server's slots): 1 {p[1]:.1f} tok/s, 2 {p[2]:.1f} "
          f"({p[2] / p[1]:.2f}×), 4 {p[4]:.1f} ({p[4] / p[1]:.2f}×); PocketLM / llama.cpp: 1 slot {agg[1] / p[1]:.2f}×, "
          f"4 slots {agg[4] / p[4]:.2f}×")
    o = result["overhead_ms"]
    print(f"overhead: serve wall {o['serve_wall']:.1f} ms − its own generation = {o['serve_minus_own_generation']:.2f} ms; "
          f"− `run`'s generation {o['run_generation']:.1f} ms = {o['serve_minus_run']:.1f} ms")

if __name__ == "__main__":
    main()
