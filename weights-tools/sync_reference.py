#!/usr/bin/env python3
"""Copy newer llama.cpp reference files from the shared workspace into weights-tools/reference/.

Why: the Swift tests and pytest read llama.cpp's recorded outputs from weights-tools/reference/, so
a plain clone of the repository has them. The files were first produced outside the repository
(../shared/reference, read-only, next to the checkout), and may be regenerated there; this script
brings such updates in and says what changed, so a difference is never silent.

For every regular file in the source directory (default: ../shared/reference beside the repo):
- missing in the repo copy            -> copied                         ("new")
- same bytes                          -> nothing                        ("same")
- different bytes, source newer mtime -> copied over the repo copy      ("updated")
- different bytes, repo copy newer    -> kept, reported ("differs: repo copy is newer, kept"); --force copies
Files only in the repo copy (e.g. reference data made by weights-tools' own scripts, or another
engineer's tokenizer references) are listed as "repo only" and never deleted.

Copies are written atomically (temp file + rename), keep the source's mtime (so the next run sees
them as the same age) and get mode 0644 (the shared files are read-only; the repo copy must stay
editable). --check reports without copying and exits 1 if anything would be copied or differs.
Output: one line per file on stdout, `STATUS  NAME  details`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import common
from common import ToolError

TOOLS_DIR = Path(__file__).resolve().parent
REPO_REFERENCE = TOOLS_DIR / "reference"
#: ../shared/reference beside the repository (the workspace layout: /work/main and /work/shared).
DEFAULT_SOURCE = TOOLS_DIR.parent.parent / "shared" / "reference"


@dataclass
class Entry:
    name: str
    status: str  # new | updated | same | differs | repo-only
    detail: str = ""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_difference(src: Path, dst: Path) -> str:
    """A short, useful account of how two versions differ (sizes, hashes; for JSON the top-level keys)."""
    parts = [f"{dst.stat().st_size} -> {src.stat().st_size} bytes", f"sha256 {_sha(dst)[:12]} -> {_sha(src)[:12]}"]
    if src.suffix == ".json":
        try:
            a, b = json.loads(dst.read_text()), json.loads(src.read_text())
        except (OSError, ValueError):
            return ", ".join(parts)
        if isinstance(a, dict) and isinstance(b, dict):
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            parts.append(f"top-level keys changed: {', '.join(changed) or 'none (formatting only)'}")
            ra, rb = a.get("records"), b.get("records")
            if isinstance(ra, list) and isinstance(rb, list):
                parts.append(f"records {len(ra)} -> {len(rb)}")
    return ", ".join(parts)


def _copy(src: Path, dst: Path) -> None:
    with common.atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
    os.chmod(dst, 0o644)
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def sync(source: Path = DEFAULT_SOURCE, dest: Path = REPO_REFERENCE, *, check: bool = False,
         force: bool = False) -> list[Entry]:
    """Bring `dest` up to date with `source` (see the module docstring); returns one Entry per file."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise ToolError(f"reference source {source} is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    src_names = sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in src_names:
        s, d = source / name, dest / name
        if not d.exists():
            if not check:
                _copy(s, d)
            entries.append(Entry(name, "new", f"{s.stat().st_size} bytes"))
            continue
        if s.read_bytes() == d.read_bytes():
            entries.append(Entry(name, "same"))
            continue
        detail = describe_difference(s, d)
        if s.stat().st_mtime_ns > d.stat().st_mtime_ns or force:
            if not check:
                _copy(s, d)
            entries.append(Entry(name, "updated", detail))
        else:
            entries.append(Entry(name, "differs", f"repo copy is newer, kept (--force copies): {detail}"))
    for p in sorted(dest.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name not in src_names:
            entries.append(Entry(p.name, "repo-only"))
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy newer llama.cpp reference files into weights-tools/reference/ "
                                                 "and report what differs.")
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help=f"directory to copy from (default: {DEFAULT_SOURCE})")
    parser.add_argument("--dest", type=Path, default=REPO_REFERENCE, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if anything is new, updated or differs")
    parser.add_argument("--force", action="store_true", help="also overwrite repo copies that are newer than the source")
    args = parser.parse_args(argv)
    entries = sync(args.source, args.dest, check=args.check, force=args.force)
    for e in entries:
        print(f"{e.status:9} {e.name}" + (f"  {e.detail}" if e.detail else ""))
    pending = [e for e in entries if e.status in ("new", "updated", "differs")]
    return 1 if args.check and pending else 0


if __name__ == "__main__":
    common.run_cli(main)
