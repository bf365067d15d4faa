"""make_kquant_fixture.py: the Swift K-quant tests trust kquant.gguf blindly, so check what it promises."""

from __future__ import annotations

import numpy as np

import common
import make_kquant_fixture as mk
from common import GGMLQuantizationType as QT

import gguf


def test_fixture_contents(tmp_path):
    path = tmp_path / "kquant.gguf"
    mk.write_kquant(path)
    rd = common.open_gguf(path)
    t = {x.name: x for x in rd.tensors}
    assert len(t) == 2 * len(mk.KQUANT_TYPES)
    for name, qtype, elems, nbytes, (off_d, off_m) in mk.KQUANT_TYPES:
        w, e = t[f"{name}.w"], t[f"{name}.expected"]
        assert w.tensor_type == qtype and e.tensor_type == QT.F32
        assert list(w.shape) == [mk.COLS, mk.ROWS] and list(e.shape) == [mk.COLS, mk.ROWS]
        raw = np.asarray(w.data).reshape(mk.ROWS, -1)
        assert raw.shape[1] == mk.COLS // elems * nbytes
        exp = np.asarray(e.data).reshape(mk.ROWS, mk.COLS)
        np.testing.assert_array_equal(np.asarray(gguf.quants.dequantize(raw, qtype)).reshape(mk.ROWS, mk.COLS), exp)
        assert np.all(np.isfinite(exp))
        # The f16 d fields carry the promised characters, one per row.
        d = raw.reshape(mk.ROWS, -1, nbytes)[:, :, off_d:off_d + 2].copy().view(np.float16).astype(np.float32)[..., 0]
        assert np.all((d[0] > 0) & (d[0] < 0.03))
        assert np.all(d[1] >= 900) and d[1].max() <= 60000
        assert np.all(np.abs(d[2]) < 6.1e-5) and np.any((d[2] > 0) & (d[2] < 2 ** -14))  # f16 subnormals
        assert np.any(d[3] == 0) and np.all(d[4] < 0)
        if off_m is not None:
            m = raw.reshape(mk.ROWS, -1, nbytes)[:, :, off_m:off_m + 2].copy().view(np.float16).astype(np.float32)[..., 0]
            assert np.any(m[3] == 0) and np.all(m[4] < 0)
        # Not degenerate: the random quants give many distinct values per row.
        assert len(np.unique(exp[0])) > mk.COLS // 8


def test_deterministic(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    mk.write_kquant(a)
    mk.write_kquant(b)
    assert a.read_bytes() == b.read_bytes()


def test_cli_writes_into_out_dir(tmp_path):
    assert mk.main(["--out-dir", str(tmp_path / "fx")]) == 0
    assert (tmp_path / "fx" / "kquant.gguf").is_file()
