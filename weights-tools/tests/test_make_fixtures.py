"""make_fixtures.py: the Swift tests trust these files blindly, so check what they promise."""

from __future__ import annotations

import json

import numpy as np
import pytest

import common
import make_fixtures
import reference
from common import GGMLQuantizationType as QT


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixtures")
    manifest = make_fixtures.make_fixtures(d)
    return d, manifest


def test_files_present(fixtures):
    d, manifest = fixtures
    names = {p.name for p in d.iterdir()}
    expected = {"dequant.gguf", "unsupported-type.gguf", "manifest.json"}
    for n in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "f32-untied"):
        expected |= {f"tiny-{n}.gguf", f"tiny-{n}.ref.json"}
    assert names == expected
    for name, info in manifest["files"].items():
        assert common.sha256_file(d / name) == info["sha256"]


def test_dequant_fixture(fixtures):
    d, _ = fixtures
    rd = common.open_gguf(d / "dequant.gguf")
    t = {x.name: x for x in rd.tensors}
    assert len(t) == 12
    for name, qtype in make_fixtures.DEQUANT_TYPES:
        w, e = t[f"{name}.w"], t[f"{name}.expected"]
        assert w.tensor_type == qtype and e.tensor_type == QT.F32
        assert list(w.shape) == [96, 7] and list(e.shape) == [96, 7]
        exp = np.asarray(e.data).reshape(7, 96)
        np.testing.assert_array_equal(common.dequantize_tensor(w).reshape(7, 96), exp)
        src = make_fixtures.dequant_data()
        assert np.all(np.isfinite(exp))
        if qtype == QT.F32:
            np.testing.assert_array_equal(exp, src)
        else:  # close to the source, relative to each block's range
            blocks = np.abs(src).reshape(7, 3, 32).max(axis=-1, keepdims=True)
            err = np.abs(exp - src).reshape(7, 3, 32)
            assert np.all(err <= blocks * 0.14 + 1e-6), name
    data = make_fixtures.dequant_data()
    assert (data == 0).sum() >= 32 and np.abs(data).max() >= 60000 and (data < 0).sum() > 100
    assert np.any((np.abs(data) > 0) & (np.abs(data) < 6e-5))  # f16 subnormal range


def test_ref_json_matches_models(fixtures):
    d, manifest = fixtures
    tokens = manifest["tokens"]
    assert len(tokens) == 12 and tokens[0] == 1
    n_vocab = manifest["tiny_config"]["n_vocab"]
    for name in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "f32-untied"):
        doc = json.loads((d / f"tiny-{name}.ref.json").read_text())
        assert doc["model"] == f"tiny-{name}.gguf" and doc["tokens"] == tokens
        logits = np.array(doc["logits"])
        assert logits.shape == (12, n_vocab)
        np.testing.assert_array_equal(logits, reference.forward(d / doc["model"], tokens))
        tensors = {t.name: t for t in common.open_gguf(d / doc["model"]).tensors}
        assert ("output.weight" in tensors) == name.endswith("untied")


def test_unsupported_fixture(fixtures):
    d, _ = fixtures
    tensors = {t.name: t for t in common.open_gguf(d / "unsupported-type.gguf").tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == QT.Q5_0
    assert tensors["blk.0.ffn_up.weight"].tensor_type not in common.SUPPORTED_TENSOR_TYPES
    others = [t.tensor_type for n, t in tensors.items() if n != "blk.0.ffn_up.weight"]
    assert set(others) <= set(common.SUPPORTED_TENSOR_TYPES)


def test_deterministic(fixtures, tmp_path):
    _, manifest = fixtures
    again = make_fixtures.make_fixtures(tmp_path)
    assert again["files"] == manifest["files"]
