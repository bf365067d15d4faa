"""variants.py: the F32 file must be exactly the dequantized Q4_1 model, and the Q8_0 file must
copy token_embd byte for byte and hold Q8_0 re-quantizations of the Q4_1 matrices -- because
llama.cpp's reference outputs were computed on files made that way."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import common
import gguf
import make_test_model as mtm
import variants
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT


def metadata(rd):
    return {k: common.field_raw(f) for k, f in rd.fields.items() if not common.is_pseudo_field(k)}


@pytest.mark.real_model
def test_real_f32_variant(real_q4_1_reader, real_f32):
    src, out = real_q4_1_reader, common.open_gguf(real_f32)
    ms, mo = metadata(src), metadata(out)
    assert list(ms) == list(mo)
    assert mo.pop("general.file_type") == (0, VT.UINT32, None)
    ms.pop("general.file_type")
    assert ms == mo  # everything else (tokens, merges, template, float32 eps...) identical, same types
    assert [t.name for t in src.tensors] == [t.name for t in out.tensors]
    for s, o in zip(src.tensors, out.tensors):
        assert o.tensor_type == QT.F32, s.name
        assert list(o.shape) == list(s.shape), s.name
        np.testing.assert_array_equal(np.asarray(o.data), gguf.quants.dequantize(s.data, s.tensor_type), err_msg=s.name)


@pytest.mark.real_model
def test_real_q8_0_variant(real_q4_1_reader, real_q8_0):
    src, out = real_q4_1_reader, common.open_gguf(real_q8_0)
    ms, mo = metadata(src), metadata(out)
    assert mo.pop("general.file_type") == (7, VT.UINT32, None)
    ms.pop("general.file_type")
    assert ms == mo
    max_change = 0.0
    for s, o in zip(src.tensors, out.tensors, strict=True):
        assert s.name == o.name and list(o.shape) == list(s.shape)
        if s.name == "token_embd.weight":
            assert s.tensor_type == o.tensor_type == QT.Q8_0
            assert np.asarray(o.data).tobytes() == np.asarray(s.data).tobytes()
        elif s.tensor_type == QT.F32:
            assert o.tensor_type == QT.F32
            np.testing.assert_array_equal(np.asarray(o.data), np.asarray(s.data))
        else:
            assert s.tensor_type == QT.Q4_1 and o.tensor_type == QT.Q8_0, s.name
            deq = gguf.quants.dequantize(s.data, s.tensor_type)
            if s.name.startswith("blk.0."):  # exact recipe check on one block (the rest: error bound)
                assert np.asarray(o.data).tobytes() == gguf.quants.quantize(deq, QT.Q8_0).tobytes()
            max_change = max(max_change, float(np.abs(gguf.quants.dequantize(o.data, QT.Q8_0) - deq).max()))
    assert 0.03 < max_change < 0.04  # README: "max weight change 0.036"


def test_variants_of_tiny_model(tmp_path):
    src = mtm.write_test_model(tmp_path / "tiny.Q4_1.gguf", "q4_1", 5)
    f32 = variants.make_variant(src, tmp_path / "tiny.F32.gguf", "f32")
    q8 = variants.make_variant(src, tmp_path / "tiny.Q8_0.gguf", "q8_0")
    s = {t.name: t for t in common.open_gguf(src).tensors}
    for t in common.open_gguf(f32).tensors:
        assert t.tensor_type == QT.F32
        np.testing.assert_array_equal(np.asarray(t.data), common.dequantize_tensor(s[t.name]))
    for t in common.open_gguf(q8).tensors:
        assert t.tensor_type == (QT.F32 if t.name.endswith("norm.weight") else QT.Q8_0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.F32.gguf", "tiny.Q4_1.gguf", "tiny.Q8_0.gguf"]


def test_f16_variant_of_tiny_model(tmp_path):
    src = mtm.write_test_model(tmp_path / "tiny.Q4_1.gguf", "q4_1", 5)
    f16 = variants.make_variant(src, tmp_path / "tiny.F16.gguf", "f16")
    rd = common.open_gguf(f16)
    assert common.field_raw(rd.fields["general.file_type"]) == (1, VT.UINT32, None)
    s = {t.name: t for t in common.open_gguf(src).tensors}
    matrices = 0
    for t in rd.tensors:
        want = common.dequantize_tensor(s[t.name]).reshape(-1)
        if len(t.shape) >= 2:
            matrices += 1
            assert t.tensor_type == QT.F16, t.name
            want = want.astype(np.float16)
        else:
            assert t.tensor_type == QT.F32, t.name
        np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), want, err_msg=t.name)
    assert matrices > 0
    # The check that runs after writing catches a tensor that is not the f16 rounding.
    with pytest.raises(common.ToolError, match="not the f16 rounding"):
        bad = tmp_path / "bad.F16.gguf"
        writer = variants._writer_for(common.open_gguf(src), bad, common.FILE_TYPE[QT.F16])
        for t in common.open_gguf(src).tensors:
            arr = common.dequantize_tensor(t)
            if len(t.shape) >= 2:
                arr = (arr * 1.001).astype(np.float16)
            writer.add_tensor(t.name, np.ascontiguousarray(arr if len(t.shape) >= 2 else arr.astype(np.float32)))
        common.finish_writer(writer)
        variants.check_variant(common.open_gguf(src), bad, "f16")


def test_existing_output_is_skipped_unless_forced(tmp_path):
    src = mtm.write_test_model(tmp_path / "tiny.Q4_1.gguf", "q4_1", 5)
    out = tmp_path / "tiny.F32.gguf"
    out.write_bytes(b"placeholder")
    variants.make_variant(src, out, "f32")
    assert out.read_bytes() == b"placeholder"
    variants.make_variant(src, out, "f32", force=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    src = mtm.write_test_model(tmp_path / "tiny.Q4_1.gguf", "q4_1", 5)

    def boom(*_a, **_k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(variants, "check_variant", boom)
    with pytest.raises(RuntimeError):
        variants.make_variant(src, tmp_path / "tiny.F32.gguf", "f32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.Q4_1.gguf"]


def test_cli(tmp_path, tools_dir):
    src = mtm.write_test_model(tmp_path / "tiny.Q4_1.gguf", "q4_1", 5)
    out_dir = tmp_path / "out"
    run = lambda *a: subprocess.run([sys.executable, str(tools_dir / "variants.py"), *a],  # noqa: E731
                                    capture_output=True, text=True)
    proc = run("--src", str(src), "--out-dir", str(out_dir), "--only", "q8_0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(out_dir / "tiny.Q8_0.gguf")]
    proc = run("--src", str(tmp_path / "missing.gguf"))
    assert proc.returncode == 1 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    proc = run("--src", str(junk), "--out-dir", str(out_dir))
    assert proc.returncode == 1 and "cannot parse GGUF" in proc.stderr
    assert not any(p.name.endswith(".partial") for p in out_dir.iterdir())
