"""make_test_model.py: the tiny model must look like SmolLM2 to a GGUF loader (keys, value types,
tokenizer layout, tensor names/shapes/types) and be deterministic, since the Swift tests pin
reference logits computed from it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import common
import make_test_model as mtm
import reference
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT

CFG = mtm.TinyConfig()
MATRIX_SHAPES = {  # GGUF order [ne0, ne1] = [in, out]
    "attn_q": [64, 64], "attn_k": [64, 32], "attn_v": [64, 32], "attn_output": [64, 64],
    "ffn_gate": [64, 128], "ffn_up": [64, 128], "ffn_down": [128, 64],
}

EXPECTED_KV = {
    "general.architecture": ("llama", VT.STRING),
    "llama.block_count": (2, VT.UINT32),
    "llama.context_length": (128, VT.UINT32),
    "llama.embedding_length": (64, VT.UINT32),
    "llama.feed_forward_length": (128, VT.UINT32),
    "llama.attention.head_count": (4, VT.UINT32),
    "llama.attention.head_count_kv": (2, VT.UINT32),
    "llama.rope.freq_base": (10000.0, VT.FLOAT32),
    "llama.rope.dimension_count": (16, VT.UINT32),
    "tokenizer.ggml.model": ("gpt2", VT.STRING),
    "tokenizer.ggml.pre": ("smollm", VT.STRING),
    "tokenizer.ggml.bos_token_id": (1, VT.UINT32),
    "tokenizer.ggml.eos_token_id": (2, VT.UINT32),
    "tokenizer.ggml.unknown_token_id": (0, VT.UINT32),
    "tokenizer.ggml.padding_token_id": (2, VT.UINT32),
    "tokenizer.ggml.add_bos_token": (False, VT.BOOL),
}


def write(tmp_path, outtype="f32", seed=7, **cfg):
    return mtm.write_test_model(tmp_path / f"m-{outtype}-{seed}.gguf", outtype, seed, mtm.TinyConfig(**cfg))


@pytest.mark.parametrize("outtype", list(mtm.OUTTYPES))
def test_shapes_types_metadata(tmp_path, outtype):
    rd = common.open_gguf(write(tmp_path, outtype))
    for key, (value, vtype) in EXPECTED_KV.items():
        field = rd.fields[key]
        assert field.types[0] == vtype, key
        assert common.field_value(rd, key) == value, key
    eps = rd.fields["llama.attention.layer_norm_rms_epsilon"]
    assert eps.types[0] == VT.FLOAT32 and common.field_value(rd, eps.name) == pytest.approx(1e-5)
    assert common.field_value(rd, "general.file_type") == common.FILE_TYPE[mtm.OUTTYPES[outtype]]

    tensors = {t.name: t for t in rd.tensors}
    n_vocab = common.field_value(rd, "llama.vocab_size")
    expected = {"token_embd.weight", "output_norm.weight"}
    for i in range(CFG.layers):
        expected |= {f"blk.{i}.{n}.weight" for n in reference.BLOCK_TENSORS}
    assert set(tensors) == expected  # tied: no output.weight
    qtype = mtm.OUTTYPES[outtype]
    assert tensors["token_embd.weight"].tensor_type == qtype
    assert list(tensors["token_embd.weight"].shape) == [64, n_vocab]
    for name, t in tensors.items():
        if name.endswith("norm.weight"):
            assert t.tensor_type == QT.F32 and list(t.shape) == [64], name
            assert abs(float(np.mean(t.data)) - 1.0) < 0.1
        elif name != "token_embd.weight":
            assert t.tensor_type == qtype, name
            assert list(t.shape) == MATRIX_SHAPES[name.split(".")[2]], name


def test_tokenizer_layout(tmp_path, real_q4_1_reader):
    rd = common.open_gguf(write(tmp_path))
    tokens = common.field_value(rd, "tokenizer.ggml.tokens")
    types = common.field_value(rd, "tokenizer.ggml.token_type")
    merges = common.field_value(rd, "tokenizer.ggml.merges")
    assert rd.fields["tokenizer.ggml.token_type"].types == [VT.ARRAY, VT.INT32]
    assert rd.fields["tokenizer.ggml.tokens"].types == [VT.ARRAY, VT.STRING]
    assert len(tokens) == len(types) == common.field_value(rd, "llama.vocab_size")
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert types[:3] == [3, 3, 3] and set(types[3:]) == {1}
    assert set(tokens[3:259]) == set(mtm.bytes_to_unicode().values())
    assert len(set(tokens)) == len(tokens)
    assert 100 <= len(merges) <= 200
    vocab = set(tokens)
    for m in merges:
        a, b = m.split(" ")
        assert a in vocab and b in vocab and a + b in vocab, m
    assert "Ġthe" in vocab and "Ġcapital" in vocab  # common words became single tokens
    # Chat template byte-identical to SmolLM2's.
    real = real_q4_1_reader
    assert common.field_value(rd, "tokenizer.chat_template") == common.field_value(real, "tokenizer.chat_template")
    assert common.field_value(rd, "tokenizer.chat_template") == mtm.SMOLLM2_CHAT_TEMPLATE


def test_value_types_match_real_model(tmp_path, real_q4_1_reader):
    tiny = common.open_gguf(write(tmp_path))
    real = real_q4_1_reader
    shared = [k for k in tiny.fields if k in real.fields and not common.is_pseudo_field(k)]
    assert len(shared) >= 25
    for k in shared:
        assert list(tiny.fields[k].types) == list(real.fields[k].types), k


def test_deterministic_and_seed_dependent(tmp_path):
    a = mtm.write_test_model(tmp_path / "a.gguf", "q4_1", 3)
    b = mtm.write_test_model(tmp_path / "b.gguf", "q4_1", 3)
    c = mtm.write_test_model(tmp_path / "c.gguf", "q4_1", 4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_same_weights_across_outtypes(tmp_path):
    f32 = {t.name: common.dequantize_tensor(t) for t in common.open_gguf(write(tmp_path, "f32")).tensors}
    q8 = {t.name: common.dequantize_tensor(t) for t in common.open_gguf(write(tmp_path, "q8_0")).tensors}
    for name in f32:
        np.testing.assert_allclose(q8[name], f32[name], atol=0.03, err_msg=name)


def test_untied_has_output_weight(tmp_path):
    rd = common.open_gguf(write(tmp_path, "q8_0", untied=True))
    out = {t.name: t for t in rd.tensors}["output.weight"]
    assert out.tensor_type == QT.Q8_0
    assert list(out.shape) == [64, common.field_value(rd, "llama.vocab_size")]


def test_tensor_type_override(tmp_path):
    rd = common.open_gguf(write(tmp_path, tensor_types={"blk.1.ffn_up.weight": QT.Q5_0}))
    assert {t.name: t for t in rd.tensors}["blk.1.ffn_up.weight"].tensor_type == QT.Q5_0


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("untied", [False, True])
def test_logits_are_order_one_to_ten_and_not_degenerate(tmp_path, seed, untied):
    path = write(tmp_path, "f32", seed, untied=untied)
    tokens = [1, 270, 340, 285, 223, 40, 84, 297, 327, 284, 223, 50]
    logits = reference.forward(path, tokens)
    assert np.all(np.isfinite(logits))
    assert 3 < np.abs(logits).max() < 30
    assert 1 < logits.std() < 6
    top1 = logits.argmax(axis=-1)
    assert len(set(top1.tolist())) >= 4                        # not one constant prediction
    assert np.mean(top1 == np.array(tokens)) < 0.5              # not just echoing the input token


@pytest.mark.parametrize("args, message", [
    (["--outtype", "q4_0", "--dim", "48", "--heads", "4", "--kv-heads", "2"], "multiple of 32"),
    (["--heads", "3"], "not a multiple of --heads"),
    (["--kv-heads", "3"], "not a multiple of --kv-heads"),
    (["--tensor-type", "blk.9.ffn_up.weight=q5_0"], "unknown tensors"),
    (["--tensor-type", "blk.0.ffn_up.weight=q9_9"], "unknown GGML tensor type"),
    (["--layers", "0"], "must be positive"),
])
def test_cli_rejects_bad_input(tmp_path, tools_dir, args, message):
    out = tmp_path / "x.gguf"
    proc = subprocess.run([sys.executable, str(tools_dir / "make_test_model.py"), "--out", str(out), *args],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial files


def test_cli_writes_and_prints_path(tmp_path, tools_dir):
    out = tmp_path / "t.gguf"
    proc = subprocess.run([sys.executable, str(tools_dir / "make_test_model.py"), "--out", str(out),
                           "--outtype", "bf16", "--seed", "5", "--layers", "1", "--untied"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == str(out)
    rd = common.open_gguf(out)
    assert common.field_value(rd, "llama.block_count") == 1
    assert {t.name: t for t in rd.tensors}["blk.0.attn_q.weight"].tensor_type == QT.BF16
