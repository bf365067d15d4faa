"""bench_serve's compute floor for turn 5: the attention multiply-adds it counts, the model shapes it reads, and the
floor it derives from them (the serve figures themselves are benchmarks, not tests)."""

from __future__ import annotations

import pytest

import bench_serve
import common

FULL = {"layers": 2, "heads": 1, "head_dim": 1, "window": None, "pattern": None}


def test_attention_multiply_adds_counts_every_position_each_query_sees():
    # Positions 0, 1, 2 see 1, 2 and 3 positions, in each of 2 layers; a score and a value row each.
    assert bench_serve.attention_multiply_adds(FULL, 0, 3) == 2 * (1 + 2 + 3) * 2
    # Heads and head size multiply; a later range sees the cache before it.
    shape = {**FULL, "heads": 9, "head_dim": 64, "layers": 30}
    assert bench_serve.attention_multiply_adds(shape, 1570, 1571) == 2 * 9 * 64 * 30 * 1571
    assert bench_serve.attention_multiply_adds(shape, 5, 5) == 0


def test_attention_multiply_adds_clips_sliding_window_layers():
    # Layer 0 local (window 2), layer 1 global (every 2nd layer): 1+2+2 and 1+2+3 positions.
    shape = {**FULL, "window": 2, "pattern": 2}
    assert bench_serve.attention_multiply_adds(shape, 0, 3) == 2 * ((1 + 2 + 2) + (1 + 2 + 3))


def test_turn_floor_adds_the_extra_attention_at_the_peak():
    turn1 = {"cached_tokens": [0, 0], "prompt_tokens": 10, "ttft_ms": 100.0}
    turn5 = {"cached_tokens": [100, 101], "prompt_tokens": 110, "ttft_ms": 150.0}
    # Positions 100 ..< 110 see 101..110 positions (1,055), turn 1's 0 ..< 10 see 1..10 (55): 2 · 1,000 · 2 layers
    # extra multiply-adds, 0.2 s at 2e4 a second, on turn 1's 0.1 s: 3×.
    f = bench_serve.turn_floor(FULL, 2e4, turn1, turn5)
    assert f["extra_multiply_adds"] == 4000
    assert f["floor_ratio"] == pytest.approx(3.0)


def test_attention_shape_of_smollm2(real_q4_1_reader):
    assert bench_serve.attention_shape(real_q4_1_reader) == {"layers": 30, "heads": 9, "head_dim": 64, "window": None,
                                                              "pattern": None}


def test_attention_shape_of_gemma3_layout(tmp_path):
    # Gemma 3's keys (head size apart from the width; a window, its pattern left to the architecture's default of 6),
    # in a metadata-only file: the real one's 262k-token vocabulary takes a minute to parse.
    path = tmp_path / "gemma3-shape.gguf"
    w = common.GGUFWriter(str(path), "gemma3")
    w.add_block_count(18)
    w.add_embedding_length(640)
    w.add_head_count(4)
    w.add_key_length(256)
    w.add_sliding_window(512)
    common.finish_writer(w)
    assert bench_serve.attention_shape(common.open_gguf(path)) == {"layers": 18, "heads": 4, "head_dim": 256,
                                                                    "window": 512, "pattern": 6}


def test_bin_is_refused_outside_the_slot_figures(monkeypatch):
    # Several builds are compared on the aggregate decode figures only (--only slots); elsewhere --bin would be
    # silently ignored, so it is an error before any server starts.
    monkeypatch.setattr("sys.argv", ["bench_serve.py", "--bin", "/nonexistent/pocketlm"])

    def no_server(*args, **kwargs):
        raise AssertionError("a server was started")

    monkeypatch.setattr(bench_serve, "start", no_server)
    monkeypatch.setattr(bench_serve, "memory_bound", no_server)
    with pytest.raises(SystemExit) as e:
        bench_serve.main()
    assert str(e.value) == "--bin: only with --only slots"
