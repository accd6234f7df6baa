"""The Huffman GPU form: exact round trips, balanced pieces, its bit accounting, and rejection of
corrupt state."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix
from dc_kernels.fixed.layout import GpuLayout
from dc_kernels.huffman.launch import launch_config, steps_granularity
from dc_kernels.huffman.layout import (
    BALANCES,
    FAST_TABLE_BITS,
    HEAD_WORDS,
    LEAST_MEMORY,
    MAX_SYMBOL_BITS,
    MAX_TABLE_BITS,
    MIN_SEGMENT_SYMBOLS,
    SHORT_LAYER_SEGMENT_SYMBOLS,
    SHORT_LAYER_WEIGHTS,
    HuffmanLayout,
    HuffmanLayoutError,
    choose_pieces,
    choose_slabs,
    high_codes,
)
from workloads import random_compressed_matrix
from workloads.paper_layers import get_layer


def round_trip(matrix: CompressedMatrix, **kwargs) -> HuffmanLayout:
    layout = HuffmanLayout.from_matrix(matrix, **kwargs)
    loaded = HuffmanLayout.from_state(layout.tensors(), layout.metadata())
    assert loaded.to_matrix().equals(matrix)
    for name in ("table", "prog_steps", "seg_first"):  # derived at load == derived at build
        assert torch.equal(getattr(loaded, name), getattr(layout, name)), name
    lengths = layout.code_lengths.numpy()
    assert lengths[-1] == lengths.max() == layout.table_bits  # END: the all-ones codeword
    assert int(lengths[:-2].max(initial=0)) + layout.gap_raw_bits + layout.code_raw_bits <= MAX_SYMBOL_BITS
    # The kernels' `_warm_table` adds (entry == INT32_MIN) to a lane's column: it must be 0.
    assert int(layout.table.min()) > torch.iinfo(torch.int32).min
    return layout


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 300),
    density=st.floats(1e-4, 1.0),
    bits=st.integers(1, 8),
    segment_symbols=st.sampled_from([None, 1, 4, 32, 200]),
    max_table_bits=st.sampled_from([4, FAST_TABLE_BITS, MAX_TABLE_BITS]),
    balance=st.sampled_from(BALANCES),
    slabs=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**31),
)
def test_round_trip(rows, cols, density, bits, segment_symbols, max_table_bits, balance, slabs, seed):
    matrix = random_compressed_matrix(rows, cols, density, bits, seed=seed)
    slabs = min(slabs, 1 << (cols.bit_length() - 1))
    layout = round_trip(
        matrix, segment_symbols=segment_symbols, max_table_bits=max_table_bits, balance=balance, slabs=slabs
    )
    assert layout.table_bits <= max_table_bits and layout.table.dtype == torch.int32
    assert layout.slabs == slabs and layout.row_ids.numel() == layout.stored_rows
    for ids in layout.row_ids.reshape(slabs, -1).tolist():  # every slab: every row once, then padding
        assert sorted(ids)[:rows] == list(range(rows)) and min(ids[rows:], default=rows) >= rows


def test_column_slabs():
    # Wider than 8192 columns: slabs of at most 8192 (a multiple of 16), one slab of x a program.
    assert [choose_slabs(c) for c in (1, 8192, 8193, 16384, 25088, 40000)] == [1, 1, 2, 2, 4, 8]
    matrix = random_compressed_matrix(50, 25088, 0.01, 5, seed=7)
    layout = round_trip(matrix)
    assert (layout.slabs, layout.slab_width) == (4, 6272)
    assert layout.stored_rows == 4 * -(-50 // layout.rows_per_program) * layout.rows_per_program
    one = round_trip(matrix, slabs=1)
    assert one.slabs == 1 and one.stored_rows == 50
    # Layouts written before slabs existed read as one slab.
    tensors, meta = _state(one)
    del meta["slabs"]
    assert HuffmanLayout.from_state(tensors, meta).slabs == 1
    # Each slab must hold every row once, the empty padding rows only at its end.
    small = HuffmanLayout.from_matrix(random_compressed_matrix(20, 90, 0.2, 4, seed=3), slabs=2)
    half = small.stored_rows // 2
    for change, message in [
        (lambda t: t.__setitem__(half, t[half + 1]), "permutation of the rows in every slab"),
        (lambda t: t.__setitem__(slice(half, None), t[:half].flip(0)), "empty row"),
    ]:
        tensors, meta = _state(small)
        change(tensors["row_ids"])
        with pytest.raises(HuffmanLayoutError, match=message):
            HuffmanLayout.from_state(tensors, meta)
    for slabs in (0, 3, 128, True):
        with pytest.raises(ValueError, match="slabs must be"):
            HuffmanLayout.from_matrix(small.to_matrix(), slabs=slabs)
    tensors, meta = _state(small)
    with pytest.raises(HuffmanLayoutError, match="slabs=3"):
        HuffmanLayout.from_state(tensors, {**meta, "slabs": 3})


def test_edge_cases_round_trip():
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    # One kept weight, a one-symbol codebook, explicit codings, empty rows and layers, 8-bit codes.
    round_trip(random_compressed_matrix(9, 31, 1e-9, 3, seed=seed))
    one_symbol = random_compressed_matrix(5, 17, 1.0, 2, seed=seed, codebook_size=1)
    assert int((one_symbol.codes != 0).sum()) == 0
    round_trip(one_symbol)
    layer = random_compressed_matrix(6, 200, 0.05, 4, seed=seed)
    for coding in ((0, 0, 1), (3, 0, 2), (0, 4, 8), (2, 1, 4)):
        layout = round_trip(layer, coding=coding)
        assert (layout.gap_raw_bits, layout.code_raw_bits, layout.q_levels) == coding
    empty = CompressedMatrix((4, 8), np.zeros(1, np.float32), np.zeros(5, np.int64), [], [], 1)
    layout = round_trip(empty)
    assert layout.nnz == 0 and int(layout.prog_steps.max()) == 0 and layout.symbols() == 0
    mask = np.zeros((30, 500), dtype=bool)
    mask[np.arange(30) % 4 == 0, ::7] = True  # most rows empty
    round_trip(
        CompressedMatrix.from_dense(mask, np.ones(mask.shape, np.uint8), np.array([0.5, 1.0], np.float32)),
        segment_symbols=4,
    )
    round_trip(random_compressed_matrix(3, 700, 0.9, 8, seed=seed), segment_symbols=8)  # 256 codes


def test_pieces_are_balanced_by_symbol_count():
    # Rows of 400 columns at 30% density in 8 pieces: ~15 symbols a piece, equal within a row
    # up to the rounding of the cuts, while column blocks of equal width would differ by ~4.
    matrix = random_compressed_matrix(64, 400, 0.3, 4, seed=2)
    layout = round_trip(matrix, segment_symbols=15)
    assert layout.pieces == 8
    per_piece = layout.segment_symbols().reshape(-1, layout.pieces)
    assert per_piece.sum() == layout.symbols() >= matrix.nnz
    assert np.all(per_piece.max(axis=1) - per_piece.min(axis=1) <= 2)
    steps = layout.prog_steps.numpy()
    rpp = layout.rows_per_program
    assert steps.tolist() == [int(per_piece[i : i + rpp].max()) for i in range(0, 64, rpp)]
    assert layout.lane_utilization() > 0.9
    # Rows are sorted by their symbols, most first.
    row_symbols = per_piece.sum(axis=1)
    assert np.all(np.diff(row_symbols) <= 0)


@pytest.mark.parametrize("name,pieces", [("nt-we", 32), ("nt-lstm", 8)])
def test_small_layers_take_short_pieces(name, pieces):
    # NT-We and NT-LSTM (246k and 288k kept weights) fill fewer 128-lane programs than an H100 has
    # SMs: their time is one program's decode chain, which 16-symbol pieces halve, and their lanes
    # stay busy at the steps the fused kernel runs (iterations of 8 steps for pieces this short).
    small = get_layer(name).random_matrix(5, seed=0)
    layout = HuffmanLayout.from_matrix(small)
    longer = HuffmanLayout.from_matrix(small, segment_symbols=MIN_SEGMENT_SYMBOLS)
    assert small.nnz < SHORT_LAYER_WEIGHTS and SHORT_LAYER_SEGMENT_SYMBOLS == 16 < MIN_SEGMENT_SYMBOLS
    assert (layout.pieces, longer.pieces) == (pieces, pieces // 2)
    assert 2 * int(layout.prog_steps.max()) <= int(longer.prog_steps.max())
    config = launch_config(layout, 1, torch.float16)
    assert config.K == 8 and layout.lane_utilization(steps_granularity(config.K)) > 0.9


def test_short_pieces_end_at_short_layer_weights():
    # From SHORT_LAYER_WEIGHTS kept weights on, pieces hold at least MIN_SEGMENT_SYMBOLS symbols.
    for density, shortest in ((0.12, SHORT_LAYER_SEGMENT_SYMBOLS), (0.14, MIN_SEGMENT_SYMBOLS)):
        matrix = random_compressed_matrix(1000, 4096, density, 5, seed=1)
        assert (matrix.nnz < SHORT_LAYER_WEIGHTS) == (shortest == SHORT_LAYER_SEGMENT_SYMBOLS)
        chosen = choose_pieces(matrix, None)
        assert chosen == choose_pieces(matrix, shortest) > choose_pieces(matrix, 2 * shortest)


def test_pieces_balanced_by_bits_need_less_padding():
    # The least-memory layout cuts a row's pieces to equal bits and sorts rows by bits: a warp's
    # lanes end close together, so less of its words is padding.
    matrix = random_compressed_matrix(256, 4096, 0.2, 5, seed=4)  # 4 pieces a row
    by_symbols = round_trip(matrix, **{**LEAST_MEMORY, "balance": "symbols"})
    by_bits = round_trip(matrix, **LEAST_MEMORY)
    assert LEAST_MEMORY["balance"] == "bits" and by_bits.pieces == by_symbols.pieces > 1
    padding = [layout.bit_counts()["lane_padding_bits"] for layout in (by_bits, by_symbols)]
    assert padding[0] < 0.8 * padding[1]
    assert by_bits.lane_utilization() > 0.85


def test_bits_beat_fixed_width_on_paper_like_layer():
    # Alex-8's density (25%) with 4-bit codes at reduced size: the coding is near entropy.
    matrix = random_compressed_matrix(250, 4096, 0.25, 4, seed=1)
    huff = HuffmanLayout.from_matrix(matrix, segment_symbols=64)
    fixed = GpuLayout.from_matrix(matrix)
    counts = huff.bit_counts()
    assert sum(counts.values()) == huff.total_bits_resident()
    assert huff.bits_per_kept_weight() < 0.97 * fixed.bits_per_kept_weight()
    p = matrix.density
    entropy = 4 + (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))) / p  # uniform codes + geometric gaps
    assert counts["stream_bits"] / matrix.nnz < 1.02 * entropy


def test_skewed_codes_use_joint_symbols():
    # Codes with a skewed distribution: coding them (fewer raw code bits) saves bits, the more so
    # with a larger table.
    rng = np.random.default_rng(4)
    mask = rng.random((40, 600)) < 0.2
    codes = np.minimum(rng.geometric(0.4, size=mask.shape) - 1, 15).astype(np.uint8)
    matrix = CompressedMatrix.from_dense(mask, codes, np.linspace(-1, 1, 16), 4)
    fast = round_trip(matrix, segment_symbols=64)
    least = round_trip(matrix, segment_symbols=64, max_table_bits=MAX_TABLE_BITS)
    assert fast.code_raw_bits < 4 and least.code_raw_bits < 4
    assert least.bits_per_kept_weight() <= fast.bits_per_kept_weight()  # small: the table costs
    assert least.bits_per_kept_weight() < 0.9 * GpuLayout.from_matrix(matrix).bits_per_kept_weight()


def alternating_rows(cols: int) -> CompressedMatrix:
    """Dense rows between empty ones, 5 uniform codes: one piece a row holds 0 or ~2.3 bits x cols."""
    mask = np.zeros((6, cols), dtype=bool)
    mask[::2] = True
    codes = np.random.default_rng(0).integers(0, 5, size=mask.shape)
    return CompressedMatrix.from_dense(mask, codes, np.linspace(-1, 1, 5), 3)


def test_warp_words_and_span_widths():
    # Every lane of a warp holds the warp's longest piece's words (empty rows: all one bits): the
    # heads of the warps first, then the rest of each warp's words. Only warps holding a piece
    # are stored: here the first of the program's four.
    padded = round_trip(alternating_rows(1000), segment_symbols=1000)
    base = padded.warp_base.numpy()
    warps = 1
    assert padded.pieces == 1 and padded.warp_base.dtype == torch.int32 and base.shape == (warps + 1,)
    assert np.all(np.diff(base) % 32 == 0) and padded.words.numel() == warps * 32 * HEAD_WORDS + base[-1]
    stored = padded.words.numpy().view(np.uint32)
    heads = stored[: warps * 32 * HEAD_WORDS].reshape(warps, HEAD_WORDS, 32)  # [warp, word, lane]
    rest = stored[warps * 32 * HEAD_WORDS :][: base[1]].reshape(-1, 32)  # the first warp's
    # Rows sorted by symbols: the three empty ones (then the lanes past the last row) after the full.
    assert np.all(heads[0, :, 3:] == 0xFFFFFFFF) and np.all(rest[:, 3:] == 0xFFFFFFFF)
    assert np.all(heads[0, 0, :3] != 0xFFFFFFFF) and padded.lanes == 128
    assert padded.bit_counts()["lane_padding_bits"] == padded.words.numel() * 32 - padded.total_bits
    spans = round_trip(random_compressed_matrix(40, 3000, 0.002, 2, seed=1), segment_symbols=1)
    assert spans.pieces > 1 and spans.seg_span.numel() == 40 * (spans.pieces - 1)


def _state(layout):
    return {n: t.clone() for n, t in layout.tensors().items()}, layout.metadata()


def test_corrupt_state_is_rejected():
    matrix = random_compressed_matrix(20, 90, 0.2, 4, seed=3)
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=4)
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(150):  # single bit flips anywhere in the stream
        tensors, meta = _state(layout)
        words = tensors["words"].numpy().view(np.uint32)
        bit = int(rng.integers(0, layout.total_bits))
        words[bit // 32] ^= np.uint32(1 << (31 - bit % 32))
        try:
            loaded = HuffmanLayout.from_state(tensors, meta)
        except HuffmanLayoutError:
            rejected += 1
            continue
        # A flip that still decodes consistently must decode to a valid, different layer.
        assert not loaded.to_matrix().equals(matrix)
    assert rejected > 0
    n_sym = high_codes(layout.codebook_size, layout.code_raw_bits) * layout.q_levels + 2
    for name, change in [
        ("seg_span", lambda t: t.__setitem__(0, 255)),
        ("warp_base", lambda t: t.__setitem__(-1, t[-1] - 32)),  # words of another count
        ("warp_base", lambda t: t.__setitem__(1, t[1] + 1)),  # not whole rows of 32 words
        ("warp_base", lambda t: t.__setitem__(1, t[1] - 32)),  # lanes of the first warp cut short
        ("code_lengths", lambda t: t.__setitem__(0, MAX_TABLE_BITS + 1)),
        ("code_lengths", lambda t: t.__setitem__(n_sym - 1, 1)),  # END not the longest
        ("row_ids", lambda t: t.__setitem__(0, t[1])),
        ("codebook", lambda t: t.__setitem__(0, float("nan"))),
        ("words", lambda t: t.resize_(t.numel() + 1)),
    ]:
        tensors, meta = _state(layout)
        change(tensors[name])
        with pytest.raises(HuffmanLayoutError):
            HuffmanLayout.from_state(tensors, meta)
    for key, value in [
        ("nnz", layout.nnz + 1),
        ("q_levels", 4096),
        ("gap_raw_bits", 20),
        ("code_raw_bits", 9),
        ("pieces", 3),
        ("rows_per_program", 1),
        ("total_bits", layout.total_bits + 1),
    ]:
        tensors, meta = _state(layout)
        with pytest.raises(HuffmanLayoutError):
            HuffmanLayout.from_state(tensors, {**meta, key: value})
    tensors, meta = _state(layout)
    del tensors["words"]
    with pytest.raises(HuffmanLayoutError, match="missing"):
        HuffmanLayout.from_state(tensors, meta)
    with pytest.raises(HuffmanLayoutError, match="non-negative int"):
        HuffmanLayout.from_state(*_state(layout)[:1], {**meta, "nnz": -1})


def test_int32_offsets_only_below_2_30_words():
    # The kernels count a lane's bytes in 32 bits where the offsets are int32: 2**30 words or
    # more need int64 offsets (checked before the words are, so no 4 GB array is needed here).
    layout = HuffmanLayout.from_matrix(random_compressed_matrix(256, 64, 0.2, 4, seed=0), segment_symbols=64)
    assert layout.pieces == 1 and layout.warp_base.shape == (9,) and layout.warp_base.dtype == torch.int32
    tensors, meta = _state(layout)
    tensors["warp_base"] = torch.arange(9, dtype=torch.int32) << 27  # 8 warps of 2**22 words a lane
    with pytest.raises(HuffmanLayoutError, match="must be int64"):
        HuffmanLayout.from_state(tensors, {**meta, "in_features": 1 << 23})


def test_set_padding_bit_is_rejected():
    # Lanes are padded with one bits; a zero there would decode as something else than END.
    layout = HuffmanLayout.from_matrix(alternating_rows(1000), segment_symbols=1000)
    tensors, meta = _state(layout)
    words = tensors["words"].numpy().view(np.uint32)
    warps = layout.warp_base.numel() - 1
    last_row = warps * 32 * HEAD_WORDS + int(layout.warp_base[1]) - 32  # the first warp's last words
    rejected = 0
    for lane in range(32):
        words[last_row + lane] ^= np.uint32(1)
        try:
            HuffmanLayout.from_state(tensors, meta)
        except HuffmanLayoutError:
            rejected += 1
        words[last_row + lane] ^= np.uint32(1)
    assert rejected >= 31  # only the longest lane may end with a coded bit


def test_bad_arguments():
    matrix = random_compressed_matrix(4, 10, 0.5, 5, seed=0)
    with pytest.raises(TypeError):
        HuffmanLayout.from_matrix(matrix.to_dense())
    with pytest.raises(ValueError, match="segment_symbols"):
        HuffmanLayout.from_matrix(matrix, segment_symbols=0)
    with pytest.raises(ValueError, match="max_table_bits"):
        HuffmanLayout.from_matrix(matrix, max_table_bits=11)
    with pytest.raises(ValueError, match="balance must be one of"):
        HuffmanLayout.from_matrix(matrix, balance="columns")
    with pytest.raises(ValueError, match="coding must be"):
        HuffmanLayout.from_matrix(matrix, coding=(1, 2))
    with pytest.raises(ValueError, match="q_levels"):
        HuffmanLayout.from_matrix(matrix, coding=(0, 0, 0))
    with pytest.raises(ValueError, match="symbols"):
        HuffmanLayout.from_matrix(matrix, coding=(0, 0, 64))  # 32 * 64 + 2 symbols
    with pytest.raises(ValueError, match="code_raw_bits"):
        HuffmanLayout.from_matrix(matrix, coding=(0, 6, 1))
