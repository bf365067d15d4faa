"""Calibration tokens for train_predictor.py: the text files it fits on, tokenized by the runtime's own tokenizer.

The default calibration text is every regular file in /usr/share/common-licenses except GPL-3 (held out for the
predictor's evaluation; symlinks are skipped, they only duplicate files); each file is tokenized on its own with
`pocketlm tokenize --json --text=...`, in pieces that fit one argv string, and the ids concatenated. A tokens file
(a JSON list of ids, or `pocketlm tokenize --json`'s object) can stand in for the text.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Sequence

from common import ToolError

DEFAULT_CALIBRATION_DIR = Path("/usr/share/common-licenses")
HELD_OUT_NAMES = ("GPL-3",)
#: Linux limits one argv string to 128 KiB (MAX_ARG_STRLEN); longer files are tokenized in pieces.
MAX_TEXT_BYTES = 100_000

def default_calibration_files() -> list[Path]:
    d = DEFAULT_CALIBRATION_DIR
    if not d.is_dir():
        raise ToolError(f"no calibration text: {d} does not exist (pass --calibration FILE or --tokens-file)")
    held_out = {(d / n).resolve() for n in HELD_OUT_NAMES}
    files = [p for p in sorted(d.iterdir())
             if not p.is_symlink() and p.is_file() and p.name not in HELD_OUT_NAMES and p.resolve() not in held_out]
    if not files:
        raise ToolError(f"no calibration text: no regular files in {d}")
    return files


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Cut text into pieces of at most `limit` UTF-8 bytes, at line ends where possible."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if current and size + n > limit:
            pieces.append("".join(current))
            current, size = [], 0
        while n > limit:  # one absurdly long line
            cut = len(line) // 2
            pieces.extend(split_text(line[:cut], limit))
            line = line[cut:]
            n = len(line.encode("utf-8"))
        current.append(line)
        size += n
    if current:
        pieces.append("".join(current))
    return pieces


def tokenize_text(pocketlm: Path, model: Path, text: str) -> list[int]:
    cmd = [str(pocketlm), "tokenize", "--model", str(model), "--json", f"--text={text}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except OSError as exc:
        raise ToolError(f"cannot run {pocketlm}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{pocketlm} tokenize timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ToolError(f"{pocketlm} tokenize failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}")
    try:
        ids = json.loads(proc.stdout)["ids"]
    except (ValueError, KeyError, TypeError):
        raise ToolError(f"{pocketlm} tokenize printed no JSON object with 'ids'") from None
    return [int(t) for t in ids]


def calibration_tokens(files: Sequence[Path], pocketlm: Path, model: Path, limit: int) -> tuple[list[int], list[str]]:
    """Token ids of the files' texts in order (each file tokenized on its own), stopping after `limit`."""
    texts: list[tuple[str, str]] = []
    for f in files:
        if not f.is_file():
            raise ToolError(f"calibration file not found: {f}")
        try:
            text = f.read_bytes().decode("utf-8", errors="replace").replace("\x00", "")
        except OSError as exc:
            raise ToolError(f"cannot read calibration file {f}: {exc}") from None
        if text.strip():
            texts.append((str(f), text))
    if not texts:
        raise ToolError("no calibration text: the calibration files are empty")
    if not pocketlm.is_file() or not os.access(pocketlm, os.X_OK):
        raise ToolError(f"pocketlm binary not found or not executable: {pocketlm} (build it, pass --pocketlm, "
                        f"or give --tokens-file)")
    ids: list[int] = []
    used: list[str] = []
    for name, text in texts:
        used.append(name)
        for piece in split_text(text):
            ids.extend(tokenize_text(pocketlm, model, piece))
        if len(ids) >= limit:
            break
    if not ids:
        raise ToolError("no calibration text: the calibration files tokenize to nothing")
    return ids[:limit], used


def read_tokens_file(path: Path) -> list[int]:
    """A JSON list of ids, or an object with an "ids" list (what `pocketlm tokenize --json` prints)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolError(f"tokens file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read tokens file {path}: {exc}") from None
    if isinstance(doc, dict):
        doc = doc.get("ids")
    if not isinstance(doc, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in doc):
        raise ToolError(f"tokens file {path} must hold a JSON list of integer token ids")
    if not doc:
        raise ToolError(f"no calibration text: tokens file {path} is empty")
    return doc
