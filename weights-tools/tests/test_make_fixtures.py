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
    expected |= {"tiny-ls.gguf", "tiny-ls.ref.json", "tiny-ls-unrolled.gguf",
                 "tiny-unrolled-repeat-all.gguf", "tiny-unrolled-reverse.gguf"}
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
    assert tensors["blk.0.ffn_up.weight"].tensor_type == QT.MXFP4
    assert tensors["blk.0.ffn_up.weight"].tensor_type not in common.SUPPORTED_TENSOR_TYPES
    others = [t.tensor_type for n, t in tensors.items() if n != "blk.0.ffn_up.weight"]
    assert set(others) <= set(common.SUPPORTED_TENSOR_TYPES)


def test_deterministic(fixtures, tmp_path):
    _, manifest = fixtures
    again = make_fixtures.make_fixtures(tmp_path)
    assert again["files"] == manifest["files"]


def _metadata(reader) -> dict:
    return {name: common.field_raw(f) for name, f in reader.fields.items() if not common.is_pseudo_field(name)}


def _tensor_bytes(t) -> bytes:
    return np.ascontiguousarray(t.data).tobytes()


def test_layer_sharing_fixture(fixtures):
    d, manifest = fixtures
    base = common.open_gguf(d / "tiny-q8_0.gguf")
    ls = common.open_gguf(d / "tiny-ls.gguf")
    assert common.field_value(ls, "llama.block_count") == 2
    assert common.field_value(ls, "pocketlm.layer_schedule.strategy") == "immediate"
    assert common.field_value(ls, "pocketlm.layer_schedule.repeats") == 2
    assert ls.fields["pocketlm.layer_schedule.strategy"].types == [common.GGUFValueType.STRING]
    assert ls.fields["pocketlm.layer_schedule.repeats"].types == [common.GGUFValueType.UINT32]
    # Everything else is tiny-q8_0.gguf, byte for byte.
    meta_base, meta_ls = _metadata(base), _metadata(ls)
    assert list(meta_ls)[:len(meta_base)] == list(meta_base)
    assert {k: v for k, v in meta_ls.items() if not k.startswith("pocketlm.")} == meta_base
    assert [(t.name, t.tensor_type, list(t.shape), _tensor_bytes(t)) for t in ls.tensors] == \
        [(t.name, t.tensor_type, list(t.shape), _tensor_bytes(t)) for t in base.tensors]
    assert {t.tensor_type for t in ls.tensors if t.name.endswith("norm.weight")} == {QT.F32}
    assert {t.tensor_type for t in ls.tensors if not t.name.endswith("norm.weight")} == {QT.Q8_0}

    info = manifest["layer_sharing"]
    assert info["shared"] == "tiny-ls.gguf" and info["strategy"] == "immediate" and info["repeats"] == 2
    assert {s: u["blocks"] for s, u in info["unrolled"].items()} == {
        "immediate": [0, 0, 1, 1], "repeat-all": [0, 1, 0, 1], "reverse": [0, 1, 1, 0]}


@pytest.mark.parametrize("name, order", [
    ("tiny-ls-unrolled.gguf", (0, 0, 1, 1)),
    ("tiny-unrolled-repeat-all.gguf", (0, 1, 0, 1)),
    ("tiny-unrolled-reverse.gguf", (0, 1, 1, 0)),
])
def test_unrolled_twins_are_byte_copies(fixtures, name, order):
    d, manifest = fixtures
    ls = common.open_gguf(d / "tiny-ls.gguf")
    un = common.open_gguf(d / name)
    src = {t.name: t for t in ls.tensors}
    names = [t.name for t in un.tensors]
    # Same layout: embeddings, 4 blocks with tiny-ls's per-block tensor order, then the rest.
    per_block = [t.name.split(".", 2)[2] for t in ls.tensors if t.name.startswith("blk.0.")]
    expected_names = (["token_embd.weight"] + [f"blk.{j}.{s}" for j in range(4) for s in per_block]
                      + [t.name for t in ls.tensors if not t.name.startswith(("blk.", "token_embd"))])
    assert names == expected_names
    for t in un.tensors:
        if t.name.startswith("blk."):
            _, j, suffix = t.name.split(".", 2)
            s = src[f"blk.{order[int(j)]}.{suffix}"]
        else:
            s = src[t.name]
        assert t.tensor_type == s.tensor_type and list(t.shape) == list(s.shape), t.name
        assert _tensor_bytes(t) == _tensor_bytes(s), t.name
    # Metadata: identical keys, order, types and values except the three that describe the blocks.
    m_ls, m_un = _metadata(ls), _metadata(un)
    assert list(m_un) == list(m_ls)
    changed = {"llama.block_count", "pocketlm.layer_schedule.strategy", "pocketlm.layer_schedule.repeats"}
    assert {k: v for k, v in m_un.items() if k not in changed} == {k: v for k, v in m_ls.items() if k not in changed}
    assert common.field_value(un, "llama.block_count") == 4
    assert common.field_value(un, "pocketlm.layer_schedule.strategy") == "none"
    assert common.field_value(un, "pocketlm.layer_schedule.repeats") == 1
    for k in changed:
        assert un.fields[k].types == ls.fields[k].types, k


def test_layer_sharing_reference(fixtures):
    d, manifest = fixtures
    tokens = manifest["tokens"]
    doc = json.loads((d / "tiny-ls.ref.json").read_text())
    assert doc["model"] == "tiny-ls.gguf" and doc["tokens"] == tokens
    logits = np.array(doc["logits"])
    np.testing.assert_array_equal(logits, reference.forward(d / "tiny-ls-unrolled.gguf", tokens))
    assert manifest["layer_sharing"]["argmax"] == logits.argmax(axis=-1).tolist()
    # Running each block twice is a different model from running it once, and the schedules differ.
    plain = np.array(json.loads((d / "tiny-q8_0.ref.json").read_text())["logits"])
    assert np.abs(logits - plain).max() > 0.1
    other = reference.forward(d / "tiny-unrolled-repeat-all.gguf", tokens)
    assert np.abs(logits - other).max() > 0.1
    assert np.all(np.isfinite(logits))
