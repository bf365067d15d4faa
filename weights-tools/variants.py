#!/usr/bin/env python3
"""Derive the F32 and Q8_0 variants of SmolLM2-135M-Instruct from the cached Q4_1 GGUF.

Why: weights-tools/reference/smollm2-llamacpp.json has llama.cpp outputs for three files of the
same model, and the Swift runtime is tested against all three. Only the Q4_1 file is published;
the other two are derived from it exactly as weights-tools/reference/README.md describes:

- SmolLM2-135M-Instruct.F32.gguf: every tensor dequantized to float32 with
  gguf.quants.dequantize, all metadata copied, general.file_type = 0 (ALL_F32). Numerically the
  same model as the Q4_1 file, so it is the cleanest oracle for the F32 code path.
- SmolLM2-135M-Instruct.Q8_0.gguf: each Q4_1 matrix dequantized and re-quantized with
  gguf.quants.quantize(..., Q8_0); tensors that already are Q8_0 (token_embd) copied byte for
  byte; F32 tensors (norms) kept; general.file_type = 7 (MOSTLY_Q8_0).

Metadata is copied key by key in file order with the original GGUF value types (UINT32 stays
UINT32, FLOAT32 stays FLOAT32, string arrays are copied as raw bytes), tensors keep their order.
Each file is written under a temporary name, re-read and checked, and only then renamed into
place, so an interrupted run never leaves a half file. Existing outputs are skipped unless --force.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import common
from common import GGMLQuantizationType as QT
from common import GGUFValueType as VT
from common import ToolError

import gguf


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _writer_for(reader: gguf.GGUFReader, path: Path, file_type: int) -> gguf.GGUFWriter:
    arch = common.field_value(reader, "general.architecture")
    if not arch:
        raise ToolError("source has no general.architecture")
    writer = gguf.GGUFWriter(path, arch)
    common.copy_metadata(reader, writer, overrides={"general.file_type": (file_type, VT.UINT32)})
    return writer


def build_f32(reader: gguf.GGUFReader, tmp_path: Path) -> None:
    """Every tensor -> float32 via gguf.quants.dequantize."""
    writer = _writer_for(reader, tmp_path, common.FILE_TYPE[QT.F32])
    for t in reader.tensors:
        arr = common.dequantize_tensor(t)
        writer.add_tensor(t.name, np.ascontiguousarray(arr, dtype=np.float32))
    common.finish_writer(writer)


def build_f16(reader: gguf.GGUFReader, tmp_path: Path) -> None:
    """Matrices -> the float16 rounding of their dequantization (as llama.cpp's convert writes F16 files), 1-D
    tensors (norms) -> float32."""
    writer = _writer_for(reader, tmp_path, common.FILE_TYPE[QT.F16])
    for t in reader.tensors:
        arr = common.dequantize_tensor(t)
        writer.add_tensor(t.name, np.ascontiguousarray(arr, dtype=np.float16 if len(t.shape) >= 2 else np.float32))
    common.finish_writer(writer)


def build_q8_0(reader: gguf.GGUFReader, tmp_path: Path) -> None:
    """Q8_0 tensors copied as bytes, F32 tensors kept, other matrices dequantized -> Q8_0."""
    writer = _writer_for(reader, tmp_path, common.FILE_TYPE[QT.Q8_0])
    for t in reader.tensors:
        if t.tensor_type == QT.Q8_0:
            writer.add_tensor(t.name, np.asarray(t.data, dtype=np.uint8), raw_dtype=QT.Q8_0)
        elif t.tensor_type == QT.F32:
            writer.add_tensor(t.name, np.asarray(t.data, dtype=np.float32))
        elif len(t.shape) >= 2:
            arr = common.dequantize_tensor(t)
            if arr.shape[-1] % 32:
                raise ToolError(f"tensor {t.name}: row length {arr.shape[-1]} is not a multiple of 32, cannot make Q8_0")
            writer.add_tensor(t.name, gguf.quants.quantize(arr, QT.Q8_0), raw_dtype=QT.Q8_0)
        else:  # 1-D non-F32 tensor: store as F32
            writer.add_tensor(t.name, common.dequantize_tensor(t))
    common.finish_writer(writer)


def check_variant(src: gguf.GGUFReader, out_path: Path, kind: str) -> dict:
    """Re-read a written variant and check it against the source. Returns a few statistics."""
    out = common.open_gguf(out_path)
    # Metadata: same keys, order, types and values, except general.file_type.
    src_keys = [k for k in src.fields if not common.is_pseudo_field(k)]
    out_keys = [k for k in out.fields if not common.is_pseudo_field(k)]
    if src_keys != out_keys:
        raise ToolError(f"{out_path}: metadata keys differ from the source: {set(src_keys) ^ set(out_keys)}")
    for k in src_keys:
        a = common.field_raw(src.fields[k])
        b = common.field_raw(out.fields[k])
        if k == "general.file_type":
            want = common.FILE_TYPE[{"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0}[kind]]
            if b != (want, VT.UINT32, None):
                raise ToolError(f"{out_path}: general.file_type is {b}, expected {want} (UINT32)")
        elif a != b:
            raise ToolError(f"{out_path}: metadata {k!r} differs from the source")
    if out.alignment != src.alignment:
        raise ToolError(f"{out_path}: alignment {out.alignment} != source {src.alignment}")

    # Tensors: same names, order and shapes; values as promised.
    if [t.name for t in src.tensors] != [t.name for t in out.tensors]:
        raise ToolError(f"{out_path}: tensor names/order differ from the source")
    max_change = 0.0
    for s, o in zip(src.tensors, out.tensors):
        if list(s.shape) != list(o.shape):
            raise ToolError(f"{out_path}: tensor {s.name} shape {list(o.shape)} != source {list(s.shape)}")
        if o.data_offset % out.alignment:
            raise ToolError(f"{out_path}: tensor {s.name} data is not {out.alignment}-byte aligned")
        if kind == "f32":
            if o.tensor_type != QT.F32:
                raise ToolError(f"{out_path}: tensor {s.name} is {o.tensor_type.name}, expected F32")
            if not np.array_equal(np.asarray(o.data).reshape(-1), common.dequantize_tensor(s).reshape(-1)):
                raise ToolError(f"{out_path}: tensor {s.name} is not the exact dequantization of the source")
        elif kind == "f16":
            matrix = len(s.shape) >= 2
            if o.tensor_type != (QT.F16 if matrix else QT.F32):
                raise ToolError(f"{out_path}: tensor {s.name} is {o.tensor_type.name}, expected {'F16' if matrix else 'F32'}")
            want = common.dequantize_tensor(s).reshape(-1)
            if matrix:
                want = want.astype(np.float16)
            if not np.array_equal(np.asarray(o.data).reshape(-1), want):
                raise ToolError(f"{out_path}: tensor {s.name} is not the {'f16 rounding of the ' if matrix else ''}"
                                "dequantization of the source")
        else:
            if s.tensor_type in (QT.Q8_0, QT.F32):
                if o.tensor_type != s.tensor_type or not np.array_equal(np.asarray(o.data), np.asarray(s.data)):
                    raise ToolError(f"{out_path}: tensor {s.name} should be a byte-for-byte copy of the source")
            else:
                expected_type = QT.Q8_0 if len(s.shape) >= 2 else QT.F32
                if o.tensor_type != expected_type:
                    raise ToolError(f"{out_path}: tensor {s.name} is {o.tensor_type.name}, expected {expected_type.name}")
                a = common.dequantize_tensor(s)
                b = common.dequantize_tensor(o)
                change = float(np.max(np.abs(a - b)))
                # Q8_0 error: half a step of the block scale d = amax/127, plus the f16 rounding of d
                # (|q| <= 127 times a relative 2^-11): at most d * (0.5 + 127/2048) < 0.57 d.
                blocks = a.reshape(-1, 32)
                bound = np.abs(blocks).max(axis=1) / 127 * 0.57 + 1e-7
                if np.any(np.abs((a - b).reshape(-1, 32)) > bound[:, None]):
                    raise ToolError(f"{out_path}: tensor {s.name}: Q8_0 error exceeds the quantization bound")
                max_change = max(max_change, change)
    return {"max_weight_change": max_change}


def make_variant(src_path: Path, out_path: Path, kind: str, force: bool = False, verify: bool = True) -> Path:
    """Write one variant ('f32', 'f16' or 'q8_0') of src_path to out_path (atomically). Returns out_path."""
    builders = {"f32": build_f32, "f16": build_f16, "q8_0": build_q8_0}
    if kind not in builders:
        raise ToolError(f"unknown variant {kind!r} (choose from {', '.join(builders)})")
    if out_path.exists() and not force:
        log(f"{out_path} exists, skipping (use --force to rebuild)")
        return out_path
    src = common.open_gguf(src_path)
    t0 = time.time()
    with common.atomic_output(out_path) as tmp:
        builders[kind](src, tmp)
        t1 = time.time()
        stats = check_variant(src, tmp, kind) if verify else {}
    extra = f", max weight change {stats['max_weight_change']:.4f}" if "max_weight_change" in stats and kind == "q8_0" else ""
    log(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB) in {t1 - t0:.1f}s"
        + (f", verified in {time.time() - t1:.1f}s" if verify else "") + extra)
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "From the cached SmolLM2-135M-Instruct.Q4_1.gguf write SmolLM2-135M-Instruct.F32.gguf and "
            "SmolLM2-135M-Instruct.Q8_0.gguf (as weights-tools/reference/README.md describes). Prints the paths."
        ),
    )
    parser.add_argument("--src", type=Path, default=None,
                        help="source GGUF (default: the cached Q4_1 file; fetched if missing)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output directory (default: $POCKETLM_CACHE or ~/.cache/pocketlm)")
    parser.add_argument("--only", choices=["f32", "q8_0", "f16"], action="append",
                        help="write only this variant (repeatable; default: f32 and q8_0, which the tests use; f16 "
                             "is for measuring F16 files, 271 MB)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--no-verify", action="store_true", help="skip re-reading and checking the written files")
    parser.add_argument("--sha256", action="store_true", help="also print each output's sha256")
    args = parser.parse_args(argv)

    src = common.source_model(args.src)
    out_dir = args.out_dir if args.out_dir is not None else common.cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)

    names = {"f32": common.SMOLLM2_F32_NAME, "q8_0": common.SMOLLM2_Q8_0_NAME, "f16": common.SMOLLM2_F16_NAME}
    if args.src is not None:  # derive names from the source's file name
        stem = src.name[:-5] if src.name.endswith(".gguf") else src.name
        base = stem.rsplit(".", 1)[0] if "." in stem else stem
        names = {"f32": f"{base}.F32.gguf", "q8_0": f"{base}.Q8_0.gguf", "f16": f"{base}.F16.gguf"}
    for kind in args.only or ["f32", "q8_0"]:
        out = out_dir / names[kind]
        if out.resolve() == src.resolve():
            raise ToolError(f"output {out} would overwrite the source")
        make_variant(src, out, kind, force=args.force, verify=not args.no_verify)
        print(f"{out}  {common.sha256_file(out)}" if args.sha256 else out)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
