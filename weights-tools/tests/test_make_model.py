"""make_model.py: random-weight GGUFs in the shape of configs/*.json, written streamed."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import common
import make_model
import make_test_model
import reference
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BLOCK_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def small_config(tmp_path: Path, **changes) -> Path:
    """A small llama config (fast to write) with the same keys as configs/*.json."""
    cfg = json.loads((CONFIGS / "mobilellm-125m.json").read_text())
    cfg.update({"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
                "intermediate_size": 256, "vocab_size": 600, "max_position_embeddings": 256})
    cfg.update(changes)
    path = tmp_path / f"small-{len(list(tmp_path.glob('small-*.json')))}.json"
    path.write_text(json.dumps(cfg))
    return path


def tensors_of(path: Path) -> dict:
    return {t.name: t for t in common.open_gguf(path).tensors}


def test_mobilellm_125m_two_layers(tmp_path, capsys):
    out = tmp_path / "m125.gguf"
    with pytest.raises(SystemExit) as exc:
        common.run_cli(make_model.main, ["--config", str(CONFIGS / "mobilellm-125m.json"), "--outtype", "q8_0",
                                         "--seed", "7", "--out", str(out), "--layers", "2"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "\r" in captured.err and "100.0%" in captured.err  # the progress bar

    rd = common.open_gguf(out)
    f = lambda k: common.field_value(rd, k)  # noqa: E731
    assert f("general.architecture") == "llama"
    assert (f("llama.block_count"), f("llama.embedding_length"), f("llama.feed_forward_length")) == (2, 576, 1536)
    assert (f("llama.attention.head_count"), f("llama.attention.head_count_kv")) == (9, 3)
    assert (f("llama.context_length"), f("llama.vocab_size"), f("llama.rope.dimension_count")) == (2048, 32000, 64)
    assert f("llama.rope.freq_base") == 10000.0
    assert f("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert f("general.file_type") == common.FILE_TYPE[QT.Q8_0]
    assert f("pocketlm.layer_schedule.strategy") == "none" and f("pocketlm.layer_schedule.repeats") == 1
    types = {k: list(v.types) for k, v in rd.fields.items()}
    assert types["pocketlm.layer_schedule.strategy"] == [VT.STRING]
    assert types["pocketlm.layer_schedule.repeats"] == [VT.UINT32]
    assert types["llama.block_count"] == [VT.UINT32] and types["llama.rope.freq_base"] == [VT.FLOAT32]
    # The same keys (and types) as make_test_model writes, plus the schedule and a description.
    tiny = common.open_gguf(make_test_model.write_test_model(tmp_path / "tiny.gguf", "q8_0", 1))
    tiny_types = {k: list(v.types) for k, v in tiny.fields.items() if not common.is_pseudo_field(k)}
    assert {k: v for k, v in types.items() if k in tiny_types} == tiny_types
    assert set(types) - set(tiny_types) - {k for k in types if common.is_pseudo_field(k)} == {
        "general.description", "pocketlm.layer_schedule.strategy", "pocketlm.layer_schedule.repeats"}

    # Tokenizer: the tiny BPE vocab padded with <unused_i> tokens of type 5 up to vocab_size.
    vocab = make_test_model.build_vocab()
    tokens, ttypes = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type")
    assert len(tokens) == len(ttypes) == 32000
    n = len(vocab.tokens)
    assert tokens[:n] == vocab.tokens and ttypes[:n] == vocab.token_types
    assert tokens[n:] == [f"<unused_{i}>" for i in range(32000 - n)] and set(ttypes[n:]) == {5}
    assert f("tokenizer.ggml.merges") == vocab.merges and f("tokenizer.ggml.model") == "gpt2"
    assert (f("tokenizer.ggml.bos_token_id"), f("tokenizer.ggml.eos_token_id")) == (1, 2)

    # Tensors: tied head (MobileLLM's share_embedding), matrices Q8_0, norms F32, GGUF shapes [in, out].
    t = {x.name: x for x in rd.tensors}
    expected = {"token_embd.weight": [576, 32000], "output_norm.weight": [576]}
    for i in range(2):
        expected |= {f"blk.{i}.attn_norm.weight": [576], f"blk.{i}.ffn_norm.weight": [576],
                     f"blk.{i}.attn_q.weight": [576, 576], f"blk.{i}.attn_k.weight": [576, 192],
                     f"blk.{i}.attn_v.weight": [576, 192], f"blk.{i}.attn_output.weight": [576, 576],
                     f"blk.{i}.ffn_gate.weight": [576, 1536], f"blk.{i}.ffn_up.weight": [576, 1536],
                     f"blk.{i}.ffn_down.weight": [1536, 576]}
    assert [x.name for x in rd.tensors] == [name for name, _ in make_model.tensor_plan(
        make_model.load_config(CONFIGS / "mobilellm-125m.json").with_layers(2))]
    assert {k: list(map(int, v.shape)) for k, v in t.items()} == expected
    for name, x in t.items():
        assert x.tensor_type == (QT.F32 if name.endswith("norm.weight") else QT.Q8_0), name
    np.testing.assert_array_equal(np.asarray(t["blk.1.ffn_norm.weight"].data), np.ones(576, np.float32))
    w = common.dequantize_tensor(t["blk.0.ffn_down.weight"])
    assert w.shape == (576, 1536) and np.all(np.isfinite(w)) and abs(float(w.std()) - 0.02) < 0.001
    assert rd.data_offset % 32 == 0 and all(x.data_offset % 32 == 0 for x in rd.tensors)

    # The forward pass is finite with O(1) logits (the model only has to be valid for benchmarks).
    logits = reference.forward(out, [1, 40, 300, 5000, 31999])
    assert np.all(np.isfinite(logits)) and 0.05 < logits.std() < 10


def test_ls_config_records_schedule(tmp_path):
    out = make_model.write_model(make_model.load_config(CONFIGS / "mobilellm-ls-125m.json").with_layers(1),
                                 tmp_path / "ls.gguf", "q4_0", 0, progress=False)
    rd = common.open_gguf(out)
    assert common.field_value(rd, "pocketlm.layer_schedule.strategy") == "immediate"
    assert common.field_value(rd, "pocketlm.layer_schedule.repeats") == 2
    assert common.field_value(rd, "llama.block_count") == 1
    assert {t.tensor_type for t in rd.tensors if t.name != "output_norm.weight" and "norm" not in t.name} == {QT.Q4_0}


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0", "q4_0", "q4_1"])
def test_outtypes_same_model(tmp_path, outtype):
    cfg = small_config(tmp_path)
    spec = make_model.load_config(cfg)
    ref = tensors_of(make_model.write_model(spec, tmp_path / "f32.gguf", "f32", 3, progress=False))
    got = tensors_of(make_model.write_model(spec, tmp_path / f"{outtype}.gguf", outtype, 3, progress=False))
    assert list(got) == list(ref)
    for name, t in got.items():
        a = common.dequantize_tensor(t)
        b = np.asarray(ref[name].data)
        assert a.shape == b.shape
        tol = {"f32": 0, "f16": 1e-4, "q8_0": 1e-3, "q4_0": 0.02, "q4_1": 0.01}[outtype]
        assert np.abs(a - b).max() <= tol, name
        assert t.tensor_type == (QT.F32 if name.endswith("norm.weight") else make_model.OUTTYPES[outtype])


def test_deterministic_and_layer_prefix(tmp_path):
    cfg = small_config(tmp_path)
    spec = make_model.load_config(cfg)
    a = make_model.write_model(spec, tmp_path / "a.gguf", "q8_0", 5, progress=False)
    b = make_model.write_model(spec, tmp_path / "b.gguf", "q8_0", 5, progress=False)
    c = make_model.write_model(spec, tmp_path / "c.gguf", "q8_0", 6, progress=False)
    assert a.read_bytes() == b.read_bytes()
    ta, tc = tensors_of(a), tensors_of(c)
    assert not np.array_equal(np.asarray(ta["blk.0.attn_q.weight"].data), np.asarray(tc["blk.0.attn_q.weight"].data))
    # Per-tensor generators: the blocks of a --layers 1 model are the first blocks of the full one.
    one = tensors_of(make_model.write_model(spec.with_layers(1), tmp_path / "one.gguf", "q8_0", 5, progress=False))
    for name, t in one.items():
        assert np.asarray(t.data).tobytes() == np.asarray(ta[name].data).tobytes(), name
    # ... and different tensors get different values.
    assert not np.array_equal(np.asarray(ta["blk.0.ffn_gate.weight"].data), np.asarray(ta["blk.0.ffn_up.weight"].data))


def test_untied_config_writes_output(tmp_path):
    spec = make_model.load_config(small_config(tmp_path, share_embedding=False, tie_word_embeddings=False))
    assert not spec.tied
    t = tensors_of(make_model.write_model(spec, tmp_path / "u.gguf", "f16", 1, progress=False))
    assert list(t)[-1] == "output.weight" and list(map(int, t["output.weight"].shape)) == [128, 600]
    assert t["output.weight"].tensor_type == QT.F16
    assert not np.array_equal(np.asarray(t["output.weight"].data), np.asarray(t["token_embd.weight"].data))
    assert make_model.parameter_count(spec) == sum(int(np.prod(x.shape)) for x in t.values())


def test_smollm2_config_counts(tmp_path):
    spec = make_model.load_config(CONFIGS / "smollm2-135m.json")
    assert spec.tied and spec.vocab == 49152 and spec.rope_theta == 100000.0 and spec.context == 8192
    assert "output.weight" not in dict(make_model.tensor_plan(spec))
    assert sum(int(np.prod(s)) for _, s in make_model.tensor_plan(spec)) == 134_515_008


def test_vocab_from_gguf(tmp_path):
    src = make_test_model.write_test_model(tmp_path / "tiny.gguf", "f32", 0)
    spec = make_model.load_config(small_config(tmp_path, vocab_size=1000))
    out = make_model.write_model(spec, tmp_path / "v.gguf", "q8_0", 0, vocab_from=str(src), progress=False)
    a, b = common.open_gguf(src), common.open_gguf(out)
    n = len(common.field_value(a, "tokenizer.ggml.tokens"))
    tokens = common.field_value(b, "tokenizer.ggml.tokens")
    assert len(tokens) == 1000 and tokens[:n] == common.field_value(a, "tokenizer.ggml.tokens")
    assert tokens[n] == "<unused_0>" and common.field_value(b, "tokenizer.ggml.token_type")[n:] == [5] * (1000 - n)
    for key in ("tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id"):
        assert common.field_value(b, key) == common.field_value(a, key), key
    with pytest.raises(ToolError, match="more than the config's vocab_size"):
        make_model.write_model(make_model.load_config(small_config(tmp_path, vocab_size=300)), tmp_path / "x.gguf",
                               "f32", 0, vocab_from=str(src), progress=False)


def test_errors(tmp_path):
    bad = small_config(tmp_path)
    cfg = json.loads(bad.read_text())
    del cfg["hidden_size"]
    bad.write_text(json.dumps(cfg))
    with pytest.raises(ToolError, match="hidden_size"):
        make_model.load_config(bad)
    with pytest.raises(ToolError, match="num_key_value_heads"):
        make_model.load_config(small_config(tmp_path, num_key_value_heads=3, num_attention_heads=2))
    with pytest.raises(ToolError, match="layer_schedule.strategy"):
        make_model.load_config(small_config(tmp_path, layer_schedule={"strategy": "sideways", "repeats": 2}))
    with pytest.raises(ToolError, match="repeats"):
        make_model.load_config(small_config(tmp_path, layer_schedule={"strategy": "immediate", "repeats": 0}))
    with pytest.raises(ToolError, match="head_dim"):
        make_model.load_config(small_config(tmp_path, head_dim=32))
    with pytest.raises(ToolError, match="multiple of 32"):
        make_model.write_model(make_model.load_config(small_config(tmp_path, intermediate_size=200)),
                               tmp_path / "q.gguf", "q4_1", 0, progress=False)
    with pytest.raises(ToolError, match="smaller than the tiny vocabulary"):
        make_model.write_model(make_model.load_config(small_config(tmp_path, vocab_size=100)),
                               tmp_path / "v.gguf", "f32", 0, progress=False)
    with pytest.raises(ToolError, match="no such config"):
        make_model.load_config(tmp_path / "nope.json")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial"))
    # layer_sharing without a layer_schedule means immediate x2, as the Swift ModelConfig decides.
    cfg = json.loads(small_config(tmp_path).read_text())
    del cfg["layer_schedule"]
    cfg["layer_sharing"] = True
    spec = make_model.spec_from_config(cfg)
    assert (spec.strategy, spec.repeats) == ("immediate", 2)


def test_streaming_memory(tmp_path):
    """The writer holds a chunk, not the model: peak traced memory is far below the file size."""
    spec = make_model.load_config(CONFIGS / "mobilellm-125m.json").with_layers(4)
    out = tmp_path / "m4.gguf"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        make_model.write_model(spec, out, "q8_0", 0, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = out.stat().st_size
    largest = max(make_model.tensor_nbytes(s, QT.Q8_0) for n, s in make_model.tensor_plan(spec) if len(s) == 2)
    assert size > 30e6 and largest > 19e6
    # numpy reports its buffers to tracemalloc; a whole-tensor writer would peak above the largest
    # tensor (19.6 MB as Q8_0, 74 MB as float32 before quantizing).
    assert peak < size / 4 and peak < largest / 2, (peak, size)
