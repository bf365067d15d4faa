"""make_vocab_fixtures.py and record_tokenizer_refs.py: the fixture files and the committed llama.cpp reference.

Why: the Swift tokenizer tests trust weights-tools/reference/tokenizer-llamacpp.json as llama.cpp's output for
the vocabulary-only fixtures. These tests check that the fixtures are what the reference was recorded on (same
vocabulary, only the pre-tokenizer changed), that the reference covers every string and template, and — by
running llama.cpp again on a few strings — that its ids are llama.cpp's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import common
import make_vocab_fixtures
import record_tokenizer_refs

REFERENCE = common.REFERENCE_DIR / record_tokenizer_refs.OUT_NAME


@pytest.fixture(scope="module")
def reference() -> dict:
    assert REFERENCE.is_file(), f"missing {REFERENCE}: run weights-tools/record_tokenizer_refs.py"
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def vocab_fixtures(tmp_path_factory, real_q4_1_reader) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("vocab")
    return {pre: make_vocab_fixtures.write_vocab_fixture(real_q4_1_reader, out / make_vocab_fixtures.fixture_name(pre), pre)
            for pre in make_vocab_fixtures.PRE_TOKENIZERS}


def test_fixture_is_the_source_vocabulary_plus_the_extra_tokens(vocab_fixtures, real_q4_1_reader):
    src_tokens = common.field_value(real_q4_1_reader, "tokenizer.ggml.tokens")
    src_types = common.field_value(real_q4_1_reader, "tokenizer.ggml.token_type")
    for pre, path in vocab_fixtures.items():
        r = common.open_gguf(path)
        assert common.field_value(r, "tokenizer.ggml.pre") == pre
        tokens = common.field_value(r, "tokenizer.ggml.tokens")
        assert tokens == src_tokens + list(make_vocab_fixtures.EXTRA_TOKENS)
        assert common.field_value(r, "tokenizer.ggml.token_type") == src_types + [1] * len(make_vocab_fixtures.EXTRA_TOKENS)
        assert common.field_value(r, "tokenizer.ggml.merges") == common.field_value(real_q4_1_reader, "tokenizer.ggml.merges")
        assert len(r.tensors) == 0
        # Every other key is copied unchanged (llama.cpp's vocab_only load reads the hyper-parameters).
        for key in ("general.architecture", "llama.block_count", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
            assert common.field_value(r, key) == common.field_value(real_q4_1_reader, key), key


def test_fixture_is_deterministic(vocab_fixtures, real_q4_1_reader, tmp_path):
    again = make_vocab_fixtures.write_vocab_fixture(real_q4_1_reader, tmp_path / "again.gguf", "qwen2")
    assert again.read_bytes() == vocab_fixtures["qwen2"].read_bytes()


def test_refuses_a_non_bpe_source(real_gemma3):
    with pytest.raises(common.ToolError, match="byte-level BPE"):
        make_vocab_fixtures.write_vocab_fixture(common.open_gguf(real_gemma3), Path("/nonexistent/x.gguf"), "qwen2")


def test_reference_covers_every_string_and_template(reference):
    names = [v["name"] for v in reference["vocabularies"]]
    assert names == ["smollm2-smollm", "smollm2-qwen2", "smollm2-llama-bpe", "gemma3-270m"]
    for v in reference["vocabularies"]:
        assert [c["text"] for c in v["cases"]] == record_tokenizer_refs.HARD_STRINGS, v["name"]
        assert v["prompts"], v["name"]
        assert v["eos"] in v["eog_ids"], v["name"]
    pres = {v["name"]: v["pre"] for v in reference["vocabularies"]}
    assert pres["smollm2-qwen2"] == "qwen2" and pres["smollm2-llama-bpe"] == "llama-bpe"
    combos = {(c["template_name"], c["conversation"]) for c in reference["chat"]}
    assert len(combos) == len(reference["chat"]) == 9 * len(record_tokenizer_refs.CONVERSATIONS)
    # llama.cpp renders every template it recognises; "family" null marks the ones PocketLM must refuse.
    assert all(c["llama_cpp"] for c in reference["chat"])
    assert {c["family"] for c in reference["chat"]} == {"chatml", "gemma", "llama3", None}


def test_reference_ids_are_llama_cpps(reference, real_q4_1_reader, tmp_path):
    """Run llama.cpp again (in the peer venv) on a few strings of the qwen2 fixture and compare."""
    python = record_tokenizer_refs.VENV_PYTHON
    assert python.is_file(), f"no llama-cpp-python venv at {python}: `make variants` builds it"
    path = make_vocab_fixtures.write_vocab_fixture(real_q4_1_reader, tmp_path / "smollm2-vocab-qwen2.gguf", "qwen2")
    strings = record_tokenizer_refs.HARD_STRINGS[:6]
    job = {"vocabularies": [{"name": "smollm2-qwen2", "path": str(path), "file": path.name, "where": "fixtures"}],
           "strings": strings, "prompts": {}, "templates": []}
    proc = subprocess.run([str(python), record_tokenizer_refs.__file__, "--child"], input=json.dumps(job),
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)["vocabularies"][0]
    want = next(v for v in reference["vocabularies"] if v["name"] == "smollm2-qwen2")
    assert got["cases"] == want["cases"][:len(strings)]
    assert got["eog_ids"] == want["eog_ids"]
