#!/usr/bin/env python3
"""Benchmark PocketLM against llama.cpp on the same GGUF, same threads and token counts, in one invocation.

llama.cpp runs through the PyPI package llama-cpp-python, installed into its own cached venv. The stock
`-march=native` build dies with SIGILL on this CPU's AMX path (a ggml tile-config bug), so it is built with the
AMX instruction sets switched off. Both programs are measured the same way: a prompt of N pseudo-random tokens
as one batch (prefill), then N greedy tokens one at a time (decode), after warming up until two runs agree,
each in its own process so peak RSS is the program's own.

`--isa avx2` compares the AVX2 tiers: PocketLM under POCKETLM_ISA=avx2 against a second cached venv whose llama.cpp
is built for AVX2 + FMA + F16C only (GGML_NATIVE=OFF, no AVX-512, no AMX), as a laptop without AVX-512 runs it.

    python3 weights-tools/bench_peer.py --model ~/.cache/pocketlm/SmolLM2-135M-Instruct.Q4_1.gguf --threads 2
    python3 weights-tools/bench_peer.py --model ~/.cache/pocketlm/SmolLM2-135M-Instruct.Q4_1.gguf --isa avx2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cache_dir() -> Path:
    # Not common.cache_dir: this file also runs inside the llama-cpp venv, which has no gguf package.
    path = Path(os.environ.get("POCKETLM_CACHE") or Path.home() / ".cache" / "pocketlm")
    path.mkdir(parents=True, exist_ok=True)
    return path

LLAMA_CPP_VERSION = "0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
REPO = Path(__file__).resolve().parent.parent


# llama.cpp's CMake options per ISA tier: "native" is this CPU's best (AMX off), "avx2" an AVX2-only laptop build.
PEER_BUILDS = {
    "native": f"-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='{NO_AMX}' -DCMAKE_CXX_FLAGS='{NO_AMX}'",
    "avx2": ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
             "-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF "
             "-DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"),
}


def venv_dir(isa: str = "native") -> Path:
    return cache_dir() / ("llama-cpp-venv" if isa == "native" else f"llama-cpp-venv-{isa}")


def ensure_llama_cpp(isa: str = "native") -> Path:
    """Returns the venv's python, building llama-cpp-python into it first if needed (~6 minutes on 2 cores)."""
    venv = venv_dir(isa)
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '{LLAMA_CPP_VERSION}')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"building llama-cpp-python {LLAMA_CPP_VERSION} into {venv} (about 6 minutes)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = PEER_BUILDS[isa]
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", "numpy",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}"], check=True, env=env)
    return python


def prompt_tokens(count: int, vocab: int, seed: int = 1) -> list[int]:
    """Same pseudo-random ids as PocketLM's Benchmark.promptTokens (SplitMix64), so both see the same prompt."""
    mask = (1 << 64) - 1
    state = seed
    low = min(1000, vocab // 2)
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out.append(low + z % (vocab - low))
    return out


def cpu_name() -> str:
    """lscpu's model name: figures are only comparable on the same CPU, and it differs between sessions."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def figures(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def peer_worker(args) -> None:
    """Runs inside the llama-cpp-python venv: measures llama.cpp and prints JSON."""
    import numpy as np
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=args.model, n_ctx=args.prompt_tokens + args.gen_tokens + 8, n_batch=max(512, args.prompt_tokens),
                n_ubatch=max(512, args.prompt_tokens), n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    load_ms = (time.perf_counter() - t0) * 1000
    prompt = prompt_tokens(args.prompt_tokens, llm.n_vocab())

    def once():
        llm.reset()
        a = time.perf_counter()
        llm.eval(prompt)
        b = time.perf_counter()
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        c = time.perf_counter()
        for _ in range(args.gen_tokens):
            llm.eval([nxt])
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        d = time.perf_counter()
        return len(prompt) / (b - a), args.gen_tokens / (d - c)

    prev, warm = None, 0
    while warm < 6:
        _, dec = once()
        warm += 1
        if prev is not None and abs(dec - prev) <= 0.1 * max(dec, prev):
            break
        prev = dec
    pp, tg = [], []
    for _ in range(args.repetitions):
        p, d = once()
        pp.append(p)
        tg.append(d)
    print(json.dumps({"prefill": figures(pp), "decode": figures(tg), "load_ms": load_ms, "warmup_runs": warm,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def merge(runs: list[dict]) -> dict:
    """One report from several rounds: speeds as median/min/max over all samples, RSS as the max, load the median."""
    out = dict(runs[0])
    for key in ("prefill", "decode"):
        out[key] = figures([x for r in runs for x in r[key]["samples"]])
    out["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    out["load_ms"] = statistics.median(r["load_ms"] for r in runs)
    out["rounds"] = len(runs)
    return out


def run_pocketlm(args, quick: bool = False, cache_root: str | None = None) -> dict:
    """One `pocketlm bench` process. `quick`: one token each way, once (only its load matters); `cache_root`: the
    POCKETLM_CACHE it runs with (an empty one makes the load repack, as a file's first load does)."""
    binary = Path(args.pocketlm)
    if not binary.exists():
        subprocess.run(["swift", "build", "-c", "release", "--product", "pocketlm"], cwd=REPO, check=True)
    counts = ("1", "1", "1") if quick else (str(args.prompt_tokens), str(args.gen_tokens), str(args.repetitions))
    cmd = [str(binary), "bench", "--model", args.model, "--threads", str(args.threads), "--prompt-tokens",
           counts[0], "--gen-tokens", counts[1], "--repetitions", counts[2], "--json"]
    env = dict(os.environ)
    if args.isa != "native":
        env["POCKETLM_ISA"] = args.isa
    if cache_root is not None:
        env["POCKETLM_CACHE"] = cache_root
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def run_peer(args) -> dict:
    python = ensure_llama_cpp(args.isa)
    cmd = [str(python), __file__, "--peer-worker", "--model", args.model, "--threads", str(args.threads),
           "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
           "--repetitions", str(args.repetitions)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repetitions", type=int, default=5, help="measured runs per round and program")
    ap.add_argument("--rounds", type=int, default=3, help="rounds in which the two programs take turns")
    ap.add_argument("--first-loads", type=int, default=2,
                    help="PocketLM first loads (empty packed cache) measured per round, beside that round's runs")
    ap.add_argument("--pocketlm", default=str(REPO / ".build/release/pocketlm"))
    ap.add_argument("--isa", choices=sorted(PEER_BUILDS), default="native",
                    help="native: both at this CPU's best; avx2: PocketLM's AVX2 tier against llama.cpp built for AVX2")
    ap.add_argument("--build-peer", action="store_true", help="only build (or find) the peer's venv for --isa")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_peer:
        print(ensure_llama_cpp(args.isa))
        return
    if not args.model or not Path(args.model).is_file():
        ap.error(f"model file not found: {args.model}")
    if args.peer_worker:
        peer_worker(args)
        return
    # The machine's speed drifts by up to 2x from minute to minute, so the two programs take turns: each round
    # runs both (the order alternating), and the figures are medians over every round's samples.
    # Load: PocketLM repacks a file's quantized matrices on its first load and keeps them in a cache file
    # ($POCKETLM_CACHE/packed) that later loads map. One load makes sure the real cache exists, so every timed
    # round's load maps it (as llama.cpp's maps a file the page cache holds), and the report says whether they all
    # did. The first load (repack + writing the cache) is measured `--first-loads` times per round, each with an empty
    # cache directory, right beside that round's runs: one sample swung by 2x with the machine's load.
    run_pocketlm(args, quick=True)
    ours_runs, peer_runs, first_loads = [], [], []

    def ours():
        for _ in range(args.first_loads):
            with tempfile.TemporaryDirectory(prefix="pocketlm-first-load-") as empty:
                first_loads.append(run_pocketlm(args, quick=True, cache_root=empty)["load_ms"])
        ours_runs.append(run_pocketlm(args))

    for r in range(args.rounds):
        if r % 2 == 0:
            ours()
            peer_runs.append(run_peer(args))
        else:
            peer_runs.append(run_peer(args))
            ours()
    first_load_ms = statistics.median(first_loads)
    ours, peer = merge(ours_runs), merge(peer_runs)
    # The bound decode is up against: the weight bytes a token reads over the memory bandwidth that PocketLM's bench
    # measured with the same threads right after each round's runs.
    read = statistics.median(r["memory_read_bytes_per_second"] for r in ours_runs)
    per_token = ours["weight_bytes_per_token"]
    bound = read / per_token
    result = {
        "model": args.model, "isa": args.isa, "pocketlm_isa": ours.get("isa"), "threads": args.threads,
        "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
        "cpu": cpu_name(),
        "memory_bound": {"weight_bytes_per_token": per_token, "read_bytes_per_second": read, "tokens_per_second": bound,
                         "share_pocketlm": ours["decode"]["median"] / bound,
                         "share_llama_cpp": peer["decode"]["median"] / bound},
        "pocketlm": ours, "llama_cpp": peer,
        "ratio": {"prefill": ours["prefill"]["median"] / peer["prefill"]["median"],
                  "decode": ours["decode"]["median"] / peer["decode"]["median"],
                  "peak_rss": ours["peak_rss_bytes"] / peer["peak_rss_bytes"],
                  "load": ours["load_ms"] / peer["load_ms"]},
        "pocketlm_first_load_ms": first_load_ms, "pocketlm_first_load_samples_ms": first_loads,
        "pocketlm_loads_from_packed_cache": all(r.get("packed_from_cache", False) for r in ours_runs),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    name = Path(args.model).name
    print(f"{name} on {result['cpu']} (PocketLM tier {result['pocketlm_isa']}, llama.cpp build {args.isa}), {args.threads} threads, pp{args.prompt_tokens} / tg{args.gen_tokens}, "
          f"medians of {args.repetitions} runs x {args.rounds} alternating rounds")
    print(f"{'':22}{'PocketLM':>12}{'llama.cpp':>12}{'ratio':>8}")
    for key, label in (("prefill", f"prefill tok/s"), ("decode", f"decode tok/s")):
        print(f"{label:22}{ours[key]['median']:12.1f}{peer[key]['median']:12.1f}{result['ratio'][key]:8.2f}")
    print(f"{'peak RSS MiB':22}{ours['peak_rss_bytes'] / 2**20:12.1f}{peer['peak_rss_bytes'] / 2**20:12.1f}{result['ratio']['peak_rss']:8.2f}")
    print(f"{'load ms':22}{ours['load_ms']:12.1f}{peer['load_ms']:12.1f}{result['ratio']['load']:8.2f}")
    cached = "all mapped the packed cache" if result["pocketlm_loads_from_packed_cache"] else "NOT all from the packed cache"
    print(f"{'first load ms':22}{first_load_ms:12.1f}{peer['load_ms']:12.1f}{first_load_ms / peer['load_ms']:8.2f}"
          f"  (PocketLM repacking into an empty cache, median of {len(first_loads)}: "
          f"{min(first_loads):.0f}-{max(first_loads):.0f}; the rounds' loads: {cached})")
    bound = result["memory_bound"]
    print(f"memory bound: {bound['weight_bytes_per_token'] / 1e6:.1f} MB of weights per token / "
          f"{bound['read_bytes_per_second'] / 1e9:.1f} GB/s ({args.threads}-thread read, median of the rounds) = "
          f"{bound['tokens_per_second']:.1f} tok/s; decode at {bound['share_pocketlm'] * 100:.0f}% of it "
          f"(llama.cpp {bound['share_llama_cpp'] * 100:.0f}%)")


if __name__ == "__main__":
    main()
