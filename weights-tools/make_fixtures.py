#!/usr/bin/env python3
"""Write the small, deterministic fixture files the Swift tests read.

Why: the Swift tests must not depend on Python at test time or on the 100 MB real model for their
fast paths, so this script precomputes everything they compare against, with gguf-py and the
float64 numpy reference (reference.py) as the independent oracles:

  dequant.gguf              for each supported type T in f32, f16, bf16, q8_0, q4_0, q4_1:
                            `T.w`        7 rows x 96 columns (GGUF shape [96, 7]) stored as T
                                         (quantized by gguf-py), and
                            `T.expected` gguf.quants.dequantize(`T.w`) stored as F32, same shape.
                            The data include zeros, all-zero and constant blocks, large magnitudes
                            (up to +-60000, still finite in f16), all-negative blocks, single outliers
                            and f16-subnormal-sized values.
  tiny-<t>.gguf             tiny random llama models (make_test_model.py, seed 42, same weights up to
                            quantization) for t in f32, f16, bf16, q8_0, q4_0, q4_1, plus
                            tiny-f32-untied.gguf (separate output.weight).
  tiny-<name>.ref.json      reference.py logits for each tiny model over a fixed list of 12 token ids:
                            {"model": "<file name>", "tokens": [...], "logits": [[n_vocab floats] x 12]}.
  tiny-ls.gguf              layer sharing: tiny-q8_0.gguf (2 blocks) plus the metadata
                            pocketlm.layer_schedule.strategy = "immediate", .repeats = 2 (MobileLLM-LS).
  tiny-ls-unrolled.gguf     its physically unrolled twin: 4 blocks, blk.0 and blk.1 byte copies of
                            tiny-ls's blk.0, blk.2 and blk.3 of its blk.1; block_count 4, strategy "none",
                            repeats 1; every other tensor and metadata key byte-identical (same order).
  tiny-unrolled-repeat-all.gguf, tiny-unrolled-reverse.gguf
                            the same for the other schedules: blocks 0,1,0,1 and 0,1,1,0. Running tiny-ls
                            with a schedule must give bit-identical logits to running its twin plainly,
                            in a batch and token by token (each pass needs its own KV-cache slot).
  tiny-ls.ref.json          reference.py logits of tiny-ls.gguf under its recorded schedule (computed on
                            tiny-ls-unrolled.gguf, which reference.py runs plainly).
  unsupported-type.gguf     a valid tiny f32 model except that blk.0.ffn_up.weight is stored as MXFP4;
                            the Swift reader must reject it, naming that tensor and type.
  manifest.json             what each file is, its sha256, the tiny model config, the token list and
                            per model the reference argmax and smallest top1-top2 logit margin.

Everything is derived from fixed seeds, so two runs produce byte-identical files. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
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
import make_test_model
import reference

DEQUANT_TYPES = (
    ("f32", QT.F32), ("f16", QT.F16), ("bf16", QT.BF16),
    ("q8_0", QT.Q8_0), ("q4_0", QT.Q4_0), ("q4_1", QT.Q4_1),
)
DEQUANT_ROWS, DEQUANT_COLS = 7, 96
DEQUANT_SEED = 1234

TINY_SEED = 42
#: (fixture name, --outtype, untied)
TINY_MODELS = (
    ("f32", "f32", False),
    ("f16", "f16", False),
    ("bf16", "bf16", False),
    ("q8_0", "q8_0", False),
    ("q4_0", "q4_0", False),
    ("q4_1", "q4_1", False),
    ("f32-untied", "f32", True),
)
#: The reference token list: <|im_start|> followed by the start of a plain English sentence
#: (encoded with the tiny vocab's BPE, so it mixes merged and single-byte tokens).
TOKENS_TEXT = "The capital of France is Paris. Once upon a time"
N_TOKENS = 12

#: Layer-sharing fixtures: the shared model is derived from this tiny model (q8_0, 2 blocks).
LS_BASE = "tiny-q8_0.gguf"
LS_FILE = "tiny-ls.gguf"
LS_STRATEGY, LS_REPEATS = "immediate", 2
#: (file, schedule it unrolls, source block of each block of the file)
UNROLLED_MODELS = (
    ("tiny-ls-unrolled.gguf", "immediate", (0, 0, 1, 1)),
    ("tiny-unrolled-repeat-all.gguf", "repeat-all", (0, 1, 0, 1)),
    ("tiny-unrolled-reverse.gguf", "reverse", (0, 1, 1, 0)),
)
SCHEDULE_STRATEGY_KEY = "pocketlm.layer_schedule.strategy"
SCHEDULE_REPEATS_KEY = "pocketlm.layer_schedule.repeats"

UNSUPPORTED_TENSOR = "blk.0.ffn_up.weight"
UNSUPPORTED_TYPE = QT.MXFP4  # a format ggml defines (so the file reads) that PocketLM does not compute with


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dequant_data(seed: int = DEQUANT_SEED) -> np.ndarray:
    """7 x 96 float32 test matrix; every row has 3 blocks of 32 with different characters."""
    rng = np.random.default_rng(seed)
    r, c = DEQUANT_ROWS, DEQUANT_COLS
    x = np.zeros((r, c), dtype=np.float64)
    x[0] = rng.standard_normal(c)                                   # ordinary N(0, 1)
    x[1, :32] = 0.0                                                 # all-zero block (scale 0)
    x[1, 32:64] = rng.standard_normal(32) * 0.1
    x[1, 64:] = np.where(rng.random(32) < 0.5, 0.0, rng.standard_normal(32))  # half exact zeros
    x[2] = rng.uniform(1000, 60000, c) * rng.choice([-1.0, 1.0], c)  # large magnitudes, both signs
    x[2, 5], x[2, 40], x[2, 70] = 60000.0, -60000.0, 0.0
    x[3] = -rng.uniform(0.5, 3.0, c)                                # all negative
    x[4] = rng.standard_normal(c) * 0.01                            # one big outlier per block
    x[4, 3], x[4, 35], x[4, 90] = 100.0, -250.0, 7.5
    x[5, :32] = rng.uniform(-1e-6, 1e-6, 32)                        # f16-subnormal magnitudes
    x[5, 32:64] = rng.uniform(-1e-4, 1e-4, 32)
    x[5, 64:] = rng.standard_normal(32) * 1e3
    x[6, :32] = 0.75                                                # constant block (max == min)
    x[6, 32:64] = np.round(rng.uniform(-4, 4, 32) * 2) / 2          # halves: rounding ties
    x[6, 64:] = -rng.uniform(0, 1, 32) ** 3 * 5
    return x.astype(np.float32)


def quantize_as(data: np.ndarray, qtype: QT) -> tuple[np.ndarray, QT | None]:
    if qtype == QT.F32:
        return data.astype(np.float32), None
    if qtype == QT.F16:
        return data.astype(np.float16), None
    return gguf.quants.quantize(data, qtype), qtype


def write_dequant(path: Path) -> None:
    data = dequant_data()
    with common.atomic_output(path) as tmp:
        w = gguf.GGUFWriter(tmp, "pocketlm-fixture")
        w.add_key_value("general.description",
                        "PocketLM dequantization fixture: <type>.w stored as <type>, <type>.expected = "
                        "gguf.quants.dequantize(<type>.w) as F32", VT.STRING)
        for name, qtype in DEQUANT_TYPES:
            stored, raw = quantize_as(data, qtype)
            expected = gguf.quants.dequantize(stored.view(np.uint8) if raw else stored, qtype)
            expected = np.asarray(expected, dtype=np.float32).reshape(DEQUANT_ROWS, DEQUANT_COLS)
            if not np.all(np.isfinite(expected)):
                raise ToolError(f"dequant fixture {name}: non-finite values")
            w.add_tensor(f"{name}.w", stored, raw_dtype=raw)
            w.add_tensor(f"{name}.expected", expected)
        common.finish_writer(w)

    # Re-read and check: types, GGUF shapes and expected == dequantize(stored as read back).
    rd = common.open_gguf(path)
    tensors = {t.name: t for t in rd.tensors}
    for name, qtype in DEQUANT_TYPES:
        t, e = tensors[f"{name}.w"], tensors[f"{name}.expected"]
        assert t.tensor_type == qtype and e.tensor_type == QT.F32, name
        assert list(t.shape) == [DEQUANT_COLS, DEQUANT_ROWS] and list(e.shape) == [DEQUANT_COLS, DEQUANT_ROWS], name
        again = common.dequantize_tensor(t).reshape(DEQUANT_ROWS, DEQUANT_COLS)
        if not np.array_equal(again, np.asarray(e.data).reshape(DEQUANT_ROWS, DEQUANT_COLS)):
            raise ToolError(f"dequant fixture {name}: expected != dequantize(stored) after re-reading")


def fixture_tokens() -> list[int]:
    vocab = make_test_model.build_vocab()
    toks = ([1] + vocab.encode(TOKENS_TEXT))[:N_TOKENS]
    if len(toks) != N_TOKENS or any(not 0 <= t < len(vocab.tokens) for t in toks):
        raise ToolError(f"bad fixture token list {toks}")
    return toks


def write_ref(model_path: Path, tokens: list[int], out: Path) -> np.ndarray:
    logits = reference.forward(model_path, tokens)
    doc = reference.reference_json(model_path.name, tokens, logits)
    with common.atomic_output(out) as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f)
            f.write("\n")
    return logits


def split_blocks(reader) -> tuple[list, dict[int, list], list]:
    """A GGUF's tensors as (before the blocks, {block: [(suffix, tensor)]}, after the blocks), in file order."""
    pre: list = []
    blocks: dict[int, list] = {}
    post: list = []
    for t in reader.tensors:
        if t.name.startswith("blk."):
            _, idx, suffix = t.name.split(".", 2)
            if post:
                raise ToolError(f"tensor {t.name} comes after the non-block tensors")
            blocks.setdefault(int(idx), []).append((suffix, t))
        else:
            (post if blocks else pre).append(t)
    return pre, blocks, post


def copy_tensor(writer: gguf.GGUFWriter, name: str, tensor) -> None:
    """Add a reader tensor under `name` with its exact bytes and type."""
    data = np.array(tensor.data)  # a copy: the writer keeps it until finish_writer
    if data.dtype == np.uint8:
        writer.add_tensor(name, data, raw_dtype=tensor.tensor_type)
    else:
        writer.add_tensor(name, data)


def write_rescheduled(src: Path, dst: Path, block_order: Sequence[int], strategy: str, repeats: int) -> None:
    """Copy `src` with blocks rearranged: block j of `dst` is a byte copy of block block_order[j] of `src`.

    Metadata is copied in order with identical types; only `<arch>.block_count` and the two
    pocketlm.layer_schedule keys change (appended at the end if the source lacks them).
    """
    rd = common.open_gguf(src)
    arch = common.require_value(rd, "general.architecture", src)
    pre, blocks, post = split_blocks(rd)
    missing = sorted(set(block_order) - set(blocks))
    if missing:
        raise ToolError(f"{src}: no block(s) {missing}")
    with common.atomic_output(dst) as tmp:
        w = gguf.GGUFWriter(tmp, arch)
        common.copy_metadata(rd, w, overrides={
            f"{arch}.block_count": (len(block_order), VT.UINT32),
            SCHEDULE_STRATEGY_KEY: (strategy, VT.STRING),
            SCHEDULE_REPEATS_KEY: (repeats, VT.UINT32),
        })
        for t in pre:
            copy_tensor(w, t.name, t)
        for j, b in enumerate(block_order):
            for suffix, t in blocks[b]:
                copy_tensor(w, f"blk.{j}.{suffix}", t)
        for t in post:
            copy_tensor(w, t.name, t)
        common.finish_writer(w)


def make_fixtures(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    write_dequant(out_dir / "dequant.gguf")
    files["dequant.gguf"] = (
        "tensors <t>.w [96, 7] stored as t and <t>.expected (F32 dequantization) for t in "
        + ", ".join(n for n, _ in DEQUANT_TYPES)
    )

    tokens = fixture_tokens()
    cfg_doc = None
    models: dict[str, dict] = {}
    for name, outtype, untied in TINY_MODELS:
        cfg = make_test_model.TinyConfig(untied=untied)
        model = out_dir / f"tiny-{name}.gguf"
        make_test_model.write_test_model(model, outtype, TINY_SEED, cfg)
        logits = write_ref(model, tokens, out_dir / f"tiny-{name}.ref.json")
        files[model.name] = f"tiny llama, matrices {outtype.upper()}, {'untied output.weight' if untied else 'tied head'}, seed {TINY_SEED}"
        files[f"tiny-{name}.ref.json"] = f"reference.py float64 logits of {model.name} over the manifest's tokens"
        top1 = logits.argmax(axis=-1)
        top2 = np.sort(logits, axis=-1)[:, -2:]
        models[model.name] = {
            "outtype": outtype, "untied": untied, "ref": f"tiny-{name}.ref.json",
            "argmax": top1.tolist(),
            # smallest gap between best and second-best logit over the positions: argmax checks
            # are only meaningful when the runtime's error is well below this.
            "min_top1_top2_margin": float(np.min(top2[:, 1] - top2[:, 0])),
        }
        log(f"tiny-{name}: logits in [{logits.min():.2f}, {logits.max():.2f}], argmax {top1.tolist()}")
        if cfg_doc is None:
            cfg_doc = {
                "layers": cfg.layers, "dim": cfg.dim, "heads": cfg.heads, "kv_heads": cfg.kv_heads,
                "head_dim": cfg.head_dim, "ffn": cfg.ffn, "context": cfg.context,
                "n_vocab": len(make_test_model.build_vocab(cfg.merges).tokens),
                "n_merges": len(make_test_model.build_vocab(cfg.merges).merges),
                "rope_freq_base": cfg.rope_base, "rms_eps": cfg.eps, "seed": TINY_SEED,
            }

    # Layer sharing: the shared model and its unrolled twins (byte copies of its blocks).
    ls = out_dir / LS_FILE
    write_rescheduled(out_dir / LS_BASE, ls, (0, 1), LS_STRATEGY, LS_REPEATS)
    files[ls.name] = (f"{LS_BASE} (2 blocks) with {SCHEDULE_STRATEGY_KEY}={LS_STRATEGY!r}, "
                      f"{SCHEDULE_REPEATS_KEY}={LS_REPEATS}")
    unrolled: dict[str, dict] = {}
    for name, strategy, order in UNROLLED_MODELS:
        write_rescheduled(ls, out_dir / name, order, "none", 1)
        files[name] = (f"{LS_FILE} unrolled for schedule {strategy}x{LS_REPEATS}: blocks are byte copies of "
                       f"its blocks {list(order)}; strategy 'none'")
        unrolled[strategy] = {"file": name, "blocks": list(order)}
    ls_ref = LS_FILE.replace(".gguf", ".ref.json")
    logits = reference.forward(out_dir / UNROLLED_MODELS[0][0], tokens)
    with common.atomic_output(out_dir / ls_ref) as tmp:
        with open(tmp, "w") as f:
            json.dump(reference.reference_json(LS_FILE, tokens, logits), f)
            f.write("\n")
    files[ls_ref] = (f"reference.py float64 logits of {LS_FILE} under its recorded schedule "
                     f"(computed on {UNROLLED_MODELS[0][0]})")
    top2 = np.sort(logits, axis=-1)[:, -2:]
    layer_sharing = {
        "shared": LS_FILE, "base": LS_BASE, "strategy": LS_STRATEGY, "repeats": LS_REPEATS,
        "metadata_keys": [SCHEDULE_STRATEGY_KEY, SCHEDULE_REPEATS_KEY],
        "ref": ls_ref, "argmax": logits.argmax(axis=-1).tolist(),
        "min_top1_top2_margin": float(np.min(top2[:, 1] - top2[:, 0])),
        "unrolled": unrolled,
    }
    log(f"{LS_FILE}: argmax {layer_sharing['argmax']} (plain {LS_BASE}: {models[LS_BASE]['argmax']})")

    bad = out_dir / "unsupported-type.gguf"
    make_test_model.write_test_model(
        bad, "f32", TINY_SEED, make_test_model.TinyConfig(tensor_types={UNSUPPORTED_TENSOR: UNSUPPORTED_TYPE}))
    files[bad.name] = f"tiny f32 llama except {UNSUPPORTED_TENSOR} is {UNSUPPORTED_TYPE.name} (must be rejected)"

    manifest = {
        "generator": "weights-tools/make_fixtures.py",
        "tiny_config": cfg_doc,
        "tokens": tokens,
        "models": models,
        "layer_sharing": layer_sharing,
        "unsupported": {"file": bad.name, "tensor": UNSUPPORTED_TENSOR, "type": UNSUPPORTED_TYPE.name},
        "dequant": {"file": "dequant.gguf", "rows": DEQUANT_ROWS, "cols": DEQUANT_COLS,
                    "types": [n for n, _ in DEQUANT_TYPES]},
        "files": {name: {"description": desc, "sha256": common.sha256_file(out_dir / name)}
                  for name, desc in files.items()},
    }
    with common.atomic_output(out_dir / "manifest.json") as tmp:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the deterministic GGUF/JSON fixtures the Swift tests read (dequant.gguf, tiny-*.gguf "
                    "incl. the layer-sharing tiny-ls*.gguf / tiny-unrolled-*.gguf, tiny-*.ref.json, "
                    "unsupported-type.gguf, manifest.json).",
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="directory to write into (created if missing)")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise ToolError(f"--out-dir {args.out_dir} exists and is not a directory")
    t0 = time.time()
    manifest = make_fixtures(args.out_dir)
    log(f"wrote {len(manifest['files']) + 1} files to {args.out_dir} in {time.time() - t0:.1f}s")
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
