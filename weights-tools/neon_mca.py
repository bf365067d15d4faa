#!/usr/bin/env python3
"""llvm-mca estimates of the NEON hot loops (ARM speed cannot be measured on this x86 machine).

Compiles Sources/CKernels/arm/*.c for AArch64 with clang at -O2 -mcpu=<cpu>, finds each hot function's innermost
loop (the shortest backward-branch loop holding its key instruction), and asks llvm-mca-14 for the cycles per
iteration on that CPU's scheduling model. One iteration of a matmul loop is one 32-element block of 4 weight rows
against one input, so bytes of weights per cycle follow, and with a clock rate the single-core decode rate those
loops allow for SmolLM2-135M (bytes of weights per token), beside what the chip's memory bandwidth allows.

    python3 weights-tools/neon_mca.py            # apple-m1 and cortex-a78
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CPUS = {  # llvm-mca model, clock (GHz), memory bandwidth (GB/s): published figures, for the bound only
    "apple-m1": (3.2, 68.0),
    "cortex-a78": (3.0, 51.2),   # e.g. Snapdragon 888 class: LPDDR5-6400, 4 × 16-bit
}
# (function, key instruction, unused, what one iteration is)
LOOPS = [
    ("pl_neon_dotprod_matmul_q", "sdot", None, "one 32-element block × 4 rows, dotprod"),
    ("pl_neon_matmul_q", "smull", None, "one 32-element block × 4 rows, plain NEON"),
    ("pl_neon_quantize_q8", "frintn", None, "one 32-element block of activations"),
    ("pl_neon_expf", "frinta", None, "4 floats"),
]
# SmolLM2-135M weight bytes read per decoded token (PocketLM's bench), per type of the file.
MODEL_BYTES = {"Q8_0": (145e6, 34)}
# The K-quant row bodies (one call per row and input): one iteration of the loop is one 256-element super-block of
# one row, `bytes` of weights. (symbol, key instruction, type, bytes per super-block)
K_LOOPS = [
    ("neon_kl_dotprod_q2k", "sdot", "Q2_K", 84), ("neon_kl_q2k", "smull", "Q2_K", 84),
    ("neon_kl_dotprod_q3k", "sdot", "Q3_K", 110), ("neon_kl_q3k", "smull", "Q3_K", 110),
    ("neon_k_dotprod_q4k", "sdot", "Q4_K", 144), ("neon_k_q4k", "smull", "Q4_K", 144),
    ("neon_kl_dotprod_q5k", "sdot", "Q5_K", 176), ("neon_kl_q5k", "smull", "Q5_K", 176),
    ("neon_k_dotprod_q6k", "sdot", "Q6_K", 210), ("neon_k_q6k", "smull", "Q6_K", 210),
]
# Weight elements SmolLM2-135M reads per token (145 MB of Q8_0 at 34 bytes per 32): a K-quant type's bytes per token
# if every matrix were that type, for the bound a K-quant loop implies.
MODEL_ELEMS = 145e6 / 34 * 32
# Other loops: (function, key instruction, what one iteration is)
OTHER_LOOPS = [
    ("pl_neon_quantize_q8_K_block", "fcvtns", "16 floats of a Q8_K block (one 16-group: quants and its sum)"),
    ("pl_neon_bundle_gate_up", "sdot", "one 32-element block × 4 rows (2 bundles' gate+up), dotprod"),
    ("pl_neon_bundle_gate_up", "smull", "one 32-element block × 4 rows (2 bundles' gate+up), plain NEON"),
    ("pl_neon_bundle_down", "smlal", "8 down rows × one 4-neuron lane"),
]


def asm_for(cpu: str) -> str:
    srcs = [str(p) for p in sorted((REPO / "Sources/CKernels/arm").glob("*.c"))]
    out = []
    for src in srcs:
        cmd = ["clang", "--target=aarch64-linux-gnu", f"-mcpu={cpu}", "-O2", "-S", "-o", "-",
               "-I", str(REPO / "Sources/CKernels/include"), "-I", str(REPO / "Sources/CKernels"), src]
        out.append(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return "\n".join(out)


def function_body(asm: str, name: str) -> list[str]:
    lines = asm.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(name + ":"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip().startswith(".size") and name in lines[i])
    return lines[start:end]


def innermost_loop(body: list[str], key: str) -> list[str]:
    labels = {l.split(":")[0]: i for i, l in enumerate(body) if re.match(r"^\.LBB\w+:", l)}
    best = None
    for j, l in enumerate(body):
        m = re.match(r"\s+b(\.\w+)?\s+(\.LBB\w+)", l) or re.match(r"\s+(cbn?z|tbn?z)\s+.*,\s*(\.LBB\w+)", l)
        if not m:
            continue
        target = m.group(2)
        if target in labels and labels[target] < j:
            loop = body[labels[target] + 1:j + 1]
            if any(key in x for x in loop) and (best is None or len(loop) < len(best)):
                best = loop
    if best is None:
        raise SystemExit(f"no loop with {key} found")
    return [x for x in best if x.strip() and not x.strip().startswith((".", "//", "@"))]


def mca(cpu: str, loop: list[str]) -> float:
    text = "\n".join(loop) + "\n"
    out = subprocess.run(["llvm-mca-14", "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}", "-iterations=200"],
                         input=text, capture_output=True, text=True, check=True).stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    return cycles / 200


def main() -> None:
    for cpu, (ghz, bw) in CPUS.items():
        asm = asm_for(cpu)
        print(f"== {cpu} (llvm-mca-14 model; {ghz} GHz, {bw} GB/s memory assumed for the bounds)")
        for func, key, _, what in LOOPS:
            loop = innermost_loop(function_body(asm, func), key)
            c = mca(cpu, loop)
            line = f"{func:28} {c:6.2f} cycles/iteration ({len(loop)} instructions; {what})"
            if "matmul" in func:
                # The shortest loop with the key instruction is the Q8_0 instantiation (no nibbles to unpack):
                # 4 rows × 34 bytes per iteration.
                per_token, block = MODEL_BYTES["Q8_0"]
                gbs = 4 * block / c * ghz
                line += (f"\n    Q8_0 rows: {gbs:.1f} GB/s of weights per core = {gbs * 1e9 / per_token:.0f} tok/s per core "
                         f"for SmolLM2 Q8_0 ({per_token / 1e6:.0f} MB/token); memory bound {bw * 1e9 / per_token:.0f} tok/s")
            print(line)
        for func, key, typ, nbytes in K_LOOPS:
            loop = innermost_loop(function_body(asm, func), key)
            c = mca(cpu, loop)
            gbs = nbytes / c * ghz
            per_token = MODEL_ELEMS * nbytes / 256
            print(f"{func:28} {c:6.2f} cycles/iteration ({len(loop)} instructions; one {typ} super-block, {nbytes} B)"
                  f"\n    {typ} rows: {gbs:.1f} GB/s of weights per core = {gbs * 1e9 / per_token:.0f} tok/s per core if "
                  f"SmolLM2-135M were all {typ} ({per_token / 1e6:.0f} MB/token); memory bound {bw * 1e9 / per_token:.0f} tok/s")
        for func, key, what in OTHER_LOOPS:
            loop = innermost_loop(function_body(asm, func), key)
            print(f"{func:28} {mca(cpu, loop):6.2f} cycles/iteration ({len(loop)} instructions; {what})")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        CPUS = {c: CPUS.get(c, (3.0, 50.0)) for c in sys.argv[1:]}
    main()
