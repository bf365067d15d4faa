#!/usr/bin/env python3
"""Tiny Hugging Face checkpoints converted by convert_hf.py, with logits from a float64 forward pass in Hugging
Face's own convention (rotate-half RoPE): the Swift suite runs the converted GGUFs and compares, which proves
the Q/K permutation end to end (weights-tools/tests/test_convert_hf.py proves it against reference.py).

    python3 weights-tools/make_hf_fixture.py --out-dir .fixtures
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

import convert_hf  # noqa: E402
from test_convert_hf import TOKENS, hf_config, hf_forward, make_checkpoint  # noqa: E402  (the checkpoint builders)

CASES = {
    # name: (architecture, checkpoint options, HF layer order for the forward pass)
    "hf-mobilellm-ls": ("MobileLLMForCausalLM", {"layer_sharing": True}, [0, 0, 1, 1]),
    "hf-llama-untied": ("LlamaForCausalLM", {"untied": True, "shards": 2}, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (arch, opts, order) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / name
            cfg_changes = {k: v for k, v in opts.items() if k not in ("untied", "shards")}
            weights = make_checkpoint(ckpt, arch, seed=7, untied=opts.get("untied", False),
                                      shards=opts.get("shards", 1), **cfg_changes)
            cfg = json.loads((ckpt / "config.json").read_text())
            convert_hf.convert(ckpt, out / f"{name}.gguf", "f32", progress=False)
        logits = hf_forward(weights, cfg, TOKENS, layer_order=order)
        (out / f"{name}.hf.json").write_text(json.dumps({"tokens": TOKENS, "logits": logits.tolist()}))
    print(f"wrote {len(CASES)} converted checkpoints to {out}")


if __name__ == "__main__":
    main()
