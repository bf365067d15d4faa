"""train_predictor.py: the per-layer low-rank FFN activation predictors the runtime pages neurons with.

On a tiny random model with fixed calibration ids (--tokens-file, so no Swift binary is needed):
the predictor GGUF reads back with the agreed names, shapes, types and metadata; its held-out recall
of the true top-50% |h| neurons is clearly above a random predictor's; `ffn_mass` equals mean |h|
recomputed by an independent forward written here (complex-number RoPE, per-head loops, weights read
straight from the GGUF, no reference.py), and the written predictor, applied to that forward's FFN
inputs, reproduces the reported validation recall. Plus the error paths (exit 2, one line, no traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import common
import make_test_model as mtm
import predictor_calibration
import train_predictor as tp
from common import GGMLQuantizationType as QT

import gguf

CFG = mtm.TinyConfig(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, context=256)
N_TOKENS = 1500
WINDOW = 200  # 7 full windows and a short one
RANK = 16


def run_tool(tools_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tools_dir / "train_predictor.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tools_dir):
    d = tmp_path_factory.mktemp("predictor")
    model = mtm.write_test_model(d / "tiny.gguf", "f32", 5, CFG)
    n_vocab = len(mtm.build_vocab(CFG.merges).tokens)
    ids = np.random.default_rng(7).integers(3, n_vocab, N_TOKENS + 100).tolist()  # --tokens keeps N_TOKENS
    ids_file = d / "ids.json"
    ids_file.write_text(json.dumps(ids))
    out = d / "pred.gguf"
    proc = run_tool(tools_dir, "--model", model, "--out", out, "--rank", RANK, "--tokens", N_TOKENS,
                    "--tokens-file", ids_file, "--window", WINDOW, "--report-ranks", "4,64", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert "layer |" in proc.stderr  # the table went to stderr
    return {"model": model, "out": out, "ids": ids[:N_TOKENS], "report": report}


def independent_ffn(path: Path, ids: list[int], window: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: FFN inputs x (after ffn_norm) and |h|, by a forward that shares no code with reference.py."""
    reader = gguf.GGUFReader(path)
    w = {t.name: np.array(t.data, dtype=np.float64) for t in reader.tensors}  # F32 file: no dequantization
    hd, group = CFG.dim // CFG.heads, CFG.heads // CFG.kv_heads
    xs: list[list[np.ndarray]] = [[] for _ in range(CFG.layers)]
    hs: list[list[np.ndarray]] = [[] for _ in range(CFG.layers)]

    def norm(v, g):
        return v * g / np.sqrt((v ** 2).mean(-1, keepdims=True) + CFG.eps)

    for s in range(0, len(ids), window):
        seq = ids[s:s + window]
        n = len(seq)
        rot = np.exp(1j * np.arange(n)[:, None] * CFG.rope_base ** (-np.arange(0, hd, 2) / hd))

        def rope(t):  # adjacent pairs as complex numbers
            c = (t[..., 0::2] + 1j * t[..., 1::2]) * rot[:, None, :]
            o = np.empty_like(t)
            o[..., 0::2], o[..., 1::2] = c.real, c.imag
            return o

        x = w["token_embd.weight"][seq]
        for layer in range(CFG.layers):
            p = f"blk.{layer}."
            a = norm(x, w[p + "attn_norm.weight"])
            q = rope((a @ w[p + "attn_q.weight"].T).reshape(n, CFG.heads, hd))
            k = rope((a @ w[p + "attn_k.weight"].T).reshape(n, CFG.kv_heads, hd))
            v = (a @ w[p + "attn_v.weight"].T).reshape(n, CFG.kv_heads, hd)
            att = np.empty((n, CFG.heads, hd))
            for h in range(CFG.heads):
                sc = q[:, h] @ k[:, h // group].T / np.sqrt(hd)
                sc[np.triu_indices(n, 1)] = -np.inf
                pr = np.exp(sc - sc.max(axis=1, keepdims=True))
                att[:, h] = (pr / pr.sum(axis=1, keepdims=True)) @ v[:, h // group]
            x = x + att.reshape(n, -1) @ w[p + "attn_output.weight"].T
            f = norm(x, w[p + "ffn_norm.weight"])
            g, u = f @ w[p + "ffn_gate.weight"].T, f @ w[p + "ffn_up.weight"].T
            act = g / (1.0 + np.exp(-g)) * u
            xs[layer].append(f)
            hs[layer].append(np.abs(act))
            x = x + act @ w[p + "ffn_down.weight"].T
    return [np.concatenate(v) for v in xs], [np.concatenate(v) for v in hs]


def test_output_layout_and_metadata(trained):
    reader = common.open_gguf(trained["out"])
    meta = lambda k: common.field_value(reader, k)  # noqa: E731
    assert meta("general.architecture") == "pocketlm-predictor"
    assert meta("pocketlm.predictor.rank") == RANK
    assert meta("pocketlm.predictor.block_count") == CFG.layers
    assert meta("pocketlm.predictor.calibration_tokens") == N_TOKENS
    assert meta("pocketlm.predictor.source_sha256") == common.sha256_file(trained["model"])
    assert meta("pocketlm.predictor.target") == trained["report"]["target"] in ("abs", "log_abs")
    types = {k: reader.fields[k].types[0] for k in
             ("pocketlm.predictor.rank", "pocketlm.predictor.block_count", "pocketlm.predictor.calibration_tokens",
              "pocketlm.predictor.target", "pocketlm.predictor.source_sha256")}
    assert types["pocketlm.predictor.rank"] == types["pocketlm.predictor.block_count"] == gguf.GGUFValueType.UINT32
    assert types["pocketlm.predictor.calibration_tokens"] == gguf.GGUFValueType.UINT32
    assert types["pocketlm.predictor.target"] == types["pocketlm.predictor.source_sha256"] == gguf.GGUFValueType.STRING

    tensors = {t.name: t for t in reader.tensors}
    expected = {}
    for i in range(CFG.layers):
        expected[f"blk.{i}.ffn_pred_a"] = (QT.F16, (RANK, CFG.dim), [CFG.dim, RANK])
        expected[f"blk.{i}.ffn_pred_b"] = (QT.F16, (CFG.ffn, RANK), [RANK, CFG.ffn])
        expected[f"blk.{i}.ffn_pred_bias"] = (QT.F32, (CFG.ffn,), [CFG.ffn])
        expected[f"blk.{i}.ffn_mass"] = (QT.F32, (CFG.ffn,), [CFG.ffn])
    assert set(tensors) == set(expected)
    for name, (qtype, shape, ne) in expected.items():
        t = tensors[name]
        assert t.tensor_type == qtype, name
        assert tuple(t.data.shape) == shape, name
        assert [int(v) for v in t.shape] == ne, name
        assert np.all(np.isfinite(t.data)), name
    assert all(np.all(tensors[f"blk.{i}.ffn_mass"].data > 0) for i in range(CFG.layers))


def test_recall_clearly_beats_random(trained):
    rep = trained["report"]
    assert rep["k"] == [64, 102] and rep["validation_tokens"] == 150 and rep["train_tokens"] == 1350
    chosen, rand = rep["mean"][rep["target"]], rep["mean"]["random"]
    # Random picks recall k/ffn on average; the fitted predictor must beat that by a real margin.
    assert abs(rand[0] - 0.5) < 0.03 and abs(rand[1] - 0.8) < 0.03
    assert chosen[0] > rand[0] + 0.05, rep["mean"]
    for layer in range(CFG.layers):
        assert rep["per_layer"][rep["target"]][layer][0] > rep["per_layer"]["random"][layer][0] + 0.03
    # The written target is the better of the two on the held-out tokens.
    other = "abs" if rep["target"] == "log_abs" else "log_abs"
    assert np.mean(rep["mean"][rep["target"]]) >= np.mean(rep["mean"][other])
    # Unconstrained ridge is at least as good as a low rank one on average (sanity of the RRR truncation).
    assert np.mean(rep["full_rank"][rep["target"]]) >= np.mean(rep["other_ranks"]["4"][rep["target"]]) - 0.01


def test_mass_and_predictor_match_an_independent_forward(trained):
    xs, hs = independent_ffn(trained["model"], trained["ids"], WINDOW)
    reader = common.open_gguf(trained["out"])
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    rep = trained["report"]
    n_tr = rep["train_tokens"]
    for layer in range(CFG.layers):
        assert hs[layer].shape == (N_TOKENS, CFG.ffn)
        # mass = mean |h| over all calibration tokens; the only error left is the F32 storage rounding.
        np.testing.assert_allclose(tensors[f"blk.{layer}.ffn_mass"], hs[layer].mean(axis=0), rtol=1e-6, atol=0)
        # The predictor in the file, applied to these inputs, gives the reported held-out recall.
        a = tensors[f"blk.{layer}.ffn_pred_a"].astype(np.float64)
        b = tensors[f"blk.{layer}.ffn_pred_b"].astype(np.float64)
        bias = tensors[f"blk.{layer}.ffn_pred_bias"].astype(np.float64)
        scores = (xs[layer][n_tr:] @ a.T) @ b.T + bias
        truth = hs[layer][n_tr:]
        for j, frac in enumerate((0.5, 0.8)):
            k = round(frac * CFG.ffn)
            top_true = np.argsort(-truth, axis=1)[:, :k]
            top_pred = np.argsort(-scores, axis=1)[:, :k]
            got = np.mean([len(set(t) & set(p)) / k for t, p in zip(top_true, top_pred)])
            assert abs(got - rep["per_layer"][rep["target"]][layer][j]) < 0.005


def test_rrr_recovers_a_low_rank_map():
    """fit_layer on y = x·Mᵀ + c with rank(M) = 3: rank 3 reproduces y, rank 2 does not."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 12))
    x = rng.standard_normal((500, 12))
    y = x @ m.T + rng.standard_normal(40)
    fit = tp.fit_layer(x, y, ridge=0.0)
    for rank, ok in ((3, True), (2, False)):
        b = fit.v[:, :rank]
        a = b.T @ fit.w.T
        pred = (x - fit.x_mean) @ a.T @ b.T + fit.y_mean
        assert (np.abs(pred - y).max() < 1e-8) == ok


def test_tokenizes_calibration_text_with_pocketlm(tmp_path, tools_dir, trained):
    pocketlm = tp.DEFAULT_POCKETLM
    # `make test` builds the CLI before pytest runs; a missing binary is a setup failure, not a skip.
    assert pocketlm.is_file() and os.access(pocketlm, os.X_OK), f"{pocketlm} not built: run `make test` (it builds it first)"
    text = tmp_path / "cal.txt"
    text.write_text(mtm.TRAINING_TEXT * 3)
    proc = subprocess.run([str(pocketlm), "tokenize", "--model", str(trained["model"]), "--json",
                           f"--text={text.read_text()}"], capture_output=True, text=True, check=True)
    n_ids = len(json.loads(proc.stdout)["ids"])
    out = tmp_path / "pred.gguf"
    proc = run_tool(tools_dir, "--model", trained["model"], "--out", out, "--rank", 8, "--calibration", text,
                    "--tokens", 100000, "--window", WINDOW, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["calibration_tokens"] == n_ids and rep["calibration_sources"] == [str(text)]
    assert common.field_value(common.open_gguf(out), "pocketlm.predictor.calibration_tokens") == n_ids


def test_split_text_respects_the_argv_limit():
    text = "".join(f"line {i} " * (i % 50) + "\n" for i in range(3000))
    pieces = predictor_calibration.split_text(text, limit=5000)
    assert "".join(pieces) == text and len(pieces) > 1
    assert all(len(p.encode()) <= 5000 for p in pieces)


@pytest.mark.parametrize("case, message", [
    ("missing-model", "model not found"),
    ("not-gguf", "is not a GGUF file"),
    ("rank-too-big", "rank 65 is out of range"),
    ("empty-calibration", "no calibration text"),
    ("empty-tokens-file", "no calibration text"),
    ("missing-calibration", "calibration file not found"),
])
def test_error_paths(tmp_path, tools_dir, trained, case, message):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not a gguf")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    no_ids = tmp_path / "none.json"
    no_ids.write_text("[]")
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(trained["ids"][:100]))
    model = trained["model"]
    out = tmp_path / "out.gguf"
    args = {
        "missing-model": ["--model", tmp_path / "nope.gguf", "--tokens-file", ids],
        "not-gguf": ["--model", junk, "--tokens-file", ids],
        "rank-too-big": ["--model", model, "--tokens-file", ids, "--rank", 65],
        "empty-calibration": ["--model", model, "--calibration", empty],
        "empty-tokens-file": ["--model", model, "--tokens-file", no_ids],
        "missing-calibration": ["--model", model, "--calibration", tmp_path / "nope.txt"],
    }[case]
    proc = run_tool(tools_dir, *args, "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("train_predictor.py: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists() and not list(tmp_path.glob(".out.gguf.*"))
