#!/usr/bin/env python3
"""Write a layer-truncated copy of a cached SmolLM2 GGUF: a draft model for speculative decoding tests.

Why: `pocketlm run --speculate draft:MODEL.gguf` needs a smaller model with the same vocabulary. A copy of
SmolLM2-135M-Instruct that keeps some of its 30 blocks shares the tokenizer, the embeddings and the head.
It is a test fixture, not a useful drafter: nothing is retrained, and this small model tolerates little
cutting. Measured greedy agreement with the full model on a story prompt: keeping blocks 0-5 and 28-29, or
0-19, or every other middle block: 0% of drafts accepted (the output degenerates); without blocks 14-17 (the
default, 26 blocks, ~87% of the full model's cost): ~25%, so drafts are both accepted and rejected.

Tensors are copied byte for byte (quantized blocks stay as they are), metadata is copied key by key with
`<arch>.block_count` set to the number of kept blocks. The output is deterministic, so its sha256 is pinned
for the default choice; written atomically into the model cache (never the repository). Prints the path.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import common
from common import GGUFValueType as VT
from common import ToolError

import gguf

DEFAULT_SOURCE = common.SMOLLM2_Q4_1_NAME
DEFAULT_KEEP = "0-13,18-29"
# sha256 of the default output (the Q4_1 source without blocks 14-17), checked after every write.
PINNED = {
    (DEFAULT_SOURCE, DEFAULT_KEEP): "8492e13f4f2efed72ff1da5d22fa1ab39ce1fec0429c90d558116f5ea5963ae8",
}


def parse_keep(spec: str, blocks: int) -> list[int]:
    """'0-5,28-29' -> [0, 1, 2, 3, 4, 5, 28, 29]; ascending, no repeats, each < blocks."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ToolError(f"--keep: {part!r} is not a block number or a range like 0-5")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ToolError(f"--keep: range {part!r} runs backwards")
        out.extend(range(lo, hi + 1))
    if out != sorted(set(out)):
        raise ToolError(f"--keep: blocks must ascend without repeats, got {spec!r}")
    if not out or out[-1] >= blocks:
        raise ToolError(f"--keep: the model has blocks 0-{blocks - 1}, got {spec!r}")
    return out


def output_name(source: Path, keep: list[int]) -> str:
    stem = source.name[:-5] if source.name.endswith(".gguf") else source.name
    base, _, quant = stem.rpartition(".")
    return f"{base}.draft{len(keep)}.{quant}.gguf"


def truncate(src_path: Path, out_path: Path, keep: list[int]) -> None:
    reader = common.open_gguf(src_path)
    arch = common.field_value(reader, "general.architecture")
    blocks = int(common.require_value(reader, f"{arch}.block_count", src_path))
    if keep[-1] >= blocks:
        raise ToolError(f"{src_path} has {blocks} blocks; cannot keep block {keep[-1]}")
    renumber = {old: new for new, old in enumerate(keep)}
    with common.atomic_output(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        common.copy_metadata(reader, writer, overrides={f"{arch}.block_count": (len(keep), VT.UINT32)})
        for t in reader.tensors:
            m = re.match(r"blk\.(\d+)\.(.*)", t.name)
            name = t.name
            if m:
                old = int(m.group(1))
                if old not in renumber:
                    continue
                name = f"blk.{renumber[old]}.{m.group(2)}"
            data = np.asarray(t.data)
            if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                writer.add_tensor(name, data)
            else:
                writer.add_tensor(name, data.view(np.uint8), raw_dtype=t.tensor_type)
        common.finish_writer(writer)
        check = common.open_gguf(tmp)
        if int(common.field_value(check, f"{arch}.block_count")) != len(keep):
            raise ToolError(f"{out_path}: block_count was not written")
        kept = {t.name for t in check.tensors if t.name.startswith("blk.")}
        if {n.split(".")[1] for n in kept} != {str(i) for i in range(len(keep))}:
            raise ToolError(f"{out_path}: blocks are not 0..{len(keep) - 1}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a layer-truncated SmolLM2 (a draft model) into the model cache.")
    parser.add_argument("--src", type=Path, default=None, help=f"source GGUF (default: the cached {DEFAULT_SOURCE})")
    parser.add_argument("--keep", default=DEFAULT_KEEP, help=f"blocks to keep, e.g. 0-5,28-29 (default {DEFAULT_KEEP})")
    parser.add_argument("--out", type=Path, default=None, help="output path (default: beside the source in the cache)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = parser.parse_args(argv)

    src = common.source_model(args.src)
    reader = common.open_gguf(src)
    arch = common.field_value(reader, "general.architecture")
    keep = parse_keep(args.keep, int(common.require_value(reader, f"{arch}.block_count", src)))
    out = args.out or (common.cache_dir() / output_name(src, keep))
    if not out.exists() or args.force:
        truncate(src, out, keep)
    pinned = PINNED.get((src.name, args.keep))
    if pinned is not None:
        digest = common.sha256_file(out)
        if digest != pinned:
            raise ToolError(f"{out}: sha256 {digest} is not the pinned {pinned} (delete it and run again)")
    print(out)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
