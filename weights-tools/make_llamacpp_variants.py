#!/usr/bin/env python3
"""Model files for features we have no real model of, made with (or checked against) llama.cpp itself.

Why: PocketLM must compute what llama.cpp computes, also for K-quant mixtures, Llama-3 / linear / YaRN RoPE
scaling and the qwen2 architecture. No such real model is reachable (only PyPI is), so we derive them from
the real SmolLM2 F32 file (or write random weights), run them through llama.cpp (llama-cpp-python 0.3.36,
the peer venv of bench_peer.ensure_llama_cpp) and commit llama.cpp's outputs as test data in
weights-tools/reference/llamacpp-variants.json. The model files go to the cache ($POCKETLM_CACHE or
~/.cache/pocketlm), never into git.

Files (all derived deterministically; each is checked against the sha256 recorded in the JSON before it
gets its final name, so the committed outputs always belong to the file on disk):

  SmolLM2-135M-Instruct.Q4_K_M.gguf        llama_model_quantize(F32, ftype 15 = LLAMA_FTYPE_MOSTLY_Q4_K_M),
                                           llama.cpp's own quantizer, in the venv. A mixture: most 576-wide rows
                                           are not a multiple of 256, so llama.cpp falls back to Q5_0 for them
                                           (types recorded under files[...].tensor_types).
  SmolLM2-135M-Instruct.rope-llama3.F32.gguf   F32 + `rope_freqs.weight` (Llama 3.1/3.2 frequency factors)
  SmolLM2-135M-Instruct.rope-linear4.F32.gguf  F32 + rope.scaling.type linear, factor 4
  SmolLM2-135M-Instruct.rope-yarn4.F32.gguf    F32 + rope.scaling.type yarn, factor 4, original context 8192
  qwen2-random-8l.F32.gguf                 random-weight qwen2 (make_model.py): SmolLM2's shape with 8 blocks,
                                           Q/K/V biases N(0, 0.5^2), token_embd N(0, 0.5^2), untied output.weight
                                           N(0, 0.5^2), SmolLM2's vocab with pre `qwen2`, RoPE base 1e6, eps 1e-6

All RoPE variants keep general.architecture = llama and every tensor of SmolLM2-135M-Instruct.F32.gguf
byte for byte; only the keys/tensor below are added (the linear/yarn files also say context_length 32768).

--------------------------------------------------------------------------------------------------------------
How llama.cpp (this version: src/llama-model.cpp load_hparams, src/llama-context.cpp, ggml-cpu ops.cpp rope)
reads and computes RoPE, for the engineer implementing it in Swift
--------------------------------------------------------------------------------------------------------------
Keys (ARCH = general.architecture, e.g. llama), all optional:
  ARCH.rope.freq_base                       FLOAT32  base (default 10000)
  ARCH.rope.dimension_count                 UINT32   n_rot (llama: must equal head_dim)
  ARCH.rope.scaling.type                    STRING   none | linear | yarn | longrope (missing -> "linear",
                                                     which with no factor is plain RoPE); anything else: load error
  ARCH.rope.scaling.factor                  FLOAT32  s; freq_scale = 1/s (missing or 0 -> 1). Fallback key when
                                                     missing: ARCH.rope.scale_linear (old name, same meaning)
  ARCH.rope.scaling.original_context_length UINT32   n_ctx_orig for YaRN (default: ARCH.context_length)
  ARCH.rope.scaling.attn_factor             FLOAT32  rope_attn_factor, multiplies the YaRN magnitude (default 1)
  ARCH.rope.scaling.finetuned               BOOL     informational only
  type "none" forces freq_scale = 1 whatever the factor says.
  NOT read for llama/qwen2: rope.scaling.yarn_ext_factor / yarn_attn_factor / yarn_beta_fast / yarn_beta_slow
  (only grok, mistral3 read them) and yarn_log_multiplier (deepseek2 family). For llama they come from the
  context parameters, which llama-cpp-python and llama-cli leave at: ext_factor = 1 if type is yarn else 0,
  beta_fast = 32, beta_slow = 1.
  Tensor `rope_freqs.weight` (F32, n_rot/2 values ff[i]) for llama when the type is not longrope; shared by
  all layers. (qwen2's graph passes no factors: it ignores rope_freqs.)

Angles (ggml_rope_cache_init / rope_yarn), for pair i = 0 ..< n_rot/2 at position p:
  theta_extrap = p * base^(-2i/n_rot) / ff[i]        (ff[i] = 1 without rope_freqs; llama.cpp forms
                                                      base^(-2i/n_rot) as a float32 running product
                                                      theta *= powf(base, -2/n_rot), starting from theta = p)
  theta_interp = freq_scale * theta_extrap
  ext_factor == 0 (none, linear, llama3):  theta = theta_interp,  mscale = 1
  ext_factor != 0 (yarn):
      corr(b)   = n_rot * ln(n_ctx_orig / (2*pi*b)) / (2 * ln(base))
      low       = max(0, floor(corr(beta_fast=32))),  high = min(n_rot - 1, ceil(corr(beta_slow=1)))
      ramp(i)   = 1 - clamp((i - low) / max(0.001, high - low), 0, 1)       (i = pair index)
      theta     = theta_interp * (1 - ramp(i)) + theta_extrap * ramp(i)     (fast pairs keep their angle,
                                                                           slow pairs are interpolated)
      mscale    = rope_attn_factor * (1 + 0.1 * ln(1/freq_scale))
      (llama-context.cpp computes yarn_attn_factor = (1 + 0.1 ln s) / (1 + 0.1 ln s) * rope_attn_factor and
      ggml multiplies by (1 + 0.1 ln s) again: the net magnitude is the mscale above, applied to cos AND sin,
      so to both Q and K: attention logits grow by mscale^2.)
  x'[a] = x[a] cos(theta) - x[b] sin(theta),  x'[b] = x[a] sin(theta) + x[b] cos(theta), both times mscale,
  with (a, b) = (2i, 2i+1) for llama (LLAMA_ROPE_TYPE_NORM) and (i, i + n_rot/2) for qwen2 (NEOX).
  For SmolLM2 (n_rot 64, base 100000) with n_ctx_orig 8192: corr(32) = 10.30 -> low 10, corr(1) = 19.93 ->
  high 20; factor 4 gives mscale 1.1386.

Llama 3 frequency factors (convert_hf_to_gguf.py, LlamaModel, rope_type "llama3"), written as rope_freqs:
  freq_i = base^(-2i/head_dim), wavelen_i = 2*pi / freq_i
  low_wavelen = original_max_position_embeddings / low_freq_factor, high_wavelen = omp / high_freq_factor
  ff[i] = 1                                    if wavelen_i < high_wavelen
        = factor                               if wavelen_i > low_wavelen
        = 1 / ((1 - smooth)/factor + smooth)   otherwise, smooth = (omp / wavelen_i - low_ff) / (high_ff - low_ff)
  Here: Llama 3.2's factor 32, low 1, high 4, omp 8192 on SmolLM2's head_dim 64 and base 100000: pairs 0-16
  keep 1, 17-19 are smoothed, 20-31 are divided by 32. No rope.scaling.* key is written (like real Llama 3 files).

Usage:
  make_llamacpp_variants.py [--only NAME ...] [--force]      make the files (what `make variants` runs)
  make_llamacpp_variants.py --record                          also run llama.cpp and rewrite the reference JSON
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf

TOOLS_DIR = Path(__file__).resolve().parent
PEER = TOOLS_DIR / "llamacpp_peer.py"
REFERENCE_JSON = common.REFERENCE_DIR / "llamacpp-variants.json"

Q4_K_M_NAME = "SmolLM2-135M-Instruct.Q4_K_M.gguf"
LLAMA3_NAME = "SmolLM2-135M-Instruct.rope-llama3.F32.gguf"
LINEAR_NAME = "SmolLM2-135M-Instruct.rope-linear4.F32.gguf"
YARN_NAME = "SmolLM2-135M-Instruct.rope-yarn4.F32.gguf"
QWEN2_NAME = "qwen2-random-8l.F32.gguf"
#: --only names -> file names, in build order.
VARIANTS = {"q4_k_m": Q4_K_M_NAME, "rope-llama3": LLAMA3_NAME, "rope-linear": LINEAR_NAME,
            "rope-yarn": YARN_NAME, "qwen2": QWEN2_NAME}

LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
#: Llama 3.2's rope_scaling (config.json: rope_type llama3).
LLAMA3_ROPE = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
SCALE_FACTOR = 4.0
YARN_ORIG_CTX = 8192
SCALED_CONTEXT = 32768
#: llama.cpp's YaRN defaults for llama (context parameters; not read from the file).
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0

QWEN2_SEED = 2024
QWEN2_LAYERS = 8
#: Untied output.weight std: final-norm outputs have unit RMS over 576 dims, so logits get std ~0.5*24 = 12
#: (N(0, 0.02^2) gives ~0.5 and top-1/top-2 gaps of a few hundredths). token_embd N(0, 0.5^2) keeps the current
#: token visible next to the blocks' outputs. Chosen by measuring llama.cpp's greedy margins: with (0.02, 0.15)
#: the model said " humorous" after every prompt with median margins ~0.2; with (0.5, 0.4) the margins' lower
#: quartile was 0.5-1.0 and the greedy ids varied.
QWEN2_OUTPUT_STD = 0.5
QWEN2_EMBED_STD = 0.5

# Recording: the run parameters written into the JSON.
RUN = {"n_ctx": 1024, "n_batch": 512, "threads": 2, "greedy": 24}
PPL_TEXT = "/usr/share/common-licenses/GPL-2"
PPL_N_CTX = 512
LONG_SOURCE = "/usr/share/common-licenses/GPL-3"
LONG_CHARS = 3300


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# RoPE math (numpy mirrors of what llama.cpp does; the tests check the files against these).
# --------------------------------------------------------------------------------------------


def llama3_rope_factors(head_dim: int, base: float, factor: float, low_freq_factor: float, high_freq_factor: float,
                        original_max_position_embeddings: int) -> np.ndarray:
    """Llama 3.1/3.2 rope_freqs values, as convert_hf_to_gguf.py computes them (float32 freqs, float32 result)."""
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    omp = original_max_position_embeddings
    low_wavelen, high_wavelen = omp / low_freq_factor, omp / high_freq_factor
    out = []
    for freq in freqs.astype(np.float64):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (omp / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def yarn_corr_dims(n_rot: int, n_ctx_orig: int, base: float, beta_fast: float = YARN_BETA_FAST,
                   beta_slow: float = YARN_BETA_SLOW) -> tuple[float, float]:
    """ggml_rope_yarn_corr_dims: the pair range over which YaRN blends extrapolation into interpolation."""
    def corr(b: float) -> float:
        return n_rot * math.log(n_ctx_orig / (b * 2 * math.pi)) / (2 * math.log(base))
    return max(0.0, math.floor(corr(beta_fast))), min(n_rot - 1.0, math.ceil(corr(beta_slow)))


def rope_angles(pos: int, n_rot: int, base: float, *, freq_factors: np.ndarray | None = None, freq_scale: float = 1.0,
                ext_factor: float = 0.0, n_ctx_orig: int = 0, attn_factor: float = 1.0) -> tuple[np.ndarray, float]:
    """(theta per pair, mscale) exactly as ggml's rope_yarn (float64 here; llama.cpp uses float32)."""
    i = np.arange(n_rot // 2)
    theta_extrap = pos * base ** (-2.0 * i / n_rot)
    if freq_factors is not None:
        theta_extrap = theta_extrap / freq_factors.astype(np.float64)
    theta_interp = freq_scale * theta_extrap
    mscale = attn_factor
    if ext_factor == 0:
        return theta_interp, mscale
    low, high = yarn_corr_dims(n_rot, n_ctx_orig, base)
    ramp = (1 - np.clip((i - low) / max(0.001, high - low), 0, 1)) * ext_factor
    mscale *= 1 + 0.1 * math.log(1 / freq_scale)
    return theta_interp * (1 - ramp) + theta_extrap * ramp, mscale


# --------------------------------------------------------------------------------------------
# Building the files.
# --------------------------------------------------------------------------------------------


def rope_overrides(kind: str, head_dim: int = 64, base: float = 100000.0) -> tuple[dict[str, tuple[Any, VT]], np.ndarray | None]:
    """(metadata to add/override, rope_freqs values or None) for one RoPE variant (SmolLM2: head_dim 64, base 1e5)."""
    if kind == "rope-llama3":
        return {}, llama3_rope_factors(head_dim, base, **LLAMA3_ROPE)
    if kind == "rope-linear":
        return {"llama.context_length": (SCALED_CONTEXT, VT.UINT32),
                "llama.rope.scaling.type": ("linear", VT.STRING),
                "llama.rope.scaling.factor": (SCALE_FACTOR, VT.FLOAT32)}, None
    if kind == "rope-yarn":
        return {"llama.context_length": (SCALED_CONTEXT, VT.UINT32),
                "llama.rope.scaling.type": ("yarn", VT.STRING),
                "llama.rope.scaling.factor": (SCALE_FACTOR, VT.FLOAT32),
                "llama.rope.scaling.original_context_length": (YARN_ORIG_CTX, VT.UINT32)}, None
    raise ToolError(f"unknown RoPE variant {kind!r}")


def write_rope_variant(src: Path, out: Path, kind: str) -> None:
    """SmolLM2 F32 with the RoPE keys / rope_freqs tensor of `kind`; every source tensor copied unchanged."""
    reader = common.open_gguf(src)
    if common.field_value(reader, "general.architecture") != "llama":
        raise ToolError(f"{src}: RoPE variants are made from a llama file")
    overrides, factors = rope_overrides(kind, int(common.require_value(reader, "llama.rope.dimension_count", src)),
                                        float(common.require_value(reader, "llama.rope.freq_base", src)))
    writer = gguf.GGUFWriter(out, "llama")
    common.copy_metadata(reader, writer, overrides=overrides)
    if factors is not None:  # first, as convert_hf_to_gguf.py emits it
        writer.add_tensor("rope_freqs.weight", factors)
    for t in reader.tensors:
        if t.tensor_type != QT.F32:
            raise ToolError(f"{src}: tensor {t.name} is {t.tensor_type.name}, expected the F32 file")
        writer.add_tensor(t.name, np.asarray(t.data))
    common.finish_writer(writer)


def write_q4_k_m(src: Path, out: Path) -> None:
    peer(["quantize", str(src), str(out), "--ftype", str(LLAMA_FTYPE_MOSTLY_Q4_K_M), "--threads", "2"])


def write_qwen2(vocab_src: Path, out: Path) -> None:
    import make_model

    spec = make_model.ModelSpec(
        name="qwen2-random-8l", model_type="qwen2", layers=QWEN2_LAYERS, dim=576, heads=9, kv_heads=3, head_dim=64,
        ffn=1536, vocab=49152, rope_theta=1_000_000.0, eps=1e-6, context=32768, tied=False, strategy="none",
        repeats=1, arch="qwen2")
    make_model.write_model(spec, out, "f32", QWEN2_SEED, vocab_from=str(vocab_src), progress=False,
                           output_std=QWEN2_OUTPUT_STD, embed_std=QWEN2_EMBED_STD, tokenizer_overrides={"tokenizer.ggml.pre": "qwen2"})


def make_model_bias_std() -> float:
    import make_model
    return make_model.BIAS_STD


def pinned() -> dict[str, dict]:
    """{file name: {sha256, size, ...}} from the committed reference JSON ({} before the first --record)."""
    if not REFERENCE_JSON.is_file():
        return {}
    return json.loads(REFERENCE_JSON.read_text()).get("files", {})


def source_f32(check_pin: bool = True) -> Path:
    """The SmolLM2 F32 file everything derives from (fetched and made if needed), checked against its pin."""
    import fetch
    import variants

    q41 = fetch.fetch()
    f32 = variants.make_variant(q41, q41.parent / common.SMOLLM2_F32_NAME, "f32")
    want = pinned().get(common.SMOLLM2_F32_NAME, {}).get("sha256") if check_pin else None
    if want and common.sha256_file(f32) != want:
        raise ToolError(f"{f32} does not have the recorded sha256 {want}: remove it and run variants.py again")
    return f32


def make(name: str, cache: Path, f32: Path, force: bool = False, check_pin: bool = True) -> Path:
    """Build one variant into the cache (atomically); a file whose sha256 differs from the pin never lands."""
    kind = next(k for k, v in VARIANTS.items() if v == name)
    out = cache / name
    want = pinned().get(name, {}).get("sha256") if check_pin else None
    if out.exists() and not force:
        have = common.sha256_file(out)
        if want is None or have == want:
            return out
        log(f"{out} has sha256 {have}, recorded {want}: making it again")
    with common.atomic_output(out) as tmp:
        if kind == "q4_k_m":
            write_q4_k_m(f32, tmp)
        elif kind == "qwen2":
            import fetch
            write_qwen2(fetch.fetch(), tmp)
        else:
            write_rope_variant(f32, tmp, kind)
        have = common.sha256_file(tmp)
        if want is not None and have != want:
            raise ToolError(f"{name}: made a file with sha256 {have}, but the reference data was recorded on {want}; "
                            "a tool version changed (re-record with --record if that is intended)")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {have})")
    return out


# --------------------------------------------------------------------------------------------
# llama.cpp (the peer venv).
# --------------------------------------------------------------------------------------------


def peer(args: list[str]) -> dict:
    import bench_peer

    python = bench_peer.ensure_llama_cpp()
    proc = subprocess.run([str(python), str(PEER), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise ToolError(f"llama.cpp peer {args[0]} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_record(files: dict[str, Path], prompts: list[dict], run: dict) -> dict:
    """llama.cpp's records (llamacpp_peer.py record) for every file × prompt under the run parameters `run`."""
    with tempfile.TemporaryDirectory(prefix="pocketlm-record-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"models": [{"name": n, "path": str(p)} for n, p in files.items()],
                                    "prompts": [{"name": p["name"], "text": p["text"]} for p in prompts], "run": run}))
        return peer(["record", str(spec)])


def prompts() -> list[dict]:
    long_text = Path(LONG_SOURCE).read_text(encoding="utf-8")[:LONG_CHARS]
    return [
        {"name": "capital", "text": "The capital of France is"},
        {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
        {"name": "story", "text": "Once upon a time, in a small village by the sea, there lived"},
        {"name": "long", "text": long_text, "source": f"{LONG_SOURCE}[:{LONG_CHARS}]"},
    ]


def record(cache: Path, f32: Path) -> dict:
    files = {common.SMOLLM2_F32_NAME: f32, **{n: cache / n for n in VARIANTS.values()}}
    ps = prompts()
    log("running llama.cpp on every file ...")
    got = peer_record(files, ps, RUN)
    log(f"llama-perplexity on {PPL_TEXT} ...")
    ppl = peer(["perplexity", str(cache / Q4_K_M_NAME), PPL_TEXT, "--n-ctx", str(PPL_N_CTX), "--threads", "2"])
    ppl.update({"model_file": Q4_K_M_NAME, "text": PPL_TEXT, "n_batch": PPL_N_CTX, "threads": 2})

    records = got["records"]
    plain = {r["prompt_name"]: np.array(r["_last_logits"]) for r in records if r["model_file"] == common.SMOLLM2_F32_NAME}
    vs_plain = []
    for r in records:
        logits = np.array(r.pop("_last_logits"))
        if r["model_file"] in (LLAMA3_NAME, LINEAR_NAME, YARN_NAME, Q4_K_M_NAME):
            base = plain[r["prompt_name"]]
            vs_plain.append({"model_file": r["model_file"], "prompt_name": r["prompt_name"], "n_tokens": r["n_tokens"],
                             "max_abs_last_logit_diff": float(np.max(np.abs(logits - base))),
                             "same_top1": bool(np.argmax(logits) == np.argmax(base))})
    for r in records:
        for p in ps:
            if p["name"] == r["prompt_name"] and "source" in p:
                r["prompt_source"] = p["source"]

    import bench_peer

    low, high = yarn_corr_dims(64, YARN_ORIG_CTX, 100000.0)
    return {
        "schema": {
            "files": "every model file: sha256 and size (checked by `make variants`), tensor types, how it was made, "
                     "the RoPE keys it adds to SmolLM2-135M-Instruct.F32.gguf",
            "records": "per model file and prompt: tokens = Llama.tokenize(prompt, add_bos=True, special=False) "
                       "(no BOS for this vocab: add_bos_token false); last_pos_top5_ids/logits after the whole prompt "
                       "(batches of n_batch); greedy_ids: argmax fed back one token at a time (EOS not stopped on), "
                       "greedy_top1_top2_margin and greedy_chosen_logits per step",
            "vs_plain_f32": "max |logit difference| at the last prompt position between a variant and the plain "
                             "F32 file, same prompt: shows where the scaling changes the model",
            "perplexity": "llama-perplexity's definition (see llamacpp_peer.perplexity): non-overlapping n_ctx windows, "
                          "no BOS (vocab add_bos false), the second half of each window scored",
        },
        "runtime": {
            "llama_cpp_python": bench_peer.LLAMA_CPP_VERSION,
            "context": {"n_ctx": RUN["n_ctx"], "n_batch": RUN["n_batch"], "n_ubatch": RUN["n_batch"],
                        "n_threads": RUN["threads"], "flash_attn": False, "kv_cache_type": "f16 (default)",
                        "logits_all": True, "rope/yarn context params": "llama-cpp-python defaults (from the model; "
                        "yarn ext_factor 1 for yarn files, beta_fast 32, beta_slow 1)"},
            "system_info": got["system_info"],
            "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "files": {name: describe_file(name, path) for name, path in files.items()},
        "rope": {
            "llama3": {**LLAMA3_ROPE, "head_dim": 64, "freq_base": 100000.0,
                       "rope_freqs": [float(x) for x in llama3_rope_factors(64, 100000.0, **LLAMA3_ROPE)]},
            "linear": {"factor": SCALE_FACTOR, "freq_scale": 1 / SCALE_FACTOR},
            "yarn": {"factor": SCALE_FACTOR, "original_context_length": YARN_ORIG_CTX, "ext_factor": 1.0,
                     "beta_fast": YARN_BETA_FAST, "beta_slow": YARN_BETA_SLOW, "corr_dims": [low, high],
                     "mscale": 1 + 0.1 * math.log(SCALE_FACTOR)},
        },
        "records": records,
        "vs_plain_f32": vs_plain,
        "perplexity": ppl,
    }


FILE_NOTES = {
    common.SMOLLM2_F32_NAME: "variants.py: every tensor of the Q4_1 file dequantized (the source of the others)",
    Q4_K_M_NAME: "llama_cpp.llama_model_quantize(F32, ftype=15 LLAMA_FTYPE_MOSTLY_Q4_K_M, nthread=2), defaults otherwise",
    LLAMA3_NAME: "F32 + rope_freqs.weight (Llama 3.2 rope scaling, see rope.llama3)",
    LINEAR_NAME: "F32 + llama.rope.scaling.type=linear, factor 4, context_length 32768",
    YARN_NAME: "F32 + llama.rope.scaling.type=yarn, factor 4, original_context_length 8192, context_length 32768",
    QWEN2_NAME: f"make_model.write_model: qwen2, SmolLM2's shape with {QWEN2_LAYERS} blocks, seed {QWEN2_SEED}, F32, "
                f"N(0,0.02^2) matrices, N(0,{make_model_bias_std()}^2) Q/K/V biases, untied output.weight "
                f"N(0,{QWEN2_OUTPUT_STD}^2), token_embd N(0,{QWEN2_EMBED_STD}^2), rope base 1e6, eps 1e-6, SmolLM2's tokenizer with pre qwen2",
}


def describe_file(name: str, path: Path) -> dict:
    reader = common.open_gguf(path)
    keys = {k: common.field_value(reader, k) for k in reader.fields
            if ".rope." in k or k.endswith(".context_length") or k in ("general.architecture", "tokenizer.ggml.pre")}
    return {"sha256": common.sha256_file(path), "size": path.stat().st_size, "how": FILE_NOTES[name],
            "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
            "n_tensors": len(reader.tensors), "metadata": keys}


def write_reference(doc: dict) -> None:
    with common.atomic_output(REFERENCE_JSON) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {REFERENCE_JSON} ({REFERENCE_JSON.stat().st_size} bytes)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make the llama.cpp-checked model variants (Q4_K_M, Llama-3 / linear / "
                                                 "YaRN RoPE, random qwen2) in the cache; --record re-runs llama.cpp "
                                                 "and rewrites weights-tools/reference/llamacpp-variants.json.")
    parser.add_argument("--only", choices=list(VARIANTS), action="append", help="make only this variant (repeatable)")
    parser.add_argument("--force", action="store_true", help="make the files again even if cached and verified")
    parser.add_argument("--record", action="store_true", help="run llama.cpp on all files and rewrite the reference JSON")
    parser.add_argument("--out-dir", type=Path, default=None, help="cache directory (default $POCKETLM_CACHE)")
    args = parser.parse_args(argv)
    cache = args.out_dir or common.cache_dir()
    f32 = source_f32(check_pin=not args.record)
    names = [VARIANTS[k] for k in (args.only or VARIANTS)]
    if args.record:  # every file made afresh by the current tools, then recorded: outputs and pins always agree
        names = list(VARIANTS.values())
    for name in names:
        print(make(name, cache, f32, force=args.force or args.record, check_pin=not args.record))
    if args.record:
        write_reference(record(cache, f32))
    return 0


if __name__ == "__main__":
    common.run_cli(main)
