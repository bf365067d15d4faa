"""reference.py: the key oracle. On the real SmolLM2 weights (the F32 file derived from the
published Q4_1 file) the float64 forward pass must reproduce llama.cpp's F32 results: same top-5
ids at the last position and logits within 0.05 for all four F32 records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import common
import make_test_model as mtm
import reference

TOL = 0.05


@pytest.mark.real_model
def test_reproduces_llamacpp_f32_records(real_f32, records_for):
    model = reference.load_model(real_f32)
    assert (model.n_layer, model.n_embd, model.n_head, model.n_head_kv, model.n_vocab) == (30, 576, 9, 3, 49152)
    assert model.tied and model.rope_base == 100000.0
    recs = records_for(common.SMOLLM2_F32_NAME)
    assert len(recs) == 4
    npz = np.load(common.REFERENCE_DIR / "smollm2-llamacpp-lastlogits.npz")
    for rec in recs:
        logits = reference.forward(model, rec["tokens"])
        assert logits.shape == (len(rec["tokens"]), 49152)
        last = logits[-1]
        top5 = [int(i) for i in np.argsort(-last, kind="stable")[:5]]
        assert top5 == rec["last_pos_top5_ids"], rec["prompt"]
        np.testing.assert_allclose(last[rec["last_pos_top5_ids"]], rec["last_pos_top5_logits"], atol=TOL,
                                   err_msg=rec["prompt"])
        # Stronger, still cheap: argmax at every position and the whole last-position vector.
        assert logits.argmax(axis=-1).tolist() == rec["per_position_top1_ids"], rec["prompt"]
        assert np.abs(last - npz[rec["last_logits_npz_key"]]).max() < TOL, rec["prompt"]


@pytest.mark.real_model
def test_q8_0_variant_matches_llamacpp_top1(real_q8_0, records_for):
    """llama.cpp's Q8_0 matmuls also quantize activations, so only argmaxes are compared."""
    model = reference.load_model(real_q8_0)
    for rec in records_for(common.SMOLLM2_Q8_0_NAME):
        logits = reference.forward(model, rec["tokens"])
        assert logits.argmax(axis=-1).tolist() == rec["per_position_top1_ids"], rec["prompt"]
        assert int(np.argmax(logits[-1])) == rec["last_pos_top5_ids"][0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {
        "tied": mtm.write_test_model(d / "tied.gguf", "f32", 11),
        "untied": mtm.write_test_model(d / "untied.gguf", "f32", 11, mtm.TinyConfig(untied=True)),
        "q4_1": mtm.write_test_model(d / "q4_1.gguf", "q4_1", 11),
    }


TOKENS = [1, 270, 340, 285, 223, 40, 84, 297, 327, 284, 223, 50]


def test_causal_prefix_consistency(tiny):
    """Logits at position i depend only on tokens[:i+1]."""
    full = reference.forward(tiny["tied"], TOKENS)
    for n in (1, 4, 9):
        np.testing.assert_allclose(reference.forward(tiny["tied"], TOKENS[:n]), full[:n], rtol=0, atol=1e-10)


def test_order_matters(tiny):
    """Without positions, attention is permutation invariant over earlier tokens; RoPE breaks that."""
    a = reference.forward(tiny["tied"], [50, 60, 70])[-1]
    b = reference.forward(tiny["tied"], [60, 50, 70])[-1]
    assert np.abs(a - b).max() > 1e-2


def test_rope_rotates_adjacent_pairs():
    """GGUF llama convention: pair (x[2i], x[2i+1]) rotated by pos * base^(-2i/n_rot)."""
    hd, base, pos = 8, 100.0, np.array([0, 3])
    x = np.zeros((2, 1, hd))
    x[:, 0, 0] = 1.0  # pair 0, first component
    x[:, 0, 3] = 1.0  # pair 1, second component
    y = reference.rope(x, pos, hd, base)
    np.testing.assert_allclose(y[0, 0], x[0, 0])  # position 0: identity
    th0, th1 = 3.0, 3.0 * base ** (-2.0 / hd)
    np.testing.assert_allclose(y[1, 0, :4], [np.cos(th0), np.sin(th0), -np.sin(th1), np.cos(th1)])
    np.testing.assert_allclose(y[1, 0, 4:], 0.0)
    # Scores depend only on the relative position.
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 1, hd)), rng.standard_normal((1, 1, hd))
    s = [float(np.sum(reference.rope(q, np.array([m]), hd, base) * reference.rope(k, np.array([n]), hd, base)))
         for m, n in ((5, 2), (9, 6), (3, 0))]
    np.testing.assert_allclose(s, s[0])


def test_tied_uses_token_embd_untied_uses_output(tiny):
    tied = reference.load_model(tiny["tied"])
    untied = reference.load_model(tiny["untied"])
    assert tied.tied and not untied.tied
    # Same seed: same blocks, different head -> different logits.
    assert np.abs(reference.forward(tied, TOKENS) - reference.forward(untied, TOKENS)).max() > 0.1


def test_quantized_model_is_close_to_float(tiny):
    a = reference.forward(tiny["tied"], TOKENS)
    b = reference.forward(tiny["q4_1"], TOKENS)
    # Q4_1 moves each weight by ~8% of its block's spread; the random tiny model amplifies that, so
    # only require clearly correlated logits (the Swift tests compare per file, not across types).
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_cli_json_schema(tmp_path, tiny, tools_dir):
    out = tmp_path / "ref.json"
    subprocess.run([sys.executable, str(tools_dir / "reference.py"), str(tiny["untied"]), "--tokens", "1,5,9",
                    "--out", str(out)], check=True, capture_output=True)
    doc = json.loads(out.read_text())
    assert set(doc) == {"model", "tokens", "logits"}
    assert doc["tokens"] == [1, 5, 9] and doc["model"] == str(tiny["untied"])
    logits = np.array(doc["logits"])
    assert logits.shape == (3, reference.load_model(tiny["untied"]).n_vocab)
    np.testing.assert_array_equal(logits, reference.forward(tiny["untied"], [1, 5, 9]))
    # stdout mode
    proc = subprocess.run([sys.executable, str(tools_dir / "reference.py"), str(tiny["tied"]), "--tokens", "2"],
                          check=True, capture_output=True, text=True)
    assert np.array(json.loads(proc.stdout)["logits"]).shape[0] == 1


@pytest.mark.parametrize("args, message", [
    (["--tokens", "1,99999"], "out of range"),
    (["--tokens", "1,x"], "comma-separated integers"),
    (["--tokens", ""], "empty"),
])
def test_cli_bad_tokens(tiny, tools_dir, args, message):
    proc = subprocess.run([sys.executable, str(tools_dir / "reference.py"), str(tiny["tied"]), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_files(tmp_path, tools_dir):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    for path, message in ((junk, "not a GGUF file"), (tmp_path / "missing.gguf", "no such file")):
        proc = subprocess.run([sys.executable, str(tools_dir / "reference.py"), str(path), "--tokens", "1"],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_too_many_tokens(tiny):
    with pytest.raises(common.ToolError, match="context length"):
        reference.forward(tiny["tied"], [3] * 129)
