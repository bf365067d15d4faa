"""sync_reference.py: the repo's copy of llama.cpp's outputs must follow the shared source without losing
anything (repo-only files stay, a newer repo copy is not clobbered), and the copy the suite reads must be
the real data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import common
import sync_reference


def _write(path, text, mtime):
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_new_updated_differs_and_repo_only(tmp_path):
    src, dst = tmp_path / "shared", tmp_path / "repo"
    src.mkdir(); dst.mkdir()
    _write(src / "a.json", json.dumps({"records": [1, 2], "runtime": 1}), 2000)
    _write(src / "b.txt", "new text", 2000)
    _write(src / "c.txt", "same", 1000)
    _write(src / "d.json", json.dumps({"records": [1]}), 1000)
    _write(dst / "a.json", json.dumps({"records": [1], "runtime": 1}), 1000)  # older -> updated
    _write(dst / "c.txt", "same", 1000)
    _write(dst / "d.json", json.dumps({"records": [9]}), 3000)  # repo copy newer -> kept
    _write(dst / "tok-ref.json", "{}", 1000)  # another engineer's file: untouched

    # --check copies nothing.
    entries = {e.name: e for e in sync_reference.sync(src, dst, check=True)}
    assert not (dst / "b.txt").exists()
    assert {n: e.status for n, e in entries.items()} == {
        "a.json": "updated", "b.txt": "new", "c.txt": "same", "d.json": "differs", "tok-ref.json": "repo-only"}
    assert "records 1 -> 2" in entries["a.json"].detail and "top-level keys changed: records" in entries["a.json"].detail

    sync_reference.sync(src, dst)
    assert json.loads((dst / "a.json").read_text())["records"] == [1, 2]
    assert (dst / "b.txt").read_text() == "new text"
    assert (dst / "b.txt").stat().st_mtime == 2000  # keeps the source's age, so the next run says "same"
    assert oct((dst / "b.txt").stat().st_mode & 0o777) == oct(0o644)
    assert json.loads((dst / "d.json").read_text())["records"] == [9]
    assert (dst / "tok-ref.json").read_text() == "{}"
    again = {e.name: e.status for e in sync_reference.sync(src, dst)}
    assert again == {"a.json": "same", "b.txt": "same", "c.txt": "same", "d.json": "differs", "tok-ref.json": "repo-only"}
    sync_reference.sync(src, dst, force=True)
    assert json.loads((dst / "d.json").read_text())["records"] == [1]


def test_check_exit_status(tmp_path, capsys):
    src, dst = tmp_path / "s", tmp_path / "d"
    src.mkdir(); dst.mkdir()
    (src / "x.json").write_text("{}")
    assert sync_reference.main([str(src), "--dest", str(dst), "--check"]) == 1
    assert "new       x.json" in capsys.readouterr().out
    assert sync_reference.main([str(src), "--dest", str(dst)]) == 0
    assert sync_reference.main([str(src), "--dest", str(dst), "--check"]) == 0


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(common.ToolError, match="is not a directory"):
        sync_reference.sync(tmp_path / "nope", tmp_path / "d")


def test_repo_copy_is_what_the_suite_reads():
    """common.REFERENCE_DIR is inside the repo and holds the real llama.cpp data."""
    assert common.REFERENCE_DIR == sync_reference.REPO_REFERENCE
    ref = json.loads((common.REFERENCE_DIR / "smollm2-llamacpp.json").read_text())
    first = ref["records"][0]
    assert first["model_file"] == "SmolLM2-135M-Instruct.F32.gguf"
    assert first["tokens"] == [504, 3575, 282, 4649, 314] and first["last_pos_top5_ids"][0] == 7042
    npz = np.load(common.REFERENCE_DIR / "smollm2-llamacpp-lastlogits.npz")
    assert int(np.argmax(npz[first["last_logits_npz_key"]])) == 7042
    gemma = json.loads((common.REFERENCE_DIR / "gemma3-270m-llamacpp.json").read_text())
    assert "perplexity" in json.dumps(gemma)
