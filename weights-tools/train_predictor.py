#!/usr/bin/env python3
"""Fit the per-layer low-rank FFN activation predictors the Swift runtime uses to page FFN neurons.

Why: the runtime keeps part of each layer's FFN on storage and, per token, reads only the neurons it
expects to matter (LLM in a flash, /work/shared/DESIGN.md §2). It decides with a cheap per-layer
predictor that reads the FFN input x (after ffn_norm) and scores every neuron:

    score = B · (A · x) + bias          A: rank × dim (F16), B: ffn × rank (F16), bias: ffn (F32)

and loads the top-scoring neurons. The quantity to rank is |h|, h = silu(gate·x) ⊙ (up·x): a neuron
contributes h_i · down[:, i] to the output, so the neurons with the largest |h| are the ones to keep.

How:
  1. Calibration tokens (predictor_calibration.py): the text files (default: every regular file in /usr/share/common-licenses
     except GPL-3, which is held out for evaluation; symlinks are skipped, they only duplicate files)
     are tokenized one file at a time with `pocketlm tokenize --json --text=...` (the runtime's own
     tokenizer) and the ids concatenated, or read from --tokens-file. The first --tokens ids are used.
  2. Capture: reference.py's float64 forward (reference.hidden_states with an ffn_hook) runs over
     consecutive windows of up to --window (512) positions, each a fresh sequence starting at position
     0, and records per layer x and |h| (stored as float32; mass is summed in float64). Float64 is fast
     enough: 11-14 s per 512-token window of SmolLM2-135M on 2 idle cores, about half of it in
     reference.py's (non-BLAS) attention einsums, and a float32 copy of the weights measured 13.8 s
     against 14.2 s, so the capture is exactly the reference model's.
  3. Fit, per layer, on the first 90% of the tokens: reduced-rank ridge regression of the target on x,
     with an intercept. Ridge solution W = (Xcᵀ Xc + λ I)⁻¹ Xcᵀ Yc, λ = --ridge · trace(Xcᵀ Xc) / dim
     (relative, so the same --ridge suits any activation scale); then the standard RRR truncation: the
     fitted values Ŷ = Xc W are projected on their top-`rank` right singular vectors V_r (computed from
     the small matrix Σ^½ Eᵀ W, where Xcᵀ Xc = E Σ Eᵀ, so Ŷ is never formed), giving
     B = V_r, A = V_rᵀ Wᵀ, bias = mean(Y) − B A mean(X). A and B are rescaled by reciprocal constants so
     their largest entries match (better use of F16), then rounded to F16.
     Two targets are fitted: |h| ("abs") and log(|h| + ε) ("log_abs", ε = 1e-3 · mean |h| of the layer).
     The one with the better mean held-out recall (average of recall@50% and recall@80% over layers)
     is written; both are reported. The runtime only ranks by the score, so either target works for it.
     (On SmolLM2 the recall hardly moves with ε from 1e-5 to 1e-1 or --ridge from 1e-5 to 1e-1; more
     calibration tokens do help: 4096 -> 8192 tokens adds about +0.01 recall@50% on GPL-3.)
  4. Validate on the last 10% of the tokens, with the F16-rounded predictor the runtime will see:
     recall@k = |true top-k of |h| ∩ predicted top-k| / k per token, averaged, for k = 50% and 80% of
     ffn. Baselines: a random predictor (expected recall k/ffn) and a static one that always picks the
     neurons of largest mean |h| on the training split (what a fixed resident set achieves).
  5. mass = mean |h| per neuron over all calibration tokens (accumulated in float64), which the runtime
     uses to choose the neurons to keep resident.

Output GGUF (general.architecture = "pocketlm-predictor"), per layer N:
    blk.N.ffn_pred_a     F16  numpy (rank, dim)   ggml ne (dim, rank)
    blk.N.ffn_pred_b     F16  numpy (ffn, rank)   ggml ne (rank, ffn)
    blk.N.ffn_pred_bias  F32  (ffn,)
    blk.N.ffn_mass       F32  (ffn,)
metadata: pocketlm.predictor.rank (u32), .target ("abs" | "log_abs"), .block_count (u32),
.source_sha256 (sha256 of the model file), .calibration_tokens (u32).

CLI: train_predictor.py --model MODEL.gguf --out PRED.gguf [--rank 32] [--tokens 4096]
     [--calibration FILE ...] [--tokens-file ids.json] [--pocketlm BIN] [--ridge 1e-3]
     [--window 512] [--report-ranks 16,64] [--json]
The recall table goes to stdout (to stderr with --json, which prints one JSON object on stdout);
progress goes to stderr. Expected failures (missing model, not a GGUF, bad rank, no calibration text,
tokenizer failure) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

import common
import reference
from predictor_calibration import DEFAULT_CALIBRATION_DIR, calibration_tokens, default_calibration_files, read_tokens_file
from common import GGUFValueType as VT
from common import ToolError

import gguf

ARCH = "pocketlm-predictor"
DEFAULT_POCKETLM = Path(__file__).resolve().parent.parent / ".build" / "release" / "pocketlm"
VALIDATION_FRACTION = 0.10
RECALL_FRACTIONS = (0.5, 0.8)
LOG_EPS_REL = 1e-3
MIN_TOKENS = 20
TARGETS = ("abs", "log_abs")
EXIT_ERROR = 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Capture.
# --------------------------------------------------------------------------------------------


@dataclass
class Capture:
    x: np.ndarray      # [layers, n, dim]  float32: FFN input after ffn_norm
    abs_h: np.ndarray  # [layers, n, ffn]  float32: |silu(gate·x) ⊙ (up·x)|
    mass: np.ndarray   # [layers, ffn]     float64: mean |h| over the n tokens (accumulated in float64)


def windows(n: int, window: int) -> list[tuple[int, int]]:
    return [(s, min(s + window, n)) for s in range(0, n, window)]


def capture(model: reference.LlamaModel, ids: Sequence[int], window: int, progress: bool = True) -> Capture:
    n = len(ids)
    L, D, F = model.n_layer, model.n_embd, model.n_ff
    xs = np.empty((L, n, D), dtype=np.float32)
    hs = np.empty((L, n, F), dtype=np.float32)
    mass = np.zeros((L, F), dtype=np.float64)
    t0 = time.perf_counter()
    spans = windows(n, window)
    for w, (s, e) in enumerate(spans):
        def hook(i: int, x: np.ndarray, h: np.ndarray, s=s, e=e) -> None:
            a = np.abs(h)
            xs[i, s:e] = x
            hs[i, s:e] = a
            mass[i] += a.sum(axis=0)

        reference.hidden_states(model, ids[s:e], ffn_hook=hook)
        if progress:
            log(f"forward: window {w + 1}/{len(spans)} ({e}/{n} tokens) {time.perf_counter() - t0:.1f} s")
    return Capture(x=xs, abs_h=hs, mass=mass / n)


# --------------------------------------------------------------------------------------------
# Fitting and evaluation.
# --------------------------------------------------------------------------------------------


@dataclass
class LayerFit:
    w: np.ndarray      # [dim, ffn] ridge solution (full rank), for centred inputs
    v: np.ndarray      # [ffn, m]   right singular vectors of the fitted values, by decreasing singular value
    x_mean: np.ndarray
    y_mean: np.ndarray

    def predictor(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A float16 [rank, dim], B float16 [ffn, rank], bias float32 [ffn]) for score = B·(A·x) + bias."""
        b = self.v[:, :rank]
        a = b.T @ self.w.T
        # Balance the two factors (the product is unchanged) so F16 keeps the most relative precision.
        amax, bmax = float(np.abs(a).max()), float(np.abs(b).max())
        if amax > 0 and bmax > 0:
            c = np.sqrt(amax / bmax)
            a, b = a / c, b * c
        a16, b16 = a.astype(np.float16), b.astype(np.float16)
        # The bias absorbs the centring; computed from the rounded factors so the means line up exactly.
        bias = self.y_mean - b16.astype(np.float64) @ (a16.astype(np.float64) @ self.x_mean)
        return a16, b16, bias.astype(np.float32)


def target_values(abs_h: np.ndarray, target: str, eps: float) -> np.ndarray:
    a = abs_h.astype(np.float64)
    return a if target == "abs" else np.log(a + eps)


@dataclass
class Inputs:
    """What fit_layer needs of x [n, dim], shared by the targets: mean, centred x, Gram and its eigensystem."""
    x_mean: np.ndarray
    xc: np.ndarray
    gram: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Inputs":
        x_mean = x.mean(axis=0)
        xc = x - x_mean
        gram = xc.T @ xc
        evals, evecs = np.linalg.eigh(gram)
        return cls(x_mean, xc, gram, evals, evecs)


def fit_layer(x: np.ndarray | Inputs, y: np.ndarray, ridge: float) -> LayerFit:
    """Reduced-rank ridge regression of y [n, ffn] on x [n, dim] (both float64), with an intercept."""
    inp = x if isinstance(x, Inputs) else Inputs.of(x)
    g, evals, evecs = inp.gram, inp.evals, inp.evecs
    y_mean = y.mean(axis=0)
    dim = g.shape[0]
    lam = ridge * float(np.trace(g)) / dim
    w = np.linalg.solve(g + lam * np.eye(dim), inp.xc.T @ (y - y_mean))
    # Ŷᵀ Ŷ = Wᵀ G W = Mᵀ M with M = Σ^½ Eᵀ W [dim, ffn]: Ŷ's right singular vectors are M's. They come
    # from the small eigenproblem M Mᵀ = U S² Uᵀ as V = Mᵀ U S⁻¹ (6x faster than an SVD of M; directions
    # with a negligible singular value carry none of the fitted values and are left as zero columns).
    m = (evecs * np.sqrt(np.clip(evals, 0.0, None))).T @ w
    s2, u = np.linalg.eigh(m @ m.T)
    order = np.argsort(s2)[::-1][: min(m.shape)]
    sv = np.sqrt(np.clip(s2[order], 0.0, None))
    keep = sv > 1e-7 * sv[0] if sv[0] > 0 else np.zeros(sv.shape, dtype=bool)
    v = np.zeros((m.shape[1], order.size))
    v[:, keep] = (m.T @ u[:, order[keep]]) / sv[keep]
    return LayerFit(w=w, v=v, x_mean=inp.x_mean, y_mean=y_mean)


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def recall(scores: np.ndarray, truth_mask: np.ndarray, k: int) -> float:
    """Mean over rows of |top-k(truth) ∩ top-k(scores)| / k; truth_mask = topk_mask(truth, k)."""
    hit = topk_mask(scores, k) & truth_mask
    return float(hit.sum(axis=1).mean() / k)


def recalls(scores: np.ndarray, truth_masks: Sequence[np.ndarray], ks: Sequence[int]) -> list[float]:
    return [recall(scores, mask, k) for mask, k in zip(truth_masks, ks)]


def score(x: np.ndarray, a16: np.ndarray, b16: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return (x @ a16.astype(np.float64).T) @ b16.astype(np.float64).T + bias.astype(np.float64)


@dataclass
class Evaluation:
    n_train: int
    n_val: int
    ks: list[int]
    target: str                            # the better target on the held-out tokens
    per: dict[str, list[list[float]]]      # abs / log_abs / static / random -> per layer [recall@k ...]
    per_rank: dict[int, dict[str, list]]   # the report-only ranks -> target -> per layer
    full: dict[str, list[list[float]]]     # unconstrained ridge -> per layer
    chosen: dict[str, list[tuple]]         # target -> per layer (A f16, B f16, bias f32) at the main rank
    means: dict[str, list[float]]


def _mean(rows: list) -> list[float]:
    return [float(v) for v in np.mean(np.asarray(rows), axis=0)]


def fit_all(cap: Capture, rank: int, extra_ranks: Sequence[int], ridge: float, progress: bool = False) -> Evaluation:
    """Fit both targets for every layer on the first 90% of the tokens and evaluate on the rest."""
    n_layer, n, ffn = cap.abs_h.shape
    n_val = max(1, int(round(VALIDATION_FRACTION * n)))
    n_tr = n - n_val
    ks = [max(1, int(round(f * ffn))) for f in RECALL_FRACTIONS]
    rng = np.random.default_rng(0)
    ranks_eval = [rank, *extra_ranks]
    per: dict[str, list] = {k: [] for k in ("abs", "log_abs", "static", "random")}
    per_rank: dict[int, dict[str, list]] = {r: {"abs": [], "log_abs": []} for r in extra_ranks}
    full: dict[str, list] = {"abs": [], "log_abs": []}
    chosen: dict[str, list] = {"abs": [], "log_abs": []}
    t = time.perf_counter()
    for i in range(n_layer):
        x = cap.x[i].astype(np.float64)
        xt, xv = x[:n_tr], x[n_tr:]
        truth = cap.abs_h[i, n_tr:].astype(np.float64)
        truth_masks = [topk_mask(truth, k) for k in ks]
        inputs = Inputs.of(xt)
        eps = LOG_EPS_REL * float(cap.abs_h[i, :n_tr].mean())
        for target in TARGETS:
            y = target_values(cap.abs_h[i, :n_tr], target, eps)
            fit = fit_layer(inputs, y, ridge)
            for r in ranks_eval:
                a16, b16, bias = fit.predictor(r)
                rec = recalls(score(xv, a16, b16, bias), truth_masks, ks)
                if r == rank:
                    per[target].append(rec)
                    chosen[target].append((a16, b16, bias))
                else:
                    per_rank[r][target].append(rec)
            full[target].append(recalls((xv - fit.x_mean) @ fit.w + fit.y_mean, truth_masks, ks))
        static = cap.abs_h[i, :n_tr].astype(np.float64).mean(axis=0)
        per["static"].append(recalls(np.broadcast_to(static, truth.shape), truth_masks, ks))
        per["random"].append(recalls(rng.random(truth.shape), truth_masks, ks))
        if progress and (i + 1) % 10 == 0:
            log(f"fit: {i + 1}/{n_layer} layers {time.perf_counter() - t:.1f} s")
    means = {k: _mean(v) for k, v in per.items()}
    # Pick the target that ranks better on the held-out tokens (recall@50% and @80% averaged; ties: abs).
    target = "log_abs" if np.mean(means["log_abs"]) > np.mean(means["abs"]) else "abs"
    return Evaluation(n_train=n_tr, n_val=n_val, ks=ks, target=target, per=per, per_rank=per_rank, full=full,
                      chosen=chosen, means=means)


# --------------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------------


def write_predictor(out: Path, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], *, rank: int,
                    target: str, sha256: str, n_tokens: int) -> None:
    try:
        with common.atomic_output(out) as tmp:
            w = gguf.GGUFWriter(tmp, ARCH)
            kv = w.add_key_value
            kv("general.name", "PocketLM FFN activation predictor", VT.STRING)
            kv("pocketlm.predictor.rank", rank, VT.UINT32)
            kv("pocketlm.predictor.target", target, VT.STRING)
            kv("pocketlm.predictor.block_count", len(layers), VT.UINT32)
            kv("pocketlm.predictor.source_sha256", sha256, VT.STRING)
            kv("pocketlm.predictor.calibration_tokens", n_tokens, VT.UINT32)
            for i, (a16, b16, bias, mass) in enumerate(layers):
                w.add_tensor(f"blk.{i}.ffn_pred_a", np.ascontiguousarray(a16, dtype=np.float16))
                w.add_tensor(f"blk.{i}.ffn_pred_b", np.ascontiguousarray(b16, dtype=np.float16))
                w.add_tensor(f"blk.{i}.ffn_pred_bias", np.ascontiguousarray(bias, dtype=np.float32))
                w.add_tensor(f"blk.{i}.ffn_mass", np.ascontiguousarray(mass, dtype=np.float32))
            common.finish_writer(w)
    except OSError as exc:
        raise ToolError(f"cannot write {out}: {exc}") from None


def pct(v: float) -> str:
    return f"{v:.3f}"


def summary_text(rep: dict) -> str:
    f50, f80 = (f"{int(f * 100)}%" for f in RECALL_FRACTIONS)
    lines = [
        f"model {rep['model']}  ->  {rep['out']}",
        f"calibration {rep['calibration_tokens']} tokens (train {rep['train_tokens']}, validation "
        f"{rep['validation_tokens']}), windows of {rep['window']}, rank {rep['rank']}, ridge {rep['ridge']}",
        f"validation recall of the true top-k |h| (k = {f50} / {f80} of ffn {rep['ffn']} = "
        f"{rep['k'][0]} / {rep['k'][1]} neurons)",
        "",
        f"layer | abs {f50:>4} {f80:>4} | log_abs {f50:>4} {f80:>4} | static {f50:>4} {f80:>4} | random {f50:>4} {f80:>4}",
    ]
    per = rep["per_layer"]
    for i in range(len(per["abs"])):
        lines.append(f"{i:5d} | {pct(per['abs'][i][0]):>5} {pct(per['abs'][i][1]):>5} | "
                     f"{pct(per['log_abs'][i][0]):>5} {pct(per['log_abs'][i][1]):>5}     | "
                     f"{pct(per['static'][i][0]):>5} {pct(per['static'][i][1]):>5}    | "
                     f"{pct(per['random'][i][0]):>5} {pct(per['random'][i][1]):>5}")
    m = rep["mean"]
    lines.append(f" mean | {pct(m['abs'][0]):>5} {pct(m['abs'][1]):>5} | {pct(m['log_abs'][0]):>5} "
                 f"{pct(m['log_abs'][1]):>5}     | {pct(m['static'][0]):>5} {pct(m['static'][1]):>5}    | "
                 f"{pct(m['random'][0]):>5} {pct(m['random'][1]):>5}")
    lines.append("")
    for r, res in rep["other_ranks"].items():
        lines.append(f"rank {r:>9}: mean abs {pct(res['abs'][0])} / {pct(res['abs'][1])}, "
                     f"log_abs {pct(res['log_abs'][0])} / {pct(res['log_abs'][1])}")
    fr = rep["full_rank"]
    lines.append(f"full-rank ridge: mean abs {pct(fr['abs'][0])} / {pct(fr['abs'][1])}, "
                 f"log_abs {pct(fr['log_abs'][0])} / {pct(fr['log_abs'][1])}")
    lines.append(f"written target: {rep['target']}; times: " +
                 ", ".join(f"{k} {v:.1f} s" for k, v in rep["timing_s"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def parse_ranks(text: str) -> list[int]:
    try:
        ranks = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ToolError(f"--report-ranks must be comma-separated integers, got {text!r}") from None
    return ranks


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    if args.rank < 1:
        raise ToolError(f"--rank must be >= 1, got {args.rank}")
    if args.tokens < MIN_TOKENS:
        raise ToolError(f"--tokens must be >= {MIN_TOKENS}, got {args.tokens}")
    if args.window < 1:
        raise ToolError(f"--window must be >= 1, got {args.window}")
    if not (args.ridge >= 0 and np.isfinite(args.ridge)):
        raise ToolError(f"--ridge must be a finite number >= 0, got {args.ridge}")
    extra_ranks = parse_ranks(args.report_ranks)

    model_path = Path(args.model)
    if not model_path.exists():
        raise ToolError(f"model not found: {model_path}")
    t = time.perf_counter()
    model = reference.load_model(model_path)  # ToolError for non-GGUF / unsupported files
    timing["load"] = time.perf_counter() - t
    dim, ffn = model.n_embd, model.n_ff
    max_rank = min(dim, ffn)
    for r in [args.rank, *extra_ranks]:
        if r < 1 or r > max_rank:
            raise ToolError(f"rank {r} is out of range: the model has dim {dim} and ffn {ffn}, "
                            f"so the rank must be in 1..{max_rank}")
    extra_ranks = sorted(set(extra_ranks) - {args.rank})

    t = time.perf_counter()
    sources: list[str]
    if args.tokens_file is not None:
        ids = read_tokens_file(Path(args.tokens_file))[: args.tokens]
        sources = [str(args.tokens_file)]
    else:
        files = [Path(f) for f in args.calibration] if args.calibration else default_calibration_files()
        ids, sources = calibration_tokens(files, Path(args.pocketlm), model_path, args.tokens)
    timing["tokenize"] = time.perf_counter() - t
    n = len(ids)
    if n < MIN_TOKENS:
        raise ToolError(f"not enough calibration text: {n} tokens, need at least {MIN_TOKENS}")
    if n < args.tokens:
        log(f"note: only {n} calibration tokens available (asked for {args.tokens})")
    bad = [tok for tok in ids if not 0 <= tok < model.n_vocab]
    if bad:
        raise ToolError(f"calibration token ids out of range [0, {model.n_vocab}): {bad[:10]}")
    window = min(args.window, model.n_ctx)

    t = time.perf_counter()
    sha = common.sha256_file(model_path)
    timing["sha256"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"capturing FFN inputs/activations over {n} tokens in {len(windows(n, window))} windows of "
        f"<= {window} (float64 reference forward)")
    cap = capture(model, ids, window, progress=not args.quiet)
    timing["forward"] = time.perf_counter() - t

    t = time.perf_counter()
    ev = fit_all(cap, args.rank, extra_ranks, args.ridge, progress=not args.quiet)
    timing["fit"] = time.perf_counter() - t

    t = time.perf_counter()
    layers = [(a16, b16, bias, cap.mass[i]) for i, (a16, b16, bias) in enumerate(ev.chosen[ev.target])]
    write_predictor(Path(args.out), layers, rank=args.rank, target=ev.target, sha256=sha, n_tokens=n)
    timing["write"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t_start

    return {
        "model": str(model_path),
        "out": str(args.out),
        "source_sha256": sha,
        "calibration_sources": sources,
        "calibration_tokens": n,
        "train_tokens": ev.n_train,
        "validation_tokens": ev.n_val,
        "window": window,
        "capture_dtype": "float64",
        "rank": args.rank,
        "ridge": args.ridge,
        "dim": dim,
        "ffn": ffn,
        "block_count": model.n_layer,
        "recall_fractions": list(RECALL_FRACTIONS),
        "k": ev.ks,
        "target": ev.target,
        "mean": ev.means,
        "per_layer": {k: [[float(a) for a in row] for row in v] for k, v in ev.per.items()},
        "other_ranks": {str(r): {tg: _mean(v) for tg, v in d.items()} for r, d in ev.per_rank.items()},
        "other_ranks_per_layer": {str(r): {tg: [[float(a) for a in row] for row in v] for tg, v in d.items()}
                                  for r, d in ev.per_rank.items()},
        "full_rank": {tg: _mean(v) for tg, v in ev.full.items()},
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fit per-layer low-rank predictors of |FFN activation| for a llama GGUF and write them "
                    "as a predictor GGUF.",
    )
    p.add_argument("--model", required=True, help="llama-architecture GGUF model")
    p.add_argument("--out", required=True, help="output predictor .gguf")
    p.add_argument("--rank", type=int, default=32, help="predictor rank (default 32)")
    p.add_argument("--tokens", type=int, default=4096, help="calibration tokens to use (default 4096)")
    p.add_argument("--calibration", nargs="+", metavar="FILE",
                   help=f"calibration text files (default: regular files in {DEFAULT_CALIBRATION_DIR} except GPL-3)")
    p.add_argument("--tokens-file", help="JSON list of token ids to use instead of tokenizing text")
    p.add_argument("--pocketlm", default=str(DEFAULT_POCKETLM), help=f"pocketlm binary (default {DEFAULT_POCKETLM})")
    p.add_argument("--ridge", type=float, default=1e-3,
                   help="ridge strength, relative to the mean input variance (default 1e-3)")
    p.add_argument("--window", type=int, default=512,
                   help="positions per forward sequence (default 512, capped at the model's context)")
    p.add_argument("--report-ranks", default="", metavar="R,R",
                   help="also evaluate these ranks (reported only, not written), e.g. 16,64")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (table goes to stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rep = run(args)
    text = summary_text(rep)
    if args.json:
        log(text)
        json.dump(rep, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    prog = Path(sys.argv[0]).name
    try:
        rc = main()
    except ToolError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc)
