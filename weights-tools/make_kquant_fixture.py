#!/usr/bin/env python3
"""Write kquant.gguf: Q5_0, Q5_1 and K-quant blocks with gguf-py's dequantization, for the Swift kernel tests.

Why: PocketLM's C dequantizers for the types of downloaded Q4_K_M files (Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K) must give exactly what gguf-py (and ggml) give. gguf-py cannot quantize the K types, so the blocks are
random bytes -- every quant, scale and high-bit pattern is a valid encoding -- with the f16 fields (d, dmin, m)
overwritten by chosen values: ordinary small scales, large ones (up to 60000), f16-subnormal ones, zeros and
negative ones, one character per row.

  kquant.gguf   for each type T in KQUANT_TYPES:
                `T.w`         ROWS x COLS (GGUF shape [COLS, ROWS]) stored as T (raw blocks), and
                `T.expected`  gguf.quants.dequantize(`T.w`) stored as F32, same shape.

Deterministic (fixed seed): two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf

ROWS, COLS = 6, 512          # two K super-blocks (16 Q5 blocks) per row
SEED = 20261206

# (name, type, block elements, block bytes, byte offsets of the f16 scale fields: (d, second) where second is
# dmin (K types with minimums), m (Q5_1) or None)
KQUANT_TYPES = (
    ("q5_0", QT.Q5_0, 32, 22, (0, None)),
    ("q5_1", QT.Q5_1, 32, 24, (0, 2)),
    ("q2_k", QT.Q2_K, 256, 84, (80, 82)),
    ("q3_k", QT.Q3_K, 256, 110, (108, None)),
    ("q4_k", QT.Q4_K, 256, 144, (0, 2)),
    ("q5_k", QT.Q5_K, 256, 176, (0, 2)),
    ("q6_k", QT.Q6_K, 256, 210, (208, None)),
)


def row_scales(rng: np.random.Generator, row: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(d, second) for the n blocks of one row; the row number picks the character."""
    if row == 0:    # ordinary: what quantizers produce for weights of magnitude ~0.1
        d, m = rng.uniform(1e-4, 2e-2, n), rng.uniform(1e-4, 2e-2, n)
    elif row == 1:  # large, still finite in f16 (and in every product)
        d, m = rng.uniform(1e3, 6e4, n), rng.uniform(1e3, 6e4, n)
    elif row == 2:  # f16 subnormals
        d, m = rng.uniform(1e-7, 6e-5, n), rng.uniform(1e-7, 6e-5, n)
    elif row == 3:  # zeros, alternating which field
        d = np.where(np.arange(n) % 2 == 0, 0.0, rng.uniform(1e-3, 1e-2, n))
        m = np.where(np.arange(n) % 2 == 1, 0.0, rng.uniform(1e-3, 1e-2, n))
    elif row == 4:  # negative (Q5_1's m is usually negative; K dmin is positive in practice but any f16 is valid)
        d, m = -rng.uniform(1e-3, 1e-1, n), -rng.uniform(1e-3, 1e-1, n)
    else:           # mixed signs and decades
        d = rng.uniform(-1, 1, n) * 10.0 ** rng.integers(-4, 2, n)
        m = rng.uniform(-1, 1, n) * 10.0 ** rng.integers(-4, 2, n)
    return d, m


def random_blocks(name: str, seed: int = SEED) -> np.ndarray:
    """ROWS x (row bytes) uint8: random quants, the f16 fields set per row."""
    _, _, elems, nbytes, (off_d, off_m) = next(t for t in KQUANT_TYPES if t[0] == name)
    rng = np.random.default_rng([seed, KQUANT_TYPES.index(next(t for t in KQUANT_TYPES if t[0] == name))])
    nb = COLS // elems
    raw = rng.integers(0, 256, size=(ROWS, nb, nbytes), dtype=np.uint8)
    for r in range(ROWS):
        d, m = row_scales(rng, r, nb)
        raw[r, :, off_d:off_d + 2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
        if off_m is not None:
            raw[r, :, off_m:off_m + 2] = m.astype(np.float16).view(np.uint8).reshape(nb, 2)
    return raw.reshape(ROWS, nb * nbytes)


def write_kquant(path: Path) -> None:
    with common.atomic_output(path) as tmp:
        w = gguf.GGUFWriter(tmp, "pocketlm-fixture")
        w.add_key_value("general.description",
                        "PocketLM K-quant fixture: <type>.w random blocks stored as <type>, <type>.expected = "
                        "gguf.quants.dequantize(<type>.w) as F32", VT.STRING)
        for name, qtype, *_ in KQUANT_TYPES:
            stored = random_blocks(name)
            expected = np.asarray(gguf.quants.dequantize(stored, qtype), dtype=np.float32).reshape(ROWS, COLS)
            if not np.all(np.isfinite(expected)):
                raise ToolError(f"kquant fixture {name}: non-finite values")
            w.add_tensor(f"{name}.w", stored, raw_dtype=qtype)
            w.add_tensor(f"{name}.expected", expected)
        common.finish_writer(w)

    # Re-read and check: types, GGUF shapes and expected == dequantize(stored as read back).
    rd = common.open_gguf(path)
    tensors = {t.name: t for t in rd.tensors}
    for name, qtype, *_ in KQUANT_TYPES:
        t, e = tensors[f"{name}.w"], tensors[f"{name}.expected"]
        assert t.tensor_type == qtype and e.tensor_type == QT.F32, name
        assert list(t.shape) == [COLS, ROWS] and list(e.shape) == [COLS, ROWS], name
        again = common.dequantize_tensor(t).reshape(ROWS, COLS)
        if not np.array_equal(again, np.asarray(e.data).reshape(ROWS, COLS)):
            raise ToolError(f"kquant fixture {name}: expected != dequantize(stored) after re-reading")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write kquant.gguf (Q5_0/Q5_1/K-quant blocks and gguf-py's "
                                                 "dequantization of them) for the Swift kernel tests.")
    parser.add_argument("--out-dir", type=Path, required=True, help="directory to write into (created if missing)")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise ToolError(f"--out-dir {args.out_dir} exists and is not a directory")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_kquant(args.out_dir / "kquant.gguf")
    print(args.out_dir / "kquant.gguf")
    return 0


if __name__ == "__main__":
    common.run_cli(main)
